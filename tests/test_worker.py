"""The worker: drains the inbox, runs cycles on schedule, loads apps by import path."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import subprocess
import sys
import textwrap
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fastloop_helpers import World
from syncrecon import AppLoadError, Retention
from syncrecon._runtime import Due
from syncrecon.storage.memory import MemoryStorage
from syncrecon.testing import ManualClock
from syncrecon.webhooks import ProcessReport
from syncrecon.worker import Worker, load


def test_run_once_drains_the_inbox_and_runs_a_due_cycle() -> None:
    w = World(MemoryStorage(), inline=False)
    reports = []
    worker = Worker(w.handler, w.reconciler, on_report=reports.append)
    w.right.edit("s1", Notes="hello")
    w.handler.handle(w.request("salesforce", [w.change("s1", "Notes", "hello")]))
    report = worker.run_once()
    assert report is not None
    assert report.outcomes == {"applied": 1}
    assert w.left.get("h1").fields["notes"] == "hello"
    assert len(reports) == 1  # the first cycle is due at once
    assert worker.run_once() is not None
    assert len(reports) == 1  # the next one only in four hours


def test_async_run_stops_even_when_stopped_before_it_starts() -> None:
    w = World(MemoryStorage(), inline=False)
    worker = Worker(w.handler, w.reconciler, poll=30)

    async def main() -> None:
        worker.stop()
        await asyncio.wait_for(worker.run(), 5)

    asyncio.run(main())


def test_async_run_processes_then_stops_promptly() -> None:
    w = World(MemoryStorage(), inline=False)
    worker = Worker(w.handler, poll=30)
    w.right.edit("s2", Notes="async")
    w.handler.handle(w.request("salesforce", [w.change("s2", "Notes", "async")]))

    async def main() -> None:
        task = asyncio.ensure_future(worker.run())
        for _ in range(200):
            if w.left.get("h2").fields["notes"] == "async":
                break
            await asyncio.sleep(0.01)
        worker.stop()
        await asyncio.wait_for(task, 2)  # well under the 30 s poll

    asyncio.run(main())
    assert w.left.get("h2").fields["notes"] == "async"


def test_a_worker_needs_something_to_do() -> None:
    with pytest.raises(ValueError):
        Worker()


def test_load_by_import_path_and_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from fastloop_helpers import World
            from syncrecon.storage.sqlite import SQLiteStorage
            world = World(SQLiteStorage({str(tmp_path / "app.sqlite")!r}), inline=False)
            handler = world.handler
            reconciler = world.reconciler
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        assert load("myapp:handler").handler is not None
        assert load("myapp:reconciler").scheduler is not None
        with pytest.raises(AppLoadError):
            load("myapp:world")
        with pytest.raises(ValueError):
            load("myapp")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("myapp", None)
    proc = subprocess.run(
        [sys.executable, "-m", "syncrecon", "worker", "myapp:handler", "--once"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"processed": 0}


# --------------------------------------------------------------------------------------------
# Retention on a schedule


class CountingStorage(MemoryStorage):
    """Memory storage that records each prune's arguments and can be told to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.prunes: list[tuple[Retention, datetime]] = []
        self.fail = False

    def prune(self, retention: Retention, now: datetime) -> Mapping[str, int]:
        self.prunes.append((retention, now))
        if self.fail:
            raise RuntimeError("disk on fire")
        return super().prune(retention, now)


def test_the_worker_prunes_on_schedule_with_the_handler_clock() -> None:
    storage = CountingStorage()
    w = World(storage, inline=False)
    clock: ManualClock = w.clock
    retention = Retention(inbox=timedelta(days=1))
    worker = Worker(w.handler, retention=retention, prune_every=timedelta(hours=1))
    w.right.edit("s1", Notes="one")
    w.handler.handle(w.request("salesforce", [w.change("s1", "Notes", "one")]))
    worker.run_once()  # the first round prunes at once
    assert len(storage.prunes) == 1
    assert storage.prunes[0][0] is retention
    clock.advance(timedelta(minutes=59))
    worker.run_once()
    assert len(storage.prunes) == 1  # not due yet
    clock.advance(timedelta(minutes=2))
    worker.run_once()
    assert len(storage.prunes) == 2
    assert storage.prunes[1][1] >= storage.prunes[0][1] + timedelta(hours=1)
    # The processed event goes once it is older than the retention.
    assert len(storage._inbox) == 1
    clock.advance(timedelta(days=1, hours=1))
    worker.run_once()
    assert len(storage.prunes) == 3
    assert storage._inbox == {}


def test_a_failing_prune_is_logged_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = CountingStorage()
    storage.fail = True
    w = World(storage, inline=False)
    worker = Worker(w.handler, w.reconciler, prune_every=timedelta(minutes=10))
    w.right.edit("s1", Notes="still")
    w.handler.handle(w.request("salesforce", [w.change("s1", "Notes", "still")]))
    with caplog.at_level(logging.ERROR, logger="syncrecon.worker"):
        report = worker.run_once()
    assert report is not None
    assert report.outcomes == {"applied": 1}  # the round did its work
    assert w.left.get("h1").fields["notes"] == "still"
    assert "pruning old rows failed" in caplog.text
    assert len(storage.prunes) == 1  # once per handler/reconciler storage (the same one)
    storage.fail = False
    w.clock.advance(timedelta(minutes=11))
    worker.run_once()
    assert len(storage.prunes) == 2  # tried again at the next prune


def test_the_worker_prune_uses_the_reconciler_clock_and_can_be_turned_off() -> None:
    storage = CountingStorage()
    w = World(storage, inline=False)
    worker = Worker(reconciler=w.reconciler)
    before = w.clock.now()
    assert worker.prune() == {
        "inbox": 0, "echoes": 0, "outbox": 0, "cycles": 0, "counters": 0
    }  # fmt: skip
    assert storage.prunes[-1][1] > before
    quiet = Worker(w.handler, w.reconciler, retention=None)
    quiet.run_once()
    assert quiet.prune() == {}
    assert len(storage.prunes) == 1
    with pytest.raises(ValueError):
        Worker(w.handler, prune_every=timedelta(0))


def test_the_async_worker_prunes_too() -> None:
    storage = CountingStorage()
    w = World(storage, inline=False)
    worker = Worker(w.handler)

    async def main() -> Any:
        return await worker.arun_once()

    asyncio.run(main())
    assert len(storage.prunes) == 1


# --------------------------------------------------------------------------------------------
# The run loop: sleeps until the next thing is due, wakes at once on stop() and wake()

HOUR = 3600.0


async def _settles(task: asyncio.Future[Any], turns: int = 20) -> bool:
    """Whether ``task`` is done within ``turns`` turns of the event loop (no timer is due)."""
    for _ in range(turns):
        if task.done():
            return True
        await asyncio.sleep(0)
    return task.done()


def _deliver(w: World, key: str, value: str) -> None:
    w.right.edit(key, Notes=value)
    w.handler.handle(w.request("salesforce", [w.change(key, "Notes", value)]))


def test_wake_makes_an_idle_worker_drain_before_its_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World(MemoryStorage(), inline=False)
    worker = Worker(w.handler, poll=HOUR)
    rounds: queue.Queue[ProcessReport] = queue.Queue()
    drain = w.handler.process_pending

    def counted() -> ProcessReport:
        report = drain()
        rounds.put(report)
        return report

    monkeypatch.setattr(w.handler, "process_pending", counted)
    worker.start()
    try:
        assert rounds.get(timeout=10).processed == 0  # the first round; the next in an hour
        _deliver(w, "s1", "now")
        worker.wake()  # from this thread, whether the worker is asleep yet or not
        assert rounds.get(timeout=10).processed == 1
    finally:
        worker.stop(timeout=10)
    assert w.left.get("h1").fields["notes"] == "now"


def test_async_wake_drains_an_idle_worker_but_keeps_the_coalescing_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    idle = World(MemoryStorage(), inline=False)
    busy = World(MemoryStorage(), inline=False)

    def counting(w: World) -> asyncio.Queue[ProcessReport]:
        rounds: asyncio.Queue[ProcessReport] = asyncio.Queue()
        drain = w.handler.aprocess_pending

        async def counted() -> ProcessReport:
            report = await drain()
            rounds.put_nowait(report)
            return report

        monkeypatch.setattr(w.handler, "aprocess_pending", counted)
        return rounds

    async def main() -> None:
        # Idle: the poll is an hour away, wake() drains now.
        rounds = counting(idle)
        worker = Worker(idle.handler, poll=HOUR, retention=None)
        task = asyncio.ensure_future(worker.run())
        assert (await asyncio.wait_for(rounds.get(), 10)).processed == 0
        assert not await _settles(task)  # asleep
        _deliver(idle, "s1", "woken")
        worker.wake()
        assert (await asyncio.wait_for(rounds.get(), 10)).processed == 1
        worker.stop()
        await asyncio.wait_for(task, 10)
        assert idle.left.get("h1").fields["notes"] == "woken"

        # Busy: after a round that processed events, wake() does not cut the window short.
        rounds = counting(busy)
        worker = Worker(busy.handler, poll=HOUR, coalesce=HOUR, retention=None)
        _deliver(busy, "s1", "first")
        task = asyncio.ensure_future(worker.run())
        assert (await asyncio.wait_for(rounds.get(), 10)).processed == 1
        _deliver(busy, "s2", "coalesced")
        worker.wake()
        assert not await _settles(task)
        assert rounds.empty()  # still gathering the burst
        worker.stop()
        assert await _settles(task, turns=5)
        assert busy.left.get("h2").fields["notes"] != "coalesced"

    asyncio.run(main())


def test_async_stop_wakes_a_sleeping_worker_at_once() -> None:
    w = World(MemoryStorage(), inline=False)
    worker = Worker(w.handler, w.reconciler, poll=HOUR)

    async def asleep(task: asyncio.Future[Any]) -> None:
        while not worker._loop._tasks:  # until the wait after the first round has begun
            assert not task.done()
            await asyncio.sleep(0)

    async def main() -> None:
        task = asyncio.ensure_future(worker.run())
        await asyncio.wait_for(asleep(task), 10)
        assert worker.scheduler is not None
        assert worker.scheduler.cycles_run == 1  # the first round ran; the next is an hour away
        worker.stop()
        assert await _settles(task, turns=5)  # not at a 50 ms tick nor at the poll: at once
        assert task.exception() is None

    asyncio.run(main())


def _scripted_decisions(door: str) -> list[Due | None]:
    """What each of the worker's waits waits for, through ``door``, in a fixed scenario: a
    burst, then the clock moved (and the worker woken) between rounds."""
    w = World(MemoryStorage(), inline=False)
    w.clock.tick = timedelta(0)  # exact figures
    worker = Worker(
        w.handler,
        w.reconciler,
        every=timedelta(hours=2),
        poll=900,
        coalesce=0,
        prune_every=timedelta(hours=1),
    )
    _deliver(w, "s1", "burst")
    moves = [timedelta(0), timedelta(minutes=50), timedelta(minutes=10), timedelta(minutes=55)]
    decisions: list[Due | None] = []
    finished = threading.Event()
    decide = worker._due

    def due(report: ProcessReport | None) -> Due | None:
        decision = decide(report)
        decisions.append(decision)
        if len(decisions) <= len(moves):
            w.clock.advance(moves[len(decisions) - 1])
            worker.wake()
        elif door == "async":
            worker.stop()
        else:
            finished.set()
        return decision

    worker._due = due  # type: ignore[method-assign]
    if door == "sync":
        worker.start()
        assert finished.wait(10)
        worker.stop(timeout=10)
    else:

        async def main() -> None:
            await asyncio.wait_for(worker.run(), 10)

        asyncio.run(main())
    return decisions


def test_both_doors_make_the_same_due_decisions() -> None:
    expected = [
        Due("drain", 0.0, wakeable=False),  # a burst: the coalescing window (0 s here)
        Due("drain", 900.0),  # idle: the next poll (the cycle in 2 h, the prune in 1 h)
        Due("prune", 600.0),  # 50 min later: the prune comes before the poll
        Due("drain", 900.0),  # pruned: the next one in an hour
        Due("cycle", 300.0),  # 55 min later: the cycle and the prune tie, the cycle first
    ]
    assert _scripted_decisions("sync") == expected
    assert _scripted_decisions("async") == expected


def test_without_a_handler_the_worker_sleeps_until_its_cycle_or_prune() -> None:
    w = World(MemoryStorage(), inline=False)
    w.clock.tick = timedelta(0)
    worker = Worker(reconciler=w.reconciler, poll=1.0)
    assert worker._due(worker.run_once()) == Due("prune", HOUR)  # no poll: nothing to drain
    quiet = Worker(reconciler=w.reconciler, every=timedelta(hours=4), retention=None)
    assert quiet._due(quiet.run_once()) == Due("cycle", 4 * HOUR)


def test_a_failed_round_is_logged_and_tried_again_after_a_poll(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    w = World(MemoryStorage(), inline=False)
    worker = Worker(w.handler, w.reconciler, poll=7.0)

    def broken() -> ProcessReport:
        raise RuntimeError("storage unavailable")

    monkeypatch.setattr(w.handler, "process_pending", broken)
    with caplog.at_level(logging.ERROR, logger="syncrecon.worker"):
        # Not at once, though the cycle and the prune are due: no busy loop on a failure.
        assert worker._round() == Due("retry", 7.0)
    assert "worker round failed" in caplog.text
