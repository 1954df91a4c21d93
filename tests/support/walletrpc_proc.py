"""A standalone monero-wallet-rpc process over a wallet directory, outside any pool (for inspection)."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


@dataclass
class Inspector:
    url: str
    auth: httpx.DigestAuth

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        reply = httpx.post(
            self.url, json={"jsonrpc": "2.0", "id": "0", "method": method, "params": params}, auth=self.auth, timeout=120
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


def _free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


@contextmanager
def standalone_wallet_rpc(wallet_dir: Path, ip: str = "127.0.0.9") -> Iterator[Inspector]:
    binary = shutil.which("monero-wallet-rpc")
    assert binary, "monero-wallet-rpc is not installed (make deps)"
    password = secrets.token_urlsafe(12)
    port = _free_port(ip)
    with tempfile.TemporaryDirectory() as home:
        proc = subprocess.Popen(
            [
                binary, "--offline", f"--wallet-dir={wallet_dir}", f"--rpc-bind-ip={ip}", f"--rpc-bind-port={port}",
                f"--rpc-login=inspector:{password}", "--confirm-external-bind", "--non-interactive",
                "--rpc-ssl=disabled", "--daemon-ssl=disabled", "--disable-rpc-ban",
                f"--shared-ringdb-dir={home}/ringdb", f"--log-file={home}/log",
            ],
            env={"HOME": home, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        inspector = Inspector(f"http://{ip}:{port}/json_rpc", httpx.DigestAuth("inspector", password))
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    inspector.call("get_version")
                    break
                except (httpx.HTTPError, ValueError):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError("the inspection wallet-rpc did not start") from None
                    time.sleep(0.1)  # polling a starting process that signals nothing
            yield inspector
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
