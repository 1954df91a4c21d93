"""What opens an escrow's wallets once its namespace is gone: a copy of the passwords in the operator's namespace.

Deleting a namespace deletes its Secrets at once while its Escrows wait for their finalizer, so the
Escrow's own Secret cannot be relied on to outlive a namespace. Before the first wallet of an escrow
is created, its passwords are copied to ``escrow-<uid>-recovery`` in the operator's namespace, with
the wallet file names and the escrow, pool and network they belong to. It has no owner: it stays when
the Escrow goes with ``walletRetention: Retain`` (or funds kept it), and is deleted with the wallet
files under ``Delete``. docs/operations.md says how to open a retained wallet with it.

The copy is written whole and never partly: created with every key, or replaced by one merge patch
when it disagrees with the Escrow's Secret (which the wallets were made with). Nothing here logs a value.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr

from .api import GROUP
from .kube import MERGE, Kube
from .settings import ESCROW_LABEL, OPERATOR_NAME

RECOVERY_LABEL = f"{GROUP}/recovery"


def recovery_name(uid: str) -> str:
    return f"escrow-{uid}-recovery"


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


class RecoverySecret:
    """The recovery copy of one escrow's passwords (``namespace`` is the operator's)."""

    def __init__(self, kube: Kube, namespace: str, uid: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.uid = uid
        self.name = recovery_name(uid)

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
        data = {f"password.{role}": _b64(value.get_secret_value()) for role, value in passwords.items()}
        data |= {f"wallet.{role}": _b64(name) for role, name in wallets.items()}
        namespace, name = escrow
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {
                    RECOVERY_LABEL: "true",
                    ESCROW_LABEL: name,
                    "app.kubernetes.io/managed-by": OPERATOR_NAME,
                },
                "annotations": {
                    f"{GROUP}/escrow": f"{namespace}/{name}",
                    f"{GROUP}/escrow-uid": self.uid,
                    f"{GROUP}/pool": f"{namespace}/{pool}",
                    f"{GROUP}/network": network,
                },
            },
            "data": data,
        }
        try:
            await self.kube.call(self.kube.core.create_namespaced_secret, self.namespace, body)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise
        found = await self.kube.call(self.kube.core.read_namespaced_secret, self.name, self.namespace)
        have = dict(found.data or {})
        if all(have.get(key) == value for key, value in data.items()):
            return
        await self.kube.call(
            self.kube.core.patch_namespaced_secret,
            self.name,
            self.namespace,
            {"metadata": body["metadata"], "data": data},
            _content_type=MERGE,
        )

    async def delete(self) -> None:
        try:
            await self.kube.call(self.kube.core.delete_namespaced_secret, self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
