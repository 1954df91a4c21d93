"""The Escrow's status transitions (escrow_status), checked without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from escrow_operator import escrow_status as es
from escrow_operator.api import EscrowPhase, EscrowStatus, get_condition
from escrow_operator.naming import WalletNames

UID = "0f0e0d0c-0b0a-4909-8807-060504030201"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def conditions(status: EscrowStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status.value, c.reason) for c in status.conditions}


def kstatus_like(status: EscrowStatus, generation: int) -> str:
    """What kstatus computes from these conditions (its generic rules)."""
    if status.observed_generation != generation:
        return "InProgress"
    c = conditions(status)
    if c.get("Reconciling", ("False",))[0] == "True":
        return "InProgress"
    if c.get("Stalled", ("False",))[0] == "True":
        return "Failed"
    return "Current"


def test_first_write_is_not_ready_and_reconciling() -> None:
    status = es.pending(EscrowStatus(), 1, "accepted", now=T0)
    assert status.phase == EscrowPhase.PENDING
    assert conditions(status) == {
        "Ready": ("False", "Pending"),
        "Reconciling": ("True", "Pending"),
        "Stalled": ("False", "AsExpected"),
        "Degraded": ("False", "AsExpected"),
    }
    assert all(c.observed_generation == 1 for c in status.conditions)
    assert kstatus_like(status, 1) == "InProgress"


def test_transitions_return_new_objects() -> None:
    before = EscrowStatus()
    after = es.pending(before, 1, "accepted")
    assert before.conditions == [] and before.phase is None
    assert after is not before


@pytest.mark.parametrize(
    "step",
    [
        lambda s: es.pool_not_found(s, 1, "create it"),
        lambda s: es.started(s, 1, 0, 4),
        lambda s: es.waiting_for_pods(s, 1, "scaled to 0"),
        lambda s: es.round_done(s, 1, 2, 4),
        lambda s: es.retrying(s, 1, "r1"),
    ],
)
def test_every_working_state_reads_in_progress(step) -> None:  # type: ignore[no-untyped-def]
    status = step(es.pending(EscrowStatus(), 1, "accepted"))
    assert conditions(status)["Ready"][0] == "False"
    assert conditions(status)["Reconciling"][0] == "True"
    assert kstatus_like(status, 1) == "InProgress"


def test_retried_step_is_degraded_until_it_succeeds() -> None:
    status = es.round_done(es.pending(EscrowStatus(), 1, "x"), 1, 1, 4)
    status = es.step_retried(status, 1, "buyer round 1: error")
    assert conditions(status)["Degraded"] == ("True", "StepRetried")
    assert kstatus_like(status, 1) == "InProgress"  # still progressing, not failed
    status = es.round_done(status, 1, 2, 4)
    assert conditions(status)["Degraded"] == ("True", "StepRetried")  # a round does not hide it
    status = es.recovered(status, 1, "buyer round 1 succeeded")
    assert conditions(status)["Degraded"] == ("False", "Recovered")


def test_ready_is_current_and_clears_degraded() -> None:
    status = es.step_retried(es.started(EscrowStatus(), 1, 0, 4), 1, "err")
    status = es.ready(status, 1, "4Addr", 2, 3, now=T0)
    assert status.phase == EscrowPhase.READY and status.address == "4Addr" and status.ready_at == T0
    assert conditions(status) == {
        "Ready": ("True", "MultisigReady"),
        "Reconciling": ("False", "Complete"),
        "Stalled": ("False", "AsExpected"),
        "Degraded": ("False", "AsExpected"),
    }
    assert kstatus_like(status, 1) == "Current"


def test_corrected_address_stays_reported_on_ready() -> None:
    status = es.address_corrected(es.started(EscrowStatus(), 1, 0, 4), 1, "Secret differed")
    status = es.ready(status, 1, "4Addr", 2, 3)
    assert conditions(status)["Degraded"] == ("True", "AddressCorrected")
    assert conditions(status)["Ready"][0] == "True"


def test_failed_is_stalled_and_retry_clears_it() -> None:
    status = es.failed(es.started(EscrowStatus(), 1, 0, 4), 1, "StepError", "buyer round 2: boom")
    assert status.phase == EscrowPhase.FAILED
    assert conditions(status)["Stalled"] == ("True", "StepError")
    assert conditions(status)["Reconciling"] == ("False", "Failed")
    assert kstatus_like(status, 1) == "Failed"
    retried = es.retrying(status, 1, "r1")
    assert retried.phase == EscrowPhase.KEY_EXCHANGE and retried.last_retry == "r1"
    assert conditions(retried)["Stalled"] == ("False", "AsExpected")
    assert conditions(retried)["Degraded"] == ("False", "Retrying")
    assert kstatus_like(retried, 1) == "InProgress"


def test_last_transition_time_moves_only_with_the_status() -> None:
    status = es.round_done(es.started(EscrowStatus(), 1, 0, 4, now=T0), 1, 1, 4, now=datetime(2026, 1, 2, tzinfo=UTC))
    reconciling = get_condition(status.conditions, "Reconciling")
    assert reconciling is not None and reconciling.last_transition_time == T0 and reconciling.reason == "Round1"


def test_progress_counts_steps_every_participant_did() -> None:
    names = {role: WalletNames(role, UID, 3) for role in ("buyer", "vendor", "arbiter")}
    status = es.progress(EscrowStatus(), 1, {"buyer": 2, "vendor": 1}, names, 3)
    assert status.round == 0 and status.rounds == 4
    assert [(p.role, p.round, p.wallet) for p in status.participants] == [
        ("buyer", 2, names["buyer"].output_of(1)),
        ("vendor", 1, names["vendor"].output_of(0)),
        ("arbiter", 0, None),
    ]


def test_legacy_progressing_condition_is_dropped() -> None:
    old = EscrowStatus.model_validate(
        {
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "Round1",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        }
    )
    assert es.without_legacy(old).conditions == []


def test_messages_are_bounded() -> None:
    status = es.failed(EscrowStatus(), 1, "StepError", "x" * 5000)
    assert status.message is not None and len(status.message) == es.MESSAGE_LIMIT
