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

The escrow's own payouts (:func:`submitted_payout`, once Submitted) are accounted for: the watch
wallet, a copy of a final wallet that never imports the signers' multisig infos, cannot tell its
outputs are spent and sees a payout's change as a new incoming transfer. So the change of a payout is
not counted as received, and what the payouts took (amount, fee and change: every output they
spent) is taken off the unlocked figure. Payouts are remembered in ``status.funding.payouts``, so the
figures stay right after a payout object is deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from .api import (
    EscrowSpec,
    EscrowStatus,
    FundingPayout,
    FundingStatus,
    PayoutPhase,
    get_condition,
    set_condition,
)
from .api import xmr as xmr  # re-exported: funding_status.xmr is what the engines and tests call
from .api.escrow import MAX_FUNDING_PAYOUTS

FUNDED = "Funded"


class Transfer(Protocol):
    """An incoming transfer as wallet-rpc's ``get_transfers`` describes it (height 0: in the pool)."""

    @property
    def txid(self) -> str: ...
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
    #: The unlocked figure already leaves out what the escrow's payouts spent (the chain watch knows
    #: their key images); a watch wallet that never imports multisig infos does not.
    spends_known: bool = False


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


#: wallet2's clock-based height estimate (docs/design.md, Funding): a known block and its time per
#: network, the target block time, and the month it takes off when no daemon answers.
_KNOWN_BLOCK = {"mainnet": (1009827, 1458748658), "testnet": (624634, 1448285909), "stagenet": (32000, 1520937818)}
_KNOWN_BLOCK["regtest"] = _KNOWN_BLOCK["mainnet"]  # regtest wallets are mainnet wallets
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


def submitted_payout(status: Mapping[str, Any]) -> FundingPayout | None:
    """What a payout (its status, as stored) took from its escrow, once Submitted or Confirmed; else None."""
    hashes, amount, fee = status.get("txHashes") or [], status.get("amount"), status.get("fee")
    if status.get("phase") not in (PayoutPhase.SUBMITTED, PayoutPhase.CONFIRMED) or not hashes:
        return None
    if amount is None or fee is None:
        return None
    return FundingPayout(tx_hashes=sorted(hashes), spent=int(amount) + int(fee))


def remembered(before: Sequence[FundingPayout], seen: Iterable[FundingPayout]) -> list[FundingPayout]:
    """The payouts recorded before, and those ``seen`` now that are new (by their hashes), oldest first."""
    merged = list(before)
    known = {frozenset(p.tx_hashes) for p in merged}
    for payout in sorted(seen, key=lambda p: p.tx_hashes):
        if frozenset(payout.tx_hashes) not in known:
            known.add(frozenset(payout.tx_hashes))
            merged.append(payout)
    return merged[:MAX_FUNDING_PAYOUTS]


def received_from_others(scan: Scan, payouts: Sequence[FundingPayout]) -> list[Transfer]:
    """The incoming transfers that are not an own payout's change."""
    own = {h for p in payouts for h in p.tx_hashes}
    return [t for t in scan.transfers if t.txid not in own]


def funding(scan: Scan, payouts: Sequence[FundingPayout] = ()) -> FundingStatus:
    others = received_from_others(scan, payouts)
    newest = max(others, key=lambda t: (t.height == 0, t.height), default=None)
    received = sum(t.amount for t in others)
    change = sum(t.amount for t in scan.transfers) - received
    paid_out = sum(p.spent for p in payouts)
    return FundingStatus(
        received=received,
        received_xmr=xmr(received),
        # A watch wallet still counts every output a payout spent as unspent: their total is what the
        # payout paid (amount and fee) plus its change.
        unlocked=scan.unlocked if scan.spends_known else max(0, scan.unlocked - paid_out - change),
        transfers=len(others),
        confirmations=None if newest is None else newest.confirmations,
        height=scan.height,
        paid_out=paid_out,
        payouts=list(payouts),
    )


def funded(spec: EscrowSpec, transfers: Sequence[Transfer]) -> tuple[bool, str, str]:
    """The Funded condition (status, reason, message) for ``spec.amount``, which must be set, from the
    transfers received from others."""
    amount = spec.amount
    if amount is None:
        raise ValueError("funded() needs spec.amount")
    received = sum(t.amount for t in transfers)
    confirmed = sum(t.amount for t in transfers if t.confirmations >= spec.confirmations)
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
    status: EscrowStatus,
    spec: EscrowSpec,
    generation: int | None,
    scan: Scan,
    payouts: Iterable[FundingPayout] = (),
    now: datetime | None = None,
) -> tuple[EscrowStatus, list[Event]]:
    """The status after ``scan`` with the escrow's submitted ``payouts`` (those known now; those recorded
    before are kept), and the Events it calls for (funds arrived, Funded turned True)."""
    new = status.model_copy(deep=True)
    before = status.funding
    known = remembered(before.payouts if before is not None else [], payouts)
    new.funding = funding(scan, known)
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
        ok, reason, message = funded(spec, received_from_others(scan, known))
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
