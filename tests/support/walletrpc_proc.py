"""A standalone monero-wallet-rpc process over a wallet directory, outside any pool (for inspection)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.processes import free_port, stop, wait_serving


@dataclass
class Inspector:
    url: str
    user: str
    password: str

    @property
    def auth(self) -> httpx.DigestAuth:
        return httpx.DigestAuth(self.user, self.password)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        reply = httpx.post(
            self.url,
            json={"jsonrpc": "2.0", "id": "0", "method": method, "params": params},
            auth=self.auth,
            timeout=120,
        ).json()
        if "error" in reply:
            raise AssertionError(f"{method} failed: {reply['error']}")
        return reply["result"]

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
    binary = shutil.which("monero-wallet-rpc")
    assert binary, "monero-wallet-rpc is not installed (make deps)"
    password = secrets.token_urlsafe(12)
    port = free_port(ip)
    with tempfile.TemporaryDirectory() as home:
        proc = subprocess.Popen(
            [
                binary,
                "--offline" if daemon is None else f"--daemon-address={daemon}",
                f"--wallet-dir={wallet_dir}",
                f"--rpc-bind-ip={ip}",
                f"--rpc-bind-port={port}",
                f"--rpc-login=inspector:{password}",
                "--confirm-external-bind",
                "--non-interactive",
                "--rpc-ssl=disabled",
                "--daemon-ssl=disabled",
                "--disable-rpc-ban",
                f"--shared-ringdb-dir={home}/ringdb",
                f"--log-file={home}/log",
            ],
            env={"HOME": home, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        inspector = Inspector(f"http://{ip}:{port}/json_rpc", "inspector", password)
        try:
            wait_serving(
                proc,
                lambda: bool(inspector.call("get_version")),
                what="the inspection wallet-rpc",
                not_yet=(httpx.HTTPError, ValueError),
            )
            yield inspector
        finally:
            stop(proc)
