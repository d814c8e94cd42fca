"""The :class:`~syncrecon.storage.SchemaStore` contract: field schemas and create intents.

Every backend passes the same tests (the ``storage`` fixture).
"""

from __future__ import annotations

from datetime import UTC, datetime

from syncrecon import Side
from syncrecon.storage import CreateIntent, FieldSchema, Link, Step, Storage

T0 = datetime(2026, 5, 1, tzinfo=UTC)


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


def test_create_intents_are_kept_until_settled(storage: Storage) -> None:
    intent = CreateIntent(
        sync="s", side=Side.RIGHT, source_key="h1", idempotency_key="k-1", created_at=T0
    )
    other = CreateIntent(
        sync="s", side=Side.LEFT, source_key="s9", idempotency_key="k-2", created_at=T0
    )
    storage.commit(Step(at=T0, intents=[intent, other]))
    assert storage.get_intents("s", Side.RIGHT, ["h1", "h2"]) == {"h1": intent}
    assert storage.get_intents("s", Side.LEFT, ["h1"]) == {}
    assert storage.get_intents("t", Side.RIGHT, ["h1"]) == {}
    # Settled in the step that stores the new link.
    storage.commit(
        Step(
            at=T0,
            links=[Link(sync="s", left_key="h1", right_key="s1")],
            intents_settled=[("s", Side.RIGHT, "h1")],
        )
    )
    assert storage.get_intents("s", Side.RIGHT, ["h1"]) == {}
    assert storage.get_intents("s", Side.LEFT, ["s9"]) == {"s9": other}
