"""The Escrow's state machine: every status transition as a pure function (docs/design.md, Status).

Each function takes the current :class:`EscrowStatus` and returns a new one; nothing here talks to
the API server. The conditions follow the kstatus conventions that Flux, kpt and Argo CD read
(``docs/install.md``, GitOps):

========================  =======  ===========  =======  ========
state                     Ready    Reconciling  Stalled  Degraded
========================  =======  ===========  =======  ========
pending / waiting         False    True         False    (as is)
step retried after error  False    True         False    True
round done, step ok       False    True         False    (as is)
Ready                     True     False        False    False
Failed                    False    False        True     True
========================  =======  ===========  =======  ========

``Degraded`` is True only while something is actually wrong: set when a step is retried after an
error, cleared when that step then succeeds (:func:`recovered`), and on Ready. Every condition carries
the generation it was computed for, and so does ``status.observedGeneration``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from .api import (
    DEGRADED,
    READY,
    RECONCILING,
    STALLED,
    EscrowPhase,
    EscrowStatus,
    ParticipantStatus,
    get_condition,
    is_condition_true,
    set_condition,
    utcnow,
)
from .naming import WalletNames

MESSAGE_LIMIT = 1024


def _copy(status: EscrowStatus, generation: int | None) -> EscrowStatus:
    new = status.model_copy(deep=True)
    new.observed_generation = generation
    return new


def _working(
    status: EscrowStatus, generation: int | None, reason: str, message: str, now: datetime | None
) -> EscrowStatus:
    """Work is under way: Ready=False, Reconciling=True (with what is going on), Stalled=False."""
    message = message[:MESSAGE_LIMIT]
    status.message = message
    set_condition(status.conditions, READY, False, reason, message, generation, now)
    set_condition(status.conditions, RECONCILING, True, reason, message, generation, now)
    set_condition(status.conditions, STALLED, False, "AsExpected", "", generation, now)
    degraded = get_condition(status.conditions, DEGRADED)
    if degraded is None:
        set_condition(status.conditions, DEGRADED, False, "AsExpected", "", generation, now)
    elif degraded.observed_generation != generation:  # keep its state, but for this generation
        set_condition(status.conditions, DEGRADED, degraded.status, degraded.reason, degraded.message, generation, now)
    return status


def round_message(done: int, final: int) -> str:
    """What the exchange does next, for status and the Reconciling condition."""
    if done > final:
        return "all rounds complete"
    what = ["create", "make_multisig"][done] if done < 2 else "exchange_multisig_keys"
    return f"round {done} of {final} ({what})"


def participants(done: Mapping[str, int], names: Mapping[str, WalletNames]) -> list[ParticipantStatus]:
    """Per-participant progress: steps done and the newest published wallet."""
    return [
        ParticipantStatus(
            role=role,
            round=done.get(role, 0),
            wallet=names[role].output_of(done[role] - 1) if done.get(role, 0) else None,
        )
        for role in names
    ]


def progress(
    status: EscrowStatus, generation: int | None, done: Mapping[str, int], names: Mapping[str, WalletNames], final: int
) -> EscrowStatus:
    """Record each participant's progress; ``round`` counts the steps every participant has done."""
    new = _copy(status, generation)
    new.round = min((done.get(role, 0) for role in names), default=0)
    new.rounds = final + 1
    new.participants = participants(done, names)
    return new


def pending(status: EscrowStatus, generation: int | None, message: str, now: datetime | None = None) -> EscrowStatus:
    """Accepted, nothing run yet (the operator's first write)."""
    new = _copy(status, generation)
    new.phase = new.phase or EscrowPhase.PENDING
    return _working(new, generation, "Pending", message, now)


def pool_not_found(
    status: EscrowStatus, generation: int | None, message: str, now: datetime | None = None
) -> EscrowStatus:
    """The escrow's WalletPool (or its Secret) does not exist: it waits for it."""
    new = _copy(status, generation)
    new.phase = new.phase or EscrowPhase.PENDING
    return _working(new, generation, "PoolNotFound", message, now)


def started(
    status: EscrowStatus, generation: int | None, done: int, final: int, now: datetime | None = None
) -> EscrowStatus:
    """The key exchange begins (or resumes) at round ``done``."""
    new = _copy(status, generation)
    new.phase = EscrowPhase.KEY_EXCHANGE
    new.started_at = new.started_at or (now or utcnow())
    return _working(new, generation, f"Round{done}", round_message(done, final), now)


def waiting_for_pods(
    status: EscrowStatus, generation: int | None, message: str, now: datetime | None = None
) -> EscrowStatus:
    """A round is blocked: the pool has no ready pod (scaled to 0, deleted, or pods not ready)."""
    return _working(_copy(status, generation), generation, "WaitingForPods", message, now)


def chain_height_recorded(status: EscrowStatus, generation: int | None, height: int) -> EscrowStatus:
    """The pool's chain height, read before any wallet is made: every scan of its wallets starts there."""
    new = _copy(status, generation)
    new.restore_height = height
    return new


def waiting_for_daemon(
    status: EscrowStatus, generation: int | None, message: str, now: datetime | None = None
) -> EscrowStatus:
    """The pool names a monerod that does not answer; its chain height must be recorded first."""
    return _working(_copy(status, generation), generation, "WaitingForDaemon", message, now)


def round_done(
    status: EscrowStatus, generation: int | None, done: int, final: int, now: datetime | None = None
) -> EscrowStatus:
    """Every participant finished a round; the next one is under way."""
    return _working(_copy(status, generation), generation, f"Round{done}", round_message(done, final), now)


def step_retried(
    status: EscrowStatus, generation: int | None, message: str, now: datetime | None = None
) -> EscrowStatus:
    """A step failed with an error and runs again: Degraded until it succeeds."""
    new = _copy(status, generation)
    set_condition(new.conditions, DEGRADED, True, "StepRetried", message[:MESSAGE_LIMIT], generation, now)
    return new


def recovered(status: EscrowStatus, generation: int | None, message: str, now: datetime | None = None) -> EscrowStatus:
    """A retried step succeeded: nothing is wrong any more."""
    new = _copy(status, generation)
    if is_condition_true(new.conditions, DEGRADED):
        set_condition(new.conditions, DEGRADED, False, "Recovered", message[:MESSAGE_LIMIT], generation, now)
    return new


def address_corrected(
    status: EscrowStatus, generation: int | None, message: str, now: datetime | None = None
) -> EscrowStatus:
    """A stored address disagreed with the wallets and was corrected: reported as Degraded."""
    new = _copy(status, generation)
    set_condition(new.conditions, DEGRADED, True, "AddressCorrected", message[:MESSAGE_LIMIT], generation, now)
    return new


def retrying(status: EscrowStatus, generation: int | None, retry: str, now: datetime | None = None) -> EscrowStatus:
    """A Failed escrow runs again because its retry annotation changed (only a Failed one does)."""
    new = _copy(status, generation)
    new.last_retry = retry
    new.phase = EscrowPhase.KEY_EXCHANGE
    set_condition(new.conditions, DEGRADED, False, "Retrying", f"retry {retry!r} requested", generation, now)
    return _working(new, generation, "Retrying", f"retry {retry!r} requested: running the remaining rounds again", now)


def ready(
    status: EscrowStatus, generation: int | None, address: str, threshold: int, total: int, now: datetime | None = None
) -> EscrowStatus:
    """Every participant holds its final wallet and the wallets report one address."""
    new = _copy(status, generation)
    new.phase = EscrowPhase.READY
    new.address = address
    new.ready_at = now or utcnow()
    new.message = "multisig address ready"
    what = f"{threshold}-of-{total} multisig address is ready"
    set_condition(new.conditions, READY, True, "MultisigReady", what, generation, now)
    set_condition(new.conditions, RECONCILING, False, "Complete", "key exchange complete", generation, now)
    set_condition(new.conditions, STALLED, False, "AsExpected", "", generation, now)
    if not (is_condition_true(new.conditions, DEGRADED) and _reason(new, DEGRADED) == "AddressCorrected"):
        set_condition(new.conditions, DEGRADED, False, "AsExpected", "", generation, now)
    return new


def failed(
    status: EscrowStatus, generation: int | None, reason: str, message: str, now: datetime | None = None
) -> EscrowStatus:
    """A step failed in a way retrying did not mend: Stalled, with the reason, until a retry."""
    new = _copy(status, generation)
    message = message[:MESSAGE_LIMIT]
    new.phase = EscrowPhase.FAILED
    new.message = message
    set_condition(new.conditions, READY, False, reason, message, generation, now)
    set_condition(
        new.conditions, RECONCILING, False, "Failed", "key exchange stopped; wallet files are kept", generation, now
    )
    set_condition(new.conditions, STALLED, True, reason, message, generation, now)
    set_condition(new.conditions, DEGRADED, True, reason, message, generation, now)
    return new


def _reason(status: EscrowStatus, type: str) -> str | None:
    condition = get_condition(status.conditions, type)
    return condition.reason if condition is not None else None


def without_legacy(status: EscrowStatus) -> EscrowStatus:
    """Drop the ``Progressing`` condition of releases before Reconciling replaced it."""
    new = status.model_copy(deep=True)
    new.conditions = [c for c in new.conditions if c.type != "Progressing"]
    return new
