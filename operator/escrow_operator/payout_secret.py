"""The Secret of one EscrowPayout: per attempt, the signers' multisig infos and the transaction set
after each signature (docs/design.md, Signing).

Named ``payout-{uid}`` and owned by the EscrowPayout. Keys, for attempt ``n``:

* ``attempt``: the current attempt;
* ``n.info.ROLE``: the multisig info ROLE exported (recorded before its ``synced`` wallet is published);
* ``n.begun.ROLE``: ROLE's build or sign operation may have run (written just before it): an attempt
  whose operation began and recorded nothing is never resumed, so no nonce is used twice;
* ``n.txset.K``: the transaction set carrying K signatures (K=1: as the first signer built it);
* ``n.amount``, ``n.fee``: what the built set pays (atomic units; not secret, kept with the set);
* ``n.hashes``: the fully signed set's transaction hashes (comma-separated), recorded with it.

Starting attempt n+1 removes attempt n's keys.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from .api import GROUP, PAYOUT_KIND, owner_reference
from .kube import Kube
from .secret_store import RecordSecret
from .settings import OPERATOR_NAME

PAYOUT_LABEL = f"{GROUP}/payout"


def payout_secret_name(uid: str) -> str:
    return f"payout-{uid}"


def payout_owner(body: dict[str, Any]) -> dict[str, Any]:
    return owner_reference(body, PAYOUT_KIND)


class PayoutSecret(RecordSecret):
    def __init__(self, kube: Kube, namespace: str, payout: str, uid: str) -> None:
        super().__init__(kube, namespace, payout_secret_name(uid))
        self.payout = payout
        self.uid = uid

    async def ensure(self, owner: dict[str, Any]) -> None:
        await self.create_or_load(
            labels={PAYOUT_LABEL: self.payout, "app.kubernetes.io/managed-by": OPERATOR_NAME},
            annotations={f"{GROUP}/payout-uid": self.uid},
            owner=owner,
            data={},
        )

    # --- reading --------------------------------------------------------------------------------
    @property
    def attempt(self) -> int:
        return int(self._get("attempt") or 0)

    def info(self, attempt: int, role: str) -> SecretStr | None:
        value = self._get(f"{attempt}.info.{role}")
        return SecretStr(value) if value is not None else None

    def begun(self, attempt: int, role: str) -> bool:
        return self._get(f"{attempt}.begun.{role}") is not None

    def txset(self, attempt: int, signatures: int) -> SecretStr | None:
        value = self._get(f"{attempt}.txset.{signatures}")
        return SecretStr(value) if value is not None else None

    def signatures(self, attempt: int) -> int:
        """How many signatures the newest recorded set of ``attempt`` carries (0: not built)."""
        prefix = f"{attempt}.txset."
        return max((int(k[len(prefix) :]) for k in self.keys() if k.startswith(prefix)), default=0)

    def built(self, attempt: int) -> tuple[int | None, int | None]:
        """(amount, fee) of the set ``attempt`` built."""
        amount, fee = self._get(f"{attempt}.amount"), self._get(f"{attempt}.fee")
        return (int(amount) if amount else None, int(fee) if fee else None)

    def hashes(self, attempt: int) -> list[str]:
        return [h for h in (self._get(f"{attempt}.hashes") or "").split(",") if h]

    # --- recording ------------------------------------------------------------------------------
    async def start_attempt(self, attempt: int) -> None:
        """Make ``attempt`` current and drop every key of earlier attempts."""
        stale: dict[str, str | None] = {k: None for k in self.keys() if k != "attempt"}
        await self._write({**stale, "attempt": str(attempt)})

    async def record_info(self, attempt: int, role: str, info: SecretStr) -> None:
        await self._write({f"{attempt}.info.{role}": info.get_secret_value()})

    async def mark_begun(self, attempt: int, role: str) -> None:
        await self._write({f"{attempt}.begun.{role}": "true"})

    async def record_txset(
        self,
        attempt: int,
        signatures: int,
        txset: SecretStr,
        amount: int | None = None,
        fee: int | None = None,
        hashes: list[str] | None = None,
    ) -> None:
        values: dict[str, str | None] = {f"{attempt}.txset.{signatures}": txset.get_secret_value()}
        if hashes:
            values[f"{attempt}.hashes"] = ",".join(hashes)
        if amount is not None:
            values[f"{attempt}.amount"] = str(amount)
        if fee is not None:
            values[f"{attempt}.fee"] = str(fee)
        await self._write(values)
