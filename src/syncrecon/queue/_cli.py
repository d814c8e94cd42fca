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

from .._app import APP_PATH_FORM
from .._exceptions import QueueError, SyncReconError
from .._models import Side
from .._sync import SyncDefinition
from ..storage._base import Discrepancy
from ._api import OperatorQueue
from ._items import DEFAULT_STATUSES, StatusFilter, get_item, is_record_level
from ._loader import load_syncs
from ._pages import QueueFilter
from ._resolve import PlannedResolution, Resolution
from ._views import item_data, read_value, shown

_STATUS_HELP = "escalated, open, resolved, auto_resolved, dismissed or all (repeatable)"


def register_cli(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``queue`` command to a command line's subparsers; :func:`run_cli` runs it."""
    parser = subparsers.add_parser(
        "queue",
        help="work the operator queue: list, show, resolve, dismiss, assign",
        description="Work the operator queue of a syncrecon SQLite database. resolve,"
        " dismiss and assign take one item id, several, or a filter (--sync, --category,"
        " --field, ... or their --filter-... spellings); --preview shows what they would do.",
    )
    parser.add_argument("--db", required=True, help="the SQLite database")
    actions = parser.add_subparsers(dest="queue_action", required=True, metavar="ACTION")

    ls = actions.add_parser("list", help="list queue items (active ones by default)")
    ls.add_argument("--sync", help="only items of this sync")
    ls.add_argument("--status", action="append", help=_STATUS_HELP)
    ls.add_argument("--category", help="only this escalation category")
    ls.add_argument("--field", help="only this field (its left name; * for record-level)")
    ls.add_argument("--key", help="only items of the record with this key (either side)")
    ls.add_argument("--older-than-hours", type=float, help="only items at least this old")
    ls.add_argument("--assignee", help="only items assigned to this person ('' = unassigned)")
    ls.add_argument("--unassigned", action="store_true", help="only items assigned to nobody")
    ls.add_argument(
        "--search",
        metavar="TEXT",
        help="only items with TEXT in their keys, field, category, explanation or values"
        " (any case)",
    )
    ls.add_argument(
        "--order", choices=["newest", "oldest"], default="newest", help="newest (default) first"
    )
    ls.add_argument(
        "--limit", type=int, default=100, help="at most this many items (a notice says if more)"
    )
    ls.add_argument("--offset", type=int, default=0, help="skip this many matching items")
    ls.add_argument("--json", action="store_true", help="print a JSON array")

    show = actions.add_parser(
        "show", help="show one item: values, base, why, history, group, suggestion"
    )
    show.add_argument("id", type=int, help="the item's id")
    show.add_argument(
        "--app",
        metavar=APP_PATH_FORM,
        help="import path of the host's sync definition(s): names the systems and links"
        " their records",
    )
    show.add_argument("--json", action="store_true", help="print one JSON object")

    res = actions.add_parser(
        "resolve", help="resolve items (writes through the connectors); see --preview"
    )
    _targets(res, "resolve")
    choice = res.add_mutually_exclusive_group()
    choice.add_argument(
        "--take",
        metavar="SYSTEM",
        help="take that system's value: left, right, or the system's name (its connector's"
        " name, known with --app: --take hubspot)",
    )
    choice.add_argument(
        "--value",
        help="the value to write, in the left vocabulary, as you read it (2026-01-31,"
        ' 1200.50, "a, b" for a list; "" for blank); JSON works too',
    )
    res.add_argument(
        "--app",
        metavar=APP_PATH_FORM,
        help="import path of the host's sync definition(s), like the worker's"
        f" ({APP_PATH_FORM}; the current directory is importable)",
    )
    res.add_argument("--by", help="who decides (recorded on the item)")
    res.add_argument("--note", help="a note to keep with the resolution")
    res.add_argument(
        "--confirm",
        action="store_true",
        help="lift a schema-drift quarantine (with --by), once the mapping is fixed",
    )
    res.add_argument(
        "--preview", action="store_true", help="show what would be written; write nothing"
    )
    res.add_argument("--json", action="store_true", help="print JSON")

    dis = actions.add_parser("dismiss", help="close items without a change")
    _targets(dis, "dismiss")
    dis.add_argument("--reason", required=True, help="why the items need no change")
    dis.add_argument("--by", help="who decides (recorded on the item)")
    dis.add_argument("--preview", action="store_true", help="list the items; change nothing")
    dis.add_argument("--json", action="store_true", help="print JSON")

    assign = actions.add_parser("assign", help="assign items to someone")
    _targets(assign, "assign")
    assign.add_argument("--to", required=True, help="a name; '' unassigns")
    assign.add_argument("--preview", action="store_true", help="list the items; change nothing")
    assign.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _targets(parser: argparse.ArgumentParser, action: str) -> None:
    """The ids, or the filter, an action takes."""
    parser.add_argument(
        "ids", type=int, nargs="*", metavar="ID", help=f"the ids of the items to {action}"
    )
    group = parser.add_argument_group(
        "filter", f"{action} every item that matches (instead of ids; active items by default)"
    )
    group.add_argument("--filter-sync", "--sync", dest="f_sync", help="items of this sync")
    group.add_argument(
        "--filter-status", "--status", dest="f_status", action="append", help=_STATUS_HELP
    )
    group.add_argument(
        "--filter-category", "--category", dest="f_category", help="items of this category"
    )
    group.add_argument(
        "--filter-field", "--field", dest="f_field", help="items of this field (its left name)"
    )
    group.add_argument(
        "--filter-key", "--key", dest="f_key", help="items of the record with this key"
    )
    group.add_argument(
        "--filter-assignee", "--assignee", dest="f_assignee", help="items assigned to this person"
    )
    group.add_argument(
        "--filter-unassigned",
        "--unassigned",
        dest="f_unassigned",
        action="store_true",
        help="items assigned to nobody",
    )
    group.add_argument(
        "--filter-search",
        "--search",
        dest="f_search",
        metavar="TEXT",
        help="items with TEXT in their keys, field, category, explanation or values",
    )
    group.add_argument(
        "--filter-older-than-hours",
        "--older-than-hours",
        dest="f_older",
        type=float,
        help="items at least this old",
    )


def run_cli(args: argparse.Namespace) -> int:
    """Run the ``queue`` command parsed by a parser made with :func:`register_cli`.

    Returns the exit status: 0 when the action was done; 1 when an action ran but left an
    item as it was (a resolution that found the item changed since it was opened, a failed
    write, an item of a bulk action refused: the output says which and why); 2 for an error
    (no database, an item that does not exist or cannot be acted on so, an ``--app`` that
    names no usable object...), said in one line on stderr that starts ``syncrecon queue:``,
    like every command's errors.
    """
    try:
        return _run(args)
    except (SyncReconError, OSError) as exc:
        print(f"syncrecon queue: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """An error's message in one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) or type(exc).__name__


def _run(args: argparse.Namespace) -> int:
    from ..storage.sqlite import SQLiteStorage

    db = Path(args.db)
    if not db.is_file():
        raise QueueError(f"no database at {args.db}")
    storage = SQLiteStorage(db)
    try:
        syncs: list[SyncDefinition] = []
        if getattr(args, "app", None):
            syncs = load_syncs(args.app)
        queue = OperatorQueue(storage, syncs)
        return _run_action(queue, args)
    finally:
        storage.close()


def _statuses(given: Sequence[str] | None) -> StatusFilter:
    if not given:
        return DEFAULT_STATUSES
    return None if "all" in given else tuple(given)


def _hours(hours: float | None) -> timedelta | None:
    return None if hours is None else timedelta(hours=hours)


def _filter(args: argparse.Namespace) -> QueueFilter | None:
    """The filter an action's options name, or ``None`` when they name none."""
    named = [
        args.f_sync,
        args.f_status,
        args.f_category,
        args.f_field,
        args.f_key,
        args.f_assignee,
        args.f_search,
        args.f_older,
    ]
    if all(v is None for v in named) and not args.f_unassigned:
        return None
    return QueueFilter(
        status=_statuses(args.f_status),
        sync=args.f_sync,
        category=args.f_category,
        field=args.f_field,
        key=args.f_key,
        assignee=args.f_assignee,
        unassigned=args.f_unassigned,
        search=args.f_search,
        older_than=_hours(args.f_older),
    )


def _run_action(queue: OperatorQueue, args: argparse.Namespace) -> int:
    action = args.queue_action
    if action == "list":
        return _list(queue, args)
    if action == "show":
        view = queue.show(args.id)
        if args.json:
            _print_json(view.to_dict())
        else:
            print(view)
        return 0
    where = _filter(args)
    ids: list[int] = list(args.ids)
    if ids and where is not None:
        raise QueueError("give item ids or a filter, not both")
    if not ids and where is None:
        raise QueueError(f"{action} needs the ids of the items, or a filter (--sync, ...)")
    single = len(ids) == 1 and not args.preview
    if action == "resolve":
        kwargs: dict[str, Any] = {}
        if args.take is not None:
            kwargs["take"] = _side(queue, args.take, ids, where)
        if args.value is not None:
            like = None
            if len(ids) == 1:  # read as a value of that item's field; several: JSON or text
                item = queue.storage.get_item(ids[0])
                like = item.left_value if item.left_value is not None else item.right_value
            try:
                kwargs["value"] = read_value(args.value, like=like)
            except ValueError as exc:
                raise QueueError(f"--value cannot be read: {exc}") from None
        if args.preview:
            plans = queue.preview(ids or None, filter=where, **kwargs)
            return _print_plans(plans, args.json)
        if single:
            result = queue.resolve(
                ids[0], by=args.by, note=args.note, confirm=args.confirm, **kwargs
            )
            if args.json:
                _print_json(result.to_dict())
            else:
                print(result)
            return 0 if result.closed else 1
        if args.confirm:
            raise QueueError("--confirm lifts one quarantine at a time: give one item id")
        results = queue.resolve_many(
            ids or None, filter=where, by=args.by, note=args.note, **kwargs
        )
        return _print_results(results, args.json)
    if action == "dismiss":
        if args.preview:
            return _print_targets(queue, ids, where, "dismissed", args.json)
        if single:
            item = queue.dismiss(ids[0], args.reason, by=args.by)
            print(f"item {item.id}: dismissed")
            return 0
        results = queue.dismiss_many(ids or None, filter=where, reason=args.reason, by=args.by)
        return _print_results(results, args.json)
    if action == "assign":
        if args.preview:
            return _print_targets(queue, ids, where, "assigned", args.json)
        if single:
            item = queue.assign(ids[0], args.to)
            print(
                f"item {item.id}: "
                + (f"assigned to {item.assignee}" if item.assignee else "unassigned")
            )
            return 0
        results = queue.assign_many(ids or None, who=args.to, filter=where)
        return _print_results(results, args.json)
    raise AssertionError(f"unknown action {action!r}")  # pragma: no cover


def _side(queue: OperatorQueue, take: str, ids: Sequence[int], where: QueueFilter | None) -> str:
    """The side ``--take`` names: ``left``, ``right``, or a system's name (any case) in the
    syncs of the items (of every sync ``--app`` gave, for a filter of no one sync)."""
    word = take.strip().casefold()
    if word in ("left", "right"):
        return word
    if ids:
        names = {get_item(queue.storage, i).sync for i in ids}
    elif where is not None and where.sync is not None:
        names = {where.sync}
    else:
        names = set(queue.syncs)
    sides: set[Side] = set()
    known: list[str] = []
    for name in sorted(names):
        if name not in queue.syncs:
            continue
        for side, system in queue.systems(name).items():
            known.append(system)
            if system.casefold() == word:
                sides.add(side)
    if len(sides) == 1:
        return str(sides.pop())
    if sides:
        raise QueueError(
            f"--take {take} names the systems of both sides here; say --take left or --take right"
        )
    if not known:
        raise QueueError(
            f"--take {take}: a system is named only with --app (the sync definition);"
            " without it, say --take left or --take right"
        )
    choices = ", ".join(dict.fromkeys(["left", "right", *known]))
    raise QueueError(f"--take {take} names neither system: take one of {choices}")


def _list(queue: OperatorQueue, args: argparse.Namespace) -> int:
    page = queue.page(
        status=_statuses(args.status),
        sync=args.sync,
        category=args.category,
        field=args.field,
        key=args.key,
        assignee=args.assignee,
        unassigned=args.unassigned,
        search=args.search,
        older_than=_hours(args.older_than_hours),
        order=args.order,
        limit=args.limit,
        offset=args.offset,
    )
    if args.json:
        _print_json([item_data(i) for i in page.items])
    else:
        print(_table(page.items, queue.clock.now()))
    if not args.json or page.has_next or page.has_previous:
        where = f"{page}, {args.order} first" if page.total else "no items match"
        if page.has_next:
            where += (
                f"; more match (narrow the filters, raise --limit, or see the next page:"
                f" --offset {page.next_offset})"
            )
        print(where, file=sys.stderr)
    return 0


def _print_plans(plans: Sequence[PlannedResolution], as_json: bool) -> int:
    if as_json:
        _print_json([p.to_dict() for p in plans])
        return 0
    for p in plans:
        print(p)
    ok = sum(1 for p in plans if p.ok)
    print(
        f"preview of {len(plans)} item{'s' if len(plans) != 1 else ''}: {ok} can be resolved"
        f" this way, {len(plans) - ok} cannot; nothing was written"
    )
    return 0


def _print_results(results: Sequence[Resolution], as_json: bool) -> int:
    if as_json:
        _print_json([r.to_dict() for r in results])
    else:
        for r in results:
            print(r)
        done = sum(1 for r in results if r.ok)
        print(f"{done} of {len(results)} item{'s' if len(results) != 1 else ''} done")
    return 0 if all(r.ok for r in results) else 1


def _print_targets(
    queue: OperatorQueue,
    ids: Sequence[int],
    where: QueueFilter | None,
    what: str,
    as_json: bool,
) -> int:
    items = queue._targets(ids or None, where)
    if as_json:
        _print_json([item_data(i) for i in items])
        return 0
    print(_table(items, queue.clock.now()))
    active = sum(1 for i in items if i.status.is_active)
    print(
        f"preview: {active} item{'s' if active != 1 else ''} would be {what}"
        + (f" ({len(items) - active} closed already)" if active != len(items) else "")
        + "; nothing was changed"
    )
    return 0


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
