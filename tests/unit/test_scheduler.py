"""The pool scheduler's logic, with pods described directly (no cluster needed)."""

from __future__ import annotations

import asyncio

import pytest

from escrow_operator.scheduler import PodLost, PodState, Scheduler


def pod(name: str, ready: bool = True, terminating: bool = False, incarnation: str = "a", uid: str | None = None) -> PodState:
    return PodState(name, uid or f"uid-{name}", f"127.0.1.{name[-1]}", ready, terminating, incarnation)


async def test_waiters_are_served_in_priority_order_and_no_pod_idles() -> None:
    s = Scheduler("p")
    s.update_pod(pod("pod0"))
    order: list[str] = []
    release = {k: asyncio.Event() for k in "abcd"}

    async def step(key: str, priority: int) -> None:
        async with s.lease(priority) as lease:
            order.append(f"{key}@{lease.pod.name}")
            await release[key].wait()

    tasks = [asyncio.create_task(step(k, p)) for k, p in [("a", 5), ("b", 9), ("c", 1), ("d", 3)]]
    await asyncio.sleep(0)  # let every task enqueue (yields to the loop; no timing involved)
    assert order == ["a@pod0"]  # the first to ask got the only pod
    assert s.queued == 3 and s.busy == 1
    s.update_pod(pod("pod1"))  # a new pod takes the best waiter at once
    await asyncio.sleep(0)
    assert order == ["a@pod0", "c@pod1"]
    release["a"].set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order[-1] == "d@pod0"
    for e in release.values():
        e.set()
    await asyncio.gather(*tasks)
    assert order[-1].startswith("b@") and s.busy == 0 and s.queued == 0


async def test_a_pod_lost_mid_step_raises_podlost_and_frees_nothing_twice() -> None:
    s = Scheduler("p")
    s.update_pod(pod("pod0"))
    started = asyncio.Event()

    async def step() -> None:
        async with s.lease(0):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(step())
    await started.wait()
    s.remove_pod("pod0")
    with pytest.raises(PodLost):
        await task
    assert s.busy == 0 and s.pods == 0


async def test_a_restarted_process_loses_the_lease_but_a_failed_probe_does_not() -> None:
    s = Scheduler("p")
    s.update_pod(pod("pod0"))
    started = asyncio.Event()
    finish = asyncio.Event()

    async def step() -> str:
        async with s.lease(0) as lease:
            started.set()
            await finish.wait()
            return lease.pod.name

    task = asyncio.create_task(step())
    await started.wait()
    s.update_pod(pod("pod0", ready=False))  # readiness probe failed: the lease stays
    await asyncio.sleep(0)
    assert not task.done()
    finish.set()
    assert await task == "pod0"

    started.clear()
    finish.clear()
    s.update_pod(pod("pod0", ready=True))
    task = asyncio.create_task(step())
    await started.wait()
    s.update_pod(pod("pod0", ready=True, incarnation="b"))  # container restarted
    with pytest.raises(PodLost):
        await task


async def test_terminating_and_unready_pods_get_no_new_step() -> None:
    s = Scheduler("p")
    s.update_pod(pod("pod0", terminating=True))
    s.update_pod(pod("pod1", ready=False))
    got: list[str] = []

    async def step() -> None:
        async with s.lease(0) as lease:
            got.append(lease.pod.name)

    task = asyncio.create_task(step())
    await asyncio.sleep(0)
    assert got == [] and s.queued == 1
    s.update_pod(pod("pod1", ready=True))
    await task
    assert got == ["pod1"]


async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    s = Scheduler("p")

    async def step() -> None:
        async with s.lease(0):
            pass

    task = asyncio.create_task(step())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    s.update_pod(pod("pod0"))
    assert s.busy == 0 and s.queued == 0


async def test_a_failed_pod_is_passed_over_until_it_is_ready_anew() -> None:
    s = Scheduler("p")
    s.update_pod(pod("pod0"))
    async with s.lease(0) as lease:
        lease.mark_failed()
    got: list[str] = []

    async def step() -> None:
        async with s.lease(0) as lease:
            got.append(lease.pod.name)

    task = asyncio.create_task(step())
    await asyncio.sleep(0)
    assert got == []  # quarantined
    s.update_pod(pod("pod0", ready=False))
    s.update_pod(pod("pod0", ready=True))  # the watch reports it ready anew
    await task
    assert got == ["pod0"]
