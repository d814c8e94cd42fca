"""The operator queue: list, show, resolve (left, right, a given value), dismiss, assign, CLI.

Escalations come from a real :class:`~syncrecon.Reconciler` over two simulated systems on
every storage backend; the queue then writes through the same connectors, so each test checks
the systems' write logs, the item, the base and that the next cycle writes nothing.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from syncrecon import (
    ConfigurationError,
    Direction,
    FieldMap,
    LeaseHeldError,
    NaturalKey,
    PermanentError,
    Reconciler,
    RetrySettings,
    Side,
    Status,
    SyncDefinition,
    SyncReconError,
    escalate,
    source_of_truth,
    value_map,
)
from syncrecon._reconciler import fingerprint
from syncrecon.queue import (
    ItemClosedError,
    ItemNotFoundError,
    OperatorQueue,
    QueueError,
    ResolutionOutcome,
    is_record_level,
    load_syncs,
)
from syncrecon.queue._cli import register_cli, run_cli
from syncrecon.storage import Discrepancy, ItemUpdate, Step, Storage
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import ManualClock, SimulatedSystem

SYNC = "deals"
STAGES = value_map({"lead": "Lead", "won": "Closed Won", "lost": "Closed Lost"})


def make_sync(clock: ManualClock, name: str = SYNC) -> SyncDefinition:
    """crm (left) and erp (right): amount and stage escalate, region flows left to right."""
    crm = SimulatedSystem("crm", clock=clock)
    erp = SimulatedSystem("erp", clock=clock)
    return SyncDefinition(
        name=name,
        left=crm,
        right=erp,
        fields=[
            FieldMap(left="amount", right="Amount", policy=escalate("deal_value")),
            FieldMap(left="stage", right="Stage", policy=escalate("stage"), transform=STAGES),
            FieldMap(
                left="region",
                right="Region",
                policy=escalate("region"),
                direction=Direction.LEFT_TO_RIGHT,
            ),
            FieldMap(left="notes", right="Notes", policy=source_of_truth("left")),
        ],
        natural_key=NaturalKey(left="email", right="Email"),
    )


class World:
    """Two simulated systems, a reconciler and an operator queue over one storage."""

    def __init__(
        self, storage: Storage, clock: ManualClock, sync: SyncDefinition | None = None
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.sync = sync or make_sync(clock)
        self.left: SimulatedSystem = self.sync.left  # type: ignore[assignment]
        self.right: SimulatedSystem = self.sync.right  # type: ignore[assignment]
        retry = RetrySettings(attempts=2, sleep=lambda _: None)
        self.rec = Reconciler(self.sync, storage, clock=clock, retry=retry)
        self.queue = OperatorQueue(storage, [self.sync], clock=clock, retry=retry)

    def pair(self, i: int, amount: Any = 100, stage: str = "lead", region: str = "emea") -> Any:
        left = self.left.create(
            {"email": f"u{i}@example.com", "amount": amount, "stage": stage, "region": region}
        )
        right = self.right.create(
            {
                "Email": f"U{i}@example.com",
                "Amount": amount,
                "Stage": STAGES.to_right(stage),
                "Region": region,
            }
        )
        return left, right

    def cycle(self) -> Any:
        self.clock.advance(60)
        return self.rec.run_cycle()

    def escalated(self, field: str | None = None) -> list[Discrepancy]:
        return self.queue.list(status=Status.ESCALATED, field=field)

    def base(self, left_key: str) -> dict[str, Any]:
        link = self.storage.get_links(SYNC, Side.LEFT, [left_key])[left_key]
        return dict(link.base)

    def clear_logs(self) -> None:
        self.left.write_log.clear()
        self.right.write_log.clear()


@pytest.fixture
def world(storage: Storage, clock: ManualClock) -> World:
    return World(storage, clock)


def amount_conflict(world: World, *, left: Any = 150, right: Any = None) -> tuple[Any, int]:
    """A linked pair whose amount was edited (left to 150 by default) and escalated."""
    keys = world.pair(1)
    world.cycle()
    if left is not None:
        world.left.edit(keys[0], amount=left)
    if right is not None:
        world.right.edit(keys[1], Amount=right)
    report = world.cycle()
    assert report.escalated == {"deal_value": 1}
    (item,) = world.escalated("amount")
    assert item.id is not None
    world.clear_logs()
    return keys, item.id


def assert_converged(world: World) -> None:
    world.clear_logs()
    report = world.cycle()
    assert report.total_writes == 0
    assert report.discrepancies_found == 0
    assert world.queue.list() == []


# --------------------------------------------------------------------------------------------
# Resolving a field


def test_take_left_writes_the_right_system_and_closes_the_item(world: World) -> None:
    (lk, rk), item_id = amount_conflict(world)
    opened = world.storage.get_item(item_id).detected_at
    world.clock.advance(timedelta(hours=2))
    result = world.queue.resolve(item_id, take="left", by="ada", note="checked the contract")
    now = world.clock.now()

    assert result.outcome is ResolutionOutcome.RESOLVED
    assert result.closed
    assert result.written == (Side.RIGHT,)
    assert world.left.write_log == []
    assert [(e.key, dict(e.fields)) for e in world.right.write_log] == [(rk, {"Amount": 150})]
    item = world.storage.get_item(item_id)
    assert item.status is Status.RESOLVED
    assert item.resolution == 150
    assert item.resolved_at == now
    assert item.resolved_at - opened == timedelta(hours=2)
    assert item.assignee == "ada"
    assert item.note is not None
    assert item.note.startswith("ada: took crm's value 150, written to erp")  # systems named
    assert "checked the contract" in item.note
    assert world.base(lk)["amount"] == 150
    assert_converged(world)


def test_take_right_writes_the_left_system(world: World) -> None:
    (lk, _rk), item_id = amount_conflict(world, left=None, right=80)
    result = world.queue.resolve(item_id, take="right")
    assert result.written == (Side.LEFT,)
    assert world.right.write_log == []
    assert [(e.key, dict(e.fields)) for e in world.left.write_log] == [(lk, {"amount": 80})]
    assert world.storage.get_item(item_id).resolution == 80
    assert world.base(lk)["amount"] == 80
    assert_converged(world)


def test_a_given_value_is_written_to_both_systems(world: World) -> None:
    (lk, rk), item_id = amount_conflict(world, left=150, right=120)
    result = world.queue.resolve(item_id, value=135)
    assert result.written == (Side.LEFT, Side.RIGHT)
    assert [dict(e.fields) for e in world.left.write_log] == [{"amount": 135}]
    assert [dict(e.fields) for e in world.right.write_log] == [{"Amount": 135}]
    assert world.base(lk)["amount"] == 135
    assert world.left.get(lk).fields["amount"] == 135
    assert world.right.get(rk).fields["Amount"] == 135
    assert_converged(world)


def test_values_go_through_the_fields_transform(world: World) -> None:
    lk, _rk = world.pair(1)
    world.cycle()
    world.left.edit(lk, stage="won")
    world.cycle()
    (item,) = world.escalated("stage")
    assert item.id is not None
    assert (item.left_value, item.right_value) == ("won", "lead")  # the left vocabulary
    world.clear_logs()
    world.queue.resolve(item.id, take="left")
    assert [dict(e.fields) for e in world.right.write_log] == [{"Stage": "Closed Won"}]
    assert world.base(lk)["stage"] == "won"
    assert_converged(world)


def test_the_written_values_are_in_the_echo_ledger(world: World) -> None:
    (_lk, rk), item_id = amount_conflict(world)
    world.queue.resolve(item_id, take="left")
    now = world.clock.now()
    echo = world.storage.find_echo(SYNC, Side.RIGHT, rk, "Amount", fingerprint(150), now)
    assert echo is not None
    assert world.storage.find_echo(SYNC, Side.RIGHT, rk, "Amount", fingerprint(100), now) is None


def test_the_echo_is_remembered_before_the_write_with_the_decisions_time(world: World) -> None:
    # The webhook a write causes can arrive before the write's answer: its echo entry must be
    # committed first, timed by the operator's decision (the edit the value copies).
    (_lk, rk), item_id = amount_conflict(world)
    world.clock.advance(timedelta(minutes=5))
    decided = world.clock.now()
    seen_during_write: list[int | None] = []

    def check(_: object) -> None:
        seen_during_write.append(
            world.storage.find_echo(SYNC, Side.RIGHT, rk, "Amount", fingerprint(150), decided)
        )

    world.right.on_call("write_records", check)
    world.queue.resolve(item_id, take="left")
    assert len(seen_during_write) == 1
    assert seen_during_write[0] is not None
    times = world.storage.echo_times(SYNC, [(Side.RIGHT, rk)], decided)
    assert times == {(Side.RIGHT, rk, "Amount", fingerprint(150)): decided}


def test_the_order_guard_learns_the_decision(world: World) -> None:
    (lk, _rk), item_id = amount_conflict(world)
    world.clock.advance(timedelta(minutes=5))
    decided = world.clock.now()
    world.queue.resolve(item_id, take="left")
    assert world.storage.get_field_times(SYNC, [(lk, "amount")]) == {(lk, "amount"): decided}


def test_a_record_a_worker_is_writing_is_not_resolved_now(world: World) -> None:
    (lk, rk), item_id = amount_conflict(world)
    now = world.clock.now()
    worker_claim = world.storage.claim_records(
        "worker-1", [f"{SYNC}:right:{rk}"], now=now, lease=timedelta(seconds=30)
    )
    assert worker_claim == {f"{SYNC}:right:{rk}"}
    with pytest.raises(LeaseHeldError, match="being written by a worker or a cycle"):
        world.queue.resolve(item_id, take="left")
    assert world.right.write_log == []
    assert world.storage.get_item(item_id).status is Status.ESCALATED
    world.storage.release_records("worker-1", [f"{SYNC}:right:{rk}"])
    assert world.queue.resolve(item_id, take="left").outcome is ResolutionOutcome.RESOLVED
    # The resolution's own claims are released: a worker can claim both records again.
    records = [f"{SYNC}:left:{lk}", f"{SYNC}:right:{rk}"]
    assert world.storage.claim_records(
        "worker-1", records, now=world.clock.now(), lease=timedelta(seconds=30)
    ) == set(records)


def test_nothing_needs_writing_when_both_systems_hold_the_value(world: World) -> None:
    (lk, rk), item_id = amount_conflict(world)
    world.right.edit(rk, Amount=150)  # someone fixed it by hand meanwhile
    world.clear_logs()
    result = world.queue.resolve(item_id, take="left")
    assert result.outcome is ResolutionOutcome.RESOLVED
    assert result.written == ()
    assert world.left.write_log == world.right.write_log == []
    assert world.base(lk)["amount"] == 150
    assert_converged(world)


# --------------------------------------------------------------------------------------------
# Safety: never overwrite a value changed since the item was opened


@pytest.mark.parametrize("edited", ["left", "right"])
def test_a_value_changed_since_opening_is_not_overwritten(world: World, edited: str) -> None:
    (lk, rk), item_id = amount_conflict(world)
    if edited == "left":
        world.left.edit(lk, amount=175)
    else:
        world.right.edit(rk, Amount=175)
    world.clear_logs()
    result = world.queue.resolve(item_id, take="left")
    assert result.outcome is ResolutionOutcome.CHANGED
    assert not result.closed
    assert result.written == ()
    assert world.left.write_log == world.right.write_log == []
    item = world.storage.get_item(item_id)
    assert item.status is Status.ESCALATED
    assert item.resolved_at is None
    assert item.note is not None
    system = "crm" if edited == "left" else "erp"
    assert item.note.startswith(f"changed since opened: {system} is now 175 (was ")
    assert world.base(lk)["amount"] == 100
    assert [i.id for i in world.queue.list()] == [item_id]  # still in the queue


def test_an_open_item_goes_back_to_review_as_escalated(world: World) -> None:
    (lk, _rk), item_id = amount_conflict(world)
    world.storage.commit(
        Step(
            at=world.clock.now(),
            item_updates=[ItemUpdate(id=item_id, status=Status.OPEN)],
        )
    )
    world.left.edit(lk, amount=1)
    result = world.queue.resolve(item_id, value=5)
    assert result.outcome is ResolutionOutcome.CHANGED
    assert world.storage.get_item(item_id).status is Status.ESCALATED


def test_a_record_deleted_since_opening_is_not_written(world: World) -> None:
    (_lk, rk), item_id = amount_conflict(world)
    world.right.delete(rk)
    result = world.queue.resolve(item_id, take="left")
    assert result.outcome is ResolutionOutcome.CHANGED
    assert f"the erp record {rk} is gone" in result.message
    assert world.left.write_log == []


def test_a_rejected_write_leaves_the_item_active_and_the_base_unmoved(world: World) -> None:
    (lk, rk), item_id = amount_conflict(world)
    world.right.reject(rk, "Amount is locked by an approval process")
    result = world.queue.resolve(item_id, take="left")
    assert result.outcome is ResolutionOutcome.FAILED
    assert result.status is Status.ESCALATED
    item = world.storage.get_item(item_id)
    assert item.status is Status.ESCALATED
    assert item.resolved_at is None
    assert item.note is not None
    assert "Amount is locked by an approval process" in item.note
    assert world.right.write_log == []
    assert world.base(lk)["amount"] == 100
    # Once the system accepts it, the same resolution goes through.
    world.right.faults.rejected.clear()
    assert world.queue.resolve(item_id, take="left").outcome is ResolutionOutcome.RESOLVED
    assert world.base(lk)["amount"] == 150
    assert_converged(world)


def test_half_a_two_sided_write_does_not_move_the_base(world: World) -> None:
    (lk, rk), item_id = amount_conflict(world, left=150, right=120)
    world.right.reject(rk)
    result = world.queue.resolve(item_id, value=135)
    assert result.outcome is ResolutionOutcome.FAILED
    assert result.written == (Side.LEFT,)
    assert world.left.get(lk).fields["amount"] == 135
    assert world.base(lk)["amount"] == 100
    assert world.storage.get_item(item_id).status is Status.ESCALATED
    # The left write is ours: the fast loop will know its webhook.
    now = world.clock.now()
    assert world.storage.find_echo(SYNC, Side.LEFT, lk, "amount", fingerprint(135), now)
    # Trying again: left already holds the chosen value, which is not a change by someone.
    world.right.faults.rejected.clear()
    world.clear_logs()
    again = world.queue.resolve(item_id, value=135)
    assert again.outcome is ResolutionOutcome.RESOLVED
    assert again.written == (Side.RIGHT,)
    assert world.left.write_log == []
    assert_converged(world)


def test_a_failing_connector_call_is_reported_not_raised(world: World) -> None:
    (lk, _rk), item_id = amount_conflict(world)
    world.right.fail_next("write_records", PermanentError("boom", system="erp"))
    result = world.queue.resolve(item_id, take="left")
    assert result.outcome is ResolutionOutcome.FAILED
    assert "PermanentError: boom" in result.message
    world.left.fail_next("read_records", PermanentError("down", system="crm"))
    result = world.queue.resolve(item_id, take="left")
    assert result.outcome is ResolutionOutcome.FAILED
    assert "reading crm failed" in result.message
    assert world.base(lk)["amount"] == 100


def test_a_one_way_field_is_never_written_against_its_direction(world: World) -> None:
    lk, rk = world.pair(1)
    world.cycle()
    world.right.edit(rk, Region="apac")
    world.cycle()
    (item,) = world.escalated("region")
    assert item.id is not None
    world.clear_logs()
    with pytest.raises(QueueError, match="never flows to"):
        world.queue.resolve(item.id, take="right")
    assert world.left.write_log == []
    assert world.storage.get_item(item.id).status is Status.ESCALATED
    # Taking the left value writes right, the way the field flows.
    assert world.queue.resolve(item.id, take="left").written == (Side.RIGHT,)
    assert world.base(lk)["region"] == "emea"


def test_a_value_that_does_not_map_is_refused_before_writing(
    storage: Storage, clock: ManualClock
) -> None:
    sync = make_sync(clock)
    strict = FieldMap(
        left="stage",
        right="Stage",
        policy=escalate("stage"),
        transform=value_map({"lead": "Lead", "won": "Closed Won"}, strict=True),
    )
    sync = SyncDefinition(
        name=SYNC,
        left=sync.left,
        right=sync.right,
        fields=[f if f.left != "stage" else strict for f in sync.fields],
        natural_key=sync.natural_key,
    )
    world = World(storage, clock, sync)
    lk, _rk = world.pair(1)
    world.cycle()
    world.left.edit(lk, stage="won")
    world.cycle()
    (item,) = world.escalated("stage")
    assert item.id is not None
    world.clear_logs()
    with pytest.raises(QueueError, match="does not map to erp's vocabulary"):
        world.queue.resolve(item.id, value="nonsense")
    assert world.left.write_log == world.right.write_log == []


# --------------------------------------------------------------------------------------------
# Choosing, and what needs the sync definition


def test_resolving_needs_the_sync_definition_reading_does_not(world: World) -> None:
    _keys, item_id = amount_conflict(world)
    reader = OperatorQueue(world.storage, clock=world.clock)
    assert [i.id for i in reader.list()] == [item_id]
    assert reader.show(item_id).item.id == item_id
    with pytest.raises(ConfigurationError, match="needs that sync definition"):
        reader.resolve(item_id, take="left")
    assert world.right.write_log == []


def test_exactly_one_choice_for_a_field_item(world: World) -> None:
    _keys, item_id = amount_conflict(world)
    with pytest.raises(QueueError, match="exactly one"):
        world.queue.resolve(item_id)
    with pytest.raises(QueueError, match="exactly one"):
        world.queue.resolve(item_id, take="left", value=3)
    with pytest.raises(QueueError, match="take must be"):
        world.queue.resolve(item_id, take="middle")  # type: ignore[arg-type]
    assert world.storage.get_item(item_id).status is Status.ESCALATED


def test_none_is_a_value_too(world: World) -> None:
    (lk, rk), item_id = amount_conflict(world)
    world.queue.resolve(item_id, value=None)
    assert world.left.get(lk).fields["amount"] is None
    assert world.right.get(rk).fields["Amount"] is None
    assert_converged(world)


def test_two_sync_definitions_with_one_name_are_refused(
    storage: Storage, clock: ManualClock
) -> None:
    with pytest.raises(ConfigurationError, match="two sync definitions"):
        OperatorQueue(storage, [make_sync(clock), make_sync(clock)])


def test_someone_else_resolving_the_item_holds_it(world: World) -> None:
    _keys, item_id = amount_conflict(world)
    assert world.storage.acquire_lease(
        f"queue-item:{item_id}", "another-operator", timedelta(minutes=5), world.clock.now()
    )
    with pytest.raises(LeaseHeldError):
        world.queue.resolve(item_id, take="left")
    assert world.right.write_log == []


# --------------------------------------------------------------------------------------------
# Dismiss, assign, closed items, record-level items


def test_dismiss_is_recorded_and_writes_nothing(world: World) -> None:
    (lk, _rk), item_id = amount_conflict(world)
    world.clock.advance(timedelta(minutes=30))
    item = world.queue.dismiss(item_id, "test data, ignore", by="bob")
    assert item.status is Status.DISMISSED
    assert item.resolved_at == world.clock.now()
    assert item.note == "bob: dismissed: test data, ignore"
    assert item.assignee == "bob"
    assert world.left.write_log == world.right.write_log == []
    assert world.base(lk)["amount"] == 100
    assert world.queue.list() == []
    # The systems still differ: the next cycle finds it again and asks again.
    world.cycle()
    (again,) = world.escalated("amount")
    assert again.id != item_id
    with pytest.raises(QueueError, match="needs a reason"):
        world.queue.dismiss(again.id or 0, "  ")


def test_assign_sets_and_clears_the_assignee_and_keeps_the_status(world: World) -> None:
    _keys, item_id = amount_conflict(world)
    item = world.queue.assign(item_id, "carol")
    assert item.assignee == "carol"
    assert item.status is Status.ESCALATED
    assert [i.id for i in world.queue.list(assignee="carol")] == [item_id]
    assert world.queue.list(assignee="") == []
    # A cycle that sees the item again keeps its assignee.
    world.cycle()
    assert world.storage.get_item(item_id).assignee == "carol"
    assert world.queue.assign(item_id, None).assignee is None
    assert [i.id for i in world.queue.list(assignee="")] == [item_id]


def test_closed_items_cannot_be_closed_again(world: World) -> None:
    _keys, item_id = amount_conflict(world)
    world.queue.resolve(item_id, take="left")
    for act in (
        lambda: world.queue.resolve(item_id, take="right"),
        lambda: world.queue.dismiss(item_id, "again"),
        lambda: world.queue.assign(item_id, "dan"),
    ):
        with pytest.raises(ItemClosedError, match=f"item {item_id} is resolved already") as info:
            act()
        assert isinstance(info.value, SyncReconError)
        assert isinstance(info.value, ValueError)
    with pytest.raises(ItemNotFoundError):
        world.queue.resolve(999_999, take="left")
    with pytest.raises(LookupError):
        world.queue.show(999_999)


def test_record_level_items_are_acknowledged(world: World) -> None:
    world.left.create({"email": "dup@example.com", "amount": 1})
    world.left.create({"email": "DUP@example.com", "amount": 2})
    world.right.create({"Email": "dup@example.com", "Amount": 1})
    world.cycle()
    items = world.queue.list(category="possible_duplicate")
    assert len(items) == 3
    assert all(is_record_level(i) for i in items)
    first = items[0].id
    assert first is not None
    with pytest.raises(QueueError, match="acknowledged without a value"):
        world.queue.resolve(first, take="left")
    result = world.queue.resolve(first, by="erin")
    assert result.outcome is ResolutionOutcome.ACKNOWLEDGED
    item = world.storage.get_item(first)
    assert item.status is Status.RESOLVED
    assert item.resolved_at == world.clock.now()
    assert item.note == "erin: acknowledged"
    assert world.left.write_log == world.right.write_log == []


def test_resolving_schema_drift_acknowledges_it(world: World) -> None:
    drift = Discrepancy(
        sync=SYNC,
        field="stage",
        status=Status.ESCALATED,
        detected_at=world.clock.now(),
        rule="schema_drift",
        category="schema_drift",
        explanation="right field 'Stage' became a multi-select",
    )
    (item_id,) = world.storage.commit(Step(at=world.clock.now(), new_items=[drift]))
    view = world.queue.show(item_id)
    assert view.record_level
    assert "became a multi-select" in str(view)
    # Lifting a quarantine says who decides and confirms it (tests/test_queue_drift.py).
    with pytest.raises(QueueError, match="who decides"):
        world.queue.resolve(item_id)
    result = world.queue.resolve(item_id, by="ops", confirm=True)
    assert result.outcome is ResolutionOutcome.ACKNOWLEDGED
    assert "quarantine is lifted" in (world.storage.get_item(item_id).note or "")
    assert world.queue.list(category="schema_drift") == []


def test_a_quarantined_field_is_not_written_until_its_drift_is_resolved(world: World) -> None:
    (_lk, rk), item_id = amount_conflict(world)
    drift = Discrepancy(
        sync=SYNC,
        field="amount",
        status=Status.ESCALATED,
        detected_at=world.clock.now(),
        rule="schema",
        category="schema_drift",
        explanation="right field 'Amount' became text",
    )
    (drift_id,) = world.storage.commit(Step(at=world.clock.now(), new_items=[drift]))
    with pytest.raises(QueueError, match=f"quarantined by schema drift \\(item {drift_id}\\)"):
        world.queue.resolve(item_id, take="left")
    assert world.right.write_log == []
    world.queue.resolve(drift_id, by="ops", confirm=True)
    assert world.queue.resolve(item_id, take="left").outcome is ResolutionOutcome.RESOLVED
    assert world.right.get(rk).fields["Amount"] == 150


# --------------------------------------------------------------------------------------------
# Listing and showing


def test_list_filters(world: World) -> None:
    k1 = world.pair(1)
    k2 = world.pair(2)
    world.cycle()
    world.left.edit(k1[0], amount=1)
    world.cycle()
    world.clock.advance(timedelta(hours=5))
    world.left.edit(k2[0], amount=2, stage="won")
    world.cycle()
    amount1 = world.queue.list(key=k1[1])
    assert [(i.field, i.left_key) for i in amount1] == [("amount", k1[0])]
    assert len(world.queue.list()) == 3
    assert {i.category for i in world.queue.list(category="stage")} == {"stage"}
    assert [i.left_key for i in world.queue.list(field="amount")] == [k2[0], k1[0]]
    old = world.queue.list(older_than=timedelta(hours=4))
    assert [i.left_key for i in old] == [k1[0]]
    assert world.queue.list(older_than=timedelta(hours=1e9)) == []  # past the calendar
    assert world.queue.list(sync="other") == []
    assert len(world.queue.list(limit=1)) == 1
    assert world.queue.list(status="resolved") == []
    assert len(world.queue.list(status=None)) == 3
    with pytest.raises(QueueError, match="unknown status"):
        world.queue.list(status="pending")
    with pytest.raises(QueueError, match="limit"):
        world.queue.list(limit=0)


def test_show_gives_values_base_explanation_and_history(world: World) -> None:
    (lk, rk), first = amount_conflict(world)
    world.queue.resolve(first, take="left")
    world.left.edit(lk, amount=175, stage="won")
    world.cycle()
    (current,) = world.escalated("amount")
    assert current.id is not None
    view = world.queue.show(current.id)
    assert (view.left_value, view.right_value, view.base_value) == (175, 150, 150)
    assert view.has_base
    assert view.linked
    assert view.current_base == 150
    assert "deal_value" in view.explanation
    assert [h.field for h in view.history] == ["stage", "amount"]
    assert view.history[1].id == first
    text = str(view)
    for part in (  # the systems by their names: crm (left) and erp (right)
        f"item {current.id}: escalated (deal_value)",
        f"record: crm {lk} / erp {rk}",
        "crm:    175",
        "erp:    150",
        "base:   150",
        f"#{first}",
        "-> 150",
    ):
        assert part in text
    data = json.loads(json.dumps(view.to_dict()))
    assert data["left_value"] == 175
    assert [h["id"] for h in data["history"]] == [h.id for h in view.history]
    assert len(world.queue.show(current.id, history=1).history) == 1


# --------------------------------------------------------------------------------------------
# The async front door


@pytest.mark.parametrize(
    "name",
    [
        "list", "page", "count", "facets", "show", "group", "suggest", "resolve", "dismiss",
        "assign", "preview", "resolve_many", "acknowledge_many", "dismiss_many", "assign_many",
    ],
)  # fmt: skip
def test_sync_and_async_doors_take_the_same_arguments(name: str) -> None:
    sync_door = inspect.signature(getattr(OperatorQueue, name))
    async_door = inspect.signature(getattr(OperatorQueue, f"a{name}"))
    assert list(sync_door.parameters.values()) == list(async_door.parameters.values())
    assert inspect.iscoroutinefunction(getattr(OperatorQueue, f"a{name}"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_async_doors(world: World) -> None:
    (_lk, rk), item_id = amount_conflict(world)
    assert [i.id for i in await world.queue.alist()] == [item_id]
    assert (await world.queue.ashow(item_id)).left_value == 150
    assert (await world.queue.aassign(item_id, "fay")).assignee == "fay"
    result = await world.queue.aresolve(item_id, take="left")
    assert result.outcome is ResolutionOutcome.RESOLVED
    assert world.right.get(rk).fields["Amount"] == 150
    world.right.edit(rk, Amount=1)
    world.cycle()
    (again,) = world.escalated("amount")
    assert again.id is not None
    assert (await world.queue.adismiss(again.id, "fine")).status is Status.DISMISSED


class AsyncSystem:
    """A simulated system behind ``async def`` methods."""

    def __init__(self, inner: SimulatedSystem) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities

    async def list_records(self, *, since: Any, cursor: str | None) -> Any:
        return self.inner.list_records(since=since, cursor=cursor)

    async def read_records(self, keys: Any) -> Any:
        return self.inner.read_records(keys)

    async def write_records(self, changes: Any) -> Any:
        return self.inner.write_records(changes)

    async def describe_fields(self) -> Any:
        return self.inner.describe_fields()


@pytest.mark.anyio
async def test_aresolve_calls_async_connectors_on_the_loop(
    memory_storage: Storage, clock: ManualClock
) -> None:
    base = make_sync(clock)
    left, right = base.left, base.right
    assert isinstance(left, SimulatedSystem)
    assert isinstance(right, SimulatedSystem)
    sync = SyncDefinition(
        name=SYNC,
        left=AsyncSystem(left),
        right=AsyncSystem(right),
        fields=base.fields,
        natural_key=base.natural_key,
    )
    world = World(memory_storage, clock, sync)
    world.left, world.right = left, right
    (_lk, rk), item_id = amount_conflict(world)
    result = await world.queue.aresolve(item_id, take="left")
    assert result.outcome is ResolutionOutcome.RESOLVED
    assert right.get(rk).fields["Amount"] == 150
    # The sync door works with async connectors too (a private event-loop thread).
    world.right.edit(rk, Amount=3)
    world.cycle()
    (again,) = world.escalated("amount")
    assert again.id is not None
    assert world.queue.resolve(again.id, take="right").written == (Side.LEFT,)


# --------------------------------------------------------------------------------------------
# Loading sync definitions by import path


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A module on ``sys.path`` that builds a sync, a reconciler, a handler and a worker."""
    name = f"queue_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            from syncrecon import Reconciler, RetrySettings
            from syncrecon.storage.memory import MemoryStorage
            from syncrecon.testing import ManualClock
            from syncrecon.webhooks import GenericJsonParser, WebhookHandler, WebhookSource
            from syncrecon.webhooks import StandardWebhooksVerifier
            from syncrecon.worker import Worker
            from test_queue import make_sync

            SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZg=="
            clock = ManualClock()
            sync = make_sync(clock, {SYNC!r})
            other = make_sync(clock, "other")
            both = [sync, other]
            reconciler = Reconciler(other, MemoryStorage(), clock=clock)
            handler = WebhookHandler(
                [
                    WebhookSource(
                        name="crm",
                        sync=sync,
                        side="left",
                        verifier=StandardWebhooksVerifier(secrets=[SECRET]),
                        parser=GenericJsonParser(system="crm"),
                    )
                ],
                MemoryStorage(),
            )
            worker = Worker(handler=handler, reconciler=reconciler)

            def factory():
                return sync

            nothing = 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import importlib

    module = importlib.import_module(name)
    yield module
    sys.modules.pop(name, None)


def test_load_syncs_accepts_what_the_worker_accepts(app_module: ModuleType) -> None:
    m = app_module
    name = m.__name__
    assert load_syncs(f"{name}:sync") == [m.sync]
    assert load_syncs(f"{name}:factory") == [m.sync]
    assert load_syncs(f"{name}:both") == [m.sync, m.other]
    assert load_syncs(f"{name}:reconciler") == [m.other]
    assert load_syncs(f"{name}:handler") == [m.sync]
    assert load_syncs(f"{name}:worker") == [m.sync, m.other]
    for bad, match in (
        (f"{name}:nothing", "is not a SyncDefinition"),
        (f"{name}:missing", "cannot load"),
        ("no_such_module_here:x", "cannot load"),
        (name, "expected 'package.module:attribute'"),
    ):
        with pytest.raises(ConfigurationError, match=match):
            load_syncs(bad)


# --------------------------------------------------------------------------------------------
# The command line on a real SQLite file


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="syncrecon")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    assert args.command == "queue"
    return run_cli(args)


def test_cli_round_trips(
    app_module: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "queue.sqlite"
    storage = SQLiteStorage(db)
    world = World(storage, app_module.clock, app_module.sync)
    (lk, rk), item_id = amount_conflict(world)
    world.left.edit(lk, stage="won")
    world.cycle()
    (stage,) = world.escalated("stage")
    capsys.readouterr()

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli("queue", "--db", str(db), *argv)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert {i["id"] for i in listed} == {item_id, stage.id}
    (amount,) = [i for i in listed if i["field"] == "amount"]
    assert (amount["left_value"], amount["right_value"], amount["base_value"]) == (150, 100, 100)
    assert amount["category"] == "deal_value"

    code, out, _ = run("list", "--category", "stage")
    assert code == 0
    assert "won" in out
    assert "ID" in out.splitlines()[0]
    assert json.loads(run("list", "--json", "--key", rk, "--field", "amount")[1])[0]["id"] == (
        item_id
    )
    assert json.loads(run("list", "--json", "--older-than-hours", "100000")[1]) == []

    code, out, _ = run("show", str(item_id))
    assert code == 0
    assert "left:   150" in out  # without --app the systems are "left" and "right"
    code, out, _ = run("show", str(item_id), "--app", f"{app_module.__name__}:sync")
    assert code == 0
    assert "crm:    150" in out
    assert json.loads(run("show", str(item_id), "--json")[1])["id"] == item_id

    assert run("assign", str(item_id), "--to", "gus")[:2] == (
        0,
        f"item {item_id}: assigned to gus\n",
    )
    assert storage.get_item(item_id).assignee == "gus"

    code, _, err = run("resolve", str(item_id), "--take", "left")
    assert code == 2
    assert err.startswith("syncrecon queue: ")
    assert "needs that sync definition" in err
    assert world.right.write_log == []

    app = f"{app_module.__name__}:sync"
    code, out, _ = run("resolve", str(item_id), "--take", "left", "--app", app, "--by", "gus")
    assert code == 0, out
    assert "resolved" in out
    assert [dict(e.fields) for e in world.right.write_log] == [{"Amount": 150}]
    assert storage.get_item(item_id).status is Status.RESOLVED

    code, _, err = run("resolve", str(item_id), "--take", "left", "--app", app)
    assert code == 2
    assert "resolved already" in err

    assert stage.id is not None
    code, out, _ = run("resolve", str(stage.id), "--value", '"lost"', "--app", app, "--json")
    assert code == 0
    assert json.loads(out)["written"] == ["left", "right"]
    assert world.right.get(rk).fields["Stage"] == "Closed Lost"

    assert run("list", "--json")[1].strip() == "[]"
    assert len(json.loads(run("list", "--json", "--status", "all")[1])) == 2

    world.left.edit(lk, amount=1)
    world.cycle()
    (again,) = world.escalated("amount")
    code, out, _ = run("dismiss", str(again.id), "--reason", "a test deal")
    assert (code, out) == (0, f"item {again.id}: dismissed\n")
    assert storage.get_item(again.id or 0).note == "dismissed: a test deal"

    assert run("show", "424242")[0] == 2
    code, _, err = run("resolve", "1", "--value", "{not json", "--app", app)
    assert (code, "--value cannot be read" in err) == (2, True)
    storage.close()


def test_cli_changed_since_opened_exits_1(
    app_module: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "queue.sqlite"
    storage = SQLiteStorage(db)
    world = World(storage, app_module.clock, app_module.sync)
    (_lk, rk), item_id = amount_conflict(world)
    world.right.edit(rk, Amount=999)
    app = f"{app_module.__name__}:sync"
    assert (
        cli("queue", "--db", str(db), "resolve", str(item_id), "--take", "left", "--app", app) == 1
    )
    assert "changed since opened" in capsys.readouterr().out
    assert storage.get_item(item_id).status is Status.ESCALATED
    storage.close()


def test_cli_needs_an_existing_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("queue", "--db", str(tmp_path / "nope.sqlite"), "list") == 2
    assert capsys.readouterr().err.startswith("syncrecon queue: no database at")
    assert not (tmp_path / "nope.sqlite").exists()


def test_the_cli_plumbing_is_private_and_still_importable() -> None:
    import syncrecon.queue
    from syncrecon.queue import _cli

    assert not {"register_cli", "run_cli"} & set(syncrecon.queue.__all__)
    assert syncrecon.queue.register_cli is _cli.register_cli is register_cli
    assert syncrecon.queue.run_cli is _cli.run_cli is run_cli


def test_values_are_shown_as_a_person_reads_them() -> None:
    from datetime import UTC, date, datetime
    from decimal import Decimal

    from syncrecon.queue import display_value

    assert display_value(date(2026, 8, 22)) == "2026-08-22"
    assert display_value(datetime(2026, 8, 22, 14, 30, tzinfo=UTC)) == "2026-08-22 14:30:00 UTC"
    assert display_value(Decimal("1250.50")) == "1250.50"
    assert display_value(["vip", "eu"]) == '"vip", "eu"'
    assert display_value([]) == "(none)"
    assert display_value(None) == "(blank)"
    assert display_value("42") == '"42"'
    assert display_value(42) == "42"
    assert display_value(True) == "true"
