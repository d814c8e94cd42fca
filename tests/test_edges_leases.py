"""Cycle leases: short, renewed by a heartbeat, and fencing every commit of the cycle.

"Correct at the edges", section 6: after a SIGKILL mid-cycle the rerun was refused for ten
minutes though nothing ran. (The SIGKILL itself is in test_crash_safety.py.)
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from syncrecon import (
    FieldMap,
    LeaseHeldError,
    LeaseLostError,
    NaturalKey,
    Reconciler,
    RetrySettings,
    Side,
    SyncDefinition,
    recency,
)
from syncrecon.storage import Storage
from syncrecon.testing import ManualClock, SimulatedSystem


def _setup(
    storage: Storage, clock: ManualClock, **kw: Any
) -> tuple[SimulatedSystem, SimulatedSystem, Reconciler]:
    left = SimulatedSystem("crm", clock=clock, key_prefix="l")
    right = SimulatedSystem("billing", clock=clock, key_prefix="r")
    for i in range(4):
        left.create({"email": f"p{i}@x.com", "notes": f"n{i}"})
        right.create({"email": f"p{i}@x.com", "notes": f"n{i}"})
    sync = SyncDefinition(
        name="deals",
        left=left,
        right=right,
        fields=[FieldMap(left="notes", right="notes", policy=recency())],
        natural_key=NaturalKey(left="email", right="email"),
    )
    rec = Reconciler(sync, storage, clock=clock, retry=RetrySettings(sleep=lambda s: None), **kw)
    return left, right, rec


def test_the_default_lease_is_short(storage: Storage, clock: ManualClock) -> None:
    _, _, rec = _setup(storage, clock)
    assert timedelta(seconds=30) <= rec.lease_ttl <= timedelta(seconds=60)


def test_a_dead_cycles_lease_blocks_for_at_most_one_ttl_and_the_error_names_it(
    storage: Storage, clock: ManualClock
) -> None:
    _, _, rec = _setup(storage, clock)
    started = clock.now()
    # What a cycle killed right after it took its lease leaves behind.
    assert storage.acquire_lease(rec.lease_name, "dead-worker", rec.lease_ttl, started)
    clock.advance(rec.lease_ttl - timedelta(seconds=1))
    with pytest.raises(LeaseHeldError) as caught:
        rec.run_cycle()
    assert caught.value.owner == "dead-worker"
    assert caught.value.until == started + rec.lease_ttl
    assert "dead-worker holds the lease until" in str(caught.value)
    clock.advance(timedelta(seconds=2))  # one ttl after the kill
    report = rec.run_cycle()
    assert report.new_links == 4


def test_a_heartbeat_renews_the_lease_while_a_long_call_runs(
    storage: Storage, clock: ManualClock
) -> None:
    left, _, rec = _setup(storage, clock, lease_ttl=timedelta(seconds=0.3))
    renewed = threading.Event()
    release = threading.Event()

    def slow_listing(_: object) -> None:
        # The clock moves far past the ttl while the call runs; only a heartbeat keeps the
        # lease (a renewal writes an expiry later than the new now).
        clock.advance(timedelta(minutes=5))
        for _ in range(500):
            held = storage.lease_holder(rec.lease_name)
            if held is not None and held[1] > clock.now():
                renewed.set()
                break
            release.wait(0.01)
        other = Reconciler(rec.sync, storage, clock=clock)
        with pytest.raises(LeaseHeldError):
            other.run_cycle()

    left.on_call("list_records", slow_listing)
    rec.run_cycle()
    assert renewed.is_set()
    assert storage.lease_holder(rec.lease_name) is None  # released at the end


def test_a_cycle_that_lost_its_lease_commits_nothing_more(
    storage: Storage, clock: ManualClock
) -> None:
    left, right, rec = _setup(storage, clock)
    rec.run_cycle()
    clock.advance(60)
    left.edit("l1", notes="new")

    def takeover(_: object) -> None:
        # The cycle stalled past its ttl and another worker took the lease.
        owner, _until = storage.lease_holder(rec.lease_name) or ("?", None)
        storage.release_lease(rec.lease_name, owner)
        assert storage.acquire_lease(rec.lease_name, "usurper", rec.lease_ttl, clock.now())

    right.on_call("write_records", takeover)
    before = storage.get_links("deals", Side.LEFT, ["l1"])
    with pytest.raises(LeaseLostError) as caught:
        rec.run_cycle()
    assert caught.value.owner == "usurper"
    after = storage.get_links("deals", Side.LEFT, ["l1"])
    assert after["l1"].base == before["l1"].base  # the write's commit was refused
    assert storage.list_cycles(sync="deals", limit=10)[0].report["new_links"] == 4  # no 2nd
    assert storage.lease_holder(rec.lease_name) is not None
    assert storage.lease_holder(rec.lease_name)[0] == "usurper"  # not released by the loser
