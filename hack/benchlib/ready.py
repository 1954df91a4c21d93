"""Scale check of an operator restart: N finished (Ready) escrows exist, the operator starts.

The benchmark creates the pool with the operator running, stops the operator, creates N Escrow
objects with the operator's finalizer, writes a finished escrow's status for each through the
status subresource and its Secret (passwords, and the address for every participant, as a finished
escrow has them; no key exchange runs: the wallets do not exist), then starts the operator and
measures until it is idle: how long that took, its CPU and peak RSS, the apiserver writes it made to
escrows, secrets, events and pools, how many escrows changed, whether it ran any step, and the pool's
wallet-rpc CPU over the same window (against what the pods' readiness probes alone cost).
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
from kubernetes import client

from escrow_operator import escrow_status
from escrow_operator.api import ESCROW_PLURAL, GROUP, VERSION, EscrowPhase, EscrowSpec, EscrowStatus
from escrow_operator.escrow_secret import secret_name
from escrow_operator.kube import json_object
from escrow_operator.naming import WalletNames, final_step
from escrow_operator.settings import FINALIZER
from hack.testground.escrows import escrow_body

from .harness import Bench, Pool
from .measure import apiserver_writes, cpu_seconds, peak_rss_mb, total_cpu_seconds, writes_delta
from .operator_policy import operator_env

#: The operator is idle when it used less than this much CPU over IDLE_WINDOW_S seconds.
IDLE_CPU_S = 0.05
IDLE_WINDOW_S = 2.0
SAMPLE_S = 0.25
#: Logged once the operator's startup handler ran (kopf's activity log line).
STARTUP_MARKER = "Activity 'startup' succeeded"
#: Logged by kopf when an Escrow's daemon returned (at once, for a Ready escrow).
DAEMON_DONE = "Daemon 'run_escrow' succeeded"
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def fake_address() -> str:
    """Something shaped like a mainnet address (95 base58 characters starting with 4); not a wallet."""
    return "4" + "".join(secrets.choice(BASE58) for _ in range(94))


def ready_status(uid: str, generation: int, spec: EscrowSpec) -> dict[str, Any]:
    """The status the operator leaves on a finished escrow (exchange.py, EscrowExchange.run)."""
    roles = list(spec.participants)
    final = final_step(len(roles), spec.threshold)
    done = datetime.now(UTC).replace(microsecond=0)
    names = {role: WalletNames(role, uid, final) for role in roles}
    status = escrow_status.started(EscrowStatus(), generation, 0, final, now=done - timedelta(minutes=2))
    status = escrow_status.progress(status, generation, {role: final + 1 for role in roles}, names, final)
    status.secret_name = secret_name(uid)
    status = escrow_status.ready(status, generation, fake_address(), spec.threshold, len(roles), now=done)
    return status.to_api()


def kopf_annotations(body: dict[str, Any]) -> dict[str, str]:
    """The annotations kopf leaves on an object it has handled, with the operator's storage settings
    (handlers.py, startup): the last handled configuration and the kopf-managed marker."""
    storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    patch = kopf.Patch()
    raw = cast(kopf.RawBody, body)  # an Escrow as the apiserver would send it
    storage.store(body=kopf.Body(raw), patch=patch, essence=storage.build(body=kopf.Body(raw)))
    return dict(patch["metadata"]["annotations"])


def ready_body(name: str, pool: str) -> dict[str, Any]:
    """An Escrow as a finished one looks in metadata and spec: the operator's finalizer, kopf's
    annotations, and the spec with its defaults spelled out (as the apiserver stores it, keys sorted)."""
    spec = EscrowSpec(pool_ref=pool).to_api()
    body = escrow_body(name, pool, **spec)
    body["spec"] = dict(sorted(body["spec"].items()))
    body["metadata"]["finalizers"] = [FINALIZER]
    body["metadata"]["annotations"] = kopf_annotations(body)
    return body


def create_ready_escrow(objects: client.CustomObjectsApi, namespace: str, name: str, pool: str) -> None:
    body = ready_body(name, pool)
    created = json_object(objects.create_namespaced_custom_object(GROUP, VERSION, namespace, ESCROW_PLURAL, body))
    meta = created["metadata"]
    status = ready_status(meta["uid"], meta["generation"], EscrowSpec.model_validate(created["spec"]))
    objects.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, ESCROW_PLURAL, name, {"status": status}, _content_type="application/merge-patch+json"
    )
    # The Secret a finished escrow has: a resumed Ready escrow compares its addresses with status.
    roles = EscrowSpec.model_validate(created["spec"]).participants
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(name=secret_name(meta["uid"])),
        string_data={
            **{f"password.{role}": secrets.token_urlsafe(32) for role in roles},
            **{f"address.{role}": status["address"] for role in roles},
        },
    )
    client.CoreV1Api(objects.api_client).create_namespaced_secret(namespace, secret)


def escrow_versions(bench: Bench, namespace: str) -> dict[str, tuple[str, str | None]]:
    """resourceVersion and phase of every escrow in the namespace."""
    listing = json_object(
        client.CustomObjectsApi(bench.api).list_namespaced_custom_object(GROUP, VERSION, namespace, ESCROW_PLURAL)
    )
    return {
        o["metadata"]["name"]: (o["metadata"]["resourceVersion"], (o.get("status") or {}).get("phase"))
        for o in listing["items"]
    }


def events_since(bench: Bench, since: float) -> dict[str, int]:
    """Events (any namespace) created or updated at or after ``since`` (one-second resolution),
    counted by who posted them, their reason and the kind of object they are about."""
    counts: Counter[str] = Counter()
    for event in client.CoreV1Api(bench.api).list_event_for_all_namespaces().items:
        times = [event.metadata.creation_timestamp, event.last_timestamp, event.event_time]
        if max(t.timestamp() for t in times if t is not None) >= int(since):
            source = event.reporting_component or (event.source.component if event.source else None) or "?"
            counts[f"{source}: {event.reason} {event.involved_object.kind}"] += 1
    return dict(sorted(counts.items()))


def wait_idle(bench: Bench, started: float, timeout: float) -> float:
    """Seconds from ``started`` until the operator went quiet after logging its startup: less than
    IDLE_CPU_S CPU seconds over IDLE_WINDOW_S, the window starting after the startup line (polled:
    a process's CPU counter sends no event)."""
    operator = bench.operator
    assert operator is not None and operator.proc is not None
    samples: list[tuple[float, float]] = []
    startup_seen: float | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if operator.proc.poll() is not None:
            raise SystemExit(f"bench: the operator exited with {operator.proc.returncode}; see {operator.log_path}")
        now, cpu = time.time(), cpu_seconds(operator.proc.pid)
        if startup_seen is None and STARTUP_MARKER in operator.log:
            startup_seen = now
        samples.append((now, cpu))
        older = [s for s in samples if s[0] <= now - IDLE_WINDOW_S]
        if older and startup_seen is not None and older[-1][0] >= startup_seen and cpu - older[-1][1] < IDLE_CPU_S:
            return older[-1][0] - started
        del samples[: max(0, len(older) - 1)]
        time.sleep(SAMPLE_S)  # sampling a process's CPU counter
    raise SystemExit(f"bench: the operator was not idle within {timeout:.0f} s; see {operator.log_path}")


def probe_baseline(bench: Bench, pool: Pool, seconds: float = 5.0) -> float:
    """wallet-rpc CPU seconds per second of the pool with no operator: its readiness probes."""
    pids = bench.wallet_rpc_pids(pool)
    before, t0 = total_cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)  # measuring a rate over a fixed window
    return (total_cpu_seconds(pids) - before) / (time.monotonic() - t0)


@dataclass(frozen=True)
class Snapshot:
    """What changes in the restart window: wallet-rpc CPU, apiserver writes, escrows' versions."""

    rpc_cpu: float
    writes: dict[str, int]
    versions: dict[str, tuple[str, str | None]]

    @classmethod
    def take(cls, bench: Bench, pool: Pool) -> Snapshot:
        return cls(
            total_cpu_seconds(bench.wallet_rpc_pids(pool)),
            apiserver_writes(bench.cluster),
            escrow_versions(bench, pool.namespace),
        )


def create_ready_escrows(bench: Bench, pool: Pool, count: int) -> float:
    """Create ``count`` finished escrows; returns the seconds it took."""
    objects = client.CustomObjectsApi(bench.api)
    started = time.monotonic()
    for i in range(count):
        create_ready_escrow(objects, pool.namespace, f"ready-{i:05d}", pool.name)
    return time.monotonic() - started


def run_ready_check(bench: Bench, pool: Pool, count: int, affinity: bool, timeout: float) -> dict[str, Any]:
    """Create ``count`` Ready escrows with the operator stopped, then start it and measure until idle."""
    if bench.operator is not None:
        raise RuntimeError("stop the operator before creating the Ready escrows")
    setup_seconds = create_ready_escrows(bench, pool, count)
    baseline = probe_baseline(bench, pool)
    before = Snapshot.take(bench, pool)
    started = time.time()
    operator = bench.start_operator(operator_env(affinity))
    to_idle = wait_idle(bench, started, timeout)
    window = time.time() - started
    assert operator.proc is not None
    op_cpu, rss = cpu_seconds(operator.proc.pid), peak_rss_mb(operator.proc.pid)
    after = Snapshot.take(bench, pool)
    writes = writes_delta(before.writes, after.writes)
    log = operator.log
    return {
        "mode": "ready",
        "ready_escrows": count,
        "pods": len(pool.pods),
        "setup_seconds": round(setup_seconds, 1),
        "time_to_idle_s": round(to_idle, 1),
        "operator_cpu_s": round(op_cpu, 2),
        "operator_peak_rss_mb": round(rss, 1),
        "apiserver_writes": writes,
        "apiserver_writes_escrows_secrets_events": writes["escrows"] + writes["secrets"] + writes["events"],
        "events_in_window": events_since(bench, started),
        "escrows_changed": sum(
            1 for name, v in after.versions.items() if before.versions.get(name, ("", None))[0] != v[0]
        ),
        "escrows_ready_after": sum(1 for _, phase in after.versions.values() if phase == EscrowPhase.READY),
        "step_done_lines": log.count("Step done"),
        "escrow_daemons_finished": log.count(DAEMON_DONE),
        "wallet_rpc_cpu_s": round(after.rpc_cpu - before.rpc_cpu, 2),
        "wallet_rpc_cpu_s_idle_baseline": round(baseline * window, 2),
        "measured_window_s": round(window, 1),
    }
