"""The ``queue`` command of ``python -m syncrecon``: its arguments, running an action, and the
table ``queue list`` prints. Not public: ``syncrecon.__main__`` adds it to the command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .. import _codec
from .._app import APP_PATH_FORM
from .._exceptions import AppLoadError, QueueError, SyncReconError
from .._sync import SyncDefinition
from ..storage._base import Discrepancy
from ._api import OperatorQueue
from ._items import DEFAULT_STATUSES, StatusFilter, is_record_level
from ._loader import load_syncs
from ._views import item_data, shown


def register_cli(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``queue`` command to a command line's subparsers; :func:`run_cli` runs it."""
    parser = subparsers.add_parser(
        "queue",
        help="work the operator queue: list, show, resolve, dismiss, assign",
        description="Work the operator queue of a syncrecon SQLite database.",
    )
    parser.add_argument("--db", required=True, help="the SQLite database")
    actions = parser.add_subparsers(dest="queue_action", required=True, metavar="ACTION")

    ls = actions.add_parser("list", help="list queue items (active ones by default)")
    ls.add_argument("--sync", help="only items of this sync")
    ls.add_argument(
        "--status",
        action="append",
        help="escalated, open, resolved, auto_resolved, dismissed or all (repeatable)",
    )
    ls.add_argument("--category", help="only this escalation category")
    ls.add_argument("--field", help="only this field (its left name; * for record-level)")
    ls.add_argument("--key", help="only items of the record with this key (either side)")
    ls.add_argument("--older-than-hours", type=float, help="only items at least this old")
    ls.add_argument("--assignee", help="only items assigned to this person ('' = unassigned)")
    ls.add_argument(
        "--limit", type=int, default=100, help="at most this many items (a notice says if more)"
    )
    ls.add_argument("--json", action="store_true", help="print a JSON array")

    show = actions.add_parser("show", help="show one item: values, base, why, history")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="print one JSON object")

    res = actions.add_parser("resolve", help="resolve an item (writes through the connectors)")
    res.add_argument("id", type=int)
    choice = res.add_mutually_exclusive_group()
    choice.add_argument("--take", choices=["left", "right"], help="take that side's value")
    choice.add_argument(
        "--value", help='a JSON value in the left vocabulary ({"$date": "2026-01-31"} for dates)'
    )
    res.add_argument(
        "--app",
        metavar=APP_PATH_FORM,
        help="import path of the host's sync definition(s), like the worker's"
        f" ({APP_PATH_FORM}; the current directory is importable)",
    )
    res.add_argument("--by", help="who decides (recorded on the item)")
    res.add_argument("--note", help="a note to keep with the resolution")
    res.add_argument("--json", action="store_true", help="print one JSON object")

    dis = actions.add_parser("dismiss", help="close an item without a change")
    dis.add_argument("id", type=int)
    dis.add_argument("--reason", required=True)
    dis.add_argument("--by", help="who decides (recorded on the item)")

    assign = actions.add_parser("assign", help="assign an item to someone")
    assign.add_argument("id", type=int)
    assign.add_argument("--to", required=True, help="a name; '' unassigns")
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Run the ``queue`` command parsed by a parser made with :func:`register_cli`.

    Returns the exit status: 0 when the action was done, 1 when it was not (an error, or a
    resolution that left the item open: changed since opened, or a failed write), 2 when
    ``--app`` names no usable object (one line on stderr says why).
    """
    from ..storage.sqlite import SQLiteStorage

    db = Path(args.db)
    if not db.is_file():
        print(f"error: no database at {args.db}", file=sys.stderr)
        return 1
    storage = SQLiteStorage(db)
    try:
        syncs: list[SyncDefinition] = []
        if getattr(args, "app", None):
            try:
                syncs = load_syncs(args.app)
            except AppLoadError as exc:
                print(f"syncrecon queue: {exc}", file=sys.stderr)
                return 2
        queue = OperatorQueue(storage, syncs)
        return _run_action(queue, args)
    except SyncReconError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        storage.close()


def _run_action(queue: OperatorQueue, args: argparse.Namespace) -> int:
    action = args.queue_action
    if action == "list":
        statuses: StatusFilter = DEFAULT_STATUSES
        if args.status:
            statuses = None if "all" in args.status else tuple(args.status)
        older = None
        if args.older_than_hours is not None:
            older = timedelta(hours=args.older_than_hours)
        items = queue.list(
            sync=args.sync,
            status=statuses,
            category=args.category,
            field=args.field,
            key=args.key,
            older_than=older,
            assignee=args.assignee,
            limit=args.limit + 1,  # one more, to know whether more match
        )
        more = len(items) > args.limit
        items = items[: args.limit]
        if args.json:
            _print_json([item_data(i) for i in items])
        else:
            print(_table(items, queue.clock.now()))
        if more:
            print(
                f"showing the first {args.limit} matching items; more match"
                " (narrow the filters, or raise --limit)",
                file=sys.stderr,
            )
        return 0
    if action == "show":
        view = queue.show(args.id)
        if args.json:
            _print_json(view.to_dict())
        else:
            print(view)
        return 0
    if action == "resolve":
        kwargs: dict[str, Any] = {}
        if args.take is not None:
            kwargs["take"] = args.take
        if args.value is not None:
            try:
                kwargs["value"] = _codec.loads(args.value)
            except ValueError as exc:
                raise QueueError(f"--value is not JSON: {exc}") from None
        result = queue.resolve(args.id, by=args.by, note=args.note, **kwargs)
        if args.json:
            _print_json(result.to_dict())
        else:
            print(result)
        return 0 if result.closed else 1
    if action == "dismiss":
        item = queue.dismiss(args.id, args.reason, by=args.by)
        print(f"item {item.id}: dismissed")
        return 0
    if action == "assign":
        item = queue.assign(args.id, args.to)
        print(
            f"item {item.id}: "
            + (f"assigned to {item.assignee}" if item.assignee else "unassigned")
        )
        return 0
    raise AssertionError(f"unknown action {action!r}")  # pragma: no cover


def _table(items: Sequence[Discrepancy], now: datetime) -> str:
    if not items:
        return "no items"
    rows = [("ID", "STATUS", "CATEGORY", "SYNC", "RECORD", "FIELD", "AGE", "ASSIGNEE", "VALUES")]
    for i in items:
        age = now - i.detected_at
        hours = age.total_seconds() / 3600
        rows.append(
            (
                str(i.id),
                i.status.value,
                i.category or "-",
                i.sync,
                f"{i.left_key or '-'}/{i.right_key or '-'}",
                i.field,
                f"{hours / 24:.1f}d" if hours >= 48 else f"{hours:.1f}h",
                i.assignee or "-",
                "-"
                if is_record_level(i)
                else f"{shown(i.left_value, 24)} | {shown(i.right_value, 24)}",
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))
