"""One scheduler per WalletPool: hands each step exclusive use of one ready wallet-rpc pod.

A wallet-rpc process holds one wallet, so a step (one participant, one round) leases a whole pod
for its duration. Waiting steps are served in priority order (:class:`Priority`: steps before
funding scans, then the earliest-created object first, then first-come), and a pod freed or becoming ready goes to the first waiter at once: nothing here
waits on time. Membership follows the pod watch, so scaling the pool changes throughput at once.

Wallet affinity: a step may leave its participant's wallet open on its pod (:meth:`Lease.keep`).
The next step of that wallet gets that pod back (:attr:`Lease.warm`) and skips the copy and
``open_wallet``. While the holder's escrow is still in the round (:meth:`Scheduler.unreserve` ends
that), its pod is *reserved*: a step of a later escrow does not take it, just as it would not get
ahead of that escrow's next step in line. A step of the same or an earlier escrow takes a held pod
when no pod holding nothing is free (the latest escrow's wallet is closed first), so a hold never
delays a step that comes first in line, and every reservation ends with its escrow's round.

A pod that is deleted, or whose wallet-rpc process restarts or changes address while leased, is
*lost*: the lease's task is cancelled and the step raises :class:`PodLost`, to be run again on
another pod from its unchanged input. A pod that merely fails a readiness probe keeps its lease
(a long RPC can starve a probe) but gets no new step until it is ready again.

Credentials: every pod carries the uid of the pool Secret it was started with (an annotation of
the pool's pod template). Once the pool's current Secret is known (:meth:`Scheduler.set_secret_uid`),
a pod started with another Secret gets no step: its wallet-rpc would refuse the current login.
:meth:`Scheduler.stale_pods` names such pods, so the pool runtime can have them replaced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .pool_resources import SECRET_UID_ANNOTATION
from .pool_status import pod_problem

log = logging.getLogger(__name__)

#: How long a pod that failed a call is passed over unless the watch reports it ready anew.
QUARANTINE_SECONDS = 10.0


class Priority(NamedTuple):
    """The order waiters are served in, lowest first.

    Background work (the funding watch's scans, one per escrow per block) waits behind every step of
    a key exchange, a payout or a clean-up, whichever escrow it belongs to: a busy chain must never
    starve the work that moves money or files. Within a class, the earliest-created object goes first.
    """

    background: bool
    created: str
    uid: str

    @classmethod
    def of(cls, meta: Mapping[str, Any], *, background: bool = False) -> Priority:
        """The priority of the object with metadata ``meta``."""
        return cls(background, meta.get("creationTimestamp") or "", meta.get("uid") or "")


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
    secret_uid: str | None = None  # the pool Secret the pod was started with (None: not annotated)
    problem: str | None = None  # why its containers do not run (pool_status.pod_problem)

    @property
    def schedulable(self) -> bool:
        return self.ready and not self.terminating and bool(self.ip)

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> PodState:
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
            secret_uid=(meta.get("annotations") or {}).get(SECRET_UID_ANNOTATION),
            problem=pod_problem(pod),
        )


@dataclass(frozen=True)
class Held:
    """A wallet left open in a pod's wallet-rpc after a step: which one, under which work name."""

    wallet: str  # the key the steps of one participant's wallet lease with
    work: str  # the work wallet's file name, open in wallet-rpc
    priority: Any  # of the escrow it belongs to (the latest escrow's wallet is closed first)
    reserved: bool = True  # its escrow is still in the round: later escrows' steps keep off

    def blocks(self, priority: Any) -> bool:
        """Whether a step of this priority must leave this wallet open."""
        return self.reserved and self.priority < priority


@dataclass
class Lease:
    """Exclusive use of one pod for one step."""

    pod: PodState
    wallet: str | None = None
    priority: Any = None
    rpc: bool = True  # the step uses wallet-rpc (else it only touches files: what the pod holds stays)
    #: the pod holds this step's wallet open, left by the wallet's previous step
    warm: Held | None = None
    kept: Held | None = None
    task: asyncio.Task[object] | None = None  # the task holding the lease (its result is not ours)
    lost: bool = False
    failed: bool = False
    acquired_at: float = field(default_factory=time.monotonic)

    def mark_failed(self) -> None:
        """The pod did not answer: pass it over for a while unless the watch reports it ready anew."""
        self.failed = True

    def keep(self, work: str, reserved: bool = True) -> None:
        """The step leaves its wallet open (stored, its output published) under the name ``work``.

        ``reserved=False``: any step may take the pod (closing the wallet unsaved); for a wallet worth
        keeping warm that no step of its escrow waits for (the funding watch's)."""
        if self.wallet is None or not self.rpc:
            raise ValueError("only a wallet-rpc step of a named wallet can keep it open")
        self.kept = Held(self.wallet, work, self.priority, reserved)


@dataclass
class _Slot:
    state: PodState
    lease: Lease | None = None
    quarantined_until: float = 0.0
    held: Held | None = None  # the wallet open in this pod's wallet-rpc, if known


@dataclass(order=True)
class _Waiter:
    priority: Any
    seq: int
    future: asyncio.Future[Lease] = field(compare=False)
    wallet: str | None = field(compare=False, default=None)
    rpc: bool = field(compare=False, default=True)


class Scheduler:
    def __init__(self, name: str, on_change: Callable[[], None] | None = None) -> None:
        self.name = name
        self._slots: dict[str, _Slot] = {}
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._on_change = on_change or (lambda: None)
        self._timer: asyncio.TimerHandle | None = None
        #: (pod name, step label, start, end) of every finished lease, for overlap checks and metrics
        self.history: list[tuple[str, str, float, float]] = []
        self.keep_history = False
        #: The uid of the pool's current Secret, once known: pods started with another get no step.
        self.secret_uid: str | None = None

    # --- what the pool status shows ----------------------------------------------------------
    # Read by the metrics thread too: each count iterates a snapshot (an atomic copy under the GIL).
    @property
    def pods(self) -> int:
        return sum(1 for s in tuple(self._slots.values()) if not s.state.terminating)

    @property
    def ready(self) -> int:
        return sum(1 for s in tuple(self._slots.values()) if self._usable(s.state))

    @property
    def busy(self) -> int:
        return sum(1 for s in tuple(self._slots.values()) if s.lease is not None)

    @property
    def queued(self) -> int:
        return sum(1 for w in tuple(self._waiters) if not w.future.done())

    @property
    def held(self) -> int:
        """Pods holding a wallet open for its next step."""
        return sum(1 for s in tuple(self._slots.values()) if s.held is not None)

    def pod_states(self) -> list[PodState]:
        """The pods the scheduler knows, as last reported by the pod watch."""
        return [slot.state for slot in self._slots.values()]

    def any_ready_pod(self) -> PodState | None:
        """A ready pod for work that needs no exclusive wallet-rpc (file listing and deletion)."""
        for slot in self._slots.values():
            if self._usable(slot.state):
                return slot.state
        return None

    def _usable(self, state: PodState) -> bool:
        return state.schedulable and not self._stale(state)

    def _stale(self, state: PodState) -> bool:
        """Started with a pool Secret other than the current one (a pod without the annotation, of an
        earlier release, is taken at its word)."""
        return None not in (self.secret_uid, state.secret_uid) and state.secret_uid != self.secret_uid

    def stale_pods(self) -> list[PodState]:
        """Pods, not being deleted, that run with the credentials of a replaced pool Secret."""
        return [s.state for s in self._slots.values() if not s.state.terminating and self._stale(s.state)]

    def set_secret_uid(self, uid: str | None) -> None:
        """The pool's current Secret (its uid): pods started with another one get no new step, and a
        step on one is lost (it runs again on a current pod)."""
        if uid != self.secret_uid:
            self.secret_uid = uid
            for slot in self._slots.values():
                if self._stale(slot.state):
                    self._lose(slot, "it runs with the credentials of a replaced pool Secret")
            self._dispatch()
            self._on_change()

    def unreserve(self, wallets: set[str]) -> None:
        """The escrow of these wallets is between rounds or done: later escrows may close them."""
        for slot in self._slots.values():
            if slot.held is not None and slot.held.reserved and slot.held.wallet in wallets:
                slot.held = dataclasses.replace(slot.held, reserved=False)
        self._dispatch()

    # --- membership from the pod watch --------------------------------------------------------
    def update_pod(self, state: PodState) -> None:
        slot = self._slots.get(state.name)
        if slot is not None and slot.state.uid != state.uid:
            self._lose(slot, "replaced by a new pod")
            slot = None
        if slot is None:
            self._slots[state.name] = _Slot(state)
        else:
            if slot.state.incarnation != state.incarnation:
                slot.held = None  # a restarted wallet-rpc holds no wallet
                if slot.lease is not None:
                    self._lose(slot, "its containers restarted")
            if state.ready and (not slot.state.ready or slot.state.incarnation != state.incarnation):
                slot.quarantined_until = 0.0  # ready anew: give it work again
            slot.state = state
        self._dispatch()

    def remove_pod(self, name: str, uid: str | None = None) -> None:
        """The pod ``name`` is gone; with ``uid``, only if the scheduler still knows that pod under the
        name (a deletion reported after a new pod of the same name arrived leaves the new one)."""
        slot = self._slots.get(name)
        if slot is None or (uid is not None and slot.state.uid != uid):
            return
        del self._slots[name]
        self._lose(slot, "deleted")
        self._dispatch()

    def _lose(self, slot: _Slot, why: str) -> None:
        lease = slot.lease
        if lease is None or lease.lost:
            return
        lease.lost = True
        log.warning(
            "pool %s: pod %s lost mid-step (%s); the step runs again elsewhere", self.name, slot.state.name, why
        )
        if lease.task is not None and not lease.task.done():
            lease.task.cancel(msg="pod lost")

    # --- leasing ------------------------------------------------------------------------------
    @asynccontextmanager
    async def lease(
        self, priority: Any, label: str = "", wallet: str | None = None, rpc: bool = True
    ) -> AsyncIterator[Lease]:
        """Wait for, then hold, exclusive use of a ready pod.

        ``wallet`` names the participant wallet the step works on (for affinity); ``rpc=False`` is
        for work that only touches files and leaves whatever wallet-rpc holds open alone.
        Raises :class:`PodLost` (instead of CancelledError) when the pod is lost during the body.
        """
        future: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, _Waiter(priority, next(self._seq), future, wallet, rpc))
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
            if lease.rpc:
                slot.held = None if lease.failed or lease.lost else lease.kept
            if lease.failed:
                slot.quarantined_until = time.monotonic() + QUARANTINE_SECONDS
                self._arm_timer(QUARANTINE_SECONDS)
        self._dispatch()
        self._on_change()

    def _dispatch(self) -> None:
        now = time.monotonic()
        free = [
            s for s in self._slots.values() if s.lease is None and self._usable(s.state) and s.quarantined_until <= now
        ]
        if self._waiters and free:
            # A step whose wallet a free pod holds open takes that pod, whatever its place in line.
            holders = {s.held.wallet: s for s in free if s.held is not None}
            if holders:
                for waiter in self._waiters:
                    slot = holders.pop(waiter.wallet, None) if waiter.wallet and not waiter.future.done() else None
                    if slot is not None:
                        free.remove(slot)
                        self._assign(slot, waiter)
        # The rest in priority order: pods holding nothing first, then the latest escrow's wallet.
        # File-only work disturbs no open wallet: it takes the pod a wallet-rpc step would want last.
        held = sorted((s for s in free if s.held is not None), key=lambda s: s.held.priority, reverse=True)  # type: ignore[union-attr]
        free = [s for s in free if s.held is None] + held
        waiting: list[_Waiter] = []
        while self._waiters and free:
            waiter = heapq.heappop(self._waiters)
            if waiter.future.done():
                continue
            if not waiter.rpc:
                self._assign(free.pop(), waiter)
                continue
            slot = next((s for s in free if s.held is None or not s.held.blocks(waiter.priority)), None)
            if slot is None:  # every free pod is reserved for an earlier escrow's next step
                waiting.append(waiter)
                continue
            free.remove(slot)
            self._assign(slot, waiter)
        for waiter in waiting:
            heapq.heappush(self._waiters, waiter)
        while self._waiters and self._waiters[0].future.done():
            heapq.heappop(self._waiters)
        if self._waiters:
            pending = [
                s.quarantined_until for s in self._slots.values() if s.lease is None and s.quarantined_until > now
            ]
            if pending:
                self._arm_timer(min(pending) - now)

    def _assign(self, slot: _Slot, waiter: _Waiter) -> None:
        warm = (
            slot.held
            if waiter.wallet is not None and slot.held is not None and slot.held.wallet == waiter.wallet
            else None
        )
        lease = Lease(
            slot.state,
            wallet=waiter.wallet,
            priority=waiter.priority,
            rpc=waiter.rpc,
            warm=warm if waiter.rpc else None,
        )
        if waiter.rpc:
            slot.held = None  # the step owns wallet-rpc now; what it leaves open is set on release
            if waiter.wallet is not None:
                for other in self._slots.values():  # an older open copy of this wallet is stale from now on
                    if other.held is not None and other.held.wallet == waiter.wallet:
                        other.held = None
        slot.lease = lease
        waiter.future.set_result(lease)

    def _arm_timer(self, delay: float) -> None:
        """Re-dispatch when a quarantine ends (a retry backoff, not a wait for another party)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(max(0.0, delay), self._dispatch)


def _only_ours(task: asyncio.Task[object]) -> bool:
    """True when the only pending cancellation is the scheduler's."""
    return task.cancelling() == 1
