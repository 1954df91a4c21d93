"""The operator policy: N Escrows applied at once, the operator runs them on the pool until all are Ready."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from escrow_operator.api import ESCROW_PLURAL, EscrowPhase
from hack.testground.escrows import create_escrow
from hack.testground.kube import custom_objects, wait_for

from . import steplog
from .harness import Bench, Pool
from .measure import (
    apiserver_writes,
    counted_writes,
    cpu_seconds,
    peak_rss_mb,
    rounded,
    total_cpu_seconds,
    writes_delta,
)
from .report import common_figures


def operator_env(affinity: bool) -> dict[str, str]:
    return {"ESCROW_RECORD_STEP_HISTORY": "true", "ESCROW_WALLET_AFFINITY": "true" if affinity else "false"}


@dataclass
class ReadyWatch:
    """Escrows seen Ready (the object, and when the benchmark saw it) while watching the namespace."""

    expected: int
    ready: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen_at: dict[str, float] = field(default_factory=dict)

    def __call__(self, obj: dict[str, Any]) -> bool:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        if status.get("phase") == EscrowPhase.FAILED:
            raise SystemExit(f"bench: escrow {name} failed: {status.get('message')}")
        if status.get("phase") == EscrowPhase.READY and name not in self.ready:
            self.ready[name] = obj
            self.seen_at[name] = time.time()
        return len(self.ready) >= self.expected


def run_operator_policy(bench: Bench, pool: Pool, escrows: int, affinity: bool, timeout: float) -> dict[str, Any]:
    """Apply ``escrows`` Escrows at once on ``pool`` (the operator runs) and measure until all are Ready.

    Times are the benchmark's own clock: an escrow's time to Ready runs from its create call to the
    watch event that shows it Ready (the status timestamps have one-second resolution)."""
    operator = bench.operator
    assert operator is not None and operator.proc is not None
    rpc_pids = bench.wallet_rpc_pids(pool)
    rpc_cpu0, op_cpu0 = total_cpu_seconds(rpc_pids), cpu_seconds(operator.proc.pid)
    writes0 = apiserver_writes(bench.cluster)
    started = time.time()
    created_at: dict[str, float] = {}
    for name in (f"bench-{i:04d}" for i in range(escrows)):
        create_escrow(bench.api, pool.namespace, name, pool.name)
        created_at[name] = time.time()
    watch = ReadyWatch(escrows)
    wait_for(
        custom_objects(bench.api, pool.namespace, ESCROW_PLURAL), watch, timeout=timeout, what="every escrow Ready"
    )
    rpc_cpu = total_cpu_seconds(rpc_pids) - rpc_cpu0
    op_cpu = cpu_seconds(operator.proc.pid) - op_cpu0
    writes = counted_writes(writes_delta(writes0, apiserver_writes(bench.cluster)))
    wall = max(watch.seen_at.values()) - started
    to_ready = sorted(watch.seen_at[name] - created_at[name] for name in created_at)
    steps = steplog.parse_steps(operator.log)
    figures = common_figures("operator", escrows, len(pool.pods), wall, to_ready, rpc_cpu, steplog.busy_seconds(steps))
    figures.update(
        {
            "affinity": "on" if affinity else "off",
            "operator_cpu_s": round(op_cpu, 1),
            "operator_peak_rss_mb": round(peak_rss_mb(operator.proc.pid), 1),
            "apiserver_writes_per_escrow": round(writes / escrows, 1),
            "retried_attempts": steplog.retried_attempts(operator.log),
            "operator_error_lines": steplog.error_lines(operator.log),
            **step_figures(steps, watch, created_at),
        }
    )
    return figures


def step_figures(steps: list[steplog.Step], watch: ReadyWatch, created_at: dict[str, float]) -> dict[str, Any]:
    """Operator overhead per step, wallet-affinity hits and, for one escrow, time to Ready over the
    critical path."""
    p50, p95 = steplog.overhead_ms(steps)
    ratio = path = None
    if len(created_at) == 1:
        name = next(iter(created_at))
        path = steplog.critical_path(steps)
        if path:
            ratio = (watch.seen_at[name] - created_at[name]) / path
    return {
        "steps": len(steps),
        "step_overhead_ms_p50": rounded(p50),
        "step_overhead_ms_p95": rounded(p95),
        "warm_step_fraction": rounded(steplog.warm_fraction(steps), 3),
        "critical_path_s": rounded(path, 2),
        "time_to_ready_over_critical_path": rounded(ratio, 2),
    }
