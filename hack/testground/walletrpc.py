"""A monero-wallet-rpc process of the test ground's own, outside any pool: the tests' inspector of
wallet files and the regtest miner (:mod:`hack.testground.chain`) both run one."""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from escrow_operator.api.walletpool import DEFAULT_IMAGE
from hack.devcluster import podman

from .processes import free_port, stop, wait_serving


@dataclass
class LocalWalletRpc:
    """Where the process serves and its login; :meth:`call` fails the caller on a JSON-RPC error."""

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
            timeout=300,
        ).json()
        if "error" in reply:
            raise AssertionError(f"{self.user} {method} failed: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result


@contextmanager
def local_wallet_rpc(
    wallet_dir: Path | None,
    *,
    user: str,
    ip: str = "127.0.0.1",
    daemon: str | None = None,
    stagenet: bool = False,
    image: str = DEFAULT_IMAGE,
) -> Iterator[LocalWalletRpc]:
    """monero-wallet-rpc over ``wallet_dir`` (None: a temporary one), offline or connected to monerod
    ``daemon`` (host:port, trusted), serving on ``ip``, on stagenet if asked; stopped when the block ends.

    It runs the wallet-rpc of ``image`` (default: the CRD's, as the pools do) from the root filesystem
    ``make images`` exported, never the host's: an older wallet-rpc cannot open a newer one's wallets."""
    argv = podman.process_argv(image, None)
    password = secrets.token_urlsafe(12)
    port = free_port(ip)
    with tempfile.TemporaryDirectory(prefix=f"{user}-") as home:
        # The test ground's daemons run regtest chains: every hard fork at height 1, which wallet-rpc
        # since 0.18.1.1 accepts only with --allow-mismatched-daemon-version (monero#8600).
        network = (
            ["--offline"]
            if daemon is None
            else [f"--daemon-address={daemon}", "--trusted-daemon", "--allow-mismatched-daemon-version"]
        )
        network += ["--stagenet"] if stagenet else []
        proc = subprocess.Popen(
            [
                *argv,
                *network,
                f"--wallet-dir={wallet_dir or home}",
                f"--rpc-bind-ip={ip}",
                f"--rpc-bind-port={port}",
                f"--rpc-login={user}:{password}",
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
        process = LocalWalletRpc(f"http://{ip}:{port}/json_rpc", user, password)
        try:
            wait_serving(
                proc,
                lambda: bool(process.call("get_version")),
                what=f"the {user}'s wallet-rpc",
                not_yet=(httpx.HTTPError, ValueError),
            )
            yield process
        finally:
            stop(proc)
