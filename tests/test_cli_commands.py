"""Every command of ``python -m syncrecon``: its help, its output and its errors.

The commands run in-process (``syncrecon.__main__.main``) against one small demo database
(``demo --records 120``), copied for each test that changes it. The demo itself, and resolving
its items through :mod:`syncrecon.demo_app`, are tested in ``test_demo.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from syncrecon import demo_app
from syncrecon.__main__ import main

COMMANDS = ("demo", "bench", "worker", "dashboard", "queue")


def _run(*argv: str) -> tuple[int, str, str]:
    """``syncrecon ARGV`` in-process: the exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as exc:  # argparse: --help, or a bad argument
            status = exc.code if isinstance(exc.code, int) else 1
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A small demo run: its database (with the systems next to it) and its JSON."""
    db = tmp_path_factory.mktemp("cli") / demo_app.DEFAULT_DB
    status, out, err = _run("demo", "--json", "--records", "120", "--db", str(db))
    assert status == 0, err
    return db, json.loads(out)


@pytest.fixture
def db(built: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the demo's database and systems in ``tmp_path``, the current directory."""
    source, _ = built
    copy = tmp_path / demo_app.DEFAULT_DB
    shutil.copy(source, copy)
    shutil.copy(demo_app.systems_path(source), demo_app.systems_path(copy))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(demo_app.ENV_VAR, raising=False)
    return copy


@pytest.fixture
def summary(built: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    return built[1]


def _item(summary: dict[str, Any], category: str) -> int:
    return int(next(e["id"] for e in summary["queue"]["examples"] if e["category"] == category))


def _one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- help ---------------------------------------------------------------------------------------


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _parser(monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The command line's parser, as ``main`` builds it."""

    def grab(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    with pytest.raises(_Parsed) as caught:
        main(["demo"])
    monkeypatch.undo()
    return caught.value.parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


# Arguments of the queue command (syncrecon/queue/_cli.py) that have no help text yet.
QUEUE_WITHOUT_HELP = {
    "queue show id",
    "queue resolve id",
    "queue dismiss id",
    "queue dismiss --reason",
    "queue assign id",
}


def test_every_command_and_argument_says_what_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = _parser(monkeypatch)
    commands = _subcommands(parser)
    assert set(commands) == set(COMMANDS)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            assert all(a.help for a in action._choices_actions)
    missing = set()
    todo = [(name, sub) for name, sub in commands.items()]
    while todo:
        name, sub = todo.pop()
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {n}", p) for n, p in action.choices.items()]
                assert all(a.help for a in action._choices_actions), name
            elif not action.help:
                missing.add(
                    f"{name} {action.option_strings[-1] if action.option_strings else action.dest}"
                )
    assert missing <= QUEUE_WITHOUT_HELP


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_its_help(command: str) -> None:
    status, out, err = _run(command, "--help")
    assert status == 0, err
    assert out.startswith(f"usage: syncrecon {command}")


def test_worker_help_shows_the_import_path_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    out = _run("worker", "--help")[1]
    assert "pkg.mod:attr" in out
    assert "myapp.sync:worker" in out
    assert "syncrecon.demo_app:worker --once" in " ".join(out.split())


def test_demo_help_names_its_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # no wrapping (it would break words at hyphens)
    out = " ".join(_run("demo", "--help")[1].split())
    assert "--db PATH" in out
    assert "default: ./syncrecon-demo.sqlite" in out
    assert "replaced on every run" in out


def test_a_bad_argument_is_a_usage_error() -> None:
    status, out, err = _run("demo", "--records", "many")
    assert (status, out) == (2, "")
    assert "argument --records: invalid int value: 'many'" in err
    status, _, err = _run("nope")
    assert status == 2
    assert "invalid choice: 'nope'" in err


# -- dashboard ----------------------------------------------------------------------------------


def test_dashboard_prints_the_demos_numbers(db: Path, summary: dict[str, Any]) -> None:
    status, out, err = _run("dashboard", "--db", str(db))
    assert status == 0, err
    assert out.startswith("syncrecon dashboard: all syncs, ")
    assert f"1. Fast-loop events: {summary['fast_loop']['events']['total']}\n" in out
    rec = summary["reconciliation"]
    assert f"2. Reconciliation: {rec['cycles']} cycles (full {rec['cycles']})," in out
    assert f"{rec['discrepancies_found']} discrepancies found" in out
    assert f"3. Auto-resolved by rule: {summary['auto_resolved']['total']}\n" in out
    assert f"4. Escalated to an operator by category: {summary['escalated']['total']}\n" in out


def test_dashboard_json_and_html(db: Path, summary: dict[str, Any], tmp_path: Path) -> None:
    status, out, _ = _run("dashboard", "--db", str(db), "--json")
    assert status == 0
    board = json.loads(out)
    assert board["reconciliation"]["new_discrepancies"] == summary["queue"]["items"]
    assert board["escalated"] == summary["escalated"]
    page = tmp_path / "board.html"
    status, out, err = _run("dashboard", "--db", str(db), "--html", str(page))
    assert (status, out) == (0, "")
    assert err == f"dashboard written to {page}\n"
    assert page.read_text().startswith("<!DOCTYPE html>")
    status, out, _ = _run("dashboard", "--db", str(db), "--sync", "nothing", "--json")
    assert status == 0
    assert json.loads(out)["reconciliation"]["cycles"] == 0


def test_dashboard_errors(tmp_path: Path) -> None:
    status, out, err = _run("dashboard", "--db", str(tmp_path / "none.sqlite"))
    assert (status, out) == (2, "")
    assert _one_line(err) == f"syncrecon dashboard: no database at {tmp_path / 'none.sqlite'}"
    status, _, err = _run("dashboard", "--db", str(tmp_path / "x"), "--days", "0")
    assert status == 2
    assert "must be at least 1" in err
    status, _, err = _run("dashboard", "--db", str(tmp_path / "x"), "--until", "soon")
    assert status == 2
    assert "not an ISO 8601 time" in err


# -- queue --------------------------------------------------------------------------------------


def test_queue_list_shows_what_waits(db: Path, summary: dict[str, Any]) -> None:
    status, out, err = _run("queue", "--db", str(db), "list", "--limit", "1000")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID", "STATUS", "CATEGORY", "SYNC", "RECORD", "FIELD", "AGE", "ASSIGNEE", "VALUES",
    ]  # fmt: skip
    active = summary["queue"]["queue_depth"] + summary["queue"]["by_status"].get("open", 0)
    assert len(lines) == 1 + active
    status, out, _ = _run("queue", "--db", str(db), "list", "--json", "--status", "all",
                          "--limit", "1000")  # fmt: skip
    assert status == 0
    assert len(json.loads(out)) == summary["queue"]["items"]
    status, out, _ = _run("queue", "--db", str(db), "list", "--json", "--category", "deal_value")
    items = json.loads(out)
    assert len(items) == summary["escalated"]["by_category"]["deal_value"]
    assert {i["category"] for i in items} == {"deal_value"}


def test_queue_show(db: Path, summary: dict[str, Any]) -> None:
    item = _item(summary, "deal_value")
    status, out, err = _run("queue", "--db", str(db), "show", str(item))
    assert status == 0, err
    assert out.startswith(f"item {item}: escalated (deal_value)")
    assert "field:  amount" in out
    status, out, _ = _run("queue", "--db", str(db), "show", str(item), "--json")
    assert status == 0
    data = json.loads(out)
    assert (data["id"], data["category"], data["field"]) == (item, "deal_value", "amount")


def test_queue_errors(db: Path, tmp_path: Path) -> None:
    """Every error of the queue command is one line, ``syncrecon queue: ...``, and status 2,
    as the other commands' errors are."""
    status, out, err = _run("queue", "--db", str(tmp_path / "none.sqlite"), "list")
    assert (status, out) == (2, "")
    assert _one_line(err) == f"syncrecon queue: no database at {tmp_path / 'none.sqlite'}"
    status, out, err = _run("queue", "--db", str(db), "show", "99999")
    assert (status, out) == (2, "")
    assert _one_line(err) == "syncrecon queue: no queue item has the id 99999"
    not_a_db = tmp_path / "passwd"
    not_a_db.write_text("root:x:0:0:root:/root:/bin/bash\n" * 20)
    status, out, err = _run("queue", "--db", str(not_a_db), "list")
    assert (status, out) == (2, "")
    assert _one_line(err) == "syncrecon queue: SQLite error: file is not a database"
    status, _, dashboard = _run("dashboard", "--db", str(not_a_db))
    assert status == 2
    assert _one_line(dashboard) == "syncrecon dashboard: SQLite error: file is not a database"
    status, _, err = _run("queue", "--db", str(db), "show", "first")
    assert status == 2
    assert "invalid int value" in err
    status, _, err = _run("queue", "--db", str(db))
    assert status == 2
    assert "ACTION" in err


def test_queue_resolve_without_the_app_says_what_it_needs(
    db: Path, summary: dict[str, Any]
) -> None:
    item = _item(summary, "deal_value")
    status, out, err = _run("queue", "--db", str(db), "resolve", str(item), "--take", "left")
    assert (status, out) == (2, "")
    assert _one_line(err).startswith("syncrecon queue: ")
    assert "--app" in _one_line(err)


def test_queue_resolve_a_value_of_ones_own_through_the_demo_app(
    db: Path, summary: dict[str, Any]
) -> None:
    item = next(e for e in summary["queue"]["examples"] if e["category"] == "deal_value")
    status, out, err = _run(
        "queue", "--db", str(db), "resolve", str(item["id"]), "--value", "123456",
        "--app", "syncrecon.demo_app:syncs", "--by", "ada", "--note", "agreed on the phone",
        "--json",
    )  # fmt: skip
    assert status == 0, err
    result = json.loads(out)
    assert result["outcome"] == "resolved"
    assert sorted(result["written"]) == ["left", "right"]
    left, right = demo_app.load_systems(demo_app.systems_path(db))
    assert left.get(item["left_key"]).fields["amount"] == 123456
    assert right.get(item["right_key"]).fields["Amount"] == 123456
    status, out, _ = _run("queue", "--db", str(db), "show", str(item["id"]), "--json")
    shown = json.loads(out)
    assert shown["status"] == "resolved"
    assert "ada" in (shown["note"] or "")


def test_queue_resolve_acknowledges_a_record_level_item(db: Path, summary: dict[str, Any]) -> None:
    item = _item(summary, "deletion")
    app = ("--app", "syncrecon.demo_app:syncs")
    status, out, err = _run("queue", "--db", str(db), "resolve", str(item), "--take", "left", *app)
    assert (status, out) == (2, "")
    assert "acknowledged without a value" in _one_line(err)
    status, out, err = _run("queue", "--db", str(db), "resolve", str(item), *app)
    assert status == 0, err
    assert out.startswith(f"item {item}: acknowledged")


def test_queue_dismiss(db: Path, summary: dict[str, Any]) -> None:
    item = _item(summary, "possible_duplicate")
    argv = ("queue", "--db", str(db), "dismiss", str(item), "--reason", "two real deals")
    assert _run(*argv) == (0, f"item {item}: dismissed\n", "")
    status, out, err = _run(*argv)
    assert (status, out) == (2, "")
    assert _one_line(err).startswith(f"syncrecon queue: item {item} is dismissed already")
    status, _, err = _run("queue", "--db", str(db), "dismiss", str(item))
    assert status == 2
    assert "--reason" in err


def test_queue_assign(db: Path, summary: dict[str, Any]) -> None:
    item = _item(summary, "contract_dates")
    base = ("queue", "--db", str(db), "assign", str(item), "--to")
    assert _run(*base, "ada") == (0, f"item {item}: assigned to ada\n", "")
    status, out, _ = _run("queue", "--db", str(db), "list", "--assignee", "ada", "--json")
    assert [i["id"] for i in json.loads(out)] == [item]
    assert _run(*base, "") == (0, f"item {item}: unassigned\n", "")
    out = _run("queue", "--db", str(db), "list", "--status", "auto_resolved", "--json")[1]
    closed = json.loads(out)[0]["id"]
    status, out, err = _run("queue", "--db", str(db), "assign", str(closed), "--to", "ada")
    assert (status, out) == (2, "")
    assert "already" in _one_line(err)


def test_queue_show_reads_like_a_person(db: Path, summary: dict[str, Any]) -> None:
    """The explanation shows values as the table does and names the systems (with --app),
    never Python's reprs; --json keeps the stored text and the tagged values."""
    item = _item(summary, "contract_dates")
    status, out, err = _run("queue", "--db", str(db), "show", str(item))
    assert status == 0, err
    why = out[out.index("  why:") :]
    assert "datetime.date(" not in why
    assert "field 'closedate': left 20" in why
    assert ", right 20" in why
    assert "last agreed 20" in why
    status, out, err = _run(
        "queue", "--db", str(db), "show", str(item), "--app", "syncrecon.demo_app:syncs"
    )
    assert status == 0, err
    why = out[out.index("  why:") :]
    assert "datetime.date(" not in why
    assert "field 'closedate': hubspot 20" in why
    assert ", salesforce 20" in why
    assert "left=" not in why
    assert "right=" not in why
    assert "last changed: hubspot 20" in why
    assert " UTC (the " in why
    status, out, _ = _run("queue", "--db", str(db), "show", str(item), "--json")
    data = json.loads(out)
    assert data["explanation"].startswith("field 'closedate': left=datetime.date(")
    assert set(data["left_value"]) == {"$date"}


def test_queue_take_names_a_system(db: Path, summary: dict[str, Any]) -> None:
    """--take takes the system's name as well as left/right; previews and results name the
    systems when --app knows them."""
    item = next(e for e in summary["queue"]["examples"] if e["category"] == "deal_value")
    app = ("--app", "syncrecon.demo_app:syncs")
    base = ("queue", "--db", str(db), "resolve", str(item["id"]))
    status, out, err = _run(*base, "--take", "Salesforce", "--preview", *app)
    assert status == 0, err
    assert f"item {item['id']} (amount): set " in out
    assert "; write " in out
    assert out.splitlines()[0].endswith(" to hubspot")
    status, out, err = _run(*base, "--take", "zoho", *app)
    assert (status, out) == (2, "")
    assert _one_line(err) == (
        "syncrecon queue: --take zoho names neither system: take one of left, right, hubspot,"
        " salesforce"
    )
    status, out, err = _run(*base, "--take", "salesforce")
    assert (status, out) == (2, "")
    assert "--take left or --take right" in _one_line(err)
    status, out, err = _run(
        "queue", "--db", str(db), "resolve", "999999", "--take", "hubspot", *app
    )
    assert (status, out) == (2, "")  # a missing item with a system's name: one line, no traceback
    assert "999999" in _one_line(err)
    status, out, err = _run(*base, "--take", "salesforce", *app, "--by", "ada")
    assert status == 0, err
    assert out.startswith(f"item {item['id']}: resolved (resolved). took salesforce's value ")
    assert "; written to hubspot; the base is updated" in out
    left, right = demo_app.load_systems(demo_app.systems_path(db))
    assert (
        left.get(item["left_key"]).fields["amount"] == right.get(item["right_key"]).fields["Amount"]
    )
    status, out, _ = _run("queue", "--db", str(db), "show", str(item["id"]), "--json")
    assert json.loads(out)["note"].startswith("ada: took salesforce's value ")


def test_queue_lifting_the_demos_drift_rechecks_the_schema(
    db: Path, summary: dict[str, Any]
) -> None:
    """The demo turns Salesforce's Tags__c multi-select into a text area; its mapping still
    merges lists, so lifting the quarantine is refused (it said "the mapping is fixed")."""
    item = _item(summary, "schema_drift")
    argv = ("queue", "--db", str(db), "resolve", str(item), "--app", "syncrecon.demo_app:syncs")
    status, out, err = _run(*argv, "--by", "ada", "--confirm")
    assert (status, out) == (2, "")
    line = _one_line(err)
    assert line.startswith("syncrecon queue: the field 'tags' still does not match its mapping:")
    assert "described type 'textarea'" in line
    assert "The quarantine stays" in line
    status, out, _ = _run("queue", "--db", str(db), "show", str(item), "--json")
    data = json.loads(out)
    assert (data["status"], data["note"]) == ("escalated", None)


# -- worker and bench ---------------------------------------------------------------------------


def test_worker_once_with_a_bad_app_path_is_one_line_and_status_2(tmp_path: Path) -> None:
    status, out, err = _run("worker", "nope.mod:app", "--once")
    assert (status, out) == (2, "")
    assert _one_line(err) == (
        "syncrecon worker: cannot load 'nope.mod:app': cannot import 'nope.mod':"
        " No module named 'nope'"
    )
    status, _, err = _run("worker")
    assert status == 2
    assert "pkg.mod:attr" in err


def test_worker_once_runs_the_demos_next_cycle(db: Path, summary: dict[str, Any]) -> None:
    status, out, err = _run("worker", "syncrecon.demo_app:worker", "--once")
    assert status == 0, err
    assert json.loads(out.splitlines()[-1]) == {"processed": 0}
    status, out, _ = _run("dashboard", "--db", str(db), "--json")
    assert json.loads(out)["reconciliation"]["cycles"] == len(summary["cycles"]) + 1


def test_bench_help() -> None:
    status, out, err = _run("bench", "--help")
    assert status == 0, err
    assert "--records" in out
