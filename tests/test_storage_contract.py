"""The storage contract: every backend passes the same tests (the ``storage`` fixture).

Backend-specific behaviour (SQLite's schema versions, WAL, error mapping) is at the end.
Every time is explicit; nothing sleeps.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from syncrecon import Retention, SchemaVersionError, Side, StorageError
from syncrecon.storage import (
    BaseUpdate,
    Counter,
    CycleRecord,
    Discrepancy,
    Echo,
    InboxEntry,
    ItemUpdate,
    Link,
    Status,
    Step,
    Storage,
    SyncState,
)
from syncrecon.storage.sqlite import SQLiteStorage

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


# -- links ---------------------------------------------------------------------------------------


def test_links_round_trip(storage: Storage) -> None:
    lk = link("L1", "R1", natural_key="ada@example.com", base=RICH_BASE)
    commit(storage, links=[lk, link("L2", "R2")])

    by_left = storage.get_links(SYNC, Side.LEFT, ["L1", "nope"])
    assert list(by_left) == ["L1"]
    got = by_left["L1"]
    assert (got.sync, got.left_key, got.right_key) == (SYNC, "L1", "R1")
    assert got.natural_key == "ada@example.com"
    assert got.base == RICH_BASE
    for name, value in RICH_BASE.items():
        assert type(got.base[name]) is type(value), name
    assert got.created_at == AT

    by_right = storage.get_links(SYNC, Side.RIGHT, ["R1", "R2", "L1"])
    assert set(by_right) == {"R1", "R2"}
    assert by_right["R1"] == got
    assert storage.get_links(SYNC, "right", ["R2"])["R2"].left_key == "L2"  # type: ignore[arg-type]
    assert storage.get_links(SYNC, Side.LEFT, []) == {}
    assert storage.count_links(SYNC) == 2
    assert storage.count_links("other") == 0
    assert storage.get_links("other", Side.LEFT, ["L1"]) == {}


def test_many_keys_in_one_lookup(storage: Storage) -> None:
    links = [link(f"L{i}", f"R{i}", natural_key=f"n{i % 7}") for i in range(1200)]
    commit(storage, links=links)
    keys = [f"R{i}" for i in range(0, 1300, 1)]
    found = storage.get_links(SYNC, Side.RIGHT, keys)
    assert len(found) == 1200
    assert found["R1199"].left_key == "L1199"
    by_nat = storage.links_by_natural_key(SYNC, [f"n{i}" for i in range(7)])
    assert sum(len(v) for v in by_nat.values()) == 1200


def test_links_by_natural_key(storage: Storage) -> None:
    commit(
        storage,
        links=[
            link("L1", "R1", natural_key="ada@example.com"),
            link("L2", "R2", natural_key="ada@example.com"),
            link("L3", "R3", natural_key="bob@example.com"),
            link("L4", "R4"),
            link("L5", "R5", natural_key="ada@example.com", sync="other"),
        ],
    )
    found = storage.links_by_natural_key(SYNC, ["ada@example.com", "eve@example.com"])
    assert set(found) == {"ada@example.com"}
    assert sorted(lk.left_key for lk in found["ada@example.com"]) == ["L1", "L2"]
    assert storage.links_by_natural_key(SYNC, []) == {}
    assert [
        lk.left_key
        for lk in storage.links_by_natural_key("other", ["ada@example.com"])["ada@example.com"]
    ] == ["L5"]


@pytest.mark.parametrize("text", HOSTILE, ids=repr)
def test_keys_field_names_and_values_are_data(storage: Storage, text: str) -> None:
    sync = f"sync {text}"
    left, right = f"L {text}", f"R {text}"
    base = {text: text, f"{text} list": [text, {text: text}]}
    commit(
        storage,
        links=[Link(sync=sync, left_key=left, right_key=right, natural_key=text, base=base)],
    )
    commit(
        storage,
        new_items=[
            Discrepancy(
                sync=sync,
                field=text,
                status=Status.ESCALATED,
                detected_at=AT,
                left_key=left,
                right_key=right,
                left_value=text,
                right_value=[text],
                category=text,
                rule=text,
                explanation=text,
                note=text,
            )
        ],
        watermarks=[(sync, Side.LEFT, AT)],
        counters=[Counter(metric="m", labels={text: text})],
        cycle=CycleRecord(
            id=text,
            sync=sync,
            started_at=AT,
            finished_at=AT,
            mode=text,
            dry_run=False,
            report={text: text},
        ),
    )

    got = storage.get_links(sync, Side.LEFT, [left])[left]
    assert got.right_key == right
    assert got.base == base
    assert storage.get_links(sync, Side.RIGHT, [right])[right].left_key == left
    assert storage.links_by_natural_key(sync, [text])[text][0].left_key == left
    assert storage.count_links(sync) == 1
    (found,) = storage.list_items(sync=sync, category=text, field=text, key=right)
    assert (found.field, found.left_value, found.right_value, found.note) == (
        text,
        text,
        [text],
        text,
    )
    assert list(storage.active_items(sync)) == [(sync, left, right, text)]
    assert storage.get_sync_state(sync).watermarks == {Side.LEFT: AT}
    assert storage.counter_totals("m") == [({text: text}, 1)]
    (cycle,) = storage.list_cycles(sync=sync)
    assert (cycle.id, cycle.mode, cycle.report) == (text, text, {text: text})
    # And nothing was executed: the tables are all still there and still work.
    commit(storage, links=[link("L-after", "R-after")])
    assert storage.count_links(SYNC) == 1
    assert storage.count_links(sync) == 1


def test_relinking_keeps_created_at_and_frees_the_old_right_key(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1", base={"a": 1})])
    later = AT + timedelta(days=1)
    commit(storage, at=later, links=[link("L1", "R9", base={"a": 2})])
    got = storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"]
    assert (got.right_key, got.base, got.created_at) == ("R9", {"a": 2}, AT)
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"]) == {}
    commit(storage, at=later, links=[link("L2", "R1")])  # R1 is free again
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"])["R1"].left_key == "L2"
    assert storage.count_links(SYNC) == 2


def test_committing_the_same_link_twice_is_fine(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1")])
    commit(storage, links=[link("L1", "R1")])
    assert storage.count_links(SYNC) == 1


def test_an_explicit_created_at_is_kept(storage: Storage) -> None:
    when = datetime(2025, 6, 1, tzinfo=UTC)
    commit(storage, links=[link("L1", "R1", created_at=when)])
    assert storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"].created_at == when


def test_the_same_right_key_in_another_sync_is_another_record(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1"), link("L2", "R1", sync="other")])
    assert storage.get_links("other", Side.RIGHT, ["R1"])["R1"].left_key == "L2"
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"])["R1"].left_key == "L1"


def _busy_step(at: datetime, item_id: int) -> dict[str, Any]:
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


def _prepare_for_failure(storage: Storage) -> int:
    (item_id,) = commit(
        storage,
        links=[link("L1", "R1", base={"a": 1, "stage": "won"}), link("L7", "R7")],
        new_items=[item("stage", "L1", "R1")],
        counters=[Counter(metric="m", labels={"rule": "recency"})],
    )
    return item_id


def test_a_right_key_links_to_one_left_key_only(storage: Storage) -> None:
    item_id = _prepare_for_failure(storage)
    before = snapshot(storage)
    later = AT + timedelta(hours=2)

    with pytest.raises(StorageError):
        commit(
            storage,
            at=later,
            links=[link("L2", "R2"), link("L3", "R1")],  # R1 already belongs to L1
            **_busy_step(later, item_id),
        )

    assert snapshot(storage) == before
    assert storage.get_links(SYNC, Side.LEFT, ["L2", "L3"]) == {}
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"])["R1"].left_key == "L1"
    assert storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"].base == {"a": 1, "stage": "won"}
    assert storage.get_links(SYNC, Side.LEFT, ["L7"])["L7"].right_key == "R7"
    assert storage.get_item(item_id).status is Status.OPEN
    # The storage still works after the failed step.
    commit(storage, at=later, links=[link("L2", "R2")])
    assert storage.count_links(SYNC) == 3


def test_two_left_keys_for_one_right_key_in_one_step_fail(storage: Storage) -> None:
    with pytest.raises(StorageError):
        commit(storage, links=[link("L1", "R1"), link("L2", "R1")])
    assert storage.count_links(SYNC) == 0
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"]) == {}


def test_a_step_that_fails_late_changes_nothing(storage: Storage) -> None:
    # The cycle report is the last part applied; one unstorable value in it fails the step.
    item_id = _prepare_for_failure(storage)
    before = snapshot(storage)
    later = AT + timedelta(hours=2)
    parts = _busy_step(later, item_id)
    parts["cycle"] = CycleRecord(
        id="c-bad",
        sync=SYNC,
        started_at=later,
        finished_at=later,
        mode="full",
        dry_run=False,
        report={"oops": object()},
    )
    with pytest.raises((TypeError, StorageError)):
        commit(storage, at=later, links=[link("L2", "R2")], **parts)
    assert snapshot(storage) == before
    assert storage.get_links(SYNC, Side.LEFT, ["L2"]) == {}


def test_an_unstorable_counter_label_changes_nothing(storage: Storage) -> None:
    before = snapshot(storage)
    with pytest.raises((TypeError, StorageError)):
        commit(
            storage,
            links=[link("L1", "R1")],
            watermarks=[(SYNC, Side.LEFT, AT)],
            counters=[Counter(metric="m", labels={"rule": object()})],  # type: ignore[dict-item]
        )
    assert snapshot(storage) == before


# -- bases ---------------------------------------------------------------------------------------


def test_base_updates_merge_per_field(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1", base={"a": 1, "b": [1], "c": "keep"})])
    commit(
        storage,
        bases=[BaseUpdate(sync=SYNC, left_key="L1", values={"b": [2, 3], "d": date(2026, 2, 2)})],
    )
    got = storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"]
    assert got.base == {"a": 1, "b": [2, 3], "c": "keep", "d": date(2026, 2, 2)}


def test_base_drop(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1", base={"a": 1, "b": 2, "c": 3})])
    commit(
        storage,
        bases=[
            BaseUpdate(sync=SYNC, left_key="L1", drop=("a", "never-synced")),
            BaseUpdate(sync=SYNC, left_key="L1", values={"b": 20, "c": 30}, drop=("c",)),
        ],
    )
    assert storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"].base == {"b": 20}


def test_base_update_of_an_unlinked_record_is_ignored(storage: Storage) -> None:
    commit(storage, bases=[BaseUpdate(sync=SYNC, left_key="ghost", values={"a": 1})])
    assert storage.count_links(SYNC) == 0
    assert storage.get_links(SYNC, Side.LEFT, ["ghost"]) == {}


def test_bases_of_other_links_are_untouched(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1", base={"a": 1}), link("L2", "R2", base={"a": 1})])
    commit(storage, bases=[BaseUpdate(sync=SYNC, left_key="L1", values={"a": 2})])
    links = storage.get_links(SYNC, Side.LEFT, ["L1", "L2"])
    assert links["L1"].base == {"a": 2}
    assert links["L2"].base == {"a": 1}


def test_returned_values_are_copies(storage: Storage) -> None:
    commit(
        storage,
        links=[link("L1", "R1", natural_key="n", base={"tags": ["a"]})],
        new_items=[item(left_value=["x"], right_value={"k": "v"})],
        watermarks=[(SYNC, Side.LEFT, AT)],
        cycle=cycle("c1", AT, {"found": [1]}),
    )
    got = storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"]
    got.base["tags"].append("mutated")
    got.base["new"] = 1  # type: ignore[index]
    storage.links_by_natural_key(SYNC, ["n"])["n"][0].base["tags"].append("again")
    (found,) = storage.list_items()
    found.left_value.append("mutated")
    assert storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"].base == {"tags": ["a"]}
    storage.active_items(SYNC)[(SYNC, "L1", "R1", "stage")].right_value["k"] = "mutated"
    storage.get_sync_state(SYNC).watermarks[Side.RIGHT] = AT  # type: ignore[index]
    storage.list_cycles()[0].report["found"].append(2)
    assert storage.list_items()[0].left_value == ["x"]
    assert storage.get_item(found.id or 0).right_value == {"k": "v"}
    assert storage.get_sync_state(SYNC).watermarks == {Side.LEFT: AT}
    assert storage.list_cycles()[0].report == {"found": [1]}


# -- unlink --------------------------------------------------------------------------------------


def test_unlink(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1", natural_key="n"), link("L2", "R2")])
    commit(storage, unlink=[(SYNC, "L1"), (SYNC, "unknown"), ("other", "L2")])
    assert storage.count_links(SYNC) == 1
    assert storage.get_links(SYNC, Side.LEFT, ["L1"]) == {}
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"]) == {}
    assert storage.links_by_natural_key(SYNC, ["n"]) == {}
    assert storage.get_links(SYNC, Side.LEFT, ["L2"])["L2"].right_key == "R2"
    commit(storage, links=[link("L3", "R1")])  # the right key is free again
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"])["R1"].left_key == "L3"


def test_unlink_then_base_update_in_one_step_keeps_no_base(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1", base={"a": 1})])
    commit(
        storage,
        unlink=[(SYNC, "L1")],
        bases=[BaseUpdate(sync=SYNC, left_key="L1", values={"a": 2})],
    )
    assert storage.count_links(SYNC) == 0


# -- the queue -----------------------------------------------------------------------------------


def test_item_round_trip(storage: Storage) -> None:
    new = item(
        "amount",
        "L1",
        "R1",
        status=Status.ESCALATED,
        left_value=Decimal("10.50"),
        right_value={"currency": "EUR", "value": [1, 2]},
        base_value=date(2026, 1, 1),
        has_base=True,
        rule="escalate",
        category="amount",
        explanation="field 'amount': left=... right=...",
        cycle_id="cycle-1",
        note="looks odd",
        assignee="ops@example.com",
    )
    ids = commit(storage, at=AT + timedelta(minutes=1), new_items=[new, item("notes")])
    assert len(ids) == 2
    assert len(set(ids)) == 2
    got = storage.get_item(ids[0])
    assert got.id == ids[0]
    assert got.item_key == (SYNC, "L1", "R1", "amount")
    for name in (
        "sync", "field", "status", "detected_at", "left_key", "right_key", "left_value",
        "right_value", "base_value", "has_base", "rule", "category", "explanation",
        "resolution", "resolved_at", "cycle_id", "note", "assignee",
    ):  # fmt: skip
        assert getattr(got, name) == getattr(new, name), name
    assert type(got.left_value) is Decimal
    assert type(got.base_value) is date
    assert got.times_seen == 1
    assert got.updated_at == AT + timedelta(minutes=1)
    assert storage.get_item(ids[1]).field == "notes"


def test_record_level_items_have_no_keys_on_one_side(storage: Storage) -> None:
    (i,) = commit(storage, new_items=[item("*", "L1", None, status=Status.ESCALATED)])
    got = storage.get_item(i)
    assert got.left_key == "L1"
    assert got.right_key is None
    assert got.item_key == (SYNC, "L1", "", "*")
    assert list(storage.active_items(SYNC)) == [(SYNC, "L1", "", "*")]


def test_get_item_raises_key_error(storage: Storage) -> None:
    with pytest.raises(KeyError):
        storage.get_item(12345)
    with pytest.raises(LookupError):
        storage.get_item(0)


def test_one_active_item_per_record_and_field(storage: Storage) -> None:
    (first,) = commit(storage, new_items=[item(left_value="a", right_value="b", note="first")])
    later = AT + timedelta(hours=1)
    (second,) = commit(
        storage,
        at=later,
        new_items=[
            item(
                detected_at=later,
                left_value="c",
                right_value="d",
                status=Status.ESCALATED,
                category="unresolved_conflict",
                cycle_id="cycle-2",
            )
        ],
    )
    assert second == first
    got = storage.get_item(first)
    assert got.times_seen == 2
    assert got.detected_at == AT  # first seen
    assert got.updated_at == later
    assert (got.left_value, got.right_value) == ("c", "d")
    assert got.status is Status.ESCALATED
    assert got.category == "unresolved_conflict"
    assert got.cycle_id == "cycle-2"
    assert got.note == "first"  # kept when the new sighting has none
    assert len(storage.list_items()) == 1
    assert list(storage.active_items(SYNC).values()) == [got]


def test_same_key_twice_in_one_step_is_one_item(storage: Storage) -> None:
    ids = commit(storage, new_items=[item(left_value=1), item(left_value=2)])
    assert ids[0] == ids[1]
    got = storage.get_item(ids[0])
    assert (got.left_value, got.times_seen) == (2, 2)


def test_items_differ_by_sync_keys_and_field(storage: Storage) -> None:
    ids = commit(
        storage,
        new_items=[
            item("stage", "L1", "R1"),
            item("notes", "L1", "R1"),
            item("stage", "L2", "R1"),
            item("stage", "L1", "R2"),
            item("stage", "L1", "R1", sync="other"),
        ],
    )
    assert len(set(ids)) == 5
    assert len(storage.active_items(SYNC)) == 4
    assert len(storage.active_items("other")) == 1


def test_status_updates_close_items(storage: Storage) -> None:
    (i,) = commit(storage, new_items=[item(note="seen")])
    done = AT + timedelta(hours=3)
    commit(
        storage,
        at=done,
        item_updates=[
            ItemUpdate(
                id=i,
                status=Status.RESOLVED,
                resolution={"value": Decimal("5")},
                resolved_at=done,
                note="operator chose left",
            )
        ],
    )
    got = storage.get_item(i)
    assert got.status is Status.RESOLVED
    assert got.resolution == {"value": Decimal("5")}
    assert got.resolved_at == done
    assert got.updated_at == done
    assert got.note == "operator chose left"
    assert storage.active_items(SYNC) == {}
    # An update without a note keeps the note.
    commit(storage, item_updates=[ItemUpdate(id=i, status=Status.DISMISSED)])
    got = storage.get_item(i)
    assert (got.status, got.note, got.resolution) == (Status.DISMISSED, "operator chose left", None)


def test_a_closed_item_allows_a_new_active_item(storage: Storage) -> None:
    (old,) = commit(storage, new_items=[item(left_value="a")])
    commit(storage, item_updates=[ItemUpdate(id=old, status=Status.AUTO_RESOLVED, resolution="a")])
    later = AT + timedelta(days=1)
    (new,) = commit(storage, at=later, new_items=[item(left_value="z", detected_at=later)])
    assert new != old
    assert storage.get_item(new).times_seen == 1
    assert storage.get_item(old).status is Status.AUTO_RESOLVED
    assert storage.get_item(old).left_value == "a"
    assert [i.id for i in storage.active_items(SYNC).values()] == [new]


def test_a_closed_new_item_closes_the_active_one(storage: Storage) -> None:
    (i,) = commit(storage, new_items=[item()])
    (j,) = commit(storage, new_items=[item(status=Status.AUTO_RESOLVED, resolution="x")])
    assert j == i
    assert storage.get_item(i).status is Status.AUTO_RESOLVED
    assert storage.active_items(SYNC) == {}


def test_a_closed_item_can_be_reopened(storage: Storage) -> None:
    (i,) = commit(storage, new_items=[item()])
    commit(storage, item_updates=[ItemUpdate(id=i, status=Status.DISMISSED)])
    commit(storage, item_updates=[ItemUpdate(id=i, status=Status.ESCALATED)])
    assert [x.id for x in storage.active_items(SYNC).values()] == [i]
    # ...and it is the one a new sighting updates.
    (j,) = commit(storage, new_items=[item(left_value="again")])
    assert j == i
    assert storage.get_item(i).times_seen == 2
    assert len(storage.list_items()) == 1


def test_reopening_next_to_an_active_item_fails_and_changes_nothing(storage: Storage) -> None:
    (old,) = commit(storage, new_items=[item()])
    commit(storage, item_updates=[ItemUpdate(id=old, status=Status.RESOLVED)])
    (new,) = commit(storage, new_items=[item(left_value="new")])
    before = snapshot(storage)
    with pytest.raises(StorageError):
        commit(
            storage,
            links=[link("L9", "R9")],
            new_items=[item("notes")],
            item_updates=[ItemUpdate(id=old, status=Status.OPEN)],
            counters=[Counter(metric="m")],
        )
    assert snapshot(storage) == before
    assert [x.id for x in storage.active_items(SYNC).values()] == [new]


def test_updating_an_unknown_item_creates_nothing(storage: Storage) -> None:
    commit(storage, item_updates=[ItemUpdate(id=999, status=Status.RESOLVED)])
    assert storage.list_items() == []
    with pytest.raises(KeyError):
        storage.get_item(999)


@pytest.fixture
def queue(storage: Storage) -> dict[str, int]:
    """A small queue: items of two syncs, statuses, categories, fields, detected hourly."""
    specs = [
        # name, sync, field, left, right, status, category
        ("a", SYNC, "stage", "L1", "R1", Status.OPEN, None),
        ("b", SYNC, "amount", "L1", "R1", Status.ESCALATED, "amount"),
        ("c", SYNC, "notes", "L2", "R2", Status.ESCALATED, "unresolved_conflict"),
        ("d", SYNC, "stage", "L3", "R3", Status.AUTO_RESOLVED, None),
        ("e", SYNC, "*", "L4", None, Status.ESCALATED, "duplicate"),
        ("f", "other", "stage", "L1", "R1", Status.ESCALATED, "amount"),
        ("g", SYNC, "amount", "L5", "R5", Status.DISMISSED, "amount"),
    ]
    ids = {}
    for hour, (name, sync, field, left, right, status, category) in enumerate(specs):
        at = AT + timedelta(hours=hour)
        (ids[name],) = commit(
            storage,
            at=at,
            new_items=[
                Discrepancy(
                    sync=sync,
                    field=field,
                    left_key=left,
                    right_key=right,
                    status=status,
                    category=category,
                    detected_at=at,
                )
            ],
        )
    return ids


def _names(items: list[Discrepancy], ids: dict[str, int]) -> list[str]:
    by_id = {v: k for k, v in ids.items()}
    return [by_id[i.id] for i in items if i.id is not None]


def test_list_items_newest_first(storage: Storage, queue: dict[str, int]) -> None:
    assert _names(storage.list_items(), queue) == ["g", "f", "e", "d", "c", "b", "a"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"sync": SYNC}, ["g", "e", "d", "c", "b", "a"]),
        ({"sync": "other"}, ["f"]),
        ({"sync": "nope"}, []),
        ({"statuses": [Status.ESCALATED]}, ["f", "e", "c", "b"]),
        ({"statuses": [Status.OPEN, Status.AUTO_RESOLVED]}, ["d", "a"]),
        ({"statuses": ["dismissed"]}, ["g"]),
        ({"statuses": []}, ["g", "f", "e", "d", "c", "b", "a"]),
        ({"category": "amount"}, ["g", "f", "b"]),
        ({"category": "amount", "sync": SYNC, "statuses": [Status.ESCALATED]}, ["b"]),
        ({"field": "stage"}, ["f", "d", "a"]),
        ({"field": "*"}, ["e"]),
        ({"key": "L1"}, ["f", "b", "a"]),
        ({"key": "R2"}, ["c"]),
        ({"key": "L4"}, ["e"]),
        ({"key": "L1", "sync": SYNC, "field": "amount"}, ["b"]),
        ({"limit": 2}, ["g", "f"]),
        ({"limit": 2, "offset": 2}, ["e", "d"]),
        ({"offset": 6}, ["a"]),
        ({"offset": 7}, []),
        ({"sync": SYNC, "limit": 1, "offset": 1}, ["e"]),
    ],
    ids=str,
)
def test_list_items_filters(
    storage: Storage, queue: dict[str, int], filters: dict[str, Any], expected: list[str]
) -> None:
    assert _names(storage.list_items(**filters), queue) == expected


def test_list_items_same_time_newest_id_first(storage: Storage) -> None:
    ids = commit(storage, new_items=[item("a"), item("b"), item("c")])
    assert [i.id for i in storage.list_items()] == ids[::-1]


def test_active_items(storage: Storage, queue: dict[str, int]) -> None:
    active = storage.active_items(SYNC)
    assert set(active) == {
        (SYNC, "L1", "R1", "stage"),
        (SYNC, "L1", "R1", "amount"),
        (SYNC, "L2", "R2", "notes"),
        (SYNC, "L4", "", "*"),
    }
    assert all(key == i.item_key for key, i in active.items())
    assert active[(SYNC, "L1", "R1", "amount")].id == queue["b"]
    assert set(storage.active_items("other")) == {("other", "L1", "R1", "stage")}
    assert storage.active_items("nope") == {}


# -- watermarks and sweeps ----------------------------------------------------------------------


def test_sync_state(storage: Storage) -> None:
    assert storage.get_sync_state(SYNC) == SyncState()
    t1, t2, t3 = AT, AT + timedelta(minutes=5), AT + timedelta(minutes=9)
    commit(storage, watermarks=[(SYNC, Side.LEFT, t1)])
    assert storage.get_sync_state(SYNC).watermarks == {Side.LEFT: t1}
    assert storage.get_sync_state(SYNC).last_full_sweep is None
    commit(storage, watermarks=[(SYNC, Side.RIGHT, t2)], full_sweeps=[(SYNC, t1)])
    commit(storage, watermarks=[(SYNC, "left", t3)])  # a plain string names a side too
    state = storage.get_sync_state(SYNC)
    assert state.watermarks == {Side.LEFT: t3, Side.RIGHT: t2}
    assert state.last_full_sweep == t1
    commit(storage, full_sweeps=[(SYNC, t3)])
    assert storage.get_sync_state(SYNC).last_full_sweep == t3
    assert storage.get_sync_state(SYNC).watermarks == {Side.LEFT: t3, Side.RIGHT: t2}
    assert storage.get_sync_state("other") == SyncState()


def test_sync_state_only_a_full_sweep(storage: Storage) -> None:
    commit(storage, full_sweeps=[(SYNC, AT)])
    assert storage.get_sync_state(SYNC) == SyncState(last_full_sweep=AT)


def test_watermarks_keep_microseconds_and_instants(storage: Storage) -> None:
    from datetime import timezone

    mark = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    commit(storage, watermarks=[(SYNC, Side.LEFT, mark)])
    got = storage.get_sync_state(SYNC).watermarks[Side.LEFT]
    assert got == mark
    assert got.utcoffset() == timedelta(0)


# -- cycles --------------------------------------------------------------------------------------


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


def test_cycles_newest_first(storage: Storage) -> None:
    report = {"escalated": {"amount": 2}, "found": 3, "at": date(2026, 1, 1), "x": [Decimal("1")]}
    for n, cid in enumerate(["c1", "c2", "c3"]):
        commit(storage, cycle=cycle(cid, AT + timedelta(hours=n), report))
    commit(storage, cycle=cycle("o1", AT + timedelta(hours=10), sync="other"))
    assert [c.id for c in storage.list_cycles()] == ["o1", "c3", "c2", "c1"]
    assert [c.id for c in storage.list_cycles(sync=SYNC)] == ["c3", "c2", "c1"]
    assert [c.id for c in storage.list_cycles(sync=SYNC, limit=2)] == ["c3", "c2"]
    assert storage.list_cycles(sync="nope") == []
    got = storage.list_cycles(sync=SYNC, limit=1)[0]
    assert got == cycle("c3", AT + timedelta(hours=2), report)


def test_a_cycle_stored_again_is_replaced(storage: Storage) -> None:
    commit(storage, cycle=cycle("c1", AT, {"found": 1}))
    commit(storage, cycle=cycle("c1", AT, {"found": 2}))
    (got,) = storage.list_cycles()
    assert got.report == {"found": 2}


# -- counters ------------------------------------------------------------------------------------


def hour(h: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, 5, h, minute, tzinfo=UTC)


@pytest.fixture
def counted(storage: Storage) -> Storage:
    r, e = {"rule": "recency"}, {"category": "amount"}
    commit(storage, at=hour(10, 5), counters=[Counter(metric="m", labels=r)])
    commit(storage, at=hour(10, 55), counters=[Counter(metric="m", labels=r, amount=2)])
    commit(storage, at=hour(11, 0), counters=[Counter(metric="m", labels=r, amount=4)])
    commit(
        storage,
        at=hour(12, 30),
        counters=[
            Counter(metric="m", labels=e, amount=8),
            Counter(metric="m", labels={}, amount=16),
            Counter(metric="other", labels=r, amount=100),
        ],
    )
    commit(storage, at=hour(13, 59), counters=[Counter(metric="m", labels=r, amount=32)])
    return storage


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (None, None, {"{}": 16, "amount": 8, "recency": 39}),
        (hour(11), None, {"{}": 16, "amount": 8, "recency": 36}),
        # ``since`` counts its whole hour: 10:30 includes 10:05 and 10:55.
        (hour(10, 30), None, {"{}": 16, "amount": 8, "recency": 39}),
        (None, hour(11), {"recency": 3}),
        # ``until`` excludes the hour that starts at it, includes the hours before it.
        (None, hour(12), {"recency": 7}),
        (None, hour(12, 1), {"{}": 16, "amount": 8, "recency": 7}),
        (hour(11), hour(13), {"{}": 16, "amount": 8, "recency": 4}),
        (hour(14), None, {}),
        (hour(9), hour(10), {}),
    ],
    ids=str,
)
def test_counter_totals_by_window(
    counted: Storage, since: datetime | None, until: datetime | None, expected: dict[str, int]
) -> None:
    totals = counted.counter_totals("m", since=since, until=until)
    flat = {(next(iter(labels.values())) if labels else "{}"): n for labels, n in totals}
    assert flat == expected


def test_counter_totals_shape_and_order(counted: Storage) -> None:
    assert counted.counter_totals("m") == [
        ({"category": "amount"}, 8),
        ({"rule": "recency"}, 39),
        ({}, 16),
    ]
    assert counted.counter_totals("other") == [({"rule": "recency"}, 100)]
    assert counted.counter_totals("unknown") == []


def test_counters_sum_per_label_set_whatever_the_label_order(storage: Storage) -> None:
    commit(
        storage,
        counters=[
            Counter(metric="m", labels={"a": "1", "b": "2"}),
            Counter(metric="m", labels={"b": "2", "a": "1"}, amount=2),
            Counter(metric="m", labels={"a": "1"}, amount=4),
            Counter(metric="m", labels={"a": "1", "b": "3"}, amount=8),
        ],
    )
    totals = {tuple(sorted(labels.items())): n for labels, n in storage.counter_totals("m")}
    assert totals == {
        (("a", "1"), ("b", "2")): 3,
        (("a", "1"),): 4,
        (("a", "1"), ("b", "3")): 8,
    }


# -- leases --------------------------------------------------------------------------------------

TTL = timedelta(minutes=10)


def test_lease_acquire_and_refuse(storage: Storage) -> None:
    assert storage.acquire_lease("cycle:deals", "w1", TTL, AT)
    assert not storage.acquire_lease("cycle:deals", "w2", TTL, AT)
    assert not storage.acquire_lease("cycle:deals", "w2", TTL, AT + TTL - timedelta(microseconds=1))
    assert storage.acquire_lease("cycle:other", "w2", TTL, AT)  # another name is free


def test_lease_taken_after_expiry(storage: Storage) -> None:
    assert storage.acquire_lease("l", "w1", TTL, AT)
    assert storage.acquire_lease("l", "w2", TTL, AT + TTL)  # expired at that instant
    assert not storage.acquire_lease("l", "w1", TTL, AT + TTL + timedelta(minutes=1))


def test_lease_renewed_by_its_owner(storage: Storage) -> None:
    assert storage.acquire_lease("l", "w1", TTL, AT)
    assert storage.acquire_lease("l", "w1", TTL, AT + timedelta(minutes=8))
    # The renewal moved the expiry to 18 minutes: at 12 minutes w2 is still refused.
    assert not storage.acquire_lease("l", "w2", TTL, AT + timedelta(minutes=12))
    assert storage.acquire_lease("l", "w2", TTL, AT + timedelta(minutes=18))


def test_lease_release(storage: Storage) -> None:
    assert storage.acquire_lease("l", "w1", TTL, AT)
    storage.release_lease("l", "w2")  # not the owner: no effect
    assert not storage.acquire_lease("l", "w2", TTL, AT)
    storage.release_lease("l", "w1")
    assert storage.acquire_lease("l", "w2", TTL, AT)
    storage.release_lease("never-taken", "w1")
    storage.release_lease("never-taken", "")


def test_lease_owner_may_be_any_string(storage: Storage) -> None:
    storage.release_lease("l", "")
    assert storage.acquire_lease("l", "", TTL, AT)
    assert not storage.acquire_lease("l", "w2", TTL, AT)
    storage.release_lease("l", "")
    assert storage.acquire_lease("l", "w2", TTL, AT)


# -- the echo ledger ------------------------------------------------------------------------------

LATER = AT + timedelta(minutes=15)


def echo(key: str = "R1", field: str = "notes", fp: str = "f1", **kw: Any) -> Echo:
    kw.setdefault("sync", SYNC)
    kw.setdefault("side", Side.RIGHT)
    kw.setdefault("expires_at", LATER)
    return Echo(key=key, field=field, fingerprint=fp, **kw)


def test_an_echo_matches_its_own_value_until_it_expires(storage: Storage) -> None:
    commit(storage, echoes=[echo(source_time=AT - timedelta(hours=1)), echo("R2")])
    found = storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT)
    assert found is not None
    assert storage.find_echo(SYNC, Side.RIGHT, "R2", "notes", "f1", AT) not in (None, found)
    for other in (
        (SYNC, Side.LEFT, "R1", "notes", "f1"),
        (SYNC, Side.RIGHT, "R3", "notes", "f1"),
        (SYNC, Side.RIGHT, "R1", "stage", "f1"),
        (SYNC, Side.RIGHT, "R1", "notes", "f2"),
        ("other", Side.RIGHT, "R1", "notes", "f1"),
    ):
        assert storage.find_echo(*other, AT) is None, other
    assert storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", LATER) is None


def test_echo_times_of_a_batch_of_records(storage: Storage) -> None:
    t1, t2, t3 = (AT - timedelta(minutes=m) for m in (30, 20, 10))
    commit(
        storage,
        echoes=[
            echo("R1", "notes", "a", source_time=t1),
            echo("R1", "notes", "a", source_time=t3),  # the same value again: the latest counts
            echo("R1", "notes", "a", source_time=t2),
            echo("R1", "notes", "b", source_time=t1),  # another value of the same field
            echo("R1", "stage", "c"),  # no source time: an echo, but it times nothing
            echo("R2", "notes", "d", source_time=t1, expires_at=AT),  # expired at AT
            echo("R3", "notes", "e", source_time=t2),  # not asked for
            echo("L1", "notes", "f", side=Side.LEFT, source_time=t2),
            echo("R1", "notes", "g", sync="other", source_time=t2),
        ],
    )
    found = storage.echo_times(
        SYNC, [(Side.RIGHT, "R1"), (Side.RIGHT, "R2"), (Side.LEFT, "L1"), (Side.LEFT, "R1")], AT
    )
    assert found == {
        (Side.RIGHT, "R1", "notes", "a"): t3,
        (Side.RIGHT, "R1", "notes", "b"): t1,
        (Side.LEFT, "L1", "notes", "f"): t2,
    }
    assert storage.echo_times(SYNC, [], AT) == {}
    assert storage.echo_times(SYNC, [(Side.RIGHT, "R1")], LATER) == {}  # all expired


@pytest.mark.parametrize("text", HOSTILE)
def test_echo_keys_fields_and_fingerprints_are_data(storage: Storage, text: str) -> None:
    commit(storage, echoes=[echo(text, text, text, source_time=AT)])
    assert storage.find_echo(SYNC, Side.RIGHT, text, text, text, AT) is not None
    assert storage.echo_times(SYNC, [(Side.RIGHT, text)], AT) == {
        (Side.RIGHT, text, text, text): AT
    }


def test_echo_times_of_many_records_in_one_call(storage: Storage) -> None:
    keys = [f"R{i}" for i in range(1_200)]
    commit(
        storage, echoes=[echo(k, source_time=AT - timedelta(seconds=i)) for i, k in enumerate(keys)]
    )
    found = storage.echo_times(SYNC, [(Side.RIGHT, k) for k in keys], AT)
    assert len(found) == len(keys)
    assert found[(Side.RIGHT, "R1199", "notes", "f1")] == AT - timedelta(seconds=1199)


def test_a_spent_echo_matches_no_webhook_but_keeps_its_time_until_it_expires(
    storage: Storage,
) -> None:
    commit(storage, echoes=[echo("R1", source_time=AT), echo("R1"), echo("R2", source_time=AT)])
    timed = storage.find_echo(SYNC, Side.RIGHT, "R2", "notes", "f1", AT)
    first = storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT)
    assert timed is not None
    assert first is not None
    commit(storage, drop_echoes=[timed, first])
    # One entry recognizes one webhook: R2's is spent, R1 has one left (the untimed one).
    assert storage.find_echo(SYNC, Side.RIGHT, "R2", "notes", "f1", AT) is None
    second = storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT)
    assert second not in (None, first)
    assert second is not None
    commit(storage, drop_echoes=[second])
    assert storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT) is None
    # The spent entries still time their values, until they expire.
    wanted = [(Side.RIGHT, "R1"), (Side.RIGHT, "R2")]
    assert storage.echo_times(SYNC, wanted, AT) == {
        (Side.RIGHT, "R1", "notes", "f1"): AT,
        (Side.RIGHT, "R2", "notes", "f1"): AT,
    }
    assert storage.echo_times(SYNC, wanted, LATER) == {}
    # Pruned like every entry, by expiry: the two timed ones are left (the untimed one went
    # when it was spent).
    assert dict(storage.prune(Retention(), LATER + timedelta(seconds=1)))["echoes"] == 2
    assert storage.echo_times(SYNC, wanted, AT) == {}


def test_a_failed_step_spends_no_echo(storage: Storage) -> None:
    commit(storage, echoes=[echo(source_time=AT)], links=[link("L1", "R1")])
    found = storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT)
    assert found is not None
    with pytest.raises(StorageError):
        commit(storage, drop_echoes=[found], links=[link("L2", "R1")])  # R1 is linked to L1
    assert storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT) == found


# -- naive datetimes mean UTC, whatever the host's time zone ------------------------------------


@pytest.fixture
def eastern_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if not hasattr(time, "tzset"):
        pytest.skip("needs time.tzset")
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.usefixtures("eastern_host")
def test_naive_datetimes_are_utc(storage: Storage) -> None:
    naive = datetime(2026, 1, 5, 12, 30)
    aware = naive.replace(tzinfo=UTC)
    commit(
        storage,
        at=naive,
        watermarks=[(SYNC, Side.LEFT, naive)],
        full_sweeps=[(SYNC, naive)],
        counters=[Counter(metric="m")],
    )
    state = storage.get_sync_state(SYNC)
    assert state.watermarks[Side.LEFT] == aware
    assert state.last_full_sweep == aware
    assert storage.counter_totals("m", since=aware, until=aware + timedelta(hours=1)) == [({}, 1)]
    assert storage.counter_totals("m", since=naive, until=naive + timedelta(hours=1)) == [({}, 1)]
    assert storage.acquire_lease("l", "w1", TTL, naive)
    assert not storage.acquire_lease("l", "w2", TTL, aware + TTL - timedelta(seconds=1))
    assert storage.acquire_lease("l", "w2", TTL, aware + TTL)


def test_step_is_empty() -> None:
    assert Step(at=AT).is_empty()
    assert not Step(at=AT, counters=[Counter(metric="m")]).is_empty()
    assert not Step(at=AT, unlink=[(SYNC, "L1")]).is_empty()


def test_backends_meet_the_protocol(storage: Storage) -> None:
    assert isinstance(storage, Storage)
    storage.setup()  # idempotent
    assert storage.count_links(SYNC) == 0


def test_safe_to_call_from_several_threads(storage: Storage) -> None:
    def work(n: int) -> None:
        for i in range(25):
            commit(
                storage,
                links=[link(f"L{n}-{i}", f"R{n}-{i}")],
                new_items=[item("f", f"L{n}-{i}", f"R{n}-{i}")],
                counters=[Counter(metric="m")],
            )
            storage.get_links(SYNC, Side.LEFT, [f"L{n}-{i}"])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert storage.count_links(SYNC) == 100
    assert len(storage.active_items(SYNC)) == 100
    assert len({i.id for i in storage.list_items(limit=1000)}) == 100
    assert storage.counter_totals("m") == [({}, 100)]


# -- SQLite only -----------------------------------------------------------------------------------


def _user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_sqlite_records_its_schema_version(
    sqlite_storage: SQLiteStorage, sqlite_path: Path
) -> None:
    from syncrecon.storage.sqlite import _migrations

    latest = _migrations()[-1][0]
    assert latest >= 1
    assert sqlite_storage.schema_version() == latest
    assert _user_version(sqlite_path) == latest


def test_sqlite_reopening_keeps_everything(
    sqlite_storage: SQLiteStorage, sqlite_path: Path
) -> None:
    (i,) = commit(
        sqlite_storage,
        links=[link("L1", "R1", natural_key="n", base=RICH_BASE)],
        new_items=[item(status=Status.ESCALATED, category="amount")],
        watermarks=[(SYNC, Side.RIGHT, AT)],
        cycle=cycle("c1", AT, {"found": 1}),
        counters=[Counter(metric="m", amount=3)],
    )
    assert sqlite_storage.acquire_lease("l", "w1", TTL, AT)
    sqlite_storage.close()

    again = SQLiteStorage(sqlite_path)
    try:
        again.setup()
        assert again.get_links(SYNC, Side.RIGHT, ["R1"])["R1"].base == RICH_BASE
        assert again.get_item(i).category == "amount"
        assert list(again.active_items(SYNC)) == [(SYNC, "L1", "R1", "stage")]
        assert again.get_sync_state(SYNC).watermarks == {Side.RIGHT: AT}
        assert [c.id for c in again.list_cycles()] == ["c1"]
        assert again.counter_totals("m") == [({}, 3)]
        assert not again.acquire_lease("l", "w2", TTL, AT)
    finally:
        again.close()
    # The closed storage reopens its connection on next use.
    assert sqlite_storage.count_links(SYNC) == 1


def test_sqlite_two_storages_share_one_file(
    sqlite_storage: SQLiteStorage, sqlite_path: Path
) -> None:
    other = SQLiteStorage(sqlite_path)
    try:
        commit(other, links=[link("L1", "R1")])
        assert sqlite_storage.count_links(SYNC) == 1
        assert other.acquire_lease("l", "w1", TTL, AT)
        assert not sqlite_storage.acquire_lease("l", "w2", TTL, AT)
    finally:
        other.close()


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    store = SQLiteStorage(path)
    try:
        with pytest.raises(SchemaVersionError, match="999"):
            store.setup()
        with pytest.raises(SchemaVersionError):
            store.count_links(SYNC)  # every use checks, not only setup()
    finally:
        store.close()
    assert issubclass(SchemaVersionError, StorageError)
    assert _user_version(path) == 999  # and nothing was changed


def test_sqlite_uses_wal(sqlite_storage: SQLiteStorage, sqlite_path: Path) -> None:
    commit(sqlite_storage, links=[link("L1", "R1")])
    conn = sqlite3.connect(sqlite_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_sqlite_errors_become_storage_errors(sqlite_storage: SQLiteStorage) -> None:
    commit(sqlite_storage, links=[link("L1", "R1")])
    with pytest.raises(StorageError) as caught:
        commit(sqlite_storage, links=[link("L2", "R1")])
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)


def test_sqlite_unopenable_file_is_a_storage_error(tmp_path: Path) -> None:
    store = SQLiteStorage(tmp_path / "missing-dir" / "db.sqlite")
    with pytest.raises(StorageError) as caught:
        store.setup()
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    store.close()


def test_sqlite_rejects_unknown_synchronous_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SQLiteStorage(tmp_path / "x.sqlite", synchronous="sometimes")


def test_sqlite_migrates_an_echo_ledger_without_source_times(sqlite_path: Path) -> None:
    from syncrecon.storage.sqlite import _migrations, _statements

    conn = sqlite3.connect(sqlite_path)
    for version, script in _migrations():
        if version <= 8:
            for statement in _statements(script):
                conn.execute(statement)
    conn.execute(
        "INSERT INTO echoes (sync, side, key, field, fingerprint, expires_at)"
        " VALUES ('deals', 'right', 'R1', 'notes', 'f1', '2026-01-05T10:30:00.000000Z')"
    )
    conn.execute("PRAGMA user_version = 8")
    conn.commit()
    conn.close()
    store = SQLiteStorage(sqlite_path)
    try:
        store.setup()
        assert store.schema_version() >= 9
        old = store.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT)
        assert old is not None  # still an echo
        assert store.echo_times(SYNC, [(Side.RIGHT, "R1")], AT) == {}  # but it times nothing
        commit(store, drop_echoes=[old])
        assert store.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT) is None
    finally:
        store.close()


# -- record claims shared by cycles and fast-loop workers -------------------------------------

CLAIM_AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
CLAIM_LEASE = timedelta(seconds=45)


def _record_event(record: str, n: int) -> InboxEntry:
    return InboxEntry(
        source="crm",
        dedupe_key=f"{record}#{n}",
        event={"n": n},
        received_at=CLAIM_AT,
        record=record,
    )


def test_a_cycle_claims_only_records_no_worker_holds(storage: Storage) -> None:
    storage.enqueue_events(
        [_record_event("d:left:h1", 1), _record_event("d:left:h2", 1)], [], CLAIM_AT
    )
    held = storage.claim_events("worker", limit=1, now=CLAIM_AT, lease=CLAIM_LEASE)
    assert {e.record for e in held} == {"d:left:h1"}
    granted = storage.claim_records(
        "cycle", ["d:left:h1", "d:left:h2", "d:right:s1"], now=CLAIM_AT, lease=CLAIM_LEASE
    )
    assert granted == {"d:left:h2", "d:right:s1"}  # h1 is the worker's until it commits
    # Now the worker gets nothing of the cycle's records, and another cycle nothing at all.
    assert storage.claim_events("worker", limit=10, now=CLAIM_AT, lease=CLAIM_LEASE) == held
    assert storage.claim_records("other", ["d:left:h2"], now=CLAIM_AT, lease=CLAIM_LEASE) == set()
    # Released, the record's events go to a worker again.
    storage.release_records("cycle", ["d:left:h2", "d:right:s1"])
    later = storage.claim_events("worker2", limit=10, now=CLAIM_AT, lease=CLAIM_LEASE)
    assert {e.record for e in later} == {"d:left:h2"}


def test_a_record_claim_expires_and_is_only_released_by_its_owner(storage: Storage) -> None:
    assert storage.claim_records("a", ["r1"], now=CLAIM_AT, lease=CLAIM_LEASE) == {"r1"}
    storage.release_records("b", ["r1"])  # not b's to release
    assert storage.claim_records("b", ["r1"], now=CLAIM_AT, lease=CLAIM_LEASE) == set()
    assert storage.claim_records("a", ["r1"], now=CLAIM_AT, lease=CLAIM_LEASE) == {"r1"}  # renew
    after = CLAIM_AT + CLAIM_LEASE + timedelta(seconds=1)
    assert storage.claim_records("b", ["r1"], now=after, lease=CLAIM_LEASE) == {"r1"}
    assert storage.claim_records("a", [], now=after, lease=CLAIM_LEASE) == set()


def test_many_records_claimed_in_one_call(storage: Storage) -> None:
    records = [f"d:left:k{i}" for i in range(1_200)]
    assert storage.claim_records("c", records, now=CLAIM_AT, lease=CLAIM_LEASE) == set(records)
    storage.release_records("c", records)
    assert storage.claim_records("d", records[:3], now=CLAIM_AT, lease=CLAIM_LEASE) == set(
        records[:3]
    )


def test_items_page_by_keyset_and_filter_by_resolution(storage: Storage) -> None:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    items = [
        Discrepancy(
            sync="d", field=f"f{i}", status=Status.ESCALATED,
            detected_at=at + timedelta(minutes=i // 2),
            left_key=f"h{i}", right_key=f"s{i}", left_value=i, right_value=-i,
        )
        for i in range(25)
    ]  # fmt: skip
    ids = storage.commit(Step(at=at, new_items=items))
    pages, before = [], None
    while True:
        page = storage.list_items(sync="d", limit=7, before=before)
        pages.append(page)
        if len(page) < 7:
            break
        before = (page[-1].detected_at, page[-1].id)
    walked = [i.id for page in pages for i in page]
    assert walked == [i.id for i in storage.list_items(sync="d", limit=100)]
    assert sorted(walked) == sorted(ids)  # each once, equal detection times included
    closed_at = at + timedelta(hours=5)
    storage.commit(
        Step(
            at=closed_at,
            item_updates=[
                ItemUpdate(id=ids[3], status=Status.RESOLVED, resolved_at=closed_at),
                ItemUpdate(id=ids[4], status=Status.RESOLVED, resolved_at=at + timedelta(hours=1)),
            ],
        )
    )
    recent = storage.list_items(sync="d", resolved_since=at + timedelta(hours=2))
    assert [i.id for i in recent] == [ids[3]]
