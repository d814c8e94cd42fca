"""Storage contract for the operator tools and schema drift: assignees, field schemas."""

from __future__ import annotations

from datetime import UTC, datetime

from syncrecon import Side
from syncrecon.storage import Discrepancy, FieldSchema, ItemUpdate, Status, Step, Storage

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def test_assignee_is_set_kept_and_cleared(storage: Storage) -> None:
    item = Discrepancy(
        sync="s",
        field="f",
        status=Status.ESCALATED,
        detected_at=T0,
        left_key="l1",
        right_key="r1",
        category="money",
    )
    (item_id,) = storage.commit(Step(at=T0, new_items=[item]))
    storage.commit(
        Step(at=T0, item_updates=[ItemUpdate(id=item_id, status=Status.ESCALATED, assignee="ada")])
    )
    assert storage.get_item(item_id).assignee == "ada"
    storage.commit(
        Step(
            at=T0,
            item_updates=[ItemUpdate(id=item_id, status=Status.ESCALATED, note="looked at it")],
        )
    )
    assert storage.get_item(item_id).assignee == "ada"
    assert storage.get_item(item_id).note == "looked at it"
    storage.commit(
        Step(at=T0, item_updates=[ItemUpdate(id=item_id, status=Status.ESCALATED, assignee="")])
    )
    assert storage.get_item(item_id).assignee is None


def test_field_schemas_round_trip_and_replace(storage: Storage) -> None:
    first = FieldSchema(
        sync="s",
        side=Side.RIGHT,
        field="Stage",
        fingerprint="aa",
        info={"type": "enumeration", "options": ["a", "b"]},
    )
    other = FieldSchema(sync="t", side=Side.LEFT, field="x", fingerprint="zz", info={})
    storage.commit(Step(at=T0, schemas=[first, other]))
    (got,) = storage.get_schemas("s")
    assert (got.side, got.field, got.fingerprint) == (Side.RIGHT, "Stage", "aa")
    assert got.info == {"type": "enumeration", "options": ["a", "b"]}
    changed = FieldSchema(
        sync="s",
        side=Side.RIGHT,
        field="Stage",
        fingerprint="bb",
        info={"type": "multi_enumeration"},
    )
    storage.commit(Step(at=T0, schemas=[changed]))
    (got,) = storage.get_schemas("s")
    assert (got.fingerprint, dict(got.info)) == ("bb", {"type": "multi_enumeration"})
    assert [s.field for s in storage.get_schemas("t")] == ["x"]
