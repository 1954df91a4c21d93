"""What the chain watch found for one escrow: its outputs and their spends, and the figures they make.

Pure data and functions. A :class:`Ledger` holds the escrow's outputs found in blocks (each with the
height and hash of its block, so a reorganisation can take it back) and in the daemon's pool, the key
images of its outputs (recorded by the operator when it signs a payout) and the spends seen of them.
Records are keyed by what they are (an output by transaction and index, a spend by output key): adding
one twice changes nothing, so a block scanned again after a crash counts once.

:func:`scan_of` turns a ledger into the :class:`escrow_operator.funding_status.Scan` that the wallet
would report after a refresh: one incoming transfer per transaction (its outputs to the escrow summed;
the coinbase too; a transaction that spends the escrow's outputs is its own, and its change is no
incoming transfer, as in wallet2), confirmations counted as wallet2 does (chain height less block height), and the
unlocked figure wallet2's ``is_transfer_unlocked`` gives: unspent, 10 blocks deep, and past its
unlock time (a coinbase's 60 blocks).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from .funding_status import Scan

#: Blocks an output waits before it can be spent (CRYPTONOTE_DEFAULT_TX_SPENDABLE_AGE).
SPENDABLE_AGE = 10
#: unlock_time below this is a block height, else a UNIX time (CRYPTONOTE_MAX_BLOCK_NUMBER).
MAX_BLOCK_NUMBER = 500_000_000
#: Slack wallet2 allows an unlock time given in seconds (CRYPTONOTE_LOCKED_TX_ALLOWED_DELTA_SECONDS_V2).
UNLOCK_DELTA_SECONDS = 120


@dataclass(frozen=True)
class Received:
    """An output of the escrow. ``height`` 0 and no block hash: in the daemon's pool."""

    tx_hash: str
    index: int
    key: str
    amount: int
    unlock_time: int = 0
    height: int = 0
    block: str = ""

    @property
    def confirmed(self) -> bool:
        return bool(self.block)


@dataclass(frozen=True)
class Spend:
    """A transaction that carries the key image of one of the escrow's outputs."""

    tx_hash: str
    height: int = 0
    block: str = ""


@dataclass
class Ledger:
    #: Found in blocks, by (transaction, output index).
    outputs: dict[tuple[str, int], Received] = field(default_factory=dict)
    #: Found in the daemon's pool now (replaced at every look at the pool).
    pool: dict[tuple[str, int], Received] = field(default_factory=dict)
    #: Key image -> the output key it spends (the escrow's own payouts record them).
    key_images: dict[str, str] = field(default_factory=dict)
    #: Output key -> its spend seen in a block.
    spends: dict[str, Spend] = field(default_factory=dict)
    #: Output key -> its spend seen in the daemon's pool now.
    pool_spends: dict[str, Spend] = field(default_factory=dict)

    # --- changes --------------------------------------------------------------------------------
    def add(self, found: Iterable[Received]) -> bool:
        """Record outputs found in a block; True if any was new."""
        changed = False
        for out in found:
            key = (out.tx_hash, out.index)
            if self.outputs.get(key) != out:
                self.outputs[key] = out
                changed = True
        return changed

    def spend(self, image: str, spend: Spend) -> bool:
        """Record that a transaction in a block spends the output of key image ``image``."""
        key = self.key_images.get(image)
        if key is None or self.spends.get(key) == spend:
            return False
        self.spends[key] = spend
        return True

    def undo_from(self, height: int) -> bool:
        """Forget what blocks at ``height`` and above found (they left the chain); True if anything."""
        outputs = {k: v for k, v in self.outputs.items() if v.height < height}
        spends = {k: v for k, v in self.spends.items() if v.height < height}
        changed = len(outputs) != len(self.outputs) or len(spends) != len(self.spends)
        self.outputs, self.spends = outputs, spends
        return changed

    def set_pool(self, outputs: Iterable[Received], spends: dict[str, Spend]) -> bool:
        pool = {(o.tx_hash, o.index): o for o in outputs if (o.tx_hash, o.index) not in self.outputs}
        spends = {k: s for k, s in spends.items() if k not in self.spends}
        changed = pool != self.pool or spends != self.pool_spends
        self.pool, self.pool_spends = pool, spends
        return changed

    def learn(self, key_images: dict[str, str]) -> None:
        self.key_images.update(key_images)

    # --- what it amounts to ---------------------------------------------------------------------
    def spent(self, out: Received) -> bool:
        return out.key in self.spends or out.key in self.pool_spends

    # --- persistence ----------------------------------------------------------------------------
    def to_json(self) -> str:
        """The block records (the pool is read again after a restart), compact and in a stable order."""
        return json.dumps(
            {
                "outputs": [
                    [o.tx_hash, o.index, o.key, o.amount, o.unlock_time, o.height, o.block]
                    for o in sorted(self.outputs.values(), key=lambda o: (o.height, o.tx_hash, o.index))
                ],
                "spends": {k: [s.tx_hash, s.height, s.block] for k, s in sorted(self.spends.items())},
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None, *, below: int | None = None) -> Ledger:
        """A ledger as :meth:`to_json` wrote it, without what blocks at ``below`` and above found (the
        chain's cursor had not passed them: they are scanned again)."""
        ledger = cls()
        if not text:
            return ledger
        doc: dict[str, Any] = json.loads(text)
        for tx, index, key, amount, unlock, height, block in doc.get("outputs", []):
            ledger.outputs[(tx, index)] = Received(tx, index, key, amount, unlock, height, block)
        for key, (tx, height, block) in (doc.get("spends") or {}).items():
            ledger.spends[key] = Spend(tx, height, block)
        if below is not None:
            ledger.undo_from(below)
        return ledger


def confirm(out: Received, height: int, block: str) -> Received:
    return replace(out, height=height, block=block)


def is_unlocked(out: Received, chain_height: int, now: float) -> bool:
    """wallet2's ``is_transfer_unlocked`` at a chain of ``chain_height`` blocks."""
    if not out.confirmed or out.height + SPENDABLE_AGE > chain_height:
        return False
    if out.unlock_time < MAX_BLOCK_NUMBER:
        return chain_height >= out.unlock_time
    return now + UNLOCK_DELTA_SECONDS >= out.unlock_time


@dataclass(frozen=True)
class Transfer:
    """An incoming transfer as the wallet lists it: one per transaction."""

    txid: str
    amount: int
    height: int
    confirmations: int


def scan_of(ledger: Ledger, chain_height: int, now: float | None = None) -> Scan:
    """The figures wallet-rpc would report for the escrow's wallet at a chain of ``chain_height`` blocks."""
    moment = time.time() if now is None else now
    own = {s.tx_hash for s in [*ledger.spends.values(), *ledger.pool_spends.values()]}
    by_tx: dict[str, list[Received]] = {}
    for out in [*ledger.outputs.values(), *ledger.pool.values()]:
        if out.tx_hash not in own:  # the change of the escrow's own spend is not an incoming transfer
            by_tx.setdefault(out.tx_hash, []).append(out)
    transfers = []
    for tx, outs in sorted(by_tx.items()):
        height = outs[0].height if outs[0].confirmed else 0
        confirmations = max(0, chain_height - height) if height else 0
        transfers.append(Transfer(tx, sum(o.amount for o in outs), height, confirmations))
    unlocked = sum(
        o.amount for o in ledger.outputs.values() if not ledger.spent(o) and is_unlocked(o, chain_height, moment)
    )
    # Without key images (no payout signed by this operator version yet) spends cannot be seen: the
    # status then takes what the escrow's submitted payouts spent off, as for a watch wallet.
    return Scan(height=chain_height, transfers=transfers, unlocked=unlocked, spends_known=bool(ledger.key_images))
