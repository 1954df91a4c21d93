"""One scheduler per WalletPool: hands each step exclusive use of one ready wallet-rpc pod.

A wallet-rpc process holds one wallet, so a step (one participant, one round) leases a whole pod
for its duration. Waiting steps are served in priority order (earliest-created escrow first, then
first-come), and a pod freed or becoming ready goes to the first waiter at once: nothing here
waits on time. Membership follows the pod watch, so scaling the pool changes throughput at once.

A pod that is deleted, or whose wallet-rpc process restarts or changes address while leased, is
*lost*: the lease's task is cancelled and the step raises :class:`PodLost`, to be run again on
another pod from its unchanged input. A pod that merely fails a readiness probe keeps its lease
(a long RPC can starve a probe) but gets no new step until it is ready again.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: How long a pod that failed a call is passed over unless the watch reports it ready anew.
QUARANTINE_SECONDS = 10.0


class PodLost(Exception):
    """The leased pod went away (deleted, restarted, re-addressed) while the step ran."""


@dataclass(frozen=True)
class PodState:
    """What the scheduler needs of a pod, from the pod watch."""

    name: str
    uid: str
    ip: str | None
    ready: bool
    terminating: bool
    incarnation: str  # changes when the wallet-rpc process restarts (restart counts, container ids)

    @property
    def schedulable(self) -> bool:
        return self.ready and not self.terminating and bool(self.ip)

    @classmethod
    def from_pod(cls, pod: dict[str, Any]) -> "PodState":
        meta, status = pod.get("metadata", {}), pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        containers = status.get("containerStatuses") or []
        incarnation = ",".join(
            f"{c.get('name')}:{c.get('restartCount', 0)}:{c.get('containerID') or ''}" for c in containers
        )
        return cls(
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            ip=status.get("podIP"),
            ready=ready,
            terminating=bool(meta.get("deletionTimestamp")),
            incarnation=f"{status.get('podIP')}/{incarnation}",
        )


@dataclass
class Lease:
    """Exclusive use of one pod for one step."""

    pod: PodState
    task: asyncio.Task | None = None
    lost: bool = False
    failed: bool = False
    acquired_at: float = field(default_factory=time.monotonic)

    def mark_failed(self) -> None:
        """The pod did not answer: pass it over for a while unless the watch reports it ready anew."""
        self.failed = True


@dataclass
class _Slot:
    state: PodState
    lease: Lease | None = None
    quarantined_until: float = 0.0


class Scheduler:
    def __init__(self, name: str, on_change: Callable[[], None] | None = None) -> None:
        self.name = name
        self._slots: dict[str, _Slot] = {}
        self._waiters: list[tuple[Any, int, asyncio.Future[Lease]]] = []
        self._seq = itertools.count()
        self._on_change = on_change or (lambda: None)
        self._timer: asyncio.TimerHandle | None = None
        #: (pod name, step label, start, end) of every finished lease, for overlap checks and metrics
        self.history: list[tuple[str, str, float, float]] = []
        self.keep_history = False

    # --- what the pool status shows ----------------------------------------------------------
    @property
    def pods(self) -> int:
        return sum(1 for s in self._slots.values() if not s.state.terminating)

    @property
    def ready(self) -> int:
        return sum(1 for s in self._slots.values() if s.state.schedulable)

    @property
    def busy(self) -> int:
        return sum(1 for s in self._slots.values() if s.lease is not None)

    @property
    def queued(self) -> int:
        return sum(1 for _, _, f in self._waiters if not f.done())

    def any_ready_pod(self) -> PodState | None:
        """A ready pod for work that needs no exclusive wallet-rpc (file listing and deletion)."""
        for slot in self._slots.values():
            if slot.state.schedulable:
                return slot.state
        return None

    # --- membership from the pod watch --------------------------------------------------------
    def update_pod(self, state: PodState) -> None:
        slot = self._slots.get(state.name)
        if slot is not None and slot.state.uid != state.uid:
            self._lose(slot, "replaced by a new pod")
            slot = None
        if slot is None:
            self._slots[state.name] = _Slot(state)
        else:
            if slot.lease is not None and slot.state.incarnation != state.incarnation:
                self._lose(slot, "its containers restarted")
            if state.ready and (not slot.state.ready or slot.state.incarnation != state.incarnation):
                slot.quarantined_until = 0.0  # ready anew: give it work again
            slot.state = state
        self._dispatch()

    def remove_pod(self, name: str) -> None:
        slot = self._slots.pop(name, None)
        if slot is not None:
            self._lose(slot, "deleted")
        self._dispatch()

    def _lose(self, slot: _Slot, why: str) -> None:
        lease = slot.lease
        if lease is None or lease.lost:
            return
        lease.lost = True
        log.warning("pool %s: pod %s lost mid-step (%s); the step runs again elsewhere", self.name, slot.state.name, why)
        if lease.task is not None and not lease.task.done():
            lease.task.cancel(msg="pod lost")

    # --- leasing ------------------------------------------------------------------------------
    @asynccontextmanager
    async def lease(self, priority: Any, label: str = "") -> AsyncIterator[Lease]:
        """Wait for, then hold, exclusive use of a ready pod.

        Raises :class:`PodLost` (instead of CancelledError) when the pod is lost during the body.
        """
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), future))
        self._dispatch()
        self._on_change()
        try:
            lease = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(future.result())
            self._on_change()
            raise
        task = asyncio.current_task()
        lease.task = task
        try:
            yield lease
        except asyncio.CancelledError:
            if lease.lost and task is not None and task.cancelling() and _only_ours(task):
                task.uncancel()
                raise PodLost(f"pod {lease.pod.name} was lost during the step") from None
            raise
        finally:
            if self.keep_history:
                self.history.append((lease.pod.name, label, lease.acquired_at, time.monotonic()))
            self._release(lease)

    def _release(self, lease: Lease) -> None:
        slot = self._slots.get(lease.pod.name)
        if slot is not None and slot.lease is lease:
            slot.lease = None
            if lease.failed:
                slot.quarantined_until = time.monotonic() + QUARANTINE_SECONDS
                self._arm_timer(QUARANTINE_SECONDS)
        self._dispatch()
        self._on_change()

    def _dispatch(self) -> None:
        now = time.monotonic()
        free = [
            s for s in self._slots.values() if s.lease is None and s.state.schedulable and s.quarantined_until <= now
        ]
        while self._waiters and free:
            _, _, future = heapq.heappop(self._waiters)
            if future.done():
                continue
            slot = free.pop(0)
            slot.lease = Lease(slot.state)
            future.set_result(slot.lease)
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
        if self._waiters and not free:
            pending = [s.quarantined_until for s in self._slots.values() if s.lease is None and s.quarantined_until > now]
            if pending:
                self._arm_timer(min(pending) - now)

    def _arm_timer(self, delay: float) -> None:
        """Re-dispatch when a quarantine ends (a retry backoff, not a wait for another party)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(max(0.0, delay), self._dispatch)


def _only_ours(task: asyncio.Task) -> bool:
    """True when the only pending cancellation is the scheduler's."""
    return task.cancelling() == 1
