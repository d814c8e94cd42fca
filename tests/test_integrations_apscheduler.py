"""syncrecon's loops as APScheduler 3 jobs, on real schedulers over simulated systems.

Runs are started by moving a job's ``next_run_time`` to now and waiting on an event a listener
sets (or by calling ``job.func`` directly): no sleeps for ordering.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("apscheduler")

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from fastloop_helpers import World
from syncrecon import (
    ConnectorBugError,
    CycleReport,
    FieldMap,
    NaturalKey,
    Reconciler,
    SyncDefinition,
    recency,
)
from syncrecon.integrations.apscheduler import (
    DEFAULT_DRAIN_JOB_ID,
    acycle_job,
    add_drain_job,
    add_reconcile_job,
    adrain_job,
    cycle_job,
    drain_job,
    reconcile_job_id,
)
from syncrecon.storage.memory import MemoryStorage
from syncrecon.testing import ManualClock, SimulatedSystem
from syncrecon.webhooks import ProcessReport

LOGGER = "syncrecon.integrations.apscheduler"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _reconciler() -> tuple[Reconciler, SimulatedSystem]:
    clock = ManualClock(NOW)
    left = SimulatedSystem("left", clock=clock)
    right = SimulatedSystem("right", clock=clock)
    left.create({"email": "a@example.com", "note": "x"})
    right.create({"email": "a@example.com", "note": "y"})
    sync = SyncDefinition(
        name="s",
        left=left,
        right=right,
        fields=[FieldMap(left="note", right="note", policy=recency())],
        natural_key=NaturalKey(left="email", right="email"),
    )
    return Reconciler(sync, MemoryStorage(), clock=clock), left


def _stored_event(world: World) -> None:
    """One webhook event in the inbox, not yet processed (the handler is not inline)."""
    world.right.edit("s1", Notes="hello")
    world.handler.handle(world.request("salesforce", [world.change("s1", "Notes", "hello")]))


class Runs:
    """Collects a scheduler's job events; :meth:`wait` blocks until ``n`` of them arrived."""

    def __init__(self, scheduler: Any) -> None:
        self.events: list[JobExecutionEvent] = []
        self._cond = threading.Condition()
        scheduler.add_listener(self._seen, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)

    def _seen(self, event: JobExecutionEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait(self, n: int = 1) -> list[JobExecutionEvent]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.events) >= n, timeout=10)
            return list(self.events)


@pytest.fixture
def background() -> Iterator[BackgroundScheduler]:
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.start()
    try:
        yield scheduler
    finally:
        scheduler.shutdown(wait=True)


def _run_now(scheduler: Any, job_id: str) -> None:
    scheduler.get_job(job_id).modify(next_run_time=datetime.now(UTC))


# -- BackgroundScheduler ---------------------------------------------------------------------


def test_a_cycle_runs_as_a_background_job(background: BackgroundScheduler) -> None:
    rec, _ = _reconciler()
    runs = Runs(background)
    reports: list[CycleReport] = []
    job = add_reconcile_job(background, rec, every=timedelta(hours=1), on_report=reports.append)
    assert job.id == reconcile_job_id(rec) == "syncrecon:reconcile:s"
    assert job.func is cycle_job
    assert job.max_instances == 1
    assert job.coalesce is True

    _run_now(background, job.id)
    [event] = runs.wait()
    assert event.exception is None
    assert len(reports) == 1
    assert event.retval is reports[0]
    assert reports[0].new_links == 1
    [record] = rec.storage.list_cycles(sync="s")
    assert record.id == reports[0].cycle_id
    assert background.get_job(job.id) is not None  # still scheduled: next in an hour


def test_the_job_function_runs_a_cycle_when_called() -> None:
    rec, _ = _reconciler()
    scheduler = BackgroundScheduler(timezone=UTC)  # never started
    reports: list[CycleReport] = []
    job = add_reconcile_job(scheduler, rec, on_report=reports.append)
    report = job.func(*job.args, **job.kwargs)
    assert isinstance(report, CycleReport)
    assert reports == [report]
    assert len(rec.storage.list_cycles(sync="s")) == 1


def test_a_held_lease_skips_the_run_with_an_info_log(caplog: pytest.LogCaptureFixture) -> None:
    rec, _ = _reconciler()
    assert rec.storage.acquire_lease(rec.lease_name, "someone-else", timedelta(hours=1), NOW)
    reports: list[CycleReport] = []
    job = add_reconcile_job(BackgroundScheduler(timezone=UTC), rec, on_report=reports.append)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert job.func(*job.args, **job.kwargs) is None
    assert reports == []
    assert rec.storage.list_cycles(sync="s") == []
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.INFO
    assert "skipped" in record.getMessage()
    assert "another worker holds the lease" in record.getMessage()


def test_errors_are_logged_and_reach_the_schedulers_listeners(
    background: BackgroundScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    rec, left = _reconciler()
    left.fail_next("list_records", RuntimeError("boom"))
    runs = Runs(background)
    job = add_reconcile_job(background, rec, every=timedelta(hours=1))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        _run_now(background, job.id)
        [event] = runs.wait()
    assert isinstance(event.exception, ConnectorBugError)
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[1] is event.exception
    assert background.get_job(job.id) is not None  # the schedule goes on


def test_a_drain_processes_a_stored_event(background: BackgroundScheduler) -> None:
    world = World(MemoryStorage(), inline=False)
    _stored_event(world)
    runs = Runs(background)
    reports: list[ProcessReport] = []
    job = add_drain_job(background, world.handler, on_report=reports.append)
    assert job.id == DEFAULT_DRAIN_JOB_ID
    assert job.func is drain_job
    assert job.trigger.interval == timedelta(seconds=5)
    _run_now(background, job.id)
    [event] = runs.wait()
    assert event.exception is None
    assert [r.outcomes for r in reports] == [{"applied": 1}]
    assert event.retval is reports[0]
    assert world.left.get("h1").fields["notes"] == "hello"


def test_adding_again_replaces_the_job(background: BackgroundScheduler) -> None:
    rec, _ = _reconciler()
    world = World(MemoryStorage(), inline=False)
    add_reconcile_job(background, rec, every=timedelta(hours=1))
    add_reconcile_job(background, rec, cron="0 3 * * *")
    add_drain_job(background, world.handler)
    add_drain_job(background, world.handler, every=timedelta(seconds=30))
    jobs = {job.id: job for job in background.get_jobs()}
    assert len(background.get_jobs()) == 2
    assert isinstance(jobs["syncrecon:reconcile:s"].trigger, CronTrigger)
    assert jobs[DEFAULT_DRAIN_JOB_ID].trigger.interval == timedelta(seconds=30)


def test_adding_again_before_start_leaves_one_job() -> None:
    rec, _ = _reconciler()
    scheduler = BackgroundScheduler(timezone=UTC)
    add_reconcile_job(scheduler, rec, every=timedelta(hours=1))
    add_reconcile_job(scheduler, rec, every=timedelta(hours=2))
    [job] = scheduler.get_jobs()
    assert job.trigger.interval == timedelta(hours=2)
    scheduler.start(paused=True)
    try:
        [job] = scheduler.get_jobs()
        assert job.trigger.interval == timedelta(hours=2)
    finally:
        scheduler.shutdown(wait=False)


def test_a_job_id_of_ones_own_and_job_kwargs() -> None:
    rec, _ = _reconciler()
    scheduler = BackgroundScheduler(timezone=UTC)
    first = datetime(2030, 1, 1, tzinfo=UTC)
    job = add_reconcile_job(
        scheduler, rec, job_id="nightly", max_instances=2, next_run_time=first, name="mine"
    )
    assert (job.id, job.max_instances, job.name) == ("nightly", 2, "mine")
    assert job.next_run_time == first


# -- triggers --------------------------------------------------------------------------------


def test_the_triggers_asked_for() -> None:
    rec, _ = _reconciler()
    scheduler = BackgroundScheduler(timezone=UTC)
    every = add_reconcile_job(scheduler, rec, every=timedelta(minutes=90), job_id="a")
    assert isinstance(every.trigger, IntervalTrigger)
    assert every.trigger.interval_length == 5400
    default = add_reconcile_job(scheduler, rec, job_id="b")
    assert default.trigger.interval == timedelta(hours=4)
    cron = add_reconcile_job(scheduler, rec, cron="17 */4 * * mon-fri", job_id="c")
    assert isinstance(cron.trigger, CronTrigger)
    fields = {f.name: str(f) for f in cron.trigger.fields}
    assert fields["minute"] == "17"
    assert fields["hour"] == "*/4"
    assert fields["day_of_week"] == "mon-fri"
    assert str(cron.trigger.timezone) == "UTC"  # the scheduler's


def test_bad_schedules_are_refused() -> None:
    rec, _ = _reconciler()
    world = World(MemoryStorage(), inline=False)
    scheduler = BackgroundScheduler(timezone=UTC)
    with pytest.raises(ValueError, match="not both"):
        add_reconcile_job(scheduler, rec, every=timedelta(hours=1), cron="0 * * * *")
    with pytest.raises(ValueError, match="positive"):
        add_reconcile_job(scheduler, rec, every=timedelta(0))
    with pytest.raises(ValueError, match="positive"):
        add_drain_job(scheduler, world.handler, every=timedelta(seconds=-1))
    with pytest.raises(ValueError):
        add_reconcile_job(scheduler, rec, cron="not a crontab")
    assert scheduler.get_jobs() == []


# -- AsyncIOScheduler ------------------------------------------------------------------------


def test_both_jobs_on_an_asyncio_scheduler() -> None:
    rec, _ = _reconciler()
    world = World(MemoryStorage(), inline=False)
    _stored_event(world)
    cycles: list[CycleReport] = []
    drains: list[ProcessReport] = []

    async def main() -> list[JobExecutionEvent]:
        scheduler = AsyncIOScheduler(timezone=UTC)
        runs = Runs(scheduler)
        scheduler.start()
        try:
            cycle = add_reconcile_job(scheduler, rec, on_report=cycles.append)
            drain = add_drain_job(scheduler, world.handler, on_report=drains.append)
            assert cycle.func is acycle_job
            assert drain.func is adrain_job
            _run_now(scheduler, cycle.id)
            _run_now(scheduler, drain.id)
            return await asyncio.to_thread(runs.wait, 2)
        finally:
            scheduler.shutdown(wait=False)

    events = asyncio.run(main())
    assert [e.exception for e in events] == [None, None]
    assert len(cycles) == 1
    assert len(rec.storage.list_cycles(sync="s")) == 1
    assert [r.outcomes for r in drains] == [{"applied": 1}]
    assert world.left.get("h1").fields["notes"] == "hello"


def test_async_held_lease_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    rec, _ = _reconciler()
    assert rec.storage.acquire_lease(rec.lease_name, "someone-else", timedelta(hours=1), NOW)

    async def main() -> object:
        scheduler = AsyncIOScheduler(timezone=UTC)
        job = add_reconcile_job(scheduler, rec)
        return await job.func(*job.args, **job.kwargs)

    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert asyncio.run(main()) is None
    assert [r.levelno for r in caplog.records if r.name == LOGGER] == [logging.INFO]


# -- the extra -------------------------------------------------------------------------------


def test_without_apscheduler_the_import_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(sys.modules):
        if name == "apscheduler" or name.startswith("apscheduler."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "apscheduler", None)
    monkeypatch.delitem(sys.modules, "syncrecon.integrations.apscheduler")
    with pytest.raises(ImportError, match=r'pip install "syncrecon\[apscheduler\]"'):
        importlib.import_module("syncrecon.integrations.apscheduler")


def test_import_syncrecon_does_not_import_apscheduler() -> None:
    probe = (
        "import sys, syncrecon, syncrecon.integrations;"
        " print(sorted(m for m in sys.modules if m.startswith('apscheduler')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
