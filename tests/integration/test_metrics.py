"""Prometheus metrics of a real operator: escrows by phase, RPC durations, pool gauges, /healthz, and
no secret of an escrow anywhere in the scraped text.

One operator with its metrics port on runs a 2-pod pool, two 2-of-3 escrows to Ready and one 2-of-2
escrow to Failed. The failure is injected (ESCROW_MODE=test) at ``rpc.before.is_multisig@2``: only an
escrow whose round 2 is its final round (N = M) calls is_multisig there, so the 2-of-3 escrows never
meet the fault and the same operator serves both cases.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from escrow_operator.api import ESCROW_PLURAL, GROUP, VERSION
from hack.devcluster import DevCluster
from tests.support.escrows import (
    assert_no_secrets,
    create_escrow,
    create_pool,
    escrow_secret,
    wait_escrow,
    wait_escrow_gone,
)
from tests.support.operator import OperatorProcess
from tests.support.processes import free_port

POOL = "metricspool"
READY = ("esc-alpha", "esc-beta")  # 2-of-3, buyer/vendor/arbiter
FAILED = "esc-doomed"  # 2-of-2
FAILED_ROLES = ["payer", "payee"]
FAULTS = {"ESCROW_MODE": "test", "ESCROW_STEP_ATTEMPTS": "2", "ESCROW_FAULTS": "fail:rpc.before.is_multisig@2x1000"}
T = TypeVar("T")


def poll(read: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 60) -> T:
    """Read until ``done`` holds (the scrape follows the watch, a moment behind the apiserver)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = read()
            if done(last):
                return last
        except httpx.TransportError as exc:  # not listening yet
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {str(last)[-2000:]}")
        time.sleep(0.2)  # polling interval of a condition with a deadline, not a race fix


def scrape(op: OperatorProcess) -> str:
    reply = httpx.get(f"{op.metrics_url}/metrics", timeout=10)
    reply.raise_for_status()
    return reply.text


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample ``name`` whose labels include ``labels`` (None if there is none)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return s.value
    return None


def phases(text: str, namespace: str) -> dict[str, float]:
    return {
        s.labels["phase"]: s.value
        for family in text_string_to_metric_families(text)
        if family.name == "xmrescrow_escrows"
        for s in family.samples
        if s.labels.get("namespace") == namespace
    }


def start_operator(cluster: DevCluster, log: Path, env: dict[str, str]) -> tuple[OperatorProcess, int]:
    liveness = free_port()
    op = OperatorProcess(
        Path(cluster.kubeconfig),
        log,
        env={**env, "ESCROW_LIVENESS": f"http://127.0.0.1:{liveness}/healthz"},
        metrics_port=free_port(),
    ).start()
    return op, liveness


@pytest.fixture(scope="module")
def metrics_operator(
    cluster: DevCluster, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OperatorProcess, int]]:
    op, liveness = start_operator(cluster, tmp_path_factory.mktemp("op") / "operator.log", FAULTS)
    try:
        poll(lambda: scrape(op), lambda _: True, "the metrics endpoint")
        yield op, liveness
    finally:
        op.stop()


@pytest.fixture(scope="module")
def escrows(
    kube: client.ApiClient, module_namespace: str, metrics_operator: tuple[OperatorProcess, int]
) -> dict[str, dict]:
    ns = module_namespace
    create_pool(kube, ns, POOL, replicas=2)
    for name in READY:
        create_escrow(kube, ns, name, POOL)
    create_escrow(kube, ns, FAILED, POOL, threshold=2, participants=FAILED_ROLES)
    # generous: on a loaded 2-core machine one create_wallet can take 30 s instead of 1
    done = {name: wait_escrow(kube, ns, name, timeout=900) for name in READY}
    done[FAILED] = wait_escrow(kube, ns, FAILED, phase="Failed", timeout=300)
    return done


def test_healthz_answers(metrics_operator: tuple[OperatorProcess, int]) -> None:
    op, liveness = metrics_operator
    reply = httpx.get(f"{op.metrics_url}/healthz", timeout=10)
    assert reply.status_code == 200 and reply.text == "ok\n"
    assert httpx.get(f"{op.metrics_url}/nothing-here", timeout=10).status_code == 404
    # kopf's liveness endpoint (--liveness / ESCROW_LIVENESS), the one the chart's probes use.
    kopf_health = poll(
        lambda: httpx.get(f"http://127.0.0.1:{liveness}/healthz", timeout=10),
        lambda r: r.status_code == 200,
        "kopf /healthz",
    )
    assert kopf_health.status_code == 200


def test_escrows_by_phase(
    metrics_operator: tuple[OperatorProcess, int], module_namespace: str, escrows: dict[str, dict]
) -> None:
    op, _ = metrics_operator
    text = poll(
        lambda: scrape(op), lambda t: phases(t, module_namespace).get("Ready") == 2, "Ready=2 in xmrescrow_escrows"
    )
    assert phases(text, module_namespace) == {"Pending": 0, "KeyExchange": 0, "Ready": 2, "Failed": 1}
    assert "# HELP xmrescrow_escrows " in text
    assert (sample(text, "xmrescrow_escrows_ready_total") or 0) >= 2
    assert (sample(text, "xmrescrow_escrows_failed_total", reason="StepError") or 0) >= 1
    assert (sample(text, "xmrescrow_step_retries_total", kind="error") or 0) >= 1


def test_step_and_rpc_durations(metrics_operator: tuple[OperatorProcess, int], escrows: dict[str, dict]) -> None:
    text = scrape(metrics_operator[0])
    for method in (
        "create_wallet",
        "prepare_multisig",
        "make_multisig",
        "exchange_multisig_keys",
        "open_wallet",
        "close_wallet",
    ):
        count = sample(text, "xmrescrow_rpc_duration_seconds_count", method=method)
        assert count is not None and count > 0, f"no {method} in the RPC histogram"
        assert (sample(text, "xmrescrow_rpc_duration_seconds_sum", method=method) or 0) > 0
    # 2 escrows x 3 participants x rounds 0..3, and the 2-of-2's rounds 0 and 1: at least 28 steps.
    assert (sample(text, "xmrescrow_step_duration_seconds_count") or 0) >= 2 * 3 * 4 + 2 * 2
    assert (sample(text, "xmrescrow_round_duration_seconds_count") or 0) >= 2 * 4
    for name in ("xmrescrow_rpc_duration_seconds", "xmrescrow_step_duration_seconds", "xmrescrow_step_retries_total"):
        assert f"# HELP {name} " in text


def test_pool_gauges(
    metrics_operator: tuple[OperatorProcess, int], module_namespace: str, escrows: dict[str, dict]
) -> None:
    op, _ = metrics_operator
    labels = {"namespace": module_namespace, "pool": POOL}
    text = poll(
        lambda: scrape(op),
        lambda t: (
            sample(t, "xmrescrow_pool_pods_ready", **labels) == 2
            and sample(t, "xmrescrow_pool_pods_busy", **labels) == 0
        ),
        "2 ready, 0 busy pods in the pool gauges",
    )
    assert sample(text, "xmrescrow_pool_pods", **labels) == 2
    assert sample(text, "xmrescrow_pool_steps_queued", **labels) == 0
    for name in (
        "xmrescrow_pool_pods",
        "xmrescrow_pool_pods_ready",
        "xmrescrow_pool_pods_busy",
        "xmrescrow_pool_steps_queued",
    ):
        assert f"# HELP {name} " in text


def assert_absent(text: str, values: dict[str, str]) -> None:
    """No value, nor a 24-character piece from its middle (a truncated leak), appears in ``text``.
    ``values`` maps a description (never printed with its value) to the value."""
    for what, value in values.items():
        assert value, what
        assert value not in text, f"{what} appears in the metrics"
        if len(value) >= 48:
            middle = len(value) // 2
            assert value[middle - 12 : middle + 12] not in text, f"a piece of {what} appears in the metrics"


def test_no_secrets_in_metrics(
    kube: client.ApiClient,
    module_namespace: str,
    metrics_operator: tuple[OperatorProcess, int],
    escrows: dict[str, dict],
) -> None:
    ns = module_namespace
    op, _ = metrics_operator
    text = scrape(op)
    scanned = 0
    for name, escrow in escrows.items():
        uid = escrow["metadata"]["uid"]
        # passwords and round messages: not in status, events, the operator's log or the metrics
        scanned += assert_no_secrets(kube, ns, uid, [text, op.log])
        secret = escrow_secret(kube, ns, uid)
        assert any(k.startswith("message.") for k in secret), f"{name}: no round message to look for"
        values = {f"{k} of {name}": v for k, v in secret.items() if k.startswith(("password.", "message.", "address."))}
        roles = [p["role"] for p in escrow["status"]["participants"]]
        # wallet file names (they carry the uid), the escrow's name and its address
        values |= {f"uid of {name}": uid, f"name of {name}": name}
        if escrow["status"].get("address"):
            values[f"address of {name}"] = escrow["status"]["address"]
        assert_absent(text, values)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                assert not set(roles) & set(s.labels.values()), f"a role is a label value of {s.name}"
    # 2-of-3: 3 passwords + messages of rounds 0-2 (9); the 2-of-2 that failed in round 2: 2 + 4
    assert scanned >= 2 * (3 + 9) + (2 + 4)


def test_phases_after_a_restart_and_a_deletion(
    kube: client.ApiClient,
    cluster: DevCluster,
    module_namespace: str,
    metrics_operator: tuple[OperatorProcess, int],
    escrows: dict[str, dict],
    tmp_path: Path,
) -> None:
    """A new operator process knows the phases from its watch alone (counters start from zero), and
    a deleted escrow leaves the gauge."""
    metrics_operator[0].stop()
    op, _ = start_operator(cluster, tmp_path / "restarted.log", {})
    try:
        text = poll(
            lambda: scrape(op), lambda t: sum(phases(t, module_namespace).values()) == 3, "3 escrows after the restart"
        )
        assert phases(text, module_namespace) == {"Pending": 0, "KeyExchange": 0, "Ready": 2, "Failed": 1}
        assert sample(text, "xmrescrow_escrows_ready_total") == 0
        # the pool and its pods are listed again too
        labels = {"namespace": module_namespace, "pool": POOL}
        poll(
            lambda: scrape(op),
            lambda t: sample(t, "xmrescrow_pool_pods_ready", **labels) == 2,
            "2 ready pods after the restart",
        )
        # a deleted escrow leaves the gauge (walletRetention Retain: nothing to delete but the finalizer)
        client.CustomObjectsApi(kube).delete_namespaced_custom_object(
            GROUP, VERSION, module_namespace, ESCROW_PLURAL, FAILED
        )
        wait_escrow_gone(kube, module_namespace, FAILED)
        text = poll(
            lambda: scrape(op), lambda t: phases(t, module_namespace).get("Failed") == 0, "Failed=0 after the deletion"
        )
        assert phases(text, module_namespace) == {"Pending": 0, "KeyExchange": 0, "Ready": 2, "Failed": 0}
    finally:
        op.stop()
