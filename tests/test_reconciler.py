"""The slow loop end to end: simulated systems, a manual clock and every storage backend."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from syncrecon import (
    ChangeOp,
    CycleHaltedError,
    FieldMap,
    LeaseHeldError,
    NaturalKey,
    PermanentError,
    Reconciler,
    RetrySettings,
    Side,
    Status,
    Storage,
    SyncDefinition,
    TransientError,
    escalate,
    merge,
    recency,
    source_of_truth,
    value_map,
)
from syncrecon.testing import ManualClock, SimulatedSystem

SYNC = "deals"
STAGES = value_map({"lead": "Lead", "won": "Closed Won", "lost": "Closed Lost"})


class World:
    """Two simulated CRMs (left: HubSpot-like, right: Salesforce-like), a sync and a reconciler.

    Fields (left name / right name): stage/Stage (picklist value map), notes/Notes,
    tags/Tags, amount/Amount; the natural key is email/Email (normalized, not a mapped field).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        stage: Any = None,
        notes: Any = None,
        tags: Any = None,
        amount: Any = None,
        create_on: Sequence[str] = (),
        delete_from: str | None = None,
        left: dict[str, Any] | None = None,
        right: dict[str, Any] | None = None,
        retry: RetrySettings | None = None,
        **options: Any,
    ) -> None:
        self.storage = storage
        self.clock = ManualClock(tick=timedelta(milliseconds=1))
        self.left = SimulatedSystem("hubspot", clock=self.clock, **(left or {}))
        self.right = SimulatedSystem("salesforce", clock=self.clock, **(right or {}))
        self.sleeps: list[float] = []
        self.sync = SyncDefinition(
            name=SYNC,
            left=self.left,
            right=self.right,
            fields=[
                FieldMap(
                    left="stage",
                    right="Stage",
                    policy=stage or source_of_truth("left"),
                    transform=STAGES,
                ),
                FieldMap(left="notes", right="Notes", policy=notes or recency()),
                FieldMap(left="tags", right="Tags", policy=tags or merge()),
                FieldMap(left="amount", right="Amount", policy=amount or escalate("amount")),
            ],
            natural_key=NaturalKey(left="email", right="Email"),
            create_on=create_on,
            delete_from=delete_from,
        )
        self.rec = Reconciler(
            self.sync,
            storage,
            clock=self.clock,
            retry=retry or RetrySettings(sleep=self.sleeps.append, rng=random.Random(7)),
            **options,
        )

    def add_left(self, email: str, **values: Any) -> str:
        return self.left.create({"email": email, **_defaults(values)})

    def add_right(self, email: str, **values: Any) -> str:
        v = _defaults(values)
        return self.right.create(
            {
                "Email": email,
                "Stage": STAGES.to_right(v["stage"]),
                "Notes": v["notes"],
                "Tags": v["tags"],
                "Amount": v["amount"],
            }
        )

    def add_pair(self, i: int, **values: Any) -> tuple[str, str]:
        """A record on both sides with equal values; the right email differs in case/spaces."""
        return self.add_left(f"user{i}@example.com", **values), self.add_right(
            f"  User{i}@Example.COM ", **values
        )

    def run(self, **kwargs: Any) -> Any:
        return self.rec.run_cycle(**kwargs)

    def link_of(self, left_key: str) -> Any:
        return self.storage.get_links(SYNC, Side.LEFT, [left_key]).get(left_key)

    def items(self, *statuses: Status, **filters: Any) -> list[Any]:
        return self.storage.list_items(sync=SYNC, statuses=list(statuses) or None, **filters)

    def clear_logs(self) -> None:
        self.left.write_log.clear()
        self.right.write_log.clear()

    def writes(self) -> int:
        return len(self.left.write_log) + len(self.right.write_log)

    def snapshot(self) -> dict[str, Any]:
        """Everything storage holds about the sync that a cycle could change."""
        lkeys = sorted(self.left.records())
        links = self.storage.get_links(SYNC, Side.LEFT, lkeys)
        return {
            "links": {k: (v.right_key, dict(v.base)) for k, v in links.items()},
            "count": self.storage.count_links(SYNC),
            "items": sorted(
                (i.id, i.status, i.field, i.left_key, i.right_key, i.times_seen, i.note)
                for i in self.storage.list_items(sync=SYNC, limit=10_000)
            ),
            "state": self.storage.get_sync_state(SYNC),
        }


def _defaults(values: dict[str, Any]) -> dict[str, Any]:
    return {"stage": "lead", "notes": "first call", "tags": ["a", "b"], "amount": 100, **values}


def _converged(world: World, pairs: int = 5) -> list[tuple[str, str]]:
    keys = [world.add_pair(i) for i in range(pairs)]
    report = world.run()
    assert report.new_links == pairs
    assert report.total_writes == 0
    world.clear_logs()
    world.clock.advance(timedelta(minutes=1))
    return keys


# -- matching and the first cycle -------------------------------------------------------------


def test_first_cycle_links_by_normalized_email_and_writes_nothing(storage: Storage) -> None:
    world = World(storage)
    keys = [world.add_pair(i) for i in range(4)]

    report = world.run()

    assert report.new_links == 4
    assert report.pairs_compared == 4
    assert report.discrepancies_found == 0
    assert report.total_writes == 0
    assert world.writes() == 0
    for i, (lkey, rkey) in enumerate(keys):
        link = world.link_of(lkey)
        assert link is not None
        assert link.right_key == rkey
        assert link.natural_key == f"user{i}@example.com"
        assert dict(link.base) == {
            "stage": "lead",
            "notes": "first call",
            "tags": ["a", "b"],
            "amount": 100,
        }
    assert storage.count_links(SYNC) == 4


# -- each rule end to end -----------------------------------------------------------------------


def test_source_of_truth_overwrites_the_non_authoritative_side(storage: Storage) -> None:
    world = World(storage)
    (l0, r0), (l1, r1), _ = _converged(world, 3)
    world.right.edit(r0, Stage="Closed Lost")  # the non-authoritative side changed: reverted
    world.left.edit(l1, stage="won")  # the source of truth changed: propagated

    report = world.run()

    assert world.right.get(r0).fields["Stage"] == "Lead"
    assert world.right.get(r1).fields["Stage"] == "Closed Won"
    assert world.left.get(l0).fields["stage"] == "lead"
    assert world.left.write_log == []
    assert report.auto_resolved == {"source_of_truth": 2}
    assert report.writes == {"left": 0, "right": 2}
    assert world.link_of(l1).base["stage"] == "won"
    assert world.items(Status.OPEN, Status.ESCALATED) == []
    assert [i.status for i in world.items(field="stage")] == [Status.AUTO_RESOLVED] * 2


def test_recency_takes_the_newest_value_and_a_one_sided_change(storage: Storage) -> None:
    world = World(storage)
    (l0, r0), (l1, r1), (l2, r2) = _converged(world, 3)
    # Both changed: the later edit (right, 30 s later) wins.
    world.left.edit(l0, notes="left says")
    world.clock.advance(30)
    world.right.edit(r0, Notes="right says later")
    # Only left changed (long ago): it propagates whatever the times.
    world.left.edit(l1, notes="only left")
    world.clock.advance(60)
    world.right.edit(r1, Amount=100)  # touches the record, not the field
    # Both changed within the skew tolerance: escalated, both untouched.
    world.left.edit(l2, notes="l2 left")
    world.right.edit(r2, Notes="l2 right")

    report = world.run()

    assert world.left.get(l0).fields["notes"] == "right says later"
    assert world.right.get(r0).fields["Notes"] == "right says later"
    assert world.right.get(r1).fields["Notes"] == "only left"
    assert world.left.get(l2).fields["notes"] == "l2 left"
    assert world.right.get(r2).fields["Notes"] == "l2 right"
    assert report.auto_resolved == {"recency": 2}
    assert report.escalated == {"unresolved_conflict": 1}
    [item] = world.items(Status.ESCALATED)
    assert (item.left_key, item.field) == (l2, "notes")


def test_merge_is_three_way_and_a_removal_stays_removed(storage: Storage) -> None:
    world = World(storage)
    (l0, r0), _ = _converged(world, 2)  # base tags: ["a", "b"]
    world.left.edit(l0, tags=["b"])  # left removed "a"
    world.right.edit(r0, Tags=["a", "b", "c"])  # right added "c"

    report = world.run()

    assert world.left.get(l0).fields["tags"] == ["b", "c"]
    assert world.right.get(r0).fields["Tags"] == ["b", "c"]
    assert world.link_of(l0).base["tags"] == ["b", "c"]
    assert report.auto_resolved == {"merge": 1}
    assert report.writes == {"left": 1, "right": 1}
    assert world.run().total_writes == 0


def test_escalate_leaves_both_sides_untouched_and_keeps_one_item(storage: Storage) -> None:
    world = World(storage)
    (l0, r0), _ = _converged(world, 2)
    world.left.edit(l0, amount=150)
    world.right.edit(r0, Amount=175)

    first = world.run()

    assert world.writes() == 0
    assert first.escalated == {"amount": 1}
    [item] = world.items(Status.ESCALATED)
    assert (item.left_key, item.right_key, item.field, item.category) == (
        l0,
        r0,
        "amount",
        "amount",
    )
    assert (item.left_value, item.right_value, item.base_value) == (150, 175, 100)

    world.clock.advance(60)
    world.right.edit(r0, Amount=180)
    second = world.run()

    assert world.writes() == 0
    assert second.escalated == {"amount": 1}
    [again] = world.items(Status.ESCALATED)
    assert again.id == item.id
    assert again.times_seen == 2
    assert again.right_value == 180
    assert len(world.items()) == 1

    world.right.edit(r0, Amount=150)  # an operator makes both sides equal by hand
    third = world.run()

    assert world.writes() == 0
    assert third.escalated == {}
    closed = storage.get_item(item.id)
    assert closed.status is Status.RESOLVED
    assert closed.resolved_at is not None
    assert world.items(Status.OPEN, Status.ESCALATED) == []
    assert world.link_of(l0).base["amount"] == 150


def test_a_second_cycle_after_a_converged_one_writes_nothing(storage: Storage) -> None:
    world = World(storage, create_on=["right"], delete_from="left")
    keys = _converged(world, 12)
    world.left.edit(keys[0][0], stage="won")
    world.right.edit(keys[1][1], Notes="changed on the right")
    world.left.edit(keys[2][0], tags=["a", "x"])
    world.right.edit(keys[2][1], Tags=["b", "y"])
    world.right.edit(keys[3][1], Amount=1)
    world.left.delete(keys[4][0])
    world.add_left("brand.new@example.com", stage="won")

    first = world.run()
    assert first.total_writes == 6
    assert world.writes() == 6
    world.clear_logs()

    second = world.run()

    assert second.total_writes == 0
    assert world.writes() == 0
    assert second.discrepancies_found == 1  # only the escalated amount, seen again
    assert second.escalated == {"amount": 1}
    assert second.auto_resolved == {}


# -- dry run ----------------------------------------------------------------------------------


def _compare_reports(dry: Any, real: Any) -> None:
    for name in (
        "records",
        "pairs_compared",
        "new_links",
        "discrepancies_found",
        "auto_resolved",
        "escalated",
        "halted",
    ):
        assert getattr(dry, name) == getattr(real, name), name


def _dry_run_scenario(storage: Storage) -> World:
    world = World(storage, create_on=["right"], delete_from="left")
    keys = [world.add_pair(i) for i in range(12)]
    world.left.edit(keys[0][0], stage="won")
    world.add_right("dup@example.com")
    world.add_right("DUP@example.com")
    world.add_left("dup@example.com")
    world.add_left("only.left@example.com")
    world.right.edit(keys[1][1], Amount=5)
    return world


def test_dry_run_on_a_first_cycle_matches_the_real_run_and_writes_nothing(
    storage: Storage,
) -> None:
    world = _dry_run_scenario(storage)
    before = world.snapshot()

    dry = world.run(dry_run=True)

    assert dry.dry_run is True
    assert world.writes() == 0
    assert world.snapshot() == before
    assert storage.count_links(SYNC) == 0
    assert storage.list_cycles(sync=SYNC) == []

    real = world.run()
    _compare_reports(dry, real)
    assert real.total_writes > 0
    assert real.new_links == 12


def test_dry_run_after_edits_matches_the_real_run_and_writes_nothing(storage: Storage) -> None:
    world = World(storage, create_on=["right"], delete_from="left")
    keys = _converged(world, 12)
    world.left.edit(keys[0][0], stage="won")
    world.right.edit(keys[1][1], Notes="newer")
    world.left.edit(keys[2][0], tags=["a"])
    world.right.edit(keys[2][1], Tags=["a", "b", "c"])
    world.right.edit(keys[3][1], Amount=5)
    world.left.delete(keys[4][0])
    world.right.delete(keys[5][1])
    world.add_left("only.left@example.com")
    before = world.snapshot()

    dry = world.run(dry_run=True)

    assert world.writes() == 0
    assert world.snapshot() == before
    assert dry.total_writes == 0

    real = world.run()
    _compare_reports(dry, real)
    assert real.auto_resolved == {
        "create_on": 1,
        "delete_from": 1,
        "merge": 1,
        "recency": 1,
        "source_of_truth": 1,
    }
    assert real.escalated == {"amount": 1, "deletion": 1}


def test_a_halted_dry_run_matches_the_real_halted_run(storage: Storage) -> None:
    world = World(storage, delete_from="left")
    keys = _converged(world, 10)
    for lkey, _ in keys[:6]:
        world.left.delete(lkey)
    before = world.snapshot()

    dry = world.run(dry_run=True)

    assert dry.halted
    assert world.snapshot() == before
    _compare_reports(dry, world.run())


# -- no stale write -----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["right", "left"])
def test_a_change_between_listing_and_reread_is_not_overwritten(
    storage: Storage, target: str
) -> None:
    world = World(storage)
    (l0, r0), (l1, r1), _ = _converged(world, 3)
    # An older edit of notes on the source side; the other side is the write target.
    source, dest = (world.left, world.right) if target == "right" else (world.right, world.left)
    skey, dkey = (l0, r0) if target == "right" else (r0, l0)
    dest_field = "Notes" if target == "right" else "notes"
    source.edit(skey, **{("notes" if target == "right" else "Notes"): "older edit"})
    world.left.edit(l1, stage="won")  # an unrelated fix in the same cycle still lands
    world.clock.advance(30)
    edited: list[Any] = []

    def user_edits(keys: Any) -> None:
        if dkey in keys and not edited:  # the re-read right before the write
            dest.edit(dkey, **{dest_field: "typed by a user meanwhile"})
            edited.append(keys)

    dest.on_call("read_records", user_edits)

    report = world.run()

    assert edited, "the target was never re-read before the write"
    assert dest.get(dkey).fields[dest_field] == "typed by a user meanwhile"
    assert not any(e.key == dkey and dest_field in e.fields for e in dest.write_log)
    assert report.skipped_changed == 1
    assert world.right.get(r1).fields["Stage"] == "Closed Won"
    [item] = world.items(Status.OPEN)
    assert (item.left_key, item.field) == (l0, "notes")
    assert "changed" in (item.note or "")

    # The next cycle decides again: the user's edit is newer, so it wins on both sides.
    world.run()
    assert world.left.get(l0).fields["notes"] == "typed by a user meanwhile"
    assert world.right.get(r0).fields["Notes"] == "typed by a user meanwhile"


# -- deletions and the mass-delete guard --------------------------------------------------------


@pytest.mark.parametrize("raise_on_halt", [False, True])
def test_mass_delete_is_halted_before_anything_is_written(
    storage: Storage, raise_on_halt: bool
) -> None:
    world = World(storage, delete_from="left", raise_on_halt=raise_on_halt)
    keys = _converged(world, 10)
    world.left.edit(keys[9][0], stage="won")  # a fix that must not be written either
    for lkey, _ in keys[:7]:
        world.left.delete(lkey)

    if raise_on_halt:
        with pytest.raises(CycleHaltedError) as info:
            world.run()
        assert info.value.reason == "mass_delete"
    else:
        report = world.run()
        assert report.halted is not None
        assert "7 of 10" in report.halted
        assert report.escalated == {"mass_delete": 1}
        assert report.total_writes == 0

    assert world.writes() == 0
    assert len(world.right) == 10
    assert storage.count_links(SYNC) == 10
    [item] = world.items()
    assert (item.status, item.category, item.field) == (Status.ESCALATED, "mass_delete", "*")

    # A second halted cycle updates the same item instead of adding another.
    world.rec.raise_on_halt = False
    assert world.run().halted is not None
    [again] = world.items()
    assert again.id == item.id
    assert world.writes() == 0


def test_a_partial_fetch_never_becomes_a_deletion(storage: Storage) -> None:
    world = World(storage, delete_from="left", left={"page_size": 3})
    keys = _converged(world, 10)
    world.left.delete(keys[8][0])  # one real deletion among the unlisted records
    world.left.truncate_listing(2)  # the listing stops early without an error
    calls_before = world.left.calls.get("read_records", 0)

    report = world.run()

    # Records missing from the listing were confirmed by key, so only the real deletion
    # propagates (one of ten is within the guard).
    assert world.left.calls.get("read_records", 0) > calls_before
    assert report.deleted == {"left": 0, "right": 1}
    assert [e.key for e in world.right.write_log] == [keys[8][1]]
    assert len(world.right) == 9
    assert report.halted is None
    assert world.items(category="mass_delete") == []


def test_a_deletion_under_the_guard_propagates_from_the_delete_from_side_only(
    storage: Storage,
) -> None:
    world = World(storage, delete_from="left")
    keys = _converged(world, 20)
    world.left.delete(keys[3][0])
    world.right.delete(keys[7][1])

    report = world.run()

    assert [(e.op, e.key) for e in world.right.write_log] == [(ChangeOp.DELETE, keys[3][1])]
    assert world.left.write_log == []
    assert keys[7][0] in world.left.records()  # a right-side deletion is not propagated
    assert report.deleted == {"left": 0, "right": 1}
    assert report.auto_resolved == {"delete_from": 1}
    assert report.escalated == {"deletion": 1}
    assert world.link_of(keys[3][0]) is None
    assert world.link_of(keys[7][0]) is not None
    [item] = world.items(Status.ESCALATED)
    assert (item.left_key, item.right_key, item.category) == (keys[7][0], keys[7][1], "deletion")

    world.clear_logs()
    again = world.run()
    assert again.total_writes == 0
    assert world.writes() == 0
    assert len(world.items(Status.ESCALATED)) == 1


def test_a_record_deleted_on_both_sides_is_unlinked(storage: Storage) -> None:
    world = World(storage, delete_from="left")
    keys = _converged(world, 20)
    world.left.delete(keys[3][0])
    world.right.delete(keys[3][1])

    world.run()

    assert world.link_of(keys[3][0]) is None
    assert storage.count_links(SYNC) == 19


# -- duplicates -----------------------------------------------------------------------------------


def test_duplicate_candidates_escalate_and_are_not_linked(storage: Storage) -> None:
    world = World(storage)
    lkey = world.add_left("ada@example.com")
    r1 = world.add_right("ADA@example.com")
    r2 = world.add_right(" ada@example.com", notes="other")
    world.add_pair(1)

    report = world.run()

    assert report.new_links == 1
    assert world.link_of(lkey) is None
    assert storage.get_links(SYNC, Side.RIGHT, [r1, r2]) == {}
    items = world.items(Status.ESCALATED)
    assert report.escalated == {"possible_duplicate": 3}  # one per record sent to an operator
    assert {(i.left_key, i.right_key) for i in items} == {(lkey, None), (None, r1), (None, r2)}
    assert {i.category for i in items} == {"possible_duplicate"}
    assert world.writes() == 0

    world.run()
    assert len(world.items()) == 3  # updated, not duplicated
    assert world.writes() == 0


def test_duplicate_candidates_are_not_created_on_the_other_side(storage: Storage) -> None:
    world = World(storage, create_on=["left", "right"])
    world.add_left("ada@example.com")
    world.add_right("ADA@example.com")
    world.add_right(" ada@example.com")

    report = world.run()

    assert report.escalated == {"possible_duplicate": 3}
    assert world.writes() == 0
    assert report.created == {"left": 0, "right": 0}


# -- rejected records, retries and failed batches ----------------------------------------------


def test_one_rejected_record_does_not_block_the_others(storage: Storage) -> None:
    world = World(storage)
    keys = _converged(world, 5)
    for lkey, _ in keys:
        world.left.edit(lkey, stage="won")
    rejected = keys[2][1]
    world.right.reject(rejected, "Stage is locked by a validation rule")

    report = world.run()

    assert report.write_failures == 1
    assert report.auto_resolved == {"source_of_truth": 4}
    assert len(world.right.write_log) == 4
    for _, rkey in keys:
        expected = "Lead" if rkey == rejected else "Closed Won"
        assert world.right.get(rkey).fields["Stage"] == expected
    [item] = world.items(Status.OPEN)
    assert item.right_key == rejected
    assert "Stage is locked by a validation rule" in (item.note or "")
    assert world.link_of(keys[2][0]).base["stage"] == "lead"

    del world.right.faults.rejected[rejected]
    world.clear_logs()
    retry = world.run()

    assert retry.auto_resolved == {"source_of_truth": 1}
    assert [e.key for e in world.right.write_log] == [rejected]
    assert world.right.get(rejected).fields["Stage"] == "Closed Won"
    assert storage.get_item(item.id).status is Status.AUTO_RESOLVED
    assert world.items(Status.OPEN) == []
    assert world.run().total_writes == 0


def test_transient_errors_and_rate_limits_are_retried_and_counted(storage: Storage) -> None:
    world = World(storage)
    keys = _converged(world, 3)
    world.left.edit(keys[0][0], stage="won")
    world.left.fail_next("list_records", TransientError("503 Service Unavailable"))
    world.right.rate_limit_next("read_records", times=1, retry_after=3)
    world.right.rate_limit_next("write_records", times=2, retry_after=7)
    calls_before = (world.left.total_calls, world.right.total_calls)

    report = world.run()

    assert world.right.get(keys[0][1]).fields["Stage"] == "Closed Won"
    assert report.write_failures == 0
    # left: 2 listing attempts and the source re-read before the write; right: listing,
    # 2 re-read attempts, 3 write attempts.
    assert report.api_calls == {"hubspot": 3, "salesforce": 6}
    assert world.left.total_calls - calls_before[0] == 3
    assert world.right.total_calls - calls_before[1] == 6
    # Retry-After is honoured exactly; the 503 backs off with jitter within the first step.
    assert len(world.sleeps) == 4
    assert 0 <= world.sleeps[0] <= 0.5
    assert world.sleeps[1:] == [3.0, 7.0, 7.0]


def test_a_retry_after_longer_than_the_maximum_is_capped(storage: Storage) -> None:
    sleeps: list[float] = []
    world = World(storage, retry=RetrySettings(sleep=sleeps.append, maximum=30.0))
    _converged(world, 1)
    world.left.rate_limit_next("list_records", retry_after=3600)

    world.run()

    assert sleeps == [30.0]


def test_a_batch_write_that_keeps_failing_leaves_every_item_open(storage: Storage) -> None:
    world = World(storage, retry=RetrySettings(attempts=3, sleep=lambda _: None))
    keys = _converged(world, 4)
    for lkey, _ in keys:
        world.left.edit(lkey, stage="lost")
    world.right.fail_next("write_records", *(TransientError("502") for _ in range(3)))

    report = world.run()

    assert world.right.calls["write_records"] == 3
    assert report.write_failures == 4
    assert report.auto_resolved == {}
    assert report.total_writes == 0
    assert report.discrepancies_found == 4
    items = world.items(Status.OPEN)
    assert len(items) == 4
    assert all("TransientError" in (i.note or "") for i in items)
    assert all(world.link_of(lkey).base["stage"] == "lead" for lkey, _ in keys)

    healed = world.run()  # the faults are spent: the next cycle writes them all
    assert healed.auto_resolved == {"source_of_truth": 4}
    assert world.items(Status.OPEN) == []
    assert all(world.right.get(r).fields["Stage"] == "Closed Lost" for _, r in keys)


def test_a_permanent_batch_failure_is_not_retried(storage: Storage) -> None:
    world = World(storage)
    keys = _converged(world, 2)
    world.left.edit(keys[0][0], stage="won")
    world.right.fail_next("write_records", PermanentError("400 bad request"))

    report = world.run()

    assert world.right.calls["write_records"] == 1
    assert world.sleeps == []
    assert report.write_failures == 1
    [item] = world.items(Status.OPEN)
    assert "PermanentError" in (item.note or "")


# -- creation -------------------------------------------------------------------------------


def test_creation_on_the_allowed_side_links_the_new_record(storage: Storage) -> None:
    world = World(storage, create_on=["right"])
    _converged(world, 2)
    lonely_left = world.add_left("New.Person@example.com", stage="won", tags=["vip"])
    lonely_right = world.add_right("right.only@example.com")

    report = world.run()

    assert report.created == {"left": 0, "right": 1}
    assert report.auto_resolved == {"create_on": 1}
    assert world.left.write_log == []
    [entry] = world.right.write_log
    assert entry.op is ChangeOp.CREATE
    created = world.right.get(entry.key)
    assert created.fields == {
        "Email": "New.Person@example.com",
        "Stage": "Closed Won",
        "Notes": "first call",
        "Tags": ["vip"],
        "Amount": 100,
    }
    link = world.link_of(lonely_left)
    assert link is not None
    assert link.right_key == entry.key
    assert link.natural_key == "new.person@example.com"
    assert dict(link.base) == {
        "stage": "won",
        "notes": "first call",
        "tags": ["vip"],
        "amount": 100,
    }
    assert storage.get_links(SYNC, Side.RIGHT, [lonely_right]) == {}
    assert len(world.left) == 3

    world.clear_logs()
    again = world.run()
    assert again.total_writes == 0
    assert again.new_links == 0


def test_a_failed_create_is_retried_and_its_item_closed(storage: Storage) -> None:
    world = World(storage, create_on=["right"])
    _converged(world, 1)
    lonely = world.add_left("new@example.com")
    world.right.fail_next("write_records", PermanentError("400"))

    failed = world.run()

    assert failed.write_failures == 1
    [item] = world.items(Status.OPEN)
    assert item.left_key == lonely

    created = world.run()

    assert created.created == {"left": 0, "right": 1}
    assert world.link_of(lonely) is not None
    assert storage.get_item(item.id).status is Status.AUTO_RESOLVED
    assert world.items(Status.OPEN) == []


# -- API-call economy -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "page_left", "page_right", "batch", "fixes_right", "fixes_left"),
    [
        (23, 5, 7, 4, 6, 0),
        (20, 5, 10, 3, 0, 0),
        (20, 5, 10, 3, 7, 2),
        (31, 100, 8, 10, 10, 3),
    ],
)
def test_api_calls_are_the_listing_floor_plus_rereads_plus_writes(
    storage: Storage,
    n: int,
    page_left: int,
    page_right: int,
    batch: int,
    fixes_right: int,
    fixes_left: int,
) -> None:
    caps = {"max_read_batch": batch, "max_write_batch": batch}
    world = World(
        storage,
        left={"page_size": page_left, **caps},
        right={"page_size": page_right, **caps},
    )
    keys = [world.add_pair(i) for i in range(n)]
    assert world.run().total_writes == 0
    world.clock.advance(60)
    for lkey, _ in keys[:fixes_right]:
        world.left.edit(lkey, stage="won")  # source of truth left: written to the right
    for _, rkey in keys[n - fixes_left :] if fixes_left else []:
        world.right.edit(rkey, Notes="newer on the right")  # one-sided: written to the left
    before = (world.left.total_calls, world.right.total_calls)

    report = world.run()

    def per_side(pages: int, fixes: int, sourced: int) -> int:
        # listing + re-read + write of its own fixes + a re-read of the sources of the other
        # side's fixes (verify_source), one batch each
        return math.ceil(n / pages) + 2 * math.ceil(fixes / batch) + math.ceil(sourced / batch)

    expected = {
        "hubspot": per_side(page_left, fixes_left, fixes_right),
        "salesforce": per_side(page_right, fixes_right, fixes_left),
    }
    assert report.api_calls == expected
    assert world.left.total_calls - before[0] == expected["hubspot"]
    assert world.right.total_calls - before[1] == expected["salesforce"]
    assert report.writes == {"left": fixes_left, "right": fixes_right}


# -- leases --------------------------------------------------------------------------------------


def test_a_lease_held_by_another_owner_stops_the_cycle(storage: Storage) -> None:
    world = World(storage)
    world.add_pair(0)
    assert storage.acquire_lease(
        world.rec.lease_name, "someone-else", timedelta(minutes=10), world.clock.now()
    )

    with pytest.raises(LeaseHeldError):
        world.run()

    assert world.left.total_calls == world.right.total_calls == 0
    assert storage.count_links(SYNC) == 0

    world.clock.advance(timedelta(minutes=11))  # the other owner's lease expired
    assert world.run().new_links == 1


def test_two_reconcilers_never_run_a_cycle_of_one_sync_at_once(storage: Storage) -> None:
    world = World(storage)
    world.add_pair(0)
    other = Reconciler(world.sync, storage, clock=world.clock)
    raised: list[BaseException] = []

    def try_other(_: Any) -> None:
        if not raised:
            with pytest.raises(LeaseHeldError) as info:
                other.run_cycle()
            raised.append(info.value)

    world.left.on_call("list_records", try_other)

    world.run()

    assert len(raised) == 1
    assert other.run_cycle().pairs_compared == 1  # released when the first cycle ended


# -- incremental mode -----------------------------------------------------------------------


def test_incremental_cycles_read_only_changes_and_still_fix_them(storage: Storage) -> None:
    opts = {"incremental": True, "page_size": 3}
    world = World(storage, left=opts, right=opts)
    keys = [world.add_pair(i) for i in range(10)]
    world.clock.advance(timedelta(hours=1))
    world.left.edit(keys[0][0], notes="moves the watermark")
    world.right.edit(keys[0][1], Notes="moves the watermark")
    full = world.run()
    assert full.mode == "full"
    assert full.records == {"left": 10, "right": 10}
    assert full.total_writes == 0
    assert world.left.calls["list_records"] == 4

    world.clock.advance(timedelta(hours=1))
    world.left.edit(keys[5][0], stage="won")
    reads: list[list[str]] = []
    world.right.on_call("read_records", reads.append)
    before = dict(world.left.calls), dict(world.right.calls)

    report = world.run()

    assert report.mode == "incremental"
    # Only the records changed since the watermark (minus the overlap) are listed.
    assert report.records == {"left": 2, "right": 2}
    assert world.left.calls["list_records"] - before[0]["list_records"] == 1
    assert world.right.calls["list_records"] - before[1]["list_records"] == 1
    # The unchanged counterpart is read by key, then re-read right before the write.
    assert reads == [[keys[5][1]], [keys[5][1]]]
    assert world.right.get(keys[5][1]).fields["Stage"] == "Closed Won"
    assert report.auto_resolved == {"source_of_truth": 1}

    world.clear_logs()
    quiet = world.run()
    assert quiet.mode == "incremental"
    assert quiet.total_writes == 0
    assert world.writes() == 0


def test_incremental_mode_falls_back_to_a_full_sweep_when_it_is_due(storage: Storage) -> None:
    opts = {"incremental": True}
    world = World(storage, left=opts, right=opts, full_sweep_every=timedelta(hours=6))
    _converged(world, 3)
    world.clock.advance(timedelta(hours=1))
    assert world.run().mode == "incremental"
    world.clock.advance(timedelta(hours=7))
    assert world.run().mode == "full"


def test_an_escalated_conflict_stays_escalated_after_another_field_is_written(
    storage: Storage,
) -> None:
    world = World(storage)  # record-level times only (no per-field timestamps)
    (l0, r0), _ = _converged(world, 2)
    world.left.edit(l0, stage="won")  # a fix for another field of the same record
    world.clock.advance(10)
    world.left.edit(l0, notes="left notes")
    world.clock.advance(2)  # within the 5 s skew tolerance: nobody can tell which is newer
    world.right.edit(r0, Notes="right notes")
    world.clock.advance(60)

    first = world.run()

    assert first.escalated == {"unresolved_conflict": 1}
    assert world.right.get(r0).fields["Stage"] == "Closed Won"
    [item] = world.items(Status.ESCALATED)
    world.clear_logs()
    world.clock.advance(60)

    world.run()  # nobody touched the notes: the conflict still needs an operator

    assert world.left.get(l0).fields["notes"] == "left notes"
    assert world.right.get(r0).fields["Notes"] == "right notes"
    assert world.writes() == 0
    assert storage.get_item(item.id).status is Status.ESCALATED


def test_an_edit_made_during_a_long_cycle_is_seen_by_the_next_incremental_pass(
    storage: Storage,
) -> None:
    opts = {"incremental": True}
    world = World(storage, left=opts, right=opts)
    keys = [world.add_pair(i) for i in range(6)]
    world.clock.advance(timedelta(hours=1))
    world.left.edit(keys[0][0], notes="moves the watermark")
    world.right.edit(keys[0][1], Notes="moves the watermark")
    assert world.run().mode == "full"
    world.clock.advance(timedelta(hours=1))
    world.left.edit(keys[5][0], stage="won")  # its right counterpart is read by key
    during: list[Any] = []

    def a_long_cycle(keys_read: Any) -> None:
        if during:
            return
        during.append(keys_read)  # the right listing is over; the cycle takes 20 minutes
        world.clock.advance(timedelta(minutes=10))
        world.right.edit(keys[3][1], Notes="edited during the cycle")
        world.clock.advance(timedelta(minutes=10))
        world.right.edit(keys[5][1], Amount=100)  # touched again just before it is read

    world.right.on_call("read_records", a_long_cycle)
    assert world.run().mode == "incremental"
    assert during == [[keys[5][1]]]
    world.clock.advance(timedelta(minutes=1))

    report = world.run()

    assert report.mode == "incremental"
    assert world.left.get(keys[3][0]).fields["notes"] == "edited during the cycle"


def test_a_propagated_deletion_closes_the_records_other_items(storage: Storage) -> None:
    world = World(storage, delete_from="left")
    keys = _converged(world, 20)
    world.right.edit(keys[0][1], Amount=5)
    assert world.run().escalated == {"amount": 1}
    world.left.delete(keys[0][0])

    report = world.run()

    assert report.deleted == {"left": 0, "right": 1}
    assert world.link_of(keys[0][0]) is None
    assert world.items(Status.OPEN, Status.ESCALATED) == []
