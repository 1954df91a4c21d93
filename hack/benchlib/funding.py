"""``hack/bench --funding N[,N...]``: what keeping N Ready escrows' funding status current costs per block.

A regtest monerod pod and a pool with that daemon; escrows (2-of-2, the cheapest exchange: the funding
watch costs the same for any shape) are made Ready and have their first funding scan; then blocks are
mined one at a time, and for each the wallet-rpc CPU and the wall time until every escrow's
``status.funding.height`` shows the new block are read. The escrows are added up to each N in turn on
the same pool, so the figures of the counts come from one run and one machine state.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from kubernetes import client

from escrow_operator.api import ESCROW_PLURAL, GROUP, VERSION
from escrow_operator.kube import json_object
from hack.testground.chain import Chain, miner, start_chain
from hack.testground.escrows import create_escrow, create_pool

from .harness import Bench
from .measure import total_cpu_seconds

NAMESPACE = "bench-funding"
POOL = "funding"
DUO = {"threshold": 2, "participants": ["buyer", "vendor"]}
#: Blocks measured per count; the figure is their median.
BLOCKS = 3


def _funding_heights(bench: Bench) -> dict[str, int]:
    listing = json_object(
        client.CustomObjectsApi(bench.api).list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, ESCROW_PLURAL)
    )
    return {
        e["metadata"]["name"]: int(((e.get("status") or {}).get("funding") or {}).get("height") or 0)
        for e in listing["items"]
    }


def _wait_heights(bench: Bench, count: int, height: int, timeout: float) -> float:
    """Wait until ``count`` escrows show funding read at ``height`` or above; returns the seconds."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        heights = _funding_heights(bench)
        if len(heights) >= count and all(h >= height for h in heights.values()):
            return time.monotonic() - start
        if time.monotonic() > deadline:
            behind = sorted(name for name, h in heights.items() if h < height)
            raise AssertionError(f"{len(behind)} escrows not at height {height} after {timeout} s: {behind[:5]}")
        time.sleep(0.2)


def run_funding(bench: Bench, counts: list[int], pods: int, env: dict[str, str], timeout: float) -> dict[str, Any]:
    bench.create_namespace(NAMESPACE)
    chain: Chain = start_chain(bench.api, NAMESPACE)
    bench.start_operator(env)
    create_pool(bench.api, NAMESPACE, POOL, replicas=pods, network="regtest", daemon=chain.address)
    pool = bench.read_pool(NAMESPACE, POOL)
    rows = []
    made = 0
    with miner(chain, mature=False) as wallet:
        for count in sorted(counts):
            for i in range(made, count):
                create_escrow(bench.api, NAMESPACE, f"f{i:05d}", POOL, **DUO)
            made = count
            _wait_heights(bench, count, 1, timeout)  # Ready, with a first funding scan
            _wait_heights(bench, count, chain.height(), timeout)
            pids = bench.wallet_rpc_pids(pool)
            cpu, wall = [], []
            for _ in range(BLOCKS):
                before = total_cpu_seconds(pids)
                height = wallet.mine(1)
                wall.append(_wait_heights(bench, count, height, timeout))
                cpu.append(total_cpu_seconds(pids) - before)
            rows.append(
                {
                    "escrows": count,
                    "pods": pods,
                    "blocks": BLOCKS,
                    "wallet_rpc_cpu_s_per_block": round(statistics.median(cpu), 2),
                    "wallet_rpc_cpu_s_per_escrow_per_block": round(statistics.median(cpu) / count, 3),
                    "seconds_to_current_per_block": round(statistics.median(wall), 1),
                }
            )
    return {"mode": "funding", "runs": rows}


def summary(figures: dict[str, Any]) -> list[str]:
    return [
        f"funding: {r['escrows']} escrows on {r['pods']} pods: {r['wallet_rpc_cpu_s_per_block']} wallet-rpc CPU s per "
        f"block ({r['wallet_rpc_cpu_s_per_escrow_per_block']} per escrow), all current {r['seconds_to_current_per_block']} s "
        f"after the block (median of {r['blocks']} blocks)"
        for r in figures["runs"]
    ]
