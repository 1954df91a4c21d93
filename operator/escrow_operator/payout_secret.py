"""The record of one EscrowPayout: per attempt, the signers' multisig infos and the transaction set
after each signature, and how the payout ended (docs/design.md, Signing).

Named ``payout-{uid}`` and kept in the operator's namespace, where no user of the payout's namespace
can write: the payout's progress is a fact only the operator records, and its status is written from
it, never read back as truth. It has no owner (an owner cannot be in another namespace): deleting the
payout deletes it. Keys, for attempt ``n``:

* ``attempt``: the current attempt;
* ``escrow``, ``pool``: the escrow's uid and pool (what the payout's wallet copies belong to);
* ``outcome``, ``outcome.reason``, ``outcome.message``, ``outcome.height``: Confirmed or Failed,
  recorded before the terminal status is written;
* ``n.info.ROLE``: the multisig info ROLE exported (recorded before its ``synced`` wallet is published);
* ``n.begun.ROLE``: ROLE's build or sign operation may have run (written just before it): an attempt
  whose operation began and recorded nothing is never resumed, so no nonce is used twice;
* ``n.txset.K``: the transaction set carrying K signatures (K=1: as the first signer built it);
* ``n.amount``, ``n.fee``: what the built set pays (atomic units; not secret, kept with the set);
* ``n.hashes``: the fully signed set's transaction hashes (comma-separated), recorded with it.

Starting attempt n+1 removes attempt n's keys.
"""

from __future__ import annotations

from pydantic import SecretStr

from .api import GROUP
from .kube import Kube
from .secret_store import RecordSecret
from .settings import OPERATOR_NAME

PAYOUT_LABEL = f"{GROUP}/payout"


def payout_secret_name(uid: str) -> str:
    return f"payout-{uid}"


#: The Secret (operator's namespace) recording since when payouts keep their records there.
RECORDS_SINCE_SECRET = "escrow-operator-payout-records"


async def records_since(kube: Kube, namespace: str, now: str) -> str:
    """When this operator's payouts began to keep their records in the operator's namespace: ``now``
    the first time a release that does is started, kept from then on. Only a payout created before it
    may have ended under an earlier release, which kept its record in the payout's own namespace."""
    marker = _Marker(kube, namespace, RECORDS_SINCE_SECRET)
    await marker.create_or_load(
        labels={"app.kubernetes.io/managed-by": OPERATOR_NAME}, annotations={}, owner=None, data={"since": now}
    )
    return marker.since or now


class _Marker(RecordSecret):
    @property
    def since(self) -> str | None:
        return self._get("since")


#: Keys that outlive an attempt.
_KEPT = ("attempt", "escrow", "pool")


class PayoutSecret(RecordSecret):
    """The record of one payout (``namespace`` is the operator's; ``payout`` is (namespace, name))."""

    def __init__(self, kube: Kube, namespace: str, payout: tuple[str, str], uid: str) -> None:
        super().__init__(kube, namespace, payout_secret_name(uid))
        self.payout = payout
        self.uid = uid

    async def ensure(self) -> None:
        namespace, name = self.payout
        await self.create_or_load(
            labels={PAYOUT_LABEL: name, "app.kubernetes.io/managed-by": OPERATOR_NAME},
            annotations={f"{GROUP}/payout": f"{namespace}/{name}", f"{GROUP}/payout-uid": self.uid},
            owner=None,
            data={},
        )

    # --- the outcome ------------------------------------------------------------------------------
    def outcome(self) -> tuple[str, str, str, int | None] | None:
        """(phase, reason, message, height) of a payout that ended (None: it goes on)."""
        phase = self._get("outcome")
        if phase is None:
            return None
        height = self._get("outcome.height")
        return (
            phase,
            self._get("outcome.reason") or "",
            self._get("outcome.message") or "",
            int(height) if height else None,
        )

    async def record_outcome(self, phase: str, reason: str, message: str, height: int | None = None) -> None:
        values = {"outcome": phase, "outcome.reason": reason, "outcome.message": message}
        if height is not None:
            values["outcome.height"] = str(height)
        await self._write(values)

    def escrow(self) -> tuple[str | None, str | None]:
        """(uid, pool) of the escrow the payout's copies belong to (None: no attempt began)."""
        return self._get("escrow"), self._get("pool")

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
    async def start_attempt(self, attempt: int, escrow_uid: str, pool: str) -> None:
        """Make ``attempt`` current and drop every key of earlier attempts."""
        stale: dict[str, str | None] = {k: None for k in self.keys() if k not in _KEPT}
        await self._write({**stale, "attempt": str(attempt), "escrow": escrow_uid, "pool": pool})

    def final_hashes(self, signers: int) -> list[str]:
        """The hashes of the current attempt's fully signed set (empty: not signed by all ``signers`` yet).
        From then on no transaction is ever built again for the payout."""
        attempt = self.attempt
        return self.hashes(attempt) if attempt and self.signatures(attempt) >= signers else []

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
