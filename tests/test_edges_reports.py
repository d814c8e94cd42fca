"""Edges of "Correct at the edges" that each earlier fix left without a test of its own.

- a late webhook older than a value a cycle synced is stale for a source-of-truth field too
  (the chaos tests cover the recency case);
- ``CycleReport.records`` counts the records that came back, not the keys asked for;
- ``CycleReport.listing_missed`` counts the linked records a full sweep's listing missed.
"""

from __future__ import annotations

from datetime import timedelta

from fastloop_helpers import World
from syncrecon import FieldMap, NaturalKey, Reconciler, Side, SyncDefinition, recency
from syncrecon.storage import Storage
from syncrecon.testing import ManualClock, SimulatedSystem


def test_a_late_webhook_older_than_a_synced_source_of_truth_value_is_stale(
    storage: Storage,
) -> None:
    world = World(storage, inline=False)
    world.clock.advance(5)
    world.left.edit("h1", stage="won")
    late = world.request("hubspot", [world.change("h1", "stage", "won", at=world.clock.now())])
    world.clock.advance(5)
    world.left.edit("h1", stage="lost")  # this edit's webhook is lost
    world.clock.advance(5)
    assert world.reconciler.run_cycle().writes == {"left": 0, "right": 1}
    synced = world.right.get("s1").fields["StageName"]
    assert synced == "Closed Lost"  # the newer value, mapped
    world.clock.advance(5)
    assert world.handler.handle(late).status == 200  # signed, inside the tolerance
    report = world.handler.process_pending()
    assert report.outcomes == {"stale": 1}
    assert world.right.get("s1").fields["StageName"] == synced  # not taken back to "won"


def _linked(
    storage: Storage, n: int
) -> tuple[ManualClock, SimulatedSystem, SimulatedSystem, Reconciler]:
    clock = ManualClock()
    crm = SimulatedSystem("crm", clock=clock)
    erp = SimulatedSystem("erp", clock=clock)
    for i in range(n):
        crm.create({"email": f"u{i}@x.io", "notes": f"n{i}"})
    sync = SyncDefinition(
        name="deals",
        left=crm,
        right=erp,
        fields=[FieldMap(left="notes", right="Notes", policy=recency())],
        natural_key=NaturalKey(left="email", right="Email"),
        create_on=[Side.RIGHT],
    )
    rec = Reconciler(sync, storage, clock=clock)
    assert rec.run_cycle().created == {"left": 0, "right": n}
    return clock, crm, erp, rec


def test_records_count_what_came_back_not_what_was_asked(storage: Storage) -> None:
    clock, _, erp, rec = _linked(storage, 10)
    for key in sorted(erp.records())[:6]:
        erp.delete(key)  # the links still name them: the cycle asks for them by key
    clock.advance(timedelta(hours=1))
    report = rec.run_cycle(full=True)
    assert report.records == {"left": 10, "right": 4}


def test_listing_missed_counts_linked_records_a_full_sweep_did_not_list(
    storage: Storage,
) -> None:
    clock, crm, _, rec = _linked(storage, 10)
    clock.advance(timedelta(minutes=5))
    crm.truncate_listing(4)
    report = rec.run_cycle(full=True)
    assert report.listing_missed == {"crm": 6}
    assert report.writes == {"left": 0, "right": 0}  # read by key: nothing lost, nothing deleted
    crm.truncate_listing(None)
    clock.advance(timedelta(minutes=5))
    assert rec.run_cycle(full=True).listing_missed == {}
