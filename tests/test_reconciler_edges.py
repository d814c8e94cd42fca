"""Edge cases of the reconciliation cycle found in review, each pinned by a test."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncrecon import (
    FieldMap,
    NaturalKey,
    Reconciler,
    RetrySettings,
    Side,
    Status,
    SyncDefinition,
    Transform,
    WriteResult,
    recency,
    source_of_truth,
    value_map,
)
from syncrecon.storage import Storage
from syncrecon.testing import ManualClock, SimulatedSystem


def _pair(clock: ManualClock, **right: Any) -> tuple[SimulatedSystem, SimulatedSystem]:
    left = SimulatedSystem("left", clock=clock, key_prefix="l")
    rsys = SimulatedSystem("right", clock=clock, key_prefix="r", **right)
    return left, rsys


def _sync(left: Any, right: Any, fields: list[FieldMap], **kw: Any) -> SyncDefinition:
    return SyncDefinition(
        name="s",
        left=left,
        right=right,
        fields=fields,
        natural_key=NaturalKey(left="email", right="email"),
        **kw,
    )


def _rec(sync: SyncDefinition, storage: Storage, clock: ManualClock) -> Reconciler:
    return Reconciler(sync, storage, clock=clock, retry=RetrySettings(sleep=lambda s: None))


def test_one_reconciler_shared_by_two_threads_runs_one_cycle_at_a_time(
    storage: Storage, clock: ManualClock
) -> None:
    left, right = _pair(clock)
    left.create({"email": "a@x.com", "v": "1"})
    sync = _sync(
        left, right, [FieldMap(left="v", right="v", policy=recency())], create_on=["right"]
    )
    rec = _rec(sync, storage, clock)
    inside, release = threading.Event(), threading.Event()
    outcomes: list[str] = []

    def slow_write(_: object) -> None:
        inside.set()
        assert release.wait(10)

    right.on_call("write_records", slow_write)

    def first() -> None:
        rec.run_cycle()
        outcomes.append("ran")

    worker = threading.Thread(target=first)
    worker.start()
    assert inside.wait(10)
    from syncrecon import LeaseHeldError

    with pytest.raises(LeaseHeldError):
        rec.run_cycle()  # the same Reconciler, another thread: refused
    release.set()
    worker.join(10)
    assert outcomes == ["ran"]
    assert len(right.records()) == 1  # created once


def test_a_transform_that_is_not_an_exact_inverse_converges(
    storage: Storage, clock: ManualClock
) -> None:
    left, right = _pair(clock)
    left.create({"email": "a@x.com", "stage": "Won"})
    right.create({"email": "a@x.com", "stage": "lost"})
    shout = Transform(to_right=str.upper, to_left=str.lower)
    sync = _sync(
        left,
        right,
        [FieldMap(left="stage", right="stage", policy=source_of_truth("left"), transform=shout)],
    )
    rec = _rec(sync, storage, clock)
    first = rec.run_cycle()
    assert right.get("r1").fields["stage"] == "WON"
    assert first.total_writes == 1
    assert rec.run_cycle().total_writes == 0
    assert rec.run_cycle().total_writes == 0


def test_a_changed_natural_key_moves_with_the_link(storage: Storage, clock: ManualClock) -> None:
    left, right = _pair(clock)
    left.create({"email": "a@x.com", "v": "1"})
    right.create({"email": "a@x.com", "v": "1"})
    sync = _sync(
        left, right, [FieldMap(left="v", right="v", policy=recency())], create_on=["right"]
    )
    rec = _rec(sync, storage, clock)
    rec.run_cycle()
    left.edit("l1", email="b@x.com")
    right.edit("r1", email="b@x.com")
    rec.run_cycle()
    left.create({"email": "a@x.com", "v": "2"})  # the old address, now someone else's
    report = rec.run_cycle()
    assert "possible_duplicate" not in report.escalated
    assert report.created == {"left": 0, "right": 1}
    assert storage.links_by_natural_key("s", ["b@x.com"])["b@x.com"][0].left_key == "l1"


def test_a_record_without_natural_key_is_escalated_not_dropped(
    storage: Storage, clock: ManualClock
) -> None:
    left, right = _pair(clock)
    left.create({"email": "", "v": "1"})
    sync = _sync(
        left, right, [FieldMap(left="v", right="v", policy=recency())], create_on=["right"]
    )
    report = _rec(sync, storage, clock).run_cycle()
    assert report.escalated == {"no_natural_key": 1}
    assert len(right.records()) == 0
    (item,) = storage.list_items(sync="s", statuses=[Status.ESCALATED])
    assert item.left_key == "l1"


def test_an_unmappable_value_holds_its_record_and_the_cycle_goes_on(
    storage: Storage, clock: ManualClock
) -> None:
    left, right = _pair(clock)
    for email, stage in (("a@x.com", "Won"), ("b@x.com", "Weird")):
        left.create({"email": email, "stage": "won"})
        right.create({"email": email, "stage": stage})
    strict = value_map({"won": "Won", "lost": "Lost"}, strict=True)
    sync = _sync(
        left,
        right,
        [FieldMap(left="stage", right="stage", policy=source_of_truth("left"), transform=strict)],
        create_on=["left"],
    )
    report = _rec(sync, storage, clock).run_cycle()
    assert report.escalated == {"unmappable_value": 1}
    assert right.get("r2").fields["stage"] == "Weird"  # untouched
    assert len(left.records()) == 2  # and not created again on the left


def test_an_incremental_cycle_retries_a_failed_write(storage: Storage, clock: ManualClock) -> None:
    left = SimulatedSystem("left", clock=clock, key_prefix="l", incremental=True)
    right = SimulatedSystem("right", clock=clock, key_prefix="r", incremental=True)
    left.create({"email": "a@x.com", "v": "1"})
    right.create({"email": "a@x.com", "v": "1"})
    sync = _sync(left, right, [FieldMap(left="v", right="v", policy=source_of_truth("left"))])
    rec = _rec(sync, storage, clock)
    rec.run_cycle()
    clock.advance(timedelta(hours=1))
    left.edit("l1", v="2")
    right.reject("r1")
    first = rec.run_cycle()
    assert first.mode == "incremental"
    assert first.write_failures == 1
    right.faults.rejected.clear()
    clock.advance(timedelta(hours=1))  # far past the overlap: l1 is not listed again
    second = rec.run_cycle()
    assert second.mode == "incremental"
    assert right.get("r1").fields["v"] == "2"
    assert second.auto_resolved == {"source_of_truth": 1}


def test_a_create_answered_with_an_already_linked_key_fails_cleanly(
    storage: Storage, clock: ManualClock
) -> None:
    left, right = _pair(clock)
    left.create({"email": "a@x.com", "v": "1"})
    right.create({"email": "a@x.com", "v": "1"})
    sync = _sync(
        left, right, [FieldMap(left="v", right="v", policy=recency())], create_on=["right"]
    )
    rec = _rec(sync, storage, clock)
    rec.run_cycle()
    left.create({"email": "b@x.com", "v": "2"})
    real_write = right.write_records

    def upsert(changes: Any) -> list[WriteResult]:
        return [WriteResult.success(c, "r1") for c in changes]  # "deduplicated" onto r1

    right.write_records = upsert  # type: ignore[method-assign]
    report = rec.run_cycle()
    right.write_records = real_write  # type: ignore[method-assign]
    assert report.write_failures == 1
    assert storage.get_links("s", Side.RIGHT, ["r1"])["r1"].left_key == "l1"
    (item,) = storage.list_items(sync="s", statuses=[Status.OPEN])
    assert "already linked" in item.explanation


def test_naive_and_aware_times_of_the_same_instant_agree() -> None:
    from syncrecon._policy import values_equal

    aware = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert values_equal(aware.replace(tzinfo=None), aware)
    assert not values_equal(aware.replace(tzinfo=None), aware + timedelta(seconds=1))
