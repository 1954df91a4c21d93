"""A standalone monero-wallet-rpc process over a wallet directory, outside any pool (for inspection)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hack.testground.walletrpc import LocalWalletRpc, local_wallet_rpc


@dataclass
class Inspector(LocalWalletRpc):
    def inspect(self, wallet: str, password: str) -> dict[str, Any]:
        """Open a wallet, read its multisig state and address, close it without saving."""
        self.call("open_wallet", filename=wallet, password=password)
        try:
            state = self.call("is_multisig")
            state["address"] = self.call("get_address")["address"]
            return state
        finally:
            self.call("close_wallet", autosave_current=False)


@contextmanager
def standalone_wallet_rpc(wallet_dir: Path, ip: str = "127.0.0.9", daemon: str | None = None) -> Iterator[Inspector]:
    """A wallet-rpc over ``wallet_dir``: offline, or connected to monerod ``daemon`` (host:port)."""
    with local_wallet_rpc(wallet_dir, user="inspector", ip=ip, daemon=daemon) as process:
        yield Inspector(process.url, process.user, process.password)
