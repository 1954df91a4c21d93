"""The funding figures and the Funded condition as pure functions of one scan of an escrow's wallet."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from escrow_operator.api import EscrowSpec, EscrowStatus, FundingPayout, get_condition
from escrow_operator.funding_status import (
    Scan,
    funded,
    observe,
    offline_scan_start,
    submitted_payout,
    unreadable,
    xmr,
)

XMR = 10**12


@dataclass(frozen=True)
class T:
    amount: int
    height: int
    confirmations: int
    txid: str = "a" * 64


def spec(**fields: object) -> EscrowSpec:
    return EscrowSpec.model_validate({"poolRef": "pool", **fields})


@pytest.mark.parametrize(
    ("atomic", "text"),
    [
        (0, "0"),
        (1, "0.000000000001"),
        (XMR, "1"),
        (3 * XMR // 2, "1.5"),
        (10**18, "1000000"),
        (XMR + 1, "1.000000000001"),
    ],
)
def test_xmr_is_exact(atomic: int, text: str) -> None:
    assert xmr(atomic) == text


@pytest.mark.parametrize(
    ("transfers", "expected"),
    [
        ([], (False, "AwaitingPayment")),
        ([T(XMR, 100, 20)], (False, "UnderPaid")),
        ([T(XMR, 100, 20), T(2 * XMR, 0, 0)], (False, "Confirming")),  # enough, one in the pool
        ([T(XMR, 100, 20), T(2 * XMR, 118, 2)], (False, "Confirming")),
        ([T(XMR, 100, 20), T(2 * XMR, 110, 10)], (True, "Funded")),
        ([T(3 * XMR + 1, 100, 10)], (True, "OverPaid")),
        ([T(3 * XMR - 1, 100, 50)], (False, "UnderPaid")),  # one atomic unit short is short
    ],
)
def test_funded_condition(transfers: list[T], expected: tuple[bool, str]) -> None:
    ok, reason, _ = funded(spec(amount=3 * XMR), transfers)
    assert (ok, reason) == expected


def test_messages_give_exact_figures() -> None:
    _, _, message = funded(spec(amount=3 * XMR), [T(XMR, 100, 20)])
    assert message == "received 1 of 3 XMR (2 XMR short)"
    _, _, message = funded(spec(amount=XMR), [T(2 * XMR + 1, 100, 20)])
    assert message == "received 2.000000000001 XMR, 1.000000000001 XMR more than 1 XMR"


def test_observe_fills_status_and_says_which_events() -> None:
    s = spec(amount=2 * XMR, confirmations=2)
    status, events = observe(EscrowStatus(), s, 1, Scan(100, [T(XMR, 99, 1)], 0))
    assert status.funding is not None
    assert (status.funding.received, status.funding.received_xmr, status.funding.transfers) == (XMR, "1", 1)
    assert (status.funding.confirmations, status.funding.height) == (1, 100)
    assert [e.reason for e in events] == ["FundsReceived", "UnderPaid"]
    # The same figures again: nothing new to say.
    again, events = observe(status, s, 1, Scan(101, [T(XMR, 99, 2)], 0))
    assert events == []
    condition = get_condition(again.conditions, "Funded")
    assert condition is not None and condition.observed_generation == 1
    paid, events = observe(again, s, 1, Scan(103, [T(XMR, 99, 4), T(XMR, 101, 2)], XMR))
    assert [e.reason for e in events] == ["FundsReceived", "Funded"]
    assert paid.funding is not None and paid.funding.unlocked == XMR and paid.funding.confirmations == 2
    _, events = observe(paid, s, 1, Scan(104, [T(XMR, 99, 5), T(XMR, 101, 3)], 2 * XMR))
    assert events == []  # Funded stays True: no second event


def test_without_amount_there_is_no_funded_condition() -> None:
    status, events = observe(EscrowStatus(), spec(), 1, Scan(100, [T(XMR, 0, 0)], 0))
    assert get_condition(status.conditions, "Funded") is None
    assert [e.reason for e in events] == ["FundsReceived"]
    assert status.funding is not None and status.funding.confirmations == 0


def test_unreadable_keeps_the_last_figures() -> None:
    status, _ = observe(EscrowStatus(), spec(), 1, Scan(100, [T(XMR, 90, 10)], XMR))
    failed = unreadable(status, "monerod is behind")
    assert failed.funding is not None
    assert (failed.funding.received, failed.funding.height, failed.funding.message) == (XMR, 100, "monerod is behind")
    again, _ = observe(failed, spec(), 1, Scan(101, [T(XMR, 90, 11)], XMR))
    assert again.funding is not None and again.funding.message is None


def test_offline_scan_start_is_wallet2s_clock_estimate() -> None:
    # Measured: wallets made offline in late 2026 scan from about 3.8 million (docs/design.md).
    start = offline_scan_start("mainnet", datetime(2026, 12, 1, tzinfo=UTC))
    assert 3_700_000 < start < 3_850_000
    assert offline_scan_start("stagenet", datetime(2026, 12, 1, tzinfo=UTC)) < start
    assert offline_scan_start("mainnet", datetime(2016, 3, 1, tzinfo=UTC)) < 1_009_827


PAYOUT = "b" * 64


def test_an_own_payouts_change_is_not_received_and_what_it_spent_is_not_unlocked() -> None:
    """Received 3 XMR, paid 1 XMR out with a 0.002 XMR fee: the watch wallet sees the 1.998 XMR change
    as a third transfer and still counts the 3 XMR of outputs the payout spent as unspent."""
    s = spec(amount=3 * XMR, confirmations=2)
    paid = [T(XMR, 100, 20, "c" * 64), T(2 * XMR, 101, 19, "d" * 64)]
    before, _ = observe(EscrowStatus(), s, 1, Scan(120, paid, 3 * XMR))
    fee = 2 * XMR // 1000
    payout = submitted_payout({"phase": "Submitted", "txHashes": [PAYOUT], "amount": XMR, "fee": fee})
    assert payout == FundingPayout(tx_hashes=[PAYOUT], spent=XMR + fee)
    change = T(3 * XMR - XMR - fee, 0, 0, PAYOUT)  # in the pool
    # Watch wallet: 3 XMR unlocked (the spent outputs), the change locked.
    after, events = observe(before, s, 1, Scan(121, [*paid, change], 3 * XMR), [payout])
    f = after.funding
    assert f is not None
    assert (f.received, f.transfers, f.confirmations, f.paid_out) == (3 * XMR, 2, 19, XMR + fee)
    assert f.unlocked == 0  # everything spendable was spent; the change is not unlocked yet
    assert events == []  # the change is no payment
    funded_ = get_condition(after.conditions, "Funded")
    assert funded_ is not None and funded_.reason == "Funded"
    # Ten blocks later the change is unlocked; the payout object is gone, its record is not.
    unlocked_change = T(change.amount, 121, 10, PAYOUT)
    later, _ = observe(after, s, 1, Scan(131, [*paid, unlocked_change], 3 * XMR + change.amount))
    assert later.funding is not None
    assert (later.funding.received, later.funding.unlocked) == (3 * XMR, change.amount)
    assert later.funding.payouts == [payout]


@pytest.mark.parametrize(
    "status",
    [
        {"phase": "Signing", "txHashes": [PAYOUT], "amount": 1, "fee": 1},  # recorded, not yet submitted
        {"phase": "Failed", "txHashes": [PAYOUT], "amount": 1, "fee": 1},  # rejected: nothing was spent
        {"phase": "Submitted", "txHashes": [], "amount": 1, "fee": 1},
        {"phase": "Confirmed", "txHashes": [PAYOUT]},
    ],
)
def test_only_a_submitted_payout_with_its_figures_counts_as_spent(status: dict[str, object]) -> None:
    assert submitted_payout(status) is None


def test_a_payout_seen_again_is_remembered_once() -> None:
    payout = FundingPayout(tx_hashes=[PAYOUT], spent=5)
    first, _ = observe(EscrowStatus(), spec(), 1, Scan(100, [], 10), [payout])
    again, _ = observe(first, spec(), 1, Scan(101, [], 10), [payout])
    assert again.funding is not None and again.funding.payouts == [payout] and again.funding.paid_out == 5
