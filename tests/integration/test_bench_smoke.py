"""hack/bench runs end to end: its own dev cluster, the operator, 2 escrows on 2 pods, figures out."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

EXPECTED = {
    "policy",
    "escrows",
    "pods",
    "cores",
    "wall_seconds",
    "escrows_per_minute",
    "time_to_ready_p50_s",
    "time_to_ready_p95_s",
    "wallet_rpc_cpu_s_per_escrow",
    "cpu_bound_escrows_per_minute",
    "pod_busy_fraction",
    "affinity",
    "operator_cpu_s",
    "operator_peak_rss_mb",
    "apiserver_writes_per_escrow",
    "retried_attempts",
    "operator_error_lines",
    "steps",
    "step_overhead_ms_p50",
    "step_overhead_ms_p95",
    "warm_step_fraction",
    "critical_path_s",
    "time_to_ready_over_critical_path",
}


def test_bench_two_escrows_on_two_pods(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    python = VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable)
    done = subprocess.run(
        [str(python), str(ROOT / "hack" / "bench"), "--escrows", "2", "--pods", "2", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"hack/bench exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    figures = json.loads(out.read_text())
    assert figures.keys() >= EXPECTED, f"missing: {sorted(EXPECTED - figures.keys())}"
    assert (figures["policy"], figures["escrows"], figures["pods"], figures["affinity"]) == ("operator", 2, 2, "on")
    assert figures["escrows_per_minute"] > 0
    assert figures["wallet_rpc_cpu_s_per_escrow"] > 0
    assert 0 < figures["time_to_ready_p50_s"] <= figures["time_to_ready_p95_s"] <= figures["wall_seconds"] + 1
    assert 0 < figures["pod_busy_fraction"] <= 1
    assert figures["steps"] == 2 * 3 * 4  # 2 escrows x 3 participants x 4 rounds
    assert figures["operator_peak_rss_mb"] > 0 and figures["apiserver_writes_per_escrow"] > 0
    assert 0 <= figures["step_overhead_ms_p50"] <= figures["step_overhead_ms_p95"]
    assert 0 <= figures["warm_step_fraction"] <= 1
    assert figures["time_to_ready_over_critical_path"] is None  # only for a single escrow
    assert figures["retried_attempts"] == 0, "no fault was injected: no step attempt should be retried"

    assert re.search(r"^bench: 2 escrows on 2 pods: [\d.]+ escrows/min", done.stdout, re.MULTILINE), done.stdout[-2000:]
