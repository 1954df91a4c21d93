"""kopf handlers: WalletPools are reconciled into workloads, pods feed the schedulers, Escrows run.

Importing this module registers the handlers; :func:`escrow_operator.cli.main` runs them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from . import metrics
from .api import (
    ESCROW_PLURAL,
    GROUP,
    READY,
    VERSION,
    WALLETPOOL_PLURAL,
    EscrowPhase,
    EscrowSpec,
    WalletPoolSpec,
    WalletRetention,
    set_condition,
    WalletPoolStatus,
)
from .escrow_secret import EscrowSecret
from .exchange import Context, EscrowExchange
from .faults import Faults
from .kube import Kube, load_api_client
from .pool_resources import (
    RPC_CONFIG_KEY,
    claim,
    disruption_budget,
    network_policy,
    rpc_config,
    rpc_secret,
    rpc_secret_name,
    selector_string,
    service,
    statefulset,
)
from .pools import PoolCredentials, Pools
from .scheduler import PodLost
from .settings import FINALIZER, POOL_LABEL, RETRY_ANNOTATION, OperatorSettings
from .walletfs.client import WalletfsUnavailable

log = logging.getLogger(__name__)
CTX: Context | None = None


def context() -> Context:
    if CTX is None:
        raise RuntimeError("the operator context is not initialised (startup handler did not run)")
    return CTX


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global CTX
    ours = OperatorSettings.from_env()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # Events are posted explicitly, one per round
    settings.watching.server_timeout = 300
    settings.batching.error_delays = [1, 2, 5, 10, 30]
    kube = Kube(load_api_client(), threads=ours.api_threads)
    pools = Pools(kube, ours)
    metrics.register_pools(pools)
    faults = Faults.parse(ours.faults, ours.mode)
    faults.install_resume_signal()
    CTX = Context(kube, pools, ours, faults)
    await _know_existing_pools(kube, pools, ours.namespace)
    if ours.metrics_port:
        metrics.serve(ours.metrics_port)


async def _know_existing_pools(kube: Kube, pools: Pools, namespace: str | None) -> None:
    """Mark the pools that exist before any Escrow resumes, so an in-flight escrow does not report
    PoolNotFound while the pool watch catches up after a restart."""
    if namespace:
        listing = await kube.call(kube.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, WALLETPOOL_PLURAL)
    else:
        listing = await kube.call(kube.custom.list_cluster_custom_object, GROUP, VERSION, WALLETPOOL_PLURAL)
    for item in listing.get("items") or []:
        meta = item["metadata"]
        if not meta.get("deletionTimestamp"):
            pools.get(meta["namespace"], meta["name"]).exists.set()


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if CTX is not None:
        await CTX.pools.close()
        CTX.kube.close()


# --- WalletPool ---------------------------------------------------------------------------------
@kopf.on.resume(GROUP, VERSION, WALLETPOOL_PLURAL)
@kopf.on.create(GROUP, VERSION, WALLETPOOL_PLURAL)
@kopf.on.update(GROUP, VERSION, WALLETPOOL_PLURAL)
async def reconcile_pool(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    ctx = context()
    generation = body["metadata"].get("generation")
    try:
        spec = WalletPoolSpec.model_validate(dict(body.get("spec") or {}))
    except ValidationError as exc:
        message = f"invalid spec: {'; '.join(e['msg'] for e in exc.errors())}"
        await _pool_not_reconciled(ctx, body, "InvalidSpec", message)
        raise kopf.PermanentError(message) from None
    obj = {"metadata": dict(body["metadata"])}
    try:
        await _apply_pool(ctx, obj, spec)
    except ApiException as exc:
        if exc.status == 403 and "NamespaceTerminating" in (exc.body or ""):
            log.info("pool %s/%s: namespace is terminating; nothing to reconcile", namespace, name)
            return
        if exc.status in (400, 422):
            message = f"the apiserver refused the pool's workload: {_api_message(exc)}"
            await _pool_not_reconciled(ctx, body, "Refused", message)
            raise kopf.PermanentError(message) from None
        raise
    pool = ctx.pools.get(namespace, name)
    pool.generation = generation
    status = WalletPoolStatus.model_validate(dict(body.get("status") or {}))
    set_condition(status.conditions, "Reconciled", True, "Applied", "StatefulSet, Service, Secret, PDB and NetworkPolicy applied", generation)
    await ctx.kube.patch_status(
        WALLETPOOL_PLURAL,
        namespace,
        name,
        {"conditions": status.to_api()["conditions"], "observedGeneration": generation, "selector": selector_string(name)},
    )
    pool.exists.set()


async def _pool_not_reconciled(ctx: Context, body: kopf.Body, reason: str, message: str) -> None:
    status = WalletPoolStatus.model_validate(dict(body.get("status") or {}))
    generation = body["metadata"].get("generation")
    set_condition(status.conditions, "Reconciled", False, reason, message[:1000], generation)
    set_condition(status.conditions, READY, False, reason, message[:1000], generation)
    await ctx.kube.patch_status(
        WALLETPOOL_PLURAL, body["metadata"]["namespace"], body["metadata"]["name"],
        {"conditions": status.to_api()["conditions"], "observedGeneration": generation},
    )
    kopf.event(body, type="Warning", reason=reason, message=message[:1000])


def _api_message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message", exc.reason))
    except (TypeError, ValueError):
        return str(exc.reason)


async def _apply_pool(ctx: Context, obj: dict[str, Any], spec: WalletPoolSpec) -> None:
    namespace = obj["metadata"]["namespace"]
    await _ensure_rpc_secret(ctx.kube, obj)
    pvc = claim(obj, spec)
    if pvc is not None:
        try:
            await ctx.kube.call(ctx.kube.core.create_namespaced_persistent_volume_claim, namespace, pvc)
        except ApiException as exc:
            if exc.status != 409:
                raise
    for manifest in (
        statefulset(obj, spec),
        service(obj),
        disruption_budget(obj),
        network_policy(obj, ctx.settings.operator_namespace),
    ):
        await ctx.kube.apply(manifest)


async def _ensure_rpc_secret(kube: Kube, obj: dict[str, Any]) -> None:
    namespace, pool = obj["metadata"]["namespace"], obj["metadata"]["name"]
    try:
        existing = await kube.call(kube.core.read_namespaced_secret, rpc_secret_name(pool), namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
    else:
        data = existing.data or {}
        if RPC_CONFIG_KEY not in data:
            # A Secret of an older release: add wallet-rpc's config file with the same login.
            creds = PoolCredentials.from_secret(data)
            patch = {"stringData": {RPC_CONFIG_KEY: rpc_config(creds.username, creds.password.get_secret_value())}}
            await kube.call(kube.core.patch_namespaced_secret, rpc_secret_name(pool), namespace, patch)
        return
    body = rpc_secret(obj, "escrow-operator", secrets.token_urlsafe(32), secrets.token_urlsafe(32))
    try:
        await kube.call(kube.core.create_namespaced_secret, namespace, body)
    except ApiException as exc:
        if exc.status != 409:
            raise


@kopf.on.delete(GROUP, VERSION, WALLETPOOL_PLURAL, optional=True)
async def pool_deleted(namespace: str, name: str, **_: Any) -> None:
    context().pools.get(namespace, name).exists.clear()


# --- pods of pools ---------------------------------------------------------------------------------
@kopf.on.event("v1", "pods", labels={POOL_LABEL: kopf.PRESENT})
async def pool_pod_event(event: kopf.RawEvent, **_: Any) -> None:
    pod = event["object"]
    meta = pod.get("metadata", {})
    pool = (meta.get("labels") or {}).get(POOL_LABEL)
    if pool:
        context().pools.get(meta["namespace"], pool).on_pod(event.get("type") or "ADDED", pod)


# --- Escrow ----------------------------------------------------------------------------------------
_retry_wakeups: dict[str, asyncio.Event] = {}


def _retry_requested(body: Mapping[str, Any], last_retry: str | None) -> str | None:
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(RETRY_ANNOTATION)
    return value if value and value != last_retry else None


@kopf.daemon(GROUP, VERSION, ESCROW_PLURAL, cancellation_timeout=10.0)
async def run_escrow(body: kopf.Body, uid: str, **_: Any) -> None:
    """One key exchange per Escrow, from wherever it stands; returns at once for a Ready one.

    A Failed escrow waits (no polling) until its ``xmrescrow.dev/retry`` annotation changes.
    """

    def emit(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message)

    status = dict(body.get("status") or {})
    try:
        while status.get("phase") != EscrowPhase.READY:
            retry = _retry_requested(body, status.get("lastRetry"))
            if status.get("phase") == EscrowPhase.FAILED and retry is None:
                wakeup = _retry_wakeups.setdefault(uid, asyncio.Event())
                wakeup.clear()
                if _retry_requested(body, status.get("lastRetry")) is None:
                    await wakeup.wait()
                continue
            snapshot = {"metadata": dict(body["metadata"]), "spec": dict(body["spec"]), "status": status}
            status = (await EscrowExchange(context(), snapshot, emit, retry=retry).run()).to_api()
    finally:
        _retry_wakeups.pop(uid, None)


@kopf.on.event(GROUP, VERSION, ESCROW_PLURAL)
async def escrow_event(event: kopf.RawEvent, **_: Any) -> None:
    """Count escrows by phase for the metrics; wake a Failed escrow's daemon when its retry annotation changes."""
    body = event["object"]
    metrics.ESCROWS.observe(event.get("type"), body)
    uid = (body.get("metadata") or {}).get("uid")
    wakeup = _retry_wakeups.get(uid) if uid else None
    if wakeup is not None and _retry_requested(body, (body.get("status") or {}).get("lastRetry")):
        wakeup.set()


@kopf.on.delete(GROUP, VERSION, ESCROW_PLURAL, retries=5, backoff=5)
async def escrow_deleted(body: kopf.Body, namespace: str, name: str, uid: str, retry: int, **_: Any) -> None:
    """Retain: keep the files and release the Secret. Delete: remove every file and the Secret."""
    metrics.ESCROWS.forget(uid)  # also when the watch missed the events that set deletionTimestamp
    ctx = context()
    spec = EscrowSpec.model_validate(dict(body["spec"]))
    secret = EscrowSecret(ctx.kube, namespace, name, uid)
    if spec.wallet_retention == WalletRetention.RETAIN:
        await secret.release()
        kopf.event(body, type="Normal", reason="WalletsRetained", message=f"wallet files and Secret {secret.name} are kept")
        return
    pool = ctx.pools.get(namespace, spec.pool_ref)
    creds = await pool.credentials()
    pod = pool.scheduler.any_ready_pod()
    if creds is None or pod is None:
        if retry >= 4:
            kopf.event(body, type="Warning", reason="FilesNotDeleted", message=f"no ready pod in pool {spec.pool_ref}; delete files of escrow {uid} by hand")
            await secret.delete()
            return
        raise kopf.TemporaryError(f"no ready pod of pool {spec.pool_ref} to delete the wallet files", delay=5)
    fs = pool.fs(pod, creds)
    try:
        for entry in await fs.list(uid):
            await fs.delete(entry.name)
            log.info("Deleted wallet file: %s", entry.name)
    except (WalletfsUnavailable, PodLost) as exc:
        raise kopf.TemporaryError(f"pod {pod.name} unavailable while deleting files: {type(exc).__name__}", delay=2) from exc
    await secret.delete()
    kopf.event(body, type="Normal", reason="WalletsDeleted", message="wallet files and Secret deleted (walletRetention: Delete)")
