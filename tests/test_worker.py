"""The worker: drains the inbox, runs cycles on schedule, loads apps by import path."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastloop_helpers import World
from syncrecon.storage.memory import MemoryStorage
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
        with pytest.raises(TypeError):
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
