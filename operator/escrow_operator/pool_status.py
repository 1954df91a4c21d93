"""A WalletPool's status, computed in one place from what the operator knows of the pool (pure).

Conditions follow the kstatus conventions (``docs/install.md``, GitOps):

* ``Reconciled``: the workload (StatefulSet, Service, Secret, PDB, NetworkPolicy) was applied for the
  current generation, or why not;
* ``Stalled``: True when the spec is refused (invalid, not allowed, refused by the apiserver): the pool
  cannot progress until the spec changes;
* ``Ready``: True when the pods that exist are the pods asked for and all of them are ready (a pool
  asked to run 0 pods is ready at 0);
* ``Reconciling``: True while the pool scales or its pods are not ready yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .api import READY, RECONCILING, STALLED, Condition, WalletPoolStatus, set_condition

RECONCILED = "Reconciled"


@dataclass(frozen=True)
class Applied:
    """The outcome of the last reconcile of the pool's spec."""

    ok: bool
    reason: str
    message: str
    generation: int | None
    replicas: int  # spec.replicas of that generation


@dataclass(frozen=True)
class Pods:
    """The pool's pods as the scheduler sees them."""

    existing: int
    ready: int
    busy: int = 0
    queued: int = 0


def compute(
    applied: Applied, pods: Pods, selector: str, conditions: list[Condition], now: datetime | None = None
) -> WalletPoolStatus:
    """The whole status of a pool: counts for the scale subresource and the four conditions."""
    conditions = [c.model_copy() for c in conditions if c.type != "Progressing"]
    gen = applied.generation
    status = WalletPoolStatus(
        replicas=pods.existing,
        ready_replicas=pods.ready,
        selector=selector,
        busy_pods=pods.busy,
        queued_steps=pods.queued,
        observed_generation=gen,
    )
    if not applied.ok:
        set_condition(conditions, RECONCILED, False, applied.reason, applied.message, gen, now)
        set_condition(conditions, STALLED, True, applied.reason, applied.message, gen, now)
        set_condition(conditions, READY, False, applied.reason, applied.message, gen, now)
        set_condition(
            conditions,
            RECONCILING,
            False,
            applied.reason,
            "the spec must change before the pool can progress",
            gen,
            now,
        )
        status.conditions = conditions
        return status
    set_condition(conditions, RECONCILED, True, applied.reason, applied.message, gen, now)
    set_condition(conditions, STALLED, False, "AsExpected", "", gen, now)
    want = applied.replicas
    counts = f"{pods.ready} of {want} pods ready, {pods.existing} exist"
    if pods.existing < want:
        reason = "ScalingUp"
    elif pods.existing > want:
        reason = "ScalingDown"
    elif pods.ready < want:
        reason = "PodsNotReady"
    else:
        reason = ""
    if reason:
        set_condition(conditions, READY, False, reason, counts, gen, now)
        set_condition(conditions, RECONCILING, True, reason, counts, gen, now)
    else:
        set_condition(conditions, READY, True, "PodsReady", counts, gen, now)
        set_condition(conditions, RECONCILING, False, "Complete", counts, gen, now)
    status.conditions = conditions
    return status


def status_patch(status: WalletPoolStatus) -> dict[str, Any]:
    """The merge patch of a computed status (every field written, so the patch is the status)."""
    body = status.to_api()
    body.setdefault("conditions", [])
    return body
