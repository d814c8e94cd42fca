"""Sloppy connectors, property-tested: fields omitted, values of the wrong type, non-records.

Two simulated systems hold ``n`` linked records (linked by a first, clean cycle over the email).
Hypothesis then draws, per record, field and side, what that side's *answers* say about the
field: nothing special, the field omitted from every answer (absent), a value that does not fit
(bytes, an ``object()``, a mapping with a non-text key, a text or a list of bytes in the merged
list field) or a valid new value (a real edit, stored in the system). It may also append
entries that are not records to listing pages. Corruptions live in the connector's answers only,
so the systems' stored state stays valid and can be compared before and after. One cycle must:

* not raise, and leave every field that a side did not return, or returned unfit, untouched on
  *both* sides (no value erased, none overwritten by a bad one);
* escalate each held field once: one active ``invalid_value`` item per (record, field) with an
  unfit value on either side, and one ``invalid_record`` item per shown key of a non-record;
* sync everything else to the policies' outcome (``amount`` escalates a difference instead);

and a second cycle must write nothing and escalate nothing new. Every assertion message starts
with the drawn scenario.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncrecon import (
    FieldMap,
    NaturalKey,
    Page,
    Reconciler,
    Record,
    RetrySettings,
    SyncDefinition,
    escalate,
    merge,
    recency,
    source_of_truth,
)
from syncrecon._drift import storable_problem
from syncrecon.storage import Storage
from syncrecon.storage.memory import MemoryStorage
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import ManualClock, SimulatedSystem

SYNC = "deals"
FIELDS = [
    FieldMap(left="notes", right="notes", policy=recency()),
    FieldMap(left="stage", right="stage", policy=source_of_truth("left")),
    FieldMap(left="tags", right="tags", policy=merge()),
    FieldMap(left="amount", right="amount", policy=escalate("money")),
]
NAMES = [fm.left for fm in FIELDS]
SIDES = ("left", "right")
ORIGINAL = {"stage": "open", "tags": ["a"], "amount": 10}  # notes: f"n{i}"

# Valid new values (real edits); none equals the original. ``7`` in a text field and ``"30"``
# in a number field are of an unexpected type but storable and undescribed: they are valid.
EDITS: dict[str, list[Any]] = {
    "notes": ["edited", "", None, 7],
    "stage": ["won", "lost", None],
    "tags": [["a", "b"], ["c"], [], None],
    "amount": [20, 10.5, None, "30"],
}


def _bad_value(kind: str) -> Any:
    """A value that does not fit (made afresh: ``object()`` instances are never equal)."""
    return {
        "bytes": b"\x00\x01binary",
        "object": object(),
        "int_key_mapping": {1: "one"},
        "text_in_list_field": "vip,eu",
        "bytes_in_list": ["a", b"\xff"],
    }[kind]


INVALID: dict[str, list[str]] = {
    name: ["bytes", "object", "int_key_mapping"]
    + (["text_in_list_field", "bytes_in_list"] if name == "tags" else [])
    for name in NAMES
}
JUNK = ("record_key_none", "record_key_42", "plain_dict")
SETTINGS = settings(  # max_examples from the profile (ci: 200)
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Action = tuple[str, Any] | None  # None, ("absent", None), ("invalid", kind), ("edit", value)


def _action(name: str) -> st.SearchStrategy[Action]:
    return st.one_of(
        st.none(),
        st.none(),
        st.just(("absent", None)),
        st.sampled_from([("invalid", kind) for kind in INVALID[name]]),
        st.sampled_from([("edit", value) for value in EDITS[name]]),
    )


# actions[i][name] = (left action, right action) for record i (keys l{i+1} and r{i+1}).
Actions = list[dict[str, tuple[Action, Action]]]


@st.composite
def _actions(draw: st.DrawFn) -> Actions:
    n = draw(st.integers(3, 12))
    return [{name: (draw(_action(name)), draw(_action(name))) for name in NAMES} for _ in range(n)]


def _junk_entry(kind: str) -> Any:
    if kind == "plain_dict":
        return {"key": "l9", "fields": {"email": "zz@x.com"}}
    record = Record(key="placeholder", fields={"email": "zz@x.com"})
    object.__setattr__(record, "key", None if kind == "record_key_none" else 42)
    return record


def _shown(kind: str) -> str:
    """The key ``_escalate_invalid`` files an entry under (a dict has no ``key`` attribute)."""
    return "<invalid key 42>" if kind == "record_key_42" else "<invalid key None>"


class Sloppy(SimulatedSystem):
    """A system whose answers omit fields, carry unfit values and list non-records.

    ``answers[key][field]`` is ``ABSENT`` (left out of every answer) or the value every answer
    carries instead of the stored one; ``junk`` holds ``(page, entry)``: ``entry`` is appended to
    the listing page ``page`` (or to the last page when there are fewer).
    """

    ABSENT = object()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: dict[str, dict[str, Any]] = {}
        self.junk: list[tuple[int, Any]] = []

    def _answer(self, record: Record) -> Record:
        changes = self.answers.get(record.key)
        if not changes:
            return record
        fields = dict(record.fields)
        for name, value in changes.items():
            if value is Sloppy.ABSENT:
                fields.pop(name, None)
            else:
                fields[name] = value
        return attrs.evolve(record, fields=fields)

    def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        page = super().list_records(since=since, cursor=cursor)
        number = int(cursor or 0) // self.capabilities.page_size
        last = page.next_cursor is None
        junk = [entry for at, entry in self.junk if at == number or (last and at > number)]
        records = [self._answer(r) for r in page.records]
        return Page(records=[*records, *junk], next_cursor=page.next_cursor)

    def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        return [self._answer(r) for r in super().read_records(keys)]


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == []


def _same(a: Any, b: Any) -> bool:
    return (_blank(a) and _blank(b)) or (a == b and type(a) is type(b))


def _stored(system: SimulatedSystem, key: str) -> dict[str, Any]:
    return {name: system.get(key).fields.get(name) for name in NAMES}


def _active(storage: Storage, category: str) -> list[Any]:
    items = storage.list_items(sync=SYNC, category=category, limit=10_000)
    return [i for i in items if i.status.is_active]


@SETTINGS
@given(
    actions=_actions(),
    junk=st.lists(
        st.tuples(st.sampled_from(SIDES), st.sampled_from(JUNK), st.integers(0, 3)), max_size=4
    ),
    page_sizes=st.tuples(st.integers(1, 13), st.integers(1, 13)),
    backend=st.sampled_from(["memory", "sqlite"]),
)
def test_sloppy_answers_hold_their_fields_escalate_once_and_the_rest_syncs(
    actions: Actions,
    junk: list[tuple[str, str, int]],
    page_sizes: tuple[int, int],
    backend: str,
) -> None:
    where = f"scenario(actions={actions!r}, junk={junk!r}, page_sizes={page_sizes!r}, {backend})"
    n = len(actions)
    clock = ManualClock()
    left = Sloppy("crm", clock=clock, key_prefix="l", page_size=page_sizes[0])
    right = Sloppy("billing", clock=clock, key_prefix="r", page_size=page_sizes[1])
    systems = {"left": left, "right": right}
    storage: Storage = MemoryStorage() if backend == "memory" else SQLiteStorage(":memory:")
    sync = SyncDefinition(
        name=SYNC,
        left=left,
        right=right,
        fields=FIELDS,
        natural_key=NaturalKey(left="email", right="email"),
    )
    rec = Reconciler(sync, storage, clock=clock, retry=RetrySettings(sleep=lambda _: None))
    try:
        keys = [(f"l{i + 1}", f"r{i + 1}") for i in range(n)]
        for i in range(n):
            values = {"email": f"p{i}@x.com", "notes": f"n{i}", **ORIGINAL}
            assert left.create(values) == keys[i][0]
            assert right.create(values) == keys[i][1]
        first = rec.run_cycle()
        assert first.new_links == n, where
        assert first.total_writes == 0, where

        # The draw: real edits in the systems, corruptions in their answers.
        for i, per_field in enumerate(actions):
            for name, pair in per_field.items():
                for side, key, action in zip(SIDES, keys[i], pair, strict=True):
                    if action is None:
                        continue
                    kind, what = action
                    if kind == "edit":
                        clock.advance(60)  # never within recency's skew of another edit
                        systems[side].edit(key, **{name: what})
                    else:
                        value = Sloppy.ABSENT if kind == "absent" else _bad_value(what)
                        systems[side].answers.setdefault(key, {})[name] = value
        for side, kind, page in junk:
            systems[side].junk.append((page, _junk_entry(kind)))
        clock.advance(60)
        before = {
            (i, s): _stored(systems[s], keys[i][si]) for i in range(n) for si, s in enumerate(SIDES)
        }

        report = rec.run_cycle()

        def kinds(i: int, name: str) -> tuple[str | None, str | None]:
            pair = actions[i][name]
            return (pair[0][0] if pair[0] else None, pair[1][0] if pair[1] else None)

        invalid = {(i, f) for i in range(n) for f in NAMES if "invalid" in kinds(i, f)}
        absent = {(i, f) for i in range(n) for f in NAMES if "absent" in kinds(i, f)}
        held = invalid | absent
        after = {
            (i, s): _stored(systems[s], keys[i][si]) for i in range(n) for si, s in enumerate(SIDES)
        }
        assert report.halted is None, where
        assert report.write_failures == 0, where

        # Nothing erased, nothing overwritten by a bad value: a held field is untouched on both
        # sides, and no stored value anywhere is one that cannot be stored.
        for i, name in sorted(held):
            for side in SIDES:
                was, now = before[i, side][name], after[i, side][name]
                assert (was, type(was)) == (now, type(now)), (
                    f"{where}: {side} {keys[i]} {name!r} changed from {was!r} to {now!r}"
                )
        for (i, side), values in after.items():
            for name, value in values.items():
                assert storable_problem(value) is None, f"{where}: {side} {keys[i]} {name}"
                if name == "tags":
                    assert value is None or isinstance(value, list), f"{where}: {keys[i]} tags"

        # Each unfit value is escalated once, per (record, field), whichever side(s) held it.
        expected = {(*keys[i], f) for i, f in invalid}
        items = _active(storage, "invalid_value")
        found = [(it.left_key, it.right_key, it.field) for it in items]
        assert sorted(found) == sorted(expected), f"{where}: invalid_value items {found}"
        assert report.escalated.get("invalid_value", 0) == len(expected), where
        for it in items:
            i = keys.index((it.left_key, it.right_key))
            for si, side in enumerate(SIDES):
                named = f"{systems[side].name} record {keys[i][si]!r}"
                unfit = kinds(i, it.field)[si] == "invalid"
                assert (named in it.explanation) == unfit, f"{where}: {it.explanation}"
        assert report.unknown_fields == len(absent - invalid), where
        partial = {
            systems[side].name: count
            for si, side in enumerate(SIDES)
            if (
                count := sum(1 for i in range(n) if any(kinds(i, f)[si] == "absent" for f in NAMES))
            )
        }
        assert dict(report.partial_records) == partial, where

        # Entries that are not records: counted each, one item per shown key and side.
        counts = {
            systems[side].name: count
            for side in SIDES
            if (count := sum(1 for s, _, _ in junk if s == side))
        }
        assert dict(report.invalid_records) == counts, where
        shown = {
            (_shown(kind), None) if side == "left" else (None, _shown(kind))
            for side, kind, _ in junk
        }
        records = [(it.left_key, it.right_key) for it in _active(storage, "invalid_record")]
        assert sorted(records, key=repr) == sorted(shown, key=repr), f"{where}: {records}"
        # Two entries under the same shown key in one cycle are two escalations in the report
        # but one stored item (the storage keeps one active item per key).
        assert len(shown) <= report.escalated.get("invalid_record", 0) <= len(junk), where

        # Everything else is synced to the policies' outcome; amount escalates a difference.
        money = {(it.left_key, it.right_key) for it in _active(storage, "money")}
        for i in range(n):
            for name in NAMES:
                if (i, name) in held:
                    continue
                lv, rv = after[i, "left"][name], after[i, "right"][name]
                edited = "edit" in kinds(i, name)
                if (
                    name == "amount"
                    and edited
                    and not _same(before[i, "left"][name], before[i, "right"][name])
                ):
                    assert keys[i] in money, f"{where}: {keys[i]} amount not escalated"
                    assert (lv, rv) == (before[i, "left"][name], before[i, "right"][name]), where
                    continue
                assert _same(lv, rv), f"{where}: {keys[i]} {name!r}: {lv!r} != {rv!r}"

        # A second cycle over the same answers writes nothing and escalates nothing new.
        counts_before = {c: len(_active(storage, c)) for c in ("invalid_value", "invalid_record")}
        again = rec.run_cycle()
        assert again.halted is None, where
        assert again.total_writes == 0, f"{where}: second cycle wrote {again.writes}"
        assert "invalid_value" not in again.escalated, f"{where}: {again.escalated}"
        assert "invalid_record" not in again.escalated, f"{where}: {again.escalated}"
        counts_after = {c: len(_active(storage, c)) for c in ("invalid_value", "invalid_record")}
        assert counts_after == counts_before, where
        assert dict(again.invalid_records) == counts, where
        for (i, side), values in after.items():
            assert _stored(systems[side], keys[i][SIDES.index(side)]) == values, where
    finally:
        storage.close()
