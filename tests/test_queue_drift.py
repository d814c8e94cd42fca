"""Lifting a schema-drift quarantine from the operator queue: who decides, a confirmation, and
the schema checked again (the connectors describe the field) before the field is written again.
"""

from __future__ import annotations

import pytest

from syncrecon import (
    ConfigurationError,
    FieldInfo,
    FieldMap,
    NaturalKey,
    PermanentError,
    Reconciler,
    SyncDefinition,
    Transform,
    merge,
    recency,
    source_of_truth,
    value_map,
)
from syncrecon.queue import OperatorQueue, QueueError, ResolutionOutcome
from syncrecon.storage import Discrepancy, FieldSchema, Status, Step, Storage
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


def _sync(
    left: SimulatedSystem, right: SimulatedSystem, stage_right: str = "StageName"
) -> SyncDefinition:
    return SyncDefinition(
        name="deals",
        left=left,
        right=right,
        fields=[
            FieldMap(
                left="stage",
                right=stage_right,
                policy=source_of_truth("left"),
                transform=value_map(STAGES),
            ),
            FieldMap(left="notes", right="Notes", policy=recency()),
        ],
        natural_key=NaturalKey(left="email", right="Email"),
    )


class Drifted:
    """Two described systems, a sync whose right stage field drifted, and the queue."""

    def __init__(self, storage: Storage, change: FieldInfo | None) -> None:
        self.storage = storage
        self.clock = ManualClock()
        self.left = SimulatedSystem("hubspot", clock=self.clock, key_prefix="h", fields=LEFT_FIELDS)
        self.right = SimulatedSystem(
            "salesforce", clock=self.clock, key_prefix="s", fields=RIGHT_FIELDS
        )
        for i in range(2):
            self.left.create({"email": f"u{i}@x.com", "stage": "open", "notes": "n"})
            self.right.create({"Email": f"u{i}@x.com", "StageName": "Prospecting", "Notes": "n"})
        self.sync = _sync(self.left, self.right)
        self.rec = Reconciler(self.sync, storage, clock=self.clock)
        self.rec.run_cycle()
        self.right.set_fields(self.fields(change))
        self.left.edit("h1", stage="won")
        assert self.rec.run_cycle().quarantined == ("stage",)
        self.queue = OperatorQueue(storage, [self.sync], clock=self.clock)
        (self.item,) = self.queue.list(category="schema_drift")
        assert self.item.id is not None
        self.id: int = self.item.id

    @staticmethod
    def fields(stage: FieldInfo | None) -> list[FieldInfo]:
        out = [f for f in RIGHT_FIELDS if f.name != "StageName"]
        return out + ([stage] if stage is not None else [])

    def status(self) -> Status:
        return self.storage.get_item(self.id).status


MULTI = FieldInfo(
    name="StageName", type="multi_enumeration", options=("Prospecting", "Closed Won", "Lost")
)
FEWER = FieldInfo(name="StageName", type="enumeration", options=("Prospecting", "Lost"))


def test_lifting_needs_a_name_and_a_confirmation(storage: Storage) -> None:
    w = Drifted(storage, MULTI)
    for kwargs in ({}, {"by": "ada"}, {"confirm": True}, {"by": "  ", "confirm": True}):
        with pytest.raises(QueueError, match="lifts the schema-drift quarantine of the field"):
            w.queue.resolve(w.id, **kwargs)  # type: ignore[arg-type]
    assert w.status() is Status.ESCALATED
    with pytest.raises(QueueError, match="acknowledged without a value"):
        w.queue.resolve(w.id, take="left", by="ada", confirm=True)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (MULTI, "right field 'StageName' (salesforce) is a multi-select ('multi_enumeration'),"),
        (None, "right field 'StageName' (salesforce) is still missing (deleted or renamed)"),
        (FEWER, "lacks options the value map needs: ['Closed Won']"),
    ],
    ids=["single-to-multi-select", "field-gone", "needed-option-removed"],
)
def test_the_quarantine_stays_while_the_field_does_not_match(
    storage: Storage, change: FieldInfo | None, problem: str
) -> None:
    w = Drifted(storage, change)
    with pytest.raises(QueueError, match="still does not match its mapping") as caught:
        w.queue.resolve(w.id, by="ada", confirm=True)
    assert problem in str(caught.value)
    assert "The quarantine stays" in str(caught.value)
    assert w.status() is Status.ESCALATED
    assert w.rec.run_cycle().quarantined == ("stage",)
    assert w.right.get("s1").fields["StageName"] == "Prospecting"  # still held back


def test_a_fixed_field_lifts_the_quarantine_and_the_next_cycle_repairs(storage: Storage) -> None:
    w = Drifted(storage, MULTI)
    w.right.set_fields(RIGHT_FIELDS)  # the admin turned it back into a single select
    result = w.queue.resolve(w.id, by="ada", confirm=True, note="reverted in Setup")
    assert result.outcome is ResolutionOutcome.ACKNOWLEDGED
    note = w.storage.get_item(w.id).note or ""
    assert note.startswith("ada: acknowledged: the mapping is fixed, the quarantine is lifted;")
    assert (
        "checked left field 'stage' (hubspot): present, type 'enumeration', has the 2 options"
        " the value map needs, takes the 1 synced value as mapped; right field 'StageName'"
        " (salesforce): present, type"
        " 'enumeration', has the 2 options the value map needs, takes the 1 synced value as"
        " mapped (reverted in Setup)"
    ) in note
    report = w.rec.run_cycle()
    assert report.quarantined == ()
    assert report.escalated == {}  # the descriptions checked are the ones kept: no new drift
    assert w.right.get("s1").fields["StageName"] == "Closed Won"


def test_a_fixed_mapping_lifts_the_quarantine(storage: Storage) -> None:
    w = Drifted(storage, None)  # StageName is gone: renamed Stage__c
    renamed = FieldInfo(name="Stage__c", type="enumeration", options=("Prospecting", "Closed Won"))
    w.right.set_fields([*Drifted.fields(None), renamed])
    for key, record in w.right.records().items():
        w.right.edit(key, Stage__c=record.fields.get("StageName"))
    with pytest.raises(QueueError, match="still missing"):
        w.queue.resolve(w.id, by="ada", confirm=True)  # the old mapping
    fixed = _sync(w.left, w.right, stage_right="Stage__c")
    queue = OperatorQueue(w.storage, [fixed], clock=w.clock)
    assert queue.resolve(w.id, by="ada", confirm=True).outcome is ResolutionOutcome.ACKNOWLEDGED
    assert "right field 'Stage__c' (salesforce): present" in (w.storage.get_item(w.id).note or "")


def test_a_field_no_longer_mapped_has_nothing_to_check(storage: Storage) -> None:
    w = Drifted(storage, MULTI)
    unmapped = SyncDefinition(
        name="deals",
        left=w.left,
        right=w.right,
        fields=[FieldMap(left="notes", right="Notes", policy=recency())],
        natural_key=NaturalKey(left="email", right="Email"),
    )
    queue = OperatorQueue(w.storage, [unmapped], clock=w.clock)
    assert queue.resolve(w.id, by="ada", confirm=True).outcome is ResolutionOutcome.ACKNOWLEDGED
    assert "no longer mapped" in (w.storage.get_item(w.id).note or "")


def test_the_check_needs_the_sync_and_working_connectors(storage: Storage) -> None:
    w = Drifted(storage, MULTI)
    w.right.set_fields(RIGHT_FIELDS)
    reader = OperatorQueue(w.storage, clock=w.clock)
    with pytest.raises(ConfigurationError, match="checks the systems' field descriptions"):
        reader.resolve(w.id, by="ada", confirm=True)
    w.right.fail_next("describe_fields", PermanentError("down", system="salesforce"))
    with pytest.raises(QueueError, match=r"could not be checked again.*the quarantine of 'stage'"):
        w.queue.resolve(w.id, by="ada", confirm=True)
    assert w.status() is Status.ESCALATED
    assert w.queue.resolve(w.id, by="ada", confirm=True).closed


def test_systems_that_describe_nothing_are_said_so(storage: Storage) -> None:
    clock = ManualClock()
    left = SimulatedSystem("crm", clock=clock)
    right = SimulatedSystem("erp", clock=clock)
    sync = _sync(left, right)
    queue = OperatorQueue(storage, [sync], clock=clock)
    drift = Discrepancy(
        sync="deals", field="stage", status=Status.ESCALATED, detected_at=clock.now(),
        rule="schema", category="schema_drift", explanation="changed",
    )  # fmt: skip
    (item_id,) = storage.commit(Step(at=clock.now(), new_items=[drift]))
    assert queue.resolve(item_id, by="ada", confirm=True).closed
    note = storage.get_item(item_id).note or ""
    assert "left field 'stage' (crm): not described by its connector" in note


# -- the demo's drift: a multi-select became a text field -----------------------------------

TAGS = ("apac", "emea", "vip")
TAG_FIELDS = [
    FieldInfo(name="email", type="string"),
    FieldInfo(name="tags", type="multi_enumeration", options=TAGS),
]
SF_TAGS = FieldInfo(name="Tags__c", type="multipicklist", options=TAGS)
SF_TEXT = FieldInfo(name="Tags__c", type="textarea")


def _tags_sync(left: SimulatedSystem, right: SimulatedSystem, tags: FieldMap) -> SyncDefinition:
    return SyncDefinition(
        name="deals",
        left=left,
        right=right,
        fields=[tags],
        natural_key=NaturalKey(left="email", right="Email"),
    )


MERGED = FieldMap(left="tags", right="Tags__c", policy=merge())
AS_TEXT = FieldMap(
    left="tags",
    right="Tags__c",
    policy=source_of_truth("left"),
    transform=Transform(
        to_right=lambda v: None if v is None else ";".join(v),
        to_left=lambda v: None if v is None else [t for t in str(v).split(";") if t],
    ),
)


class TextTags:
    """Tags merged as lists on both sides; Salesforce's multi-select became a text area."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.clock = ManualClock()
        self.left = SimulatedSystem("hubspot", clock=self.clock, key_prefix="h", fields=TAG_FIELDS)
        self.right = SimulatedSystem(
            "salesforce",
            clock=self.clock,
            key_prefix="s",
            fields=[FieldInfo(name="Email", type="string"), SF_TAGS],
        )
        for i in range(3):
            self.left.create({"email": f"u{i}@x.com", "tags": ["apac", "vip"][: i + 1]})
            self.right.create({"Email": f"u{i}@x.com", "Tags__c": ["apac", "vip"][: i + 1]})
        self.sync = _tags_sync(self.left, self.right, MERGED)
        self.rec = Reconciler(self.sync, storage, clock=self.clock)
        self.rec.run_cycle()
        self.right.set_fields([FieldInfo(name="Email", type="string"), SF_TEXT])
        assert self.rec.run_cycle().quarantined == ("tags",)
        self.queue = OperatorQueue(storage, [self.sync], clock=self.clock)
        (item,) = self.queue.list(category="schema_drift")
        assert item.id is not None
        assert "changed type from 'multipicklist' to 'textarea'" in item.explanation
        self.id: int = item.id

    def schemas(self) -> dict[tuple[str, str], str]:
        return {(s.side, s.field): s.fingerprint for s in self.storage.get_schemas("deals")}


def test_a_type_change_the_unchanged_mapping_does_not_fit_keeps_the_quarantine(
    storage: Storage,
) -> None:
    """The audit's repro: lifting with the mapping unchanged said "the mapping is fixed"."""
    w = TextTags(storage)
    kept = w.schemas()
    with pytest.raises(QueueError, match="still does not match its mapping") as caught:
        w.queue.resolve(w.id, by="ada", confirm=True)
    message = str(caught.value)
    assert (
        "right field 'Tags__c' (salesforce) does not take the values the mapping gives it:"
        " field 'Tags__c' holds a list, which does not fit its described type 'textarea'"
    ) in message
    assert "The quarantine stays" in message
    assert "\n" not in message
    assert w.storage.get_item(w.id).status is Status.ESCALATED
    assert w.storage.get_item(w.id).note is None
    assert w.schemas() == kept  # nothing stored
    assert w.rec.run_cycle().quarantined == ("tags",)  # still held back


def test_a_mapping_fixed_for_the_new_type_lifts_the_quarantine(storage: Storage) -> None:
    w = TextTags(storage)
    fixed = OperatorQueue(w.storage, [_tags_sync(w.left, w.right, AS_TEXT)], clock=w.clock)
    result = fixed.resolve(w.id, by="ada", confirm=True, note="tags are text now")
    assert result.outcome is ResolutionOutcome.ACKNOWLEDGED
    note = w.storage.get_item(w.id).note or ""
    assert "right field 'Tags__c' (salesforce): present, type 'textarea', takes the 2" in note


def test_a_type_change_since_the_stored_description_needs_values_that_fit(
    storage: Storage,
) -> None:
    """The cycle's drift check against the stored description flags a type change; with no
    synced value to show that the mapping fits the new type, the quarantine stays."""
    clock = ManualClock()
    left = SimulatedSystem("crm", clock=clock, fields=LEFT_FIELDS)
    number = FieldInfo(name="StageName", type="number")
    right = SimulatedSystem("erp", clock=clock, fields=Drifted.fields(number))
    queue = OperatorQueue(storage, [_sync(left, right)], clock=clock)
    options = ["Closed Won", "Lost", "Prospecting"]
    was = {"type": "enumeration", "options": options, "required": False}
    drift = Discrepancy(
        sync="deals", field="stage", status=Status.ESCALATED, detected_at=clock.now(),
        rule="schema", category="schema_drift", explanation="changed",
    )  # fmt: skip
    stored = FieldSchema(sync="deals", side="right", field="StageName", fingerprint="x", info=was)
    (item_id,) = storage.commit(Step(at=clock.now(), new_items=[drift], schemas=[stored]))
    with pytest.raises(QueueError) as caught:
        queue.resolve(item_id, by="ada", confirm=True)
    assert (
        "right field 'StageName' (erp) changed type from 'enumeration' to 'number', and there"
        " are no synced values to check the mapping with"
    ) in str(caught.value)
    assert storage.get_item(item_id).status is Status.ESCALATED
    assert [s.info for s in storage.get_schemas("deals")] == [was]
