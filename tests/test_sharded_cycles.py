"""Sharded cycles: one cycle split into shards, each under its own lease, one report.

A sharded cycle must end where an unsharded one ends (same systems, same totals), its
mass-delete guard must count the whole cycle's deletions, and a shard that fails or whose
worker dies must leave the cycle unfinished, with no delete applied, until it is run again.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest

from syncrecon import (
    CycleReport,
    FieldMap,
    LeaseHeldError,
    NaturalKey,
    PermanentError,
    Reconciler,
    Side,
    Storage,
    SyncDefinition,
    merge,
    recency,
    source_of_truth,
)
from syncrecon.storage import MemoryStorage, ShardStore
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import ManualClock, SimulatedSystem

SYNC = "deals"
TOTALS = (
    "records",
    "pairs_compared",
    "new_links",
    "discrepancies_found",
    "auto_resolved",
    "escalated",
    "writes",
    "created",
    "deleted",
    "write_failures",
    "skipped_changed",
    "unknown_fields",
    "halted",
)


class World:
    """Two simulated systems of ``n`` linked deals each, and a reconciler over ``storage``."""

    def __init__(
        self,
        storage: Storage,
        n: int,
        *,
        seed: int = 1,
        partitioned: bool = True,
        **options: Any,
    ) -> None:
        self.storage = storage
        self.clock = ManualClock()
        self.left = SimulatedSystem("hubspot", clock=self.clock, page_size=7)
        self.right = SimulatedSystem("salesforce", clock=self.clock, page_size=5)
        if not partitioned:
            for system in (self.left, self.right):
                system.partitions = None  # type: ignore[assignment,method-assign]
        rng = random.Random(seed)
        for i in range(n):
            self.left.create({"email": f"d{i}@x.io", "stage": "lead", "notes": f"n{i}"})
            self.right.create({"Email": f"D{i}@x.io", "Stage": "lead", "Notes": f"n{i}"})
        self.rng = rng
        sync = SyncDefinition(
            name=SYNC,
            left=self.left,
            right=self.right,
            fields=[
                FieldMap(left="stage", right="Stage", policy=source_of_truth("left")),
                FieldMap(left="notes", right="Notes", policy=recency()),
                FieldMap(left="tags", right="Tags", policy=merge()),
            ],
            natural_key=NaturalKey(left="email", right="Email"),
            create_on=[Side.LEFT, Side.RIGHT],
            delete_from=Side.LEFT,
        )
        options.setdefault("max_delete_fraction", 0.5)
        self.rec = Reconciler(sync, storage, clock=self.clock, **options)

    def drift(self, changes: int) -> None:
        """Seeded changes on both sides: edits, deletions, new records, a new matching pair."""
        rng = self.rng
        for _ in range(changes):
            self.clock.advance(1)
            what = rng.randrange(6)
            lefts, rights = sorted(self.left.records()), sorted(self.right.records())
            if what == 0:
                self.left.edit(rng.choice(lefts), stage=rng.choice(["won", "lost"]))
            elif what == 1:
                self.right.edit(rng.choice(rights), Notes=f"r{rng.randrange(1000)}")
            elif what == 2:
                self.left.edit(rng.choice(lefts), notes=f"l{rng.randrange(1000)}", tags=["a"])
            elif what == 3 and len(lefts) > 5:
                self.left.delete(rng.choice(lefts))
            elif what == 4:
                i = rng.randrange(10_000, 20_000)
                self.left.create({"email": f"new{i}@x.io", "stage": "lead", "notes": "x"})
            else:
                i = rng.randrange(20_000, 30_000)
                self.left.create({"email": f"m{i}@x.io", "stage": "won", "notes": "a"})
                self.right.create({"Email": f"m{i}@x.io", "Stage": "won", "Notes": "b"})
        self.clock.advance(60)

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            {k: dict(r.fields) for k, r in self.left.records().items()},
            {k: dict(r.fields) for k, r in self.right.records().items()},
        )


def totals(report: Any) -> dict[str, Any]:
    out = report.to_dict()
    return {name: out[name] for name in TOTALS}


def _store(kind: str, tmp_path: Any, name: str) -> Storage:
    if kind == "memory":
        return MemoryStorage()
    return SQLiteStorage(str(tmp_path / f"{name}.sqlite"))


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize(("seed", "shards"), [(1, 2), (2, 3), (3, 4), (4, 2)])
@pytest.mark.parametrize("partitioned", [True, False], ids=["partitions", "hashed"])
def test_sharded_cycles_end_where_unsharded_ones_do(
    kind: str, seed: int, shards: int, partitioned: bool, tmp_path: Any
) -> None:
    plain = World(_store(kind, tmp_path, "plain"), 30, seed=seed, partitioned=partitioned)
    sharded = World(_store(kind, tmp_path, "sharded"), 30, seed=seed, partitioned=partitioned)
    for world in (plain, sharded):
        world.rec.run_cycle()  # links everything
        world.drift(25)
    assert plain.state() == sharded.state(), f"seed {seed}: the worlds differ before the cycle"
    expected = plain.rec.run_cycle(full=True)
    got = sharded.rec.run_cycle(full=True, shards=shards)
    assert sharded.state() == plain.state(), f"seed {seed}, {shards} shards"
    assert totals(got) == totals(expected), f"seed {seed}, {shards} shards"
    # And the next cycle too: a converged sync is a fixed point, sharded or not.
    expected = plain.rec.run_cycle(full=True)
    again = sharded.rec.run_cycle(full=True, shards=shards)
    assert totals(again) == totals(expected), f"seed {seed}, {shards} shards, next cycle"
    assert again.total_writes == 0


def test_one_report_stored_as_one_cycle(storage: Storage) -> None:
    world = World(storage, 12)
    world.rec.run_cycle()
    world.drift(10)
    before = storage.list_cycles(sync=SYNC)
    report = world.rec.run_cycle(full=True, shards=3)
    after = storage.list_cycles(sync=SYNC)
    assert len(after) == len(before) + 1
    assert after[0].id == report.cycle_id
    stored = dict(after[0].report)
    assert {name: stored[name] for name in TOTALS} == totals(report)
    assert stored["api_calls"] == report.api_calls
    # API calls of every shard and of the plan and finish steps are counted once each.
    calls = world.left.total_calls + world.right.total_calls
    assert report.total_api_calls <= calls
    assert report.api_calls["hubspot"] > 0
    assert isinstance(storage, ShardStore)
    assert storage.open_shard_plans(SYNC) == []


def test_the_async_door_runs_a_sharded_cycle(tmp_path: Any) -> None:
    """``arun_cycle(shards=n)`` takes the sync door's arguments and ends where it does."""
    sharded, plain = World(_store("sqlite", tmp_path, "a"), 12), World(MemoryStorage(), 12)
    for world in (sharded, plain):
        world.rec.run_cycle()
        world.drift(10)
    report = asyncio.run(sharded.rec.arun_cycle(full=True, shards=2))
    expected = plain.rec.run_cycle(full=True)
    assert sharded.state() == plain.state()
    assert totals(report) == totals(expected)
    assert report.total_writes > 0


def test_the_mass_delete_guard_counts_the_whole_cycle(storage: Storage) -> None:
    world = World(storage, 20, max_delete_fraction=0.1)  # 2 deletions pass, 3 do not
    world.rec.run_cycle()
    for key in ("hu-1", "hu-8", "hu-15"):  # one in each of three partitions
        world.left.delete(key)
    cycle_id = world.rec.plan_sharded_cycle(3)
    plan = storage.get_shard_plan(cycle_id)  # type: ignore[attr-defined]
    parts = plan.spec["partitions"]["left"]
    assert sorted(world.left.partition_of(k, parts) for k in ("hu-1", "hu-8", "hu-15")) == [
        0,
        1,
        2,
    ]
    for shard in range(3):
        world.rec.run_shard(cycle_id, shard, finish=False)
    report = world.rec.finish_sharded_cycle(cycle_id)
    assert report is not None
    assert report.halted is not None
    assert report.deleted == {"left": 0, "right": 0}
    assert len(world.right) == 20  # nothing deleted
    assert report.escalated.get("mass_delete") == 1


def test_a_failed_shard_leaves_the_cycle_unfinished_until_rerun(storage: Storage) -> None:
    world = World(storage, 16)
    world.rec.run_cycle()
    world.left.delete("hu-3")
    world.left.edit("hu-12", stage="won")
    cycles = len(storage.list_cycles(sync=SYNC))
    world.left.fail_next("list_partition", PermanentError("the API fell over"))
    with pytest.raises(PermanentError):
        world.rec.run_cycle(full=True, shards=2)
    assert len(storage.list_cycles(sync=SYNC)) == cycles  # no report: unfinished
    assert "sa-3" in world.right.records()  # and no delete applied
    assert len(storage.open_shard_plans(SYNC)) == 1  # type: ignore[attr-defined]
    with pytest.raises(LeaseHeldError):
        world.rec.run_cycle()  # an unsharded cycle waits for the sharded one
    report = world.rec.run_cycle(shards=2)  # resumes the unfinished cycle
    assert "sa-3" not in world.right.records()
    assert world.right.get("sa-12").fields["Stage"] == "won"
    assert report.deleted == {"left": 0, "right": 1}
    assert len(storage.list_cycles(sync=SYNC)) == cycles + 1


def test_two_workers_never_take_one_shard(storage: Storage) -> None:
    from syncrecon._shards import shard_lease

    world = World(storage, 10)
    world.rec.run_cycle()
    world.left.delete("hu-2")
    cycle_id = world.rec.plan_sharded_cycle(2)
    ttl = world.rec.lease_ttl
    assert storage.acquire_lease(shard_lease(SYNC, 0), "worker-b", ttl, world.clock.now())
    with pytest.raises(LeaseHeldError):
        world.rec.run_shard(cycle_id, 0)
    assert world.rec.run_shard(cycle_id, 1) is None  # shard 0 is not done: not finished
    assert world.rec.finish_sharded_cycle(cycle_id) is None
    assert "sa-2" in world.right.records()
    # Worker b died: its lease expires and another worker redoes the shard, then finishes.
    world.clock.advance(ttl + timedelta(seconds=1))
    report = world.rec.run_shard(cycle_id, 0)
    assert report is not None
    assert report.cycle_id == cycle_id
    assert "sa-2" not in world.right.records()
    assert world.rec.run_shard(cycle_id, 0) is None  # finished: nothing to do


def test_a_shard_done_while_another_worker_finishes_is_finished_too(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Worker a holds the finish lease and has read the results (shard 1 missing) when worker
    # b stores shard 1 and finds the lease held, leaving the finish to a: a must finish it.
    world = World(storage, 10)
    world.rec.run_cycle()
    world.left.edit("hu-1", stage="won")
    cycle_id = world.rec.plan_sharded_cycle(2)
    assert world.rec.run_shard(cycle_id, 0) is None
    real = storage.shard_results  # type: ignore[attr-defined]
    raced: list[CycleReport | None] = []

    def racing(cycle: str) -> Any:
        results = real(cycle)
        if not raced:
            raced.append(None)
            raced[0] = world.rec.run_shard(cycle_id, 1)  # worker b, while a holds the lease
        return results

    monkeypatch.setattr(storage, "shard_results", racing)
    report = world.rec.finish_sharded_cycle(cycle_id)  # worker a
    assert raced == [None]  # b left the finish to a
    assert report is not None
    assert report.cycle_id == cycle_id
    assert world.right.get("sa-1").fields["Stage"] == "won"
    assert storage.get_shard_plan(cycle_id) is None  # type: ignore[attr-defined]
    assert world.rec.run_cycle().writes == {"left": 0, "right": 0}  # not skipped: not stuck


def test_a_shard_is_done_once(storage: Storage) -> None:
    world = World(storage, 8)
    world.rec.run_cycle()
    world.left.edit("hu-1", stage="won")
    cycle_id = world.rec.plan_sharded_cycle(2)
    world.rec.run_shard(cycle_id, 0, finish=False)
    writes = len(world.right.write_log)
    calls = world.left.total_calls
    world.rec.run_shard(cycle_id, 0, finish=False)  # a retried task: a no-op
    assert world.left.total_calls == calls
    assert len(world.right.write_log) == writes
    assert world.rec.plan_sharded_cycle(2) == cycle_id  # one sharded cycle at a time
    assert world.rec.finish_sharded_cycle(cycle_id) is None
    world.rec.run_shard(cycle_id, 1, finish=False)
    report = world.rec.finish_sharded_cycle(cycle_id)
    assert report is not None
    assert world.right.get("sa-1").fields["Stage"] == "won"


def test_incremental_sharded_cycles_see_changes_of_other_shards_pairs(tmp_path: Any) -> None:
    # Right keys run the other way round: each shard's right records are the other's pairs.
    for sharded in (False, True):
        storage = SQLiteStorage(str(tmp_path / f"inc-{sharded}.sqlite"))
        clock = ManualClock()
        left = SimulatedSystem("hubspot", clock=clock, incremental=True, page_size=3)
        right = SimulatedSystem("salesforce", clock=clock, incremental=True, page_size=3)
        for i in range(10):
            left.create({"email": f"d{i}@x.io", "notes": "a"})
        for i in reversed(range(10)):
            right.create({"Email": f"d{i}@x.io", "Notes": "a"})
        sync = SyncDefinition(
            name=SYNC,
            left=left,
            right=right,
            fields=[FieldMap(left="notes", right="Notes", policy=recency())],
            natural_key=NaturalKey(left="email", right="Email"),
        )
        rec = Reconciler(sync, storage, clock=clock)
        rec.run_cycle()
        clock.advance(600)
        right.edit("sa-1", Notes="from the right")  # linked to hu-10 (the other half)
        left.edit("hu-2", notes="from the left")
        clock.advance(600)
        report = rec.run_cycle(shards=2) if sharded else rec.run_cycle()
        assert report.mode == "incremental"
        assert left.get("hu-10").fields["notes"] == "from the right"
        assert right.get("sa-9").fields["Notes"] == "from the left"
        assert report.writes == {"left": 1, "right": 1}
        storage.close()
