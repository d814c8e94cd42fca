"""The worker: drains the inbox, runs cycles on schedule, loads apps by import path."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fastloop_helpers import World
from syncrecon import AppLoadError, Retention
from syncrecon.storage.memory import MemoryStorage
from syncrecon.testing import ManualClock
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
