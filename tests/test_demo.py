"""``syncrecon demo``: its report and JSON, the database it keeps, its progress lines, and the
demo app (:mod:`syncrecon.demo_app`) through which ``queue resolve`` writes to its systems.

Runs are small (``--records 120``) and in-process (``syncrecon.__main__.main``); one test runs
the printed commands as subprocesses, exactly as a reader would paste them.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import random
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from syncrecon import Change, ChangeOp, ConfigurationError, demo_app
from syncrecon.__main__ import main
from syncrecon._demo import STEPS, Progress, check_database, render, run_demo
from syncrecon._scenario import hubspot_deal, simulated_pair, to_salesforce
from syncrecon.dashboard import build_dashboard
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import ManualClock

RECORDS = "120"
SEED = "7"


def _demo(*args: str) -> tuple[int, str, str]:
    """``syncrecon demo ARGS`` in-process: the exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["demo", "--records", RECORDS, "--seed", SEED, *args])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """One demo run kept in a directory of its own: the database, the JSON and the text."""
    where = tmp_path_factory.mktemp("demo")
    db = where / "demo.sqlite"
    status, out, err = _demo("--json", "--db", str(db))
    assert status == 0, err
    summary = json.loads(out)
    status, text, err = _demo("--db", str(db))  # the same run again: replaces the database
    assert status == 0, err
    return db, summary, text


@pytest.fixture
def demo_dir(
    kept: tuple[Path, dict[str, Any], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A copy of the kept run under the default names in ``tmp_path``, the current directory."""
    db, _, _ = kept
    shutil.copy(db, tmp_path / demo_app.DEFAULT_DB)
    shutil.copy(demo_app.systems_path(db), demo_app.systems_path(tmp_path / demo_app.DEFAULT_DB))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(demo_app.ENV_VAR, raising=False)
    return tmp_path


# -- the JSON and the dashboard -----------------------------------------------------------------


def test_the_json_is_one_object_with_the_runs_numbers(
    kept: tuple[Path, dict[str, Any], str],
) -> None:
    db, out, _ = kept
    assert out["converged"] is True
    assert out["disagreeing_fields"] == 0
    assert out["seed"] == int(SEED)
    assert out["records_per_system"] == int(RECORDS)
    assert out["db"] == str(db)
    assert out["systems_file"] == str(demo_app.systems_path(db))
    assert out["app"] == "syncrecon.demo_app:syncs"
    assert len(out["cycles"]) == out["reconciliation"]["cycles"] == 4
    assert set(out["auto_resolved"]["by_rule"]) >= {"merge", "recency", "source_of_truth"}
    assert {"deal_value", "contract_dates"} <= set(out["escalated"]["by_category"])
    events = out["fast_loop"]["events"]["by_outcome"]
    # Both loops ran: the fast loop applied webhooks, dropped repeated deliveries, recognized
    # the webhooks of syncrecon's own writes and refused changes older than applied ones.
    for outcome in ("applied", "duplicate", "echo", "stale"):
        assert events[outcome] > 0, outcome
    assert "rejected" not in events  # every simulated webhook is signed and well formed
    calls = out["api_calls"]
    assert calls["reconciliation"]["total"] == sum(
        sum(c["api_calls"].values()) for c in out["cycles"]
    )
    assert calls["total"] == calls["reconciliation"]["total"] + calls["fast_loop"]["total"]
    assert calls["fast_loop"]["total"] > 0


def test_the_numbers_are_the_dashboards(kept: tuple[Path, dict[str, Any], str]) -> None:
    """The same words mean the same numbers: the demo's and the dashboard's of its database."""
    db, out, _ = kept
    storage = SQLiteStorage(db)
    try:
        board = build_dashboard(storage).to_dict()
    finally:
        storage.close()
    assert out["fast_loop"]["events"]["total"] == board["fast_loop_events"]["total"]
    assert out["fast_loop"]["events"]["by_outcome"] == board["fast_loop_events"]["by_outcome"]
    rec = board["reconciliation"]
    for key in ("cycles", "discrepancies_found", "new_discrepancies"):
        assert out["reconciliation"][key] == rec[key], key
    assert out["reconciliation"]["cycles_by_mode"] == rec["cycles_by_mode"]
    per_cycle = [(c["discrepancies"], c["auto_resolved"], c["escalated"]) for c in rec["per_cycle"]]
    assert per_cycle == [
        (c["discrepancies_found"], sum(c["auto_resolved"].values()), sum(c["escalated"].values()))
        for c in out["cycles"]
    ]
    assert out["auto_resolved"] == board["auto_resolved"]
    assert out["escalated"] == board["escalated"]
    assert out["queue"]["queue_depth"] == board["time_to_resolution"]["queue_depth"]
    assert out["escalated"]["by_category"] == board["time_to_resolution"]["queue_by_category"]
    # What the database holds, read directly.
    with contextlib.closing(sqlite3.connect(db)) as conn:
        items = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        applied = conn.execute("SELECT count(*) FROM inbox WHERE outcome = 'applied'").fetchone()
    assert items == out["queue"]["items"] == out["reconciliation"]["new_discrepancies"]
    assert applied[0] == out["fast_loop"]["events"]["by_outcome"]["applied"]


def test_the_demo_is_reproducible_with_a_seed(tmp_path: Path) -> None:
    db = str(tmp_path / "again.sqlite")
    first = json.loads(_demo("--json", "--db", db)[1])
    second = json.loads(_demo("--json", "--db", db)[1])
    assert first == second
    other = json.loads(_demo("--json", "--db", db, "--seed", "8")[1])
    assert other["fast_loop"] != first["fast_loop"]


# -- the text report ----------------------------------------------------------------------------


def test_the_report_has_its_sections_and_the_jsons_numbers(
    kept: tuple[Path, dict[str, Any], str],
) -> None:
    db, out, text = kept
    assert not re.search(r"\{'\w+': \d+", text)
    headings = [line for line in text.splitlines() if re.match(r"^\d\. ", line)]
    assert [h.split(" ", 1)[1].split(" (")[0] for h in headings] == [
        "What was set up",
        "The fast loop: a simulated day of edits, each sent as a webhook",
        "The reconciliation cycles",
        "The operator queue",
        "What to try next",
    ]
    assert text.startswith("syncrecon demo: HubSpot deals <-> Salesforce opportunities")
    assert "Result: the systems agree on every field not waiting for an operator (" in text
    rec, esc = out["reconciliation"], out["escalated"]
    events = out["fast_loop"]["events"]
    assert f"Fast-loop events: {events['total']} " in text
    assert (
        f"{rec['cycles']} cycles (full {rec['cycles']}), {rec['discrepancies_found']}"
        " discrepancies found (one that waits is counted by every cycle)" in text
    )
    settled = rec["new_discrepancies"] - esc["total"]
    assert (
        f"{rec['new_discrepancies']} new queue items: {settled} settled automatically,"
        f" {esc['total']} sent to an operator" in text
    )
    assert f"Auto-resolved by rule: {out['auto_resolved']['total']} " in text
    assert f"Sent to an operator, by category: {esc['total']} " in text
    assert f"{out['queue']['queue_depth']} wait for an operator now" in text
    calls = out["api_calls"]
    for label, key in (("reconciliation cycles", "reconciliation"), ("fast loop", "fast_loop")):
        row = next(line for line in text.splitlines() if line.strip().startswith(label))
        assert row.split()[-1] == str(calls[key]["total"])
    both = next(line for line in text.splitlines() if line.strip().startswith("both loops"))
    assert both.split()[-1] == str(calls["total"])
    # What to try next: the exact commands, with the database kept where it says.
    assert f"The database is kept at {db.resolve()}," in text
    for step in out["next"]:
        assert f"    {step['command']}\n" in text + "\n"


def _table(text: str, header: str, count: int) -> tuple[str, list[tuple[int, int]], list[str]]:
    """The table whose header starts with ``header``: the header, its columns (from the rule
    of dashes under it) and its ``count`` rows."""
    lines = text.splitlines()
    n = next(i for i, line in enumerate(lines) if line.strip().startswith(header))
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[n + 1])]
    return lines[n], spans, lines[n + 2 : n + 2 + count]


def test_the_reports_tables_are_aligned(kept: tuple[Path, dict[str, Any], str]) -> None:
    _, out, text = kept
    day = [k for k in out["edits"] if "quarantined" not in k and "schema" not in k]
    tables = {
        "field (HubSpot / Salesforce)": len(out["setup"]["fields"]),
        "what people did": len(day) - 1,  # "faults injected" came between the cycles
        "what went wrong on purpose": 8,
        "outcome ": len(out["fast_loop"]["events"]["by_outcome"]),
        "cycle ": len(out["cycles"]) + 1,  # and the total
        "rule ": len(out["auto_resolved"]["by_rule"]),
        "loop ": 3,
        "category ": len(out["escalated"]["by_category"]),
        "id ": len(out["queue"]["examples"]),
    }
    for header, count in tables.items():
        head, spans, rows = _table(text, header, count)
        assert len(rows) == count, header
        assert all(rows), header
        for row in [head, *rows]:
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert row[end:start].strip() == "", (header, row)  # the gaps are blank
        for start, end in spans[:-1]:
            cells = [row[start:end].strip() for row in rows]
            if all(re.fullmatch(r"[0-9.]+%?", c) for c in cells):  # numbers: right-aligned
                assert all(row[end - 1] != " " for row in rows), (header, start)
    cycles = _table(text, "cycle ", len(out["cycles"]) + 1)[2]
    assert cycles[-1].split()[:2] == ["all", str(out["reconciliation"]["discrepancies_found"])]


def test_render_reads_the_summary_only() -> None:
    summary = run_demo(seed=3, records=20)
    assert summary["db"] is None
    assert summary["next"] == []
    text = render(summary)
    assert "The database was not kept: run with --db PATH to keep it." in text


# -- the database it keeps ----------------------------------------------------------------------


def test_the_database_is_kept_at_a_predictable_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status, out, err = _demo("--json")
    assert status == 0, err
    summary = json.loads(out)
    assert summary["db"] == "syncrecon-demo.sqlite"
    assert summary["systems_file"] == "syncrecon-demo.systems.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "syncrecon-demo.sqlite",
        "syncrecon-demo.systems.json",
    ]
    # The default path needs no environment variable in the commands.
    assert all(demo_app.ENV_VAR not in s["command"] for s in summary["next"])
    # Run again: both files are replaced, nothing is left behind.
    Path("syncrecon-demo.sqlite-wal").write_bytes(b"a previous run's log")
    assert _demo("--json")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "syncrecon-demo.sqlite",
        "syncrecon-demo.systems.json",
    ]


def test_another_db_path_puts_the_variable_in_the_commands(
    kept: tuple[Path, dict[str, Any], str],
) -> None:
    db, out, _ = kept
    resolve = next(s["command"] for s in out["next"] if " resolve " in s["command"])
    assert resolve.startswith(f"{demo_app.ENV_VAR}={shlex.quote(str(db))} python -m syncrecon")
    assert resolve.endswith("--take left --app syncrecon.demo_app:syncs")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("my own data"), "exists and is not a demo database"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: None, "no directory"),
    ],
    ids=["foreign-file", "directory", "no-parent"],
)
def test_the_demo_never_replaces_what_it_did_not_make(
    tmp_path: Path, make: Any, message: str
) -> None:
    db = tmp_path / "mine.sqlite" if message != "no directory" else tmp_path / "no" / "x.sqlite"
    make(db)
    before = sorted(tmp_path.rglob("*"))
    status, out, err = _demo("--db", str(db))
    assert status == 2
    assert out == ""
    assert err.startswith("syncrecon demo: ")
    assert message in err
    assert len(err.splitlines()) == 1
    assert sorted(tmp_path.rglob("*")) == before
    assert check_database(db) is not None


def test_records_must_be_positive() -> None:
    status, out, err = _demo("--records", "0")
    assert (status, out) == (2, "")
    assert err == "syncrecon demo: --records must be at least 1, got 0\n"


# -- progress -----------------------------------------------------------------------------------


def test_without_a_terminal_progress_is_one_step_line_each(tmp_path: Path) -> None:
    status, _, err = _demo("--json", "--db", str(tmp_path / "p.sqlite"))
    assert status == 0
    lines = err.splitlines()
    assert len(lines) == STEPS
    assert [line.split(" ", 2)[1] for line in lines] == [f"{n}/{STEPS}" for n in range(1, 7)]
    assert all(line.startswith("step ") for line in lines)
    assert "\r" not in err
    assert "\x1b" not in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_progress_rewrites_one_line_and_clears_it() -> None:
    stream = _Terminal()
    progress = Progress(STEPS, stream, every=0.0)
    run_demo(seed=3, records=20, progress=progress)
    progress.close()
    text = stream.getvalue()
    assert "\n" not in text
    frames = text.split("\r\x1b[K")
    assert frames[0] == ""  # it starts by clearing the line
    assert frames[-1] == ""  # and ends with a clean one
    assert re.match(r"\[1/6\] +\d+\.\ds  20 deals per system and the first cycle$", frames[1])
    assert any(re.search(r"a day of edits through the fast loop: \d+/20 edits$", f) for f in frames)
    assert [f[:5] for f in frames[1:-1] if f][-1] == "[6/6]"


def test_progress_fits_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "get_terminal_size", lambda: os.terminal_size((40, 24)))
    stream = _Terminal()
    progress = Progress(2, stream, every=0.0)
    progress.step("a title much longer than forty columns of a terminal")
    progress.update(450, 900, "edits")
    frames = [f for f in stream.getvalue().split("\r\x1b[K") if f]
    assert all(len(f) <= 39 for f in frames), frames
    assert frames[-1].endswith("…: 450/900 edits")


def test_progress_without_a_stream_writes_nothing() -> None:
    progress = Progress(2, None)
    progress.step("quiet")
    progress.update(1, 2, "things")
    progress.close()
    assert progress.n == 1


# -- the demo app: resolving after the demo has exited -------------------------------------------


def _amounts(db: Path, item: dict[str, Any]) -> tuple[Any, Any]:
    left, right = demo_app.load_systems(demo_app.systems_path(db))
    return left.get(item["left_key"]).fields["amount"], right.get(item["right_key"]).fields[
        "Amount"
    ]


def _first(out: dict[str, Any], category: str) -> dict[str, Any]:
    return next(e for e in out["queue"]["examples"] if e["category"] == category)


def test_queue_resolve_writes_through_the_demo_app_and_the_next_cycle_sees_it(
    kept: tuple[Path, dict[str, Any], str],
    demo_dir: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, out, _ = kept
    db = demo_dir / demo_app.DEFAULT_DB
    item = _first(out, "deal_value")
    hubspot, salesforce = _amounts(db, item)
    assert hubspot != salesforce
    argv = ["queue", "--db", demo_app.DEFAULT_DB, "resolve", str(item["id"]), "--take", "left"]
    assert main([*argv, "--app", "syncrecon.demo_app:syncs", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["outcome"], result["written"]) == ("resolved", ["right"])
    assert _amounts(db, item) == (hubspot, hubspot)  # saved in the systems file

    # The next cycle runs over the saved systems: one discrepancy fewer, nothing to write.
    with caplog.at_level(logging.INFO, logger="syncrecon"):
        assert main(["worker", "syncrecon.demo_app:worker", "--once"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"processed": 0}
    # The worker logs the cycle as a person reads it, with the systems' names.
    assert "writes: hubspot 0, salesforce 0" in caplog.text
    assert "{'" not in caplog.text
    storage = SQLiteStorage(db)
    try:
        cycles = storage.list_cycles(limit=10)
        board = build_dashboard(storage)
    finally:
        storage.close()
    assert len(cycles) == 5
    newest, before = cycles[0].report, cycles[1].report
    assert newest["discrepancies_found"] == before["discrepancies_found"] - 1
    assert sum(newest["writes"].values()) == 0
    assert board.time_to_resolution.resolved == 1
    assert board.time_to_resolution.queue_depth == out["queue"]["queue_depth"] - 1


def test_the_demo_app_follows_the_environment_variable(
    kept: tuple[Path, dict[str, Any], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db, out, _ = kept
    copy = tmp_path / "elsewhere.sqlite"
    shutil.copy(db, copy)
    shutil.copy(demo_app.systems_path(db), demo_app.systems_path(copy))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(demo_app.ENV_VAR, str(copy))
    assert demo_app.database_path() == copy
    item = _first(out, "contract_dates")
    argv = ["queue", "--db", str(copy), "resolve", str(item["id"]), "--take", "right"]
    assert main([*argv, "--app", "syncrecon.demo_app:syncs"]) == 0
    assert "resolved" in capsys.readouterr().out
    left, right = demo_app.load_systems(demo_app.systems_path(copy))
    assert (
        left.get(item["left_key"]).fields["closedate"]
        == right.get(item["right_key"]).fields["CloseDate"]
    )
    assert isinstance(left.get(item["left_key"]).fields["closedate"], date)


def test_the_printed_commands_run_as_printed(
    kept: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    """What to try next, pasted into a shell: every command works (subprocesses)."""
    db, out, _ = kept
    copy = tmp_path / "pasted.sqlite"
    shutil.copy(db, copy)
    shutil.copy(demo_app.systems_path(db), demo_app.systems_path(copy))
    env = {k: v for k, v in os.environ.items() if k != demo_app.ENV_VAR}
    for step in out["next"]:
        command = step["command"].replace(shlex.quote(str(db)), shlex.quote(str(copy)))
        words = shlex.split(command)
        run_env = dict(env)
        while "=" in words[0]:
            name, _, value = words.pop(0).partition("=")
            run_env[name] = value
        assert words[:3] == ["python", "-m", "syncrecon"]
        proc = subprocess.run(
            [sys.executable, *words[1:]],
            cwd=tmp_path,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, (command, proc.stderr)
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["queue", "--db", "q.sqlite", "resolve", "1", "--take", "left", "--app",
             "syncrecon.demo_app:syncs"],
            "syncrecon queue: cannot load 'syncrecon.demo_app:syncs': calling it raised"
            " ConfigurationError: no demo systems at syncrecon-demo.systems.json: run"
            " `python -m syncrecon demo` first, or set SYNCRECON_DEMO_DB to the demo's database",
        ),
        (
            ["worker", "syncrecon.demo_app:worker", "--once"],
            "syncrecon worker: cannot load 'syncrecon.demo_app:worker': calling it raised"
            " ConfigurationError: no demo database at syncrecon-demo.sqlite: run"
            " `python -m syncrecon demo` first",
        ),
    ],
    ids=["queue", "worker"],
)  # fmt: skip
def test_without_a_demo_the_demo_app_says_so_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(demo_app.ENV_VAR, raising=False)
    SQLiteStorage(tmp_path / "q.sqlite").setup()
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert captured.err.startswith(message)


def test_a_file_that_is_not_a_systems_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.systems.json"
    path.write_text('{"format": "something else"}')
    with pytest.raises(ConfigurationError, match="not a demo systems file"):
        demo_app.load_systems(path)
    path.write_text("not json")
    with pytest.raises(ConfigurationError, match="not a demo systems file"):
        demo_app.load_systems(path)


def test_the_systems_file_keeps_everything_a_sync_needs(tmp_path: Path) -> None:
    clock = ManualClock()
    left, right = simulated_pair(clock)
    rng = random.Random(1)
    for i in range(3):
        deal = hubspot_deal(i, rng)
        left.create(deal)
        right.create(to_salesforce(deal))
    left.delete("hs-3")  # a deleted key is never given again
    path = tmp_path / "d.systems.json"
    demo_app.save_systems(path, left, right, database=tmp_path / "d.sqlite", about={"seed": 1})
    assert len(path.read_text().splitlines()) > 6  # one record per line
    head = json.loads(path.read_text())
    assert (head["format"], head["database"], head["seed"]) == (demo_app.FORMAT, "d.sqlite", 1)

    again_left, again_right = demo_app.load_systems(path, clock=clock)
    assert again_left.records() == left.records()  # values, dates, lists and times
    assert again_right.records() == right.records()
    assert again_left.capabilities == left.capabilities
    assert again_right.describe_fields() == right.describe_fields()
    assert again_left.create({"email": "new@example.com"}) == "hs-4"
    # A write through the connector is saved at once.
    again_right.write_records([Change(op=ChangeOp.UPDATE, key="0061", fields={"Amount": 5})])
    assert demo_app.load_systems(path)[1].get("0061").fields["Amount"] == 5


def test_the_demo_apps_names() -> None:
    from test_exported_members import isort_style

    names = list(demo_app.__all__)
    assert names == sorted(names, key=isort_style)
    assert all(hasattr(demo_app, name) for name in names)
