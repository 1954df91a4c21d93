"""Figure sets and the one-line summaries ``hack/bench`` prints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .measure import p50_p95


def common_figures(
    policy: str, escrows: int, pods: int, wall: float, to_ready: list[float], rpc_cpu: float, busy: float
) -> dict[str, Any]:
    """The figures both policies report."""
    p50, p95 = p50_p95(to_ready)
    cpu_per_escrow = rpc_cpu / escrows
    cores = os.cpu_count() or 1
    return {
        "policy": policy,
        "escrows": escrows,
        "pods": pods,
        "cores": cores,
        "wall_seconds": round(wall, 1),
        "escrows_per_minute": round(escrows / wall * 60, 2),
        "time_to_ready_p50_s": round(p50, 1),
        "time_to_ready_p95_s": round(p95, 1),
        "wallet_rpc_cpu_s_per_escrow": round(cpu_per_escrow, 2),
        "cpu_bound_escrows_per_minute": round(cores * 60 / cpu_per_escrow, 2) if cpu_per_escrow > 0 else None,
        "pod_busy_fraction": round(busy / (pods * wall), 3),
    }


def speedup(operator: dict[str, Any], seed: dict[str, Any]) -> float:
    """Operator escrows per minute over seed escrows per minute."""
    return round(operator["escrows_per_minute"] / seed["escrows_per_minute"], 2)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g} ms"


def operator_summary(f: dict[str, Any]) -> str:
    line = (
        f"bench: {f['escrows']} escrows on {f['pods']} pods: {f['escrows_per_minute']} escrows/min "
        f"(CPU bound {f['cpu_bound_escrows_per_minute']}), p50 {f['time_to_ready_p50_s']} s, "
        f"p95 {f['time_to_ready_p95_s']} s, wallet-rpc {f['wallet_rpc_cpu_s_per_escrow']} CPU s/escrow, "
        f"busy {f['pod_busy_fraction']:.0%}, {f['apiserver_writes_per_escrow']} writes/escrow, "
        f"affinity {f['affinity']}, step overhead p50 {_ms(f['step_overhead_ms_p50'])} p95 {_ms(f['step_overhead_ms_p95'])}, "
        f"warm steps {'n/a' if f['warm_step_fraction'] is None else format(f['warm_step_fraction'], '.0%')}, "
        f"{f['retried_attempts']} attempts retried, {f['operator_error_lines']} error lines"
    )
    if f["time_to_ready_over_critical_path"] is not None:
        line += f", time to Ready {f['time_to_ready_over_critical_path']}x the critical path ({f['critical_path_s']} s)"
    return line


def seed_summary(f: dict[str, Any]) -> str:
    return (
        f"bench (seed policy): {f['escrows']} escrows on {f['pods']} pods: {f['escrows_per_minute']} escrows/min "
        f"(CPU bound {f['cpu_bound_escrows_per_minute']}), p50 {f['time_to_ready_p50_s']} s, "
        f"p95 {f['time_to_ready_p95_s']} s, wallet-rpc {f['wallet_rpc_cpu_s_per_escrow']} CPU s/escrow, "
        f"busy {f['pod_busy_fraction']:.0%} ({f['stagger_s']:g} s stagger, {f['round_pause_s']:g} s pause per round)"
    )


def ready_summary(f: dict[str, Any]) -> str:
    w = f["apiserver_writes"]
    return (
        f"bench --ready: operator restart over {f['ready_escrows']} Ready escrows ({f['pods']} pods): "
        f"idle after {f['time_to_idle_s']} s, operator CPU {f['operator_cpu_s']} s, peak RSS {f['operator_peak_rss_mb']} MB, "
        f"writes escrows/secrets/events {w['escrows']}/{w['secrets']}/{w['events']} (walletpools {w['walletpools']}), "
        f"{f['escrows_changed']} escrows changed, {f['escrow_daemons_finished']} escrow daemons returned, {f['step_done_lines']} steps run, "
        f"wallet-rpc CPU {f['wallet_rpc_cpu_s']} s (probes alone {f['wallet_rpc_cpu_s_idle_baseline']} s)"
    )


def emit(figures: dict[str, Any], lines: list[str], path: Path | None) -> None:
    """Print the figures as JSON, then the summary lines; also write the JSON to ``path``."""
    text = json.dumps(figures, indent=2)
    print(text)
    if path is not None:
        path.write_text(text + "\n")
    for line in lines:
        print(line)
