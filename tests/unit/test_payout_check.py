"""What a signer checks before it signs a payout's transaction set (payout_check.refusal), without a wallet."""

from __future__ import annotations

import pytest

from escrow_operator.payout_check import FEE_LIMIT, Expected, refusal
from escrow_operator.walletrpc import DescribedTransfer

XMR = 10**12
ESCROW, VENDOR, BUYER, STRANGER = "4Escrow", "4Vendor", "4Buyer", "4Stranger"
FEE = 30_720_000


def tx(*recipients: tuple[str, int], change: int = 0, change_to: str = ESCROW, **more: object) -> DescribedTransfer:
    return DescribedTransfer.model_validate(
        {
            "recipients": [{"address": a, "amount": n} for a, n in recipients],
            "fee": more.pop("fee", FEE),
            "change_address": change_to if change else "",
            "change_amount": change,
            **more,
        }
    )


RELEASE = Expected(destinations={VENDOR: 2 * XMR}, sweep_to=None, own_address=ESCROW)
REFUND = Expected(destinations=None, sweep_to=BUYER, own_address=ESCROW)


@pytest.mark.parametrize(
    ("described", "expected"),
    [
        ([tx((VENDOR, 2 * XMR), change=XMR)], RELEASE),
        ([tx((VENDOR, 2 * XMR), (ESCROW, XMR))], RELEASE),  # change listed as a recipient: the escrow itself
        ([tx((VENDOR, XMR)), tx((VENDOR, XMR))], RELEASE),  # split over two transactions
        ([tx((BUYER, 3 * XMR)), tx((BUYER, XMR))], REFUND),
        ([tx((VENDOR, 2 * XMR))], Expected({VENDOR: 2 * XMR}, None, ESCROW, allowed=frozenset({VENDOR, BUYER}))),
        ([tx((VENDOR, 2 * XMR), fee=FEE_LIMIT)], RELEASE),
    ],
    ids=["release", "change-as-recipient", "two-transactions", "sweep", "allowed", "fee-at-the-limit"],
)
def test_a_set_that_pays_what_the_payout_asks_is_signed(described: list[DescribedTransfer], expected: Expected) -> None:
    assert refusal(described, expected) is None


@pytest.mark.parametrize(
    ("described", "expected", "why"),
    [
        ([], RELEASE, "the set holds no transaction"),
        ([tx((STRANGER, 2 * XMR))], RELEASE, f"it pays 2 XMR to {STRANGER}; the payout asks for 2 XMR to {VENDOR}"),
        ([tx((VENDOR, 3 * XMR))], RELEASE, f"it pays 3 XMR to {VENDOR}; the payout asks for 2 XMR to {VENDOR}"),
        ([tx((VENDOR, 2 * XMR), (STRANGER, 1))], RELEASE, "it pays 0.000000000001 XMR to 4Stranger, 2 XMR to 4Vendor"),
        ([tx((VENDOR, 2 * XMR), change=XMR, change_to=STRANGER)], RELEASE, "of change to 4Stranger, not the escrow"),
        ([tx((VENDOR, 2 * XMR), unlock_time=100)], RELEASE, "unlock time 100"),
        ([tx((VENDOR, 2 * XMR), payment_id="1234")], RELEASE, "carries a payment id"),
        ([tx((VENDOR, 2 * XMR), fee=FEE_LIMIT + 1)], RELEASE, "above the limit of 0.05 XMR"),
        ([tx((BUYER, XMR), (STRANGER, XMR))], REFUND, "the payout sweeps everything to 4Buyer alone"),
        (
            [tx((STRANGER, 2 * XMR))],
            Expected({STRANGER: 2 * XMR}, None, ESCROW, allowed=frozenset({VENDOR, BUYER})),
            "which the escrow's payoutAddresses do not list",
        ),
    ],
    ids=[
        "empty",
        "another-address",
        "another-amount",
        "an-extra-output",
        "change-elsewhere",
        "locked",
        "payment-id",
        "fee",
        "sweep-split",
        "not-a-payout-address",
    ],
)
def test_a_set_that_pays_anything_else_is_refused(
    described: list[DescribedTransfer], expected: Expected, why: str
) -> None:
    said = refusal(described, expected)
    assert said is not None and why in said, said
