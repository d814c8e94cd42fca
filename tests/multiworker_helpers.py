"""A file-backed world for the multi-worker chaos test: two fake SaaS systems and their clock.

Several processes (the test, its webhook workers and a reconciliation "cycler") must see the
same two systems, so the systems live in one SQLite file (``world.sqlite``), next to
syncrecon's own storage (``sync.sqlite``). Each process opens its own connections.

- ``clock``: the shared simulated time (microseconds since the epoch). Only the test process
  moves it; every process reads it (:class:`FileClock`), so a write by syncrecon is stamped
  with the same clock as the users' edits.
- ``records`` / ``fields``: the records of both systems, with a value, a modification time
  and a *provenance time* per field. The provenance of a value is the time of the user edit
  it came from (see tests/test_chaos.py): a user edit's own time; for a value syncrecon
  wrote, the provenance of the value it copied from the other system (its current value, or
  an older one found in the other system's history: a late webhook's value); a merged list
  that matches neither side takes the later of the two.
- ``log``: every change either system accepted, in one global order (``seq``): who made it
  (``user``, ``fast`` for the webhook workers, ``cycle`` for reconciliation), the value and
  provenance it replaced and the value and provenance it wrote; and which process read which
  record when (listings and re-reads: a user edit that lands after a writer's last look at
  the record is a race no writer can see coming). The test audits this log.

Every edit's value is unique (a note, a stage, a tag, an amount carry the edit's number), so
the provenance of a written value is exact.

Run as a script, this module is one process of the test::

    python tests/multiworker_helpers.py worker DIR NAME   # drains the inbox until DIR/stop-workers
    python tests/multiworker_helpers.py cycler DIR NAME   # runs cycles until DIR/stop-cycler
    python tests/multiworker_helpers.py web DIR NAME      # serves the webhooks until DIR/stop-web

Every process keeps syncrecon's storage in ``DIR/sync.sqlite``, unless ``DIR/storage.json``
names a PostgreSQL schema (``{"url": ..., "schema": ...}``; tests/test_multiworker_chaos_postgres.py
writes it): then all of them share that schema. A ``web`` process serves the webhook handler's
ASGI app (:class:`~syncrecon.webhooks.asgi.WebhookApp`) with uvicorn on an ephemeral loopback
port, which it writes to ``DIR/NAME.port`` once it listens.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import itertools
import json
import logging
import os
import random
import socket
import sqlite3
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from syncrecon import (
    Capabilities,
    Change,
    ChangeOp,
    FieldInfo,
    FieldMap,
    LeaseHeldError,
    NaturalKey,
    Page,
    Reconciler,
    Record,
    Side,
    SyncDefinition,
    Transform,
    WriteResult,
    escalate,
    merge,
    recency,
    source_of_truth,
)
from syncrecon.storage import Storage
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import WebhookEmitter, WebhookMessage
from syncrecon.webhooks import (
    GenericJsonParser,
    StandardWebhooksVerifier,
    WebhookHandler,
    WebhookRequest,
    WebhookSource,
)

WORLD_FILE = "world.sqlite"
SYNC_FILE = "sync.sqlite"
STOP_WORKERS = "stop-workers"
STOP_CYCLER = "stop-cycler"
STOP_WEB = "stop-web"
STORAGE_FILE = "storage.json"  # when present: the PostgreSQL schema every process shares
SYNC = "deals"
LEFT, RIGHT = "hubspot", "salesforce"
PREFIX = {LEFT: "hs-", RIGHT: "sf-"}
T0 = datetime(2026, 3, 1, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"multi-worker-chaos-secret-012345").decode()
# left field -> right field
FIELDS = {"stage": "StageName", "notes": "Description", "tags": "Tags__c", "amount": "Amount"}
RIGHT_TO_LEFT = {r: lf for lf, r in FIELDS.items()}
IDLE_SLEEP = 0.005  # a worker with nothing to do naps this long (never used for ordering)
CYCLER_PAUSE = 0.2  # between two cycles of the cycler
API_LATENCY = (0.004, 0.02)  # seconds per API call of a fake system (real time)


# -- values and names ---------------------------------------------------------------------------


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def to_us(when: datetime) -> int:
    delta = when - T0  # exact: datetimes and timedeltas count whole microseconds
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return T0 + timedelta(microseconds=us)


def side_of(system: str) -> Side:
    return Side.LEFT if system == LEFT else Side.RIGHT


def left_field(system: str, field: str) -> str:
    return field if system == LEFT else RIGHT_TO_LEFT[field]


def system_field(system: str, left_name: str) -> str:
    return left_name if system == LEFT else FIELDS[left_name]


def other(system: str) -> str:
    return RIGHT if system == LEFT else LEFT


def counterpart(system: str, key: str) -> str:
    return PREFIX[other(system)] + key.removeprefix(PREFIX[system])


def left_key(system: str, key: str) -> str:
    return key if system == LEFT else counterpart(system, key)


def canon(system: str, field: str, value: Any) -> str:
    """The value in the left vocabulary, as canonical JSON (what "equal" means here)."""
    if system == RIGHT and field == FIELDS["stage"]:
        value = _lower(value)
    return json.dumps(value, sort_keys=True)


# -- the world file -----------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS clock (id INTEGER PRIMARY KEY CHECK (id = 1), now INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    system TEXT NOT NULL, key TEXT NOT NULL, modified_at INTEGER NOT NULL,
    PRIMARY KEY (system, key));
CREATE TABLE IF NOT EXISTS fields (
    system TEXT NOT NULL, key TEXT NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL,
    modified_at INTEGER NOT NULL, prov INTEGER NOT NULL, by_user INTEGER NOT NULL,
    PRIMARY KEY (system, key, field));
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, system TEXT NOT NULL, key TEXT NOT NULL,
    field TEXT NOT NULL, actor TEXT NOT NULL, who TEXT NOT NULL, at INTEGER NOT NULL,
    old_value TEXT, old_prov INTEGER, old_by_user INTEGER, new_value TEXT NOT NULL,
    new_prov INTEGER NOT NULL, canon TEXT NOT NULL, how TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS log_values ON log (system, key, field, canon);
"""


class World:
    """One process's connection to the world file (thread-safe)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.db = sqlite3.connect(
            self.folder / WORLD_FILE, isolation_level=None, check_same_thread=False, timeout=120
        )
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA busy_timeout = 120000")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.lock = threading.RLock()

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def create(self) -> None:
        with self.lock:
            self.db.executescript(SCHEMA)
            self.db.execute("INSERT OR IGNORE INTO clock (id, now) VALUES (1, 0)")

    # the shared clock

    def now_us(self) -> int:
        with self.lock:
            return int(self.db.execute("SELECT now FROM clock").fetchone()[0])

    def now(self) -> datetime:
        return from_us(self.now_us())

    def set_now(self, when: datetime) -> None:
        with self.tx() as db:
            db.execute("UPDATE clock SET now = max(now, ?)", (to_us(when),))

    def advance(self, seconds: float) -> datetime:
        with self.tx() as db:
            db.execute("UPDATE clock SET now = now + ?", (round(seconds * 1_000_000),))
            return from_us(int(db.execute("SELECT now FROM clock").fetchone()[0]))

    # changes

    def set_field(
        self,
        db: sqlite3.Connection,
        system: str,
        key: str,
        field: str,
        value: Any,
        now: int,
        actor: str,
        who: str,
    ) -> None:
        """Change one field (inside a transaction) and log it with the value's provenance."""
        old = db.execute(
            "SELECT value, modified_at, prov, by_user FROM fields"
            " WHERE system = ? AND key = ? AND field = ?",
            (system, key, field),
        ).fetchone()
        text = json.dumps(value, sort_keys=True)
        c = canon(system, field, value)
        if old is not None and old["value"] == text:  # not a change: nothing moves
            prov, how, by_user, modified = old["prov"], "same", old["by_user"], old["modified_at"]
        elif actor in ("user", "setup"):
            prov, how, by_user, modified = now, actor, 1, now
        else:
            osys, okey = other(system), counterpart(system, key)
            ofield = system_field(osys, left_field(system, field))
            there = db.execute(
                "SELECT value, prov FROM fields WHERE system = ? AND key = ? AND field = ?",
                (osys, okey, ofield),
            ).fetchone()
            found = db.execute(
                "SELECT new_prov FROM log WHERE system = ? AND key = ? AND field = ?"
                " AND canon = ? ORDER BY seq DESC LIMIT 1",
                (osys, okey, ofield, c),
            ).fetchone()
            if there is not None and canon(osys, ofield, json.loads(there["value"])) == c:
                prov, how = there["prov"], "copy"
            elif found is not None:
                prov, how = found[0], "history"  # a value the other side no longer holds
            else:  # a merge that matches neither side takes from both
                prov = max(there["prov"] if there else 0, old["prov"] if old else 0)
                how = "merge"
            by_user, modified = 0, now
        db.execute(
            "INSERT INTO fields (system, key, field, value, modified_at, prov, by_user)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (system, key, field) DO UPDATE SET"
            " value = excluded.value, modified_at = excluded.modified_at,"
            " prov = excluded.prov, by_user = excluded.by_user",
            (system, key, field, text, modified, prov, by_user),
        )
        db.execute(
            "INSERT INTO log (system, key, field, actor, who, at, old_value, old_prov,"
            " old_by_user, new_value, new_prov, canon, how) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                system,
                key,
                field,
                actor,
                who,
                now,
                old["value"] if old else None,
                old["prov"] if old else None,
                old["by_user"] if old else None,
                text,
                prov,
                c,
                how,
            ),
        )

    def put(
        self, system: str, key: str, changes: Mapping[str, Any], *, actor: str, who: str
    ) -> datetime:
        """A user's edit (or the set-up): change fields now; return the edit's time."""
        with self.tx() as db:
            now = int(db.execute("SELECT now FROM clock").fetchone()[0])
            for field, value in changes.items():
                self.set_field(db, system, key, field, value, now, actor, who)
            db.execute(
                "INSERT INTO records (system, key, modified_at) VALUES (?, ?, ?)"
                " ON CONFLICT (system, key) DO UPDATE SET modified_at = excluded.modified_at",
                (system, key, now),
            )
        return from_us(now)

    def keys(self, system: str) -> list[str]:
        with self.lock:
            rows = self.db.execute(
                "SELECT key FROM records WHERE system = ? ORDER BY rowid", (system,)
            ).fetchall()
        return [r[0] for r in rows]

    def get(self, system: str, key: str) -> dict[str, Any]:
        with self.lock:
            rows = self.db.execute(
                "SELECT field, value FROM fields WHERE system = ? AND key = ?", (system, key)
            ).fetchall()
        return {r["field"]: json.loads(r["value"]) for r in rows}

    def records(self, system: str, keys: Sequence[str] | None = None) -> list[Record]:
        with self.lock:
            if keys is None:
                heads = self.db.execute(
                    "SELECT key, modified_at FROM records WHERE system = ? ORDER BY rowid",
                    (system,),
                ).fetchall()
            else:
                marks = ",".join("?" * len(keys))
                heads = self.db.execute(
                    f"SELECT key, modified_at FROM records WHERE system = ?"  # noqa: S608
                    f" AND key IN ({marks}) ORDER BY rowid",
                    (system, *keys),
                ).fetchall()
            if not heads:
                return []
            marks = ",".join("?" * len(heads))
            rows = self.db.execute(
                f"SELECT key, field, value, modified_at FROM fields WHERE system = ?"  # noqa: S608
                f" AND key IN ({marks})",
                (system, *[h["key"] for h in heads]),
            ).fetchall()
        values: dict[str, dict[str, Any]] = {}
        times: dict[str, dict[str, datetime]] = {}
        for r in rows:
            values.setdefault(r["key"], {})[r["field"]] = json.loads(r["value"])
            times.setdefault(r["key"], {})[r["field"]] = from_us(r["modified_at"])
        return [
            Record(
                key=h["key"],
                fields=values.get(h["key"], {}),
                modified_at=from_us(h["modified_at"]),
                field_modified_at=times.get(h["key"], {}),
            )
            for h in heads
        ]

    def log(self) -> list[sqlite3.Row]:
        with self.lock:
            return self.db.execute("SELECT * FROM log ORDER BY seq").fetchall()

    def current(self) -> dict[tuple[str, str, str], sqlite3.Row]:
        with self.lock:
            rows = self.db.execute("SELECT * FROM fields").fetchall()
        return {(r["system"], r["key"], r["field"]): r for r in rows}


class FileClock:
    """The world's shared clock, read from the file on every call."""

    def __init__(self, world: World) -> None:
        self.world = world

    def now(self) -> datetime:
        return self.world.now()

    def __repr__(self) -> str:
        return "FileClock()"


class FileSystem:
    """A fake SaaS system in the world file, behind the Connector protocol.

    It keeps per-field modification times (``field_timestamps``), lists everything (no
    incremental listing) and stamps every write it accepts with the shared clock. ``actor``
    (``fast`` or ``cycle``) and ``who`` say in the log which loop and which process wrote.
    """

    def __init__(
        self,
        world: World,
        name: str,
        *,
        actor: str,
        who: str,
        latency: tuple[float, float] | None = None,
    ) -> None:
        self.world = world
        self.name = name
        self.actor = actor
        self.who = who
        self.latency = latency
        self._rng = random.Random(f"{who}:{name}")
        self.capabilities = Capabilities(
            page_size=100,
            max_read_batch=100,
            max_write_batch=100,
            incremental=False,
            field_timestamps=True,
            describes_fields=False,
        )

    def __repr__(self) -> str:
        return f"FileSystem({self.name!r}, {self.actor})"

    def _travel(self) -> None:
        """Half an API round trip: a real API answers in milliseconds, not microseconds."""
        if self.latency is not None:
            time.sleep(self._rng.uniform(*self.latency) / 2)

    def _seen(self, keys: Sequence[str]) -> list[Record]:
        """Read records and log that this process saw them, in the log's global order."""
        with self.world.tx() as db:
            now = int(db.execute("SELECT now FROM clock").fetchone()[0])
            found = self.world.records(self.name, keys)
            db.executemany(
                "INSERT INTO log (system, key, field, actor, who, at, new_value, new_prov,"
                " canon, how) VALUES (?, ?, '*', 'read', ?, ?, '', 0, '', 'read')",
                [(self.name, r.key, self.who, now) for r in found],
            )
        return found

    def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        self._travel()
        start = int(cursor) if cursor else 0
        size = self.capabilities.page_size
        keys = self.world.keys(self.name)
        found = self._seen(keys[start : start + size])
        self._travel()
        more = start + size < len(keys)
        return Page(records=found, next_cursor=str(start + size) if more else None)

    def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        self._travel()
        found = self._seen(list(keys))
        self._travel()
        return found

    def write_records(self, changes: Sequence[Change]) -> Sequence[WriteResult]:
        self._travel()
        results = []
        with self.world.tx() as db:
            now = int(db.execute("SELECT now FROM clock").fetchone()[0])
            for change in changes:
                exists = (
                    change.key is not None
                    and db.execute(
                        "SELECT 1 FROM records WHERE system = ? AND key = ?",
                        (self.name, change.key),
                    ).fetchone()
                )
                if change.op is not ChangeOp.UPDATE or not exists:
                    results.append(WriteResult.failure(change, "only updates of records"))
                    continue
                assert change.key is not None
                for field, value in change.fields.items():
                    self.world.set_field(
                        db, self.name, change.key, field, value, now, self.actor, self.who
                    )
                db.execute(
                    "UPDATE records SET modified_at = ? WHERE system = ? AND key = ?",
                    (now, self.name, change.key),
                )
                results.append(WriteResult.success(change, modified_at=from_us(now)))
        self._travel()
        return results

    def describe_fields(self) -> Sequence[FieldInfo]:
        return []


# -- the sync, the handler, the reconciler ----------------------------------------------------


def build_sync(
    world: World, *, actor: str, who: str, latency: tuple[float, float] | None = API_LATENCY
) -> SyncDefinition:
    return SyncDefinition(
        name=SYNC,
        left=FileSystem(world, LEFT, actor=actor, who=who, latency=latency),
        right=FileSystem(world, RIGHT, actor=actor, who=who, latency=latency),
        fields=[
            FieldMap(
                left="stage",
                right="StageName",
                transform=Transform(to_right=_upper, to_left=_lower),
                policy=source_of_truth(Side.LEFT),
            ),
            FieldMap(left="notes", right="Description", policy=recency(skew=timedelta(seconds=2))),
            FieldMap(left="tags", right="Tags__c", policy=merge()),
            FieldMap(left="amount", right="Amount", policy=escalate("deal_value")),
        ],
        natural_key=NaturalKey(left="email", right="Email"),
        delete_from=Side.LEFT,
    )


def build_handler(
    world: World,
    storage: Any,
    *,
    who: str,
    sync: SyncDefinition | None = None,
    latency: tuple[float, float] | None = API_LATENCY,
) -> WebhookHandler:
    sync = sync or build_sync(world, actor="fast", who=who, latency=latency)
    clock = FileClock(world)
    verifier = StandardWebhooksVerifier(secrets=[SECRET], clock=clock)
    return WebhookHandler(
        [
            WebhookSource(
                name=name,
                sync=sync,
                side=side_of(name),
                verifier=verifier,
                parser=GenericJsonParser(system=name),
                object_type="deal",
            )
            for name in (LEFT, RIGHT)
        ],
        storage,
        clock=clock,
        inline=False,
        # Simulated time runs much faster than real time: a lease this long never expires
        # under a worker that is busy (this test is about ordering, not crash recovery).
        lease=timedelta(hours=1),
        # The documented setting for several workers beside a running cycle: re-read the
        # events' sources too, so an event whose source moved on is never written.
        verify_source=True,
    )


def build_reconciler(
    world: World,
    storage: Storage,
    *,
    who: str,
    latency: tuple[float, float] | None = API_LATENCY,
) -> Reconciler:
    scratch = world.folder / f"scratch-{who}"
    scratch.mkdir(exist_ok=True)
    return Reconciler(
        build_sync(world, actor="cycle", who=who, latency=latency),
        storage,
        clock=FileClock(world),
        lease_ttl=timedelta(hours=1),
        scratch_dir=str(scratch),
    )


def setup_world(folder: Path, rng: random.Random, pairs: int) -> list[tuple[str, str]]:
    """Create the world file and ``pairs`` matching records on each side (not linked yet)."""
    world = World(folder)
    world.create()
    out = []
    for i in range(pairs):
        lk, rk = f"{PREFIX[LEFT]}{i}", f"{PREFIX[RIGHT]}{i}"
        tags = sorted(rng.sample(["enterprise", "smb", "renewal", "upsell", "emea"], 2))
        common = {"notes": f"first note {i}", "tags": tags, "amount": 1000 + i}
        world.put(
            LEFT,
            lk,
            {"email": f"buyer{i}@example.com", "stage": f"stage-0-{i}"} | common,
            actor="setup",
            who="setup",
        )
        world.put(
            RIGHT,
            rk,
            {
                "Email": f"buyer{i}@example.com",
                "StageName": f"STAGE-0-{i}",
                "Description": common["notes"],
                "Tags__c": list(tags),
                "Amount": common["amount"],
            },
            actor="setup",
            who="setup",
        )
        out.append((lk, rk))
    world.close()
    return out


# -- webhooks: signed messages and a flaky network ---------------------------------------------


class Emitters:
    """Signs the Standard Webhooks / generic JSON messages each system sends."""

    def __init__(self, world: World) -> None:
        clock = FileClock(world)
        self.by_system = {
            name: WebhookEmitter(
                SimpleNamespace(name=name, clock=clock, write_log=[]),  # type: ignore[arg-type]
                secret=SECRET,
                object_type="deal",
                clock=clock,
            )
            for name in (LEFT, RIGHT)
        }

    def message(self, system: str, key: str, changes: Mapping[str, Any], at: datetime) -> Any:
        return self.by_system[system].message(key, changes, at=at)

    def request(self, message: WebhookMessage) -> WebhookRequest:
        return self.by_system[message.system].request(message)


class Network:
    """Delivers messages late, out of order, twice or never; every choice from ``rng``."""

    def __init__(
        self,
        rng: random.Random,
        *,
        loss: float = 0.05,
        delay: float = 0.2,
        duplicate: float = 0.1,
        latency: tuple[float, float] = (0.05, 1.0),
        delay_by: tuple[float, float] = (5.0, 120.0),
        duplicate_after: tuple[float, float] = (1.0, 600.0),
    ) -> None:
        self.rng = rng
        self.loss, self.delay, self.duplicate = loss, delay, duplicate
        self.latency, self.delay_by, self.duplicate_after = latency, delay_by, duplicate_after
        # (due, order, message, attempt, the older half of a reversed pair)
        self._queue: list[tuple[datetime, int, WebhookMessage, int, bool]] = []
        self._seq = itertools.count()
        self.stats: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._queue)

    def _push(
        self, at: datetime, message: WebhookMessage, attempt: int, older: bool = False
    ) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), message, attempt, older))

    def send(self, message: WebhookMessage, now: datetime) -> None:
        self.stats["sent"] += 1
        if self.rng.random() < self.loss:
            self.stats["lost"] += 1
            return
        at = now + timedelta(seconds=self.rng.uniform(*self.latency))
        if self.rng.random() < self.delay:
            self.stats["delayed"] += 1
            at += timedelta(seconds=self.rng.uniform(*self.delay_by))
        self._push(at, message, 1)
        if self.rng.random() < self.duplicate:
            self.stats["duplicated"] += 1
            self._push(at + timedelta(seconds=self.rng.uniform(*self.duplicate_after)), message, 2)

    def send_reversed(self, older: WebhookMessage, newer: WebhookMessage, now: datetime) -> None:
        """Two changes of one field: the newer one is delivered first, the older right after."""
        self.stats["sent"] += 2
        self.stats["reversed pairs"] += 1
        at = now + timedelta(seconds=self.rng.uniform(*self.latency))
        self._push(at, newer, 1)
        self._push(at, older, 1, older=True)

    def next_at(self) -> datetime | None:
        return self._queue[0][0] if self._queue else None

    def due(self, now: datetime) -> list[tuple[WebhookMessage, int, bool]]:
        """The deliveries due: (message, attempt, whether it is the older half of a pair)."""
        out = []
        while self._queue and self._queue[0][0] <= now:
            _, _, message, attempt, older = heapq.heappop(self._queue)
            out.append((message, attempt, older))
        self.stats["delivered"] += len(out)
        return out


# -- the processes ------------------------------------------------------------------------------


def open_storage(folder: Path) -> Storage:
    """syncrecon's storage of the run: ``sync.sqlite``, or the PostgreSQL schema that
    ``storage.json`` names (a small pool: every process of the run has its own)."""
    spec = folder / STORAGE_FILE
    if not spec.exists():
        return SQLiteStorage(folder / SYNC_FILE)
    from syncrecon.storage.postgres import PostgresStorage

    where = json.loads(spec.read_text("utf-8"))
    return PostgresStorage(where["url"], schema=where["schema"], min_size=1, max_size=2)


def _worker(folder: Path, name: str) -> dict[str, Any]:
    world = World(folder)
    storage = open_storage(folder)
    handler = build_handler(world, storage, who=name)
    outcomes: Counter[str] = Counter()
    errors: list[str] = []
    rounds = busy = 0
    while True:
        stopping = (folder / STOP_WORKERS).exists()
        rounds += 1
        try:
            report = handler.process_pending()
        except Exception as exc:  # reported to the test, which fails on it
            errors.append(f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
            time.sleep(0.01)
            continue
        outcomes.update(report.outcomes)
        if report.processed or report.outbox_retried:
            busy += 1
            continue
        if stopping:
            break
        time.sleep(IDLE_SLEEP)
    storage.close()
    return {
        "name": name,
        "rounds": rounds,
        "busy": busy,
        "outcomes": dict(outcomes),
        "errors": errors,
    }


def _cycler(folder: Path, name: str) -> dict[str, Any]:
    world = World(folder)
    storage = open_storage(folder)
    reconciler = build_reconciler(world, storage, who=name)
    cycles = held = writes = 0
    errors: list[str] = []
    while not (folder / STOP_CYCLER).exists():
        try:
            report = reconciler.run_cycle()
        except LeaseHeldError:
            held += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
        else:
            cycles += 1
            writes += report.total_writes
        time.sleep(CYCLER_PAUSE)
    storage.close()
    return {"name": name, "cycles": cycles, "lease_held": held, "writes": writes, "errors": errors}


class _Errors(logging.Handler):
    """Keeps the errors syncrecon logs (a web process answers 500 and logs; the test fails)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(f"{record.name}: {record.getMessage()}")


def _web(folder: Path, name: str) -> dict[str, Any]:
    """Serve the webhooks over HTTP on loopback until ``DIR/stop-web`` appears."""
    import uvicorn

    from syncrecon.webhooks.asgi import WebhookApp

    errors = _Errors()
    logging.getLogger("syncrecon").addHandler(errors)
    world = World(folder)
    storage = open_storage(folder)
    handler = build_handler(world, storage, who=name)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        WebhookApp(handler), lifespan="off", log_config=None, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)

    def announce_and_watch() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.01)
        written = folder / f"{name}.port.tmp"
        written.write_text(str(sock.getsockname()[1]), "utf-8")
        written.replace(folder / f"{name}.port")  # whole, or not there yet
        while not (folder / STOP_WEB).exists():
            time.sleep(0.05)
        server.should_exit = True

    watcher = threading.Thread(target=announce_and_watch, name="stop-web", daemon=True)
    watcher.start()
    server.run(sockets=[sock])
    storage.close()
    world.close()
    return {"name": name, "errors": errors.seen}


def main(argv: Sequence[str]) -> int:
    role, folder, name = argv[0], Path(argv[1]), argv[2]
    roles = {"worker": _worker, "cycler": _cycler, "web": _web}
    summary = roles[role](folder, name)
    (folder / f"{name}.json").write_text(json.dumps(summary), "utf-8")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main(sys.argv[1:]))
