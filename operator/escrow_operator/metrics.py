"""Prometheus metrics of the operator, served with ``/healthz`` on ``ESCROW_METRICS_PORT``.

Labels carry no names of escrows, wallets or roles, and nothing secret: only namespaces, pool names,
escrow phases, wallet-rpc method names, failure reasons and retry kinds, each a small bounded set.

Gauges are read when scraped from state the operator already keeps: the pools' schedulers, and the
phase of every watched Escrow (:data:`ESCROWS`, fed by the Escrow watch). After a restart the watch
lists every Escrow again, so the gauges are right at once; counters and histograms start from zero.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .pools import Pools

ESCROWS_READY = Counter("xmrescrow_escrows_ready_total", "Escrows that reached Ready")
ESCROWS_FAILED = Counter(
    "xmrescrow_escrows_failed_total",
    "Escrows that turned Failed, by reason (StepError, MultisigMismatch, MessageMissing, AddressMismatch, PodsUnavailable)",
    ["reason"],
)
STEP_RETRIES = Counter(
    "xmrescrow_step_retries_total",
    "Steps run again: kind=pod (pod lost/unreachable) or error (wallet-rpc error)",
    ["kind"],
)
STEP_SECONDS = Histogram(
    "xmrescrow_step_duration_seconds",
    "One step on its leased pod, from lease to publish",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
ROUND_SECONDS = Histogram(
    "xmrescrow_round_duration_seconds",
    "One round of one escrow (all participants)",
    buckets=(0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)
RPC_SECONDS = Histogram(
    "xmrescrow_rpc_duration_seconds",
    "wallet-rpc calls by method",
    ["method"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16),
)

#: Phases of an Escrow (status.phase); an Escrow without a phase yet counts as Pending.
PHASES = ("Pending", "KeyExchange", "Ready", "Failed")
UNKNOWN_PHASE = "Unknown"


class EscrowPhases(Collector):
    """``xmrescrow_escrows{namespace, phase}``: how many Escrows are in each phase, per namespace.

    Fed with every event of the Escrow watch (the initial listing included), so it mirrors the
    objects, not what this process did: it is right after a restart. An Escrow being deleted
    (``deletionTimestamp`` set) no longer counts, and the delete handler calls :meth:`forget`, so
    an Escrow whose last events a watch restart missed does not stay counted. Keyed by uid
    internally; only namespace and phase are exported. Read from the scrape thread, written on the
    event loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: dict[str, tuple[str, str]] = {}  # uid -> (namespace, phase)

    def observe(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Take one watch event (``type`` None for the initial listing, ADDED, MODIFIED, DELETED)."""
        meta = body.get("metadata") or {}
        uid, namespace = meta.get("uid"), meta.get("namespace")
        if not uid or not namespace:
            return
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            self.forget(uid)
            return
        phase = (body.get("status") or {}).get("phase") or PHASES[0]
        with self._lock:
            self._phases[uid] = (namespace, phase if phase in PHASES else UNKNOWN_PHASE)

    def forget(self, uid: str) -> None:
        """Stop counting the Escrow ``uid`` (it is being deleted or gone)."""
        with self._lock:
            self._phases.pop(uid, None)

    def counts(self) -> dict[str, dict[str, int]]:
        """namespace -> phase -> count; every known phase is present (0 when none)."""
        with self._lock:
            entries = list(self._phases.values())
        result: dict[str, dict[str, int]] = {}
        for namespace, phase in entries:
            per_phase = result.setdefault(namespace, dict.fromkeys(PHASES, 0))
            per_phase[phase] = per_phase.get(phase, 0) + 1
        return result

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "xmrescrow_escrows",
            "Escrows by phase (Pending, KeyExchange, Ready, Failed), per namespace",
            labels=["namespace", "phase"],
        )
        for namespace, per_phase in sorted(self.counts().items()):
            for phase, count in per_phase.items():
                family.add_metric([namespace, phase], count)
        yield family


#: The Escrows the operator watches, by phase; :func:`escrow_operator.handlers.escrow_event` feeds it.
ESCROWS = EscrowPhases()
REGISTRY.register(ESCROWS)


class _Scheduler(Protocol):
    @property
    def pods(self) -> int: ...
    @property
    def ready(self) -> int: ...
    @property
    def busy(self) -> int: ...
    @property
    def queued(self) -> int: ...


class PoolCollector(Collector):
    """Pods, ready and busy pods and steps queued, per pool, read from the schedulers when scraped.

    Only pools whose WalletPool object exists are exported, so a deleted pool's series go away.
    """

    def __init__(self, pools: Pools) -> None:
        self.pools = pools

    def collect(self) -> Iterable[GaugeMetricFamily]:
        labels = ["namespace", "pool"]
        pods = GaugeMetricFamily("xmrescrow_pool_pods", "Pods of the pool that are not terminating", labels=labels)
        ready = GaugeMetricFamily(
            "xmrescrow_pool_pods_ready",
            "Ready pods per pool (schedulable: ready, not terminating, with an IP)",
            labels=labels,
        )
        busy = GaugeMetricFamily("xmrescrow_pool_pods_busy", "Pods running a step per pool", labels=labels)
        queued = GaugeMetricFamily("xmrescrow_pool_steps_queued", "Steps waiting for a pod", labels=labels)
        for pool in self.pools.all():
            if not pool.exists.is_set():
                continue
            scheduler: _Scheduler = pool.scheduler
            values = [pool.namespace, pool.name]
            pods.add_metric(values, scheduler.pods)
            ready.add_metric(values, scheduler.ready)
            busy.add_metric(values, scheduler.busy)
            queued.add_metric(values, scheduler.queued)
        yield from (pods, ready, busy, queued)


def register_pools(pools: Pools) -> None:
    REGISTRY.register(PoolCollector(pools))


# --- the HTTP endpoint ---------------------------------------------------------------------------
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def app(registry: CollectorRegistry = REGISTRY) -> WsgiApp:
    """``/metrics`` (and ``/``) in the Prometheus text format, ``/healthz`` ``ok``, anything else 404."""
    metrics_app = make_wsgi_app(registry)

    def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path in ("/metrics", "/"):
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics or /healthz\n"]

    return route


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # `format`: the base class's name
        """No access log: scrapes every few seconds would flood the operator's log."""


def serve(
    port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> tuple[WSGIServer, threading.Thread]:
    """Serve :func:`app` on ``addr:port`` from a daemon thread (as prometheus_client's
    ``start_http_server`` does, plus ``/healthz``)."""
    family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]

    class MetricsServer(_Server):
        address_family = family

    httpd = make_server(addr, port, app(registry), MetricsServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return httpd, thread
