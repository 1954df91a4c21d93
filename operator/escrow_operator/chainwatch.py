"""The chain watch of one monerod: every new block scanned once, for every watched escrow, with view keys.

One :class:`ChainWatch` per daemon address follows its chain (:class:`escrow_operator.blocks.BlockWatch`
says when the tip moves: pushed over ZMQ or polled). For each new block it reads the block
(``get_block``: the miner transaction decoded, the other transactions' hashes) and its transactions
(``get_transactions``, decoded and pruned, in batches), then looks in every output for every watched
escrow (:mod:`escrow_operator.viewkeys`) and in every input for the key images of the escrows' outputs
that their payouts recorded. It never calls wallet-rpc.

A follower of a chain, not of a tip:

* **Cursor.** The height scanned up to and the hashes of the last :data:`WINDOW` blocks are kept in a
  Secret of the operator's namespace (``escrow-chain-<digest of the address>``), written after the
  escrows' findings for those blocks. Findings are records keyed by what they are (an output by
  transaction and index), so a block scanned again after a crash counts once, and a restart resumes
  at the cursor: no gap, nothing twice.
* **Reorganisations.** Each block's ``prev_hash`` must be the hash recorded below it, and the tip's hash
  the cursor's. When not, the fork is found by walking the recorded hashes down until the daemon agrees;
  everything found at and above it is taken back, and scanning resumes there on the winning branch.
* **Joining.** An escrow starts being watched at the height its wallets were made (``start``): it is
  scanned alone from there up to the cursor (every block once for all escrows joining together), its
  findings saved with ``joined``, and only then follows the chain with the others.
* **The pool.** After each pass (a block, or every poll interval), the daemon's pool is read; its
  transactions (each decoded and scanned once while it stays there) give the unconfirmed transfers and
  spends.

Each escrow's findings live in its watch Secret (``ledger``, operator's namespace), saved when they change, through the
:class:`Watched` callbacks; the view key comes from there too and is never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

from .api import GROUP
from .blocks import BlockWatch, Chains
from .faults import Faults, Point
from .funding_status import Scan
from .kube import Kube
from .monerod import Block, MonerodUnavailable
from .secret_store import RecordSecret
from .settings import OPERATOR_NAME, OperatorSettings
from .viewkeys import Transaction, WatchKeys, scan
from .watch_ledger import Ledger, Received, Spend, scan_of

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Block hashes the cursor keeps: the deepest reorganisation it can take back exactly.
WINDOW = 100
#: Blocks scanned between two writes of the cursor while catching up.
CURSOR_EVERY = 20
#: Escrow Secrets written at once after a block.
SAVE_CONCURRENCY = 8
#: Escrows scanned before the scan lets the event loop run other work: a block's transactions cost
#: about 160 us per escrow each, so a block of 40 for 10,000 escrows would hold the loop for a minute.
SCAN_SLICE = 16

SaveLedger = Callable[[str, bool], Awaitable[None]]  # (ledger JSON, joined)


@dataclass
class Watched:
    """One escrow as the watch follows it."""

    key: str  # namespace/uid
    keys: WatchKeys
    start: int  # the first block that can pay it (its wallets' creation height)
    ledger: Ledger
    joined: bool
    save: SaveLedger
    scan: Scan | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, figures: Scan) -> None:
        if figures != self.scan:
            self.scan = figures
            self.changed.set()


class CursorSecret(RecordSecret):
    """Where one daemon's chain watch stands: the height scanned up to and the last block hashes."""

    def __init__(self, kube: Kube, namespace: str, address: str) -> None:
        digest = hashlib.sha256(address.encode()).hexdigest()[:16]
        super().__init__(kube, namespace, f"escrow-chain-{digest}")
        self.address = address

    async def read(self) -> tuple[int, list[tuple[int, str]]] | None:
        await self.create_or_load(
            labels={"app.kubernetes.io/managed-by": OPERATOR_NAME, "app.kubernetes.io/component": "chain-watch"},
            annotations={f"{GROUP}/daemon": self.address},
            owner=None,
            data={"daemon": self.address},
        )
        raw = self._get("cursor")
        if raw is None:
            return None
        doc = json.loads(raw)
        return int(doc["height"]), [(int(h), str(x)) for h, x in doc["hashes"]]

    async def write(self, height: int, hashes: list[tuple[int, str]]) -> None:
        await self._write({"cursor": json.dumps({"height": height, "hashes": hashes}, separators=(",", ":"))})


class Cursor:
    """The height scanned up to (the next block to scan) and the hashes of the blocks below it."""

    def __init__(self, height: int, hashes: list[tuple[int, str]]) -> None:
        self.height = height
        self.hashes = dict(hashes)

    def hash(self, height: int) -> str | None:
        return self.hashes.get(height)

    @property
    def top(self) -> str | None:
        return self.hashes.get(self.height - 1)

    def push(self, height: int, block_hash: str) -> None:
        self.hashes[height] = block_hash
        self.height = height + 1
        for old in [h for h in self.hashes if h < self.height - WINDOW]:
            del self.hashes[old]

    def truncate(self, height: int) -> None:
        self.hashes = {h: x for h, x in self.hashes.items() if h < height}
        self.height = height

    def to_list(self) -> list[tuple[int, str]]:
        return sorted(self.hashes.items())


class ChainWatch:
    def __init__(
        self, blocks: BlockWatch, kube: Kube, namespace: str, settings: OperatorSettings, faults: Faults
    ) -> None:
        self.blocks = blocks
        #: The block watch's client of the same daemon, shared: the block watch closes it (``Chains.close``,
        #: after ``ChainWatches.close``).
        self.daemon = blocks.client
        self.store = CursorSecret(kube, namespace, blocks.address)
        self.settings, self.faults = settings, faults
        self.escrows: dict[str, Watched] = {}
        self.cursor: Cursor | None = None
        #: Why the last pass failed (None: it completed).
        self.error: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: The daemon's pool: each transaction decoded, and what it holds for each escrow scanned once.
        self._pool: dict[str, tuple[Transaction, dict[str, list[Received]]]] = {}
        self.blocks_scanned = 0

    # --- what the funding watches use -----------------------------------------------------------
    def watch(self, escrow: Watched) -> None:
        """Follow ``escrow`` from now on (replacing an earlier registration of the same key)."""
        self.escrows[escrow.key] = escrow
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"chain watch {self.blocks.address}")

    def unwatch(self, key: str) -> None:
        self.escrows.pop(key, None)

    def learn(self, key: str, key_images: dict[str, str]) -> None:
        """The key images of ``key``'s outputs (a payout recorded them before submitting)."""
        escrow = self.escrows.get(key)
        if escrow is not None:
            escrow.ledger.learn(key_images)
            self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # --- the follower ---------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 1.0
        while True:
            try:
                if self.cursor is None:
                    self.cursor = await self._load()
                await self._pass()
                if self.error is not None:
                    log.info("chain watch %s: scanning again at height %d", self.blocks.address, self.cursor.height)
                self.error, backoff = None, 1.0
            except (MonerodUnavailable, ApiException) as exc:
                detail = exc.detail if isinstance(exc, MonerodUnavailable) else f"apiserver: {exc.status} {exc.reason}"
                if detail != self.error:
                    log.warning("chain watch %s: %s; trying again", self.blocks.address, detail)
                self.error = detail
            except Exception as exc:  # a follower never dies: every escrow of the daemon depends on it
                log.exception("chain watch %s: pass failed; trying again", self.blocks.address)
                self.error = f"{type(exc).__name__}: {exc}"
            else:
                await self._idle()
                continue
            await first(asyncio.sleep(backoff), self.blocks.changed())
            backoff = min(backoff * 2, self.settings.block_poll_interval)

    async def _idle(self) -> None:
        """Until the tip moves, an escrow joins or learns key images, or the pool is due a look."""
        self._wake.clear()
        await first(
            first(self.blocks.changed(), self._wake.wait()),
            asyncio.sleep(self.settings.block_poll_interval),
        )

    async def _load(self) -> Cursor:
        stored = await self.store.read()
        if stored is not None:
            height, hashes = stored
            log.info("chain watch %s: resuming at height %d", self.blocks.address, height)
            return Cursor(height, hashes)
        tip = await self.daemon.get_info()
        log.info("chain watch %s: following from height %d", self.blocks.address, tip.height)
        cursor = Cursor(tip.height, [])
        await self.store.write(cursor.height, cursor.to_list())
        return cursor

    async def _pass(self) -> None:
        assert self.cursor is not None
        # The tip read afresh, not the block watch's: it only says when to look (a push can arrive before
        # monerod's get_info shows its block; the next pass, at most a poll interval later, sees it).
        tip = await self.daemon.get_info()
        if tip.behind:
            return  # a daemon still syncing reports heights that are not the chain's
        await self._follow(tip.height, tip.top_block_hash)
        await self._join()
        await self._look_at_pool()
        for escrow in self.joined():
            escrow.publish(scan_of(escrow.ledger, self.cursor.height, time.time()))

    def joined(self) -> list[Watched]:
        return [e for e in self.escrows.values() if e.joined]

    async def _follow(self, tip: int, top: str) -> None:
        """Scan every block from the cursor to ``tip`` for the joined escrows, taking back replaced ones."""
        cursor = self.cursor
        assert cursor is not None
        if cursor.height == tip and cursor.top == top:
            return
        if cursor.height > 0 and cursor.top is not None:
            known = await self.daemon.block_hash(cursor.height - 1) if cursor.height <= tip else None
            if known != cursor.top:
                await self._reorganise()
        written = cursor.height
        while cursor.height < tip:
            block = await self.daemon.get_block(cursor.height)
            below = cursor.hash(cursor.height - 1)
            if below is not None and block.block_header.prev_hash != below:
                await self._reorganise()
                continue
            await self._scan_block(block, self.joined())
            cursor.push(block.block_header.height, block.block_header.hash)
            self.blocks_scanned += 1
            if cursor.height - written >= CURSOR_EVERY or cursor.height == tip:
                await self.faults.check(Point.WATCH_BEFORE_CURSOR, cursor.height)
                await self.store.write(cursor.height, cursor.to_list())
                written = cursor.height

    async def _reorganise(self) -> None:
        """Find where the daemon's chain leaves the recorded one; take back everything found above."""
        cursor = self.cursor
        assert cursor is not None
        fork = cursor.height
        for height in sorted(cursor.hashes, reverse=True):
            if height >= fork:
                continue
            try:
                agreed = await self.daemon.block_hash(height) == cursor.hashes[height]
            except MonerodUnavailable:
                info = await self.daemon.get_info()
                if height < info.height:
                    raise
                agreed = False  # the chain is now shorter than this height
            if agreed:
                break
            fork = height
        else:
            fork = min(cursor.hashes, default=0)
            log.error(
                "chain watch %s: reorganisation deeper than the %d recorded blocks; taking back from %d",
                self.blocks.address,
                WINDOW,
                fork,
            )
        log.warning(
            "chain watch %s: reorganisation, blocks from height %d replaced (was at %d)",
            self.blocks.address,
            fork,
            cursor.height,
        )
        await self._save_changed([e for e in self.joined() if e.ledger.undo_from(fork)])
        cursor.truncate(fork)
        await self.store.write(cursor.height, cursor.to_list())

    async def _join(self) -> None:
        """Scan each escrow waiting to join from its start up to the cursor, then let it follow."""
        cursor = self.cursor
        assert cursor is not None
        waiting = [e for e in self.escrows.values() if not e.joined]
        if not waiting:
            return
        height = min(e.start for e in waiting)
        while height < cursor.height:
            block = await self.daemon.get_block(height)
            await self._scan_block(block, [e for e in waiting if e.start <= height], save=False)
            height += 1
        for escrow in waiting:
            escrow.ledger.undo_from(cursor.height)  # a block the cursor has not reached yet is scanned again
            await escrow.save(escrow.ledger.to_json(), True)
            escrow.joined = True
        log.info("chain watch %s: %d escrow(s) joined at height %d", self.blocks.address, len(waiting), cursor.height)

    async def _scan_block(self, block: Block, escrows: list[Watched], *, save: bool = True) -> None:
        if not escrows:
            return
        header = block.block_header
        decoded: list[tuple[str, str | dict[str, Any]]] = [(block.miner_tx_hash, block.miner_tx)]
        decoded += [(t.tx_hash, t.as_json) for t in await self.daemon.decoded_transactions(block.tx_hashes)]
        txs = [tx for tx in (_decode(h, doc) for h, doc in decoded) if tx is not None]
        changed = []
        for i, escrow in enumerate(escrows):
            if i and i % SCAN_SLICE == 0:
                await asyncio.sleep(0)  # a yield to the event loop (steps, probes, watches), not a wait
            if _record(escrow, txs, header.height, header.hash):
                changed.append(escrow)
        if save:
            await self._save_changed(changed)
            if changed:
                await self.faults.check(Point.WATCH_AFTER_LEDGERS, header.height)

    async def _save_changed(self, escrows: list[Watched]) -> None:
        gate = asyncio.Semaphore(SAVE_CONCURRENCY)

        async def save(escrow: Watched) -> None:
            async with gate:
                await escrow.save(escrow.ledger.to_json(), escrow.joined)

        await asyncio.gather(*(save(e) for e in escrows))

    async def _look_at_pool(self) -> None:
        hashes = set(await self.daemon.pool_hashes())
        self._pool = {h: entry for h, entry in self._pool.items() if h in hashes}
        for decoded in await self.daemon.decoded_transactions(sorted(hashes - set(self._pool))):
            tx = _decode(decoded.tx_hash, decoded.as_json) if decoded.in_pool else None
            if tx is not None:
                self._pool[decoded.tx_hash] = (tx, {})
        for i, escrow in enumerate(self.joined()):
            if i and i % SCAN_SLICE == 0:
                await asyncio.sleep(0)  # as in _scan_block
            outputs: list[Received] = []
            spends: dict[str, Spend] = {}
            for tx, found in self._pool.values():
                if escrow.key not in found:  # each pool transaction scanned once per escrow
                    found[escrow.key] = [
                        Received(f.tx_hash, f.index, f.key, f.amount, tx.unlock_time) for f in scan(tx, escrow.keys)
                    ]
                outputs += found[escrow.key]
                for image in tx.key_images:
                    key = escrow.ledger.key_images.get(image)
                    if key is not None:
                        spends[key] = Spend(tx.hash)
            escrow.ledger.set_pool(outputs, spends)


def _decode(tx_hash: str, doc: str | dict[str, Any]) -> Transaction | None:
    """A transaction as scanning reads it; None (and a warning) for one monerod decoded in a shape this
    does not read: it cannot hold an output found the way wallet2 finds them."""
    try:
        return Transaction.from_json(tx_hash, doc)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        log.warning("transaction %s skipped: %s: %s", tx_hash, type(exc).__name__, exc)
        return None


def _record(escrow: Watched, txs: list[Transaction], height: int, block: str) -> bool:
    """What ``txs`` of block ``block`` at ``height`` bring to ``escrow``'s ledger; True if it changed."""
    ledger = escrow.ledger
    found = [
        Received(f.tx_hash, f.index, f.key, f.amount, tx.unlock_time, height, block)
        for tx in txs
        for f in scan(tx, escrow.keys)
    ]
    changed = ledger.add(found)
    if ledger.key_images:
        for tx in txs:
            for image in tx.key_images:
                changed = ledger.spend(image, Spend(tx.hash, height, block)) or changed
    return changed


async def first(wanted: Coroutine[Any, Any, T], other: Coroutine[Any, Any, Any]) -> T | None:
    """Await ``wanted`` unless ``other`` finishes first (then None); the loser is cancelled."""
    one, two = asyncio.ensure_future(wanted), asyncio.ensure_future(other)
    try:
        done, _ = await asyncio.wait({one, two}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (one, two):
            task.cancel()
    if one in done and not one.cancelled():
        result: T = one.result()
        return result
    return None


class ChainWatches:
    """The chain watch of every daemon address in use, created on first mention."""

    def __init__(self, chains: Chains, kube: Kube, namespace: str, settings: OperatorSettings, faults: Faults) -> None:
        self.chains, self.kube, self.namespace, self.settings, self.faults = chains, kube, namespace, settings, faults
        self._watches: dict[str, ChainWatch] = {}

    def get(self, address: str) -> ChainWatch:
        found = self._watches.get(address)
        if found is None:
            found = self._watches[address] = ChainWatch(
                self.chains.watch(address), self.kube, self.namespace, self.settings, self.faults
            )
        return found

    async def close(self) -> None:
        for watch in self._watches.values():
            await watch.close()
        self._watches.clear()
