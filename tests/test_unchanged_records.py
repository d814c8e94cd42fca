"""The cheap steady cycle: unchanged records are known by their marks, not by their bases.

A cycle that finds a linked record equal to its base leaves a mark on the link (a digest of
the record's mapped values, salted with the mapping, and its modification time). Between full
sweeps the next cycle takes a record not modified since as unchanged; a full sweep compares
the digest. These tests pin what must still be found: every real change, a change that did
not move the modification time (at the next full sweep), a changed mapping (at once), and a
pair decided when only one of its records changed.
"""

from __future__ import annotations

from typing import Any

import pytest

from syncrecon import (
    FieldMap,
    NaturalKey,
    Reconciler,
    RetrySettings,
    Side,
    SyncDefinition,
    Transform,
    escalate,
    merge,
    recency,
    source_of_truth,
    value_map,
)
from syncrecon._models import Page
from syncrecon.storage import BaseUpdate, Link, SeenMark, Step, Storage
from syncrecon.testing import ManualClock, SimulatedSystem

HOUR = 3600


def _systems(clock: ManualClock, count: int = 5) -> tuple[SimulatedSystem, SimulatedSystem]:
    left = SimulatedSystem("crm", clock=clock, key_prefix="l")
    right = SimulatedSystem("billing", clock=clock, key_prefix="r")
    for i in range(count):
        left.create({"email": f"u{i}@x.com", "stage": "open", "tags": ["a"], "amount": i})
        right.create({"email": f"u{i}@x.com", "Stage": "Open", "Tags": ["a"], "Amount": i})
    return left, right


def _fields(stage_policy: Any = None) -> list[FieldMap]:
    return [
        FieldMap(
            left="stage",
            right="Stage",
            policy=stage_policy or recency(),
            transform=value_map({"open": "Open", "won": "Won", "lost": "Lost"}),
        ),
        FieldMap(left="tags", right="Tags", policy=merge()),
        FieldMap(left="amount", right="Amount", policy=escalate()),
    ]


def _rec(
    left: SimulatedSystem,
    right: SimulatedSystem,
    storage: Storage,
    clock: ManualClock,
    fields: list[FieldMap] | None = None,
    **kw: Any,
) -> Reconciler:
    sync = SyncDefinition(
        name="deals",
        left=left,
        right=right,
        fields=fields or _fields(),
        natural_key=NaturalKey(left="email", right="email"),
        **kw,
    )
    return Reconciler(sync, storage, clock=clock, retry=RetrySettings(sleep=clock.advance))


def _linked(storage: Storage, clock: ManualClock, count: int = 5) -> tuple[Any, Any, Reconciler]:
    """Two systems whose records predate the first cycle, linked and marked by it."""
    left, right = _systems(clock, count)
    clock.advance(HOUR)
    rec = _rec(left, right, storage, clock)
    first = rec.run_cycle()
    assert first.new_links == count
    clock.advance(HOUR)
    return left, right, rec


def test_the_first_cycle_marks_the_records_it_links_and_the_next_skips_them_by_time(
    storage: Storage, clock: ManualClock
) -> None:
    _left, _right, rec = _linked(storage, clock)
    report = rec.run_cycle()
    assert report.unchanged == {"modification_time": 10}
    assert report.discrepancies_found == 0
    assert report.total_writes == 0
    assert "records unchanged: by modification time 10" in str(report)


def test_a_full_sweep_compares_digests_not_times(storage: Storage, clock: ManualClock) -> None:
    _left, _right, rec = _linked(storage, clock)
    assert rec.run_cycle(full=True).unchanged == {"digest": 10}
    clock.advance(25 * HOUR)  # past full_sweep_every (24 h): the next cycle is a full sweep
    assert rec.run_cycle().unchanged == {"digest": 10}
    clock.advance(HOUR)
    assert rec.run_cycle().unchanged == {"modification_time": 10}


def test_an_edit_on_one_side_is_found_and_written_while_the_rest_is_skipped(
    storage: Storage, clock: ManualClock
) -> None:
    left, right, rec = _linked(storage, clock)
    left.edit("l1", stage="won")
    right.edit("r2", Tags=["a", "b"])
    clock.advance(60)
    report = rec.run_cycle()
    # l1 changed, so r1 is read in full (its own values are written against); r2 changed, and
    # l2 was staged before it as unchanged: its values are its base, so it needs no reading.
    assert report.unchanged == {"modification_time": 7}
    assert report.writes == {"left": 1, "right": 1}
    assert right.get("r1").fields["Stage"] == "Won"  # in the right system's vocabulary
    assert left.get("l2").fields["tags"] == ["a", "b"]
    clock.advance(HOUR)
    again = rec.run_cycle()
    assert again.total_writes == 0
    assert again.discrepancies_found == 0


def test_a_right_edit_against_an_unchanged_left_source_of_truth_is_reverted(
    storage: Storage, clock: ManualClock
) -> None:
    left, right = _systems(clock)
    clock.advance(HOUR)
    rec = _rec(left, right, storage, clock, fields=_fields(source_of_truth("left")))
    rec.run_cycle()
    clock.advance(HOUR)
    right.edit("r3", Stage="Lost")
    report = rec.run_cycle()
    assert report.unchanged.get("modification_time") == 9  # l3 itself was skipped by time
    assert right.get("r3").fields["Stage"] == "Open"  # the unchanged source's value, restored
    assert report.writes == {"left": 0, "right": 1}


def test_a_value_changed_without_moving_the_time_is_found_by_the_next_full_sweep(
    storage: Storage, clock: ManualClock
) -> None:
    left, right, rec = _linked(storage, clock)
    left.edit_unstamped("l4", stage="won")
    between = rec.run_cycle()
    assert between.discrepancies_found == 0  # trusted its time: the documented trade-off
    assert right.get("r4").fields["Stage"] == "Open"
    clock.advance(25 * HOUR)
    sweep = rec.run_cycle()
    assert sweep.unchanged == {"digest": 8}
    assert right.get("r4").fields["Stage"] == "Won"


def test_a_changed_mapping_compares_every_record_again(
    storage: Storage, clock: ManualClock
) -> None:
    left, right, _rec1 = _linked(storage, clock)
    # The same fields, but "open" now maps to another right value: the mapping's fingerprint
    # moves, so no mark is trusted and every record is compared (and the change synced).
    fields = _fields()
    fields[0] = FieldMap(
        left="stage",
        right="Stage",
        policy=source_of_truth("left"),
        transform=value_map({"open": "Opened", "won": "Won", "lost": "Lost"}),
    )
    rec = _rec(left, right, storage, clock, fields=fields)
    report = rec.run_cycle()
    assert report.unchanged == {}
    assert report.writes["right"] == 5
    assert right.get("r1").fields["Stage"] == "Opened"


def test_a_new_mapped_field_is_synced_at_once_not_at_the_next_full_sweep(
    storage: Storage, clock: ManualClock
) -> None:
    left, right, _rec1 = _linked(storage, clock)
    for i in range(1, 6):
        left.edit_unstamped(f"l{i}", owner="ann")
        right.edit_unstamped(f"r{i}", Owner=None)
    rec = _rec(
        left,
        right,
        storage,
        clock,
        fields=[*_fields(), FieldMap(left="owner", right="Owner", policy=source_of_truth("left"))],
    )
    report = rec.run_cycle()
    assert report.unchanged == {}
    assert right.get("r5").fields["Owner"] == "ann"


def test_a_transform_with_other_captured_values_is_another_mapping(
    storage: Storage, clock: ManualClock
) -> None:
    from syncrecon._sync import mapping_fingerprint

    def sync(transform: Transform) -> SyncDefinition:
        left, right = _systems(clock, 1)
        return SyncDefinition(
            name="d",
            left=left,
            right=right,
            fields=[FieldMap(left="stage", right="Stage", policy=recency(), transform=transform)],
        )

    one = mapping_fingerprint(sync(value_map({"open": "Open"})))
    assert one == mapping_fingerprint(sync(value_map({"open": "Open"})))
    assert one != mapping_fingerprint(sync(value_map({"open": "Opened"})))
    assert one != mapping_fingerprint(sync(Transform()))


def test_an_escalated_pair_is_read_in_full_while_its_item_is_active(
    storage: Storage, clock: ManualClock
) -> None:
    left, right, rec = _linked(storage, clock)
    left.edit("l2", amount=100)  # escalate(): an operator decides
    clock.advance(60)
    first = rec.run_cycle()
    assert first.escalated == {"manual_review": 1}
    clock.advance(HOUR)
    second = rec.run_cycle()
    # l2 and r2 have an active item: never skipped, so the item is re-checked every cycle.
    assert second.unchanged == {"modification_time": 8}
    right.edit("r2", Amount=100)  # the systems converge by themselves
    clock.advance(60)
    third = rec.run_cycle()
    assert third.discrepancies_found == 0
    assert not storage.active_items("deals")


def test_a_deleted_left_record_is_propagated_though_its_right_record_was_skipped(
    storage: Storage, clock: ManualClock
) -> None:
    left, right = _systems(clock, 20)  # one deletion in 20 passes the mass-delete guard
    clock.advance(HOUR)
    rec = _rec(left, right, storage, clock, delete_from=Side.LEFT)
    rec.run_cycle()
    clock.advance(HOUR)
    left.delete("l3")
    report = rec.run_cycle()
    assert report.halted is None
    assert report.deleted == {"left": 0, "right": 1}
    with pytest.raises(KeyError):
        right.get("r3")


def test_a_dry_run_leaves_no_marks(storage: Storage, clock: ManualClock) -> None:
    left, right = _systems(clock)
    clock.advance(HOUR)
    rec = _rec(left, right, storage, clock)
    rec.run_cycle(dry_run=True)
    assert storage.link_marks("deals", Side.LEFT, ["l1"]) == {}  # nothing linked either
    rec.run_cycle()
    clock.advance(HOUR)
    rec.run_cycle(dry_run=True, full=True)  # would compare digests; refreshes nothing
    assert rec.run_cycle().unchanged == {"modification_time": 10}


def test_records_modified_just_before_a_cycle_are_compared_by_digest_next_time(
    storage: Storage, clock: ManualClock
) -> None:
    # A change in the same clock tick as the read could carry the same modification time, so a
    # record modified within ``overlap`` of the cycle's start gets no time in its mark.
    left, right = _systems(clock)
    rec = _rec(left, right, storage, clock)
    rec.run_cycle()
    clock.advance(HOUR)
    assert rec.run_cycle().unchanged == {"digest": 10}
    clock.advance(HOUR)
    assert rec.run_cycle().unchanged == {"modification_time": 10}


# -- the storage side of marks, on every backend -------------------------------------------


def _link(storage: Storage, clock: ManualClock, base: dict[str, Any]) -> None:
    storage.commit(
        Step(at=clock.now(), links=[Link(sync="s", left_key="L", right_key="R", base=base)])
    )


def _mark(storage: Storage, clock: ManualClock, **kw: Any) -> None:
    defaults: dict[str, Any] = {"sync": "s", "side": Side.LEFT, "left_key": "L", "seen": 5}
    storage.commit(Step(at=clock.now(), marks=[SeenMark(**{**defaults, **kw})]))


def test_storage_keeps_a_mark_only_for_the_base_it_was_checked_against(
    storage: Storage, clock: ManualClock
) -> None:
    from syncrecon import _codec

    _link(storage, clock, {"v": 1})
    _mark(storage, clock, digest="d-old-base", base=_codec.dumps({"v": 2}))
    assert storage.link_marks("s", Side.LEFT, ["L"])["L"].digest is None
    _mark(storage, clock, digest="d1", base=_codec.dumps({"v": 1}))
    _mark(storage, clock, side=Side.RIGHT, digest="d2", seen=None, base=_codec.dumps({"v": 1}))
    left = storage.link_marks("s", Side.LEFT, ["L", "nope"])
    right = storage.link_marks("s", Side.RIGHT, ["R"])
    assert set(left) == {"L"}
    assert tuple(left["L"]) == ("L", "R", None, 5, "d1")
    assert tuple(right["R"]) == ("L", "R", None, None, "d2")


def test_storage_refreshes_a_marks_time_only_while_its_digest_holds(
    storage: Storage, clock: ManualClock
) -> None:
    from syncrecon import _codec

    _link(storage, clock, {"v": 1})
    _mark(storage, clock, digest="d1", base=_codec.dumps({"v": 1}))
    _mark(storage, clock, digest="d1", seen=9)
    assert storage.link_marks("s", Side.LEFT, ["L"])["L"].seen == 9
    _mark(storage, clock, digest="other", seen=11)
    mark = storage.link_marks("s", Side.LEFT, ["L"])["L"]
    assert (mark.seen, mark.digest) == (9, "d1")


@pytest.mark.parametrize("how", ["base update", "link rewrite", "unlink"])
def test_storage_forgets_marks_when_the_base_is_written(
    storage: Storage, clock: ManualClock, how: str
) -> None:
    from syncrecon import _codec

    _link(storage, clock, {"v": 1})
    for side in Side:
        _mark(storage, clock, side=side, digest="d", base=_codec.dumps({"v": 1}))
    if how == "base update":
        step = Step(at=clock.now(), bases=[BaseUpdate(sync="s", left_key="L", values={"v": 2})])
    elif how == "link rewrite":
        step = Step(
            at=clock.now(),
            links=[Link(sync="s", left_key="L", right_key="R", base={"v": 1}, natural_key="n")],
        )
    else:
        step = Step(at=clock.now(), unlink=[("s", "L")])
    storage.commit(step)
    if how == "unlink":
        assert storage.link_marks("s", Side.LEFT, ["L"]) == {}
        _link(storage, clock, {"v": 1})  # linked again: no mark survives from before
    for side in Side:
        key = "L" if side is Side.LEFT else "R"
        assert storage.link_marks("s", side, [key])[key].digest is None
    # A mark that refreshes a forgotten one does not bring it back.
    _mark(storage, clock, digest="d", seen=99)
    assert storage.link_marks("s", Side.LEFT, ["L"])["L"].seen is None


def test_storage_lists_link_keys_in_batches(storage: Storage, clock: ManualClock) -> None:
    storage.commit(
        Step(
            at=clock.now(),
            links=[
                Link(sync="s", left_key=f"L{i:02}", right_key=f"R{i:02}", base={}) for i in range(7)
            ]
            + [Link(sync="other", left_key="X", right_key="Y")],
        )
    )
    batches = list(storage.iter_link_keys("s", batch=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [pair for b in batches for pair in b] == [(f"L{i:02}", f"R{i:02}") for i in range(7)]


class _ListedByTime(SimulatedSystem):
    """Lists by modification time, two per page: an edit during a listing lists a record twice."""

    def list_records(self, *, since: Any, cursor: str | None) -> Page:
        self._enter("list_records", cursor)
        start = int(cursor) if cursor else 0
        listing = sorted(self._records.values(), key=lambda r: (r.modified_at, r.key))
        more = start + 2 < len(listing)
        return Page(
            records=listing[start : start + 2], next_cursor=str(start + 2) if more else None
        )


def test_a_record_listed_twice_in_one_cycle_is_taken_as_last_read(
    storage: Storage, clock: ManualClock
) -> None:
    left = _ListedByTime("crm", clock=clock, key_prefix="l")
    right = SimulatedSystem("billing", clock=clock, key_prefix="r")
    for i in range(5):
        clock.advance(1)
        left.create({"email": f"u{i}@x.com", "stage": "open", "tags": ["a"], "amount": i})
        right.create({"email": f"u{i}@x.com", "Stage": "Open", "Tags": ["a"], "Amount": i})
    clock.advance(HOUR)
    rec = _rec(left, right, storage, clock)
    rec.verify_source = False  # no re-read of the source to catch it: the staging must
    rec.run_cycle()
    clock.advance(HOUR)
    left.edit("l1", stage="won")  # listed on the first page, as changed
    for key in ("l2", "l3", "l4", "l5"):
        clock.advance(1)
        left.edit(key, tags=["a"])  # same values, later times: l1 comes first

    def undo_after_the_first_page(cursor: object) -> None:
        if cursor == "2":
            clock.advance(1)
            left.edit("l1", stage="open")  # undone: l1 is listed again, last, as unchanged

    left.on_call("list_records", undo_after_the_first_page)
    clock.advance(60)
    report = rec.run_cycle()
    assert report.discrepancies_found == 0
    assert report.total_writes == 0
    assert right.get("r1").fields["Stage"] == "Open"


_LOOKUP = {"Open": "open"}


def _lookup_to_left(value: Any) -> Any:
    return _LOOKUP.get(value, value)


def _through_a_helper(value: Any) -> Any:
    return _lookup_to_left(value)


class _Table:
    def __init__(self, table: dict[str, str]) -> None:
        self.table = table

    def __call__(self, value: Any) -> Any:
        return self.table.get(value, value)


@pytest.mark.parametrize("to_left", [_lookup_to_left, _through_a_helper])
def test_a_changed_module_level_table_is_another_mapping(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch, to_left: Any
) -> None:
    from syncrecon._sync import mapping_fingerprint

    left, right = _systems(clock, 1)

    def sync() -> SyncDefinition:
        fm = FieldMap(
            left="stage", right="Stage", policy=recency(), transform=Transform(to_left=to_left)
        )
        return SyncDefinition(name="d", left=left, right=right, fields=[fm])

    before = mapping_fingerprint(sync())
    assert mapping_fingerprint(sync()) == before
    monkeypatch.setitem(_LOOKUP, "Open", "opened")
    assert mapping_fingerprint(sync()) != before


def test_a_callable_object_is_fingerprinted_by_its_state(clock: ManualClock) -> None:
    from syncrecon._sync import mapping_fingerprint

    left, right = _systems(clock, 1)

    def sync(table: dict[str, str]) -> SyncDefinition:
        fm = FieldMap(
            left="stage",
            right="Stage",
            policy=recency(),
            transform=Transform(to_left=_Table(table)),
        )
        return SyncDefinition(name="d", left=left, right=right, fields=[fm])

    assert mapping_fingerprint(sync({"Open": "open"})) == mapping_fingerprint(
        sync({"Open": "open"})
    )
    assert mapping_fingerprint(sync({"Open": "open"})) != mapping_fingerprint(
        sync({"Open": "opened"})
    )
