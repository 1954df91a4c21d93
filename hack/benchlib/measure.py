"""Figures read from the machine: process CPU and memory, and the apiserver's request counters."""

from __future__ import annotations

import os
import re
import ssl
import statistics
import urllib.request
from datetime import datetime
from pathlib import Path

from hack.devcluster import DevCluster

TICK = os.sysconf("SC_CLK_TCK")
#: The resources whose writes the benchmark counts (the operator's own traffic).
COUNTED_RESOURCES = ("escrows", "secrets", "events", "walletpools")
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE", "APPLY")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def total_cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MB."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def container_pids(cluster: DevCluster, container: str, pod_uids: set[str]) -> list[int]:
    """Pids of one container of the given pods, from the process kubelet's pid file."""
    pidfile = cluster.kubelet_root / "pids"
    pids = []
    for line in pidfile.read_text().splitlines() if pidfile.exists() else []:
        uid, name, pid = line.split()
        if name == container and uid in pod_uids:
            pids.append(int(pid))
    return pids


def apiserver_writes(cluster: DevCluster) -> dict[str, int]:
    """Write requests (any verb that changes state) the apiserver served so far, per resource; the
    counted resources are always present."""
    context = ssl.create_default_context(cafile=str(cluster.pki.ca_crt))
    context.load_cert_chain(str(cluster.pki.admin_crt), str(cluster.pki.admin_key))
    with urllib.request.urlopen(f"{cluster.server}/metrics", context=context, timeout=30) as reply:
        text = reply.read().decode()
    writes = dict.fromkeys(COUNTED_RESOURCES, 0)
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(_LABEL.findall(line.split("}", 1)[0]))
        if labels.get("verb") in WRITE_VERBS and labels.get("resource"):
            resource = labels["resource"]
            writes[resource] = writes.get(resource, 0) + int(float(line.rsplit(" ", 1)[1]))
    return writes


def writes_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Writes between two readings: every counted resource, and any other resource that was written."""
    delta = {resource: after.get(resource, 0) - before.get(resource, 0) for resource in after}
    return {r: n for r, n in delta.items() if n or r in COUNTED_RESOURCES}


def counted_writes(delta: dict[str, int]) -> int:
    return sum(delta[resource] for resource in COUNTED_RESOURCES)


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def p50_p95(values: list[float]) -> tuple[float, float]:
    """Median and 95th percentile; the percentile never lies outside the data (inclusive method)."""
    if not values:
        raise ValueError("no values")
    if len(values) == 1:
        return values[0], values[0]
    return statistics.median(values), statistics.quantiles(values, n=20, method="inclusive")[18]


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)
