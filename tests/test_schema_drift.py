"""Schema drift: breaking changes quarantine the field and escalate once; harmless ones don't."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fastloop_helpers import World
from syncrecon import (
    FieldInfo,
    FieldMap,
    NaturalKey,
    Reconciler,
    SyncDefinition,
    recency,
    source_of_truth,
    value_map,
)
from syncrecon._drift import fits
from syncrecon.storage import ItemUpdate, Status, Step, Storage
from syncrecon.testing import ManualClock, SimulatedSystem

STAGES = {"open": "Prospecting", "won": "Closed Won"}
LEFT_FIELDS = [
    FieldInfo(name="email", type="string"),
    FieldInfo(name="stage", type="enumeration", options=("open", "won")),
    FieldInfo(name="notes", type="string"),
]
RIGHT_FIELDS = [
    FieldInfo(name="Email", type="string"),
    FieldInfo(name="StageName", type="enumeration", options=("Prospecting", "Closed Won", "Lost")),
    FieldInfo(name="Notes", type="string"),
]


def _world(storage: Storage) -> tuple[Reconciler, SimulatedSystem, SimulatedSystem, ManualClock]:
    clock = ManualClock(tick=timedelta(milliseconds=1))
    left = SimulatedSystem("hubspot", clock=clock, key_prefix="h", fields=LEFT_FIELDS)
    right = SimulatedSystem("salesforce", clock=clock, key_prefix="s", fields=RIGHT_FIELDS)
    for i in range(3):
        left.create({"email": f"u{i}@x.com", "stage": "open", "notes": "n"})
        right.create({"Email": f"u{i}@x.com", "StageName": "Prospecting", "Notes": "n"})
    sync = SyncDefinition(
        name="deals",
        left=left,
        right=right,
        fields=[
            FieldMap(
                left="stage",
                right="StageName",
                policy=source_of_truth("left"),
                transform=value_map(STAGES),
            ),
            FieldMap(left="notes", right="Notes", policy=recency()),
        ],
        natural_key=NaturalKey(left="email", right="Email"),
    )
    rec = Reconciler(sync, storage, clock=clock)
    assert rec.run_cycle().quarantined == ()
    return rec, left, right, clock


def _drift_items(storage: Storage) -> list[Any]:
    return [i for i in storage.list_items(sync="deals") if i.category == "schema_drift"]


def _replace(fields: list[FieldInfo], name: str, new: FieldInfo | None) -> list[FieldInfo]:
    out = [f for f in fields if f.name != name]
    return out + ([new] if new is not None else [])


@pytest.mark.parametrize(
    "change",
    [
        FieldInfo(
            name="StageName",
            type="multi_enumeration",
            options=("Prospecting", "Closed Won", "Lost"),
        ),
        None,  # deleted or renamed
        FieldInfo(name="StageName", type="enumeration", options=("Prospecting", "Lost")),
    ],
    ids=["single-to-multi-select", "field-gone", "needed-option-removed"],
)
def test_a_breaking_change_quarantines_the_field_and_escalates_once(
    storage: Storage, change: FieldInfo | None
) -> None:
    rec, left, right, _ = _world(storage)
    right.set_fields(_replace(RIGHT_FIELDS, "StageName", change))
    left.edit("h1", stage="won", notes="new note")
    report = rec.run_cycle()
    assert report.quarantined == ("stage",)
    assert report.escalated == {"schema_drift": 1}
    assert right.get("s1").fields["StageName"] == "Prospecting"  # held back
    assert right.get("s1").fields["Notes"] == "new note"  # other fields still flow
    again = rec.run_cycle()
    assert again.quarantined == ("stage",)
    assert again.escalated == {}  # waiting already: not escalated (or counted) again
    assert storage.counter_totals("schema_changes") == [({"breaking": "true", "sync": "deals"}, 1)]
    (item,) = _drift_items(storage)
    assert item.status is Status.ESCALATED
    assert item.field == "stage"
    assert "StageName" in item.explanation


def test_a_harmless_change_is_recorded_and_does_not_quarantine(storage: Storage) -> None:
    rec, left, right, _ = _world(storage)
    more = FieldInfo(
        name="StageName",
        type="enumeration",
        options=("Prospecting", "Closed Won", "Lost", "On Hold"),
    )
    right.set_fields(_replace(RIGHT_FIELDS, "StageName", more))
    left.edit("h1", stage="won")
    report = rec.run_cycle()
    assert report.quarantined == ()
    assert right.get("s1").fields["StageName"] == "Closed Won"
    assert _drift_items(storage) == []
    assert storage.counter_totals("schema_changes") == [({"breaking": "false", "sync": "deals"}, 1)]
    assert rec.run_cycle().total_writes == 0  # recorded: not reported again


def test_resolving_the_escalation_lifts_the_quarantine_and_repairs(storage: Storage) -> None:
    rec, left, right, clock = _world(storage)
    right.set_fields(
        _replace(
            RIGHT_FIELDS,
            "StageName",
            FieldInfo(
                name="StageName", type="multi_enumeration", options=("Prospecting", "Closed Won")
            ),
        )
    )
    left.edit("h2", stage="won")
    rec.run_cycle()
    assert right.get("s2").fields["StageName"] == "Prospecting"
    (item,) = _drift_items(storage)
    assert item.id is not None
    storage.commit(
        Step(
            at=clock.now(),
            item_updates=[ItemUpdate(id=item.id, status=Status.RESOLVED, resolved_at=clock.now())],
        )
    )
    report = rec.run_cycle()
    assert report.quarantined == ()
    assert right.get("s2").fields["StageName"] == "Closed Won"


def test_check_schema_at_start_up(storage: Storage) -> None:
    rec, _, right, _ = _world(storage)
    right.set_fields(_replace(RIGHT_FIELDS, "Notes", None))
    assert rec.check_schema() == frozenset({"notes"})
    assert len(_drift_items(storage)) == 1


def test_the_fast_loop_quarantines_a_value_that_does_not_fit(storage: Storage) -> None:
    w = World(storage)
    w.right.set_fields(
        [
            FieldInfo(name="Amount", type="number"),
            FieldInfo(name="Notes", type="string"),
            FieldInfo(
                name="StageName",
                type="enumeration",
                options=("Prospecting", "Closed Won", "Closed Lost"),
            ),
        ]
    )
    w.reconciler.check_schema()  # records the known types
    w.handler.handle(w.request("salesforce", [w.change("s1", "StageName", "Negotiation")]))
    assert w.left.get("h1").fields["stage"] == "open"
    (item,) = [i for i in storage.list_items(sync="deals") if i.category == "schema_drift"]
    assert item.field == "stage"
    assert "Negotiation" in item.explanation
    # While quarantined, even a fitting value is not written by the fast loop.
    w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")]))
    assert w.right.get("s1").fields["StageName"] == "Prospecting"


@pytest.mark.parametrize(
    ("value", "info", "ok"),
    [
        ("12.5", {"type": "number"}, True),
        ("twelve", {"type": "number"}, False),
        (True, {"type": "number"}, False),
        ("true", {"type": "bool"}, True),
        ("b", {"type": "enumeration", "options": ["a", "b"]}, True),
        ("c", {"type": "enumeration", "options": ["a", "b"]}, False),
        (["a", "b"], {"type": "enumeration", "options": ["a", "b"]}, False),
        ("a;b", {"type": "multi_enumeration", "options": ["a", "b"]}, True),
        (["a", "z"], {"type": "multi_enumeration", "options": ["a", "b"]}, False),
        ("2026-01-31", {"type": "date"}, True),
        ("soon", {"type": "date"}, False),
        ({"a": 1}, {"type": "string"}, False),
        (None, {"type": "number"}, True),
        ({"any": "thing"}, {"type": "custom_object"}, True),
    ],
)
def test_fits(value: Any, info: dict[str, Any], ok: bool) -> None:
    assert fits(value, info) is ok
