"""A real regtest chain on the dev cluster: Debian's monerod as a pod with a Service, and a miner.

:func:`start_chain` runs ``monerod --regtest --offline --fixed-difficulty 1`` as a pod of the given
namespace (its own data directory, an emptyDir; a Service in front), waits for it to answer and returns
a :class:`Chain`. Pools point at it with ``spec.network = regtest``, ``spec.daemon = chain.address``
(and ``spec.daemonZmq = chain.zmq`` for blocks pushed over ZMQ): the pod's address, since the process
kubelet runs no cluster DNS (in a cluster the Service name ``monerod.NS.svc:18081`` is the
address to give).

:class:`Miner` is a wallet of the test's own, in a monero-wallet-rpc process on the host connected to
that monerod: it receives the coinbase of the blocks it mines (``generateblocks``) and pays escrows.
Coinbase unlocks after 60 blocks, a transfer after 10.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from kubernetes import client, utils

from hack.devcluster import podman

from .kube import pod_ready, wait_for
from .walletrpc import LocalWalletRpc, local_wallet_rpc

RPC_PORT = 18081
ZMQ_PUB_PORT = 18084
#: Blocks before a coinbase output can be spent.
COINBASE_UNLOCK = 60
#: Blocks a fresh chain needs before a transfer finds enough unlocked outputs for its ring (16 members).
MATURE_CHAIN = 130


def monerod_manifests(name: str = "monerod", image: str = podman.HOST_IMAGE) -> list[dict[str, Any]]:
    """The monerod pod (regtest, offline, fixed difficulty 1: a block per generateblocks call) and its Service."""
    labels = {"app.kubernetes.io/name": name}
    args = [
        "--regtest",
        "--offline",
        "--fixed-difficulty=1",
        "--no-igd",
        "--hide-my-port",
        "--non-interactive",
        "--data-dir=/data",
        "--rpc-bind-ip=$(POD_IP)",
        f"--rpc-bind-port={RPC_PORT}",
        "--confirm-external-bind",
        "--p2p-bind-ip=$(POD_IP)",
        "--p2p-bind-port=18080",
        "--zmq-rpc-bind-ip=$(POD_IP)",
        "--zmq-rpc-bind-port=18082",
        f"--zmq-pub=tcp://$(POD_IP):{ZMQ_PUB_PORT}",  # new blocks pushed (a pool's spec.daemonZmq)
        "--log-file=/data/monerod.log",
        "--max-log-files=1",
    ]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "containers": [
                {
                    "name": "monerod",
                    "image": image,  # the host's monerod (Debian's monero package), as the test ground's own
                    "command": ["monerod"],
                    "args": args,
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "ports": [
                        {"name": "rpc", "containerPort": RPC_PORT},
                        {"name": "zmq-pub", "containerPort": ZMQ_PUB_PORT},
                    ],
                    "readinessProbe": {"httpGet": {"path": "/get_height", "port": RPC_PORT}, "periodSeconds": 1},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "selector": labels,
            "ports": [
                {"name": "rpc", "port": RPC_PORT, "targetPort": RPC_PORT},
                {"name": "zmq-pub", "port": ZMQ_PUB_PORT, "targetPort": ZMQ_PUB_PORT},
            ],
        },
    }
    return [pod, service]


@dataclass
class Chain:
    """The regtest monerod of a test ground."""

    namespace: str
    name: str
    address: str  # host:port, what a pool's spec.daemon names

    @property
    def zmq(self) -> str:
        """monerod's ZMQ publisher host:port, what a pool's spec.daemonZmq names."""
        return f"{self.address.rsplit(':', 1)[0]}:{ZMQ_PUB_PORT}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/json_rpc"

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        reply = httpx.post(
            self.url, json={"jsonrpc": "2.0", "id": "0", "method": method, "params": params}, timeout=120
        ).json()
        if "error" in reply:
            raise AssertionError(f"monerod {method} failed: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    def height(self) -> int:
        return int(self.call("get_info")["height"])

    def mine(self, blocks: int, to: str) -> int:
        """Mine ``blocks`` blocks to address ``to``; returns the new height."""
        self.call("generateblocks", wallet_address=to, amount_of_blocks=blocks)
        return self.height()

    def mined(self, txid: str) -> bool:
        """Whether ``txid`` is in a block (not merely known to the pool)."""
        return self.block_of(txid) is not None

    def block_of(self, txid: str) -> int | None:
        """The height of the block holding ``txid``, or None while it is not in one."""
        reply = httpx.post(f"http://{self.address}/get_transactions", json={"txs_hashes": [txid]}, timeout=30).json()
        # A transaction monerod holds for its Dandelion++ stem is reported neither in the pool nor in a
        # block: only a block height says it is mined.
        for tx in reply.get("txs") or []:
            if tx.get("tx_hash") == txid and not tx.get("in_pool") and int(tx.get("block_height") or 0) > 0:
                return int(tx["block_height"])
        return None


def start_chain(api: client.ApiClient, namespace: str, name: str = "monerod", timeout: float = 120) -> Chain:
    """Create the monerod pod and Service in ``namespace`` and wait until monerod answers."""
    core = client.CoreV1Api(api)
    for manifest in monerod_manifests(name):
        utils.create_from_dict(api, manifest, namespace=namespace)
    ready = wait_for(
        core.list_namespaced_pod,
        pod_ready,
        namespace,
        field_selector=f"metadata.name={name}",
        timeout=timeout,
        what=f"monerod pod {namespace}/{name}",
    )
    chain = Chain(namespace, name, f"{ready.status.pod_ip}:{RPC_PORT}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            chain.height()
            return chain
        except (httpx.HTTPError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Miner:
    """A wallet of the test's own (a local monero-wallet-rpc on the chain): it mines and it pays."""

    def __init__(self, chain: Chain, process: LocalWalletRpc) -> None:
        self.chain, self.call = chain, process.call
        self.address = ""

    def mine(self, blocks: int) -> int:
        """Mine ``blocks`` to this wallet; returns the new chain height."""
        return self.chain.mine(blocks, self.address)

    def pay(self, address: str, amount: int) -> str:
        """Send ``amount`` atomic units to ``address``; returns the transaction hash (not yet mined)."""
        self.call("refresh")
        return str(self.call("transfer", destinations=[{"address": address, "amount": amount}])["tx_hash"])

    def confirm(self, txid: str, confirmations: int = 1) -> int:
        """Mine a block at a time until ``txid`` has ``confirmations`` (the chain's height less the height
        of its block, as wallet2 counts them); returns the new height.

        monerod may hold a transaction for its Dandelion++ relay before it is mined (docs/design.md), and
        the block it lands in is read again after each block."""
        for _ in range(20 + confirmations):
            height = self.mine(1)
            block = self.chain.block_of(txid)
            if block is not None and height - block >= confirmations:
                return height
        raise AssertionError(
            f"transaction {txid} did not reach {confirmations} confirmations in {20 + confirmations} blocks"
        )


@contextmanager
def miner(chain: Chain, *, mature: bool = True) -> Iterator[Miner]:
    """A miner wallet on ``chain``; with ``mature`` it mines until a transfer finds enough outputs."""
    with local_wallet_rpc(None, user="miner", daemon=chain.address) as process:
        wallet = Miner(chain, process)
        wallet.call("create_wallet", filename="miner", password="", language="English")
        wallet.address = str(wallet.call("get_address")["address"])
        if mature:
            wallet.mine(MATURE_CHAIN)
        yield wallet
