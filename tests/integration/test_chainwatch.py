"""The chain watch against wallet-rpc on a real regtest chain: same figures, to the atomic unit.

Twenty wallets of the test's own (one monero-wallet-rpc on the module's monerod) stand for twenty
escrows: the chain watch (:mod:`escrow_operator.chainwatch`, as a process of its own,
tests/support/chainwatch_proc.py, its cursor in a Secret of the module's namespace) watches them with
their view keys only. They are paid in every shape the issue names (several in one transaction, two
escrows by one transaction, one escrow twice, a coinbase, a payment whose first block a reorganisation
replaced), then one pays out; after each phase every wallet is opened and refreshed, and its received
total, transfer count and unlocked balance must equal the watch's. The watch is SIGKILLed between
saving a block's findings and moving its cursor, and resumes with nothing missed or counted twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from hack.devcluster import DevCluster
from hack.testground.chain import Chain, Miner
from hack.testground.walletrpc import LocalWalletRpc, local_wallet_rpc
from tests.support.operator import ROOT

XMR = 10**12
WALLETS = 20


@pytest.fixture(scope="module")
def wallets(chain: Chain) -> Iterator[tuple[LocalWalletRpc, list[dict[str, Any]]]]:
    """Twenty wallets made on the chain (one process), each with its address, view key and start height."""
    with local_wallet_rpc(None, user="watched", daemon=chain.address) as rpc:
        made = []
        for n in range(WALLETS):
            start = chain.height()
            rpc.call("create_wallet", filename=f"w{n:02d}", password="", language="English")
            view = rpc.call("query_key", key_type="view_key")["key"]
            made.append(
                {"name": f"w{n:02d}", "address": rpc.call("get_address")["address"], "view_key": view, "start": start}
            )
            rpc.call("close_wallet")
        yield rpc, made


class WatchProcess:
    def __init__(self, state: Path, kubeconfig: str) -> None:
        self.state, self.kubeconfig = state, kubeconfig
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **env: str) -> WatchProcess:
        log = open(self.state / "watch.log", "ab")  # noqa: SIM115 - the process writes it until stopped
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.chainwatch_proc", str(self.state)],
            cwd=ROOT,
            env={**os.environ, "KUBECONFIG": self.kubeconfig, "PYTHONUNBUFFERED": "1", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)

    def figures(self, height: int, timeout: float = 120) -> dict[str, dict[str, int]]:
        """The watch's figures once every wallet's are at chain height ``height``."""
        deadline = time.monotonic() + timeout
        path = self.state / "figures.json"
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            if path.exists():
                last = json.loads(path.read_text())["figures"]
                if len(last) == WALLETS and all(f["height"] == height for f in last.values()):
                    return dict(last)
            time.sleep(0.2)  # polling a file the process replaces atomically, with a deadline
        raise AssertionError(f"the watch did not reach height {height}: {last}\n{self.log()}")

    def log(self) -> str:
        return (self.state / "watch.log").read_text()[-3000:]


def wallet_figures(rpc: LocalWalletRpc, names: list[str]) -> dict[str, dict[str, int]]:
    """What each wallet reports after a refresh: received from others (confirmed and pool), transfers, unlocked."""
    found = {}
    for name in names:
        rpc.call("open_wallet", filename=name, password="")
        rpc.call("refresh")
        transfers = rpc.call("get_transfers", **{"in": True, "pool": True})
        incoming = transfers.get("in", []) + transfers.get("pool", [])
        balance = rpc.call("get_balance", account_index=0)
        found[name] = {
            "height": rpc.call("get_height")["height"],
            "received": sum(t["amount"] for t in incoming),
            "transfers": len(incoming),
            "unlocked": balance["unlocked_balance"],
        }
        rpc.call("close_wallet")
    return found


def pay(miner: Miner, destinations: list[tuple[str, int]]) -> str:
    miner.call("refresh")
    reply = miner.call("transfer", destinations=[{"address": a, "amount": x} for a, x in destinations])
    return str(reply["tx_hash"])


def pop_blocks(chain: Chain, count: int) -> None:
    reply = httpx.post(f"http://{chain.address}/pop_blocks", json={"nblocks": count}, timeout=60).json()
    assert reply.get("status") == "OK", reply


def test_the_watch_reports_what_each_wallet_reports_through_a_reorganisation_a_payout_and_a_kill(
    cluster: DevCluster,
    kube: client.ApiClient,
    module_namespace: str,
    chain: Chain,
    wallet: Miner,
    wallets: tuple[LocalWalletRpc, list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    rpc, made = wallets
    names = [w["name"] for w in made]
    address = {w["name"]: w["address"] for w in made}
    config = {"daemon": chain.address, "namespace": module_namespace, "escrows": made}
    (tmp_path / "escrows.json").write_text(json.dumps(config))

    # Paid before the watch starts: found by scanning back to each wallet's start.
    early = pay(wallet, [(address["w00"], XMR), (address["w01"], 2 * XMR), (address["w02"], 3 * XMR)])
    wallet.confirm(early)
    watch = WatchProcess(tmp_path, cluster.kubeconfig).start()
    try:
        pay(wallet, [(address["w03"], XMR + 1), (address["w03"], 7), (address["w04"], 5 * XMR)])  # one twice in a tx
        pay(wallet, [(address["w05"], XMR // 3), (address["w06"], XMR // 7)])  # two escrows in one transaction
        twice = pay(wallet, [(address["w07"], XMR)])
        wallet.confirm(twice)
        pay(wallet, [(address["w07"], 2 * XMR)])  # an escrow paid twice
        pay(wallet, [(address[n], (i + 1) * 10**9) for i, n in enumerate(names[8:16])])
        last = pay(wallet, [(address[n], (i + 3) * 10**10) for i, n in enumerate(names[16:])])
        wallet.confirm(last)
        height = chain.mine(1, address["w08"])  # a coinbase

        # A reorganisation: the block holding a payment to w09 and a coinbase to w10 is replaced; the
        # payment returns to the pool and is mined again in the winning branch, the coinbase is gone.
        replaced = pay(wallet, [(address["w09"], 4 * XMR)])
        wallet.confirm(replaced)
        first_inclusion = chain.block_of(replaced)
        chain.mine(1, address["w10"])
        height = chain.height()
        seen = watch.figures(height)
        assert seen["w10"]["received"] > 0 and seen["w09"]["transfers"] == 2  # the coinbase and the payment seen
        pop_blocks(chain, height - first_inclusion)
        height = chain.mine(height - first_inclusion + 1, wallet.address)
        assert chain.block_of(replaced) is not None  # mined again, in a block of the winning branch
        height = chain.mine(10, wallet.address)  # everything above unlocks
        assert watch.figures(height) == wallet_figures(rpc, names)
        assert watch.figures(height)["w10"]["transfers"] == 1  # its coinbase went with the replaced block
        assert "reorganisation, blocks from height" in watch.log()

        # w00 pays out: its key images recorded first, as a payout does; the block holding the payout and
        # a new payment to w01 is scanned by a watch that is SIGKILLed after saving the findings and
        # before moving its cursor.
        watch.stop()
        rpc.call("open_wallet", filename="w00", password="")
        rpc.call("refresh")
        outputs = rpc.call("incoming_transfers", transfer_type="all", account_index=0)["transfers"]
        payout = rpc.call("transfer", destinations=[{"address": wallet.address, "amount": XMR // 2}])["tx_hash"]
        rpc.call("close_wallet")
        made[0]["key_images"] = {o["key_image"]: o["pubkey"] for o in outputs}
        (tmp_path / "escrows.json").write_text(json.dumps(config))
        pay(wallet, [(address["w01"], XMR)])
        height = wallet.confirm(payout)
        killed = WatchProcess(tmp_path, cluster.kubeconfig).start(
            ESCROW_MODE="test", ESCROW_FAULTS="crash:watch.after_ledgers"
        )
        assert killed.proc is not None and killed.proc.wait(120) == -signal.SIGKILL, killed.log()
        watch = WatchProcess(tmp_path, cluster.kubeconfig).start()
        after = watch.figures(height)
        assert after == wallet_figures(rpc, names)
        assert after["w00"]["unlocked"] == 0 and after["w00"]["received"] == XMR  # the change is locked 10 blocks
        assert after["w01"]["transfers"] == 2
        height = chain.mine(10, wallet.address)
        assert watch.figures(height) == wallet_figures(rpc, names)
        assert 0 < watch.figures(height)["w00"]["unlocked"] < XMR // 2
    finally:
        watch.stop()
