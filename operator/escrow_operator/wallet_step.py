"""One step on one wallet, on one leased pool pod: the reusable unit of every wallet operation.

A step (docs/design.md, Steps and files) is, in order, with a named fault point at each arrow:

1. ``step.start`` -> its output exists: done before (the caller's ``on_done`` checks what it recorded);
2. the pod holds the wallet open from the participant's previous step (warm): use it; otherwise drop
   whatever is open unsaved (``drop_stale``), copy the input to a fresh work name (``step.after_copy``)
   and open the copy; a step without an input creates its wallet in the operation;
3. the operation runs on the open wallet (the key-exchange round of :mod:`escrow_operator.multisig`;
   a payout's signing step later);
4. its result is recorded (``step.after_record``) by the caller, before anything is published;
5. publish (``step.before_publish`` / ``step.after_publish``): a step that keeps its wallet open stores
   it and publishes a copy, the wallet stays warm on the pod; otherwise the wallet is closed (stored)
   and the work copy itself becomes the output. Publishing never replaces an existing output.
   A step without an output (a payout's build, sign and submit: what it made is its recorded result)
   closes the wallet unsaved and deletes the work copy; the caller's record says whether it ran.

The input is never opened or modified, so a crash anywhere leaves the step to run again from it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import SecretStr

from . import metrics
from .context import Context
from .faults import Point, rpc_point
from .scheduler import Lease
from .walletfs.client import WalletfsClient, WalletfsError, WalletfsUnavailable
from .walletrpc import WalletRpc, WalletRpcError, WalletRpcUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class StepCalls:
    """The wallet-rpc and walletfs calls of one step: timed, with fault points, finished before a stop.

    A call in flight when the step is cancelled for a stop runs to its end (bounded by the client's
    timeout) before the cancellation goes on, so nothing is written after the step's owner returned.
    A call on a lost pod is abandoned at once (the step runs again elsewhere).
    """

    def __init__(self, ctx: Context, step: int, lease: Lease, label: str = "") -> None:
        self.ctx, self.step, self.lease, self.label = ctx, step, lease, label
        self.rpc_seconds = 0.0
        self.fs_seconds = 0.0

    async def check(self, point: str) -> None:
        await self.ctx.faults.check(point, self.step, self.lease.pod.name, self.label)

    async def rpc(self, method: str, call: Awaitable[T], point: str | None = None) -> T:
        await self.check(rpc_point("before", point or method))
        started = time.monotonic()
        try:
            result = await self._finish(call)
        finally:
            elapsed = time.monotonic() - started
            self.rpc_seconds += elapsed
            metrics.RPC_SECONDS.labels(method=method).observe(elapsed)
        await self.check(rpc_point("after", point or method))
        return result

    async def fs(self, call: Awaitable[T]) -> T:
        started = time.monotonic()
        try:
            return await self._finish(call)
        finally:
            self.fs_seconds += time.monotonic() - started

    async def _finish(self, call: Awaitable[T]) -> T:
        task = asyncio.ensure_future(call)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done() and not self.lease.lost:
                try:
                    await task
                except BaseException:  # noqa: BLE001 - the stop goes on whatever the call did
                    pass
            elif not task.done():
                task.cancel()
            raise


@dataclass(frozen=True)
class Plan:
    """What one step works on."""

    step: int
    password: SecretStr
    input: str | None  # the published wallet to copy; None: the operation creates the wallet
    output: str | None  # the wallet the step publishes; None: nothing (the recorded result is all)
    work: str  # a fresh work name (used unless the pod holds the wallet warm)
    keep_open: bool  # store and publish a copy; the wallet stays open for the participant's next step


#: The operation on the open wallet: (hook, wallet-rpc, work name) -> its result.
Operation = Callable[[StepCalls, WalletRpc, str], Awaitable[R]]


@dataclass(frozen=True)
class Outcome(Generic[R]):
    result: R | None  # None when the output existed (done before)
    warm: bool
    published: bool  # this run published the output (False: it existed, or another publish won)


async def _discard(calls: StepCalls, rpc: WalletRpc, fs: WalletfsClient, work: str) -> None:
    """A step that failed closes its work wallet without storing it, then deletes the copy: wallet-rpc
    would otherwise save it again when it stops, after the copy was deleted (best effort: the next
    step on the pod closes whatever is open anyway)."""
    try:
        await calls.rpc("close_wallet", rpc.close_wallet(autosave=False), point="drop_stale")
        await calls.fs(fs.delete(work))
    except (WalletRpcError, WalletfsError, WalletRpcUnavailable, WalletfsUnavailable) as exc:
        log.warning("a failed step's work copy %s was not discarded: %s", work, exc)


async def run(
    calls: StepCalls,
    rpc: WalletRpc,
    fs: WalletfsClient,
    plan: Plan,
    operation: Operation[R],
    record: Callable[[R], Awaitable[None]],
    on_done: Callable[[], None] = lambda: None,
) -> Outcome[R]:
    """Run one step on the leased pod of ``calls``; see the module docstring for the order."""
    lease = calls.lease
    await calls.check(Point.STEP_START)
    if plan.output is not None and (await calls.fs(fs.stat(plan.output))).exists:
        on_done()
        return Outcome(None, warm=False, published=False)
    started = time.monotonic()
    warm = lease.warm
    if warm is None:
        await calls.rpc("close_wallet", rpc.close_wallet(autosave=False), point="drop_stale")
    work = warm.work if warm is not None else plan.work
    if plan.input is not None and warm is None:
        await calls.fs(fs.copy(plan.input, work))
        await calls.check(Point.AFTER_COPY)
        await calls.rpc("open_wallet", rpc.open_wallet(work, plan.password))
    try:
        result = await operation(calls, rpc, work)
        await record(result)
    except (WalletRpcUnavailable, WalletfsUnavailable):
        raise  # the pod is lost: nothing of it to close
    except Exception:
        if warm is None:
            await _discard(calls, rpc, fs, work)
        raise
    await calls.check(Point.AFTER_RECORD)
    if plan.output is None:
        await calls.rpc("close_wallet", rpc.close_wallet(autosave=False), point="drop_stale")
        if warm is None:
            await calls.fs(fs.delete(work))
        metrics.STEP_SECONDS.observe(time.monotonic() - started)
        return Outcome(result, warm=warm is not None, published=False)
    if plan.keep_open:
        await calls.rpc("store", rpc.store())
        await calls.check(Point.BEFORE_PUBLISH)
        published = await calls.fs(fs.publish(work, plan.output, keep_source=True))
        await calls.check(Point.AFTER_PUBLISH)
        if published.already_published:
            await calls.rpc("close_wallet", rpc.close_wallet(autosave=False), point="drop_stale")
            await calls.fs(fs.delete(work))
        else:
            lease.keep(work)
    else:
        await calls.rpc("close_wallet", rpc.close_wallet(autosave=True))
        await calls.check(Point.BEFORE_PUBLISH)
        published = await calls.fs(fs.publish(work, plan.output))
        await calls.check(Point.AFTER_PUBLISH)
        if published.already_published:
            await calls.fs(fs.delete(work))
    metrics.STEP_SECONDS.observe(time.monotonic() - started)
    return Outcome(result, warm=warm is not None, published=not published.already_published)
