"""Reconciling a WalletPool: check what it may run, then apply its workload (docs/design.md, Pools).

A WalletPool's rights stop at wallet pools. Whoever may create one could otherwise run any image
with the pool's Secret and any claim of the namespace mounted, so before anything is applied:

* every image the pool runs (``spec.image``, ``spec.operatorImage``) must be one the operator's
  configuration allows (``ESCROW_ALLOWED_IMAGES``; the chart's ``allowedImages`` value);
* the pool's claim (``storage.claimName``, or the ``<pool>-wallets`` the operator makes for
  ``storage.size``) must carry the label ``xmrescrow.dev/pool=<pool>`` if it exists (the operator sets
  it on the claims it makes; for any other claim, someone who may edit claims does) and no other
  WalletPool of the namespace may use it (a pool whose spec was refused uses none). A claim the
  operator was about to make that someone else made first (a 409) is checked the same way.

A refused spec ends in ``Stalled=True`` with the reason, an Event, and no workload created.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from .api import GROUP, VERSION, WALLETPOOL_PLURAL, WalletPoolSpec, WalletPoolStatus
from .context import Context
from .kube import api_refusal, json_object, metadata
from .pool_resources import claim, claim_name, disruption_budget, network_policy, service, statefulset
from .pool_secret import PoolSecretBusy, PoolSecretInvalid, ensure
from .pool_status import Applied
from .settings import POOL_LABEL

log = logging.getLogger(__name__)


class PoolRefused(Exception):
    """The spec cannot be applied as it is; ``reason`` is the condition reason.

    ``recheck``: what is wrong may be mended without a change to the pool (a claim labelled or
    created by someone else), so the reconcile runs again after :data:`RECHECK_SECONDS`.
    """

    def __init__(self, reason: str, message: str, recheck: bool = False) -> None:
        super().__init__(message)
        self.reason, self.message, self.recheck = reason, message, recheck
        self.new = True  # not the refusal already reported for this generation


#: How often a pool refused for its claim checks the claim again.
RECHECK_SECONDS = 10.0


class PoolRetry(Exception):
    """Something the pool depends on is changing (an old Secret going away): reconcile again soon."""


def check_images(ctx: Context, spec: WalletPoolSpec) -> None:
    for field, image in (("image", spec.image), ("operatorImage", spec.operator_image)):
        if not ctx.settings.image_allowed(image):
            raise PoolRefused(
                "ImageNotAllowed",
                f"spec.{field} {image!r} is not an image this operator allows WalletPools to run; use one of "
                f"{ctx.settings.allowed_images!r}, or ask the operator's administrator to allow it (allowedImages)",
            )


async def check_claim(ctx: Context, namespace: str, pool: str, spec: WalletPoolSpec) -> None:
    """The pool's claim, if it exists, must be labelled for this pool and used by no other WalletPool."""
    wanted = claim_name(pool, spec)
    own = spec.storage.claim_name is None  # the operator makes it (storage.size)
    try:
        pvc = await ctx.kube.call(ctx.kube.core.read_namespaced_persistent_volume_claim, wanted, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        if own:
            pvc = None  # made by apply_workload, labelled for this pool
        else:
            raise PoolRefused(
                "ClaimNotFound",
                f"storage.claimName {wanted!r} does not exist in namespace {namespace!r}; create it, then "
                f"{_label_hint(wanted, pool, namespace)}",
                recheck=True,
            ) from None
    if pvc is not None:
        check_label(pvc, wanted, pool, namespace, own)
    listing = json_object(
        await ctx.kube.call(ctx.kube.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, WALLETPOOL_PLURAL)
    )
    for other in listing.get("items") or []:
        name = other["metadata"]["name"]
        if name == pool or other["metadata"].get("deletionTimestamp"):
            continue
        if ctx.pools.get(namespace, name).refused:
            continue  # its spec was refused: it runs nothing and uses no claim
        try:
            other_spec = WalletPoolSpec.model_validate(other.get("spec") or {})
        except ValidationError:
            continue
        if claim_name(name, other_spec) == wanted:
            raise PoolRefused(
                "ClaimInUse",
                f"claim {wanted!r} is already used by WalletPool {name!r}; a claim serves one pool",
                recheck=True,
            )


def _label_hint(claim: str, pool: str, namespace: str) -> str:
    return f"kubectl label pvc {claim} {POOL_LABEL}={pool} -n {namespace}"


def check_label(pvc: Any, wanted: str, pool: str, namespace: str, own: bool) -> None:
    """A claim serves a pool only when labelled for it."""
    if (metadata(pvc).labels or {}).get(POOL_LABEL) == pool:
        return
    if own:
        message = (
            f"claim {wanted!r}, which this pool would make for storage.size, already exists and is not labelled "
            f"for this pool (the operator labels the claims it makes): give the pool another name, or name a claim "
            f"in storage.claimName; if that claim is meant for it, someone who may edit claims runs: "
            f"{_label_hint(wanted, pool, namespace)}"
        )
    else:
        message = (
            f"claim {wanted!r} is not labelled for this pool; someone who may edit claims runs: "
            f"{_label_hint(wanted, pool, namespace)}"
        )
    raise PoolRefused("ClaimNotAllowed", message, recheck=True)


async def apply_workload(
    ctx: Context, obj: dict[str, Any], spec: WalletPoolSpec, secret_uid: str | None = None
) -> None:
    namespace = obj["metadata"]["namespace"]
    pvc = claim(obj, spec)
    if pvc is not None:
        try:
            await ctx.kube.call(ctx.kube.core.create_namespaced_persistent_volume_claim, namespace, pvc)
        except ApiException as exc:
            if exc.status != 409:
                raise
            # Someone made a claim of that name since the check: it serves the pool only if labelled for it.
            name = pvc["metadata"]["name"]
            found = await ctx.kube.call(ctx.kube.core.read_namespaced_persistent_volume_claim, name, namespace)
            check_label(found, name, obj["metadata"]["name"], namespace, own=True)
    uid = obj["metadata"]["uid"]
    for manifest in (
        statefulset(obj, spec, secret_uid),
        service(obj),
        disruption_budget(obj),
        network_policy(obj, ctx.settings.operator_namespace),
    ):
        applied = await ctx.kube.apply(manifest)
        owners = [o.uid for o in (getattr(applied.metadata, "owner_references", None) or [])]
        if any(owner != uid for owner in owners):
            # An earlier WalletPool of this name owned it and the garbage collector may still delete it:
            # reconcile again shortly, so whatever it deletes is created anew.
            raise PoolRetry(
                f"{manifest['kind']} {manifest['metadata']['name']} still carries an earlier WalletPool as owner"
            )


async def reconcile(ctx: Context, body: dict[str, Any]) -> Applied:
    """Check and apply one WalletPool; record the outcome on its runtime (whose writer publishes it).

    Raises :class:`PoolRefused` after recording a refusal and :class:`PoolRetry` when it must run again.
    """
    meta = body["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], meta.get("generation")
    pool = ctx.pools.get(namespace, name)
    pool.adopt(meta.get("uid"))
    status = WalletPoolStatus.model_validate(dict(body.get("status") or {}))
    replicas = int((body.get("spec") or {}).get("replicas") or 0)
    try:
        try:
            spec = WalletPoolSpec.model_validate(dict(body.get("spec") or {}))
        except ValidationError as exc:
            raise PoolRefused("InvalidSpec", f"invalid spec: {'; '.join(e['msg'] for e in exc.errors())}") from None
        replicas = spec.replicas
        pool.set_daemon(None if spec.offline else spec.daemon, spec.network.value)
        ctx.chains.configure((namespace, name), pool.daemon, spec.daemon_zmq)
        try:
            check_images(ctx, spec)
            async with ctx.pools.claims(namespace):
                await check_claim(ctx, namespace, name, spec)
                pool.refused = False  # from now on it counts as its claim's user
        except PoolRefused:
            async with ctx.pools.claims(namespace):
                pool.refused = True
            raise
        obj = {"metadata": dict(meta)}
        try:
            secret_uid = await ensure(ctx.kube, obj)
        except PoolSecretInvalid as exc:
            raise PoolRefused("PoolSecretInvalid", f"Secret {name}-rpc: {exc}") from None
        except PoolSecretBusy as exc:
            raise PoolRetry(str(exc)) from None
        pool.secret_written(secret_uid)
        try:
            await apply_workload(ctx, obj, spec, secret_uid)
        except ApiException as exc:
            if exc.status in (400, 403, 422) and "NamespaceTerminating" not in (exc.body or ""):
                raise PoolRefused("Refused", f"the apiserver refused the pool's workload: {api_refusal(exc)}") from None
            raise
        pool.workload_applied(secret_uid)
    except PoolRefused as refused:
        previous = pool.applied
        refused.new = (
            previous is None or previous.ok or previous.reason != refused.reason or previous.generation != generation
        )
        applied = Applied(False, refused.reason, refused.message[:1000], generation, replicas)
        pool.set_applied(applied, list(status.conditions))
        raise
    applied = Applied(
        True, "Applied", "StatefulSet, Service, Secret, PDB and NetworkPolicy applied", generation, replicas
    )
    pool.set_applied(applied, list(status.conditions))
    pool.exists.set()
    return applied
