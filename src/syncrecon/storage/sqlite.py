"""SQLite storage: the embedded default. One file, WAL, versioned migrations.

>>> from syncrecon.storage.sqlite import SQLiteStorage
>>> storage = SQLiteStorage("sync.sqlite")  # doctest: +SKIP

Each :meth:`SQLiteStorage.commit` is one ``BEGIN IMMEDIATE`` transaction, so a crash at any
point leaves either the whole step or none of it. Several processes may share the file (SQLite
serializes writers); for many workers on many machines use the PostgreSQL backend.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from importlib import resources
from os import PathLike
from typing import Any

from .. import _codec
from .._clock import parse_ts, ts
from .._exceptions import SchemaVersionError, StorageError
from .._models import Side
from .._retention import Retention
from ._base import (
    Counter,
    CreateIntent,
    CycleRecord,
    Discrepancy,
    FieldSchema,
    InboxEntry,
    ItemKey,
    ItemOrder,
    ItemUpdate,
    Link,
    LinkMark,
    OutboxEntry,
    ShardPlan,
    ShardResult,
    Status,
    Step,
    SyncState,
    check_order,
    claim_lost,
    item_search_text,
    search_needle,
)
from ._rules import (
    check_fence,
    check_reopen,
    counter_hour,
    counter_window,
    first_sighting,
    lease_free,
    merge_base,
    merge_item,
    prune_cutoffs,
    update_item,
)

__all__ = ["SQLiteStorage"]

_CHUNK = 500  # bound parameters per IN (...) query


def _opt_ts(value: datetime | None) -> str | None:
    return None if value is None else ts(value)


def _opt_parse(text: str | None) -> datetime | None:
    return None if text is None else parse_ts(text)


def hour_bucket(value: datetime) -> str:
    """The hourly counter bucket of ``value``."""
    return ts(counter_hour(value))


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("syncrecon.storage.migrations.sqlite")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text("utf-8")))
    return sorted(found)


@contextlib.contextmanager
def _map_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StorageError(f"SQLite error: {exc}") from exc


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


_ITEM_COLUMNS = (
    "id, sync, left_key, right_key, field, status, left_value, right_value, base_value,"
    " has_base, rule, category, explanation, resolution, detected_at, updated_at, resolved_at,"
    " cycle_id, note, assignee, times_seen"
)


def _enc(value: Any) -> str:
    return _codec.dumps(value)


def _dec(text: str | None) -> Any:
    return None if text is None else _codec.loads(text)


def _item(row: sqlite3.Row) -> Discrepancy:
    return Discrepancy(
        id=row["id"],
        sync=row["sync"],
        left_key=row["left_key"] or None,
        right_key=row["right_key"] or None,
        field=row["field"],
        status=Status(row["status"]),
        left_value=_dec(row["left_value"]),
        right_value=_dec(row["right_value"]),
        base_value=_dec(row["base_value"]),
        has_base=bool(row["has_base"]),
        rule=row["rule"],
        category=row["category"],
        explanation=row["explanation"],
        resolution=_dec(row["resolution"]),
        detected_at=parse_ts(row["detected_at"]),
        updated_at=_opt_parse(row["updated_at"]),
        resolved_at=_opt_parse(row["resolved_at"]),
        cycle_id=row["cycle_id"],
        note=row["note"],
        assignee=row["assignee"],
        times_seen=row["times_seen"],
    )


_HEAD_COLUMNS = (
    "id, sync, left_key, right_key, field, status, rule, category, detected_at, note, assignee,"
    " times_seen"
)
"""What the rules read of a stored item (``merge_item``, ``update_item``): no values."""


def _item_head(row: sqlite3.Row) -> Discrepancy:
    """A stored item without its values (they are not decoded): what the rules read of it."""
    return Discrepancy(
        id=row["id"],
        sync=row["sync"],
        left_key=row["left_key"] or None,
        right_key=row["right_key"] or None,
        field=row["field"],
        status=Status(row["status"]),
        rule=row["rule"],
        category=row["category"],
        detected_at=parse_ts(row["detected_at"]),
        note=row["note"],
        assignee=row["assignee"],
        times_seen=row["times_seen"],
    )


def _link(row: sqlite3.Row) -> Link:
    return Link(
        sync=row["sync"],
        left_key=row["left_key"],
        right_key=row["right_key"],
        natural_key=row["natural_key"],
        base=_codec.loads(row["base"]),
        created_at=parse_ts(row["created_at"]),
    )


_MULTI_ROW_RETURNING = sqlite3.sqlite_version_info >= (3, 35)
"""SQLite 3.35 added ``RETURNING``: a list of inbox events then goes in one statement."""
_INBOX_CHUNK = 500
"""Rows per inbox statement: 5 parameters each, far below SQLite's variable limit."""


class SQLiteStorage:
    """Storage in one SQLite file (``":memory:"`` works too, for one process).

    ``synchronous`` is SQLite's durability setting: ``"NORMAL"`` (the default with WAL)
    survives a process crash; ``"FULL"`` also survives power loss. ``wal_autocheckpoint`` is
    how many WAL pages accumulate before SQLite copies them back into the database file
    (10,000 pages, about 40 MB: fewer, larger checkpoints keep one-event webhook requests
    cheap; SQLite's own default is 1,000).
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        synchronous: str = "NORMAL",
        busy_timeout: timedelta = timedelta(seconds=30),
        wal_autocheckpoint: int = 10_000,
    ) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"unknown synchronous mode {synchronous!r}")
        self.path = str(path)
        self._synchronous = synchronous.upper()
        self._busy_ms = int(busy_timeout.total_seconds() * 1000)
        self._checkpoint_pages = int(wal_autocheckpoint)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._ready = False

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.path!r})"

    def __enter__(self) -> SQLiteStorage:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connection and transactions -------------------------------------------------------

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            with _map_errors():
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                conn.row_factory = sqlite3.Row
                conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                if self.path != ":memory:":
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.execute(f"PRAGMA wal_autocheckpoint = {self._checkpoint_pages}")
                conn.execute(f"PRAGMA synchronous = {self._synchronous}")
                conn.execute("PRAGMA foreign_keys = ON")
            self._conn = conn
        return self._conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _map_errors():
            if not self._ready:
                self._setup_locked()
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, _map_errors():
            if not self._ready:
                self._setup_locked()
            yield self._db

    def setup(self) -> None:
        """Create the schema or migrate it to this version (idempotent)."""
        with self._lock, _map_errors():
            self._setup_locked()

    def _setup_locked(self) -> None:
        db = self._db
        migrations = _migrations()
        latest = migrations[-1][0]
        db.execute("BEGIN IMMEDIATE")
        try:
            current = db.execute("PRAGMA user_version").fetchone()[0]
            if current > latest:
                raise SchemaVersionError(
                    f"{self.path} has schema version {current}; this syncrecon knows up to"
                    f" {latest}. Upgrade syncrecon."
                )
            for version, script in migrations:
                if version > current:
                    for statement in _statements(script):
                        db.execute(statement)
                    after = _AFTER_MIGRATION.get(version)
                    if after is not None:
                        after(db)
                    db.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        self._ready = True

    def close(self) -> None:
        """Close the connection (it reopens on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._ready = False

    def schema_version(self) -> int:
        """The schema version of the database file."""
        with self._read() as db:
            return int(db.execute("PRAGMA user_version").fetchone()[0])

    # -- leases ------------------------------------------------------------------------------

    def acquire_lease(self, name: str, owner: str, ttl: timedelta, now: datetime) -> bool:
        with self._tx() as db:
            row = db.execute(
                "SELECT owner, expires_at FROM leases WHERE name = ?", (name,)
            ).fetchone()
            holder = None if row is None else (row["owner"], parse_ts(row["expires_at"]))
            if not lease_free(holder, owner, now):
                return False
            db.execute(
                "INSERT INTO leases (name, owner, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
                " expires_at = excluded.expires_at",
                (name, owner, ts(now + ttl)),
            )
            return True

    def release_lease(self, name: str, owner: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))

    def renew_lease(self, name: str, owner: str, ttl: timedelta, now: datetime) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND owner = ?",
                (ts(now + ttl), name, owner),
            )
            return cur.rowcount == 1

    def lease_holder(self, name: str) -> tuple[str, datetime] | None:
        with self._read() as db:
            row = db.execute(
                "SELECT owner, expires_at FROM leases WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else (row["owner"], parse_ts(row["expires_at"]))

    @staticmethod
    def _check_fence(db: sqlite3.Connection, step: Step) -> None:
        if step.fence is not None:
            row = db.execute("SELECT owner FROM leases WHERE name = ?", (step.fence[0],)).fetchone()
            check_fence(step, None if row is None else row["owner"])

    # -- links -------------------------------------------------------------------------------

    def get_links(self, sync: str, side: Side, keys: Sequence[str]) -> dict[str, Link]:
        column = "left_key" if Side(side) is Side.LEFT else "right_key"
        # Without statistics SQLite prefers the primary key's (sync) prefix for the right side,
        # a scan of the whole sync (7 ms per 100 keys at 100k links); the index is 50x faster.
        table = "links" if column == "left_key" else "links INDEXED BY links_right"
        found: dict[str, Link] = {}
        with self._read() as db:
            for chunk in _chunks(list(keys)):
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT * FROM {table} WHERE sync = ? AND {column} IN ({marks})",  # noqa: S608
                    (sync, *chunk),
                )
                for row in rows:
                    found[row[column]] = _link(row)
        return found

    def links_by_natural_key(self, sync: str, natural_keys: Sequence[str]) -> dict[str, list[Link]]:
        found: dict[str, list[Link]] = {}
        with self._read() as db:
            for chunk in _chunks(list(natural_keys)):
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT * FROM links WHERE sync = ? AND natural_key IN ({marks})",  # noqa: S608
                    (sync, *chunk),
                )
                for row in rows:
                    found.setdefault(row["natural_key"], []).append(_link(row))
        return found

    def iter_links(self, sync: str, *, batch: int = 1000) -> Iterator[list[Link]]:
        after = ""
        while True:
            with self._read() as db:
                rows = db.execute(
                    "SELECT * FROM links WHERE sync = ? AND left_key > ? ORDER BY left_key LIMIT ?",
                    (sync, after, batch),
                ).fetchall()
            if not rows:
                return
            after = rows[-1]["left_key"]
            yield [_link(r) for r in rows]

    def link_marks(self, sync: str, side: Side, keys: Sequence[str]) -> dict[str, LinkMark]:
        if Side(side) is Side.LEFT:
            column, table = "left_key", "links INDEXED BY links_left_marks"
            seen, digest = "left_seen", "left_digest"
        else:
            column, table = "right_key", "links INDEXED BY links_right_marks"
            seen, digest = "right_seen", "right_digest"
        found: dict[str, LinkMark] = {}
        at = 0 if column == "left_key" else 1
        make = LinkMark._make
        with self._read() as db:
            cur = db.cursor()
            cur.row_factory = None  # plain tuples: this runs for every record of every cycle
            for chunk in _chunks(list(keys)):
                marks = ",".join("?" * len(chunk))
                cur.execute(
                    f"SELECT left_key, right_key, natural_key, {seen}, {digest}"  # noqa: S608
                    f" FROM {table} WHERE sync = ? AND {column} IN ({marks})",
                    (sync, *chunk),
                )
                for row in cur:
                    found[row[at]] = make(row)
        return found

    def iter_link_keys(self, sync: str, *, batch: int = 1000) -> Iterator[list[tuple[str, str]]]:
        after = ""
        while True:
            with self._read() as db:
                rows = db.execute(
                    "SELECT left_key, right_key FROM links WHERE sync = ? AND left_key > ?"
                    " ORDER BY left_key LIMIT ?",
                    (sync, after, batch),
                ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield [(r[0], r[1]) for r in rows]

    def count_links(self, sync: str) -> int:
        with self._read() as db:
            return int(
                db.execute("SELECT count(*) FROM links WHERE sync = ?", (sync,)).fetchone()[0]
            )

    # -- state -------------------------------------------------------------------------------

    def get_sync_state(self, sync: str) -> SyncState:
        with self._read() as db:
            row = db.execute("SELECT * FROM sync_state WHERE sync = ?", (sync,)).fetchone()
        if row is None:
            return SyncState()
        marks = {}
        for side in Side:
            value = row[f"{side.value}_watermark"]
            if value is not None:
                marks[side] = parse_ts(value)
        return SyncState(watermarks=marks, last_full_sweep=_opt_parse(row["last_full_sweep"]))

    # -- the queue ---------------------------------------------------------------------------

    def active_items(self, sync: str) -> dict[ItemKey, Discrepancy]:
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE sync = ?"  # noqa: S608
                " AND status IN ('open', 'escalated')",
                (sync,),
            ).fetchall()
        items = (_item(r) for r in rows)
        return {i.item_key: i for i in items}

    def active_items_of(self, sync: str, left_keys: Sequence[str]) -> dict[ItemKey, Discrepancy]:
        # One query per chunk of keys, over the active items' (sync, left_key, ...) index.
        rows = []
        with self._read() as db:
            for chunk in _chunks(sorted(set(left_keys))):
                marks = ",".join("?" * len(chunk))
                rows += db.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM items WHERE sync = ?"  # noqa: S608
                    f" AND left_key IN ({marks}) AND status IN ('open', 'escalated')",
                    (sync, *chunk),
                ).fetchall()
        items = (_item(r) for r in rows)
        return {i.item_key: i for i in items}

    def get_item(self, item_id: int) -> Discrepancy:
        with self._read() as db:
            row = db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = ?",  # noqa: S608
                (item_id,),
            ).fetchone()
        if row is None:
            raise KeyError(item_id)
        return _item(row)

    def list_items(
        self,
        *,
        sync: str | None = None,
        statuses: Sequence[Status] | None = None,
        category: str | None = None,
        field: str | None = None,
        key: str | None = None,
        assignee: str | None = None,
        unassigned: bool = False,
        search: str | None = None,
        order: ItemOrder = "newest",
        limit: int = 100,
        offset: int = 0,
        before: tuple[datetime, int] | None = None,
        resolved_since: datetime | None = None,
    ) -> list[Discrepancy]:
        check_order(order)
        clause, args = _item_filter(
            sync=sync,
            statuses=statuses,
            category=category,
            field=field,
            key=key,
            assignee=assignee,
            unassigned=unassigned,
            search=search,
            before=before,
            resolved_since=resolved_since,
        )
        direction = "DESC" if order == "newest" else "ASC"
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items {clause}"  # noqa: S608
                f" ORDER BY detected_at {direction}, id {direction} LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [_item(r) for r in rows]

    def count_items(
        self,
        *,
        sync: str | None = None,
        statuses: Sequence[Status] | None = None,
        category: str | None = None,
        field: str | None = None,
        key: str | None = None,
        assignee: str | None = None,
        unassigned: bool = False,
        search: str | None = None,
        before: tuple[datetime, int] | None = None,
        resolved_since: datetime | None = None,
    ) -> int:
        clause, args = _item_filter(
            sync=sync,
            statuses=statuses,
            category=category,
            field=field,
            key=key,
            assignee=assignee,
            unassigned=unassigned,
            search=search,
            before=before,
            resolved_since=resolved_since,
        )
        with self._read() as db:
            row = db.execute(f"SELECT COUNT(*) FROM items {clause}", args).fetchone()  # noqa: S608
        return int(row[0])

    def item_facets(self, *, sync: str | None = None) -> dict[str, list[str]]:
        clause, args = _item_filter(sync=sync, statuses=_ACTIVE)
        columns = ("sync", "category", "field", "assignee")
        with self._read() as db:  # one pass: the distinct combinations are few
            rows = db.execute(
                f"SELECT DISTINCT {', '.join(columns)} FROM items {clause}",  # noqa: S608
                args,
            ).fetchall()
        return {c: sorted({str(r[c]) for r in rows if r[c]}) for c in columns}

    def get_shard_plan(self, cycle_id: str) -> ShardPlan | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM shard_plans WHERE cycle_id = ?", (cycle_id,)).fetchone()
        return None if row is None else _shard_plan(row)

    def open_shard_plans(self, sync: str) -> list[ShardPlan]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM shard_plans WHERE sync = ? ORDER BY created_at, cycle_id", (sync,)
            ).fetchall()
        return [_shard_plan(r) for r in rows]

    def shard_results(self, cycle_id: str) -> dict[int, ShardResult]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM shard_results WHERE cycle_id = ? ORDER BY shard", (cycle_id,)
            ).fetchall()
        return {
            int(r["shard"]): ShardResult(
                cycle_id=r["cycle_id"],
                shard=int(r["shard"]),
                finished_at=parse_ts(r["finished_at"]),
                body=_codec.loads(r["body"]),
            )
            for r in rows
        }

    def list_cycles(self, *, sync: str | None = None, limit: int = 100) -> list[CycleRecord]:
        with self._read() as db:
            if sync is None:
                rows = db.execute(
                    "SELECT * FROM cycles ORDER BY started_at DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM cycles WHERE sync = ? ORDER BY started_at DESC LIMIT ?",
                    (sync, limit),
                ).fetchall()
        return [
            CycleRecord(
                id=r["id"],
                sync=r["sync"],
                started_at=parse_ts(r["started_at"]),
                finished_at=parse_ts(r["finished_at"]),
                mode=r["mode"],
                dry_run=bool(r["dry_run"]),
                report=_codec.loads(r["report"]),
            )
            for r in rows
        ]

    def counter_totals(
        self, metric: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[tuple[Mapping[str, str], int]]:
        first, end = counter_window(since, until)
        low = "" if first is None else ts(first)
        high = "~" if end is None else ts(end)
        with self._read() as db:
            rows = db.execute(
                "SELECT labels, sum(value) AS total FROM counters"
                " WHERE metric = ? AND bucket >= ? AND bucket < ? GROUP BY labels ORDER BY labels",
                (metric, low, high),
            ).fetchall()
        return [(_codec.loads(r["labels"]), int(r["total"])) for r in rows]

    # -- the one write path --------------------------------------------------------------------

    def commit(self, step: Step) -> list[int]:
        now = ts(step.at)
        ids: list[int] = []
        with self._tx() as db:
            self._check_fence(db, step)
            if step.links:
                db.executemany(
                    "INSERT INTO links (sync, left_key, right_key, natural_key, base,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (sync, left_key) DO UPDATE SET right_key = excluded.right_key,"
                    " natural_key = excluded.natural_key, base = excluded.base,"
                    " updated_at = excluded.updated_at, left_seen = NULL, left_digest = NULL,"
                    " right_seen = NULL, right_digest = NULL",
                    [
                        (
                            link.sync,
                            link.left_key,
                            link.right_key,
                            link.natural_key,
                            _codec.dumps(dict(link.base)),
                            _opt_ts(link.created_at) or now,
                            now,
                        )
                        for link in step.links
                    ],
                )
            if step.unlink:
                db.executemany("DELETE FROM links WHERE sync = ? AND left_key = ?", step.unlink)
            for update in step.bases:
                row = db.execute(
                    "SELECT base FROM links WHERE sync = ? AND left_key = ?",
                    (update.sync, update.left_key),
                ).fetchone()
                if row is None:
                    continue  # unlinked in the meantime: nothing to keep a base for
                base = merge_base(_codec.loads(row["base"]), update.values, update.drop)
                db.execute(
                    "UPDATE links SET base = ?, updated_at = ?, left_seen = NULL,"
                    " left_digest = NULL, right_seen = NULL, right_digest = NULL"
                    " WHERE sync = ? AND left_key = ?",
                    (_codec.dumps(base), now, update.sync, update.left_key),
                )
            for side in Side:
                seen, digest = f"{side.value}_seen", f"{side.value}_digest"
                marks = [
                    (m.seen, m.digest, m.sync, m.left_key, m.base)
                    for m in step.marks
                    if m.side is side and m.base is not None
                ]
                db.executemany(
                    f"UPDATE links SET {seen} = ?, {digest} = ?"  # noqa: S608
                    " WHERE sync = ? AND left_key = ? AND base = ?",
                    marks,
                )
                refreshed = [
                    (m.seen, m.sync, m.left_key, m.digest)
                    for m in step.marks
                    if m.side is side and m.base is None
                ]
                db.executemany(
                    f"UPDATE links SET {seen} = ?"  # noqa: S608
                    f" WHERE sync = ? AND left_key = ? AND {digest} = ?",
                    refreshed,
                )
            for item in step.new_items:
                ids.append(self._upsert_item(db, item, step.at))
            for upd in step.item_updates:
                self._update_item(db, upd, step.at)
            for sync, side, mark in step.watermarks:
                column = "left_watermark" if Side(side) is Side.LEFT else "right_watermark"
                db.execute(
                    f"INSERT INTO sync_state (sync, {column}) VALUES (?, ?)"  # noqa: S608
                    f" ON CONFLICT (sync) DO UPDATE SET {column} = excluded.{column}",
                    (sync, ts(mark)),
                )
            for sync, when in step.full_sweeps:
                db.execute(
                    "INSERT INTO sync_state (sync, last_full_sweep) VALUES (?, ?)"
                    " ON CONFLICT (sync) DO UPDATE SET last_full_sweep = excluded.last_full_sweep",
                    (sync, ts(when)),
                )
            if step.cycle is not None:
                c = step.cycle
                db.execute(
                    "INSERT OR REPLACE INTO cycles (id, sync, started_at, finished_at, mode,"
                    " dry_run, report) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        c.id,
                        c.sync,
                        ts(c.started_at),
                        ts(c.finished_at),
                        c.mode,
                        int(c.dry_run),
                        _codec.dumps(dict(c.report)),
                    ),
                )
            self._shard_step(db, step)
            self._count(db, step.counters, step.at)
            self._fast_loop_step(db, step, now)
        return ids

    @staticmethod
    def _shard_step(db: sqlite3.Connection, step: Step) -> None:
        plan = step.shard_plan
        if plan is not None:
            db.execute(
                "INSERT OR REPLACE INTO shard_plans (cycle_id, sync, shards, created_at, spec)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    plan.cycle_id,
                    plan.sync,
                    plan.shards,
                    ts(plan.created_at),
                    _codec.dumps(dict(plan.spec)),
                ),
            )
        for result in step.shard_results:
            db.execute(
                "INSERT INTO shard_results (cycle_id, shard, finished_at, body)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (cycle_id, shard) DO UPDATE SET finished_at = excluded.finished_at,"
                " body = excluded.body",
                (
                    result.cycle_id,
                    result.shard,
                    ts(result.finished_at),
                    _codec.dumps(dict(result.body)),
                ),
            )
        if step.shard_plan_done is not None:
            db.execute("DELETE FROM shard_results WHERE cycle_id = ?", (step.shard_plan_done,))
            db.execute("DELETE FROM shard_plans WHERE cycle_id = ?", (step.shard_plan_done,))

    @staticmethod
    def _count(db: sqlite3.Connection, counters: Sequence[Counter], at: datetime) -> None:
        if not counters:
            return
        bucket = hour_bucket(at)
        db.executemany(
            "INSERT INTO counters (metric, labels, bucket, value) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (metric, labels, bucket) DO UPDATE SET value = value + excluded.value",
            [(c.metric, _codec.dumps(dict(c.labels)), bucket, c.amount) for c in counters],
        )

    @staticmethod
    def _fast_loop_step(db: sqlite3.Connection, step: Step, now: str) -> None:
        if step.schemas:
            db.executemany(
                "INSERT INTO field_schemas (sync, side, field, fingerprint, info, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sync, side, field) DO UPDATE SET"
                " fingerprint = excluded.fingerprint, info = excluded.info,"
                " updated_at = excluded.updated_at",
                [
                    (
                        f.sync,
                        Side(f.side).value,
                        f.field,
                        f.fingerprint,
                        _codec.dumps(dict(f.info)),
                        now,
                    )
                    for f in step.schemas
                ],
            )
        if step.intents:
            db.executemany(
                "INSERT OR REPLACE INTO create_intents (sync, side, source_key, idempotency_key,"
                " created_at) VALUES (?, ?, ?, ?, ?)",
                [
                    (i.sync, Side(i.side).value, i.source_key, i.idempotency_key, ts(i.created_at))
                    for i in step.intents
                ],
            )
        if step.intents_settled:
            db.executemany(
                "DELETE FROM create_intents WHERE sync = ? AND side = ? AND source_key = ?",
                [(sync, Side(side).value, key) for sync, side, key in step.intents_settled],
            )
        if step.events_done:
            if step.claim_owner is not None:
                ids = [event_id for event_id, _, _ in step.events_done]
                lost = 0
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    lost += db.execute(
                        f"SELECT count(*) FROM inbox WHERE id IN ({marks})"  # noqa: S608
                        " AND (status <> 'pending' OR lease_owner IS NOT ?)",
                        (*chunk, step.claim_owner),
                    ).fetchone()[0]
                if lost:
                    raise claim_lost(step.claim_owner, lost, len(ids))
            db.executemany(
                "UPDATE inbox SET status = 'done', outcome = ?, note = ?, done_at = ?,"
                " lease_owner = NULL, lease_until = NULL WHERE id = ?",
                [(outcome, note, now, event_id) for event_id, outcome, note in step.events_done],
            )
        if step.field_times:
            db.executemany(
                "INSERT INTO field_times (sync, left_key, field, source_time) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (sync, left_key, field) DO UPDATE"
                " SET source_time = max(source_time, excluded.source_time)",
                [(sync, key, field, ts(when)) for sync, key, field, when in step.field_times],
            )
        if step.echoes:
            db.executemany(
                "INSERT INTO echoes (sync, side, key, field, fingerprint, expires_at, source_time)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        e.sync,
                        Side(e.side).value,
                        e.key,
                        e.field,
                        e.fingerprint,
                        ts(e.expires_at),
                        _opt_ts(e.source_time),
                    )
                    for e in step.echoes
                ],
            )
        if step.drop_echoes:
            # Spent: never an echo again. An entry with a source time still tells a cycle when
            # the value's edit happened, until it expires (then prune removes it).
            spent = [(i,) for i in step.drop_echoes]
            db.executemany("DELETE FROM echoes WHERE id = ? AND source_time IS NULL", spent)
            db.executemany("UPDATE echoes SET spent = 1 WHERE id = ?", spent)
        if step.outbox_add:
            db.executemany(
                "INSERT INTO outbox (sync, side, key, left_key, right_key, fields, expect, base,"
                " attempts, next_at, last_error, status, created_at, source_time)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        o.sync,
                        Side(o.side).value,
                        o.key,
                        o.left_key,
                        o.right_key,
                        _codec.dumps(dict(o.fields)),
                        _codec.dumps(dict(o.expect)),
                        _codec.dumps(dict(o.base)),
                        o.attempts,
                        ts(o.next_at),
                        o.last_error,
                        o.status,
                        _opt_ts(o.created_at) or now,
                        _opt_ts(o.source_time),
                    )
                    for o in step.outbox_add
                ],
            )
        if step.outbox_update:
            db.executemany(
                "UPDATE outbox SET status = ?, attempts = ?, next_at = ?, last_error = ?,"
                " lease_owner = NULL, lease_until = NULL WHERE id = ?",
                [
                    (u.status, u.attempts, ts(u.next_at), u.last_error, u.id)
                    for u in step.outbox_update
                ],
            )

    # -- the fast loop -------------------------------------------------------------------------

    def enqueue_events(
        self, entries: Sequence[InboxEntry], counters: Sequence[Counter], at: datetime
    ) -> list[int | None]:
        stamps: dict[datetime, str] = {}  # a request's events share their received time
        rows = [
            (
                e.source,
                e.dedupe_key,
                _codec.dumps(e.event if type(e.event) is dict else dict(e.event)),
                stamps.get(e.received_at) or stamps.setdefault(e.received_at, ts(e.received_at)),
                e.record or None,
            )
            for e in entries
        ]
        sql = (
            "INSERT INTO inbox (source, dedupe_key, event, received_at, record)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, dedupe_key) DO NOTHING"
        )
        if len(rows) == 1 and not counters:
            # One statement is its own transaction (autocommit): the common webhook of one
            # event costs one round trip instead of three.
            with self._read() as db:
                cur = db.execute(sql, rows[0])
                return [int(cur.lastrowid) if cur.rowcount == 1 and cur.lastrowid else None]
        ids: list[int | None] = []
        with self._tx() as db:
            if _MULTI_ROW_RETURNING:
                # A group commit's many requests: one statement per chunk, rows in list order
                # (so ids rise with it); the ids come back by key, and a key's first entry in
                # the list is the one stored (a later one, or one stored before, gets None).
                for start in range(0, len(rows), _INBOX_CHUNK):
                    chunk = rows[start : start + _INBOX_CHUNK]
                    marks = ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))  # placeholders only
                    returned = db.execute(
                        "INSERT INTO inbox (source, dedupe_key, event, received_at, record)"  # noqa: S608
                        f" VALUES {marks} ON CONFLICT (source, dedupe_key) DO NOTHING"
                        " RETURNING id, source, dedupe_key",
                        [value for row in chunk for value in row],
                    ).fetchall()
                    stored = {(source, key): int(row_id) for row_id, source, key in returned}
                    ids.extend(stored.pop((row[0], row[1]), None) for row in chunk)
            else:
                for row in rows:
                    cur = db.execute(sql, row)
                    ids.append(int(cur.lastrowid) if cur.rowcount == 1 and cur.lastrowid else None)
            self._count(db, counters, at)
        return ids

    def claim_events(
        self, owner: str, *, limit: int, now: datetime, lease: timedelta
    ) -> list[InboxEntry]:
        # One writer at a time (BEGIN IMMEDIATE): pick the records none of whose pending
        # events another owner holds a live claim on, oldest first, and claim all their
        # pending events. A record is `record`, or the entry alone for rows without one.
        until, at = ts(now + lease), ts(now)
        with self._tx() as db:
            records = [
                r[0]
                for r in db.execute(
                    "SELECT coalesce(record, '#' || id) AS rec FROM inbox"
                    " WHERE status = 'pending' GROUP BY rec"
                    " HAVING max(lease_until IS NOT NULL AND lease_until >= ?"
                    " AND lease_owner <> ?) = 0"
                    " AND rec NOT IN (SELECT record FROM record_claims"
                    " WHERE until >= ? AND owner <> ?)"
                    " ORDER BY min(id) LIMIT ?",
                    (at, owner, at, owner, limit),
                )
            ]
            rows: list[sqlite3.Row] = []
            for chunk in _chunks(records):
                marks = ",".join("?" * len(chunk))
                rows += db.execute(
                    "SELECT * FROM inbox WHERE status = 'pending'"  # noqa: S608
                    f" AND coalesce(record, '#' || id) IN ({marks})",
                    tuple(chunk),
                ).fetchall()
            rows.sort(key=lambda r: r["id"])
            db.executemany(
                "UPDATE inbox SET lease_owner = ?, lease_until = ? WHERE id = ?",
                [(owner, until, r["id"]) for r in rows],
            )
        return [
            InboxEntry(
                id=r["id"],
                source=r["source"],
                dedupe_key=r["dedupe_key"],
                event=_codec.loads(r["event"]),
                received_at=parse_ts(r["received_at"]),
                status=r["status"],
                record=r["record"] or "",
            )
            for r in rows
        ]

    def claim_records(
        self, owner: str, records: Sequence[str], *, now: datetime, lease: timedelta
    ) -> set[str]:
        wanted = sorted(set(records))
        if not wanted:
            return set()
        until, at = ts(now + lease), ts(now)
        granted: set[str] = set()
        with self._tx() as db:  # one writer at a time: the check and the claim are atomic
            for chunk in _chunks(wanted):
                marks = ",".join("?" * len(chunk))
                busy = {
                    r[0]
                    for r in db.execute(
                        "SELECT record FROM inbox WHERE status = 'pending'"  # noqa: S608
                        f" AND record IN ({marks}) AND lease_until IS NOT NULL"
                        " AND lease_until >= ? AND lease_owner <> ?"
                        " UNION SELECT record FROM record_claims"
                        f" WHERE record IN ({marks}) AND until >= ? AND owner <> ?",
                        (*chunk, at, owner, *chunk, at, owner),
                    )
                }
                free = [r for r in chunk if r not in busy]
                db.executemany(
                    "INSERT INTO record_claims (record, owner, until) VALUES (?, ?, ?)"
                    " ON CONFLICT (record) DO UPDATE SET owner = excluded.owner,"
                    " until = excluded.until",
                    [(r, owner, until) for r in free],
                )
                granted.update(free)
        return granted

    def release_records(self, owner: str, records: Sequence[str]) -> None:
        if not records:
            return
        with self._tx() as db:
            for chunk in _chunks(sorted(set(records))):
                marks = ",".join("?" * len(chunk))
                db.execute(
                    f"DELETE FROM record_claims WHERE owner = ? AND record IN ({marks})",  # noqa: S608
                    (owner, *chunk),
                )

    def get_field_times(
        self, sync: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], datetime]:
        # One query per chunk of records (the cycle asks for a whole batch of pairs at once).
        wanted = set(keys)
        found: dict[tuple[str, str], datetime] = {}
        with self._read() as db:
            for chunk in _chunks(sorted({k for k, _ in wanted})):
                marks = ",".join("?" * len(chunk))
                for left_key, field, when in db.execute(
                    "SELECT left_key, field, source_time FROM field_times"  # noqa: S608
                    f" WHERE sync = ? AND left_key IN ({marks})",
                    (sync, *chunk),
                ):
                    if (left_key, field) in wanted:
                        found[(left_key, field)] = parse_ts(when)
        return found

    def find_echo(
        self, sync: str, side: Side, key: str, field: str, fingerprint: str, now: datetime
    ) -> int | None:
        with self._read() as db:
            row = db.execute(
                "SELECT id FROM echoes WHERE sync = ? AND side = ? AND key = ? AND field = ?"
                " AND fingerprint = ? AND expires_at > ? AND spent = 0 ORDER BY id LIMIT 1",
                (sync, Side(side).value, key, field, fingerprint, ts(now)),
            ).fetchone()
        return None if row is None else int(row[0])

    def find_echoes(
        self, sync: str, side: Side, keys: Sequence[str], now: datetime
    ) -> dict[tuple[str, str, str], int]:
        # One query per chunk of keys, over the (sync, side, key, ...) index.
        found: dict[tuple[str, str, str], int] = {}
        with self._read() as db:
            for chunk in _chunks(sorted(set(keys))):
                marks = ",".join("?" * len(chunk))
                for key, field, fp, echo_id in db.execute(
                    "SELECT key, field, fingerprint, min(id) FROM echoes"  # noqa: S608
                    f" WHERE sync = ? AND side = ? AND key IN ({marks})"
                    " AND expires_at > ? AND spent = 0 GROUP BY key, field, fingerprint",
                    (sync, Side(side).value, *chunk, ts(now)),
                ):
                    found[(key, field, fp)] = int(echo_id)
        return found

    def echo_times(
        self, sync: str, records: Sequence[tuple[Side, str]], now: datetime
    ) -> dict[tuple[Side, str, str, str], datetime]:
        # One query per side and chunk of keys, over the (sync, side, key, ...) index.
        keys: dict[Side, set[str]] = {}
        for side, key in records:
            keys.setdefault(Side(side), set()).add(key)
        found: dict[tuple[Side, str, str, str], datetime] = {}
        with self._read() as db:
            for side, wanted in sorted(keys.items()):
                for chunk in _chunks(sorted(wanted)):
                    marks = ",".join("?" * len(chunk))
                    for key, field, fp, when in db.execute(
                        "SELECT key, field, fingerprint, max(source_time) FROM echoes"  # noqa: S608
                        f" WHERE sync = ? AND side = ? AND key IN ({marks})"
                        " AND source_time IS NOT NULL AND expires_at > ?"
                        " GROUP BY key, field, fingerprint",
                        (sync, side.value, *chunk, ts(now)),
                    ):
                        found[(side, key, field, fp)] = parse_ts(when)
        return found

    def claim_outbox(
        self, owner: str, *, limit: int, now: datetime, lease: timedelta
    ) -> list[OutboxEntry]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM outbox WHERE status = 'pending' AND next_at <= ?"
                " AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_at, id LIMIT ?",
                (ts(now), ts(now), limit),
            ).fetchall()
            db.executemany(
                "UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE id = ?",
                [(owner, ts(now + lease), r["id"]) for r in rows],
            )
        return [
            OutboxEntry(
                id=r["id"],
                sync=r["sync"],
                side=Side(r["side"]),
                key=r["key"],
                left_key=r["left_key"],
                right_key=r["right_key"],
                fields=_codec.loads(r["fields"]),
                expect=_codec.loads(r["expect"]),
                base=_codec.loads(r["base"]),
                attempts=r["attempts"],
                next_at=parse_ts(r["next_at"]),
                last_error=r["last_error"],
                status=r["status"],
                created_at=parse_ts(r["created_at"]),
                source_time=_opt_parse(r["source_time"]),
            )
            for r in rows
        ]

    def get_intents(
        self, sync: str, side: Side, source_keys: Sequence[str]
    ) -> dict[str, CreateIntent]:
        found: dict[str, CreateIntent] = {}
        with self._read() as db:
            for chunk in _chunks(list(source_keys)):
                marks = ",".join("?" * len(chunk))
                for row in db.execute(
                    "SELECT * FROM create_intents WHERE sync = ? AND side = ?"  # noqa: S608
                    f" AND source_key IN ({marks})",
                    (sync, Side(side).value, *chunk),
                ):
                    found[row["source_key"]] = CreateIntent(
                        sync=row["sync"],
                        side=Side(row["side"]),
                        source_key=row["source_key"],
                        idempotency_key=row["idempotency_key"],
                        created_at=parse_ts(row["created_at"]),
                    )
        return found

    def get_schemas(self, sync: str) -> list[FieldSchema]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM field_schemas WHERE sync = ? ORDER BY side, field", (sync,)
            ).fetchall()
        return [
            FieldSchema(
                sync=r["sync"],
                side=Side(r["side"]),
                field=r["field"],
                fingerprint=r["fingerprint"],
                info=_codec.loads(r["info"]),
                updated_at=parse_ts(r["updated_at"]),
            )
            for r in rows
        ]

    def prune(self, retention: Retention, now: datetime) -> Mapping[str, int]:
        # Each batch is its own short transaction over an index (0006_retention.sql), and the
        # lock is let go between batches: webhook enqueues slip in between.
        removed: dict[str, int] = {}
        for kind, cut in prune_cutoffs(retention, now).items():
            removed[kind] = 0
            while True:
                with self._tx() as db:
                    gone = int(db.execute(_PRUNE[kind], (ts(cut), retention.batch)).rowcount)
                removed[kind] += gone
                if gone < retention.batch:
                    break
        return removed

    # -- queue items: the rules (``_rules``) decide, these read and write the rows ----------

    @staticmethod
    def _active_item(db: sqlite3.Connection, key: ItemKey) -> Discrepancy | None:
        """The active item of ``key``, without its values (``_item_head``), if there is one."""
        row = db.execute(
            f"SELECT {_HEAD_COLUMNS} FROM items WHERE sync = ? AND left_key = ?"  # noqa: S608
            " AND right_key = ? AND field = ? AND status IN ('open', 'escalated')",
            key,
        ).fetchone()
        return None if row is None else _item_head(row)

    @staticmethod
    def _write_item(db: sqlite3.Connection, item: Discrepancy) -> None:
        """Store every changeable column of the existing item ``item`` (by its id)."""
        db.execute(
            "UPDATE items SET status = ?, left_value = ?, right_value = ?, base_value = ?,"
            " has_base = ?, rule = ?, category = ?, explanation = ?, resolution = ?,"
            " detected_at = ?, updated_at = ?, resolved_at = ?, cycle_id = ?, note = ?,"
            " assignee = ?, times_seen = ?, search_text = ? WHERE id = ?",
            (
                Status(item.status).value,
                _enc(item.left_value),
                _enc(item.right_value),
                _enc(item.base_value),
                int(item.has_base),
                item.rule,
                item.category,
                item.explanation,
                _enc(item.resolution),
                ts(item.detected_at),
                _opt_ts(item.updated_at),
                _opt_ts(item.resolved_at),
                item.cycle_id,
                item.note,
                item.assignee,
                item.times_seen,
                item_search_text(item),
                item.id,
            ),
        )

    def _upsert_item(self, db: sqlite3.Connection, item: Discrepancy, at: datetime) -> int:
        active = self._active_item(db, item.item_key)
        if active is not None:
            merged = merge_item(active, item, at)
            self._write_item(db, merged)
            assert merged.id is not None
            return merged.id
        new = first_sighting(item, at)
        cur = db.execute(
            "INSERT INTO items (sync, left_key, right_key, field, status, left_value,"
            " right_value, base_value, has_base, rule, category, explanation, resolution,"
            " detected_at, updated_at, resolved_at, cycle_id, note, assignee, times_seen,"
            " search_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *new.item_key,
                Status(new.status).value,
                _enc(new.left_value),
                _enc(new.right_value),
                _enc(new.base_value),
                int(new.has_base),
                new.rule,
                new.category,
                new.explanation,
                _enc(new.resolution),
                ts(new.detected_at),
                _opt_ts(new.updated_at),
                _opt_ts(new.resolved_at),
                new.cycle_id,
                new.note,
                new.assignee,
                new.times_seen,
                item_search_text(new),
            ),
        )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def _update_item(self, db: sqlite3.Connection, upd: ItemUpdate, at: datetime) -> None:
        row = db.execute(
            f"SELECT {_HEAD_COLUMNS} FROM items WHERE id = ?",  # noqa: S608
            (upd.id,),
        ).fetchone()
        if row is None:
            return  # an unknown item: nothing to update
        prior = _item_head(row)
        new = update_item(prior, upd, at)
        if new.status.is_active and not prior.status.is_active:
            holder = self._active_item(db, new.item_key)
            check_reopen(new, None if holder is None else holder.id)
        db.execute(  # the columns an update changes (see ``update_item``)
            "UPDATE items SET status = ?, resolution = ?, resolved_at = ?, note = ?,"
            " assignee = ?, updated_at = ? WHERE id = ?",
            (
                Status(new.status).value,
                _enc(new.resolution),
                _opt_ts(new.resolved_at),
                new.note,
                new.assignee,
                _opt_ts(new.updated_at),
                new.id,
            ),
        )


_ACTIVE: tuple[Status, ...] = (Status.OPEN, Status.ESCALATED)


def _item_filter(
    *,
    sync: str | None = None,
    statuses: Sequence[Status] | None = None,
    category: str | None = None,
    field: str | None = None,
    key: str | None = None,
    assignee: str | None = None,
    unassigned: bool = False,
    search: str | None = None,
    before: tuple[datetime, int] | None = None,
    resolved_since: datetime | None = None,
) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (``WHERE 1`` when nothing filters) and its bound arguments of the
    queue's filters (see :meth:`QueueStore.list_items`)."""
    where: list[str] = []
    args: list[Any] = []
    if key is not None and sync is not None:
        # The sync inside each branch: the planner then looks both keys up in their indexes.
        where.append("((left_key = ? AND sync = ?) OR (right_key = ? AND sync = ?))")
        args.extend((key, sync, key, sync))
    elif key is not None:
        where.append("(left_key = ? OR right_key = ?)")
        args.extend((key, key))
    elif sync is not None:
        where.append("sync = ?")
        args.append(sync)
    if statuses:
        wanted = {Status(s) for s in statuses}
        if wanted == set(_ACTIVE):
            # Written out, so the planner can use the index of the active items (a partial
            # index serves only a query whose condition names its own).
            where.append("status IN ('open', 'escalated')")
        else:
            where.append(f"status IN ({','.join('?' * len(wanted))})")
            args.extend(sorted(s.value for s in wanted))
    if category is not None:
        where.append("category = ?")
        args.append(category)
    if field is not None:
        where.append("field = ?")
        args.append(field)
    if assignee is not None:
        where.append("assignee = ?")
        args.append(assignee)
    if unassigned:
        where.append("(assignee IS NULL OR assignee = '')")
    if search is not None and search_needle(search):
        where.append("instr(search_text, ?) > 0")
        args.append(search_needle(search))
    if before is not None:
        where.append("(detected_at, id) < (?, ?)")
        args.extend((ts(before[0]), before[1]))
    if resolved_since is not None:
        where.append("resolved_at >= ?")
        args.append(ts(resolved_since))
    return f"WHERE {' AND '.join(where) or '1'}", args


def _backfill_search_text(db: sqlite3.Connection) -> None:
    """Give every stored item its search text (version 12 added the column)."""
    last = 0
    while True:
        rows = db.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE id > ? ORDER BY id LIMIT 1000",  # noqa: S608
            (last,),
        ).fetchall()
        if not rows:
            return
        items = [_item(r) for r in rows]
        db.executemany(
            "UPDATE items SET search_text = ? WHERE id = ?",
            [(item_search_text(i), i.id) for i in items],
        )
        last = int(rows[-1]["id"])


_AFTER_MIGRATION: dict[int, Callable[[sqlite3.Connection], None]] = {12: _backfill_search_text}
"""What runs in Python right after a migration's SQL, in the same transaction."""


_PRUNE = {
    "inbox": "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox"
    " WHERE status = 'done' AND received_at < ? LIMIT ?)",
    "echoes": "DELETE FROM echoes WHERE id IN (SELECT id FROM echoes WHERE expires_at < ? LIMIT ?)",
    "outbox": "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
    " WHERE status IN ('done', 'failed') AND next_at < ? LIMIT ?)",
    "cycles": "DELETE FROM cycles WHERE rowid IN (SELECT rowid FROM cycles"
    " WHERE started_at < ? LIMIT ?)",
    "counters": "DELETE FROM counters WHERE (metric, labels, bucket) IN"
    " (SELECT metric, labels, bucket FROM counters WHERE bucket < ? LIMIT ?)",
    "items": "DELETE FROM items WHERE id IN (SELECT id FROM items"
    " WHERE resolved_at < ? AND status IN ('resolved', 'auto_resolved', 'dismissed') LIMIT ?)",
}
"""The batch of rows each kind of ``prune_cutoffs`` removes: older than the cutoff, at most the
batch size."""


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (no semicolons inside our SQL literals)."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _shard_plan(row: Any) -> ShardPlan:
    return ShardPlan(
        cycle_id=row["cycle_id"],
        sync=row["sync"],
        shards=int(row["shards"]),
        created_at=parse_ts(row["created_at"]),
        spec=_codec.loads(row["spec"]),
    )
