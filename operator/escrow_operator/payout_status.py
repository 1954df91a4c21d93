"""The EscrowPayout's state machine: every status transition as a pure function (docs/design.md, Signing).

Conditions follow the kstatus conventions the GitOps tools read:

=====================================  =======  ===========  =======
state                                  Ready    Reconciling  Stalled
=====================================  =======  ===========  =======
Pending, Syncing, Signing, Submitted   False    True         False
Confirmed                              True     False        False
Failed                                 False    False        True
=====================================  =======  ===========  =======

``Degraded`` is True only while something is actually wrong and the payout waits for it to pass
(:data:`TROUBLE`: the daemon unreachable, steps failing, pods lost, the pool gone), in any phase
before the end; an expected wait (funds not unlocked yet, an earlier payout) is not trouble. Every
step forward sets it back to False.

``txHashes`` is set once (:func:`hashes_recorded`), before anything is submitted, and never changed:
every later transition keeps it, and :func:`hashes_recorded` refuses to replace it.
"""

from __future__ import annotations

from datetime import datetime

from .api import (
    DEGRADED,
    READY,
    RECONCILING,
    STALLED,
    EscrowPayoutStatus,
    PayoutPhase,
    set_condition,
    utcnow,
    xmr,
)

MESSAGE_LIMIT = 1024
#: Wait reasons that mean something is wrong (Degraded), not that the payout waits as it should.
TROUBLE = frozenset({"DaemonUnavailable", "StepError", "PodsUnavailable", "PoolUnavailable"})


def _degraded(new: EscrowPayoutStatus, generation: int | None, reason: str | None, now: datetime | None) -> None:
    if reason is None:
        set_condition(new.conditions, DEGRADED, False, "AsExpected", "", generation, now)
    else:
        set_condition(new.conditions, DEGRADED, True, reason, new.message or "", generation, now)


def _copy(status: EscrowPayoutStatus, generation: int | None) -> EscrowPayoutStatus:
    new = status.model_copy(deep=True)
    new.observed_generation = generation
    return new


def _working(
    status: EscrowPayoutStatus,
    generation: int | None,
    phase: PayoutPhase,
    reason: str,
    message: str,
    now: datetime | None,
) -> EscrowPayoutStatus:
    new = _copy(status, generation)
    new.phase = phase
    new.message = message[:MESSAGE_LIMIT]
    set_condition(new.conditions, READY, False, reason, new.message, generation, now)
    set_condition(new.conditions, RECONCILING, True, reason, new.message, generation, now)
    set_condition(new.conditions, STALLED, False, "AsExpected", "", generation, now)
    _degraded(new, generation, None, now)
    return new


def pending(
    status: EscrowPayoutStatus, generation: int | None, reason: str, message: str, now: datetime | None = None
) -> EscrowPayoutStatus:
    """Waiting: for the escrow to be Ready on a pool with a daemon, for funds, or for an earlier payout."""
    if status.tx_hashes:
        raise ValueError("a payout whose transactions may have been submitted is never pending again")
    return _working(status, generation, PayoutPhase.PENDING, reason, message, now)


def waiting(
    status: EscrowPayoutStatus, generation: int | None, reason: str, message: str, now: datetime | None = None
) -> EscrowPayoutStatus:
    """Held up by ``reason``: Pending until a transaction may have been submitted; after that the phase
    is kept and the message says what holds it up. Degraded while the reason is :data:`TROUBLE`."""
    if status.tx_hashes:
        new = _copy(status, generation)
        new.message = message[:MESSAGE_LIMIT]
    else:
        new = pending(status, generation, reason, message, now)
    _degraded(new, generation, reason if reason in TROUBLE else None, now)
    return new


def as_recorded(status: EscrowPayoutStatus, attempt: int, hashes: list[str]) -> EscrowPayoutStatus:
    """The status with what only the operator's record decides taken from it (the attempt, the
    transactions' hashes), and a terminal phase the record does not hold undone: a status anyone with
    ``escrowpayouts/status`` rights may write is never read back as truth."""
    new = status.model_copy(deep=True)
    new.attempt = attempt
    new.tx_hashes = list(hashes)
    if new.phase in (PayoutPhase.CONFIRMED, PayoutPhase.FAILED):
        new.phase = PayoutPhase.PENDING
    return new


def attempt_started(
    status: EscrowPayoutStatus, generation: int | None, attempt: int, secret: str, now: datetime | None = None
) -> EscrowPayoutStatus:
    """Attempt ``attempt`` exports and imports the signers' multisig infos."""
    new = _working(
        status, generation, PayoutPhase.SYNCING, "Syncing", f"attempt {attempt}: exchanging multisig infos", now
    )
    new.attempt, new.signatures, new.secret_name = attempt, 0, secret
    return new


def signing(
    status: EscrowPayoutStatus,
    generation: int | None,
    signatures: int,
    needed: int,
    amount: int | None,
    fee: int | None,
    now: datetime | None = None,
) -> EscrowPayoutStatus:
    """The transaction is built (``signatures`` of ``needed`` made); ``amount`` and ``fee`` from the builder,
    also as the XMR strings of the printer columns (``amountXmr``, ``feeXmr``)."""
    message = f"attempt {status.attempt}: {signatures} of {needed} signatures"
    new = _working(status, generation, PayoutPhase.SIGNING, "Signing", message, now)
    new.signatures, new.amount, new.fee = signatures, amount, fee
    new.amount_xmr = None if amount is None else xmr(amount)
    new.fee_xmr = None if fee is None else xmr(fee)
    return new


def hashes_recorded(
    status: EscrowPayoutStatus, generation: int | None, hashes: list[str], now: datetime | None = None
) -> EscrowPayoutStatus:
    """Fully signed: the transactions' hashes are recorded before they are handed to the daemon."""
    if not hashes:
        raise ValueError("a signed transaction set has at least one transaction")
    if status.tx_hashes and status.tx_hashes != hashes:
        raise ValueError("the payout's transactions are already recorded; a second set is never made")
    message = f"submitting {len(hashes)} transaction(s) to the daemon"
    new = _working(status, generation, PayoutPhase.SIGNING, "Submitting", message, now)
    new.tx_hashes = list(hashes)
    new.signatures = max(new.signatures, 1)
    return new


def submitted(
    status: EscrowPayoutStatus, generation: int | None, needed: int, now: datetime | None = None
) -> EscrowPayoutStatus:
    """The daemon has the transactions (in its pool or in a block)."""
    new = _working(
        status, generation, PayoutPhase.SUBMITTED, "Confirming", f"submitted; waiting for {needed} confirmations", now
    )
    if new.submitted_at is None:
        new.submitted_at = now or utcnow()
    return new


def confirming(
    status: EscrowPayoutStatus,
    generation: int | None,
    height: int | None,
    confirmations: int,
    needed: int,
    now: datetime | None = None,
) -> EscrowPayoutStatus:
    """After a block: where the transactions are (``height`` None: back in the pool, 0 confirmations)."""
    if confirmations >= needed and height is not None:
        new = _copy(status, generation)
        new.phase = PayoutPhase.CONFIRMED
        new.height, new.confirmations = height, confirmations
        new.message = f"confirmed in block {height} ({confirmations} confirmations)"
        new.confirmed_at = new.confirmed_at or now or utcnow()
        set_condition(new.conditions, READY, True, "Confirmed", new.message, generation, now)
        set_condition(new.conditions, RECONCILING, False, "Confirmed", new.message, generation, now)
        set_condition(new.conditions, STALLED, False, "AsExpected", "", generation, now)
        _degraded(new, generation, None, now)
        return new
    new = submitted(status, generation, needed, now)
    new.height, new.confirmations = height, confirmations
    where = f"in block {height}" if height is not None else "in the daemon's pool"
    new.message = f"{where}: {confirmations} of {needed} confirmations"
    set_condition(new.conditions, READY, False, "Confirming", new.message, generation, now)
    set_condition(new.conditions, RECONCILING, True, "Confirming", new.message, generation, now)
    return new


def failed(
    status: EscrowPayoutStatus, generation: int | None, reason: str, message: str, now: datetime | None = None
) -> EscrowPayoutStatus:
    """Nothing more will happen: the reason says why and the message what to do."""
    new = _copy(status, generation)
    new.phase = PayoutPhase.FAILED
    new.message = message[:MESSAGE_LIMIT]
    set_condition(new.conditions, READY, False, reason, new.message, generation, now)
    set_condition(new.conditions, RECONCILING, False, reason, new.message, generation, now)
    set_condition(new.conditions, STALLED, True, reason, new.message, generation, now)
    _degraded(new, generation, None, now)
    return new
