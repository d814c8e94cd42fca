"""Properties of the decision core, over random values, bases, times and policies.

A failure prints hypothesis's ``@reproduce_failure`` blob (the ``ci`` profile in conftest),
which replays the exact example.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, note
from hypothesis import strategies as st

from syncrecon import (
    MISSING,
    Direction,
    FieldMap,
    FieldPolicy,
    FieldState,
    Outcome,
    Side,
    decide,
    escalate,
    merge,
    one_sided,
    recency,
    source_of_truth,
)
from syncrecon._policy import is_blank, merge_lists, values_equal

# -- strategies --------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["", " ", "a", "b", "A", "Closed Won", "é"]),
    st.text(max_size=4),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
# Totality is checked on nastier values too: NaN, sets, tuples.
wild_values = st.one_of(
    values,
    st.just(float("nan")),
    st.frozensets(st.integers(0, 3)),
    st.tuples(scalars, scalars),
)
bases = st.one_of(st.just(MISSING), values)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
times = st.one_of(
    st.none(),
    st.integers(0, 20).map(lambda s: T0 + timedelta(seconds=s)),
)

BUILT_INS: list[FieldPolicy] = [
    source_of_truth("left"),
    source_of_truth("right"),
    source_of_truth("left", unless_blank=True),
    source_of_truth("right", unless_blank=True),
    recency(),
    recency(skew=timedelta(0)),
    recency(skew=timedelta(seconds=10)),
    merge(),
    escalate(),
    escalate("amount"),
    one_sided(),
    recency() | escalate("notes"),
    one_sided() | merge(),
    one_sided() | source_of_truth("right"),
]
policies = st.sampled_from(BUILT_INS)


@st.composite
def field_states(draw: st.DrawFn, value_strategy: st.SearchStrategy[Any] = values) -> FieldState:
    return FieldState(
        field="f",
        left=draw(value_strategy),
        right=draw(value_strategy),
        base=draw(st.one_of(st.just(MISSING), value_strategy)),
        left_modified_at=draw(times),
        right_modified_at=draw(times),
        left_per_field=draw(st.booleans()),
        right_per_field=draw(st.booleans()),
    )


def _blank_variant(value: Any) -> st.SearchStrategy[Any]:
    if is_blank(value):
        return st.sampled_from([None, "", "  ", [], {}])
    return st.just(copy.deepcopy(value))


@st.composite
def agreeing_states(draw: st.DrawFn) -> FieldState:
    """States whose two sides hold the same value (or two blanks)."""
    left = draw(values)
    return FieldState(
        field="f",
        left=left,
        right=draw(_blank_variant(left)),
        base=draw(bases),
        left_modified_at=draw(times),
        right_modified_at=draw(times),
    )


# -- every policy ------------------------------------------------------------------------------


@given(policy=policies, s=field_states(wild_values))
def test_decide_is_total(policy: FieldPolicy, s: FieldState) -> None:
    decision = decide(policy, s)
    assert decision.outcome in Outcome
    assert decision.state is s
    assert decision.explain()
    if decision.escalated:
        assert decision.category
    for direction in Direction:
        fm = FieldMap(left="f", right="g", policy=policy, direction=direction)
        assert fm.decide(s).outcome in Outcome


@given(policy=policies, s=field_states())
def test_decide_is_deterministic(policy: FieldPolicy, s: FieldState) -> None:
    first = decide(policy, s)
    again = decide(policy, copy.deepcopy(s))
    assert first.outcome is again.outcome
    assert first.value == again.value
    assert first.rule == again.rule
    assert first.category == again.category
    assert first.reason == again.reason
    assert first.explain() == again.explain()


@given(policy=policies, s=agreeing_states())
def test_agreeing_sides_are_never_written(policy: FieldPolicy, s: FieldState) -> None:
    decision = decide(policy, s)
    assert decision.outcome is Outcome.AGREE
    assert not decision.is_discrepancy
    assert not decision.writes_left
    assert not decision.writes_right


def _is_reordering(a: Any, b: Any) -> bool:
    """Whether two collections hold the same items, each matched once, in some order."""
    kinds = (list, tuple, set, frozenset)
    if not isinstance(a, kinds) or not isinstance(b, kinds):
        return False
    rest = list(b)
    for item in a:
        match = next((i for i, other in enumerate(rest) if values_equal(item, other)), None)
        if match is None:
            return False
        del rest[match]
    return not rest


def test_merge_agrees_only_on_lists_with_the_same_items() -> None:
    assert decide(merge(), FieldState(field="f", left=[1, 2], right=[2, 1])).outcome is (
        Outcome.AGREE
    )
    # A mapping is not a list of one item: {} and [None] differ although both are blank-ish.
    decision = decide(merge(), FieldState(field="f", left={}, right=[None]))
    assert decision.outcome is not Outcome.AGREE


@given(policy=policies, s=field_states())
def test_decisions_are_consistent(policy: FieldPolicy, s: FieldState) -> None:
    decision = decide(policy, s)
    note(decision.explain())
    if values_equal(s.left, s.right):
        assert decision.outcome is Outcome.AGREE
        return
    if decision.outcome is Outcome.AGREE:
        # The one documented exception: merge() agrees on two lists with the same items in
        # another order (the order of a multi-select is the system's).
        assert decision.rule == "merge"
        assert _is_reordering(s.left, s.right)
        return
    if decision.outcome is Outcome.TAKE_LEFT:
        assert decision.value is s.left
        assert decision.writes_right
        assert not decision.writes_left
    elif decision.outcome is Outcome.TAKE_RIGHT:
        assert decision.value is s.right
        assert decision.writes_left
        assert not decision.writes_right
    elif decision.outcome is Outcome.MERGE:
        assert decision.writes_left
        assert decision.writes_right
    else:
        assert not decision.writes_left
        assert not decision.writes_right


THREE_WAY = [p for p in BUILT_INS if p.name.startswith(("recency", "one_sided"))]


@st.composite
def one_sided_states(draw: st.DrawFn) -> tuple[Side, FieldState]:
    """A synced field that changed on one side only since the base."""
    base = draw(values)
    changed = draw(values.filter(lambda v: not values_equal(v, base)))
    side = draw(st.sampled_from(list(Side)))
    unchanged = draw(_blank_variant(base))
    left, right = (changed, unchanged) if side is Side.LEFT else (unchanged, changed)
    s = FieldState(
        field="f",
        left=left,
        right=right,
        base=base,
        left_modified_at=draw(times),
        right_modified_at=draw(times),
    )
    return side, s


@given(policy=st.sampled_from(THREE_WAY), case=one_sided_states())
def test_a_one_sided_change_propagates(policy: FieldPolicy, case: tuple[Side, FieldState]) -> None:
    side, s = case
    decision = decide(policy, s)
    expected = Outcome.TAKE_LEFT if side is Side.LEFT else Outcome.TAKE_RIGHT
    assert decision.outcome is expected, decision.explain()
    assert decision.value is s.value(side)


# -- source of truth -----------------------------------------------------------------------------


@given(side=st.sampled_from(list(Side)), unless_blank=st.booleans(), s=field_states())
def test_source_of_truth_yields_the_source_value_unless_blank(
    side: Side, unless_blank: bool, s: FieldState
) -> None:
    decision = decide(source_of_truth(side, unless_blank=unless_blank), s)
    if values_equal(s.left, s.right):
        assert decision.outcome is Outcome.AGREE
    elif unless_blank and is_blank(s.value(side)):
        assert decision.value is s.value(side.other)
        assert decision.outcome is (
            Outcome.TAKE_LEFT if side.other is Side.LEFT else Outcome.TAKE_RIGHT
        )
    else:
        assert decision.value is s.value(side)
        assert decision.outcome is (Outcome.TAKE_LEFT if side is Side.LEFT else Outcome.TAKE_RIGHT)


# -- merge ----------------------------------------------------------------------------------------

items = st.one_of(
    st.sampled_from(["a", "b", "c", "d", "e", "f"]),
    st.fixed_dictionaries({"id": st.integers(1, 3)}),
)


def _key(item: Any) -> str:
    return json.dumps(item, sort_keys=True)


item_lists = st.lists(items, max_size=6, unique_by=_key)
optional_lists = st.one_of(st.none(), item_lists)


def _keys(value: Any) -> set[str]:
    return {_key(x) for x in (value or [])}


@given(left=optional_lists, right=optional_lists, base=st.one_of(st.just(MISSING), optional_lists))
def test_merge_keeps_every_addition_and_no_removal(left: Any, right: Any, base: Any) -> None:
    s = FieldState(field="tags", left=left, right=right, base=base)
    decision = decide(merge(), s)
    note(decision.explain())
    assert decision.outcome is not Outcome.ESCALATE
    result = _keys(decision.value)
    lk, rk = _keys(left), _keys(right)
    assert result <= lk | rk
    if base is MISSING:
        assert result == lk | rk
        return
    bk = _keys(base)
    added = (lk - bk) | (rk - bk)
    removed = (bk - lk) | (bk - rk)
    assert added <= result
    assert not (removed & result)
    # Everything else the two sides still share is kept.
    assert (lk & rk & bk) <= result
    # No item twice.
    assert len(result) == len(decision.value or [])


@given(left=optional_lists, right=optional_lists, base=st.one_of(st.just(MISSING), optional_lists))
def test_merge_is_idempotent(left: Any, right: Any, base: Any) -> None:
    decision = decide(merge(), FieldState(field="tags", left=left, right=right, base=base))
    result = decision.value
    # Both systems now hold the result and it is the new base: nothing more to do.
    settled = decide(merge(), FieldState(field="tags", left=result, right=result, base=result))
    assert settled.outcome is Outcome.AGREE
    assert not settled.writes_left
    assert not settled.writes_right
    # Merging the result with either original side again changes nothing either.
    base_list = None if base is MISSING else (base or [])
    for side_value in (left, right):
        assert merge_lists(result or [], side_value or [], base_list) == (result or [])
    assert merge_lists(result or [], result or [], base_list) == (result or [])


@given(left=item_lists, right=item_lists)
def test_merge_without_base_is_order_stable_union(left: list[Any], right: list[Any]) -> None:
    merged = merge_lists(left, right, None)
    assert merged[: len(left)] == left
    lk = _keys(left)
    assert merged[len(left) :] == [x for x in right if _key(x) not in lk]
