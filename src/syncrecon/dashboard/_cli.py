"""The ``dashboard`` command: ``python -m syncrecon dashboard --db PATH``.

Command-line plumbing only, not part of the public API: :mod:`syncrecon.__main__` adds the
command with :func:`register_cli` and runs it with :func:`run_cli`.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

from .._clock import utc
from .._exceptions import SyncReconError
from ._build import build_dashboard


def register_cli(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``dashboard`` command to a command line's subparsers; return its parser."""
    parser = subparsers.add_parser(
        "dashboard",
        help="the five-number dashboard of a database",
        description="Print the dashboard of a syncrecon SQLite database (or write it as HTML).",
    )
    parser.add_argument("--db", required=True, metavar="PATH", help="the SQLite database")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--html", metavar="FILE", help="write a self-contained HTML page")
    parser.add_argument("--sync", help="only this sync (default: every sync)")
    parser.add_argument(
        "--days", type=_positive_int, default=7, metavar="N", help="the window (default: 7)"
    )
    parser.add_argument(
        "--until", type=_instant, metavar="TIME", help="the window's end (ISO 8601; default: now)"
    )
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Run ``dashboard``: print the table, or ``--json``; ``--html FILE`` writes the page.

    Returns the exit status: 0, or 2 when the database does not exist or cannot be read.
    """
    from ..storage.sqlite import SQLiteStorage

    path = Path(args.db)
    if not path.is_file():
        print(f"syncrecon dashboard: no database at {path}", file=sys.stderr)
        return 2
    storage = SQLiteStorage(path)
    try:
        board = build_dashboard(
            storage,
            now=getattr(args, "until", None),
            window=timedelta(days=args.days),
            sync=args.sync,
        )
    except SyncReconError as exc:
        print(f"syncrecon dashboard: {exc}", file=sys.stderr)
        return 2
    finally:
        storage.close()
    if args.html:
        Path(args.html).write_text(board.to_html(), encoding="utf-8")
        print(f"dashboard written to {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps(board.to_dict(), indent=2))
    elif not args.html:
        print(board.to_text(), end="")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _instant(text: str) -> datetime:
    try:
        return utc(datetime.fromisoformat(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
