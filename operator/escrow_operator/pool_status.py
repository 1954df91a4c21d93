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

import re
from collections import Counter
from collections.abc import Mapping
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
    #: why pods do not run, one entry per pod that has a problem (:func:`pod_problem`)
    problems: tuple[str, ...] = ()


#: Waiting reasons of a container that is starting as it should: nothing to tell a user.
_STARTING = frozenset({"ContainerCreating", "PodInitializing", "Restarting"})
#: At most this many different problems are named in a condition message.
_MAX_PROBLEMS = 3
_MAX_PROBLEM_CHARS = 400
#: A line of a termination message that says what went wrong.
_TELLING = re.compile(
    r"error|fail|fatal|panic|exception|unrecogni[sz]ed|invalid|cannot|can't|denied|refused|not found|no such",
    re.IGNORECASE,
)
#: A program that refuses its command line prints its usage after the reason; the kubelet keeps the
#: last 2 KiB of output, so the usage may be all a termination message holds (wallet-rpc's is 8 KiB).
_USAGE = re.compile(r"^\s*(General|Wallet|Daemon)?\s*options:\s*$|^\s*--[a-z-]+ arg\b", re.IGNORECASE | re.MULTILINE)


_OPTION_LINE = re.compile(r"^\s+--|^\s{8,}")


def telling_line(message: str) -> str:
    """What a termination message says went wrong, in one line: the last line that reads like an
    error, else that the program printed its usage (it refused its command line), else its last line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    # Lines of a usage listing (an option, or its description wrapped onto the next lines) describe
    # options, such as "Do not ban hosts on RPC errors": they tell nothing about this exit.
    said = [line.strip() for line in message.splitlines() if line.strip() and not _OPTION_LINE.match(line)]
    for line in reversed(said):
        if _TELLING.search(line):
            return line
    if _USAGE.search(message):
        return "it printed its usage: it refused its command line (an option this version does not know?)"
    return lines[-1] if lines else ""


def pod_problem(pod: Mapping[str, Any]) -> str | None:
    """Why a pod's containers do not run, from its container statuses, in words for a user (None:
    nothing is wrong): the waiting reason and its message (an image that is not there), and for a
    container that keeps exiting its last exit code and the last line of its output, which the pool's
    containers leave as their termination message (``FallbackToLogsOnError``)."""
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if not reason or reason in _STARTING:
            continue
        name = container.get("name") or "a container"
        last = (container.get("lastState") or {}).get("terminated") or {}
        if last:
            line = telling_line(str(last.get("message") or ""))
            said = f": {line}" if line else ""
            problem = f"{name} exits with code {last.get('exitCode')}{said} ({reason})"
        else:
            message = str(waiting.get("message") or "")
            problem = f"{name}: {reason}" + (f": {message}" if message else "")
        return problem[:_MAX_PROBLEM_CHARS]
    return None


def problems_message(problems: tuple[str, ...]) -> str:
    """The pods' problems in one line: each different one once, with how many pods have it."""
    counted = Counter(problems).most_common()
    said = [f"{n} pods: {p}" if n > 1 else f"1 pod: {p}" for p, n in counted[:_MAX_PROBLEMS]]
    if len(counted) > _MAX_PROBLEMS:
        said.append(f"and {len(counted) - _MAX_PROBLEMS} more")
    return "; ".join(said)


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
        if pods.problems:
            counts += f"; {problems_message(pods.problems)}"
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
