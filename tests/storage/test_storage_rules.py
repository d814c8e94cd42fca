"""The storage rules (``syncrecon.storage._rules``), tested alone: pure functions, no backend.

The contract tests check that every backend applies them; these pin what each rule decides.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncrecon import LeaseLostError, Retention, StorageError
from syncrecon.storage import Discrepancy, ItemUpdate, Status, Step
from syncrecon.storage._rules import (
    PRUNE_KINDS,
    check_fence,
    check_reopen,
    counter_hour,
    counter_window,
    escalation_kept,
    first_sighting,
    lease_free,
    merge_base,
    merge_item,
    prune_cutoffs,
    update_item,
)

T0 = datetime(2026, 1, 5, 10, 15, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)


def active(**kw: object) -> Discrepancy:
    """An active item as stored: an id, seen twice, with an assignee and a note."""
    values: dict[str, object] = {
        "id": 7,
        "sync": "deals",
        "field": "notes",
        "left_key": "L1",
        "right_key": "R1",
        "status": Status.ESCALATED,
        "detected_at": T0,
        "updated_at": T0,
        "left_value": "a",
        "right_value": "b",
        "rule": "escalate",
        "category": "unresolved_conflict",
        "explanation": "first",
        "cycle_id": "c1",
        "note": "looked at it",
        "assignee": "ada",
        "times_seen": 2,
    }
    values.update(kw)
    return Discrepancy(**values)  # type: ignore[arg-type]


def sighting(**kw: object) -> Discrepancy:
    """A new sighting of the same key, as a cycle or the fast loop builds it."""
    values: dict[str, object] = {
        "sync": "deals",
        "field": "notes",
        "left_key": "L1",
        "right_key": "R1",
        "status": Status.OPEN,
        "detected_at": T1,
        "left_value": "c",
        "right_value": "d",
        "base_value": "z",
        "has_base": True,
        "rule": "fast_loop",
        "category": None,
        "explanation": "again",
        "cycle_id": "c2",
    }
    values.update(kw)
    return Discrepancy(**values)  # type: ignore[arg-type]


# -- an escalation is never lowered ---------------------------------------------------------------


@pytest.mark.parametrize("old", list(Status), ids=str)
@pytest.mark.parametrize("new", list(Status), ids=str)
def test_escalation_kept_only_against_an_open_sighting(old: Status, new: Status) -> None:
    assert escalation_kept(old, new) is (old is Status.ESCALATED and new is Status.OPEN)


def test_an_open_sighting_leaves_an_escalated_item_escalated_with_its_reason() -> None:
    merged = merge_item(active(), sighting(), T1)
    assert merged.status is Status.ESCALATED
    assert (merged.rule, merged.category) == ("escalate", "unresolved_conflict")
    # Everything else is the new sighting's: the operator sees the current values.
    assert (merged.left_value, merged.right_value, merged.base_value) == ("c", "d", "z")
    assert (merged.explanation, merged.cycle_id, merged.has_base) == ("again", "c2", True)


def test_an_escalated_sighting_takes_its_own_reason() -> None:
    merged = merge_item(active(), sighting(status=Status.ESCALATED, category="amount"), T1)
    assert (merged.status, merged.rule, merged.category) == (
        Status.ESCALATED,
        "fast_loop",
        "amount",
    )


@pytest.mark.parametrize("closing", [Status.AUTO_RESOLVED, Status.RESOLVED, Status.DISMISSED])
def test_a_closing_sighting_closes_even_an_escalated_item(closing: Status) -> None:
    # The rule guards against lowering to OPEN only: a sighting that closes the item (the two
    # systems converged, the rule fixed it) closes it, as both backends always did.
    merged = merge_item(active(), sighting(status=closing, resolution="x"), T1)
    assert merged.status is closing
    assert merged.resolution == "x"


@given(
    old=st.sampled_from(list(Status)),
    new=st.sampled_from(list(Status)),
)
def test_a_merge_never_turns_escalated_into_open(old: Status, new: Status) -> None:
    merged = merge_item(active(status=old), sighting(status=new), T1)
    assert merged.status is (Status.ESCALATED if escalation_kept(old, new) else new)
    if old is Status.ESCALATED:
        assert merged.status is not Status.OPEN


# -- merging a new sighting into the active item --------------------------------------------------


def test_a_merge_keeps_the_items_identity_and_counts_the_sighting() -> None:
    merged = merge_item(active(status=Status.OPEN), sighting(), T1)
    assert merged.id == 7
    assert merged.item_key == ("deals", "L1", "R1", "notes")
    assert merged.detected_at == T0  # first seen
    assert merged.updated_at == T1
    assert merged.assignee == "ada"
    assert merged.times_seen == 3
    assert merged.note == "looked at it"  # kept when the new sighting has none
    assert merged.status is Status.OPEN
    assert (merged.rule, merged.category) == ("fast_loop", None)


def test_a_merge_takes_a_new_note_and_ignores_the_sightings_own_count_and_assignee() -> None:
    merged = merge_item(active(), sighting(note="new", times_seen=9, assignee="bob", id=99), T1)
    assert (merged.note, merged.times_seen, merged.assignee, merged.id) == ("new", 3, "ada", 7)


def test_the_rules_read_no_values_of_the_stored_item() -> None:
    # A backend may hand the rules the stored item without decoding its values (SQLite does).
    head = active(left_value=None, right_value=None, explanation="", cycle_id=None, resolution=None)
    assert merge_item(head, sighting(), T1) == merge_item(active(), sighting(), T1)
    upd = ItemUpdate(id=7, status=Status.RESOLVED, resolution="r", note="n")
    full, partial = update_item(active(), upd, T1), update_item(head, upd, T1)
    for name in ("status", "resolution", "resolved_at", "note", "assignee", "updated_at"):
        assert getattr(partial, name) == getattr(full, name), name


def test_a_first_sighting_is_seen_once() -> None:
    new = first_sighting(sighting(times_seen=5, assignee="bob", note="n"), T1)
    assert (new.times_seen, new.updated_at) == (1, T1)
    assert (new.detected_at, new.assignee, new.note, new.id) == (T1, "bob", "n", None)


# -- status updates -------------------------------------------------------------------------------


def test_an_update_sets_the_status_and_resolution_and_keeps_the_rest() -> None:
    prior = active(resolution="old", resolved_at=T0)
    new = update_item(prior, ItemUpdate(id=7, status=Status.RESOLVED, resolution=[1]), T1)
    assert (new.status, new.resolution, new.resolved_at) == (Status.RESOLVED, [1], None)
    assert (new.note, new.assignee, new.updated_at) == ("looked at it", "ada", T1)
    assert (new.left_value, new.times_seen, new.detected_at) == ("a", 2, T0)


@pytest.mark.parametrize(
    ("given_assignee", "expected"), [(None, "ada"), ("", None), ("bob", "bob")], ids=repr
)
def test_an_update_keeps_clears_or_sets_the_assignee(
    given_assignee: str | None, expected: str | None
) -> None:
    upd = ItemUpdate(id=7, status=Status.ESCALATED, assignee=given_assignee, note="n2")
    new = update_item(active(), upd, T1)
    assert (new.assignee, new.note) == (expected, "n2")


def test_reopening_is_refused_next_to_another_active_item() -> None:
    reopened = active(status=Status.OPEN)
    check_reopen(reopened, None)
    check_reopen(reopened, 7)  # it is the active item itself
    check_reopen(active(status=Status.RESOLVED), 8)  # closing never conflicts
    with pytest.raises(StorageError, match="item 7 cannot be reopened: item 8 is active"):
        check_reopen(reopened, 8)


# -- bases ----------------------------------------------------------------------------------------


def test_a_base_merges_per_field_then_drops() -> None:
    base = {"a": 1, "b": [1], "c": "keep"}
    merged = merge_base(base, {"b": [2], "d": 4, "e": 5}, ("a", "e", "never-synced"))
    assert merged == {"b": [2], "c": "keep", "d": 4}
    assert base == {"a": 1, "b": [1], "c": "keep"}  # not changed
    assert merge_base({}, {}, ()) == {}


# -- leases ---------------------------------------------------------------------------------------


def test_when_a_lease_is_free() -> None:
    until = T0 + timedelta(minutes=10)
    assert lease_free(None, "w1", T0)
    assert lease_free(("w1", until), "w1", T0)  # its owner takes it again: a renewal
    assert not lease_free(("w1", until), "w2", T0)
    assert not lease_free(("w1", until), "w2", until - timedelta(microseconds=1))
    assert lease_free(("w1", until), "w2", until)  # expired at that instant
    assert lease_free(("w1", until), "w2", until.replace(tzinfo=None))  # naive means UTC
    assert lease_free(("", until), "", T0)  # any string is an owner


def test_a_fence_holds_while_its_owner_holds_the_lease() -> None:
    check_fence(Step(at=T0), None)  # no fence: nothing to check
    fenced = Step(at=T0, fence=("cycle:deals", "w1"))
    check_fence(fenced, "w1")  # expired or not: nobody took it
    with pytest.raises(LeaseLostError, match="released") as released:
        check_fence(fenced, None)
    assert (released.value.name, released.value.owner) == ("cycle:deals", None)
    with pytest.raises(LeaseLostError, match="taken by 'w2'") as taken:
        check_fence(fenced, "w2")
    assert (taken.value.name, taken.value.owner) == ("cycle:deals", "w2")
    assert not isinstance(taken.value, StorageError)


# -- counters and retention -----------------------------------------------------------------------


def test_counters_count_by_the_utc_hour() -> None:
    assert counter_hour(datetime(2026, 1, 5, 10, 59, 59, 999999, tzinfo=UTC)) == datetime(
        2026, 1, 5, 10, tzinfo=UTC
    )
    plus_two = datetime(2026, 1, 5, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    assert counter_hour(plus_two) == datetime(2026, 1, 5, 12, tzinfo=UTC)
    assert counter_hour(plus_two).utcoffset() == timedelta(0)
    assert counter_hour(datetime(2026, 1, 5, 12, 30)) == datetime(2026, 1, 5, 12, tzinfo=UTC)


def test_a_counter_window_counts_since_its_whole_hour_until_the_given_time() -> None:
    since, until = datetime(2026, 1, 5, 10, 30, tzinfo=UTC), datetime(2026, 1, 5, 12, 1)
    assert counter_window(since, until) == (
        datetime(2026, 1, 5, 10, tzinfo=UTC),
        datetime(2026, 1, 5, 12, 1, tzinfo=UTC),
    )
    assert counter_window(None, None) == (None, None)


def test_prune_cutoffs_name_each_kept_kind_in_order() -> None:
    now = datetime(2026, 1, 5, 10, 30, tzinfo=UTC)
    cuts = prune_cutoffs(Retention(), now)
    assert list(cuts) == [k for k in PRUNE_KINDS if k != "items"]  # closed items: kept forever
    assert cuts["inbox"] == now - timedelta(days=7)
    assert cuts["echoes"] == now
    assert cuts["counters"] == datetime(2024, 12, 1, 10, tzinfo=UTC)  # 400 days, by the hour
    every = Retention(closed_items=timedelta(days=1), counters=timedelta(hours=1))
    assert list(prune_cutoffs(every, now)) == list(PRUNE_KINDS)
    assert prune_cutoffs(every, now)["items"] == now - timedelta(days=1)
    assert prune_cutoffs(every, now)["counters"] == datetime(2026, 1, 5, 9, tzinfo=UTC)
    nothing = Retention(
        inbox=None, echoes=None, outbox=None, cycles=None, counters=None, closed_items=None
    )
    assert prune_cutoffs(nothing, now) == {}
