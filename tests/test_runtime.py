"""The run loop behind the scheduler's and the worker's two doors (``syncrecon._runtime``).

No test sleeps for ordering or asserts on wall time: the waits under test are an hour long, so
a loop that did not wake on ``stop()`` / ``wake()`` would time the test out (``join(10)``,
``wait_for(..., 10)``); the async tests count event-loop turns instead of seconds.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from syncrecon import _runtime
from syncrecon._runtime import Due, RunLoop, Woke, soonest

HOUR = 3600.0


async def settles(task: asyncio.Future[Any], turns: int = 20) -> bool:
    """Whether ``task`` is done within ``turns`` turns of the event loop (no timer fires in
    that time: nothing here waits less than an hour)."""
    for _ in range(turns):
        if task.done():
            return True
        await asyncio.sleep(0)
    return task.done()


def in_thread(work: Callable[[], Woke]) -> tuple[threading.Thread, list[Woke]]:
    result: list[Woke] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    return thread, result


# --------------------------------------------------------------------------------------------
# What is due next: pure logic


def test_soonest_picks_the_job_due_first() -> None:
    assert soonest({"drain": 1.0, "cycle": 0.5, "prune": None}) == Due("cycle", 0.5)
    assert soonest({"drain": 2.0, "cycle": None}) == Due("drain", 2.0)


def test_soonest_overdue_is_now_and_a_tie_goes_to_the_first_named() -> None:
    assert soonest({"drain": 1.0, "cycle": -30.0, "prune": -1.0}) == Due("cycle", 0.0)
    assert soonest({"drain": 5.0, "cycle": 5.0}) == Due("drain", 5.0)


def test_soonest_nothing_scheduled_and_wakeable() -> None:
    assert soonest({"drain": None, "cycle": None}) is None
    assert soonest({}) is None
    assert soonest({"drain": 0.2}, wakeable=False) == Due("drain", 0.2, wakeable=False)


def test_a_round_begins_unless_stopped_and_spends_the_wake_ups() -> None:
    loop = RunLoop()
    loop.wake()
    assert loop.why_ended(Due("drain", HOUR)) == "woken"
    assert loop.why_ended(Due("drain", HOUR, wakeable=False)) is None
    assert loop.begin_round()
    assert loop.why_ended(Due("drain", HOUR)) is None  # the round does what the wake-up asked
    loop.stop()
    assert loop.stopped
    assert loop.why_ended(Due("drain", HOUR, wakeable=False)) == "stopped"
    assert not loop.begin_round()
    loop.rearm()
    assert not loop.stopped
    assert loop.begin_round()


# --------------------------------------------------------------------------------------------
# The sync door


def test_sync_wait_ends_when_due() -> None:
    loop = RunLoop()
    assert loop.wait(Due("cycle", 0.0)) == "due"


def test_sync_wait_ends_at_once_on_stop_from_another_thread() -> None:
    loop = RunLoop()
    forever = timedelta.max.total_seconds()  # beyond threading.TIMEOUT_MAX
    thread, woke = in_thread(lambda: loop.wait(Due("cycle", forever)))
    loop.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert woke == ["stopped"]


def test_sync_wait_ends_on_wake_unless_in_a_coalescing_window() -> None:
    loop = RunLoop()
    thread, woke = in_thread(lambda: loop.wait(Due("drain", HOUR)))
    loop.wake()
    thread.join(10)
    assert woke == ["woken"]
    # A wake-up does not end an unwakeable wait: it runs to its time (here: none at all).
    assert loop.wait(Due("drain", 0.0, wakeable=False)) == "due"
    # Nothing scheduled: a wait until woken.
    assert loop.wait(None) == "woken"


def test_the_sync_door_runs_rounds_until_stopped() -> None:
    loop = RunLoop()
    rounds: list[int] = []

    def round_() -> Due:
        rounds.append(len(rounds))
        if len(rounds) < 3:
            loop.wake()  # more to do: the next round comes at once
        else:
            threading.Thread(target=loop.stop).start()
        return Due("drain", HOUR)

    thread = threading.Thread(target=loop.run, args=(round_,), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert rounds == [0, 1, 2]


# --------------------------------------------------------------------------------------------
# The async door


def test_async_wait_ends_at_once_on_stop() -> None:
    async def main() -> None:
        loop = RunLoop()
        task = asyncio.ensure_future(loop.await_(Due("cycle", HOUR)))
        assert not await settles(task)  # it waits (for an hour)
        loop.stop()
        assert await settles(task, turns=5)  # woken by stop(), no timer tick
        assert task.result() == "stopped"
        assert loop._tasks == []

    asyncio.run(main())


def test_async_wait_ends_on_stop_from_another_thread() -> None:
    async def main() -> None:
        loop = RunLoop()
        task = asyncio.ensure_future(loop.await_(Due("cycle", HOUR)))
        assert not await settles(task)
        stopper = threading.Thread(target=loop.stop)
        stopper.start()
        stopper.join(10)
        assert await settles(task, turns=5)
        assert task.result() == "stopped"

    asyncio.run(main())


def test_async_wake_ends_a_wakeable_wait_only() -> None:
    async def main() -> None:
        loop = RunLoop()
        task = asyncio.ensure_future(loop.await_(Due("drain", HOUR)))
        assert not await settles(task)
        loop.wake()
        assert await settles(task, turns=5)
        assert task.result() == "woken"

        held = asyncio.ensure_future(loop.await_(Due("drain", HOUR, wakeable=False)))
        loop.wake()
        assert not await settles(held)  # the coalescing window is not cut short
        loop.stop()
        assert await settles(held, turns=5)
        assert held.result() == "stopped"

    asyncio.run(main())


def test_async_wait_ends_when_due_and_cancelling_leaves_nothing_behind() -> None:
    async def main() -> None:
        loop = RunLoop()
        assert await loop.await_(Due("cycle", 0.0)) == "due"
        task = asyncio.ensure_future(loop.await_(Due("cycle", HOUR)))
        assert not await settles(task)
        assert len(loop._tasks) == 1
        task.cancel()
        assert await settles(task, turns=5)
        assert task.cancelled()
        assert loop._tasks == []
        loop.stop()  # no stale waker to call

    asyncio.run(main())


def test_other_anyio_backends_wait_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_runtime, "_running_asyncio_loop", lambda: None)

    async def main() -> None:
        loop = RunLoop()
        assert await loop.await_(Due("cycle", 0.0)) == "due"
        task = asyncio.ensure_future(loop.await_(Due("drain", HOUR)))
        await asyncio.sleep(0)
        loop.wake()
        assert await asyncio.wait_for(task, 10) == "woken"
        task = asyncio.ensure_future(loop.await_(Due("cycle", HOUR)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        task = asyncio.ensure_future(loop.await_(Due("cycle", HOUR)))
        await asyncio.sleep(0)
        threading.Thread(target=loop.stop).start()
        assert await asyncio.wait_for(task, 10) == "stopped"

    asyncio.run(main())


# --------------------------------------------------------------------------------------------
# One loop, two doors


def scripted(loop: RunLoop) -> tuple[list[tuple[int, Woke]], Callable[[], Due | None]]:
    """Rounds that wake, time out and stop the loop in a fixed order; the trace records each
    wait's end as (round, why)."""
    trace: list[tuple[int, Woke]] = []
    count = [0]

    def round_() -> Due | None:
        count[0] += 1
        n = count[0]
        if n == 1:
            loop.wake()
            return Due("drain", HOUR)  # woken at once
        if n == 2:
            loop.wake()
            return Due("drain", 0.0, wakeable=False)  # the wake-up waits: due
        if n == 3:
            loop.wake()
            return None  # nothing scheduled, but woken
        loop.stop()
        return Due("cycle", HOUR)

    return trace, round_


def traced(loop: RunLoop, trace: list[tuple[int, Woke]]) -> None:
    """Record why each of ``loop``'s waits ended, for either door."""
    wait, await_ = loop.wait, loop.await_

    def sync_wait(due: Due | None) -> Woke:
        why = wait(due)
        trace.append((len(trace) + 1, why))
        return why

    async def async_wait(due: Due | None) -> Woke:
        why = await await_(due)
        trace.append((len(trace) + 1, why))
        return why

    loop.wait = sync_wait  # type: ignore[method-assign]
    loop.await_ = async_wait  # type: ignore[method-assign]


def test_both_doors_drive_the_same_loop() -> None:
    sync_loop = RunLoop()
    sync_trace, sync_round = scripted(sync_loop)
    traced(sync_loop, sync_trace)
    sync_loop.run(sync_round)

    async_loop = RunLoop()
    async_trace, async_round = scripted(async_loop)
    traced(async_loop, async_trace)

    async def arounds() -> Due | None:
        return async_round()

    asyncio.run(async_loop.arun(arounds))
    expected = [(1, "woken"), (2, "due"), (3, "woken"), (4, "stopped")]
    assert sync_trace == expected
    assert async_trace == expected
