"""The built-in interval scheduler, driven by a manual clock (no sleeps for ordering)."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest

from syncrecon import ConnectorBugError, FieldMap, NaturalKey, Reconciler, SyncDefinition, recency
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
