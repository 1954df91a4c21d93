"""The pool scheduler's logic, with pods described directly (no cluster needed)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from escrow_operator.scheduler import PodLost, PodState, Priority, Scheduler


def pod(
    name: str, ready: bool = True, terminating: bool = False, incarnation: str = "a", uid: str | None = None
) -> PodState:
    return PodState(name, uid or f"uid-{name}", f"127.0.1.{name[-1]}", ready, terminating, incarnation)


async def _leased_until_lost(s: Scheduler) -> asyncio.Task[None]:
    """A step that holds its lease until the lease is lost; returned once it holds it."""
    started = asyncio.Event()

    async def step() -> None:
        async with s.lease(0):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(step())
    await started.wait()
    return task


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


async def test_a_funding_scan_of_the_oldest_escrow_waits_behind_a_later_escrows_step() -> None:
    s = Scheduler("p")
    s.update_pod(pod("pod0"))
    oldest = {"creationTimestamp": "2026-01-01T00:00:00Z", "uid": "a"}
    newest = {"creationTimestamp": "2026-06-01T00:00:00Z", "uid": "b"}
    assert Priority.of(newest) < Priority.of(oldest, background=True) < Priority.of(newest, background=True)
    order: list[str] = []
    release = asyncio.Event()

    async def step(key: str, priority: Priority) -> None:
        async with s.lease(priority):
            order.append(key)
            await release.wait()

    first = asyncio.create_task(step("busy", Priority.of(oldest)))
    await asyncio.sleep(0)
    waiting = [
        asyncio.create_task(step("scan", Priority.of(oldest, background=True))),
        asyncio.create_task(step("payout", Priority.of(newest))),
    ]
    await asyncio.sleep(0)
    assert order == ["busy"] and s.queued == 2
    release.set()
    await asyncio.gather(first, *waiting)
    assert order == ["busy", "payout", "scan"]


async def test_a_pod_lost_mid_step_raises_podlost_and_frees_nothing_twice() -> None:
    s = Scheduler("p")
    s.update_pod(pod("pod0"))
    task = await _leased_until_lost(s)
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


# --- wallet affinity --------------------------------------------------------------------------------


async def _hold(s: Scheduler, priority: int, wallet: str, work: str) -> str:
    """Run one step of ``wallet`` that leaves it open as ``work``; return the pod it ran on."""
    async with s.lease(priority, wallet=wallet) as lease:
        lease.keep(work)
        return lease.pod.name


async def test_a_wallet_left_open_goes_back_to_its_pod_warm() -> None:
    s = Scheduler("p")
    for name in ("pod0", "pod1", "pod2"):
        s.update_pod(pod(name))
    first = await _hold(s, 1, "esc/buyer", "buyer_work")
    other = await _hold(s, 2, "esc2/buyer", "other_work")
    assert other != first  # a pod holding nothing is preferred to one holding a wallet
    async with s.lease(1, wallet="esc/buyer") as lease:
        assert lease.pod.name == first
        assert lease.warm is not None and lease.warm.work == "buyer_work"
    # The step did not keep it: the pod holds nothing now, and the next step of that wallet is cold.
    async with s.lease(1, wallet="esc/buyer") as lease:
        assert lease.warm is None


async def test_a_held_wallet_never_makes_a_step_wait() -> None:
    s = Scheduler("p")
    s.update_pod(pod("pod0"))
    s.update_pod(pod("pod1"))
    await _hold(s, 1, "early/buyer", "early_work")
    await _hold(s, 5, "late/buyer", "late_work")
    assert s.held == 2
    # A third wallet's step takes a held pod at once: the latest escrow's wallet is closed first.
    async with s.lease(3, wallet="new/vendor") as lease:
        assert lease.warm is None and s.queued == 0
        taken = lease.pod.name
    async with s.lease(1, wallet="early/buyer") as lease:
        assert lease.warm is not None and lease.pod.name != taken
    async with s.lease(5, wallet="late/buyer") as lease:
        assert lease.warm is None  # its copy was closed for the other step


async def test_a_waiting_step_whose_wallet_is_held_jumps_to_its_pod() -> None:
    s = Scheduler("p")
    s.update_pod(pod("pod0"))
    await _hold(s, 9, "late/buyer", "late_work")
    s.update_pod(pod("pod0", ready=False))  # a failed probe: no new step, the wallet stays open
    got: list[tuple[str, bool]] = []
    release = asyncio.Event()

    async def step(priority: int, wallet: str) -> None:
        async with s.lease(priority, wallet=wallet) as lease:
            got.append((wallet, lease.warm is not None))
            await release.wait()

    tasks = [asyncio.create_task(step(1, "early/vendor")), asyncio.create_task(step(9, "late/buyer"))]
    await asyncio.sleep(0)
    assert s.queued == 2 and s.held == 1
    s.update_pod(pod("pod0"))  # ready again: the step whose wallet it holds goes first, warm
    await asyncio.sleep(0)
    assert got == [("late/buyer", True)]
    release.set()
    await asyncio.gather(*tasks)
    assert got == [("late/buyer", True), ("early/vendor", False)]


async def test_a_restarted_process_or_a_cold_run_elsewhere_forgets_the_open_wallet() -> None:
    s = Scheduler("p")
    s.update_pod(pod("pod0"))
    await _hold(s, 1, "esc/buyer", "w")
    s.update_pod(pod("pod0", incarnation="b"))  # wallet-rpc restarted: it holds nothing
    async with s.lease(1, wallet="esc/buyer") as lease:
        assert lease.warm is None
        lease.keep("w2")
    s.update_pod(pod("pod1"))
    release = asyncio.Event()

    async def file_work() -> None:  # file-only work leaves the open wallet alone
        async with s.lease(0, rpc=False) as lease:
            assert lease.pod.name == "pod0"  # it takes the held pod, leaving the clean one
            await release.wait()

    task = asyncio.create_task(file_work())
    await asyncio.sleep(0)
    async with s.lease(1, wallet="esc/buyer") as lease:
        assert lease.pod.name == "pod1" and lease.warm is None  # its pod is busy: a copy elsewhere
    release.set()
    await task
    async with s.lease(1, wallet="esc/buyer") as lease:
        assert lease.warm is None  # the copy on pod0 was older than the run on pod1: stale


async def test_a_failed_step_keeps_nothing_open() -> None:
    s = Scheduler("p")
    s.update_pod(pod("pod0"))
    with pytest.raises(RuntimeError):
        async with s.lease(1, wallet="esc/buyer") as lease:
            lease.keep("w")
            lease.mark_failed()
            raise RuntimeError("wallet-rpc answered late")
    assert s.held == 0


async def test_a_reserved_wallet_keeps_later_escrows_off_until_unreserved() -> None:
    s = Scheduler("p")
    s.update_pod(pod("pod0"))
    await _hold(s, 1, "early/buyer", "w")  # its escrow is still in the round
    got: list[str] = []

    async def step(priority: int, wallet: str) -> None:
        async with s.lease(priority, wallet=wallet) as lease:
            got.append(f"{wallet}:{'warm' if lease.warm else 'cold'}")

    later = asyncio.create_task(step(5, "late/vendor"))
    await asyncio.sleep(0)
    assert got == [] and s.queued == 1  # the only pod is kept for the earlier escrow's next step
    await step(1, "early/buyer")  # ... which takes it warm, and the later step follows
    await later
    assert got == ["early/buyer:warm", "late/vendor:cold"]

    await _hold(s, 1, "early/buyer", "w2")
    later = asyncio.create_task(step(5, "late/vendor"))
    await asyncio.sleep(0)
    assert s.queued == 1
    s.unreserve({"early/buyer"})  # the earlier escrow stopped: its open wallet no longer blocks
    await later
    assert got[-1] == "late/vendor:cold" and s.held == 0
    await _hold(s, 5, "late/vendor", "w3")
    await step(1, "early/arbiter")  # an earlier escrow's step closes a later escrow's wallet at once
    assert got[-1] == "early/arbiter:cold"


async def test_pods_started_with_a_replaced_secret_get_no_step_and_are_named_stale() -> None:
    s = Scheduler("p")
    old = PodState("pod0", "uid-pod0", "127.0.1.0", True, False, "a", secret_uid="secret-old")
    s.update_pod(old)
    unannotated = pod("pod1")  # an earlier release's pod: taken at its word
    s.update_pod(unannotated)
    assert s.ready == 2 and s.stale_pods() == []  # the current Secret is not known yet
    s.set_secret_uid("secret-new")
    assert s.ready == 1 and s.stale_pods() == [old]
    got: list[str] = []

    async def step() -> None:
        async with s.lease(0) as lease:
            got.append(lease.pod.name)

    await asyncio.gather(step(), step())
    assert got == ["pod1", "pod1"]
    fresh = PodState("pod0", "uid-pod0b", "127.0.1.9", True, False, "b", secret_uid="secret-new")
    s.update_pod(fresh)
    assert s.ready == 2 and s.stale_pods() == []
    s.update_pod(dataclasses.replace(fresh, terminating=True, secret_uid="secret-old"))
    assert s.stale_pods() == []  # being deleted already


async def test_a_deletion_reported_after_a_new_pod_of_that_name_keeps_the_new_pod() -> None:
    s = Scheduler("p")
    s.update_pod(pod("pod0", uid="first"))
    s.update_pod(pod("pod0", uid="second"))
    s.remove_pod("pod0", "first")  # the old pod's DELETED event, late
    assert s.pods == 1 and [p.uid for p in s.pod_states()] == ["second"]
    s.remove_pod("pod0", "second")
    assert s.pods == 0


async def test_a_step_on_a_pod_whose_secret_was_replaced_is_lost() -> None:
    s = Scheduler("p")
    s.set_secret_uid("secret-old")
    s.update_pod(PodState("pod0", "uid-pod0", "127.0.1.0", True, False, "a", secret_uid="secret-old"))
    task = await _leased_until_lost(s)
    s.set_secret_uid("secret-new")
    with pytest.raises(PodLost):
        await task
    assert s.busy == 0 and s.ready == 0
