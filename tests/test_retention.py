"""Retention: what ``Storage.prune`` removes on every backend, how SQLite removes it (indexes,
bounded batches), and a soak through the real front door showing the database levels off."""

from __future__ import annotations

import sqlite3
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from fastloop_helpers import World
from syncrecon import Discrepancy, Retention, Status
from syncrecon.storage import Counter, CycleRecord, Echo, InboxEntry, ItemUpdate, Step, Storage
from syncrecon.storage._base import OutboxEntry, OutboxUpdate
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.worker import Worker

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=401)
LEASE = timedelta(minutes=5)


# --------------------------------------------------------------------------------------------
# The value


def test_the_defaults() -> None:
    r = Retention()
    assert r.inbox == timedelta(days=7)  # longer than providers retry (Stripe: 3 days)
    assert r.echoes == timedelta(0)
    assert r.outbox == timedelta(days=7)
    assert r.cycles == timedelta(days=90)
    assert r.counters == timedelta(days=400)
    assert r.closed_items is None  # the audit trail is kept
    assert attrs.evolve(r, cycles=None).cycles is None
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        r.inbox = None  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [{"inbox": timedelta(seconds=-1)}, {"cycles": 30}, {"batch": 0}, {"batch": True}],
    ids=repr,
)
def test_bad_values_fail_where_they_are_made(kwargs: dict[str, Any]) -> None:
    with pytest.raises((ValueError, TypeError)):
        Retention(**kwargs)
    with pytest.raises(TypeError):
        Retention(timedelta(days=1))  # type: ignore[misc]  # keyword-only


# --------------------------------------------------------------------------------------------
# The contract, on every backend


def _event(key: str, at: datetime) -> InboxEntry:
    return InboxEntry(source="crm", dedupe_key=key, event={"k": key}, received_at=at)


def _outbox(at: datetime) -> OutboxEntry:
    return OutboxEntry(
        sync="deals", side="left", key="h1", left_key="h1", right_key="s1",
        fields={"notes": "x"}, next_at=at, created_at=at,
    )  # fmt: skip


def _item(field: str, at: datetime) -> Discrepancy:
    return Discrepancy(
        sync="deals", field=field, status=Status.ESCALATED, detected_at=at,
        left_key="h1", right_key="s1", left_value=1, right_value=2,
    )  # fmt: skip


def fill(storage: Storage) -> dict[str, int]:
    """Old rows (at ``T0``) and recent or still needed ones (near ``NOW``) of every kind."""
    recent = NOW - timedelta(days=1)
    # Inbox: old done, old pending (never pruned), recent done.
    ids = storage.enqueue_events(
        [_event("old", T0), _event("pending", T0), _event("recent", recent)], [], T0
    )
    old_id, _pending_id, recent_id = ids
    assert old_id is not None
    assert recent_id is not None
    storage.commit(Step(at=recent, events_done=[(old_id, "applied", None)]))
    storage.commit(Step(at=recent, events_done=[(recent_id, "applied", None)]))
    # Echoes: expired long ago, and one still live.
    echo = Echo(sync="deals", side="left", key="h1", field="notes", fingerprint="f", expires_at=T0)
    storage.commit(Step(at=T0, echoes=[echo, attrs.evolve(echo, expires_at=NOW + LEASE)]))
    # Outbox: settled long ago, settled recently, and pending since long ago.
    storage.commit(Step(at=T0, outbox_add=[_outbox(T0), _outbox(T0), _outbox(T0)]))
    claimed = storage.claim_outbox("t", limit=10, now=T0, lease=LEASE)
    assert len(claimed) == 3
    a, b, _c = (e.id for e in claimed)
    assert a is not None
    assert b is not None
    done = OutboxUpdate(id=a, status="done", attempts=1, next_at=T0)
    storage.commit(Step(at=T0, outbox_update=[done]))
    failed = OutboxUpdate(id=b, status="failed", attempts=5, next_at=recent)
    storage.commit(Step(at=recent, outbox_update=[failed]))
    # Cycles and counters: old and recent.
    for at, name in ((T0, "c-old"), (recent, "c-new")):
        cycle = CycleRecord(
            id=name, sync="deals", started_at=at, finished_at=at, mode="incremental",
            dry_run=False, report={},
        )  # fmt: skip
        storage.commit(Step(at=at, cycle=cycle, counters=[Counter(metric="m", labels={"a": "b"})]))
    # Items: one closed long ago, one still active (detected long ago).
    closed, _active = storage.commit(Step(at=T0, new_items=[_item("x", T0), _item("y", T0)]))
    storage.commit(
        Step(at=T0, item_updates=[ItemUpdate(id=closed, status=Status.DISMISSED, resolved_at=T0)])
    )
    return {"closed": closed}


def test_prune_removes_what_retention_no_longer_keeps(storage: Storage) -> None:
    made = fill(storage)
    removed = storage.prune(Retention(), NOW)
    assert dict(removed) == {"inbox": 1, "echoes": 1, "outbox": 1, "cycles": 1, "counters": 1}
    assert dict(storage.prune(Retention(), NOW)) == dict.fromkeys(removed, 0)  # idempotent
    # The old processed event is forgotten (a redelivery is new again); the recent one is
    # still a duplicate; the pending one is still there to be processed.
    assert storage.enqueue_events([_event("old", NOW)], [], NOW)[0] is not None
    assert storage.enqueue_events([_event("recent", NOW)], [], NOW) == [None]
    assert storage.enqueue_events([_event("pending", NOW)], [], NOW) == [None]
    pending = storage.claim_events("t", limit=10, now=NOW, lease=LEASE)
    assert sorted(e.dedupe_key for e in pending) == ["old", "pending"]
    assert storage.find_echo("deals", "left", "h1", "notes", "f", NOW) is not None
    assert len(storage.claim_outbox("t", limit=10, now=NOW + LEASE * 2, lease=LEASE)) == 1
    assert [c.id for c in storage.list_cycles()] == ["c-new"]
    assert storage.counter_totals("m", since=T0 - timedelta(hours=1)) == [({"a": "b"}, 1)]
    # Closed items are kept unless asked.
    assert storage.get_item(made["closed"]).status is Status.DISMISSED
    only_items = Retention(
        inbox=None, echoes=None, outbox=None, cycles=None, counters=None,
        closed_items=timedelta(days=30),
    )  # fmt: skip
    assert dict(storage.prune(only_items, NOW)) == {"items": 1}
    with pytest.raises(LookupError):
        storage.get_item(made["closed"])
    assert len(storage.active_items("deals")) == 1  # the active one stays, however old


def test_prune_works_in_batches(storage: Storage) -> None:
    ids = storage.enqueue_events([_event(f"e{i}", T0) for i in range(23)], [], T0)
    storage.commit(Step(at=T0, events_done=[(i, "applied", None) for i in ids if i is not None]))
    removed = storage.prune(Retention(batch=5), NOW)
    assert removed["inbox"] == 23
    assert storage.enqueue_events([_event("e0", NOW)], [], NOW)[0] is not None


# --------------------------------------------------------------------------------------------
# SQLite: every batch is a short transaction over an index


def test_sqlite_prunes_over_indexes_in_short_transactions(sqlite_storage: SQLiteStorage) -> None:
    fill(sqlite_storage)
    ids = sqlite_storage.enqueue_events([_event(f"e{i}", T0) for i in range(50)], [], T0)
    sqlite_storage.commit(
        Step(at=T0, events_done=[(i, "applied", None) for i in ids if i is not None])
    )
    seen: list[str] = []
    conn = sqlite_storage._db
    conn.set_trace_callback(seen.append)
    try:
        removed = sqlite_storage.prune(Retention(closed_items=timedelta(days=1), batch=10), NOW)
    finally:
        conn.set_trace_callback(None)
    assert removed["inbox"] == 51
    deletes = [s for s in seen if s.startswith("DELETE")]
    assert {d.split()[2] for d in deletes} == {
        "inbox", "echoes", "outbox", "cycles", "counters", "items"
    }  # fmt: skip
    assert seen.count("COMMIT") == len(deletes) >= 6 + 5  # one transaction per batch
    plain = sqlite3.connect(sqlite_storage.path)
    try:
        for statement in set(deletes):
            plan = plain.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
            details = [row[-1] for row in plan]
            assert not any(d.startswith("SCAN") for d in details), (statement, details)
            assert any("USING" in d and "INDEX" in d for d in details), (statement, details)
    finally:
        plain.close()


# --------------------------------------------------------------------------------------------
# Soak: webhooks through the front door for months of simulated time, pruned on schedule


@attrs.frozen
class Sample:
    events: int
    at: datetime
    db_bytes: int
    inbox_rows: int
    latency_ms: dict[str, float]


def _db_bytes(path: Path) -> int:
    """The database file plus its WAL, after a checkpoint that truncates the WAL."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = int(conn.execute("SELECT count(*) FROM inbox").fetchone()[0])
    finally:
        conn.close()
    wal = Path(f"{path}-wal")
    size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return size * 1_000_000 + rows  # both in one int, split by the caller


def soak(
    path: Path,
    *,
    events: int,
    per_round: int,
    hours_per_round: float,
    retention: Retention | None = Retention(),  # noqa: B008
) -> list[Sample]:
    """Deliver ``events`` signed webhooks, ``per_round`` between worker rounds, moving the
    clock ``hours_per_round`` per round; sample size, inbox rows and latency each quarter."""
    storage = SQLiteStorage(path)
    world = World(storage, records=20, inline=False)
    worker = Worker(
        world.handler, world.reconciler, retention=retention, prune_every=timedelta(hours=1)
    )
    samples: list[Sample] = []
    latencies: list[float] = []
    quarter = events // 4
    sent = 0
    while sent < events:
        for _ in range(per_round):
            key = f"s{sent % 20 + 1}"
            value = f"note {sent}"
            world.right.edit(key, Notes=value)
            request = world.request("salesforce", [world.change(key, "Notes", value)])
            started = time.perf_counter()
            response = world.handler.handle(request)
            latencies.append(time.perf_counter() - started)
            assert response.status < 300, response
            sent += 1
        while True:
            report = worker.run_once()
            if report is None or report.processed == 0:
                break
        world.left.write_log.clear()  # the simulated system's own memory, not the database
        world.clock.advance(timedelta(hours=hours_per_round))
        if sent % quarter == 0:
            both = _db_bytes(path)
            ordered = sorted(latencies)
            samples.append(
                Sample(
                    events=sent,
                    at=world.clock.now(),
                    db_bytes=both // 1_000_000,
                    inbox_rows=both % 1_000_000,
                    latency_ms={
                        "median": statistics.median(ordered) * 1000,
                        "p99": ordered[int(len(ordered) * 0.99)] * 1000,
                        "max": ordered[-1] * 1000,
                    },
                )
            )
            latencies.clear()
    storage.close()
    return samples


def _check_levels_off(samples: list[Sample], *, events: int, per_day: float) -> None:
    for s in samples:  # the figures, for the record (pytest -s shows them)
        print(
            f"{s.events:>7} events  {s.at:%Y-%m-%d}  {s.db_bytes / 1e6:6.2f} MB  "
            f"{s.inbox_rows:>6} inbox rows  enqueue ms: "
            + ", ".join(f"{k} {v:.3f}" for k, v in s.latency_ms.items())
        )
    half, last = samples[1], samples[-1]
    week = 7 * per_day
    # The inbox holds about a week of events (the retention), not everything ever received.
    assert last.inbox_rows <= week * 1.1 + 1
    assert last.inbox_rows < events / 3
    assert last.inbox_rows <= half.inbox_rows * 1.1
    # The file (with its checkpointed WAL) stops growing once pruning keeps pace.
    assert last.db_bytes <= half.db_bytes * 1.25, [s.db_bytes for s in samples]


def test_soak_the_database_levels_off(tmp_path: Path) -> None:
    events, per_round, hours = 20_000, 200, 6.0
    samples = soak(tmp_path / "soak.sqlite", events=events, per_round=per_round,
                   hours_per_round=hours)  # fmt: skip
    _check_levels_off(samples, events=events, per_day=per_round * 24 / hours)


@pytest.mark.slow
def test_soak_200k_events_the_database_levels_off(tmp_path: Path) -> None:
    events, per_round, hours = 200_000, 1000, 4.0
    samples = soak(tmp_path / "soak.sqlite", events=events, per_round=per_round,
                   hours_per_round=hours)  # fmt: skip
    _check_levels_off(samples, events=events, per_day=per_round * 24 / hours)
