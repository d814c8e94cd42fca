"""The :class:`~syncrecon.storage.QueueStore` contract: queue items, their merging and updates.

Every backend passes the same tests (the ``storage`` fixture).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from storage_helpers import AT, HOSTILE, SYNC, commit, item, link, snapshot

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


# -- pages, counts, search and facets ------------------------------------------------------------


@pytest.fixture
def crowd(storage: Storage) -> dict[str, int]:
    """Items to page, count and search: assignees, values of every kind, two syncs."""
    specs: list[tuple[str, dict[str, Any]]] = [
        ("amount", {"left_value": Decimal("1250.50"), "right_value": 1200, "assignee": "ada"}),
        ("stage", {"left_value": "Closed Won", "right_value": "closed won ", "assignee": "bea"}),
        ("close", {"left_value": date(2026, 8, 22), "right_value": None, "has_base": True,
                   "base_value": date(2026, 8, 1)}),
        ("touched", {"left_value": datetime(2026, 8, 22, 14, 30, tzinfo=UTC),
                     "right_value": datetime(2026, 8, 22, 16, 30, tzinfo=UTC)}),
        ("tags", {"left_value": ["vip", "Zürich"], "right_value": [], "assignee": ""}),
        ("*", {"right": None, "category": "possible_duplicate",
               "explanation": "natural key 'ÄDA@example.com' matches several records"}),
        ("notes", {"sync": "other", "left_value": "Straße", "right_value": "STRASSE",
                   "category": "unresolved_conflict", "assignee": "ada"}),
    ]  # fmt: skip
    ids: dict[str, int] = {}
    for minute, (name, kw) in enumerate(specs):
        at = AT + timedelta(minutes=minute)
        kw = {"status": Status.ESCALATED, "category": "deal_value", **kw}
        left = kw.pop("left", f"L-{name}")
        right = kw.pop("right", f"R-{name}")
        field = "*" if name == "*" else name
        (ids[name],) = commit(
            storage, at=at, new_items=[item(field, left, right, detected_at=at, **kw)]
        )
    # One closed item, and an assignee set by an update (not by the new item).
    commit(
        storage, item_updates=[ItemUpdate(id=ids["close"], status=Status.ESCALATED, assignee="cy")]
    )
    (ids["gone"],) = commit(
        storage,
        at=AT + timedelta(minutes=30),
        new_items=[item("gone", "L-gone", "R-gone", detected_at=AT + timedelta(minutes=30))],
    )
    commit(storage, item_updates=[ItemUpdate(id=ids["gone"], status=Status.DISMISSED)])
    return ids


ACTIVE = [Status.ESCALATED, Status.OPEN]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["gone", "notes", "*", "tags", "touched", "close", "stage", "amount"]),
        ({"statuses": ACTIVE}, ["notes", "*", "tags", "touched", "close", "stage", "amount"]),
        ({"assignee": "ada"}, ["notes", "amount"]),
        ({"assignee": "cy"}, ["close"]),
        ({"assignee": "nobody"}, []),
        ({"unassigned": True, "statuses": ACTIVE}, ["*", "tags", "touched"]),
        ({"unassigned": True, "sync": SYNC}, ["gone", "*", "tags", "touched"]),
        ({"assignee": "ada", "sync": "other"}, ["notes"]),
        # search: keys, field, category, explanation, values as a person reads them; any case
        ({"search": "l-stage"}, ["stage"]),
        ({"search": "R-TAGS"}, ["tags"]),
        ({"search": "touch"}, ["touched"]),
        ({"search": "POSSIBLE_dup"}, ["*"]),
        ({"search": "äda@EXAMPLE"}, ["*"]),
        ({"search": "matches several"}, ["*"]),
        ({"search": "1250.50"}, ["amount"]),
        ({"search": "2026-08-22"}, ["touched", "close"]),
        ({"search": "2026-08-22 16:30"}, ["touched"]),
        ({"search": "2026-08-01"}, ["close"]),  # the base value
        ({"search": "closed won"}, ["stage"]),
        ({"search": '"closed won "'}, ["stage"]),  # text is quoted: an exact value
        ({"search": "zürich"}, ["tags"]),
        ({"search": "strasse"}, ["notes"]),  # case folding: Straße is STRASSE
        ({"search": "(blank)", "statuses": ACTIVE}, ["close"]),
        ({"search": "(none)"}, ["tags"]),
        ({"search": "unresolved", "sync": SYNC}, []),
        ({"search": "   "}, ["gone", "notes", "*", "tags", "touched", "close", "stage", "amount"]),
        ({"search": "'); DROP TABLE items; --"}, []),
        ({"search": "%"}, []),
        ({"search": "_"}, ["notes", "*", "tags", "touched", "close", "stage", "amount"]),
        ({"search": "l_amount"}, []),  # a literal underscore, not a wildcard
        ({"key": "L-amount", "sync": SYNC}, ["amount"]),
        ({"key": "L-amount", "sync": "other"}, []),
    ],
    ids=str,
)
def test_list_and_count_items_filter_alike(
    storage: Storage, crowd: dict[str, int], filters: dict[str, Any], expected: list[str]
) -> None:
    assert _names(storage.list_items(**filters), crowd) == expected
    assert storage.count_items(**filters) == len(expected)
    oldest = storage.list_items(**filters, order="oldest")
    assert _names(oldest, crowd) == expected[::-1]


def test_pages_by_offset_in_both_orders(storage: Storage, crowd: dict[str, int]) -> None:
    newest = _names(storage.list_items(statuses=ACTIVE), crowd)
    pages = [
        _names(storage.list_items(statuses=ACTIVE, limit=3, offset=o), crowd) for o in (0, 3, 6)
    ]
    assert [n for page in pages for n in page] == newest
    assert pages[-1] == [newest[-1]]
    oldest = [
        n
        for o in (0, 3, 6)
        for n in _names(
            storage.list_items(statuses=ACTIVE, order="oldest", limit=3, offset=o), crowd
        )
    ]
    assert oldest == newest[::-1]
    assert storage.list_items(statuses=ACTIVE, offset=7) == []
    assert storage.count_items(statuses=ACTIVE) == 7
    with pytest.raises(ValueError, match="order"):
        storage.list_items(order="sideways")  # type: ignore[arg-type]


def test_same_time_items_keep_their_id_order_both_ways(storage: Storage) -> None:
    ids = commit(storage, new_items=[item("a"), item("b"), item("c")])
    assert [i.id for i in storage.list_items(order="oldest")] == ids
    assert [i.id for i in storage.list_items(order="newest")] == ids[::-1]


def test_the_keyset_cursor_filters_in_either_order(storage: Storage, crowd: dict[str, int]) -> None:
    touched = storage.get_item(crowd["touched"])
    cursor = (touched.detected_at, crowd["touched"])
    assert _names(storage.list_items(before=cursor, order="oldest"), crowd) == [
        "amount", "stage", "close",
    ]  # fmt: skip
    assert storage.count_items(before=cursor) == 3


def test_count_items_by_status_and_resolution(storage: Storage, crowd: dict[str, int]) -> None:
    assert storage.count_items() == 8
    assert storage.count_items(statuses=[Status.DISMISSED]) == 1
    assert storage.count_items(statuses=[Status.RESOLVED]) == 0
    assert storage.count_items(sync="nope") == 0
    assert storage.count_items(category="deal_value", statuses=ACTIVE) == 5
    assert storage.count_items(field="*") == 1
    assert storage.count_items(resolved_since=AT) == 0


def test_a_search_follows_an_items_new_values(storage: Storage) -> None:
    (i,) = commit(storage, new_items=[item(left_value="first", right_value="x")])
    assert storage.count_items(search="first") == 1
    commit(storage, new_items=[item(left_value="second", right_value="x", explanation="again")])
    assert storage.count_items(search="first") == 0
    assert [x.id for x in storage.list_items(search="SECOND")] == [i]
    assert storage.count_items(search="again") == 1


@pytest.mark.parametrize("text", HOSTILE)
def test_a_search_is_data(storage: Storage, text: str) -> None:
    (i,) = commit(storage, new_items=[item(left_value=f"<{text}>")])
    commit(storage, new_items=[item("other", left_value="plain")])
    found = [x.id for x in storage.list_items(search=f"<{text}>")]
    assert found == [i]
    assert storage.count_items(search=text) >= (1 if text.strip() else 2)
    assert len(storage.list_items()) == 2  # nothing dropped


def test_item_facets_name_what_the_active_items_hold(
    storage: Storage, crowd: dict[str, int]
) -> None:
    assert storage.item_facets() == {
        "sync": ["deals", "other"],
        "category": ["deal_value", "possible_duplicate", "unresolved_conflict"],
        "field": ["*", "amount", "close", "notes", "stage", "tags", "touched"],
        "assignee": ["ada", "bea", "cy"],
    }  # "gone" is dismissed: not among them
    assert storage.item_facets(sync="other") == {
        "sync": ["other"],
        "category": ["unresolved_conflict"],
        "field": ["notes"],
        "assignee": ["ada"],
    }
    assert storage.item_facets(sync="nope") == {
        "sync": [], "category": [], "field": [], "assignee": [],
    }  # fmt: skip


def test_sqlite_gives_items_stored_before_search_their_search_text(sqlite_path: Any) -> None:
    """Version 12 added the search text: items written by an older syncrecon get theirs."""
    import sqlite3

    from syncrecon.storage.sqlite import SQLiteStorage, _migrations, _statements

    db = sqlite3.connect(sqlite_path, isolation_level=None)
    for version, script in _migrations():
        if version < 12:
            for statement in _statements(script):
                db.execute(statement)
    db.execute("PRAGMA user_version = 11")
    for n in range(1500):  # more than one batch of the backfill
        db.execute(
            "INSERT INTO items (sync, left_key, right_key, field, status, left_value,"
            " right_value, explanation, detected_at, updated_at) VALUES"
            " (?, ?, ?, ?, 'escalated', ?, ?, ?, ?, ?)",
            (SYNC, f"L{n}", f"R{n}", "amount", '{"$decimal":"1250.50"}', str(n),
             "Edited on both sides", "2026-01-05T10:15:00.000000Z",
             "2026-01-05T10:15:00.000000Z"),
        )  # fmt: skip
    db.close()
    storage = SQLiteStorage(sqlite_path)
    storage.setup()
    assert storage.schema_version() >= 12
    assert storage.count_items(search="1250.50") == 1500
    assert storage.count_items(search="EDITED ON") == 1500
    assert [i.left_key for i in storage.list_items(search="r1499")] == ["L1499"]
    storage.close()
