"""The operator's metrics: the collectors' logic and the HTTP app, with fake inputs (no network)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from escrow_operator import metrics
from escrow_operator.metrics import PHASES, EscrowPhases, PoolCollector


def escrow(uid: str, namespace: str = "shop", phase: str | None = None, name: str = "order-1") -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"uid": uid, "namespace": namespace, "name": name},
        "spec": {"poolRef": "wallets"},
    }
    if phase is not None:
        body["status"] = {"phase": phase, "address": "4" + "A" * 94}
    return body


def scrape(*collectors: Any) -> str:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry).decode()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def escrows_gauge(phases: EscrowPhases) -> dict[tuple[str, str], float]:
    return {
        (dict(k)["namespace"], dict(k)["phase"]): v for k, v in samples(scrape(phases), "xmrescrow_escrows").items()
    }


# --- escrows by phase -------------------------------------------------------------------------------
def test_escrows_by_phase_follow_the_watch_events() -> None:
    phases = EscrowPhases()
    phases.observe(None, escrow("u1"))  # initial listing, no status yet: Pending
    phases.observe("ADDED", escrow("u2", phase="KeyExchange"))
    phases.observe("ADDED", escrow("u3", namespace="other", phase="Ready"))
    assert phases.counts() == {
        "shop": {"Pending": 1, "KeyExchange": 1, "Ready": 0, "Failed": 0},
        "other": {"Pending": 0, "KeyExchange": 0, "Ready": 1, "Failed": 0},
    }
    phases.observe("MODIFIED", escrow("u1", phase="KeyExchange"))
    phases.observe("MODIFIED", escrow("u2", phase="Ready"))
    phases.observe("MODIFIED", escrow("u1", phase="Failed"))
    assert phases.counts()["shop"] == {"Pending": 0, "KeyExchange": 0, "Ready": 1, "Failed": 1}
    phases.observe("DELETED", escrow("u2", phase="Ready"))
    assert phases.counts()["shop"] == {"Pending": 0, "KeyExchange": 0, "Ready": 0, "Failed": 1}
    # The last escrow of a namespace gone: the namespace's series go too.
    phases.observe("DELETED", escrow("u3", namespace="other", phase="Ready"))
    assert "other" not in phases.counts()


def test_an_escrow_being_deleted_no_longer_counts() -> None:
    """deletionTimestamp set (finalizer still on) or the delete handler run: not counted, so a watch
    restart that misses the DELETED event leaves no stale count; later events of it change nothing."""
    phases = EscrowPhases()
    phases.observe(None, escrow("u1", phase="Ready"))
    phases.observe(None, escrow("u2", phase="Ready"))
    deleting = escrow("u1", phase="Ready")
    deleting["metadata"]["deletionTimestamp"] = "2026-11-29T06:00:00Z"
    phases.observe("MODIFIED", deleting)
    assert phases.counts()["shop"]["Ready"] == 1
    phases.forget("u2")  # the delete handler ran; its MODIFIED events were missed
    assert "shop" not in phases.counts()
    phases.observe(None, deleting)  # a later listing while the finalizer is still on
    assert phases.counts() == {}


def test_every_phase_is_exported_with_zeros() -> None:
    phases = EscrowPhases()
    phases.observe(None, escrow("u1", phase="Ready"))
    assert escrows_gauge(phases) == {
        ("shop", "Pending"): 0,
        ("shop", "KeyExchange"): 0,
        ("shop", "Ready"): 1,
        ("shop", "Failed"): 0,
    }


def test_a_restart_is_the_initial_listing_again() -> None:
    """A new process knows only what the watch lists: the gauge equals the objects, not the history."""
    before = EscrowPhases()
    for i, phase in enumerate(["Pending", "KeyExchange", "Ready", "Ready", "Failed"]):
        before.observe("ADDED", escrow(f"u{i}", phase="Pending"))
        before.observe("MODIFIED", escrow(f"u{i}", phase=phase))
    after = EscrowPhases()
    for i, phase in enumerate(["Pending", "KeyExchange", "Ready", "Ready", "Failed"]):
        after.observe(None, escrow(f"u{i}", phase=phase))
    assert after.counts() == before.counts() == {"shop": {"Pending": 1, "KeyExchange": 1, "Ready": 2, "Failed": 1}}


def test_repeated_events_of_one_escrow_count_it_once() -> None:
    phases = EscrowPhases()
    for _ in range(3):
        phases.observe("MODIFIED", escrow("u1", phase="KeyExchange"))
    phases.observe(None, escrow("u1", phase="KeyExchange"))  # a relist
    assert phases.counts()["shop"]["KeyExchange"] == 1


def test_unknown_phases_and_bodies_without_identity() -> None:
    phases = EscrowPhases()
    phases.observe("ADDED", escrow("u1", phase="Exploded"))
    phases.observe("ADDED", {"metadata": {"namespace": "shop"}})  # no uid: ignored
    phases.observe("ADDED", {})
    phases.observe("DELETED", escrow("never-seen"))  # deleting what was never seen is harmless
    assert phases.counts() == {"shop": {"Pending": 0, "KeyExchange": 0, "Ready": 0, "Failed": 0, "Unknown": 1}}


def test_escrow_labels_are_namespace_and_phase_only() -> None:
    phases = EscrowPhases()
    phases.observe("ADDED", escrow("5b0f8d1e-uid", name="order-secret-name", phase="Ready"))
    text = scrape(phases)
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "xmrescrow_escrows"]
    assert family.documentation
    assert {k for s in family.samples for k in s.labels} == {"namespace", "phase"}
    for leak in ("5b0f8d1e-uid", "order-secret-name", "4AAAA", "wallets"):
        assert leak not in text


def test_module_escrows_collector_is_registered() -> None:
    from prometheus_client import REGISTRY

    assert any(f.name == "xmrescrow_escrows" for f in REGISTRY.collect())


# --- pools -------------------------------------------------------------------------------------------
@dataclass
class FakeScheduler:
    pods: int = 0
    ready: int = 0
    busy: int = 0
    queued: int = 0


@dataclass
class FakePool:
    namespace: str
    name: str
    scheduler: FakeScheduler
    exists: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class FakePools:
    pools: list[FakePool]

    def all(self) -> list[FakePool]:
        return list(self.pools)


def existing(pool: FakePool) -> FakePool:
    pool.exists.set()
    return pool


def test_pool_gauges_per_pool() -> None:
    pools = FakePools(
        [
            existing(FakePool("shop", "wallets", FakeScheduler(pods=3, ready=2, busy=1, queued=4))),
            existing(FakePool("other", "wallets", FakeScheduler(pods=1, ready=1))),
        ]
    )
    text = scrape(PoolCollector(pools))  # type: ignore[arg-type]
    key = (("namespace", "shop"), ("pool", "wallets"))
    assert samples(text, "xmrescrow_pool_pods")[key] == 3
    assert samples(text, "xmrescrow_pool_pods_ready")[key] == 2
    assert samples(text, "xmrescrow_pool_pods_busy")[key] == 1
    assert samples(text, "xmrescrow_pool_steps_queued")[key] == 4
    assert samples(text, "xmrescrow_pool_pods_ready")[(("namespace", "other"), ("pool", "wallets"))] == 1
    for family in text_string_to_metric_families(text):
        assert family.documentation, family.name
        assert {k for s in family.samples for k in s.labels} == {"namespace", "pool"}


def test_a_deleted_or_unknown_pool_is_not_exported() -> None:
    """Pool runtimes are created on first mention (a pod, an escrow's poolRef); only existing pools show."""
    gone = FakePool("shop", "typo-in-poolref", FakeScheduler(queued=0))
    text = scrape(PoolCollector(FakePools([gone])))  # type: ignore[arg-type]
    assert "typo-in-poolref" not in text
    assert "# HELP xmrescrow_pool_pods_ready" in text  # the families are there, empty


# --- the other metrics ---------------------------------------------------------------------------------
def test_every_operator_metric_has_help_and_bounded_labels() -> None:
    from prometheus_client import REGISTRY

    allowed = {"namespace", "phase", "pool", "method", "reason", "kind", "le"}
    names = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("xmrescrow_"):
            continue
        names.add(family.name)
        assert family.documentation.strip(), f"{family.name} has no HELP text"
        for sample in family.samples:
            assert set(sample.labels) <= allowed, (family.name, sample.labels)
    assert {
        "xmrescrow_escrows",
        "xmrescrow_escrows_ready",
        "xmrescrow_escrows_failed",
        "xmrescrow_step_retries",
        "xmrescrow_step_duration_seconds",
        "xmrescrow_round_duration_seconds",
        "xmrescrow_rpc_duration_seconds",
    } <= names


def test_rpc_histogram_by_method() -> None:
    before = metrics.RPC_SECONDS.labels(method="make_multisig")._sum.get()
    metrics.RPC_SECONDS.labels(method="make_multisig").observe(0.37)
    assert metrics.RPC_SECONDS.labels(method="make_multisig")._sum.get() == pytest.approx(before + 0.37)
    assert metrics.RPC_SECONDS._labelnames == ("method",)
    assert metrics.STEP_RETRIES._labelnames == ("kind",)
    assert metrics.ESCROWS_FAILED._labelnames == ("reason",)


# --- the HTTP app ------------------------------------------------------------------------------------------
def call(app: Callable[..., Iterable[bytes]], path: str) -> tuple[str, dict[str, str], str]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        seen["status"], seen["headers"] = status, dict(headers)
        return lambda _: None

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "test",
        "SERVER_PORT": "8080",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
    }
    body = b"".join(app(environ, start_response)).decode()
    return seen["status"], seen["headers"], body


def test_http_app_serves_metrics_healthz_and_404() -> None:
    registry = CollectorRegistry()
    phases = EscrowPhases()
    phases.observe("ADDED", escrow("u1", phase="Ready"))
    registry.register(phases)
    app = metrics.app(registry)
    status, headers, body = call(app, "/metrics")
    assert status.startswith("200") and headers["Content-Type"].startswith("text/plain")
    assert 'xmrescrow_escrows{namespace="shop",phase="Ready"} 1.0' in body
    assert call(app, "/")[0].startswith("200")
    status, _, body = call(app, "/healthz")
    assert status.startswith("200") and body == "ok\n"
    status, _, body = call(app, "/wallets/buyer_escrow_x")
    assert status.startswith("404") and "buyer" not in body


def test_phases_constant_matches_the_api() -> None:
    from escrow_operator.api import EscrowPhase

    assert set(PHASES) == {p.value for p in EscrowPhase}
