"""Load: 20 escrows at once on a 3-pod pool all reach Ready, and no wallet file is ever open in two
wallet-rpc processes (wallet-rpc's own logs hold no "Failed to lock"; no two steps shared a pod)."""

from __future__ import annotations

import itertools
import re
import time

import pytest
from kubernetes import client

from escrow_operator.settings import POOL_LABEL
from hack.devcluster import DevCluster
from tests.support.escrows import assert_no_secrets, create_escrow, create_pool, pool_directory
from tests.support.kube import custom_objects, wait_for
from tests.support.operator import OperatorProcess

POOL = "loadpool"
ESCROWS = 20
PODS = 3


def wallet_rpc_logs(cluster: DevCluster, kube: client.ApiClient, namespace: str) -> dict[str, str]:
    """wallet-rpc's own log files (``--log-file`` in each pod's HOME emptyDir) of this module's pool, by
    path. The pool is created by this module, so everything in them is from this module's run."""
    pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"{POOL_LABEL}={POOL}").items
    return {
        str(path): path.read_text(errors="replace")
        for pod in pods
        for path in (cluster.kubelet_root / "pods" / pod.metadata.uid / "volumes" / "home").glob("wallet-rpc.log*")
    }


@pytest.fixture(scope="module")
def pool(kube: client.ApiClient, module_namespace: str, operator: OperatorProcess) -> str:
    create_pool(kube, module_namespace, POOL, replicas=PODS)
    return POOL


def test_twenty_escrows_on_three_pods(
    kube: client.ApiClient, module_namespace: str, pool: str, operator: OperatorProcess, cluster: DevCluster
) -> None:
    ns = module_namespace
    started = time.monotonic()
    names = [f"load-{i:02d}" for i in range(ESCROWS)]
    for name in names:
        create_escrow(kube, ns, name, pool)
    ready: dict[str, dict] = {}

    def all_ready(obj: dict) -> bool:
        status = obj.get("status") or {}
        if status.get("phase") == "Failed":
            raise AssertionError(f"escrow {obj['metadata']['name']} failed: {status.get('message')}")
        if status.get("phase") == "Ready":
            ready[obj["metadata"]["name"]] = obj
        return len(ready) == ESCROWS

    wait_for(custom_objects(kube, ns, "escrows"), all_ready, timeout=1800, what=f"{ESCROWS} escrows Ready")
    elapsed = time.monotonic() - started

    # Every escrow has its own address, and only the final wallets are left.
    addresses = {e["status"]["address"] for e in ready.values()}
    assert len(addresses) == ESCROWS
    files = {p.name for p in pool_directory(kube, ns, pool).iterdir() if not p.name.endswith(".address.txt")}
    expected = {
        f"{role}_escrow_{e['metadata']['uid']}_round_3_final{suffix}"
        for e in ready.values()
        for role in ("buyer", "vendor", "arbiter")
        for suffix in ("", ".keys")
    }
    assert files == expected

    # One step per pod at a time, as the operator saw it ...
    spans: dict[str, list[tuple[float, float]]] = {}
    steps = re.findall(
        rf"Step done: escrow={ns}/\S+ .* pod=(\S+) start=([\d.]+) end=([\d.]+)(?: rpc=\S+ fs=\S+ warm=(\d))?",
        operator.log,
    )
    for pod, start, end, _ in steps:
        spans.setdefault(pod, []).append((float(start), float(end)))
    assert len(steps) >= ESCROWS * 3 * 4
    assert len(spans) == PODS
    for pod, intervals in spans.items():
        intervals.sort()
        for (s1, e1), (s2, e2) in itertools.pairwise(intervals):
            assert s2 >= e1, f"two steps overlapped on {pod}: [{s1}, {e1}] and [{s2}, {e2}]"
    # ... and as wallet-rpc saw it: no process ever found a wallet locked by another.
    # (At level 0 wallet-rpc logs its start, then only warnings and errors such as that one.)
    logs = wallet_rpc_logs(cluster, kube, ns)
    assert len(logs) >= PODS, f"wallet-rpc logs not found: {list(logs)}"
    for path, text in logs.items():
        assert "Starting wallet RPC server" in text, f"{path} is not a wallet-rpc log: {text[-2000:]}"
        assert "Failed to lock" not in text, f"{path}: a wallet file was open in two processes"
    scanned = sum(assert_no_secrets(kube, ns, e["metadata"]["uid"], [operator.log]) for e in ready.values())
    warm = sum(1 for *_, w in steps if w == "1")
    print(
        f"\nload: {ESCROWS} escrows on {PODS} pods Ready in {elapsed:.0f} s, {len(steps)} steps ({warm} warm), "
        f"{sum(len(t) for t in logs.values())} bytes of wallet-rpc log without 'Failed to lock', {scanned} secrets scanned, 0 found"
    )
