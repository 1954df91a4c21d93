"""The wallet-rpc client against real monero-wallet-rpc processes (Debian's package; no fakes).

Three processes, each on its own loopback address (127.0.0.N, like the pool pods of the dev cluster) and a
free port, share one wallet directory. The tests run the whole 2-of-3 key exchange through
:class:`escrow_operator.walletrpc.WalletRpc`, the credential checks, and the one-wallet-one-process lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from escrow_operator.multisig import Stage, check_multisig, messages_for
from escrow_operator.walletrpc import (
    WalletRpc,
    WalletRpcAuthError,
    WalletRpcError,
    WalletRpcFailure,
    secret,
)
from tests.support.processes import free_port, stop

pytestmark = pytest.mark.integration

WALLET_RPC = shutil.which("monero-wallet-rpc")
USER = "escrow"
START_DEADLINE = 30.0  # seconds for a process to answer get_version
CALL_TIMEOUT = 60.0  # create_wallet takes seconds on a loaded 2-core machine


@dataclass
class Proc:
    ip: str
    port: int
    home: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}/json_rpc"

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.home / "log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class Pool:
    wallet_dir: Path
    password: str  # the RPC login password (the pool Secret's)
    procs: list[Proc]

    def client(self, i: int, password: str | None = None) -> WalletRpc:
        return WalletRpc(self.procs[i].url, USER, self.password if password is None else password, timeout=CALL_TIMEOUT)


def _start(ip: str, wallet_dir: Path, home: Path, rpc_password: str) -> Proc:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port(ip)
    assert WALLET_RPC is not None
    argv = [
        WALLET_RPC, "--offline", "--wallet-dir", str(wallet_dir),
        "--rpc-bind-ip", ip, "--rpc-bind-port", str(port), "--rpc-login", f"{USER}:{rpc_password}",
        "--confirm-external-bind", "--non-interactive", "--daemon-ssl", "disabled", "--rpc-ssl", "disabled",
        "--disable-rpc-ban", "--shared-ringdb-dir", str(home / "ringdb"), "--log-file", str(home / "log"),
    ]  # fmt: skip
    process = subprocess.Popen(
        argv,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return Proc(ip, port, home, process)


def _wait_ready(proc: Proc, rpc_password: str, deadline: float) -> bool:
    """Poll get_version until it answers (True), the process exits (False) or the deadline passes (fail)."""
    body = {"jsonrpc": "2.0", "id": 0, "method": "get_version"}
    with httpx.Client(auth=httpx.DigestAuth(USER, rpc_password), timeout=2.0, trust_env=False) as http:
        while True:
            if proc.process.poll() is not None:
                return False
            try:
                if http.post(proc.url, json=body).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"monero-wallet-rpc on {proc.url} did not answer in {START_DEADLINE:g} s:\n{proc.log_tail()}"
                )
            time.sleep(0.2)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    if WALLET_RPC is None:
        pytest.skip("monero-wallet-rpc is not installed (Debian package 'monero')")
    tmp = tmp_path_factory.mktemp("walletrpc")
    wallet_dir = tmp / "wallets"
    wallet_dir.mkdir()
    rpc_password = secrets.token_hex(16)
    procs: list[Proc] = []
    try:
        for i, n in enumerate(random.sample(range(50, 201), 3)):
            ip = f"127.0.0.{n}"
            for attempt in range(3):  # the free port may be taken between probing and binding
                proc = _start(ip, wallet_dir, tmp / f"home{i}-{attempt}", rpc_password)
                procs.append(proc)
                if _wait_ready(proc, rpc_password, time.monotonic() + START_DEADLINE):
                    break
            else:
                pytest.fail(f"monero-wallet-rpc on {ip} exited at start:\n{proc.log_tail()}")
        yield Pool(wallet_dir, rpc_password, [p for p in procs if p.process.poll() is None])
    finally:
        for proc in procs:
            stop(proc.process)


@pytest.fixture
async def clients(pool: Pool) -> AsyncIterator[list[WalletRpc]]:
    rpcs = [pool.client(i) for i in range(len(pool.procs))]
    try:
        yield rpcs
    finally:
        for rpc in rpcs:
            with contextlib.suppress(WalletRpcFailure):  # a failed test may have left the process unusable
                await rpc.close_wallet(timeout=30)
            await rpc.aclose()


async def test_close_wallet_on_idle_process(clients: list[WalletRpc]) -> None:
    rpc = clients[0]
    await rpc.close_wallet()  # whatever an earlier test left open
    assert await rpc.close_wallet() is False
    version = await rpc.get_version()
    assert version.major == 1 and version.minor >= 25


async def test_credentials_are_required(pool: Pool) -> None:
    proc = pool.procs[1]
    body = {"jsonrpc": "2.0", "id": 0, "method": "get_version"}
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        assert (await http.post(proc.url, json=body)).status_code == 401
    async with pool.client(1, password="not-the-pool-secret") as wrong:
        with pytest.raises(WalletRpcAuthError) as info:
            await wrong.get_version()
    assert "credentials" in str(info.value)
    assert "not-the-pool-secret" not in str(info.value) and pool.password not in str(info.value)


async def test_2_of_3_key_exchange(pool: Pool, clients: list[WalletRpc]) -> None:
    roles = ["buyer", "vendor", "arbiter"]
    rpc = dict(zip(roles, clients, strict=True))
    tag = secrets.token_hex(4)
    name = {r: f"{r}_walletrpc_test_{tag}" for r in roles}
    password = {r: secret(secrets.token_urlsafe(12)) for r in roles}
    version = await clients[0].get_version()

    # round 0: create (leaves the wallet open) and prepare
    await asyncio.gather(*(rpc[r].create_wallet(name[r], password[r]) for r in roles))
    assert all((pool.wallet_dir / f"{name[r]}.keys").is_file() for r in roles)
    messages = {r: (await rpc[r].prepare_multisig()).multisig_info for r in roles}

    # round 1: make_multisig
    made = {}
    for r in roles:
        made[r] = await rpc[r].make_multisig(messages_for(r, messages, version, Stage.MAKE), 2, password[r])
        check_multisig(await rpc[r].is_multisig(), 2, 3, ready=False)
    messages = {r: made[r].multisig_info for r in roles}

    # rounds 2 and 3: N - M + 1 = 2 exchanges; only the last returns the address
    for last in (False, True):
        results = {}
        for r in roles:
            infos = messages_for(r, messages, version, Stage.EXCHANGE)
            assert len(infos) == 2
            results[r] = await rpc[r].exchange_multisig_keys(infos, password[r])
            check_multisig(await rpc[r].is_multisig(), 2, 3, ready=last)
        assert all(res.done is last for res in results.values())
        messages = {r: results[r].multisig_info for r in roles}
    addresses = {res.address for res in results.values()}
    assert len(addresses) == 1 and "" not in addresses
    address = addresses.pop()
    for r in roles:
        assert await rpc[r].get_address() == address
        assert made[r].address != address  # make_multisig's address is a placeholder

    # one wallet, one process: the vendor's process cannot open the buyer's wallet while it is open
    with pytest.raises(WalletRpcError) as info:
        await rpc["vendor"].open_wallet(name["buyer"], password["buyer"])
    assert info.value.method == "open_wallet" and info.value.code == -1
    assert "log" in str(info.value)
    assert password["buyer"].get_secret_value() not in str(info.value) + repr(info.value)
    status = await rpc["buyer"].is_multisig()
    assert status.ready and await rpc["buyer"].get_address() == address

    await rpc["buyer"].store()
    assert await rpc["buyer"].close_wallet() is True
    assert await rpc["buyer"].close_wallet() is False
