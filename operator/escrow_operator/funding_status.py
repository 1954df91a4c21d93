"""What an Escrow received, and whether it is paid: pure functions from what its wallet reports.

:func:`observe` turns one scan of the escrow's wallet (its incoming transfers and balance at a chain
height) into ``status.funding`` and, when ``spec.amount`` is set, the ``Funded`` condition, and says
which Events the change deserves. Amounts are atomic units throughout and are compared exactly; XMR
appears only in messages and the printer-column field, formatted from integers (never rounded).

==================================================  =======  ================
what the wallet shows                                Funded   reason
==================================================  =======  ================
nothing received                                     False    AwaitingPayment
less than the amount, whatever its confirmations     False    UnderPaid
the amount or more, not yet enough confirmations     False    Confirming
exactly the amount, enough confirmations             True     Funded
more than the amount, enough confirmations           True     OverPaid
==================================================  =======  ================

Only transfers with at least ``spec.confirmations`` confirmations count toward the amount.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from .api import ATOMIC_PER_XMR, EscrowSpec, EscrowStatus, FundingStatus, get_condition, set_condition

FUNDED = "Funded"


def xmr(atomic: int) -> str:
    """``atomic`` units as an exact decimal XMR string: 4000000000000 -> "4", 1500000000 -> "0.0015"."""
    whole, fraction = divmod(atomic, ATOMIC_PER_XMR)
    return f"{whole}.{fraction:012d}".rstrip("0").rstrip(".") if fraction else str(whole)


class Transfer(Protocol):
    """An incoming transfer as wallet-rpc's ``get_transfers`` describes it (height 0: in the pool)."""

    @property
    def amount(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def confirmations(self) -> int: ...


@dataclass(frozen=True)
class Scan:
    """One read of the escrow's wallet after a block."""

    height: int
    transfers: Sequence[Transfer]
    unlocked: int


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


#: wallet2's clock-based height estimate (docs/design.md, Funding): a known block and its time per
#: network, the target block time, and the month it takes off when no daemon answers.
_KNOWN_BLOCK = {"mainnet": (1009827, 1458748658), "testnet": (624634, 1448285909), "stagenet": (32000, 1520937818)}
_BLOCK_SECONDS = 120
_MONTH_BLOCKS = 30 * 24 * 3600 // _BLOCK_SECONDS
#: How far the wallet-rpc pod's clock may have been behind the operator's when the wallets were made.
CLOCK_MARGIN = timedelta(days=2)


def offline_scan_start(network: str, made_at: datetime) -> int:
    """The lowest height wallet2 starts scanning a wallet from when it was created with no daemon at
    ``made_at`` (less :data:`CLOCK_MARGIN`). A chain below it cannot be scanned by such a wallet:
    wallet-rpc's ``refresh`` then never returns (it waits for hashes up to that height)."""
    block, at = _KNOWN_BLOCK[network]
    seconds = (made_at - CLOCK_MARGIN).timestamp() - at
    return max(0, block + int(seconds) // _BLOCK_SECONDS - _MONTH_BLOCKS)


def funding(scan: Scan) -> FundingStatus:
    newest = max(scan.transfers, key=lambda t: (t.height == 0, t.height), default=None)
    received = sum(t.amount for t in scan.transfers)
    return FundingStatus(
        received=received,
        received_xmr=xmr(received),
        unlocked=scan.unlocked,
        transfers=len(scan.transfers),
        confirmations=None if newest is None else newest.confirmations,
        height=scan.height,
    )


def funded(spec: EscrowSpec, scan: Scan) -> tuple[bool, str, str]:
    """The Funded condition (status, reason, message) for ``spec.amount``, which must be set."""
    amount = spec.amount
    if amount is None:
        raise ValueError("funded() needs spec.amount")
    received = sum(t.amount for t in scan.transfers)
    confirmed = sum(t.amount for t in scan.transfers if t.confirmations >= spec.confirmations)
    want = f"{xmr(amount)} XMR"
    if received == 0:
        return False, "AwaitingPayment", f"waiting for a payment of {want}"
    if received < amount:
        return False, "UnderPaid", f"received {xmr(received)} of {want} ({xmr(amount - received)} XMR short)"
    if confirmed < amount:
        return (
            False,
            "Confirming",
            f"received {xmr(received)} XMR; {xmr(confirmed)} XMR of it has {spec.confirmations} confirmations",
        )
    if received > amount:
        return True, "OverPaid", f"received {xmr(received)} XMR, {xmr(received - amount)} XMR more than {want}"
    return True, FUNDED, f"received {want} with at least {spec.confirmations} confirmations"


def observe(
    status: EscrowStatus, spec: EscrowSpec, generation: int | None, scan: Scan, now: datetime | None = None
) -> tuple[EscrowStatus, list[Event]]:
    """The status after ``scan``, and the Events it calls for (funds arrived, Funded turned True)."""
    new = status.model_copy(deep=True)
    before = status.funding
    new.funding = funding(scan)
    events: list[Event] = []
    arrived = new.funding.transfers - (before.transfers if before is not None else 0)
    if arrived > 0:
        newest = new.funding.confirmations
        events.append(
            Event(
                "Normal",
                "FundsReceived",
                f"{arrived} new incoming transfer(s); received {new.funding.received_xmr} XMR in total"
                + ("" if newest is None else f", newest with {newest} confirmations"),
            )
        )
    if spec.amount is not None:
        was = get_condition(new.conditions, FUNDED)
        ok, reason, message = funded(spec, scan)
        set_condition(new.conditions, FUNDED, ok, reason, message, generation, now)
        if ok and (was is None or was.status != "True"):
            events.append(Event("Normal" if reason == FUNDED else "Warning", reason, message))
        elif reason == "UnderPaid" and (was is None or was.reason != reason):
            events.append(Event("Warning", reason, message))
    return new, events


def unreadable(status: EscrowStatus, message: str) -> EscrowStatus:
    """The wallet could not be read: keep the last figures (and the height they were read at), say why."""
    new = status.model_copy(deep=True)
    new.funding = (new.funding or FundingStatus()).model_copy(update={"message": message[:1024]})
    return new
