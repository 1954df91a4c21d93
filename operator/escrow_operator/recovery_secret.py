"""What opens an escrow's wallets once its namespace is gone: a copy of the passwords in the operator's namespace.

Deleting a namespace deletes its Secrets at once while its Escrows wait for their finalizer, so the
Escrow's own Secret cannot be relied on to outlive a namespace. Before the first wallet of an escrow
is created, its passwords are copied to ``escrow-<uid>-recovery`` in the operator's namespace, with
the wallet file names and the escrow, pool and network they belong to. It has no owner: it stays when
the Escrow goes with ``walletRetention: Retain`` (or funds kept it), and is deleted with the wallet
files under ``Delete``. docs/operations.md says how to open a retained wallet with it.

The copy is written whole: created with every key, or its keys set by one patch when it disagrees
with the Escrow's Secret (which the wallets were made with). Nothing here logs a value.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from .api import GROUP
from .kube import Kube
from .secret_store import RecordSecret
from .settings import ESCROW_LABEL, OPERATOR_NAME

RECOVERY_LABEL = f"{GROUP}/recovery"


def recovery_name(uid: str) -> str:
    return f"escrow-{uid}-recovery"


class RecoverySecret(RecordSecret):
    """The recovery copy of one escrow's passwords (``namespace`` is the operator's)."""

    def __init__(self, kube: Kube, namespace: str, uid: str) -> None:
        super().__init__(kube, namespace, recovery_name(uid))
        self.uid = uid

    async def ensure(
        self,
        *,
        escrow: tuple[str, str],
        pool: str,
        network: str,
        passwords: Mapping[str, SecretStr],
        wallets: Mapping[str, str],
    ) -> None:
        """Create the copy, or bring it in line with ``passwords`` and ``wallets`` (role -> final wallet file)."""
        values = {f"password.{role}": value.get_secret_value() for role, value in passwords.items()}
        values |= {f"wallet.{role}": name for role, name in wallets.items()}
        namespace, name = escrow
        created = await self.create_or_load(
            labels={RECOVERY_LABEL: "true", ESCROW_LABEL: name, "app.kubernetes.io/managed-by": OPERATOR_NAME},
            annotations={
                f"{GROUP}/escrow": f"{namespace}/{name}",
                f"{GROUP}/escrow-uid": self.uid,
                f"{GROUP}/pool": f"{namespace}/{pool}",
                f"{GROUP}/network": network,
            },
            owner=None,
            data=values,
        )
        if not created and any(self._get(key) != value for key, value in values.items()):
            await self._write(values)
