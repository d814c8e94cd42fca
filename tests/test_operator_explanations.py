"""An item's explanation as an operator reads it: values shown as the queue's screens show them
(never Python's reprs) and the systems by name (never ``left``/``right`` when the sync names
them), on ``queue show`` and the web page alike; the stored text and the JSON stay as they are.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from syncrecon import FieldState, Side, decide, escalate, merge, recency
from syncrecon.queue._views import explanation_text
from syncrecon.storage import Discrepancy, Status, Step, Storage
from syncrecon.testing import ManualClock
from test_queue import World

T0 = datetime(2026, 11, 29, 19, 0, 41, 90000, tzinfo=UTC)
NAMES = {Side.LEFT: "hubspot", Side.RIGHT: "salesforce"}


def _item(decision_state: FieldState, *, policy: object, **extra: object) -> Discrepancy:
    decision = decide(policy, decision_state)  # type: ignore[arg-type]
    s = decision.state
    return Discrepancy(
        sync="deals",
        field=s.field,
        status=Status.ESCALATED if decision.escalated else Status.AUTO_RESOLVED,
        detected_at=T0,
        left_key="h1",
        right_key="s1",
        left_value=s.left,
        right_value=s.right,
        base_value=s.base if s.has_base else None,
        has_base=s.has_base,
        rule=decision.rule,
        category=decision.category,
        explanation=decision.explain(),
        resolution=None if decision.escalated else decision.value,
        **extra,  # type: ignore[arg-type]
    )


def _dates() -> Discrepancy:
    state = FieldState(
        field="closedate",
        left=date(2026, 10, 29),
        right=date(2026, 10, 15),
        base=date(2026, 10, 15),
        left_modified_at=T0 + timedelta(hours=4),
        right_modified_at=T0,
        left_per_field=True,
    )
    return _item(state, policy=escalate("contract_dates"))


def test_a_decision_reads_like_a_person_with_the_systems_named() -> None:
    item = _dates()
    assert "left=datetime.date(2026, 10, 29)" in item.explanation  # stored as it was written
    text = explanation_text(item, NAMES)
    assert text.splitlines() == [
        "field 'closedate': hubspot 2026-10-29, salesforce 2026-10-15, last agreed 2026-10-15",
        "  last changed: hubspot 2026-11-29 23:00:41.09 UTC (the field's own time),"
        " salesforce 2026-11-29 19:00:41.09 UTC (the record's time)",
        "  rule escalate: escalate to an operator (contract_dates)",
        "  why: differences in this field always need an operator (contract_dates)",
    ]


def test_without_the_sync_the_sides_keep_their_names_but_values_still_read_well() -> None:
    text = explanation_text(_dates())
    assert text.splitlines()[0] == (
        "field 'closedate': left 2026-10-29, right 2026-10-15, last agreed 2026-10-15"
    )
    assert "datetime" not in text
    assert "last changed: left 2026-11-29 23:00:41.09 UTC" in text


@pytest.mark.parametrize(
    ("state", "policy", "rule", "why"),
    [
        (
            FieldState(field="notes", left="call back", right="called", base="left vm",
                       left_modified_at=T0 + timedelta(minutes=3), right_modified_at=T0),
            recency(),
            'rule recency: take hubspot\'s value "call back"',
            "why: hubspot is newer by 0:03:00 (record-level times)",
        ),
        (
            FieldState(field="amount", left=Decimal("1250.50"), right=None,
                       left_modified_at=T0, right_modified_at=T0 + timedelta(1)),
            recency(),
            "rule recency: take salesforce's value (blank)",
            "why: salesforce is newer by 1 day, 0:00:00 (record-level times)",
        ),
        (
            FieldState(field="tags", left=["a"], right=["b"], base=[]),
            merge(),
            'rule merge: merge both lists into "a", "b"',
            "why: three-way union of both lists",
        ),
    ],
    ids=["take-left", "take-right-blank", "merge"],
)  # fmt: skip
def test_an_automatic_decision_names_what_it_took(
    state: FieldState, policy: object, rule: str, why: str
) -> None:
    text = explanation_text(_item(state, policy=policy), NAMES)
    assert "repr" not in text
    assert "=" not in text.splitlines()[0]
    assert f"  {rule}" in text.splitlines()
    assert f"  {why}" in text.splitlines()


def test_other_explanations_name_the_systems_but_not_inside_quotes() -> None:
    drift = Discrepancy(
        sync="deals", field="tags", status=Status.ESCALATED, detected_at=T0,
        category="schema_drift", rule="schema",
        explanation="right field 'Tags__c' changed type from 'multipicklist' to 'textarea';"
        " left field 'left' is gone",
    )  # fmt: skip
    assert explanation_text(drift, NAMES) == (
        "salesforce field 'Tags__c' changed type from 'multipicklist' to 'textarea';"
        " hubspot field 'left' is gone"
    )
    assert explanation_text(drift) == drift.explanation


def test_two_systems_of_one_name_are_told_apart() -> None:
    text = explanation_text(_dates(), {Side.LEFT: "crm", Side.RIGHT: "crm"})
    assert text.startswith("field 'closedate': crm (left) 2026-10-29, crm (right) 2026-10-15,")


def test_queue_show_and_its_json(sqlite_storage: Storage, clock: ManualClock) -> None:
    world = World(sqlite_storage, clock)
    item = _dates()
    (item_id,) = world.storage.commit(Step(at=clock.now(), new_items=[item]))
    view = world.queue.show(item_id)
    text = str(view)
    why = text[text.index("  why:") :]
    assert "datetime" not in why
    assert "    field 'closedate': crm 2026-10-29, erp 2026-10-15, last agreed 2026-10-15" in why
    data = view.to_dict()
    assert data["explanation"] == item.explanation  # the JSON keeps the stored text
    assert data["left_value"] == {"$date": "2026-10-29"}
    assert json.loads(json.dumps(data))["explanation"].startswith("field 'closedate': left=")
