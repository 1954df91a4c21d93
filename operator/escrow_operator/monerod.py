"""A typed client of monerod's RPC (the chain a WalletPool's ``spec.daemon`` names).

The operator asks monerod three things only: the chain height (recorded before an escrow's wallets are
made, so every later scan starts there), whether a new block arrived (:mod:`escrow_operator.blocks`)
and where a payout's transactions are (in the pool, in a block, or unknown). Wallet work goes through
wallet-rpc, never here.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .httpclient import OwnsAsyncClient


class MonerodUnavailable(Exception):
    """monerod did not answer, or answered with something other than a JSON-RPC reply."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"monerod at {url}: {detail}")
        self.url, self.detail = url, detail


class Info(BaseModel):
    """``get_info``: what the operator reads of it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    height: int = Field(ge=0)
    target_height: int = Field(default=0, ge=0)
    synchronized: bool = True
    nettype: str = ""
    top_block_hash: str = ""

    @property
    def behind(self) -> bool:
        """Still syncing: heights it reports are not the chain's."""
        return not self.synchronized or self.target_height > self.height


class TxState(BaseModel):
    """One transaction as ``get_transactions`` reports it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tx_hash: str
    in_pool: bool = False
    block_height: int = Field(default=0, ge=0)


class TxLookup(BaseModel):
    """``get_transactions`` of some hashes: those the daemon knows, and those it does not (``missed_tx``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    txs: list[TxState] = []
    missed_tx: list[str] = []

    def mined(self, tx_hash: str) -> int | None:
        """The height of the block holding ``tx_hash``, or None (in the pool, or unknown)."""
        for tx in self.txs:
            if tx.tx_hash == tx_hash and not tx.in_pool:
                return tx.block_height
        return None

    def known(self, tx_hash: str) -> bool:
        """In the daemon's pool or in a block."""
        return any(tx.tx_hash == tx_hash for tx in self.txs)


class BlockHeader(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    height: int = Field(ge=0)
    hash: str
    prev_hash: str = ""


class Block(BaseModel):
    """``get_block``: the header, the miner transaction (decoded) and the other transactions' hashes."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    block_header: BlockHeader
    miner_tx_hash: str
    json_: str = Field(alias="json")
    tx_hashes: list[str] = []

    @property
    def miner_tx(self) -> dict[str, Any]:
        miner: dict[str, Any] = json.loads(self.json_)["miner_tx"]
        return miner


class DecodedTx(BaseModel):
    """One transaction of ``get_transactions`` with ``decode_as_json`` (pruned: no signatures)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tx_hash: str
    as_json: str
    in_pool: bool = False
    block_height: int = Field(default=0, ge=0)


#: Transactions asked of ``get_transactions`` at once (a restricted RPC answers at most 100).
TX_BATCH = 100


class Monerod(OwnsAsyncClient):
    """Client of one monerod RPC endpoint ``host:port`` (no TLS, no login: the pool's daemon address)."""

    def __init__(self, address: str, *, timeout: float = 30.0, transport: httpx.AsyncBaseTransport | None = None):
        self.base = f"http://{address}"
        self.url = f"{self.base}/json_rpc"
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport,
            # One client per daemon, shared by the block watch, the chain watch and payout lookups.
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
            follow_redirects=False,
            trust_env=False,
        )
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"Monerod({self.url!r})"

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params is not None:
            body["params"] = params
        try:
            response = await self._http.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise MonerodUnavailable(self.url, f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise MonerodUnavailable(self.url, f"HTTP {response.status_code}")
        try:
            reply = response.json()
        except ValueError:
            raise MonerodUnavailable(self.url, "reply is not JSON") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("result"), dict):
            error = reply.get("error") if isinstance(reply, dict) else None
            raise MonerodUnavailable(self.url, f"{method} failed: {error!r}"[:300])
        result: dict[str, Any] = reply["result"]
        return result

    async def get_info(self) -> Info:
        result = await self.call("get_info")
        try:
            return Info.model_validate(result)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
            raise MonerodUnavailable(self.url, f"unexpected get_info reply ({', '.join(fields)})") from None

    async def get_transactions(self, hashes: list[str]) -> TxLookup:
        """Where the transactions ``hashes`` are: monerod's ``/get_transactions`` (not JSON-RPC)."""
        reply = await self._other("get_transactions", {"txs_hashes": hashes, "decode_as_json": False})
        try:
            return TxLookup.model_validate(reply)
        except ValidationError:
            raise MonerodUnavailable(f"{self.base}/get_transactions", "unexpected get_transactions reply") from None

    async def _other(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A call of one of monerod's non-JSON-RPC endpoints (``/get_transactions`` and the like)."""
        url = f"{self.base}/{path}"
        try:
            response = await self._http.post(url, json=body)
        except httpx.HTTPError as exc:
            raise MonerodUnavailable(url, f"{type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise MonerodUnavailable(url, f"HTTP {response.status_code}")
        try:
            reply = response.json()
        except ValueError:
            raise MonerodUnavailable(url, "reply is not JSON") from None
        if not isinstance(reply, dict) or reply.get("status") != "OK":
            raise MonerodUnavailable(url, f"{path} failed: {str(reply)[:200]}")
        return reply

    async def get_block(self, height: int) -> Block:
        result = await self.call("get_block", {"height": height})
        try:
            return Block.model_validate(result)
        except ValidationError:
            raise MonerodUnavailable(self.url, f"unexpected get_block reply at height {height}") from None

    async def block_hash(self, height: int) -> str:
        result = await self.call("get_block_header_by_height", {"height": height})
        try:
            return BlockHeader.model_validate(result.get("block_header")).hash
        except ValidationError:
            raise MonerodUnavailable(self.url, f"unexpected block header at height {height}") from None

    async def decoded_transactions(self, hashes: list[str]) -> list[DecodedTx]:
        """The transactions ``hashes`` decoded (pruned), in batches; those the daemon does not know are left out."""
        found: list[DecodedTx] = []
        for start in range(0, len(hashes), TX_BATCH):
            reply = await self._other(
                "get_transactions",
                {"txs_hashes": hashes[start : start + TX_BATCH], "decode_as_json": True, "prune": True},
            )
            try:
                found += [DecodedTx.model_validate(tx) for tx in reply.get("txs") or []]
            except ValidationError:
                raise MonerodUnavailable(self.base, "unexpected get_transactions reply") from None
        return found

    async def pool_hashes(self) -> list[str]:
        reply = await self._other("get_transaction_pool_hashes", {})
        return [str(h) for h in reply.get("tx_hashes") or []]
