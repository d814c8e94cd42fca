"""PostgreSQL storage: many processes on many machines share one database.

>>> from syncrecon.storage.postgres import PostgresStorage
>>> storage = PostgresStorage("postgresql://sync@db/sync")  # doctest: +SKIP

Needs the ``postgres`` extra (``pip install 'syncrecon[postgres]'``: psycopg 3 and
psycopg-pool). Each :meth:`PostgresStorage.commit` is one transaction. Values are stored as in
SQLite (canonical JSON text, times as fixed-width UTC text), so every backend reads back the
same values; the rules both backends apply live in ``syncrecon.storage._rules``.

Coordination between processes: the inbox is claimed per record (a per-record transaction
lock taken without waiting, then the record's pending events locked with
``FOR UPDATE SKIP LOCKED``), the outbox per entry (``FOR UPDATE SKIP LOCKED``), leases and
fences lock their lease row, and the migrations run under ``pg_advisory_xact_lock``. Writes
that take many keys' row locks (an enqueue of many events, a step's items) first lock the keys
in one sorted pass of transaction-level advisory locks, so they never wait in a circle.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, TypeVar

try:
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # tested with psycopg or psycopg_pool hidden in sys.modules
    from .._exceptions import ConfigurationError

    class _MissingExtraError(ConfigurationError, ImportError):
        """An extra is not installed: a ConfigurationError, and an ImportError to ``except``."""

    raise _MissingExtraError(
        "PostgresStorage needs the 'postgres' extra: pip install 'syncrecon[postgres]'"
    ) from exc

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

__all__ = ["PostgresStorage"]

_T = TypeVar("_T")

Conn = psycopg.Cursor[dict[str, Any]]
"""What a transaction works with: a cursor whose rows are dicts."""

_ITEM_COLUMNS = (
    "id, sync, left_key, right_key, field, status, left_value, right_value, base_value,"
    " has_base, rule, category, explanation, resolution, detected_at, updated_at, resolved_at,"
    " cycle_id, note, assignee, times_seen"
)
_HEAD_COLUMNS = (
    "id, sync, left_key, right_key, field, status, rule, category, detected_at, note, assignee,"
    " times_seen"
)
_RECORD = "coalesce(record, '#' || id)"
"""A pending event's record: ``record``, or the entry alone for rows without one."""


def _by_key(rows: Sequence[_T], key: Callable[[_T], Any]) -> list[_T]:
    """``rows`` in the order of their key (stable: of two rows with one key, the later stays
    later). Every transaction writes the rows it upserts in key order, so two transactions
    that write the same rows wait for each other instead of deadlocking."""
    return sorted(rows, key=key)


def _opt_ts(value: datetime | None) -> str | None:
    return None if value is None else ts(value)


def _opt_parse(text: str | None) -> datetime | None:
    return None if text is None else parse_ts(text)


def _enc(value: Any) -> str:
    return _codec.dumps(value)


def _dec(text: str | None) -> Any:
    return None if text is None else _codec.loads(text)


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("syncrecon.storage.migrations.postgres")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text("utf-8")))
    return sorted(found)


@contextlib.contextmanager
def _map_errors() -> Iterator[None]:
    """The one place driver errors become :class:`~syncrecon.StorageError`."""
    try:
        yield
    except (psycopg.Error, PoolTimeout) as exc:
        raise StorageError(f"PostgreSQL error: {exc}") from exc


def _item(row: Mapping[str, Any]) -> Discrepancy:
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


def _item_head(row: Mapping[str, Any]) -> Discrepancy:
    """A stored item without its values: what the rules read of it."""
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


def _link(row: Mapping[str, Any]) -> Link:
    return Link(
        sync=row["sync"],
        left_key=row["left_key"],
        right_key=row["right_key"],
        natural_key=row["natural_key"],
        base=_codec.loads(row["base"]),
        created_at=parse_ts(row["created_at"]),
    )


def _inbox_lock_key(source: str, dedupe_key: str) -> str:
    """The advisory-lock key of an inbox key: the source's length first, so no two
    ``(source, dedupe_key)`` pairs share one (``("a", "b:c")`` and ``("a:b", "c")`` differ)."""
    return f"{len(source)}:{source}:{dedupe_key}"


def _inbox_entry(r: Mapping[str, Any]) -> InboxEntry:
    return InboxEntry(
        id=r["id"],
        source=r["source"],
        dedupe_key=r["dedupe_key"],
        event=_codec.loads(r["event"]),
        received_at=parse_ts(r["received_at"]),
        status=r["status"],
        record=r["record"] or "",
    )


class PostgresStorage:
    """Storage in a PostgreSQL database (one ``schema`` of it), shared by many processes.

    Give either ``conninfo`` (a libpq connection string or URL: the storage opens its own
    pool of ``min_size`` to ``max_size`` connections and closes it in :meth:`close`) or
    ``pool``, a :class:`psycopg_pool.ConnectionPool` of the host's (the host opens and closes
    it). ``timeout`` is how long (seconds) an operation waits for a connection of the
    storage's own pool before it fails with :class:`~syncrecon.StorageError`.

    Every table lives in ``schema`` (created by :meth:`setup`), so several deployments may
    share one database. On a host's pool every transaction sets its own ``search_path``, so
    the connections need no configuration; the storage's own pool sets it once per connection.
    """

    def __init__(
        self,
        conninfo: str | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        schema: str = "syncrecon",
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
    ) -> None:
        if (conninfo is None) == (pool is None):
            raise ValueError("give either conninfo or pool")
        if not schema:
            raise ValueError("schema must not be empty")
        self.schema = schema
        self._conninfo = conninfo
        self._own_pool = pool is None
        self._pool: ConnectionPool[Any] | None = pool
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._lock = threading.Lock()
        self._ready = False
        self._set_path = sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema))
        self._session_path = sql.SQL("SET search_path TO {}").format(sql.Identifier(schema))

    def __repr__(self) -> str:
        return f"PostgresStorage(schema={self.schema!r})"

    def __enter__(self) -> PostgresStorage:
        self.setup()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections and transactions ------------------------------------------------------

    def _get_pool(self) -> ConnectionPool[Any]:
        with self._lock:
            if self._pool is None:
                assert self._conninfo is not None
                with _map_errors():
                    self._pool = ConnectionPool(
                        self._conninfo,
                        min_size=self._min_size,
                        max_size=self._max_size,
                        timeout=self._timeout,
                        configure=self._configure,
                        open=True,
                    )
            return self._pool

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """A new connection of the storage's own pool: its ``search_path`` set once, for the
        connection's life (a host's pool is shared: there it is set per transaction)."""
        conn.execute(self._session_path)
        conn.commit()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Conn]:
        """One transaction on a pooled connection, with ``search_path`` set to the schema."""
        if not self._ready:
            self.setup()
        with _map_errors(), self._get_pool().connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=dict_row)
            if not self._own_pool:
                cur.execute(self._set_path)
            yield cur

    _read = _tx

    def setup(self) -> None:
        """Create the schema or migrate it to this version (idempotent, safe to run from many
        processes at once: the migrations run under a transaction-level advisory lock)."""
        migrations = _migrations()
        latest = migrations[-1][0]
        with _map_errors(), self._get_pool().connection() as c, c.transaction():
            conn = c.cursor(row_factory=dict_row)
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"syncrecon.migrate:{self.schema}",),
            )
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            conn.execute(self._set_path)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            row = conn.execute("SELECT max(version) AS v FROM schema_version").fetchone()
            current = 0 if row is None or row["v"] is None else int(row["v"])
            if current > latest:
                raise SchemaVersionError(
                    f"schema {self.schema!r} has schema version {current}; this syncrecon"
                    f" knows up to {latest}. Upgrade syncrecon."
                )
            for version, script in migrations:
                if version > current:
                    conn.execute(script.encode())  # no parameters: the whole script at once
                    conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        self._ready = True

    def close(self) -> None:
        """Close the pool if this storage opened it (a host's pool is the host's to close)."""
        with self._lock:
            if self._own_pool and self._pool is not None:
                self._pool.close()
                self._pool = None
            self._ready = False

    def schema_version(self) -> int:
        """The schema version of the database schema."""
        with self._read() as db:
            row = db.execute("SELECT max(version) AS v FROM schema_version").fetchone()
        return 0 if row is None or row["v"] is None else int(row["v"])

    def _lock_keys(self, db: Conn, kind: str, keys: Sequence[str], *, wait: bool) -> set[str]:
        """Transaction-level advisory locks on ``keys`` (of ``kind``, in this schema): all of
        them, in a fixed order (``wait``), or those free now (without waiting)."""
        if not keys:
            return set()
        space = f"syncrecon.{kind}:{self.schema}"
        if wait:
            db.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s), h) FROM"
                " (SELECT DISTINCT hashtext(k) AS h FROM unnest(%s::text[]) AS k ORDER BY h) s",
                (space, list(keys)),
            )
            return set(keys)
        rows = db.execute(
            "SELECT k FROM unnest(%s::text[]) WITH ORDINALITY AS u(k, n)"
            " WHERE pg_try_advisory_xact_lock(hashtext(%s), hashtext(k)) ORDER BY n",
            (list(keys), space),
        ).fetchall()
        return {r["k"] for r in rows}

    # -- leases ------------------------------------------------------------------------------

    def acquire_lease(self, name: str, owner: str, ttl: timedelta, now: datetime) -> bool:
        with self._tx() as db:
            inserted = db.execute(
                "INSERT INTO leases (name, owner, expires_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO NOTHING",
                (name, owner, ts(now + ttl)),
            ).rowcount
            if inserted == 1:
                return True
            row = db.execute(
                "SELECT owner, expires_at FROM leases WHERE name = %s FOR UPDATE", (name,)
            ).fetchone()
            holder = None if row is None else (row["owner"], parse_ts(row["expires_at"]))
            if not lease_free(holder, owner, now):
                return False
            db.execute(
                "INSERT INTO leases (name, owner, expires_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
                " expires_at = excluded.expires_at",
                (name, owner, ts(now + ttl)),
            )
            return True

    def release_lease(self, name: str, owner: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM leases WHERE name = %s AND owner = %s", (name, owner))

    def renew_lease(self, name: str, owner: str, ttl: timedelta, now: datetime) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE leases SET expires_at = %s WHERE name = %s AND owner = %s",
                (ts(now + ttl), name, owner),
            )
            return cur.rowcount == 1

    def lease_holder(self, name: str) -> tuple[str, datetime] | None:
        with self._read() as db:
            row = db.execute(
                "SELECT owner, expires_at FROM leases WHERE name = %s", (name,)
            ).fetchone()
        return None if row is None else (row["owner"], parse_ts(row["expires_at"]))

    @staticmethod
    def _check_fence(db: Conn, step: Step) -> None:
        if step.fence is not None:
            # FOR SHARE: the lease cannot change hands until this step commits.
            row = db.execute(
                "SELECT owner FROM leases WHERE name = %s FOR SHARE", (step.fence[0],)
            ).fetchone()
            check_fence(step, None if row is None else row["owner"])

    # -- links -------------------------------------------------------------------------------

    def get_links(self, sync: str, side: Side, keys: Sequence[str]) -> dict[str, Link]:
        column = "left_key" if Side(side) is Side.LEFT else "right_key"
        found: dict[str, Link] = {}
        if not keys:
            return found
        with self._read() as db:
            rows = db.execute(
                f"SELECT * FROM links WHERE sync = %s AND {column} = ANY(%s)",  # noqa: S608
                (sync, list(keys)),
            ).fetchall()
        for row in rows:
            found[row[column]] = _link(row)
        return found

    def links_by_natural_key(self, sync: str, natural_keys: Sequence[str]) -> dict[str, list[Link]]:
        found: dict[str, list[Link]] = {}
        if not natural_keys:
            return found
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM links WHERE sync = %s AND natural_key = ANY(%s)",
                (sync, list(natural_keys)),
            ).fetchall()
        for row in rows:
            found.setdefault(row["natural_key"], []).append(_link(row))
        return found

    def iter_links(self, sync: str, *, batch: int = 1000) -> Iterator[list[Link]]:
        after = ""
        while True:
            with self._read() as db:
                rows = db.execute(
                    "SELECT * FROM links WHERE sync = %s AND left_key > %s"
                    " ORDER BY left_key LIMIT %s",
                    (sync, after, batch),
                ).fetchall()
            if not rows:
                return
            after = rows[-1]["left_key"]
            yield [_link(r) for r in rows]

    def link_marks(self, sync: str, side: Side, keys: Sequence[str]) -> dict[str, LinkMark]:
        if Side(side) is Side.LEFT:
            column, seen, digest = "left_key", "left_seen", "left_digest"
        else:
            column, seen, digest = "right_key", "right_seen", "right_digest"
        found: dict[str, LinkMark] = {}
        if not keys:
            return found
        with self._read() as db:
            rows = db.execute(
                f"SELECT left_key, right_key, natural_key, {seen} AS seen,"  # noqa: S608
                f" {digest} AS digest FROM links WHERE sync = %s AND {column} = ANY(%s)",
                (sync, list(keys)),
            ).fetchall()
        for r in rows:
            found[r[column]] = LinkMark(
                r["left_key"], r["right_key"], r["natural_key"], r["seen"], r["digest"]
            )
        return found

    def iter_link_keys(self, sync: str, *, batch: int = 1000) -> Iterator[list[tuple[str, str]]]:
        after = ""
        while True:
            with self._read() as db:
                rows = db.execute(
                    "SELECT left_key, right_key FROM links WHERE sync = %s AND left_key > %s"
                    " ORDER BY left_key LIMIT %s",
                    (sync, after, batch),
                ).fetchall()
            if not rows:
                return
            after = rows[-1]["left_key"]
            yield [(r["left_key"], r["right_key"]) for r in rows]

    def count_links(self, sync: str) -> int:
        with self._read() as db:
            row = db.execute("SELECT count(*) AS n FROM links WHERE sync = %s", (sync,)).fetchone()
        assert row is not None
        return int(row["n"])

    # -- state -------------------------------------------------------------------------------

    def get_sync_state(self, sync: str) -> SyncState:
        with self._read() as db:
            row = db.execute("SELECT * FROM sync_state WHERE sync = %s", (sync,)).fetchone()
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
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE sync = %s"  # noqa: S608
                " AND status IN ('open', 'escalated')",
                (sync,),
            ).fetchall()
        items = (_item(r) for r in rows)
        return {i.item_key: i for i in items}

    def active_items_of(self, sync: str, left_keys: Sequence[str]) -> dict[ItemKey, Discrepancy]:
        wanted = sorted(set(left_keys))
        if not wanted:
            return {}
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE sync = %s"  # noqa: S608
                " AND left_key = ANY(%s) AND status IN ('open', 'escalated')",
                (sync, wanted),
            ).fetchall()
        items = (_item(r) for r in rows)
        return {i.item_key: i for i in items}

    def get_item(self, item_id: int) -> Discrepancy:
        with self._read() as db:
            row = db.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE id = %s",  # noqa: S608
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
                f" ORDER BY detected_at {direction}, id {direction} LIMIT %s OFFSET %s",
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
            row = db.execute(
                f"SELECT count(*) AS n FROM items {clause}",  # noqa: S608
                args,
            ).fetchone()
        assert row is not None
        return int(row["n"])

    def item_facets(self, *, sync: str | None = None) -> dict[str, list[str]]:
        clause, args = _item_filter(sync=sync, statuses=_ACTIVE)
        columns = ("sync", "category", "field", "assignee")
        with self._read() as db:
            rows = db.execute(
                f"SELECT DISTINCT {', '.join(columns)} FROM items {clause}",  # noqa: S608
                args,
            ).fetchall()
        return {c: sorted({str(r[c]) for r in rows if r[c]}) for c in columns}

    def get_shard_plan(self, cycle_id: str) -> ShardPlan | None:
        with self._read() as db:
            row = db.execute(
                "SELECT * FROM shard_plans WHERE cycle_id = %s", (cycle_id,)
            ).fetchone()
        return None if row is None else _shard_plan(row)

    def open_shard_plans(self, sync: str) -> list[ShardPlan]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM shard_plans WHERE sync = %s ORDER BY created_at, cycle_id", (sync,)
            ).fetchall()
        return [_shard_plan(r) for r in rows]

    def shard_results(self, cycle_id: str) -> dict[int, ShardResult]:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM shard_results WHERE cycle_id = %s ORDER BY shard", (cycle_id,)
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
                    "SELECT * FROM cycles ORDER BY started_at DESC LIMIT %s", (limit,)
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM cycles WHERE sync = %s ORDER BY started_at DESC LIMIT %s",
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
                "SELECT labels, sum(value) AS total FROM counters WHERE metric = %s"
                " AND bucket >= %s AND bucket < %s GROUP BY labels ORDER BY labels",
                (metric, low, high),
            ).fetchall()
        return [(_codec.loads(r["labels"]), int(r["total"])) for r in rows]

    # -- the one write path --------------------------------------------------------------------

    def commit(self, step: Step) -> list[int]:
        now = ts(step.at)
        ids: list[int] = []
        with self._tx() as db:
            self._check_fence(db, step)
            cur = db
            if step.links:
                links = _by_key(step.links, lambda x: (x.sync, x.left_key))
                # Two steps upserting one new link at once would race on the right-key index,
                # which ON CONFLICT (its arbiter is the left key) does not cover: take a lock
                # per link first, in key order, so the second sees the first's row and updates.
                cur.executemany(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    [(f"syncrecon-link:{link.sync}:{link.left_key}",) for link in links],
                )
                cur.executemany(
                    "INSERT INTO links (sync, left_key, right_key, natural_key, base,"
                    " created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
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
                        for link in links
                    ],
                )
            if step.unlink:
                cur.executemany(
                    "DELETE FROM links WHERE sync = %s AND left_key = %s", sorted(step.unlink)
                )
            for update in _by_key(step.bases, lambda b: (b.sync, b.left_key)):
                row = db.execute(
                    "SELECT base FROM links WHERE sync = %s AND left_key = %s FOR UPDATE",
                    (update.sync, update.left_key),
                ).fetchone()
                if row is None:
                    continue  # unlinked in the meantime: nothing to keep a base for
                base = merge_base(_codec.loads(row["base"]), update.values, update.drop)
                db.execute(
                    "UPDATE links SET base = %s, updated_at = %s, left_seen = NULL,"
                    " left_digest = NULL, right_seen = NULL, right_digest = NULL"
                    " WHERE sync = %s AND left_key = %s",
                    (_codec.dumps(base), now, update.sync, update.left_key),
                )
            for side in Side:
                seen, digest = f"{side.value}_seen", f"{side.value}_digest"
                marks = [
                    (m.seen, m.digest, m.sync, m.left_key, m.base)
                    for m in _by_key(step.marks, lambda m: (m.sync, m.left_key))
                    if m.side is side and m.base is not None
                ]
                if marks:
                    cur.executemany(
                        f"UPDATE links SET {seen} = %s, {digest} = %s"  # noqa: S608
                        " WHERE sync = %s AND left_key = %s AND base = %s",
                        marks,
                    )
                refreshed = [
                    (m.seen, m.sync, m.left_key, m.digest)
                    for m in _by_key(step.marks, lambda m: (m.sync, m.left_key))
                    if m.side is side and m.base is None
                ]
                if refreshed:
                    cur.executemany(
                        f"UPDATE links SET {seen} = %s"  # noqa: S608
                        f" WHERE sync = %s AND left_key = %s AND {digest} = %s",
                        refreshed,
                    )
            if step.new_items or step.item_updates:
                # One writer per record and field at a time: the active-item check and the
                # write below are atomic against another process's step. The items a step
                # updates by id are locked by their keys too, all in one sorted pass before
                # any row is written: two steps touching the same items in different orders
                # (a cycle settling items, a worker escalating) never wait on each other's
                # row locks in a circle.
                keys = ["\x1f".join(i.item_key) for i in step.new_items]
                keys += self._item_keys_of(db, [u.id for u in step.item_updates])
                self._lock_keys(db, "item", keys, wait=True)
            for item in step.new_items:
                ids.append(self._upsert_item(db, item, step.at))
            for upd in step.item_updates:
                self._update_item(db, upd, step.at)
            for sync, side, mark in step.watermarks:
                column = "left_watermark" if Side(side) is Side.LEFT else "right_watermark"
                db.execute(
                    f"INSERT INTO sync_state (sync, {column}) VALUES (%s, %s)"  # noqa: S608
                    f" ON CONFLICT (sync) DO UPDATE SET {column} = excluded.{column}",
                    (sync, ts(mark)),
                )
            for sync, when in step.full_sweeps:
                db.execute(
                    "INSERT INTO sync_state (sync, last_full_sweep) VALUES (%s, %s)"
                    " ON CONFLICT (sync) DO UPDATE SET last_full_sweep = excluded.last_full_sweep",
                    (sync, ts(when)),
                )
            if step.cycle is not None:
                c = step.cycle
                db.execute(
                    "INSERT INTO cycles (id, sync, started_at, finished_at, mode, dry_run,"
                    " report) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE"
                    " SET sync = excluded.sync, started_at = excluded.started_at,"
                    " finished_at = excluded.finished_at, mode = excluded.mode,"
                    " dry_run = excluded.dry_run, report = excluded.report",
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
    def _shard_step(db: Conn, step: Step) -> None:
        plan = step.shard_plan
        if plan is not None:
            db.execute(
                "INSERT INTO shard_plans (cycle_id, sync, shards, created_at, spec)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (cycle_id) DO UPDATE SET"
                " sync = excluded.sync,"
                " shards = excluded.shards, created_at = excluded.created_at,"
                " spec = excluded.spec",
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
                " VALUES (%s, %s, %s, %s)"
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
            db.execute("DELETE FROM shard_results WHERE cycle_id = %s", (step.shard_plan_done,))
            db.execute("DELETE FROM shard_plans WHERE cycle_id = %s", (step.shard_plan_done,))

    @staticmethod
    def _count(db: Conn, counters: Sequence[Counter], at: datetime) -> None:
        if not counters:
            return
        bucket = ts(counter_hour(at))
        # In key order (see ``_by_key``): counters are the rows most steps share.
        db.executemany(
            "INSERT INTO counters (metric, labels, bucket, value) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (metric, labels, bucket) DO UPDATE"
            " SET value = counters.value + excluded.value",
            sorted(  # a sum does not depend on the order
                (c.metric, _codec.dumps(dict(c.labels)), bucket, c.amount) for c in counters
            ),
        )

    @staticmethod
    def _fast_loop_step(db: Conn, step: Step, now: str) -> None:
        cur = db
        if step.schemas:
            cur.executemany(
                "INSERT INTO field_schemas (sync, side, field, fingerprint, info, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (sync, side, field) DO UPDATE SET"
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
                    for f in _by_key(step.schemas, lambda f: (f.sync, Side(f.side).value, f.field))
                ],
            )
        if step.intents:
            cur.executemany(
                "INSERT INTO create_intents (sync, side, source_key, idempotency_key,"
                " created_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (sync, side, source_key)"
                " DO UPDATE SET idempotency_key = excluded.idempotency_key,"
                " created_at = excluded.created_at",
                [
                    (i.sync, Side(i.side).value, i.source_key, i.idempotency_key, ts(i.created_at))
                    for i in _by_key(
                        step.intents, lambda i: (i.sync, Side(i.side).value, i.source_key)
                    )
                ],
            )
        if step.intents_settled:
            cur.executemany(
                "DELETE FROM create_intents WHERE sync = %s AND side = %s AND source_key = %s",
                [(sync, Side(side).value, key) for sync, side, key in step.intents_settled],
            )
        if step.events_done:
            if step.claim_owner is not None:
                ids = [event_id for event_id, _, _ in step.events_done]
                # FOR UPDATE: a claim by another worker that is being committed now is seen.
                rows = db.execute(
                    "SELECT status, lease_owner FROM inbox WHERE id = ANY(%s) FOR UPDATE",
                    (ids,),
                ).fetchall()
                lost = sum(
                    1
                    for r in rows
                    if r["status"] != "pending" or r["lease_owner"] != step.claim_owner
                )
                if lost:
                    raise claim_lost(step.claim_owner, lost, len(ids))
            cur.executemany(
                "UPDATE inbox SET status = 'done', outcome = %s, note = %s, done_at = %s,"
                " lease_owner = NULL, lease_until = NULL WHERE id = %s",
                [(outcome, note, now, event_id) for event_id, outcome, note in step.events_done],
            )
        if step.field_times:
            cur.executemany(
                "INSERT INTO field_times (sync, left_key, field, source_time)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (sync, left_key, field) DO UPDATE"
                " SET source_time = greatest(field_times.source_time, excluded.source_time)",
                sorted((sync, key, field, ts(when)) for sync, key, field, when in step.field_times),
            )
        if step.echoes:
            cur.executemany(
                "INSERT INTO echoes (sync, side, key, field, fingerprint, expires_at,"
                " source_time) VALUES (%s, %s, %s, %s, %s, %s, %s)",
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
            spent = list(step.drop_echoes)
            db.execute("DELETE FROM echoes WHERE id = ANY(%s) AND source_time IS NULL", (spent,))
            db.execute("UPDATE echoes SET spent = 1 WHERE id = ANY(%s)", (spent,))
        if step.outbox_add:
            cur.executemany(
                "INSERT INTO outbox (sync, side, key, left_key, right_key, fields, expect, base,"
                " attempts, next_at, last_error, status, created_at, source_time)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
            cur.executemany(
                "UPDATE outbox SET status = %s, attempts = %s, next_at = %s, last_error = %s,"
                " lease_owner = NULL, lease_until = NULL WHERE id = %s",
                [
                    (u.status, u.attempts, ts(u.next_at), u.last_error, u.id)
                    for u in step.outbox_update
                ],
            )

    # -- the fast loop -------------------------------------------------------------------------

    def enqueue_events(
        self, entries: Sequence[InboxEntry], counters: Sequence[Counter], at: datetime
    ) -> list[int | None]:
        # One statement for the whole list (a group commit's many requests): the rows in list
        # order, a key already stored or met earlier in the list skipped; the ids come back
        # by key, and a key's first entry in the list is the one stored.
        #
        # The INSERT takes the unique index's locks in list order, so two calls sharing keys
        # in different orders (two processes' group commits) could wait on each other in a
        # circle. A call of two keys or more first locks its keys in one sorted pass (one
        # statement, see ``_lock_keys``): two such calls wait in the same order, and by the
        # time one inserts, no other multi-key call can hold an uncommitted row of its keys.
        # A call of one key skips it: it waits for at most one other transaction, holding
        # nothing that one could need, so it is never part of a circle.
        ids: list[int | None] = []
        with self._tx() as db:
            keys = {_inbox_lock_key(e.source, e.dedupe_key) for e in entries}
            if len(keys) > 1:
                self._lock_keys(db, "inbox", sorted(keys), wait=True)
            if entries:
                rows = db.execute(
                    "INSERT INTO inbox (source, dedupe_key, event, received_at, record)"
                    " SELECT source, dedupe_key, event, received_at, record FROM unnest("
                    "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[])"
                    " WITH ORDINALITY AS d(source, dedupe_key, event, received_at, record, n)"
                    " ORDER BY n ON CONFLICT (source, dedupe_key) DO NOTHING"
                    " RETURNING id, source, dedupe_key",
                    (
                        [e.source for e in entries],
                        [e.dedupe_key for e in entries],
                        [_codec.dumps(dict(e.event)) for e in entries],
                        [ts(e.received_at) for e in entries],
                        [e.record or None for e in entries],
                    ),
                ).fetchall()
                stored = {(r["source"], r["dedupe_key"]): int(r["id"]) for r in rows}
                for e in entries:
                    ids.append(stored.pop((e.source, e.dedupe_key), None))
            self._count(db, counters, at)
        return ids

    def claim_events(
        self, owner: str, *, limit: int, now: datetime, lease: timedelta
    ) -> list[InboxEntry]:
        # Per record: the records none of whose pending events another owner holds a live
        # claim on, oldest first; each is taken with a record lock that does not wait (a
        # record another process is claiming right now is skipped), then its pending events
        # are locked (FOR UPDATE SKIP LOCKED) and checked again in a fresh snapshot. A record
        # with an event locked elsewhere is left for the next claim: one worker per record.
        until, at = ts(now + lease), ts(now)
        with self._tx() as db:
            candidates = [
                r["rec"]
                for r in db.execute(
                    f"SELECT {_RECORD} AS rec FROM inbox"  # noqa: S608
                    " WHERE status = 'pending' GROUP BY rec"
                    " HAVING NOT bool_or(lease_until IS NOT NULL AND lease_until >= %s"
                    " AND lease_owner <> %s)"
                    f" AND {_RECORD} NOT IN (SELECT record FROM record_claims"
                    " WHERE until >= %s AND owner <> %s)"
                    " ORDER BY min(id) LIMIT %s",
                    (at, owner, at, owner, limit),
                )
            ]
            mine = self._lock_keys(db, "record", candidates, wait=False)
            if not mine:
                return []
            rows = db.execute(
                f"SELECT * FROM inbox WHERE status = 'pending' AND {_RECORD} = ANY(%s)"  # noqa: S608
                " ORDER BY id FOR UPDATE SKIP LOCKED",
                (list(mine),),
            ).fetchall()
            if not rows:
                return []
            # A pending event of these records that is not locked here is locked elsewhere
            # (or arrived just now: only the ids up to the newest locked one count).
            every = db.execute(
                f"SELECT id, {_RECORD} AS rec FROM inbox WHERE status = 'pending'"  # noqa: S608
                f" AND {_RECORD} = ANY(%s) AND id <= %s",
                (list(mine), max(r["id"] for r in rows)),
            ).fetchall()
            held = {
                r["record"]
                for r in db.execute(
                    "SELECT record FROM record_claims WHERE record = ANY(%s)"
                    " AND until >= %s AND owner <> %s",
                    (list(mine), at, owner),
                ).fetchall()
            }
            locked = {r["id"] for r in rows}
            busy = held | {r["rec"] for r in every if r["id"] not in locked}
            for r in rows:
                live = r["lease_until"] is not None and r["lease_until"] >= at
                if live and r["lease_owner"] != owner:
                    busy.add(r["record"] or f"#{r['id']}")
            rows = [r for r in rows if (r["record"] or f"#{r['id']}") not in busy]
            if rows:
                db.execute(
                    "UPDATE inbox SET lease_owner = %s, lease_until = %s WHERE id = ANY(%s)",
                    (owner, until, [r["id"] for r in rows]),
                )
        return [_inbox_entry(r) for r in rows]

    def claim_records(
        self, owner: str, records: Sequence[str], *, now: datetime, lease: timedelta
    ) -> set[str]:
        wanted = sorted(set(records))
        if not wanted:
            return set()
        until, at = ts(now + lease), ts(now)
        with self._tx() as db:
            # The record locks claim_events takes: the check and the claim are atomic.
            self._lock_keys(db, "record", wanted, wait=True)
            busy = {
                r["record"]
                for r in db.execute(
                    "SELECT record FROM inbox WHERE status = 'pending' AND record = ANY(%s)"
                    " AND lease_until IS NOT NULL AND lease_until >= %s AND lease_owner <> %s"
                    " UNION SELECT record FROM record_claims WHERE record = ANY(%s)"
                    " AND until >= %s AND owner <> %s",
                    (wanted, at, owner, wanted, at, owner),
                ).fetchall()
            }
            free = [r for r in wanted if r not in busy]
            if free:
                db.executemany(
                    "INSERT INTO record_claims (record, owner, until) VALUES (%s, %s, %s)"
                    " ON CONFLICT (record) DO UPDATE SET owner = excluded.owner,"
                    " until = excluded.until",
                    [(r, owner, until) for r in free],
                )
        return set(free)

    def release_records(self, owner: str, records: Sequence[str]) -> None:
        if not records:
            return
        with self._tx() as db:
            db.execute(
                "DELETE FROM record_claims WHERE owner = %s AND record = ANY(%s)",
                (owner, sorted(set(records))),
            )

    def get_field_times(
        self, sync: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], datetime]:
        wanted = set(keys)
        found: dict[tuple[str, str], datetime] = {}
        if not wanted:
            return found
        with self._read() as db:
            rows = db.execute(
                "SELECT left_key, field, source_time FROM field_times"
                " WHERE sync = %s AND left_key = ANY(%s)",
                (sync, sorted({k for k, _ in wanted})),
            ).fetchall()
        for r in rows:
            if (r["left_key"], r["field"]) in wanted:
                found[(r["left_key"], r["field"])] = parse_ts(r["source_time"])
        return found

    def find_echo(
        self, sync: str, side: Side, key: str, field: str, fingerprint: str, now: datetime
    ) -> int | None:
        with self._read() as db:
            row = db.execute(
                "SELECT id FROM echoes WHERE sync = %s AND side = %s AND key = %s AND field = %s"
                " AND fingerprint = %s AND expires_at > %s AND spent = 0 ORDER BY id LIMIT 1",
                (sync, Side(side).value, key, field, fingerprint, ts(now)),
            ).fetchone()
        return None if row is None else int(row["id"])

    def find_echoes(
        self, sync: str, side: Side, keys: Sequence[str], now: datetime
    ) -> dict[tuple[str, str, str], int]:
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        with self._read() as db:
            rows = db.execute(
                "SELECT key, field, fingerprint, min(id) AS id FROM echoes"
                " WHERE sync = %s AND side = %s AND key = ANY(%s)"
                " AND expires_at > %s AND spent = 0 GROUP BY key, field, fingerprint",
                (sync, Side(side).value, wanted, ts(now)),
            ).fetchall()
        return {(r["key"], r["field"], r["fingerprint"]): int(r["id"]) for r in rows}

    def echo_times(
        self, sync: str, records: Sequence[tuple[Side, str]], now: datetime
    ) -> dict[tuple[Side, str, str, str], datetime]:
        keys: dict[Side, set[str]] = {}
        for side, key in records:
            keys.setdefault(Side(side), set()).add(key)
        found: dict[tuple[Side, str, str, str], datetime] = {}
        with self._read() as db:
            for side, wanted in sorted(keys.items()):
                rows = db.execute(
                    "SELECT key, field, fingerprint, max(source_time) AS at FROM echoes"
                    " WHERE sync = %s AND side = %s AND key = ANY(%s)"
                    " AND source_time IS NOT NULL AND expires_at > %s"
                    " GROUP BY key, field, fingerprint",
                    (sync, side.value, sorted(wanted), ts(now)),
                ).fetchall()
                for r in rows:
                    found[(side, r["key"], r["field"], r["fingerprint"])] = parse_ts(r["at"])
        return found

    def claim_outbox(
        self, owner: str, *, limit: int, now: datetime, lease: timedelta
    ) -> list[OutboxEntry]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM outbox WHERE status = 'pending' AND next_at <= %s"
                " AND (lease_until IS NULL OR lease_until < %s) ORDER BY next_at, id LIMIT %s"
                " FOR UPDATE SKIP LOCKED",
                (ts(now), ts(now), limit),
            ).fetchall()
            if rows:
                db.execute(
                    "UPDATE outbox SET lease_owner = %s, lease_until = %s WHERE id = ANY(%s)",
                    (owner, ts(now + lease), [r["id"] for r in rows]),
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
        if not source_keys:
            return found
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM create_intents WHERE sync = %s AND side = %s"
                " AND source_key = ANY(%s)",
                (sync, Side(side).value, list(source_keys)),
            ).fetchall()
        for row in rows:
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
                "SELECT * FROM field_schemas WHERE sync = %s ORDER BY side, field", (sync,)
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
        # Each batch is its own short transaction over an index.
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
    def _active_item(db: Conn, key: ItemKey) -> Discrepancy | None:
        row = db.execute(
            f"SELECT {_HEAD_COLUMNS} FROM items WHERE sync = %s AND left_key = %s"  # noqa: S608
            " AND right_key = %s AND field = %s AND status IN ('open', 'escalated')",
            tuple(key),
        ).fetchone()
        return None if row is None else _item_head(row)

    @staticmethod
    def _write_item(db: Conn, item: Discrepancy) -> None:
        db.execute(
            "UPDATE items SET status = %s, left_value = %s, right_value = %s, base_value = %s,"
            " has_base = %s, rule = %s, category = %s, explanation = %s, resolution = %s,"
            " detected_at = %s, updated_at = %s, resolved_at = %s, cycle_id = %s, note = %s,"
            " assignee = %s, times_seen = %s, search_text = %s WHERE id = %s",
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

    def _upsert_item(self, db: Conn, item: Discrepancy, at: datetime) -> int:
        active = self._active_item(db, item.item_key)
        if active is not None:
            merged = merge_item(active, item, at)
            self._write_item(db, merged)
            assert merged.id is not None
            return merged.id
        new = first_sighting(item, at)
        row = db.execute(
            "INSERT INTO items (sync, left_key, right_key, field, status, left_value,"
            " right_value, base_value, has_base, rule, category, explanation, resolution,"
            " detected_at, updated_at, resolved_at, cycle_id, note, assignee, times_seen,"
            " search_text) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, %s, %s, %s, %s, %s) RETURNING id",
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
        ).fetchone()
        assert row is not None
        return int(row["id"])

    @staticmethod
    def _item_keys_of(db: Conn, ids: Sequence[int]) -> list[str]:
        """The keys of the items ``ids`` (a key never changes: read without a lock)."""
        if not ids:
            return []
        rows = db.execute(
            "SELECT sync, left_key, right_key, field FROM items WHERE id = ANY(%s)",
            (list(ids),),
        ).fetchall()
        return ["\x1f".join((r["sync"], r["left_key"], r["right_key"], r["field"])) for r in rows]

    def _update_item(self, db: Conn, upd: ItemUpdate, at: datetime) -> None:
        row = db.execute(
            f"SELECT {_HEAD_COLUMNS} FROM items WHERE id = %s FOR UPDATE",  # noqa: S608
            (upd.id,),
        ).fetchone()
        if row is None:
            return  # an unknown item: nothing to update
        prior = _item_head(row)
        new = update_item(prior, upd, at)
        if new.status.is_active and not prior.status.is_active:
            holder = self._active_item(db, new.item_key)
            check_reopen(new, None if holder is None else holder.id)
        db.execute(
            "UPDATE items SET status = %s, resolution = %s, resolved_at = %s, note = %s,"
            " assignee = %s, updated_at = %s WHERE id = %s",
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
    """The ``WHERE`` clause and its bound arguments of the queue's filters (as in SQLite)."""
    where: list[str] = []
    args: list[Any] = []
    if key is not None and sync is not None:
        where.append("((left_key = %s AND sync = %s) OR (right_key = %s AND sync = %s))")
        args.extend((key, sync, key, sync))
    elif key is not None:
        where.append("(left_key = %s OR right_key = %s)")
        args.extend((key, key))
    elif sync is not None:
        where.append("sync = %s")
        args.append(sync)
    if statuses:
        wanted = {Status(s) for s in statuses}
        if wanted == set(_ACTIVE):
            where.append("status IN ('open', 'escalated')")
        else:
            where.append("status = ANY(%s)")
            args.append(sorted(s.value for s in wanted))
    if category is not None:
        where.append("category = %s")
        args.append(category)
    if field is not None:
        where.append("field = %s")
        args.append(field)
    if assignee is not None:
        where.append("assignee = %s")
        args.append(assignee)
    if unassigned:
        where.append("(assignee IS NULL OR assignee = '')")
    if search is not None and search_needle(search):
        where.append("strpos(search_text, %s) > 0")
        args.append(search_needle(search))
    if before is not None:
        where.append("(detected_at, id) < (%s, %s)")
        args.extend((ts(before[0]), before[1]))
    if resolved_since is not None:
        where.append("resolved_at >= %s")
        args.append(ts(resolved_since))
    return f"WHERE {' AND '.join(where) or 'TRUE'}", args


_PRUNE = {
    "inbox": "DELETE FROM inbox WHERE id IN (SELECT id FROM inbox"
    " WHERE status = 'done' AND received_at < %s LIMIT %s)",
    "echoes": "DELETE FROM echoes WHERE id IN (SELECT id FROM echoes"
    " WHERE expires_at < %s LIMIT %s)",
    "outbox": "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
    " WHERE status IN ('done', 'failed') AND next_at < %s LIMIT %s)",
    "cycles": "DELETE FROM cycles WHERE id IN (SELECT id FROM cycles"
    " WHERE started_at < %s LIMIT %s)",
    "counters": "DELETE FROM counters WHERE (metric, labels, bucket) IN"
    " (SELECT metric, labels, bucket FROM counters WHERE bucket < %s LIMIT %s)",
    "items": "DELETE FROM items WHERE id IN (SELECT id FROM items WHERE resolved_at < %s"
    " AND status IN ('resolved', 'auto_resolved', 'dismissed') LIMIT %s)",
}
"""The batch of rows each kind of ``prune_cutoffs`` removes (as in SQLite)."""


def _shard_plan(row: Any) -> ShardPlan:
    return ShardPlan(
        cycle_id=row["cycle_id"],
        sync=row["sync"],
        shards=int(row["shards"]),
        created_at=parse_ts(row["created_at"]),
        spec=_codec.loads(row["spec"]),
    )
