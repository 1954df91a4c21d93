"""What a signer checks before it signs a payout's transaction set (pure).

Every signature is preceded by ``describe_transfer`` in the signer's own wallet (the builder's after it
built the set, each cosigner's before ``sign_multisig``), and the set is refused unless what it pays is
what the EscrowPayout asks, as Haveno's signers check a payout against the trade contract:

* at least one transaction, none with an unlock time or a payment id;
* ``destinations``: the recipients, summed per address, are exactly the destinations (summed per
  address); ``sweepTo``: every recipient is the sweep address;
* change goes only back to the escrow's own address (a recipient that is the escrow's address counts as
  change);
* when the Escrow records ``payoutAddresses``, every recipient is one of them;
* the fee of all the transactions together is at most :data:`FEE_LIMIT` (0.05 XMR): far above what any
  priority costs for a payout's few inputs and outputs, and low enough that a set cannot hide a
  payment in its fee.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .api import ATOMIC_PER_XMR, xmr
from .walletrpc import DescribedTransfer

#: The most a payout's transactions may pay in fees together, in atomic units.
FEE_LIMIT = ATOMIC_PER_XMR // 20


@dataclass(frozen=True)
class Expected:
    """What the payout asks for, and what the escrow allows."""

    destinations: Mapping[str, int] | None  # address -> amount (summed per address); None: a sweep
    sweep_to: str | None
    own_address: str  # the escrow's multisig address: the only place change may go
    allowed: frozenset[str] | None = None  # spec.payoutAddresses of the escrow (None: any address)
    fee_limit: int = FEE_LIMIT


def summed(pairs: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Amounts per address."""
    total: dict[str, int] = defaultdict(int)
    for address, amount in pairs:
        total[address] += amount
    return dict(total)


def refusal(described: Sequence[DescribedTransfer], expected: Expected) -> str | None:
    """Why the described set must not be signed (None: it pays what the payout asks)."""
    if not described:
        return "the set holds no transaction"
    paid: list[tuple[str, int]] = []
    change = fee = 0
    for index, tx in enumerate(described):
        if tx.unlock_time:
            return f"transaction {index} has unlock time {tx.unlock_time}; a payout's has none"
        if tx.payment_id.strip("0"):
            return f"transaction {index} carries a payment id; a payout's carries none"
        if tx.change_amount and tx.change_address != expected.own_address:
            return f"transaction {index} returns {xmr(tx.change_amount)} XMR of change to {tx.change_address}, not the escrow"
        change += tx.change_amount
        fee += tx.fee
        for recipient in tx.recipients:
            if recipient.address == expected.own_address:
                change += recipient.amount  # back to the escrow itself
            else:
                paid.append((recipient.address, recipient.amount))
    if fee > expected.fee_limit:
        return f"its fee is {xmr(fee)} XMR, above the limit of {xmr(expected.fee_limit)} XMR"
    got = summed(paid)
    if expected.allowed is not None:
        strangers = sorted(a for a in got if a not in expected.allowed)
        if strangers:
            return f"it pays {', '.join(strangers)}, which the escrow's payoutAddresses do not list"
    if expected.destinations is not None:
        if got != dict(expected.destinations):
            return f"it pays {_listed(got)}; the payout asks for {_listed(expected.destinations)}"
        return None
    if set(got) != {expected.sweep_to}:
        return f"it pays {_listed(got)}; the payout sweeps everything to {expected.sweep_to} alone"
    return None


def _listed(amounts: Mapping[str, int]) -> str:
    return ", ".join(f"{xmr(amount)} XMR to {address}" for address, amount in sorted(amounts.items())) or "nothing"
