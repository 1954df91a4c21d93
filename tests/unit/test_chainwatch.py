"""The chain watch's following logic on a chain held in memory (the daemon faked; the real one is in
tests/integration/test_chainwatch.py): joining, reorganisations, a shorter chain, restarts."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings as sodium

from escrow_operator import chainwatch, viewkeys
from escrow_operator.chainwatch import ChainWatch, Watched
from escrow_operator.faults import NONE
from escrow_operator.monerod import Block, DecodedTx, Info, MonerodUnavailable
from escrow_operator.settings import OperatorSettings
from escrow_operator.viewkeys import WatchKeys
from escrow_operator.watch_ledger import Ledger

XMR = 10**12


def scalar(seed: str) -> bytes:
    return sodium.crypto_core_ed25519_scalar_reduce(hashlib.sha512(seed.encode()).digest())


def keys(seed: str) -> WatchKeys:
    return WatchKeys(scalar(f"view {seed}"), sodium.crypto_scalarmult_ed25519_base_noclamp(scalar(f"spend {seed}")))


def coinbase(seed: str, to: WatchKeys | None, amount: int) -> dict[str, Any]:
    """A miner transaction paying ``amount`` to ``to`` (or to nobody watched), as get_block decodes it."""
    r = scalar(f"tx {seed}")
    if to is None:
        key, tag = sodium.crypto_scalarmult_ed25519_base_noclamp(scalar(f"out {seed}")), 0
    else:
        view_public = sodium.crypto_scalarmult_ed25519_base_noclamp(to.view_secret)
        eight_r = sodium.crypto_core_ed25519_scalar_mul(r, (8).to_bytes(32, "little"))
        suffix = sodium.crypto_scalarmult_ed25519_noclamp(eight_r, view_public) + viewkeys.varint(0)
        key = sodium.crypto_core_ed25519_add(
            sodium.crypto_scalarmult_ed25519_base_noclamp(viewkeys.hash_to_scalar(suffix)), to.spend_public
        )
        tag = viewkeys.keccak256(b"view_tag" + suffix)[0]
    return {
        "version": 2,
        "unlock_time": 0,
        "vin": [{"gen": {"height": 1}}],
        "vout": [{"amount": amount, "target": {"tagged_key": {"key": key.hex(), "view_tag": f"{tag:02x}"}}}],
        "extra": list(b"\x01" + sodium.crypto_scalarmult_ed25519_base_noclamp(r)),
        "rct_signatures": {"type": 0},
    }


@dataclass
class FakeChain:
    """monerod's answers from a list of blocks: (hash, miner transaction)."""

    blocks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def mine(self, branch: str, to: WatchKeys | None = None, amount: int = XMR) -> None:
        height = len(self.blocks)
        self.blocks.append((f"{branch}{height}", coinbase(f"{branch}{height}", to, amount)))

    def pop(self, count: int) -> None:
        del self.blocks[len(self.blocks) - count :]

    async def get_info(self) -> Info:
        return Info(height=len(self.blocks), top_block_hash=self.blocks[-1][0])

    async def get_block(self, height: int) -> Block:
        if height >= len(self.blocks):
            raise MonerodUnavailable("fake", f"no block {height}")
        block_hash, miner = self.blocks[height]
        prev = self.blocks[height - 1][0] if height else ""
        return Block.model_validate(
            {
                "block_header": {"height": height, "hash": block_hash, "prev_hash": prev},
                "miner_tx_hash": f"miner-{block_hash}",
                "json": json.dumps({"miner_tx": miner}),
                "tx_hashes": [],
            }
        )

    async def block_hash(self, height: int) -> str:
        return (await self.get_block(height)).block_header.hash

    async def decoded_transactions(self, hashes: list[str]) -> list[DecodedTx]:
        return []

    async def pool_hashes(self) -> list[str]:
        return []


class FakeBlocks:
    """The block watch: its client is the fake chain; the tip never changes by itself."""

    def __init__(self, chain: FakeChain) -> None:
        self.client, self.address = chain, "fake:18081"

    async def changed(self) -> None:
        await asyncio.Event().wait()


class MemoryCursor:
    def __init__(self) -> None:
        self.stored: tuple[int, list[tuple[int, str]]] | None = None

    async def read(self) -> tuple[int, list[tuple[int, str]]] | None:
        return self.stored

    async def write(self, height: int, hashes: list[tuple[int, str]]) -> None:
        self.stored = (height, list(hashes))


class Saved:
    def __init__(self) -> None:
        self.text: str | None = None
        self.joined = False

    async def __call__(self, text: str, joined: bool) -> None:
        self.text, self.joined = text, joined


def follower(chain: FakeChain, cursor: MemoryCursor) -> ChainWatch:
    watch = ChainWatch(FakeBlocks(chain), None, "ns", OperatorSettings(), NONE)  # type: ignore[arg-type]
    watch.store = cursor  # type: ignore[assignment]
    return watch


async def settle(watch: ChainWatch) -> None:
    """One pass of the follower, as its loop runs it after each block."""
    if watch.cursor is None:
        watch.cursor = await watch._load()
    await watch._pass()


def entry(name: str, saved: Saved, start: int = 0) -> Watched:
    return Watched(name, keys(name), start, Ledger.from_json(saved.text), saved.joined, saved)


def received(escrow: Watched) -> list[tuple[int, int]]:
    assert escrow.scan is not None
    return sorted(((t.amount, t.height) for t in escrow.scan.transfers), key=lambda t: (t[1], t[0]))


#: The keys of escrow "a", the one the tests watch.
A = keys("a")


def three_blocks() -> FakeChain:
    """A chain of three blocks paying nobody watched."""
    chain = FakeChain()
    for _ in range(3):
        chain.mine("m")
    return chain


@dataclass
class Following:
    """A follower of a chain, the cursor it keeps, and the escrow it watches with its saved ledger."""

    chain: FakeChain
    cursor: MemoryCursor
    saved: Saved
    watch: ChainWatch
    escrow: Watched


async def following(
    chain: FakeChain | None = None,
    cursor: MemoryCursor | None = None,
    saved: Saved | None = None,
    *,
    start: int = 0,
) -> Following:
    """A follower of ``chain`` (:func:`three_blocks` by default) watching escrow "a" (:data:`A`) from
    ``start``, its ledger as ``saved``, after its first pass. Its loop is stopped: the tests run each
    pass (:func:`settle`)."""
    chain = three_blocks() if chain is None else chain
    cursor = MemoryCursor() if cursor is None else cursor
    saved = Saved() if saved is None else saved
    watch = follower(chain, cursor)
    escrow = entry("a", saved, start)
    watch.watch(escrow)
    await watch.close()  # the loop task is not needed: passes are run here
    await settle(watch)
    return Following(chain, cursor, saved, watch, escrow)


async def test_an_escrow_joins_from_its_start_and_follows_new_blocks() -> None:
    chain = three_blocks()
    chain.mine("m", A, 2 * XMR)  # before anyone watched
    f = await following(chain, start=2)
    assert received(f.escrow) == [(2 * XMR, 3)] and f.saved.joined
    chain.mine("m", A, XMR)
    await settle(f.watch)
    assert received(f.escrow) == [(2 * XMR, 3), (XMR, 4)]
    assert f.cursor.stored is not None and f.cursor.stored[0] == 5


async def test_a_reorganisation_takes_back_the_replaced_blocks_and_follows_the_winner() -> None:
    f = await following()
    f.chain.mine("m", A, XMR)
    f.chain.mine("m", A, 3 * XMR)
    await settle(f.watch)
    assert received(f.escrow) == [(XMR, 3), (3 * XMR, 4)]
    f.chain.pop(2)
    f.chain.mine("fork")
    f.chain.mine("fork", A, 5 * XMR)
    f.chain.mine("fork")
    await settle(f.watch)
    assert received(f.escrow) == [(5 * XMR, 4)]
    assert Ledger.from_json(f.saved.text).outputs.keys() == Ledger.from_json(f.escrow.ledger.to_json()).outputs.keys()


async def test_a_shorter_chain_takes_back_what_its_missing_blocks_held() -> None:
    f = await following()
    f.chain.mine("m", A, XMR)
    f.chain.mine("m", A, XMR)
    await settle(f.watch)
    f.chain.pop(1)
    await settle(f.watch)
    assert received(f.escrow) == [(XMR, 3)]
    assert f.watch.cursor is not None and f.watch.cursor.height == 4


async def test_a_restart_resumes_at_the_cursor_and_follows_a_reorganisation_made_while_down() -> None:
    first = await following()
    chain = first.chain
    chain.mine("m", A, XMR)
    chain.mine("m", A, 2 * XMR)
    await settle(first.watch)
    # Down: the last block is replaced by one paying 4 XMR, and one more block comes.
    chain.pop(1)
    chain.mine("fork", A, 4 * XMR)
    chain.mine("fork", A, 8 * XMR)
    assert first.saved.joined  # the escrow comes back joined (the second follower's entry reads it there)
    second = await following(chain, first.cursor, first.saved)
    assert received(second.escrow) == [(XMR, 3), (4 * XMR, 4), (8 * XMR, 5)]
    assert second.watch.blocks_scanned == 2  # from the fork up: nothing below it scanned twice


async def test_a_transaction_it_cannot_read_is_skipped_and_the_watch_goes_on() -> None:
    f = await following()
    broken = {"vin": [{"gen": {"height": 3}}], "vout": [{"target": {"tagged_key": {"key": "zz", "view_tag": "q"}}}]}
    f.chain.blocks.append(("m3", broken))
    f.chain.mine("m", A, XMR)
    await settle(f.watch)
    assert received(f.escrow) == [(XMR, 4)]


async def test_a_block_scanned_for_many_escrows_lets_the_event_loop_run_between_them(monkeypatch: Any) -> None:
    f = await following()
    others = [entry(f"e{i}", Saved()) for i in range(3 * chainwatch.SCAN_SLICE)]
    for escrow in others:
        f.watch.watch(escrow)
    await settle(f.watch)  # all joined
    recorded = 0
    record = chainwatch._record

    def counting(*args: Any, **kwargs: Any) -> bool:
        nonlocal recorded
        recorded += 1
        return record(*args, **kwargs)

    monkeypatch.setattr(chainwatch, "_record", counting)
    seen: list[int] = []
    stop = asyncio.Event()

    async def other_work() -> None:
        while not stop.is_set():
            seen.append(recorded)
            await asyncio.sleep(0)

    ticker = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    f.chain.mine("m", A, XMR)
    await settle(f.watch)
    stop.set()
    await ticker
    total = 1 + len(others)
    assert recorded == total and received(f.escrow)[-1] == (XMR, 3)
    assert [n for n in seen if 0 < n < total], f"no other work ran while the block was scanned: {seen}"
