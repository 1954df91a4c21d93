"""Crash safety: SIGKILL the operator at every named point of every round of one 2-of-3 escrow.

After each crash the operator is restarted with the next point armed. At the end the escrow must be
Ready with one address that every participant's final wallet reports (multisig ready, 2-of-3), no
wallet lost or duplicated, no intermediate or work file left, and no output published twice.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from kubernetes import client

from escrow_operator import multisig
from escrow_operator.faults import Point, step_points
from hack.devcluster import DevCluster
from tests.support.escrows import (
    assert_no_secrets,
    create_escrow,
    escrow_secret,
    get_escrow,
    pool_directory,
    reconcile_pool,
    wait_escrow,
)
from tests.support.kube import custom_objects, wait_for
from tests.support.operator import OperatorProcess
from tests.support.walletrpc_proc import standalone_wallet_rpc

POOL = "crashpool"
ROLES = ("buyer", "vendor", "arbiter")
SHAPE = multisig.Shape(threshold=2, total=3)
#: Every named point of each step, in the order a step reaches them (from the operator's own tables:
#: a step that is not the last stores its wallet and publishes a copy, the wallet stays open).
STEP_POINTS = {step: step_points(step, SHAPE.final, multisig.calls(step, SHAPE)) for step in range(SHAPE.final + 1)}
PRE_PUBLISH = [Point.STEP_START, Point.AFTER_COPY, Point.AFTER_RECORD, Point.BEFORE_PUBLISH]


def crash_points() -> list[str]:
    points = [f"{p}@{step}" for step, names in STEP_POINTS.items() for p in names]
    return points + [Point.CLEANUP_AFTER_DELETE.value, Point.CLEANUP_BEFORE_READY.value]


def must_hit(point: str) -> bool:
    """Points a crash cannot skip: before its publish, a crashed step always runs again."""
    name = point.split("@")[0]
    return name.startswith("rpc.") or name in PRE_PUBLISH


@pytest.fixture(scope="module")
def pool(
    kube: client.ApiClient,
    module_namespace: str,
    cluster: DevCluster,
    crds: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> str:
    # The pool needs an operator to be reconciled; this one stops before the faults begin.
    reconcile_pool(
        kube, module_namespace, POOL, 3, Path(cluster.kubeconfig), tmp_path_factory.mktemp("op") / "setup.log"
    )
    return POOL


def run_until_crash_or_ready(
    op: OperatorProcess, kube: client.ApiClient, ns: str, name: str, timeout: float = 180
) -> str:
    deadline = time.monotonic() + timeout
    assert op.proc is not None
    while time.monotonic() < deadline:
        try:
            code = op.proc.wait(timeout=0.25)
            return "crashed" if code == -9 else f"exited {code}"
        except subprocess.TimeoutExpired:
            pass
        if (get_escrow(kube, ns, name).get("status") or {}).get("phase") == "Ready":
            op.stop()
            return "ready"
    op.stop()
    raise AssertionError(f"neither a crash nor Ready within {timeout} s; log:\n{op.log[-3000:]}")


def crash_through(
    cluster: DevCluster, kube: client.ApiClient, ns: str, name: str, points: list[str], log: Path
) -> list[str]:
    """Run an operator armed with each point in turn, restarting after each crash; finish fault-free.

    Returns the points where a SIGKILL was injected.
    """
    hit: list[str] = []
    for point in points:
        op = OperatorProcess(
            Path(cluster.kubeconfig), log, env={"ESCROW_MODE": "test", "ESCROW_FAULTS": f"crash:{point}"}
        ).start()
        outcome = run_until_crash_or_ready(op, kube, ns, name)
        if outcome == "ready":
            break
        assert outcome == "crashed", f"{point}: operator {outcome}\n{op.log[-3000:]}"
        assert f"SIGKILL at {point.split('@')[0]}" in op.log
        hit.append(point)
    # A last, fault-free run finishes whatever is left.
    final = OperatorProcess(Path(cluster.kubeconfig), log).start()
    try:
        wait_escrow(kube, ns, name)
    finally:
        final.stop()
    return hit


def assert_nothing_lost(
    kube: client.ApiClient, cluster: DevCluster, ns: str, name: str, pool: str, logs: list[str]
) -> int:
    """Ready, one address in every final wallet (2-of-3 ready), nothing else left, nothing published
    twice, no secret in status, events or logs. Returns the number of secret values scanned for."""
    escrow = get_escrow(kube, ns, name)
    assert escrow["status"]["phase"] == "Ready"
    uid = escrow["metadata"]["uid"]
    address = escrow["status"]["address"]
    directory = pool_directory(kube, ns, pool)
    files = sorted(p.name for p in directory.iterdir() if uid in p.name or p.name.startswith(".walletfs-tmp"))
    expected = sorted(f"{r}_escrow_{uid}_round_3_final{s}" for r in ROLES for s in ("", ".keys"))
    assert [f for f in files if not f.endswith(".address.txt")] == expected, "lost, duplicate or leftover wallet files"
    secret = escrow_secret(kube, ns, uid)
    with standalone_wallet_rpc(directory) as rpc:
        for role in ROLES:
            state = rpc.inspect(f"{role}_escrow_{uid}_round_3_final", secret[f"password.{role}"])
            assert state["ready"] and (state["threshold"], state["total"]) == (2, 3)
            assert state["address"] == address
    # No published output was ever published twice (the sidecars' own logs, across every pod).
    published: Counter[str] = Counter()
    sidecars = [p.read_text(errors="replace") for p in cluster.kubelet_root.glob("pods/*/logs/walletfs.log")]
    for text in sidecars:
        for target in re.findall(rf"Published \S+ -> (\S*{uid}\S*)", text):
            published[target] += 1
    assert published and max(published.values()) == 1, published
    assert len(published) == len(ROLES) * 4
    return assert_no_secrets(kube, ns, uid, [*logs, *sidecars])


def test_crash_at_every_point(
    kube: client.ApiClient, module_namespace: str, pool: str, cluster: DevCluster, tmp_path: Path
) -> None:
    ns, name = module_namespace, "crashy"
    create_escrow(kube, ns, name, pool)
    points = crash_points()
    log = tmp_path / "operator.log"
    hit = crash_through(cluster, kube, ns, name, points, log)
    missed = [p for p in points if must_hit(p) and p not in hit]
    print(
        f"\ncrash matrix: {len(points)} points, {len(hit)} injected, missed (allowed after publish): "
        f"{[p for p in points if p not in hit]}"
    )
    assert missed == [], f"points that should have been reached: {missed}"
    scanned = assert_nothing_lost(kube, cluster, ns, name, pool, [log.read_text(errors="replace")])
    print(
        f"crash matrix: {len(points)} points, {len(hit)} SIGKILLs, 1 escrow Ready, 0 wallets lost, {scanned} secrets scanned, 0 found"
    )


def test_crash_in_steps_on_wallets_kept_open(
    kube: client.ApiClient, module_namespace: str, pool: str, cluster: DevCluster, tmp_path: Path
) -> None:
    """Crashes inside steps that run on a wallet left open by its previous round (wallet affinity).

    A fresh operator runs round 0 of all three participants and keeps each wallet open on its pod,
    so round 1 runs warm: the first crash is after ``store`` wrote the open work wallet, before its
    copy is published. Later crashes hit whichever step gets there first, warm or not.
    """
    ns, name = module_namespace, "warm-crashy"
    create_escrow(kube, ns, name, pool)
    log = tmp_path / "operator.log"
    points = ["rpc.after.store@1", "step.before_publish@2", "rpc.after.exchange_multisig_keys@3"]
    hit = crash_through(cluster, kube, ns, name, points, log)
    text = log.read_text(errors="replace")
    first_run = text.split("SIGKILL at")[0]
    assert len(re.findall(r"Step done: escrow=\S+ role=\w+ round=0 .* warm=0", first_run)) == 3, (
        "round 0 ran in the first operator"
    )
    assert hit == points, hit
    # Each crash struck a run that had done the round before it, so its steps were warm.
    runs = text.split("SIGKILL at")[:-1]
    for run, point in zip(runs, points, strict=True):
        round_ = point.split("@")[1]
        assert re.search(rf"round {round_} runs on its wallet kept open", run), (
            f"no warm step before the crash at {point}"
        )
    scanned = assert_nothing_lost(kube, cluster, ns, name, pool, [text])
    print(
        f"warm crashes: {len(hit)} SIGKILLs ({hit}), 1 escrow Ready, 0 wallets lost, {scanned} secrets scanned, 0 found"
    )


def test_failed_escrow_keeps_files_and_retries_on_annotation(
    kube: client.ApiClient, module_namespace: str, pool: str, cluster: DevCluster, tmp_path: Path
) -> None:
    ns, name = module_namespace, "doomed"
    create_escrow(kube, ns, name, pool)
    broken = OperatorProcess(
        Path(cluster.kubeconfig),
        tmp_path / "broken.log",
        env={
            "ESCROW_MODE": "test",
            "ESCROW_STEP_ATTEMPTS": "2",
            "ESCROW_FAULTS": "fail:rpc.before.exchange_multisig_keys@2x1000",
        },
    ).start()
    try:
        failed = wait_escrow(kube, ns, name, phase="Failed")
    finally:
        broken.stop()
    status = failed["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "StepError"
    assert "round 2" in status["message"] and "injected fault" in status["message"]
    uid = failed["metadata"]["uid"]
    kept = {p.name for p in pool_directory(kube, ns, pool).iterdir() if uid in p.name}
    assert {f"{r}_escrow_{uid}_round_2_input.keys" for r in ROLES} <= kept, "a Failed escrow keeps its files"

    healthy = OperatorProcess(Path(cluster.kubeconfig), tmp_path / "healthy.log").start()
    try:
        client.CustomObjectsApi(kube).patch_namespaced_custom_object(
            "xmrescrow.dev",
            "v1alpha1",
            ns,
            "escrows",
            name,
            {"metadata": {"annotations": {"xmrescrow.dev/retry": "1"}}},
        )

        def retried_and_ready(obj: dict) -> bool:
            status = obj.get("status") or {}
            if status.get("lastRetry") == "1" and status.get("phase") == "Failed":
                raise AssertionError(f"the retry failed: {status.get('message')}")
            return status.get("lastRetry") == "1" and status.get("phase") == "Ready"

        escrow = wait_for(
            custom_objects(kube, ns, "escrows"), retried_and_ready, field_selector=f"metadata.name={name}", timeout=240
        )
    finally:
        healthy.stop()
    assert escrow["status"]["lastRetry"] == "1"
    assert_no_secrets(kube, ns, uid, [broken.log, healthy.log])
    assert "Retrying" in {e.reason for e in client.CoreV1Api(kube).list_namespaced_event(ns).items}
