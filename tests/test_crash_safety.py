"""Crash safety: a cycle killed (SIGKILL) at any point leaves SQLite consistent, and the next
cycle reaches the same end state as an uninterrupted run.

Each step runs ``tests/crash_worker.py`` in a fresh interpreter on a real SQLite file. The
simulated systems live in a JSON file the worker rewrites after every write they accept, so
what a killed process wrote to the "remote" systems stays written, as it would in a SaaS tool.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # 23 subprocesses: 20-30 s in all

WORKER = Path(__file__).with_name("crash_worker.py")
SEED = 20260101
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _at(hours: int) -> str:
    return (T0 + timedelta(hours=hours)).isoformat()


def _worker(
    folder: Path, step: str, hours: int, kill: str = "none"
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(WORKER), str(folder), step, "--seed", str(SEED)]
    command += ["--at", _at(hours), "--kill", kill]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _ok(folder: Path, step: str, hours: int) -> dict[str, Any] | None:
    done = _worker(folder, step, hours)
    assert done.returncode == 0, f"{step} failed (seed {SEED}):\n{done.stderr}"
    return json.loads(done.stdout) if step == "cycle" else None


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _end_state(folder: Path) -> dict[str, Any]:
    systems = json.loads((folder / "systems.json").read_text("utf-8"))
    records = {
        name: {r["key"]: r["fields"] for r in data["records"]} for name, data in systems.items()
    }
    db = sqlite3.connect(folder / "sync.sqlite")
    try:
        links = db.execute(
            "SELECT left_key, right_key, natural_key, base FROM links ORDER BY left_key"
        ).fetchall()
        items = Counter(db.execute("SELECT status, field, category, rule FROM items").fetchall())
    finally:
        db.close()
    return {
        "records": records,
        "links": [(lk, rk, nk, json.loads(base)) for lk, rk, nk, base in links],
        "items": dict(sorted(items.items(), key=repr)),
    }


def _integrity(folder: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(folder / "sync.sqlite")
    try:
        return db.execute("PRAGMA integrity_check").fetchall()
    finally:
        db.close()


@pytest.fixture(scope="module")
def before_the_cycle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Systems linked by a first cycle, then drifted: the state the killed cycle starts from."""
    folder = tmp_path_factory.mktemp("crash") / "start"
    folder.mkdir()
    _ok(folder, "setup", 0)
    _ok(folder, "cycle", 1)
    _ok(folder, "drift", 2)
    return folder


@pytest.fixture(scope="module")
def uninterrupted(before_the_cycle: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = _copy(before_the_cycle, tmp_path_factory.mktemp("crash") / "uninterrupted")
    report = _ok(folder, "cycle", 3)
    _ok(folder, "cycle", 4)  # a converged sync: this one writes nothing
    return report, _end_state(folder)


def test_the_uninterrupted_run_exercises_every_kind_of_write(uninterrupted: Any) -> None:
    report, state = uninterrupted
    assert report["writes"]["left"] > 0
    assert report["writes"]["right"] > 3  # several batches of 3
    assert report["created"] == {"left": 0, "right": 3}
    assert report["deleted"] == {"left": 0, "right": 2}
    assert set(report["auto_resolved"]) == {
        "create_on",
        "delete_from",
        "merge",
        "recency",
        "source_of_truth",
    }
    assert report["escalated"] == {"amount": 1, "deletion": 1}
    assert state["items"]


# The uninterrupted cycle writes the left side in 2 batches (the second holds only a write to
# a record also written on the right, so its step is empty and not committed), then the right
# side in 4 batches of updates and deletes (batches 1 and 3 each hold a delete) and 1 batch of
# creates. Its storage commits: 1 the compare step, 2 the first left batch, 3-6 the right
# batches, 7 the creates' links, 8 the bases of links written on both sides, 9 the report.
KILL_POINTS = [
    pytest.param("after:list_records:salesforce:1", id="during-listing"),
    pytest.param("commit:1", id="inside-the-compare-commit"),
    pytest.param("before:write_records:hubspot:1", id="before-any-write"),
    pytest.param("after:write_records:hubspot:1", id="after-a-left-batch-before-its-commit"),
    pytest.param("before:write_records:salesforce:1", id="between-left-and-right-writes"),
    pytest.param(
        "after:write_records:salesforce:1",
        id="after-a-delete-batch-before-its-commit",
    ),
    pytest.param("after:write_records:salesforce:2", id="after-an-update-batch-before-its-commit"),
    pytest.param("commit:5", id="inside-a-delete-batch-commit"),
    pytest.param("after:write_records:salesforce:5", id="after-creates-before-their-links"),
    pytest.param("commit:8", id="inside-the-shared-bases-commit"),
    pytest.param("commit:final", id="after-writes-inside-the-final-commit"),
]


@pytest.mark.parametrize("kill", KILL_POINTS)
def test_a_killed_cycle_is_completed_by_the_next_one(
    kill: str, before_the_cycle: Path, uninterrupted: Any, tmp_path: Path
) -> None:
    folder = _copy(before_the_cycle, tmp_path / "killed")

    killed = _worker(folder, "cycle", 3, kill)

    assert killed.returncode == -signal.SIGKILL, (
        f"the worker did not die at {kill} (seed {SEED}): rc={killed.returncode}\n"
        f"{killed.stdout}\n{killed.stderr}"
    )
    assert _integrity(folder) == [("ok",)]
    if kill == "commit:final":
        db = sqlite3.connect(folder / "sync.sqlite")
        try:  # the step died before COMMIT: none of it is stored
            assert db.execute("SELECT count(*) FROM cycles").fetchone()[0] == 1
        finally:
            db.close()

    _ok(folder, "cycle", 4)  # the next cycle, to completion

    expected = uninterrupted[1]
    actual = _end_state(folder)
    assert actual["records"] == expected["records"], f"systems differ (seed {SEED}, {kill})"
    assert actual["links"] == expected["links"], f"links differ (seed {SEED}, {kill})"
    assert actual["items"] == expected["items"], f"queue differs (seed {SEED}, {kill})"


def _worker_at(folder: Path, step: str, at: datetime) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(WORKER), str(folder), step, "--seed", str(SEED)]
    command += ["--at", at.isoformat(), "--kill", "none"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_a_killed_cycles_successor_runs_within_one_lease_ttl(
    before_the_cycle: Path, uninterrupted: Any, tmp_path: Path
) -> None:
    folder = _copy(before_the_cycle, tmp_path / "killed")
    killed = _worker(folder, "cycle", 3, "after:list_records:salesforce:1")
    assert killed.returncode == -signal.SIGKILL

    # Ten seconds later the dead cycle's lease (45 s by default) still stands, and the error
    # says whose it is and until when.
    early = _worker_at(folder, "cycle", T0 + timedelta(hours=3, seconds=10))
    assert early.returncode != 0
    assert "LeaseHeldError" in early.stderr
    assert "holds the lease until" in early.stderr
    assert (T0 + timedelta(hours=3, seconds=45)).isoformat() in early.stderr

    # Within one ttl of the kill, the successor runs and completes the work.
    later = _worker_at(folder, "cycle", T0 + timedelta(hours=3, seconds=46))
    assert later.returncode == 0, later.stderr
    assert _end_state(folder)["records"] == uninterrupted[1]["records"]
