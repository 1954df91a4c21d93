"""The chain watch's following logic on a chain held in memory (the daemon faked; the real one is in
tests/integration/test_chainwatch.py): joining, reorganisations, a shorter chain, restarts."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings as sodium

from escrow_operator import viewkeys
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

    async def aclose(self) -> None:
        return None


class FakeBlocks:
    """The block watch: the fake chain's tip, read on every question."""

    def __init__(self, chain: FakeChain) -> None:
        self.chain, self.address = chain, "fake:18081"

    async def next(self, seen: int | None) -> Info:
        return await self.chain.get_info()

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
    watch.daemon, watch.store = chain, cursor  # type: ignore[assignment]
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


async def test_an_escrow_joins_from_its_start_and_follows_new_blocks() -> None:
    chain, cursor, saved = FakeChain(), MemoryCursor(), Saved()
    a = keys("a")
    for _ in range(3):
        chain.mine("m")
    chain.mine("m", a, 2 * XMR)  # before anyone watched
    watch = follower(chain, cursor)
    escrow = entry("a", saved, start=2)
    watch.watch(escrow)
    await watch.close()  # the loop task is not needed: passes are run here
    await settle(watch)
    assert received(escrow) == [(2 * XMR, 3)] and saved.joined
    chain.mine("m", a, XMR)
    await settle(watch)
    assert received(escrow) == [(2 * XMR, 3), (XMR, 4)]
    assert cursor.stored is not None and cursor.stored[0] == 5


async def test_a_reorganisation_takes_back_the_replaced_blocks_and_follows_the_winner() -> None:
    chain, cursor, saved = FakeChain(), MemoryCursor(), Saved()
    a = keys("a")
    for _ in range(3):
        chain.mine("m")
    watch = follower(chain, cursor)
    escrow = entry("a", saved)
    watch.watch(escrow)
    await watch.close()
    await settle(watch)
    chain.mine("m", a, XMR)
    chain.mine("m", a, 3 * XMR)
    await settle(watch)
    assert received(escrow) == [(XMR, 3), (3 * XMR, 4)]
    chain.pop(2)
    chain.mine("fork")
    chain.mine("fork", a, 5 * XMR)
    chain.mine("fork")
    await settle(watch)
    assert received(escrow) == [(5 * XMR, 4)]
    assert Ledger.from_json(saved.text).outputs.keys() == Ledger.from_json(escrow.ledger.to_json()).outputs.keys()


async def test_a_shorter_chain_takes_back_what_its_missing_blocks_held() -> None:
    chain, cursor, saved = FakeChain(), MemoryCursor(), Saved()
    a = keys("a")
    for _ in range(3):
        chain.mine("m")
    watch = follower(chain, cursor)
    escrow = entry("a", saved)
    watch.watch(escrow)
    await watch.close()
    await settle(watch)
    chain.mine("m", a, XMR)
    chain.mine("m", a, XMR)
    await settle(watch)
    chain.pop(1)
    await settle(watch)
    assert received(escrow) == [(XMR, 3)]
    assert watch.cursor is not None and watch.cursor.height == 4


async def test_a_restart_resumes_at_the_cursor_and_follows_a_reorganisation_made_while_down() -> None:
    chain, cursor, saved = FakeChain(), MemoryCursor(), Saved()
    a = keys("a")
    for _ in range(3):
        chain.mine("m")
    first = follower(chain, cursor)
    first.watch(entry("a", saved))
    await first.close()
    await settle(first)
    chain.mine("m", a, XMR)
    chain.mine("m", a, 2 * XMR)
    await settle(first)
    # Down: the last block is replaced by one paying 4 XMR, and one more block comes.
    chain.pop(1)
    chain.mine("fork", a, 4 * XMR)
    chain.mine("fork", a, 8 * XMR)
    second = follower(chain, cursor)
    again = entry("a", saved)
    assert again.joined
    second.watch(again)
    await second.close()
    await settle(second)
    assert received(again) == [(XMR, 3), (4 * XMR, 4), (8 * XMR, 5)]
    assert second.blocks_scanned == 2  # from the fork up: nothing below it scanned twice


async def test_a_transaction_it_cannot_read_is_skipped_and_the_watch_goes_on() -> None:
    chain, cursor, saved = FakeChain(), MemoryCursor(), Saved()
    a = keys("a")
    for _ in range(3):
        chain.mine("m")
    watch = follower(chain, cursor)
    escrow = entry("a", saved)
    watch.watch(escrow)
    await watch.close()
    await settle(watch)
    broken = {"vin": [{"gen": {"height": 3}}], "vout": [{"target": {"tagged_key": {"key": "zz", "view_tag": "q"}}}]}
    chain.blocks.append(("m3", broken))
    chain.mine("m", a, XMR)
    await settle(watch)
    assert received(escrow) == [(XMR, 4)]
