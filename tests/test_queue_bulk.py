"""Bulk actions of the operator queue (over ids or a filter), their preview, duplicate groups,
and the command line's bulk forms.

Each bulk action runs the single-item action per item, with its safety: a value changed since
an item was opened is never overwritten, and one item's failure does not stop the others.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from syncrecon import ConfigurationError, Side, Status
from syncrecon.queue import (
    ItemNotFoundError,
    OperatorQueue,
    PlannedResolution,
    QueueError,
    QueueFilter,
    ResolutionOutcome,
    group_key,
)
from syncrecon.storage import Discrepancy, Step, Storage
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import ManualClock
from test_queue import (
    SYNC,
    World,
    amount_conflict,
    app_module,  # noqa: F401  (a fixture)
    cli,
)


@pytest.fixture
def world(storage: Storage, clock: ManualClock) -> World:
    return World(storage, clock)


def conflicts(world: World, n: int = 4) -> list[tuple[str, str, int]]:
    """``n`` linked pairs whose amount was edited on the left (to 1000 + i), escalated."""
    keys = [world.pair(i) for i in range(n)]
    world.cycle()
    for i, (lk, _rk) in enumerate(keys):
        world.left.edit(lk, amount=1000 + i)
    world.cycle()
    by_left = {i.left_key: i.id for i in world.queue.list(field="amount")}
    world.clear_logs()
    return [(lk, rk, by_left[lk] or 0) for lk, rk in keys]


def duplicates(world: World) -> list[Discrepancy]:
    """Three records that share the natural key dup@example.com: one group of three items."""
    world.left.create({"email": "dup@example.com", "amount": 1, "stage": "lead"})
    world.left.create({"email": "DUP@example.com", "amount": 1, "stage": "lead"})
    world.right.create({"Email": "dup@example.com", "Amount": 1, "Stage": "Lead"})
    world.cycle()
    items = world.queue.list(category="possible_duplicate")
    assert len(items) == 3
    return items


# --------------------------------------------------------------------------------------------
# Preview


def test_preview_says_what_would_be_written_and_writes_nothing(world: World) -> None:
    rows = conflicts(world, 2)
    lk, _rk = world.pair(9)
    world.cycle()
    world.left.edit(lk, stage="won")
    world.cycle()
    (stage,) = world.queue.list(field="stage")
    assert stage.id is not None
    before = [world.storage.get_item(i) for *_, i in rows]
    plans = world.queue.preview([rows[0][2], rows[1][2], stage.id], take="left")
    assert all(isinstance(p, PlannedResolution) and p.ok for p in plans)
    assert [(p.item_id, p.value, dict(p.writes)) for p in plans] == [
        (rows[0][2], 1000, {Side.RIGHT: 1000}),
        (rows[1][2], 1001, {Side.RIGHT: 1001}),
        (stage.id, "won", {Side.RIGHT: "Closed Won"}),  # as the right system stores it
    ]
    assert str(plans[2]) == f'item {stage.id} (stage): set "won"; write "Closed Won" to erp'
    assert plans[0].to_dict()["writes"] == {"right": 1000}
    both = world.queue.preview([rows[0][2]], value=5)
    assert dict(both[0].writes) == {Side.LEFT: 5, Side.RIGHT: 5}
    held = world.queue.preview([rows[0][2]], take="right")
    assert dict(held[0].writes) == {Side.LEFT: 100}
    assert world.left.write_log == world.right.write_log == []
    assert [world.storage.get_item(i) for *_, i in rows] == before


def test_preview_gives_the_reason_an_item_cannot_be_resolved_so(world: World) -> None:
    rows = conflicts(world, 2)
    _lk, rk = world.pair(7)
    world.cycle()
    world.right.edit(rk, Region="apac")
    world.cycle()
    (region,) = world.queue.list(field="region")
    world.queue.resolve(rows[1][2], take="left")
    (dup, *_) = duplicates(world)
    ids = [rows[0][2], rows[1][2], region.id or 0, dup.id or 0]
    plans = {p.item_id: p for p in world.queue.preview(ids, take="right")}
    assert plans[rows[0][2]].ok
    assert plans[rows[1][2]].reason == "the item is resolved already"
    assert "flows left_to_right only" in (plans[region.id or 0].reason or "")
    assert "acknowledged without a value" in (plans[dup.id or 0].reason or "")
    assert "cannot be resolved this way" in str(plans[dup.id or 0])
    plain = {p.item_id: p for p in world.queue.preview(ids)}  # no take, no value
    assert plain[dup.id or 0].acknowledge
    assert plain[dup.id or 0].ok
    assert "take='left'/'right' or a value" in (plain[rows[0][2]].reason or "")
    reader = OperatorQueue(world.storage, clock=world.clock)
    (blind,) = reader.preview([rows[0][2]], take="left")
    assert "needs that sync definition" in (blind.reason or "")
    drift = Discrepancy(
        sync=SYNC, field="amount", status=Status.ESCALATED, detected_at=world.clock.now(),
        rule="schema", category="schema_drift", explanation="right field 'Amount' became text",
    )  # fmt: skip
    (drift_id,) = world.storage.commit(Step(at=world.clock.now(), new_items=[drift]))
    (held,) = world.queue.preview([rows[0][2]], take="left")
    assert held.reason == f"the field 'amount' is quarantined by schema drift (item {drift_id})"
    (lifting,) = world.queue.preview([drift_id])
    assert "confirm=True" in (lifting.reason or "")


def test_bulk_arguments_are_checked_before_anything_is_done(world: World) -> None:
    rows = conflicts(world, 1)
    q = world.queue
    item_id = rows[0][2]
    with pytest.raises(QueueError, match="exactly one of the two"):
        q.preview(take="left")
    with pytest.raises(QueueError, match="exactly one of the two"):
        q.resolve_many([item_id], filter=QueueFilter(), take="left")
    with pytest.raises(QueueError, match="exactly one of take"):
        q.preview([item_id], take="left", value=3)
    with pytest.raises(QueueError, match="take must be"):
        q.resolve_many([item_id], take="up")  # type: ignore[arg-type]
    with pytest.raises(ItemNotFoundError, match="ids 424242, 424243; nothing was done"):
        q.resolve_many([item_id, 424242, 424243], take="left")
    with pytest.raises(QueueError, match="needs a reason"):
        q.dismiss_many([item_id], reason=" ")
    with pytest.raises(QueueError, match="list of item ids"):
        q.assign_many(item_id, who="x")  # type: ignore[arg-type]
    assert world.right.write_log == []
    assert world.storage.get_item(item_id).status is Status.ESCALATED
    assert q.resolve_many([], take="left") == ()


# --------------------------------------------------------------------------------------------
# Resolving, dismissing, assigning and acknowledging in bulk


def test_resolve_many_keeps_each_items_safety(world: World) -> None:
    rows = conflicts(world, 5)
    (_, r0, i0), (_, r1, i1), (_, r2, i2), (_, _, i3), (_, r4, i4) = rows
    world.queue.dismiss(i3, "not now")
    world.right.edit(r1, Amount=555)  # changed since opened: not overwritten
    world.right.reject(r2, "locked")  # a rejected write
    world.clear_logs()
    results = world.queue.resolve_many(filter=QueueFilter(field="amount"), take="left", by="ada")
    outcomes = {r.item_id: r.outcome for r in results}
    assert outcomes == {
        i0: ResolutionOutcome.RESOLVED,
        i1: ResolutionOutcome.CHANGED,
        i2: ResolutionOutcome.FAILED,
        i4: ResolutionOutcome.RESOLVED,
    }  # the dismissed item is not active: the filter does not name it
    assert [r.item_id for r in results] == [i4, i2, i1, i0]  # newest first
    assert sorted((e.key, dict(e.fields)) for e in world.right.write_log) == [
        (r0, {"Amount": 1000}),
        (r4, {"Amount": 1004}),
    ]
    assert world.right.get(r1).fields["Amount"] == 555
    assert world.storage.get_item(i0).note == "ada: took crm's value 1000, written to erp"
    assert not any(r.ok for r in results if r.item_id in (i1, i2))
    again = world.queue.resolve_many([i0, i3, i4], take="left")
    assert [r.outcome for r in again] == [ResolutionOutcome.REFUSED] * 3
    assert again[0].message.startswith(f"item {i0} is resolved already")
    assert again[1].status is Status.DISMISSED
    assert not again[0].closed
    assert again[0].to_dict()["outcome"] == "refused"


def test_one_refusal_does_not_stop_the_others(world: World) -> None:
    rows = conflicts(world, 2)
    lk, rk = world.pair(8)
    world.cycle()
    world.right.edit(rk, Region="apac")
    world.cycle()
    (region,) = world.queue.list(field="region")
    ids = [rows[0][2], region.id or 0, rows[1][2]]
    results = world.queue.resolve_many(ids, take="right")
    assert [r.outcome for r in results] == [
        ResolutionOutcome.RESOLVED,
        ResolutionOutcome.REFUSED,
        ResolutionOutcome.RESOLVED,
    ]
    assert "never flows to" in results[1].message
    assert results[1].status is Status.ESCALATED
    reader = OperatorQueue(world.storage, clock=world.clock)
    (blind,) = reader.resolve_many([region.id or 0], take="left")
    assert blind.outcome is ResolutionOutcome.REFUSED
    assert "needs that sync definition" in blind.message
    assert lk


def test_dismiss_and_assign_many(world: World) -> None:
    rows = conflicts(world, 3)
    ids = [i for *_, i in rows]
    assigned = world.queue.assign_many(ids, who=" bea ")
    assert [r.outcome for r in assigned] == [ResolutionOutcome.ASSIGNED] * 3
    assert assigned[0].message == "assigned to bea"
    assert world.queue.count(assignee="bea") == 3
    assert all(r.status is Status.ESCALATED for r in assigned)
    world.queue.dismiss(ids[0], "one by one")
    results = world.queue.dismiss_many(filter=QueueFilter(assignee="bea"), reason="test deals")
    assert [r.outcome for r in results] == [ResolutionOutcome.DISMISSED] * 2
    assert all(r.closed and r.ok for r in results)
    for item_id in ids[1:]:
        item = world.storage.get_item(item_id)
        assert (item.status, item.note) == (Status.DISMISSED, "dismissed: test deals")
        assert item.resolved_at == world.clock.now()
    refused = world.queue.dismiss_many(ids, reason="again", by="cy")
    assert [r.outcome for r in refused] == [ResolutionOutcome.REFUSED] * 3
    unassign = world.queue.assign_many(ids, who=None)
    assert {r.outcome for r in unassign} == {ResolutionOutcome.REFUSED}
    assert world.left.write_log == world.right.write_log == []


def test_acknowledge_many_closes_record_level_items_only(world: World) -> None:
    rows = conflicts(world, 1)
    dups = duplicates(world)
    ids = [d.id or 0 for d in dups] + [rows[0][2]]
    results = world.queue.acknowledge_many(ids, by="erin", note="merged in the CRM")
    assert [r.outcome for r in results] == [ResolutionOutcome.ACKNOWLEDGED] * 3 + [
        ResolutionOutcome.REFUSED
    ]
    assert "resolve it with take or value" in results[-1].message
    assert world.storage.get_item(ids[0]).note == "erin: acknowledged (merged in the CRM)"
    assert world.queue.count(category="possible_duplicate") == 0


def test_a_filter_over_many_items_reaches_every_one(storage: Storage, clock: ManualClock) -> None:
    at = clock.now()
    items = [
        Discrepancy(
            sync=SYNC, field="*", status=Status.ESCALATED, detected_at=at, left_key=f"L{i}",
            category="deletion",
        )
        for i in range(1203)
    ]  # fmt: skip
    storage.commit(Step(at=at, new_items=items))
    queue = OperatorQueue(storage, clock=clock)
    assert len(queue.preview(filter=QueueFilter(category="deletion"))) == 1203
    results = queue.dismiss_many(filter=QueueFilter(category="deletion"), reason="restored")
    assert len(results) == 1203
    assert {r.outcome for r in results} == {ResolutionOutcome.DISMISSED}
    assert queue.count() == 0


# --------------------------------------------------------------------------------------------
# Duplicate groups


def test_duplicates_of_one_natural_key_are_one_group(world: World) -> None:
    dups = duplicates(world)
    ids = sorted(d.id or 0 for d in dups)
    assert {group_key(d) for d in dups} == {"deals:dup@example.com"}
    for item_id in ids:
        assert [i.id for i in world.queue.group(item_id)] == ids
    view = world.queue.show(ids[0])
    assert view.group == "deals:dup@example.com"
    assert sorted(g.id or 0 for g in view.group_items) == ids[1:]
    text = str(view)
    assert "duplicate group deals:dup@example.com: 3 items" in text
    assert view.to_dict()["group"] == "deals:dup@example.com"
    # A record of another group, and an item of no group.
    world.left.create({"email": "other@example.com", "amount": 1})
    world.right.create({"Email": "OTHER@example.com", "Amount": 1})
    world.right.create({"Email": "other@example.com", "Amount": 2})
    world.cycle()
    others = [d for d in world.queue.list(category="possible_duplicate") if d.id not in ids]
    assert len(others) == 3
    assert {group_key(d) for d in others} == {"deals:other@example.com"}
    assert len(world.queue.group(others[0].id or 0)) == 3
    rows = conflicts(world, 1)
    assert [i.id for i in world.queue.group(rows[0][2])] == [rows[0][2]]
    assert world.queue.show(rows[0][2]).group is None
    # Dismissing the group closes every item of it.
    results = world.queue.dismiss_many([i.id or 0 for i in world.queue.group(ids[1])], reason="2")
    assert len(results) == 3
    assert all(world.storage.get_item(i).status is Status.DISMISSED for i in ids)
    assert [i.id for i in world.queue.group(ids[0])] == [ids[0]]  # closed: only itself
    assert len(world.queue.group(others[1].id or 0)) == 3


def test_a_natural_key_with_quotes_still_groups(world: World) -> None:
    for email in ("o'hara\\x@example.com", "O'HARA\\x@example.com"):
        world.left.create({"email": email, "amount": 1})
    world.cycle()
    items = world.queue.list(category="possible_duplicate")
    assert len(items) == 2
    assert {group_key(i) for i in items} == {"deals:o'hara\\x@example.com"}
    assert len(world.queue.group(items[0].id or 0)) == 2


@pytest.mark.anyio
async def test_the_async_bulk_doors(world: World) -> None:
    rows = conflicts(world, 3)
    ids = [i for *_, i in rows]
    assert len(await world.queue.apreview(iter(ids), take="left")) == 3
    assigned = await world.queue.aassign_many(iter(ids), who="fay")
    assert {r.outcome for r in assigned} == {ResolutionOutcome.ASSIGNED}
    resolved = await world.queue.aresolve_many(iter(ids[:2]), take="left")
    assert {r.outcome for r in resolved} == {ResolutionOutcome.RESOLVED}
    dismissed = await world.queue.adismiss_many([ids[2]], reason="x")
    assert dismissed[0].outcome is ResolutionOutcome.DISMISSED
    dups = duplicates(world)
    group = await world.queue.agroup(dups[0].id or 0)
    acknowledged = await world.queue.aacknowledge_many([g.id or 0 for g in group])
    assert {r.outcome for r in acknowledged} == {ResolutionOutcome.ACKNOWLEDGED}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------------------------
# The command line


def test_cli_bulk_actions(
    app_module: ModuleType,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "queue.sqlite"
    storage = SQLiteStorage(db)
    world = World(storage, app_module.clock, app_module.sync)
    rows = conflicts(world, 4)
    dups = duplicates(world)
    app = f"{app_module.__name__}:sync"
    capsys.readouterr()

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli("queue", "--db", str(db), *argv)
        out, err = capsys.readouterr()
        return code, out, err

    # list: the total and the page, order, search, unassigned
    code, out, err = run("list", "--limit", "2", "--field", "amount")
    assert code == 0
    assert len(out.splitlines()) == 3
    assert "items 1-2 of 4, newest first; more match" in err
    assert "--offset 2" in err
    code, out, _ = run("list", "--json", "--limit", "2", "--offset", "2", "--field", "amount")
    assert [i["id"] for i in json.loads(out)] == [rows[1][2], rows[0][2]]
    code, out, _ = run("list", "--json", "--order", "oldest", "--field", "amount")
    assert [i["id"] for i in json.loads(out)] == [r[2] for r in rows]
    code, out, _ = run("list", "--json", "--search", "1002")
    assert [i["id"] for i in json.loads(out)] == [rows[2][2]]
    run("assign", str(rows[0][2]), "--to", "gus")
    code, out, _ = run("list", "--json", "--unassigned", "--field", "amount")
    assert rows[0][2] not in [i["id"] for i in json.loads(out)]

    # resolve: a preview over a filter writes nothing
    code, out, _ = run(
        "resolve", "--filter-field", "amount", "--filter-sync", SYNC, "--take", "left",
        "--preview", "--app", app,
    )  # fmt: skip
    assert code == 0
    assert "preview of 4 items: 4 can be resolved this way, 0 cannot; nothing was written" in out
    assert f"item {rows[3][2]} (amount): set 1003; write 1003 to erp" in out
    assert world.right.write_log == []
    code, out, _ = run(
        "resolve", "--field", "amount", "--take", "left", "--preview", "--json", "--app", app
    )
    assert [p["writes"] for p in json.loads(out)] == [{"right": 1003 - i} for i in range(4)]

    # resolve several ids
    code, out, _ = run(
        "resolve", str(rows[0][2]), str(rows[1][2]), "--take", "left", "--app", app, "--by", "gus"
    )
    assert code == 0, out
    assert "2 of 2 items done" in out
    assert world.storage.get_item(rows[1][2]).status is Status.RESOLVED
    code, out, _ = run("resolve", str(rows[0][2]), str(rows[2][2]), "--take", "left", "--app", app)
    assert code == 1  # one of them is resolved already
    assert "1 of 2 items done" in out
    code, out, _ = run("resolve", str(rows[3][2]), "--take", "left", "--app", app, "--json")
    assert json.loads(out)["outcome"] == "resolved"

    # dismiss by category, with a preview first
    code, out, _ = run(
        "dismiss", "--category", "possible_duplicate", "--reason", "one deal", "--preview"
    )
    assert "preview: 3 items would be dismissed; nothing was changed" in out
    assert world.queue.count(category="possible_duplicate") == 3
    code, out, _ = run(
        "dismiss", "--category", "possible_duplicate", "--reason", "one deal", "--json"
    )
    assert code == 0
    assert [r["outcome"] for r in json.loads(out)] == ["dismissed"] * 3
    assert all(world.storage.get_item(d.id or 0).status is Status.DISMISSED for d in dups)

    # assign several; errors
    lk, _rk = world.pair(20)
    world.cycle()
    world.left.edit(lk, amount=7)
    world.cycle()
    (fresh,) = world.queue.list(field="amount")
    code, out, _ = run("assign", str(rows[0][2]), str(fresh.id), "--to", "ivy")
    assert code == 1
    assert "refused" in out
    assert world.storage.get_item(fresh.id or 0).assignee == "ivy"
    code, _, err = run("dismiss", "--reason", "x")
    assert code == 2
    assert err.startswith("syncrecon queue: dismiss needs the ids of the items, or a filter")
    code, _, err = run("dismiss", str(rows[0][2]), "--field", "amount", "--reason", "x")
    assert (code, "not both" in err) == (2, True)
    code, _, err = run("resolve", str(rows[0][2]), str(rows[2][2]), "--confirm", "--app", app)
    assert (code, "one item id" in err) == (2, True)
    storage.close()


def test_cli_show_names_the_systems_and_the_suggestion(
    app_module: ModuleType,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = tmp_path / "queue.sqlite"
    storage = SQLiteStorage(db)
    world = World(storage, app_module.clock, app_module.sync)
    dups = duplicates(world)
    app = f"{app_module.__name__}:sync"
    capsys.readouterr()
    assert cli("queue", "--db", str(db), "show", str(dups[0].id), "--app", app) == 0
    out = capsys.readouterr().out
    assert "record: crm" in out
    assert "duplicate group deals:dup@example.com: 3 items" in out
    assert "suggestion: acknowledge (close without writing)" in out
    assert "(same_record, from rules)" in out
    assert cli("queue", "--db", str(db), "show", str(dups[0].id), "--json", "--app", app) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert data["suggestion"]["resolution"] == "acknowledge"
    assert data["systems"] == {"left": "crm", "right": "erp"}
    assert len(data["group_items"]) == 2
    storage.close()


def test_a_missing_sync_definition_is_a_configuration_error_for_one_item(world: World) -> None:
    _keys, item_id = amount_conflict(world)
    reader = OperatorQueue(world.storage, clock=world.clock)
    with pytest.raises(ConfigurationError):
        reader.resolve(item_id, take="left")
