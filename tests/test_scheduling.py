"""The built-in interval scheduler, driven by a manual clock (no sleeps for ordering)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest

from syncrecon import ConnectorBugError, FieldMap, NaturalKey, Reconciler, SyncDefinition, recency
from syncrecon._runtime import Due, Woke
from syncrecon.scheduling import IntervalScheduler
from syncrecon.storage.memory import MemoryStorage
from syncrecon.testing import ManualClock, SimulatedSystem


def _reconciler(clock: ManualClock) -> tuple[Reconciler, SimulatedSystem, SimulatedSystem]:
    left = SimulatedSystem("left", clock=clock)
    right = SimulatedSystem("right", clock=clock)
    left.create({"email": "a@example.com", "note": "x"})
    right.create({"email": "a@example.com", "note": "x"})
    sync = SyncDefinition(
        name="s",
        left=left,
        right=right,
        fields=[FieldMap(left="note", right="note", policy=recency())],
        natural_key=NaturalKey(left="email", right="email"),
    )
    return Reconciler(sync, MemoryStorage(), clock=clock), left, right


def test_runs_when_due_and_not_before() -> None:
    clock = ManualClock()
    rec, _, _ = _reconciler(clock)
    reports = []
    scheduler = IntervalScheduler(rec, timedelta(hours=4), clock=clock, on_report=reports.append)
    assert scheduler.run_due() is not None  # due at start
    assert scheduler.run_due() is None
    clock.advance(timedelta(hours=3, minutes=59))
    assert scheduler.run_due() is None
    clock.advance(timedelta(minutes=1))
    assert scheduler.run_due() is not None
    assert scheduler.cycles_run == 2
    assert len(reports) == 2
    assert reports[0].new_links == 1


def test_delay_first_waits_one_interval() -> None:
    clock = ManualClock()
    rec, _, _ = _reconciler(clock)
    scheduler = IntervalScheduler(rec, timedelta(hours=1), clock=clock, delay_first=True)
    assert scheduler.seconds_until_due() == 3600
    assert scheduler.run_due() is None


def test_a_held_lease_skips_the_cycle() -> None:
    clock = ManualClock()
    rec, _, _ = _reconciler(clock)
    assert rec.storage.acquire_lease(
        rec.lease_name, "someone-else", timedelta(hours=1), clock.now()
    )
    scheduler = IntervalScheduler(rec, timedelta(hours=1), clock=clock)
    assert scheduler.run_due() is None
    assert scheduler.cycles_run == 0
    clock.advance(timedelta(hours=2))  # the other worker's lease expired
    assert scheduler.run_due() is not None


def test_errors_are_reported_and_the_schedule_goes_on() -> None:
    clock = ManualClock()
    rec, left, _ = _reconciler(clock)
    errors: list[BaseException] = []
    left.fail_next("list_records", RuntimeError("boom"))
    scheduler = IntervalScheduler(rec, timedelta(hours=1), clock=clock, on_error=errors.append)
    assert scheduler.run_due() is None
    # A connector's own exception is a bug: wrapped, named, never retried.
    assert len(errors) == 1
    assert isinstance(errors[0], ConnectorBugError)
    assert isinstance(errors[0].__cause__, RuntimeError)
    assert str(errors[0].__cause__) == "boom"
    assert "left.list_records raised RuntimeError: boom" in str(errors[0])
    assert left.calls["list_records"] == 1
    clock.advance(timedelta(hours=1))
    assert scheduler.run_due() is not None


def test_thread_start_and_stop() -> None:
    clock = ManualClock()
    rec, _, _ = _reconciler(clock)
    ran = threading.Event()
    scheduler = IntervalScheduler(
        rec, timedelta(hours=1), clock=clock, on_report=lambda report: ran.set()
    )
    with scheduler:
        assert ran.wait(10)
        with pytest.raises(RuntimeError):
            scheduler.start()
    assert scheduler.cycles_run == 1


def test_asyncio_run_until_stopped() -> None:
    clock = ManualClock()
    rec, _, _ = _reconciler(clock)

    async def main() -> int:
        done = asyncio.Event()
        scheduler = IntervalScheduler(
            rec, timedelta(hours=1), clock=clock, on_report=lambda report: done.set()
        )
        task = asyncio.ensure_future(scheduler.run())
        await asyncio.wait_for(done.wait(), 10)
        scheduler.stop()
        await asyncio.wait_for(task, 10)
        return scheduler.cycles_run

    assert asyncio.run(main()) == 1


def test_interval_must_be_positive() -> None:
    clock = ManualClock()
    rec, _, _ = _reconciler(clock)
    with pytest.raises(ValueError):
        IntervalScheduler(rec, timedelta(0), clock=clock)


# --------------------------------------------------------------------------------------------
# The run loop: sleeps until the next cycle, wakes at once on stop (no polling)


async def _settles(task: asyncio.Future[Any], turns: int = 20) -> bool:
    """Whether ``task`` is done within ``turns`` turns of the event loop (no timer is due)."""
    for _ in range(turns):
        if task.done():
            return True
        await asyncio.sleep(0)
    return task.done()


def _record_waits(scheduler: IntervalScheduler, waits: list[Due | None]) -> None:
    """Record what each wait of the scheduler's loop (either door) waits for."""
    loop = scheduler._loop
    wait, await_ = loop.wait, loop.await_

    def sync_wait(due: Due | None) -> Woke:
        waits.append(due)
        return wait(due)

    async def async_wait(due: Due | None) -> Woke:
        waits.append(due)
        return await await_(due)

    loop.wait = sync_wait  # type: ignore[method-assign]
    loop.await_ = async_wait  # type: ignore[method-assign]


def test_asyncio_stop_wakes_the_sleeping_run_at_once() -> None:
    clock = ManualClock()
    rec, _, _ = _reconciler(clock)

    async def main() -> None:
        ran = asyncio.Event()
        scheduler = IntervalScheduler(
            rec, timedelta(hours=1), clock=clock, on_report=lambda report: ran.set()
        )
        task = asyncio.ensure_future(scheduler.run())
        await asyncio.wait_for(ran.wait(), 10)
        assert not await _settles(task)  # asleep until the next cycle, an hour away
        scheduler.stop()
        assert await _settles(task, turns=5)  # not at a 50 ms tick: at once
        assert task.exception() is None

    asyncio.run(main())


def test_asyncio_run_wakes_on_stop_from_another_thread_and_on_cancel() -> None:
    clock = ManualClock()
    rec, _, _ = _reconciler(clock)

    async def main() -> None:
        ran = asyncio.Event()
        scheduler = IntervalScheduler(
            rec, timedelta(hours=1), clock=clock, on_report=lambda report: ran.set()
        )
        task = asyncio.ensure_future(scheduler.run())
        await asyncio.wait_for(ran.wait(), 10)
        stopper = threading.Thread(target=scheduler.stop)
        stopper.start()
        stopper.join(10)
        assert await _settles(task, turns=5)
        assert scheduler.cycles_run == 1

        scheduler = IntervalScheduler(rec, timedelta(hours=1), clock=clock, delay_first=True)
        task = asyncio.ensure_future(scheduler.run())
        assert not await _settles(task)
        task.cancel()
        assert await _settles(task, turns=5)
        assert task.cancelled()
        assert scheduler._loop._tasks == []  # nothing left to wake

    asyncio.run(main())


def test_both_doors_sleep_until_the_next_cycle() -> None:
    def sync_door() -> list[Due | None]:
        clock = ManualClock()
        rec, _, _ = _reconciler(clock)
        waits: list[Due | None] = []
        ran = threading.Event()
        scheduler = IntervalScheduler(
            rec, timedelta(hours=1), clock=clock, on_report=lambda report: ran.set()
        )
        _record_waits(scheduler, waits)
        with scheduler:
            assert ran.wait(10)
        return waits

    def async_door() -> list[Due | None]:
        clock = ManualClock()
        rec, _, _ = _reconciler(clock)
        waits: list[Due | None] = []

        async def main() -> None:
            ran = asyncio.Event()
            scheduler = IntervalScheduler(
                rec, timedelta(hours=1), clock=clock, on_report=lambda report: ran.set()
            )
            _record_waits(scheduler, waits)
            task = asyncio.ensure_future(scheduler.run())
            await asyncio.wait_for(ran.wait(), 10)
            scheduler.stop()
            await asyncio.wait_for(task, 10)

        asyncio.run(main())
        return waits

    # One cycle at start, then a sleep of exactly the interval (by the scheduler's clock).
    assert sync_door() == async_door() == [Due("cycle", 3600.0)]
