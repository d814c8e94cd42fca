"""Values and helpers the storage contract tests share (``tests/storage/test_storage_*.py``).

Every time is explicit; nothing sleeps.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from syncrecon import Side
from syncrecon.storage import (
    BaseUpdate,
    Counter,
    CycleRecord,
    Discrepancy,
    Echo,
    ItemUpdate,
    Link,
    Status,
    Step,
    Storage,
)

AT = datetime(2026, 1, 5, 10, 15, tzinfo=UTC)
SYNC = "deals"

RICH_BASE: dict[str, Any] = {
    "stage": "closedwon",
    "amount": Decimal("1200.50"),
    "close_date": date(2026, 3, 31),
    "touched": datetime(2026, 1, 1, 9, 30, 15, 123456, tzinfo=UTC),
    "tags": ["vip", "q3"],
    "address": {"city": "Zürich", "lines": ["a", "b"]},
    "blank": None,
    "zero": 0,
    "flag": False,
    "empty": "",
}

HOSTILE = [
    "it's",
    'say "hi"',
    "a;b",
    "'); DROP TABLE links; --",
    "\"; DELETE FROM items WHERE '1'='1",
    "Robert'); DROP TABLE items;--",
    "% _ * ?",
    "ünïcødé 日本語 🚀",
    "line\nbreak\ttab",
    "$date",
    "",
]

TTL = timedelta(minutes=10)
LATER = AT + timedelta(minutes=15)


def link(left: str, right: str, **kw: Any) -> Link:
    kw.setdefault("sync", SYNC)
    return Link(left_key=left, right_key=right, **kw)


def item(
    field: str = "stage", left: str | None = "L1", right: str | None = "R1", **kw: Any
) -> Discrepancy:
    kw.setdefault("sync", SYNC)
    kw.setdefault("status", Status.OPEN)
    kw.setdefault("detected_at", AT)
    return Discrepancy(field=field, left_key=left, right_key=right, **kw)


def commit(storage: Storage, at: datetime = AT, **kw: Any) -> list[int]:
    return storage.commit(Step(at=at, **kw))


def snapshot(storage: Storage, sync: str = SYNC) -> dict[str, Any]:
    """Everything observable about ``sync`` through the protocol."""
    return {
        "links": storage.count_links(sync),
        "items": storage.list_items(limit=10_000),
        "active": storage.active_items(sync),
        "state": storage.get_sync_state(sync),
        "cycles": storage.list_cycles(limit=10_000),
        "counters": storage.counter_totals("m"),
    }


def cycle(
    cid: str, started: datetime, report: dict[str, Any] | None = None, *, sync: str = SYNC
) -> CycleRecord:
    return CycleRecord(
        id=cid,
        sync=sync,
        started_at=started,
        finished_at=started + timedelta(seconds=30),
        mode="incremental",
        dry_run=False,
        report=report or {},
    )


def echo(key: str = "R1", field: str = "notes", fp: str = "f1", **kw: Any) -> Echo:
    kw.setdefault("sync", SYNC)
    kw.setdefault("side", Side.RIGHT)
    kw.setdefault("expires_at", LATER)
    return Echo(key=key, field=field, fingerprint=fp, **kw)


def busy_step(at: datetime, item_id: int) -> dict[str, Any]:
    """Every other part a step can have, to check none of them lands when the step fails."""
    return {
        "bases": [BaseUpdate(sync=SYNC, left_key="L1", values={"stage": "lost"}, drop=("a",))],
        "unlink": [(SYNC, "L7")],
        "new_items": [item("amount", "L1", "R1", status=Status.ESCALATED, category="amount")],
        "item_updates": [ItemUpdate(id=item_id, status=Status.RESOLVED, resolution="x")],
        "watermarks": [(SYNC, Side.LEFT, at), (SYNC, Side.RIGHT, at)],
        "full_sweeps": [(SYNC, at)],
        "cycle": CycleRecord(
            id="c-fail",
            sync=SYNC,
            started_at=at,
            finished_at=at,
            mode="full",
            dry_run=False,
            report={"writes": 1},
        ),
        "counters": [Counter(metric="m", labels={"rule": "recency"}, amount=5)],
    }


def prepare_for_failure(storage: Storage) -> int:
    (item_id,) = commit(
        storage,
        links=[link("L1", "R1", base={"a": 1, "stage": "won"}), link("L7", "R7")],
        new_items=[item("stage", "L1", "R1")],
        counters=[Counter(metric="m", labels={"rule": "recency"})],
    )
    return item_id
