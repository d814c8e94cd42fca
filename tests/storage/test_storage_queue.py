"""The :class:`~syncrecon.storage.QueueStore` contract: queue items, their merging and updates.

Every backend passes the same tests (the ``storage`` fixture).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from storage_helpers import AT, SYNC, commit, item, link, snapshot

from syncrecon import StorageError
from syncrecon.storage import Counter, Discrepancy, ItemUpdate, Status, Step, Storage

T0 = datetime(2026, 5, 1, tzinfo=UTC)


# -- items ----------------------------------------------------------------------------------------


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


def test_an_escalation_is_never_lowered_by_an_open_sighting(storage: Storage) -> None:
    (first,) = commit(
        storage,
        new_items=[item(status=Status.ESCALATED, rule="escalate", category="amount", note="n")],
    )
    later = AT + timedelta(hours=1)
    (again,) = commit(
        storage,
        at=later,
        new_items=[item(left_value="new", rule="fast_loop", category=None, cycle_id="c2")],
    )
    assert again == first
    got = storage.get_item(first)
    assert (got.status, got.rule, got.category) == (Status.ESCALATED, "escalate", "amount")
    assert (got.left_value, got.cycle_id, got.note) == ("new", "c2", "n")
    assert (got.times_seen, got.detected_at, got.updated_at) == (2, AT, later)
    assert list(storage.active_items(SYNC).values()) == [got]


def test_a_first_sighting_counts_once_and_each_sighting_adds_one(storage: Storage) -> None:
    # ``times_seen`` is the storage's count, whatever the new item says.
    (i,) = commit(storage, new_items=[item(times_seen=5)])
    assert storage.get_item(i).times_seen == 1
    commit(storage, new_items=[item(times_seen=5)])
    commit(storage, new_items=[item(times_seen=5)])
    assert storage.get_item(i).times_seen == 3


# -- status updates -------------------------------------------------------------------------------


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


def test_assignee_is_set_kept_and_cleared(storage: Storage) -> None:
    item = Discrepancy(
        sync="s",
        field="f",
        status=Status.ESCALATED,
        detected_at=T0,
        left_key="l1",
        right_key="r1",
        category="money",
    )
    (item_id,) = storage.commit(Step(at=T0, new_items=[item]))
    storage.commit(
        Step(at=T0, item_updates=[ItemUpdate(id=item_id, status=Status.ESCALATED, assignee="ada")])
    )
    assert storage.get_item(item_id).assignee == "ada"
    storage.commit(
        Step(
            at=T0,
            item_updates=[ItemUpdate(id=item_id, status=Status.ESCALATED, note="looked at it")],
        )
    )
    assert storage.get_item(item_id).assignee == "ada"
    assert storage.get_item(item_id).note == "looked at it"
    storage.commit(
        Step(at=T0, item_updates=[ItemUpdate(id=item_id, status=Status.ESCALATED, assignee="")])
    )
    assert storage.get_item(item_id).assignee is None


# -- listing --------------------------------------------------------------------------------------


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
