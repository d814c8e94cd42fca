"""The command line: the demo as a process, the benchmark on a small run, and apps named by
import path (the other commands' output and errors: test_cli_commands.py, test_demo.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncrecon import AppLoadError, ConfigurationError
from syncrecon.__main__ import main
from syncrecon.queue import load_syncs
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.worker import load


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncrecon", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_demo_runs_as_a_process_and_keeps_its_files(tmp_path: Path) -> None:
    """``python -m syncrecon demo`` as a reader runs it; the rest is in test_demo.py."""
    proc = subprocess.run(
        [sys.executable, "-m", "syncrecon", "demo", "--records", "120"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Result: the systems agree on every field not waiting for an operator (" in (proc.stdout)
    assert "python -m syncrecon queue --db syncrecon-demo.sqlite list" in proc.stdout
    assert proc.stderr.splitlines()[0] == "step 1/6 120 deals per system and the first cycle"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "syncrecon-demo.sqlite",
        "syncrecon-demo.systems.json",
    ]


def test_bench_small_run_reports_its_figures() -> None:
    proc = _run("bench", "--json", "--records", "3000", "--deepdiff-sample", "200")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in (
        "records_per_side",
        "api_calls",
        "api_call_floor",
        "compare_s_per_100k",
        "deepdiff_s_per_100k",
        "peak_rss_mb",
    ):
        assert key in out
    assert out["records_per_side"] == 3000
    assert out["api_calls"] >= out["api_call_floor"] > 0
    assert out["converged_rerun_writes"] == 0
    assert out["discrepancies_found"] > 0
    # The connectors over httpx against the emulators: a full pass is its listing pages plus
    # the one describe call, and the rate limiter earns no 429.
    assert out["hubspot_full_pass_requests"] == math.ceil(3000 / 100) + 1
    assert out["salesforce_full_pass_requests"] == math.ceil(3000 / 2000) + 1
    assert out["hubspot_records_listed"] == out["salesforce_records_listed"] == 3000
    assert out["rate_limited_429s"] == 0
    assert out["connector_cpu_us_per_record"] > 0
    # syncrecon's own CPU: the phases less the connectors' share, which is reported apart.
    assert out["steady_cycle_phases_cpu_s"]["connectors"] > 0
    assert 0 < out["steady_cycle_cpu_us_per_record"] < out["first_cycle_cpu_us_per_record"]


# --------------------------------------------------------------------------------------------
# Apps named by import path: the current directory is importable, and a bad path is one line


APP_MODULE = """
from syncrecon import FieldMap, Reconciler, SyncDefinition, recency
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import ManualClock, SimulatedSystem

clock = ManualClock()
deals = SyncDefinition(
    name="deals",
    left=SimulatedSystem("a", clock=clock),
    right=SimulatedSystem("b", clock=clock),
    fields=[FieldMap(left="x", right="X", policy=recency())],
)
reconciler = Reconciler(deals, SQLiteStorage("app.sqlite"), clock=clock)
answer = 42


def make_reconciler():
    return reconciler
"""


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``tmp_path`` as the current directory, holding ``cliapp/sync.py``; nothing on sys.path."""
    (tmp_path / "cliapp").mkdir()
    (tmp_path / "cliapp" / "__init__.py").write_text("")
    (tmp_path / "cliapp" / "sync.py").write_text(APP_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path
    for name in [m for m in sys.modules if m == "cliapp" or m.startswith("cliapp.")]:
        del sys.modules[name]


def _one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_the_worker_imports_an_app_from_the_current_directory(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["worker", "cliapp.sync:reconciler", "--once"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"processed": 0}
    assert main(["worker", "cliapp.sync:make_reconciler", "--once"]) == 0  # a factory


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "nope.mod:app",
            "syncrecon worker: cannot load 'nope.mod:app': cannot import 'nope.mod':"
            " No module named 'nope'",
        ),
        (
            "cliapp.sync:nothing",
            "syncrecon worker: cannot load 'cliapp.sync:nothing': 'cliapp.sync' has no"
            " attribute 'nothing'",
        ),
        (
            "cliapp.sync:deals.nothing",
            "syncrecon worker: cannot load 'cliapp.sync:deals.nothing': 'cliapp.sync:deals'"
            " has no attribute 'nothing'",
        ),
        (
            "cliapp.sync",
            "syncrecon worker: cannot load 'cliapp.sync': expected 'package.module:attribute'"
            " (like myapp.sync:worker)",
        ),
        ("cliapp.sync:", "expected 'package.module:attribute'"),
        (
            "json:dumps",
            "syncrecon worker: cannot load 'json:dumps': it is a callable that needs arguments",
        ),
        (
            "cliapp.sync:answer",
            "syncrecon worker: 'cliapp.sync:answer' is not a Worker, WebhookHandler or"
            " Reconciler (nor a factory of one): int",
        ),
        ("cliapp.sync:deals", "is not a Worker, WebhookHandler or Reconciler"),
    ],
)
def test_a_bad_worker_app_is_one_line_and_status_2(
    app_dir: Path, capsys: pytest.CaptureFixture[str], path: str, message: str
) -> None:
    assert main(["worker", path, "--once"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = _one_line(captured.err)
    assert line.startswith("syncrecon worker: ")
    assert message in line


def test_a_module_that_fails_on_import_is_one_line(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (app_dir / "broken.py").write_text("raise RuntimeError('no config')\n")
    assert main(["worker", "broken:app"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line == (
        "syncrecon worker: cannot load 'broken:app': importing 'broken' raised RuntimeError:"
        " no config"
    )


def test_load_raises_the_typed_error(app_dir: Path) -> None:
    with pytest.raises(AppLoadError) as caught:
        load("json:dumps")
    assert isinstance(caught.value, ConfigurationError)
    with pytest.raises(AppLoadError):
        load_syncs("json:dumps")
    assert load_syncs("cliapp.sync:deals")[0].name == "deals"


def test_a_bad_queue_app_is_one_line_and_status_2(
    app_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    SQLiteStorage(app_dir / "q.sqlite").setup()
    for path, message in [
        ("json:dumps", "syncrecon queue: cannot load 'json:dumps': it is a callable that needs"),
        ("nope.mod:deals", "cannot import 'nope.mod': No module named 'nope'"),
        ("cliapp.sync:answer", "syncrecon queue: 'cliapp.sync:answer' is not a SyncDefinition"),
    ]:
        argv = ["queue", "--db", "q.sqlite", "resolve", "1", "--take", "left", "--app", path]
        assert main(argv) == 2
        assert message in _one_line(capsys.readouterr().err)
    # A good path from the current directory loads; the item itself does not exist.
    argv = ["queue", "--db", "q.sqlite", "resolve", "1", "--take", "left"]
    assert main([*argv, "--app", "cliapp.sync:deals"]) == 2
    assert "no queue item" in _one_line(capsys.readouterr().err).lower()


SCRIPT = Path(sys.executable).with_name("syncrecon")


def _script(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin"},  # no PYTHONPATH: only the current directory helps
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(not SCRIPT.exists(), reason="the syncrecon console script is not installed")
def test_the_console_script_imports_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "sync.py").write_text(APP_MODULE)
    proc = _script(tmp_path, "worker", "myapp.sync:reconciler", "--once")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"processed": 0}
    db = str(tmp_path / "app.sqlite")
    proc = _script(tmp_path, "queue", "--db", db, "resolve", "1", "--take", "left",
                   "--app", "myapp.sync:deals")  # fmt: skip
    assert proc.returncode == 2  # loaded; there is no item 1
    assert "cannot import" not in proc.stderr

    proc = _script(tmp_path, "worker", "nope.mod:app", "--once")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        "syncrecon worker: cannot load 'nope.mod:app': cannot import 'nope.mod':"
        " No module named 'nope'\n"
    )
    proc = _script(tmp_path, "worker", "json:dumps")
    assert proc.returncode == 2
    assert _one_line(proc.stderr).startswith("syncrecon worker: cannot load 'json:dumps': it is")
    proc = _script(tmp_path, "queue", "--db", db, "resolve", "1", "--app", "json:dumps")
    assert proc.returncode == 2
    assert _one_line(proc.stderr).startswith("syncrecon queue: cannot load 'json:dumps': it is")


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``syncrecon queue list --json | head -1``: the reader goes away, no traceback."""
    from datetime import UTC, datetime

    from syncrecon.storage import Discrepancy, Status, Step

    db = tmp_path / "q.sqlite"
    storage = SQLiteStorage(db)
    at = datetime(2026, 3, 1, tzinfo=UTC)
    storage.commit(
        Step(
            at=at,
            new_items=[
                Discrepancy(
                    sync="deals", field=f"f{i}", status=Status.ESCALATED, detected_at=at,
                    left_key=f"h{i}", right_key=f"s{i}", left_value="x" * 400, right_value=i,
                )
                for i in range(400)
            ],
        )
    )  # fmt: skip
    storage.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncrecon", "queue", "--db", str(db), "list", "--json",
         "--limit", "400"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    first = proc.stdout.read(100)
    assert first.startswith((b"[", b"{")), first  # the listing had begun
    proc.stdout.close()  # like head: read a little, then go away
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()
    assert b"BrokenPipeError" not in err


def test_bench_names_the_extra_it_needs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import syncrecon.__main__ as cli

    monkeypatch.setattr(cli, "_missing", lambda *modules: ["deepdiff"])
    assert main(["bench", "--records", "10"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'syncrecon[bench]'" in err
    assert "deepdiff" in err


def test_queue_list_says_when_more_items_match_than_it_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from syncrecon.storage import Discrepancy, Status, Step

    db = tmp_path / "q.sqlite"
    storage = SQLiteStorage(db)
    at = datetime(2026, 3, 1, tzinfo=UTC)
    storage.commit(
        Step(
            at=at,
            new_items=[
                Discrepancy(
                    sync="deals", field=f"f{i}", status=Status.ESCALATED, detected_at=at,
                    left_key=f"h{i}", right_key=f"s{i}", left_value=i, right_value=-i,
                )
                for i in range(5)
            ],
        )
    )  # fmt: skip
    storage.close()
    assert main(["queue", "--db", str(db), "list", "--json", "--limit", "3"]) == 0
    out = capsys.readouterr()
    assert len(json.loads(out.out)) == 3
    assert "more match" in out.err
    assert main(["queue", "--db", str(db), "list", "--json", "--limit", "5"]) == 0
    out = capsys.readouterr()
    assert len(json.loads(out.out)) == 5
    assert out.err == ""
