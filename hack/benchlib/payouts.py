"""``hack/bench --payouts N``: N payouts at once on a pool with a regtest daemon.

A regtest monerod pod and a P-pod pool with that daemon; N 2-of-2 escrows (the cheapest exchange; a
payout of a 2-of-3 escrow also has two signers and costs the same) are made Ready and funded with
1 XMR each (one miner transaction per 15 escrows), the payments unlocked. Then N release payouts
(both signers, 0.5 XMR to one address) are created at once, and measured until every one is
Submitted: payouts per minute, wallet-rpc CPU per payout (every pod of the pool), and the time from a
payout's creation to its Submitted status (median and slowest, polled every 0.2 s).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from kubernetes import client

from escrow_operator.api import ESCROW_PLURAL, GROUP, PAYOUT_PLURAL, VERSION
from escrow_operator.kube import json_object
from hack.testground.chain import Chain, miner, start_chain
from hack.testground.escrows import create_escrow, create_pool, payout_body

from .harness import Bench
from .measure import total_cpu_seconds

NAMESPACE = "bench-payouts"
POOL = "payouts"
DUO = {"threshold": 2, "participants": ["buyer", "vendor"]}
XMR = 10**12
#: Destinations of one funding transaction (a transaction takes at most 16 outputs with the change).
PER_FUNDING_TX = 15


def _listing(bench: Bench, plural: str) -> list[dict[str, Any]]:
    found = client.CustomObjectsApi(bench.api).list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural)
    return list(json_object(found)["items"])


def _wait_escrows(bench: Bench, count: int, done: Any, what: str, timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        escrows = _listing(bench, ESCROW_PLURAL)
        if len(escrows) >= count and all(done(e.get("status") or {}) for e in escrows):
            return escrows
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} escrows not {what} after {timeout} s")
        time.sleep(0.5)


def run_payouts(bench: Bench, count: int, pods: int, env: dict[str, str], timeout: float) -> dict[str, Any]:
    bench.create_namespace(NAMESPACE)
    chain: Chain = start_chain(bench.api, NAMESPACE)
    bench.start_operator({**env, "ESCROW_BLOCK_POLL_INTERVAL": "0.5"})
    create_pool(bench.api, NAMESPACE, POOL, replicas=pods, network="regtest", daemon=chain.address)
    pool = bench.read_pool(NAMESPACE, POOL)
    for i in range(count):
        create_escrow(bench.api, NAMESPACE, f"p{i:04d}", POOL, **DUO)
    with miner(chain) as wallet:
        ready = _wait_escrows(bench, count, lambda s: s.get("phase") == "Ready", "Ready", timeout)
        addresses = [e["status"]["address"] for e in ready]
        txids = []
        wallet.call("refresh")
        for start in range(0, len(addresses), PER_FUNDING_TX):
            destinations = [{"address": a, "amount": XMR} for a in addresses[start : start + PER_FUNDING_TX]]
            txids.append(str(wallet.call("transfer", destinations=destinations)["tx_hash"]))
        for txid in txids:
            wallet.confirm(txid, confirmations=10)
        _wait_escrows(bench, count, lambda s: ((s.get("funding") or {}).get("unlocked") or 0) >= XMR, "funded", timeout)
        pids = bench.wallet_rpc_pids(pool)
        cpu_before = total_cpu_seconds(pids)
        started = time.monotonic()
        created: dict[str, float] = {}
        api = client.CustomObjectsApi(bench.api)
        for e in ready:
            name = e["metadata"]["name"]
            body = payout_body(
                name,
                name,
                ["buyer", "vendor"],
                destinations=[{"address": wallet.address, "amount": XMR // 2}],
                confirmations=1,
            )
            api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PAYOUT_PLURAL, body)
            created[name] = time.monotonic()
        submitted: dict[str, float] = {}
        deadline = started + timeout
        while len(submitted) < count:
            for p in _listing(bench, PAYOUT_PLURAL):
                name = p["metadata"]["name"]
                phase = (p.get("status") or {}).get("phase")
                if name not in submitted and phase in ("Submitted", "Confirmed"):
                    submitted[name] = time.monotonic()
                if phase == "Failed":
                    raise AssertionError(f"payout {name} failed: {p['status'].get('message')}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{count - len(submitted)} payouts not Submitted after {timeout} s")
            time.sleep(0.2)
        wall = max(submitted.values()) - started
        cpu = total_cpu_seconds(pids) - cpu_before
    latencies = sorted(submitted[n] - created[n] for n in submitted)
    return {
        "mode": "payouts",
        "payouts": count,
        "pods": pods,
        "signers": 2,
        "seconds_to_all_submitted": round(wall, 1),
        "payouts_per_minute": round(60 * count / wall, 2),
        "wallet_rpc_cpu_s_per_payout": round(cpu / count, 2),
        "create_to_submitted_median_s": round(statistics.median(latencies), 1),
        "create_to_submitted_max_s": round(latencies[-1], 1),
    }


def summary(figures: dict[str, Any]) -> list[str]:
    f = figures
    return [
        f"payouts: {f['payouts']} at once on {f['pods']} pods ({f['signers']} signers each): "
        f"{f['payouts_per_minute']} payouts/min, {f['wallet_rpc_cpu_s_per_payout']} wallet-rpc CPU s per payout, "
        f"create to Submitted median {f['create_to_submitted_median_s']} s, slowest {f['create_to_submitted_max_s']} s"
    ]
