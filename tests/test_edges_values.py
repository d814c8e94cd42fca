"""Absent is not blank; values that do not fit; entries that are not records; connector bugs.

Each test reproduces a failure seen when the library was tried with sloppy connector data
("Correct at the edges", sections 3 and 4): it failed before the fix and passes after.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs
import pytest

from syncrecon import (
    ConnectorBugError,
    FieldInfo,
    FieldMap,
    NaturalKey,
    Page,
    Reconciler,
    Record,
    RetrySettings,
    Status,
    SyncDefinition,
    escalate,
    merge,
    recency,
    source_of_truth,
)
from syncrecon.storage import Storage
from syncrecon.testing import ManualClock, SimulatedSystem


class Omitting(SimulatedSystem):
    """A system whose answers leave out some fields (a partial response, nulls omitted).

    ``omit_listed`` fields are missing from listings only; ``omit_always`` from every answer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.omit_listed: set[str] = set()
        self.omit_always: set[str] = set()

    def _strip(self, record: Record, names: set[str]) -> Record:
        if not names:
            return record
        return attrs.evolve(
            record, fields={k: v for k, v in record.fields.items() if k not in names}
        )

    def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        page = super().list_records(since=since, cursor=cursor)
        names = self.omit_listed | self.omit_always
        return Page(
            records=[self._strip(r, names) for r in page.records], next_cursor=page.next_cursor
        )

    def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        return [self._strip(r, self.omit_always) for r in super().read_records(keys)]


FIELDS = [
    FieldMap(left="notes", right="notes", policy=recency()),
    FieldMap(left="stage", right="stage", policy=source_of_truth("left")),
    FieldMap(left="tags", right="tags", policy=merge()),
    FieldMap(left="amount", right="amount", policy=escalate("money")),
]


def _setup(
    clock: ManualClock, storage: Storage, **left_kw: Any
) -> tuple[Omitting, SimulatedSystem, Reconciler]:
    left = Omitting("crm", clock=clock, key_prefix="l", **left_kw)
    right = SimulatedSystem("billing", clock=clock, key_prefix="r")
    sync = SyncDefinition(
        name="deals",
        left=left,
        right=right,
        fields=FIELDS,
        natural_key=NaturalKey(left="email", right="email"),
    )
    rec = Reconciler(sync, storage, clock=clock, retry=RetrySettings(sleep=lambda s: None))
    return left, right, rec


def _linked_pair(
    clock: ManualClock, storage: Storage, n: int = 3, **left_kw: Any
) -> tuple[Omitting, SimulatedSystem, Reconciler]:
    left, right, rec = _setup(clock, storage, **left_kw)
    for i in range(n):
        values = {"notes": f"n{i}", "stage": "open", "tags": ["a"], "amount": 10}
        left.create({"email": f"p{i}@x.com", **values})
        right.create({"email": f"p{i}@x.com", **values})
    first = rec.run_cycle()
    assert first.new_links == n
    assert first.total_writes == 0
    return left, right, rec


# -- 3. A missing field is not a blank value ----------------------------------------------------


def test_a_field_absent_from_every_answer_is_never_written_as_blank(
    storage: Storage, clock: ManualClock
) -> None:
    left, right, rec = _linked_pair(clock, storage)
    clock.advance(60)
    left.edit("l1", notes="newer on the left")  # a real change still syncs
    left.omit_always = {"stage"}  # the source of truth: absent would have erased the right side
    report = rec.run_cycle()
    assert [r.fields["stage"] for r in right.records().values()] == ["open"] * 3
    assert right.get("r1").fields["notes"] == "newer on the left"
    assert report.writes == {"left": 0, "right": 1}
    assert report.unknown_fields == 3  # one per linked record: not decided
    assert report.partial_records == {"crm": 3}  # still partial after one read by key
    items = storage.list_items(sync="deals", field="stage")
    assert items == []  # nothing was "auto-resolved" to blank
    assert rec.run_cycle().total_writes == 0


def test_a_field_absent_from_a_listing_is_read_again_by_key_once(
    storage: Storage, clock: ManualClock
) -> None:
    left, right, rec = _linked_pair(clock, storage)
    clock.advance(60)
    left.edit("l2", stage="won")
    left.omit_listed = {"stage", "notes"}  # the listing is partial, a read by key is whole
    calls_before = left.calls.get("read_records", 0)
    report = rec.run_cycle()
    assert right.get("r2").fields["stage"] == "won"  # decided on the re-read value
    assert right.get("r1").fields["notes"] == "n0"
    # One batch re-reads the three partial records; one more re-reads the source of the
    # write to the right just before it (verify_source).
    assert left.calls["read_records"] - calls_before == 2
    assert report.unknown_fields == 0
    assert report.partial_records == {}


def test_an_explicit_none_is_blank_and_is_synced(storage: Storage, clock: ManualClock) -> None:
    left, right, rec = _linked_pair(clock, storage)
    clock.advance(60)
    left.edit("l1", stage=None)
    rec.run_cycle()
    assert right.get("r1").fields["stage"] is None


def test_a_create_never_writes_blanks_for_absent_fields(
    storage: Storage, clock: ManualClock
) -> None:
    left = Omitting("crm", clock=clock, key_prefix="l")
    right = SimulatedSystem("billing", clock=clock, key_prefix="r")
    sync = SyncDefinition(
        name="deals",
        left=left,
        right=right,
        fields=FIELDS,
        natural_key=NaturalKey(left="email", right="email"),
        create_on=["right"],
    )
    rec = Reconciler(sync, storage, clock=clock)
    left.create({"email": "a@x.com", "notes": "hi", "stage": "open", "tags": [], "amount": 1})
    left.omit_always = {"notes"}
    rec.run_cycle()
    (created,) = right.records().values()
    assert "notes" not in created.fields
    assert created.fields["stage"] == "open"


# -- 4. Values that do not fit, and records that are not records ------------------------------


def _escalations(storage: Storage, category: str) -> list[Any]:
    return storage.list_items(sync="deals", category=category, statuses=[Status.ESCALATED])


def test_a_string_in_a_merged_list_field_is_held_and_escalated_once(
    storage: Storage, clock: ManualClock
) -> None:
    left, right, rec = _linked_pair(clock, storage)
    clock.advance(60)
    left.edit("l1", tags="vip,eu", notes="still syncs")
    left.edit("l2", tags=["a", "b"])
    report = rec.run_cycle()
    assert right.get("r1").fields["tags"] == ["a"]  # not propagated as is
    assert right.get("r1").fields["notes"] == "still syncs"  # the record's other fields sync
    assert right.get("r2").fields["tags"] == ["a", "b"]  # other records sync
    assert report.escalated == {"invalid_value": 1}
    (item,) = _escalations(storage, "invalid_value")
    assert (item.left_key, item.right_key, item.field) == ("l1", "r1", "tags")
    assert "crm record 'l1'" in item.explanation
    assert "'tags'" in item.explanation
    assert "str" in item.explanation
    again = rec.run_cycle()  # the same bad value is not escalated again
    assert again.escalated == {}
    assert len(_escalations(storage, "invalid_value")) == 1
    assert again.total_writes == 0


def test_bytes_do_not_abort_the_cycle(storage: Storage, clock: ManualClock) -> None:
    left, right, rec = _linked_pair(clock, storage)
    clock.advance(60)
    left.edit("l3", notes=b"\x00\x01binary")
    left.edit("l1", notes="fine")
    report = rec.run_cycle()
    assert right.get("r1").fields["notes"] == "fine"
    assert right.get("r3").fields["notes"] == "n2"
    (item,) = _escalations(storage, "invalid_value")
    assert item.field == "notes"
    assert "bytes" in item.explanation
    assert "crm record 'l3'" in item.explanation
    assert report.escalated == {"invalid_value": 1}


def test_a_value_that_does_not_fit_its_described_type_is_held(
    storage: Storage, clock: ManualClock
) -> None:
    described = [FieldInfo(name="amount", type="number"), FieldInfo(name="stage", type="string")]
    left, right, rec = _linked_pair(clock, storage, fields=described)
    clock.advance(60)
    left.edit("l3", stage={"nested": "object"}, notes="ok")
    rec.run_cycle()
    assert right.get("r3").fields["stage"] == "open"
    assert right.get("r3").fields["notes"] == "ok"
    (item,) = _escalations(storage, "invalid_value")
    assert item.field == "stage"
    assert "'string'" in item.explanation


class Sloppy(SimulatedSystem):
    """Listings that carry entries that are not records."""

    junk: list[Any]

    def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        page = super().list_records(since=since, cursor=cursor)
        return Page(records=[*page.records, *self.junk], next_cursor=page.next_cursor)


def _bad_key(key: Any) -> Record:
    record = Record(key="placeholder", fields={"email": "zz@x.com"})
    object.__setattr__(record, "key", key)  # what a buggy connector's own class might do
    return record


@pytest.mark.parametrize("junk", [_bad_key(None), _bad_key(42), {"key": "l9", "fields": {}}])
def test_an_entry_that_is_not_a_record_is_skipped_and_escalated(
    storage: Storage, clock: ManualClock, junk: Any
) -> None:
    left = Sloppy("crm", clock=clock, key_prefix="l")
    left.junk = [junk]
    right = SimulatedSystem("billing", clock=clock, key_prefix="r")
    sync = SyncDefinition(
        name="deals",
        left=left,
        right=right,
        fields=FIELDS,
        natural_key=NaturalKey(left="email", right="email"),
        create_on=["right"],
    )
    left.create({"email": "a@x.com", "notes": "hi", "stage": "open", "tags": [], "amount": 1})
    rec = Reconciler(sync, storage, clock=clock)
    report = rec.run_cycle()
    assert len(right) == 1  # the valid record was still created
    assert report.invalid_records == {"crm": 1}
    (item,) = _escalations(storage, "invalid_record")
    assert "crm.list_records returned" in item.explanation
    assert rec.run_cycle().escalated == {}  # escalated once


def test_a_record_key_that_is_not_text_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"Record.key must be a non-empty str, got None"):
        Record(key=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got 42 \(int\)"):
        Record(key=42)  # type: ignore[arg-type]


def test_a_connector_bug_in_a_write_is_not_retried_and_is_logged(
    storage: Storage, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    left, right, rec = _linked_pair(clock, storage)
    clock.advance(60)
    left.edit("l1", notes="new")
    right.fail_next("write_records", TypeError("'NoneType' object is not subscriptable"))
    before = right.calls.get("write_records", 0)
    report = rec.run_cycle()
    assert right.calls["write_records"] - before == 1  # not retried as a network failure
    assert report.write_failures == 1
    (item,) = storage.list_items(sync="deals", field="notes", statuses=[Status.OPEN])
    assert "ConnectorBugError" in (item.note or "")
    assert "rejected" in (item.note or "")
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert any("billing.write_records failed for r1" in r.getMessage() for r in logged)


def test_a_connector_bug_in_a_listing_is_one_clear_error(
    storage: Storage, clock: ManualClock
) -> None:
    left, _right, rec = _linked_pair(clock, storage)
    left.fail_next("list_records", AttributeError("'dict' object has no attribute 'key'"))
    before = left.calls["list_records"]
    with pytest.raises(ConnectorBugError, match=r"crm\.list_records raised AttributeError"):
        rec.run_cycle()
    assert left.calls["list_records"] - before == 1  # not retried
    assert rec.run_cycle().halted is None  # the next cycle runs normally


def test_unknown_and_invalid_fields_leave_sides_untouched_in_both_directions(
    storage: Storage, clock: ManualClock
) -> None:
    left, right, rec = _linked_pair(clock, storage)
    clock.advance(60)
    right.edit("r3", notes=b"bytes on the right")
    report = rec.run_cycle()
    assert left.get("l3").fields["notes"] == "n2"
    (item,) = _escalations(storage, "invalid_value")
    assert "billing record 'r3'" in item.explanation
    assert report.writes == {"left": 0, "right": 0}


# -- the slow loop beside the fast loop: the source moves on after the cycle read it ----------


@pytest.mark.parametrize("field", ["notes", "stage"])  # recency, and a source of truth
def test_a_cycle_never_writes_a_value_whose_source_moved_on_after_it_was_read(
    storage: Storage, clock: ManualClock, field: str
) -> None:
    left, right, rec = _linked_pair(clock, storage)
    clock.advance(60)
    left.edit("l1", **{field: "read by the cycle"})

    def edit_after_the_read(_: object) -> None:
        # Between the cycle's listing and its write: a user (or a fast-loop worker) changes
        # the source again; its webhook may be late or lost.
        if left.get("l1").fields[field] == "read by the cycle":
            clock.advance(1)
            left.edit("l1", **{field: "newer"})

    right.on_call("read_records", edit_after_the_read)  # the target's re-read before writing
    report = rec.run_cycle()
    assert right.get("r1").fields[field] != "read by the cycle"  # no old value written
    assert report.skipped_changed == 1
    clock.advance(60)
    rec.run_cycle()
    assert right.get("r1").fields[field] == "newer"
