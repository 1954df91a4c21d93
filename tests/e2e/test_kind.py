"""End to end on kind (hack/kind-e2e.sh): both images built and loaded, the chart installed with a
WalletPool, three escrows Ready, and the pool's NetworkPolicy enforced by kind's kindnet.

Needs a Docker engine; skips where `docker info` fails (no engine, as on the shared dev machine)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hack.devcluster import bin_dir

ROOT = Path(__file__).resolve().parents[2]
# Needs a cluster (kind), like the integration tests: `make unit` leaves it out.
pytestmark = pytest.mark.integration


def docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_kind_end_to_end() -> None:
    if not docker_engine_available():
        pytest.skip(
            "no Docker engine: kind cannot run here; tests/integration/test_containers.py runs the chart"
            " with the built images in the dev cluster's container mode instead"
        )
    for tool in ("kind", "helm"):
        if not os.access(bin_dir() / tool, os.X_OK):
            pytest.skip(f"{tool} is not built: run hack/build-tools.sh")
    out = subprocess.run([str(ROOT / "hack" / "kind-e2e.sh")], capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, (
        f"hack/kind-e2e.sh failed ({out.returncode}):\n{out.stderr[-6000:]}\n{out.stdout[-2000:]}"
    )
