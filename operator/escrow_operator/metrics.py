"""Prometheus metrics of the operator. Labels carry no names of wallets, roles or secrets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .pools import Pools

ESCROWS_READY = Counter("xmrescrow_escrows_ready_total", "Escrows that reached Ready")
ESCROWS_FAILED = Counter("xmrescrow_escrows_failed_total", "Escrows that turned Failed", ["reason"])
STEP_RETRIES = Counter(
    "xmrescrow_step_retries_total", "Steps run again: kind=pod (pod lost/unreachable) or error (wallet-rpc error)", ["kind"]
)
STEP_SECONDS = Histogram(
    "xmrescrow_step_duration_seconds",
    "One step on its leased pod, from lease to publish",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
ROUND_SECONDS = Histogram(
    "xmrescrow_round_duration_seconds", "One round of one escrow (all participants)", buckets=(0.5, 1, 2, 4, 8, 16, 32, 64, 128)
)
RPC_SECONDS = Histogram(
    "xmrescrow_rpc_duration_seconds",
    "wallet-rpc calls by method",
    ["method"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16),
)


class PoolCollector(Collector):
    """Pods ready and busy and steps queued, per pool, read from the schedulers when scraped."""

    def __init__(self, pools: "Pools") -> None:
        self.pools = pools

    def collect(self) -> Iterable[GaugeMetricFamily]:
        ready = GaugeMetricFamily("xmrescrow_pool_pods_ready", "Ready pods per pool", labels=["namespace", "pool"])
        busy = GaugeMetricFamily("xmrescrow_pool_pods_busy", "Pods running a step per pool", labels=["namespace", "pool"])
        queued = GaugeMetricFamily("xmrescrow_pool_steps_queued", "Steps waiting for a pod", labels=["namespace", "pool"])
        for pool in self.pools.all():
            labels = [pool.namespace, pool.name]
            ready.add_metric(labels, pool.scheduler.ready)
            busy.add_metric(labels, pool.scheduler.busy)
            queued.add_metric(labels, pool.scheduler.queued)
        yield from (ready, busy, queued)


def register_pools(pools: "Pools") -> None:
    REGISTRY.register(PoolCollector(pools))
