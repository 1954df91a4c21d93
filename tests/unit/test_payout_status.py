"""The EscrowPayout's status transitions, its spec rules and its wallet names, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from escrow_operator import payout_status
from escrow_operator.api import EscrowPayoutSpec, EscrowPayoutStatus, PayoutPhase, get_condition
from escrow_operator.escrow_files import is_work_copy
from escrow_operator.naming import PayoutNames, WalletNames, is_wallet_file, payout_tag

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
HASH = "ab" * 32
ADDRESS = "4" + "A" * 94
ESCROW_UID = "0e4f0a1b-1c2d-4e5f-8a9b-0123456789ab"
PAYOUT_UID = "11112222-3333-4444-5555-666677778888"


def kstatus(status: EscrowPayoutStatus) -> tuple[str, str, str]:
    found = {c.type: c.status.value for c in status.conditions}
    return found["Ready"], found["Reconciling"], found["Stalled"]


def test_a_payout_in_progress_is_reconciling_and_every_condition_has_the_generation() -> None:
    status = payout_status.pending(EscrowPayoutStatus(), 3, "EscrowNotReady", "escrow deal is KeyExchange", NOW)
    assert status.phase == PayoutPhase.PENDING and kstatus(status) == ("False", "True", "False")
    assert status.observed_generation == 3 and all(c.observed_generation == 3 for c in status.conditions)
    started = payout_status.attempt_started(status, 3, 1, "payout-x", NOW)
    assert (started.phase, started.attempt, started.secret_name) == (PayoutPhase.SYNCING, 1, "payout-x")
    signing = payout_status.signing(started, 3, 1, 2, 2 * 10**12, 30_000_000, NOW)
    assert (signing.phase, signing.signatures, signing.amount, signing.fee) == (
        PayoutPhase.SIGNING,
        1,
        2 * 10**12,
        30_000_000,
    )
    assert signing.message == "attempt 1: 1 of 2 signatures"
    assert (signing.amount_xmr, signing.fee_xmr) == ("2", "0.00003")


def test_amount_and_fee_read_in_xmr_beside_the_atomic_units_they_come_from() -> None:
    started = payout_status.attempt_started(EscrowPayoutStatus(), 1, 1, "payout-x", NOW)
    assert (started.amount_xmr, started.fee_xmr) == (None, None)
    signing = payout_status.signing(started, 1, 1, 2, 1_500_000_000_000, 30_720_000, NOW)
    assert (signing.amount, signing.amount_xmr, signing.fee, signing.fee_xmr) == (
        1_500_000_000_000,
        "1.5",
        30_720_000,
        "0.00003072",
    )
    wire = signing.to_api()
    assert (wire["amountXmr"], wire["feeXmr"]) == ("1.5", "0.00003072")
    # Later transitions keep them, with the atomic units they were formatted from.
    signed = payout_status.hashes_recorded(signing, 1, [HASH], NOW)
    done = payout_status.confirming(payout_status.submitted(signed, 1, 1, NOW), 1, 140, 1, 1, NOW)
    assert (done.phase, done.amount_xmr, done.fee_xmr) == (PayoutPhase.CONFIRMED, "1.5", "0.00003072")
    # The builder did not say: neither figure is shown.
    unknown = payout_status.signing(started, 1, 1, 2, None, None, NOW)
    assert (unknown.amount_xmr, unknown.fee_xmr) == (None, None)


def test_hashes_are_recorded_once_and_never_replaced() -> None:
    signed = payout_status.hashes_recorded(EscrowPayoutStatus(attempt=1), 1, [HASH], NOW)
    assert signed.tx_hashes == [HASH] and kstatus(signed) == ("False", "True", "False")
    assert payout_status.hashes_recorded(signed, 1, [HASH], NOW).tx_hashes == [HASH]  # the same: idempotent
    with pytest.raises(ValueError, match="never made"):
        payout_status.hashes_recorded(signed, 1, ["cd" * 32], NOW)
    with pytest.raises(ValueError, match="never pending"):
        payout_status.pending(signed, 1, "AwaitingFunds", "x", NOW)
    with pytest.raises(ValueError, match="at least one"):
        payout_status.hashes_recorded(EscrowPayoutStatus(), 1, [], NOW)


def test_confirmations_count_up_to_confirmed_which_is_ready() -> None:
    signed = payout_status.hashes_recorded(EscrowPayoutStatus(attempt=1), 1, [HASH], NOW)
    in_pool = payout_status.confirming(signed, 1, None, 0, 2, NOW)
    assert in_pool.phase == PayoutPhase.SUBMITTED and in_pool.submitted_at == NOW
    assert in_pool.message == "in the daemon's pool: 0 of 2 confirmations"
    one = payout_status.confirming(in_pool, 1, 140, 1, 2, NOW)
    assert (one.phase, one.height, one.confirmations) == (PayoutPhase.SUBMITTED, 140, 1)
    assert kstatus(one) == ("False", "True", "False")
    done = payout_status.confirming(one, 1, 140, 2, 2, NOW)
    assert done.phase == PayoutPhase.CONFIRMED and kstatus(done) == ("True", "False", "False")
    assert done.confirmed_at == NOW and done.tx_hashes == [HASH]


def test_failed_is_stalled_with_the_reason() -> None:
    failed = payout_status.failed(EscrowPayoutStatus(), 2, "SignerUnknown", "signer(s) judge are not participants")
    assert failed.phase == PayoutPhase.FAILED and kstatus(failed) == ("False", "False", "True")
    stalled = get_condition(failed.conditions, "Stalled")
    assert stalled is not None and stalled.reason == "SignerUnknown"


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"escrowRef": "deal", "signers": ["buyer", "vendor"]}, "either destinations"),
        (
            {
                "escrowRef": "deal",
                "signers": ["buyer"],
                "sweepTo": ADDRESS,
                "destinations": [{"address": ADDRESS, "amount": 1}],
            },
            "either destinations",
        ),
        ({"escrowRef": "deal", "signers": ["buyer", "buyer"], "sweepTo": ADDRESS}, "signers must be unique"),
        ({"escrowRef": "deal", "signers": ["buyer"], "destinations": [{"address": ADDRESS, "amount": 0}]}, "greater"),
        ({"escrowRef": "deal", "signers": ["buyer"], "sweepTo": "not-an-address"}, "at least 95"),
        ({"escrowRef": "deal", "signers": ["buyer"], "sweepTo": ADDRESS, "priority": 5}, "less than or equal"),
    ],
)
def test_the_spec_refuses_what_cannot_be_paid(spec: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        EscrowPayoutSpec.model_validate(spec)


def test_the_spec_sums_what_the_destinations_ask_for() -> None:
    spec = EscrowPayoutSpec.model_validate(
        {"escrowRef": "deal", "signers": ["vendor", "buyer"], "destinations": [{"address": ADDRESS, "amount": 5}] * 2}
    )
    assert spec.requested == 10 and (spec.priority, spec.confirmations) == (0, 10)
    sweep = EscrowPayoutSpec.model_validate({"escrowRef": "deal", "signers": ["vendor"], "sweepTo": ADDRESS})
    assert sweep.requested is None


def test_payout_copies_are_wallet_names_the_sidecar_takes_and_work_copies() -> None:
    names = PayoutNames(WalletNames("buyer", ESCROW_UID, 3), PAYOUT_UID, 2)
    assert payout_tag(PAYOUT_UID) == "pay_111122223333"
    assert names.synced == f"buyer_escrow_{ESCROW_UID}_pay_111122223333_2_synced"
    assert names.merged.endswith("_pay_111122223333_2_merged")
    for wallet in (names.synced, names.merged, names.work()):
        assert is_wallet_file(wallet) and is_wallet_file(wallet + ".keys") and is_work_copy(wallet)
    assert names.work() != names.work()
    assert not is_work_copy(WalletNames("buyer", ESCROW_UID, 3).final_wallet)
    with pytest.raises(ValueError, match="outside"):
        PayoutNames(WalletNames("buyer", ESCROW_UID, 3), PAYOUT_UID, 100)


def test_degraded_only_while_something_is_wrong_and_the_phase_kept_once_hashes_exist() -> None:
    def degraded(status: EscrowPayoutStatus) -> tuple[str, str]:
        c = get_condition(status.conditions, "Degraded")
        assert c is not None
        return c.status.value, c.reason

    funds = payout_status.waiting(EscrowPayoutStatus(), 1, "AwaitingFunds", "no unlocked funds yet", NOW)
    assert funds.phase == PayoutPhase.PENDING and degraded(funds) == ("False", "AsExpected")
    away = payout_status.waiting(funds, 1, "DaemonUnavailable", "monerod: connection refused", NOW)
    assert away.phase == PayoutPhase.PENDING and degraded(away) == ("True", "DaemonUnavailable")
    assert kstatus(away) == ("False", "True", "False")  # still in progress for kstatus
    started = payout_status.attempt_started(away, 1, 1, "payout-x", NOW)
    assert degraded(started) == ("False", "AsExpected")  # a step forward ends it
    sent = payout_status.submitted(payout_status.hashes_recorded(started, 1, [HASH], NOW), 1, 10, NOW)
    lost = payout_status.waiting(sent, 1, "DaemonUnavailable", "monerod: timed out", NOW)
    assert lost.phase == PayoutPhase.SUBMITTED and lost.tx_hashes == [HASH]  # never Pending again
    assert degraded(lost) == ("True", "DaemonUnavailable") and lost.message == "monerod: timed out"
    done = payout_status.confirming(lost, 1, 120, 10, 10, NOW)
    assert done.phase == PayoutPhase.CONFIRMED and degraded(done) == ("False", "AsExpected")
    assert kstatus(done) == ("True", "False", "False")
