"""kopf handlers: WalletPools are reconciled into workloads, pods feed the schedulers, Escrows run.

Importing this module registers the handlers; :func:`escrow_operator.cli.main` runs them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from . import escrow_status, metrics, payout_status
from .api import (
    ESCROW_PLURAL,
    GROUP,
    OFFLINE,
    PAYOUT_PLURAL,
    VERSION,
    WALLETPOOL_PLURAL,
    EscrowPayoutStatus,
    EscrowPhase,
    EscrowStatus,
    FundingPayout,
    PayoutPhase,
    WalletRetention,
    utcnow,
)
from .blocks import Chains
from .chainwatch import ChainWatches
from .context import Context
from .escrow_files import PoolUnusable, delete_files, is_work_copy
from .escrow_secret import EscrowSecret
from .exchange import EscrowExchange, EscrowGone
from .faults import Faults
from .funding import FundingGone, FundingWatch
from .funding_status import submitted_payout
from .kube import Kube, json_object, load_api_client
from .naming import payout_tag
from .payout import PayoutGone, PayoutRun
from .payout_secret import PayoutSecret, records_since
from .pool_reconcile import RECHECK_SECONDS, PoolRefused, PoolRetry, reconcile
from .pools import Pools
from .recovery_secret import RecoverySecret
from .scheduler import Priority
from .settings import DELETE_FUNDED_ANNOTATION, FINALIZER, POOL_LABEL, RETRY_ANNOTATION, OperatorSettings
from .watch_secret import WatchSecret

log = logging.getLogger(__name__)

#: How long deleting an escrow waits for its daemon to return (a wallet-rpc call in flight may take that long).
DAEMON_STOP_WAIT = 200.0
#: How long deleting an escrow waits for a pod to delete its files with, per attempt.
FILE_DELETION_WAIT = 30.0


def context(memo: Any) -> Context:
    ctx = getattr(memo, "ctx", None)
    if not isinstance(ctx, Context):
        raise RuntimeError("the operator context is not initialised (startup handler did not run)")
    return ctx


def namespaced(namespace: str | None) -> str:
    """The namespace of an Escrow or WalletPool: both kinds are namespaced, kopf's handler
    signatures have it optional for cluster-scoped kinds."""
    if namespace is None:
        raise kopf.PermanentError("a namespaced object without a namespace")
    return namespace


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours = OperatorSettings.from_env()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # Events are posted explicitly, one per round
    settings.watching.server_timeout = 300
    settings.batching.error_delays = [1, 2, 5, 10, 30]
    kube = Kube(load_api_client(), threads=ours.api_threads)
    pools = Pools(kube, ours)
    metrics.register_pools(pools)
    faults = Faults.parse(ours.faults, ours.mode)
    faults.install_resume_signal()
    chains = Chains(ours)
    watches = ChainWatches(chains, kube, ours.operator_namespace, ours, faults)
    since = await records_since(kube, ours.operator_namespace, utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"))
    memo.ctx = Context(kube, pools, ours, chains, watches, faults, records_since=since)
    await _know_existing_pools(kube, pools, chains, ours.namespace)
    if ours.metrics_port:
        metrics.serve(ours.metrics_port)


async def _know_existing_pools(kube: Kube, pools: Pools, chains: Chains, namespace: str | None) -> None:
    """Mark the pools that exist before any Escrow resumes, so an in-flight escrow does not report
    PoolNotFound while the pool watch catches up after a restart."""
    if namespace:
        found = await kube.call(kube.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, WALLETPOOL_PLURAL)
    else:
        found = await kube.call(kube.custom.list_cluster_custom_object, GROUP, VERSION, WALLETPOOL_PLURAL)
    listing = json_object(found)
    for item in listing.get("items") or []:
        meta = item["metadata"]
        if not meta.get("deletionTimestamp"):
            pool = pools.get(meta["namespace"], meta["name"])
            pool.adopt(meta.get("uid"))
            spec = item.get("spec") or {}
            daemon = spec.get("daemon")
            pool.set_daemon(daemon if daemon and daemon != OFFLINE else None, spec.get("network") or "mainnet")
            chains.configure((pool.namespace, pool.name), pool.daemon, spec.get("daemonZmq"))
            pool.exists.set()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    ctx = getattr(memo, "ctx", None)
    if isinstance(ctx, Context):
        await ctx.pools.close()
        await ctx.watches.close()
        await ctx.chains.close()
        ctx.kube.close()


# --- WalletPool ---------------------------------------------------------------------------------
@kopf.on.resume(GROUP, VERSION, WALLETPOOL_PLURAL)
@kopf.on.create(GROUP, VERSION, WALLETPOOL_PLURAL)
@kopf.on.update(GROUP, VERSION, WALLETPOOL_PLURAL)
async def reconcile_pool(body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    obj = {
        "metadata": dict(body["metadata"]),
        "spec": dict(body.get("spec") or {}),
        "status": dict(body.get("status") or {}),
    }
    try:
        await reconcile(context(memo), obj)
    except PoolRefused as refused:
        if refused.new:
            kopf.event(body, type="Warning", reason=refused.reason, message=refused.message[:1000])
        if refused.recheck:
            raise kopf.TemporaryError(refused.message, delay=RECHECK_SECONDS) from None
        raise kopf.PermanentError(refused.message) from None
    except PoolRetry as retry:
        raise kopf.TemporaryError(str(retry), delay=2) from None
    except ApiException as exc:
        if exc.status == 403 and "NamespaceTerminating" in (exc.body or ""):
            log.info("pool %s/%s: namespace is terminating; nothing to reconcile", namespace, name)
            return
        raise


@kopf.on.delete(GROUP, VERSION, WALLETPOOL_PLURAL, optional=True)
async def pool_deleted(namespace: str | None, name: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
    ctx = context(memo)
    pool = ctx.pools.get(namespaced(namespace), name)
    if pool.uid in (None, uid):  # not a pool of the same name created since
        ctx.chains.configure((pool.namespace, name), None, None)
    pool.deleted(uid)


# --- pods of pools ---------------------------------------------------------------------------------
@kopf.on.event("v1", "pods", labels={POOL_LABEL: kopf.PRESENT})
async def pool_pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    pod = event["object"]
    meta = pod.get("metadata", {})
    pool = (meta.get("labels") or {}).get(POOL_LABEL)
    if not pool:
        return
    runtime = context(memo).pools.get(meta["namespace"], pool)
    untold = runtime.on_pod(event.get("type") or "ADDED", pod)
    if untold:  # why pods do not run, told once on the pool (`kubectl describe wpool`)
        ref = kopf.Body(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "WalletPool",
                "metadata": {"name": pool, "namespace": meta["namespace"], "uid": runtime.uid or ""},
            }
        )
        for problem in untold:
            kopf.event(ref, type="Warning", reason="PodsFailing", message=problem)


# --- Escrow ----------------------------------------------------------------------------------------
_retry_wakeups: dict[str, asyncio.Event] = {}
#: Set when an escrow's daemon has returned: nothing of that escrow runs or is in flight any more.
_daemons_done: dict[str, asyncio.Event] = {}


def _retry_requested(body: Mapping[str, Any], last_retry: str | None) -> str | None:
    """A value of the retry annotation not yet acted on (the one place that decides a retry)."""
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(RETRY_ANNOTATION)
    return value if value and value != last_retry else None


#: kopf cancels an Escrow's daemon as its deletion begins and checks again after this many seconds;
#: a wallet-rpc call in flight may outlast it (kopf then stops tracking the daemon), which is why
#: escrow_deleted itself waits for the daemon to return before it touches any file.
DAEMON_CANCELLATION_TIMEOUT = 5.0


@kopf.index(GROUP, VERSION, PAYOUT_PLURAL)
def submitted_payouts(
    namespace: str | None, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], FundingPayout] | None:
    """Each escrow's submitted payouts, by (namespace, escrow uid), for its funding figures.

    kopf fills every index from its listing before any handler or daemon runs, so a funding watch
    started at the operator's start already knows every payout."""
    payout = submitted_payout(status)
    escrow_uid = status.get("escrowUid")
    if payout is None or not escrow_uid or not namespace:
        return None
    return {(namespace, str(escrow_uid)): payout}


@kopf.daemon(GROUP, VERSION, ESCROW_PLURAL, cancellation_timeout=DAEMON_CANCELLATION_TIMEOUT)
async def run_escrow(body: kopf.Body, uid: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """One key exchange per Escrow, from wherever it stands, then its funding watch (pools with a daemon).

    A Failed escrow waits (no polling) until its ``xmrescrow.dev/retry`` annotation changes. Deleting
    the Escrow cancels this daemon at once; a wallet-rpc or walletfs call in flight finishes first.
    """

    def emit(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message)

    def annotations() -> Mapping[str, str]:
        return dict((body.get("metadata") or {}).get("annotations") or {})

    index: kopf.Index[tuple[str, str], FundingPayout] = kwargs["submitted_payouts"]  # kopf passes indexes by name

    def payouts() -> list[FundingPayout]:
        return list(index.get((body["metadata"]["namespace"], uid), []))

    done = _daemons_done.setdefault(uid, asyncio.Event())
    done.clear()
    status = dict(body.get("status") or {})
    try:
        while True:
            retry = _retry_requested(body, status.get("lastRetry"))
            if status.get("phase") == EscrowPhase.FAILED and retry is None:
                wakeup = _retry_wakeups.setdefault(uid, asyncio.Event())
                wakeup.clear()
                if _retry_requested(body, status.get("lastRetry")) is None:
                    await wakeup.wait()
                continue
            snapshot = {"metadata": dict(body["metadata"]), "spec": dict(body["spec"]), "status": status}
            try:
                exchange = EscrowExchange(context(memo), snapshot, emit, retry=retry, annotations=annotations)
            except ValidationError as exc:  # admitted by an older CRD, refused by this release's rules
                await _refuse_spec(context(memo), snapshot, exc, emit)
                return
            status = (await exchange.run()).to_api()
            if status.get("phase") == EscrowPhase.READY:
                await FundingWatch(context(memo), {**snapshot, "status": status}, emit, payouts).run()
                return
    except (EscrowGone, FundingGone):
        return
    finally:
        _retry_wakeups.pop(uid, None)
        done.set()


def invalid_spec_message(exc: ValidationError, kind: str) -> str:
    """Why a stored spec no longer validates, and what to do."""
    return f"invalid spec: {'; '.join(e['msg'] for e in exc.errors())}; delete the {kind} and create a valid one"


async def _refuse_spec(
    ctx: Context, body: dict[str, Any], exc: ValidationError, emit: Callable[[str, str, str], None]
) -> None:
    meta = body["metadata"]
    message = invalid_spec_message(exc, "Escrow")
    status = escrow_status.failed(
        EscrowStatus.model_validate(body.get("status") or {}), meta.get("generation"), "InvalidSpec", message
    )
    await _write_refusal(ctx, ESCROW_PLURAL, meta, status.to_api(), message, emit)


async def _write_refusal(
    ctx: Context,
    plural: str,
    meta: Mapping[str, Any],
    status: dict[str, Any],
    message: str,
    emit: Callable[[str, str, str], None],
) -> None:
    await ctx.kube.patch_status(plural, meta["namespace"], meta["name"], status, uid=meta["uid"])
    emit("Warning", "InvalidSpec", message[:1000])


def _deletion_spec(body: Mapping[str, Any], received: bool) -> tuple[str, bool, bool]:
    """The pool of an Escrow being deleted (even one whose spec no longer validates), whether its wallets
    are kept, and whether they are kept although the spec says Delete: an escrow that received funds
    keeps its wallets unless its ``xmrescrow.dev/delete-funded-wallets`` annotation is "true".
    ``received``: the chain watch found an output of it (its watch Secret, which no namespace user can
    write); a status saying it received funds keeps them too, a status saying it did not never deletes them."""
    spec = body.get("spec") or {}
    pool = str(spec.get("poolRef") or "")
    if spec.get("walletRetention", WalletRetention.RETAIN) != WalletRetention.DELETE:
        return pool, True, False
    funding = (body.get("status") or {}).get("funding") or {}
    consent = ((body.get("metadata") or {}).get("annotations") or {}).get(DELETE_FUNDED_ANNOTATION) == "true"
    funded = (received or int(funding.get("received") or 0) > 0) and not consent
    return pool, funded, funded


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
async def escrow_deleted(
    body: kopf.Body, namespace: str | None, name: str, uid: str, retry: int, memo: kopf.Memo, **_: Any
) -> None:
    """Once the escrow's daemon has stopped: Retain keeps the wallets (work copies go) and releases the
    Secret; Delete removes every file and the Secret."""
    ns = namespaced(namespace)
    metrics.ESCROWS.forget(uid)  # also when the watch missed the events that set deletionTimestamp
    ctx = context(memo)
    stopped = _daemons_done.get(uid)
    if stopped is not None and not stopped.is_set():
        try:  # kopf cancelled the daemon; a call in flight finishes first (bounded by its timeout)
            await asyncio.wait_for(stopped.wait(), DAEMON_STOP_WAIT)
        except TimeoutError:
            raise kopf.TemporaryError("waiting for the escrow's running step to finish", delay=5) from None
    _daemons_done.pop(uid, None)
    watch = WatchSecret(ctx.kube, ctx.settings.operator_namespace, (ns, name), uid)
    await watch.load_if_present()
    pool_ref, retain, overruled = _deletion_spec(body, watch.received_anything())
    if overruled:
        kopf.event(
            body,
            type="Warning",
            reason="FundedWalletsRetained",
            message=f"the escrow received funds: its wallets and Secret are retained although walletRetention is "
            f"Delete; annotate it {DELETE_FUNDED_ANNOTATION}=true before deleting to delete them",
        )
    secret = EscrowSecret(ctx.kube, ns, name, uid)
    pool = ctx.pools.get(ns, pool_ref)
    keep = (lambda name: not is_work_copy(name)) if retain else (lambda name: False)
    priority = Priority.of(body.get("metadata") or {})
    try:
        if pool.scheduler.ready == 0:
            if retain:  # only work copies would go: not worth holding up the deletion
                raise PoolUnusable(f"no ready pod in pool {pool_ref}")
            raise TimeoutError
        await asyncio.wait_for(delete_files(pool, uid, priority, f"{name}/delete", keep), FILE_DELETION_WAIT)
    except (TimeoutError, PoolUnusable) as exc:
        if retry < 4 and not retain:
            raise kopf.TemporaryError(f"no ready pod of pool {pool_ref} to delete wallet files with", delay=5) from exc
        what = "work copies" if retain else "wallet files"
        kopf.event(
            body,
            type="Warning",
            reason="FilesNotDeleted",
            message=f"no ready pod in pool {pool_ref}; delete the {what} of escrow {uid} by hand",
        )
    recovery = RecoverySecret(ctx.kube, ctx.settings.operator_namespace, uid)
    await watch.delete()  # what the chain watch knew of it: needed only while the escrow exists
    if retain:
        await secret.release()
        kopf.event(
            body,
            type="Normal",
            reason="WalletsRetained",
            message=f"wallet files and Secret {secret.name} are kept; the passwords are also in "
            f"{recovery.namespace}/{recovery.name}",
        )
    else:
        await secret.delete()
        await recovery.delete()
        kopf.event(
            body,
            type="Normal",
            reason="WalletsDeleted",
            message="wallet files and Secret deleted (walletRetention: Delete)",
        )


# --- EscrowPayout ----------------------------------------------------------------------------------
#: Set when a payout's daemon has returned: none of its steps runs or is in flight any more.
_payouts_done: dict[str, asyncio.Event] = {}


@kopf.daemon(GROUP, VERSION, PAYOUT_PLURAL, cancellation_timeout=DAEMON_CANCELLATION_TIMEOUT)
async def run_payout(body: kopf.Body, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """One payout, from wherever it stands (its Secret and status say), to Confirmed or Failed."""

    def emit(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message)

    done = _payouts_done.setdefault(uid, asyncio.Event())
    done.clear()
    snapshot = {
        "metadata": dict(body["metadata"]),
        "spec": dict(body["spec"]),
        "status": dict(body.get("status") or {}),
    }
    try:
        try:
            payout = PayoutRun(context(memo), snapshot, emit)
        except ValidationError as exc:  # admitted by an older CRD, refused by this release's rules
            await _refuse_payout(context(memo), snapshot, exc, emit)
            return
        await payout.run()
    except PayoutGone:
        return
    finally:
        done.set()


async def _refuse_payout(
    ctx: Context, body: dict[str, Any], exc: ValidationError, emit: Callable[[str, str, str], None]
) -> None:
    meta = body["metadata"]
    message = invalid_spec_message(exc, "payout")
    record = PayoutSecret(ctx.kube, ctx.settings.operator_namespace, (meta["namespace"], meta["name"]), meta["uid"])
    await record.ensure()
    await record.record_outcome(PayoutPhase.FAILED, "InvalidSpec", message)  # it ended: later payouts go on
    status = payout_status.failed(
        EscrowPayoutStatus.model_validate(body.get("status") or {}), meta.get("generation"), "InvalidSpec", message
    )
    await _write_refusal(ctx, PAYOUT_PLURAL, meta, status.to_api(), message, emit)


@kopf.on.delete(GROUP, VERSION, PAYOUT_PLURAL, retries=5, backoff=5)
async def payout_deleted(
    body: kopf.Body, namespace: str | None, name: str, uid: str, memo: kopf.Memo, **_: Any
) -> None:
    """Once the payout's daemon has stopped (a call in flight finishes first): its wallet copies are
    deleted at once (they hold nothing the final wallets lack), then its record in the operator's
    namespace."""
    stopped = _payouts_done.get(uid)
    if stopped is not None and not stopped.is_set():
        try:
            await asyncio.wait_for(stopped.wait(), DAEMON_STOP_WAIT)
        except TimeoutError:
            raise kopf.TemporaryError("waiting for the payout's running step to finish", delay=5) from None
    _payouts_done.pop(uid, None)
    ctx, ns = context(memo), namespaced(namespace)
    record = PayoutSecret(ctx.kube, ctx.settings.operator_namespace, (ns, name), uid)
    if await record.load_if_present():
        escrow_uid, pool_ref = record.escrow()
        if escrow_uid and pool_ref:
            tag = f"_{payout_tag(uid)}_"
            try:
                await asyncio.wait_for(
                    delete_files(
                        ctx.pools.get(ns, pool_ref),
                        escrow_uid,
                        Priority.of(body.get("metadata") or {}),
                        f"{name}/delete",
                        lambda file: tag not in file,
                        what="payout copy",
                    ),
                    FILE_DELETION_WAIT,
                )
            except (TimeoutError, PoolUnusable):
                kopf.event(
                    body,
                    type="Warning",
                    reason="FilesNotDeleted",
                    message=f"no ready pod in pool {pool_ref}; the payout's wallet copies go with escrow {escrow_uid}",
                )
        await record.delete()
