"""The decision core: every policy against every three-way case.

Each case is a :class:`FieldState` (left, right, base, times) decided with :func:`decide`,
the way the reconciler and the webhook loop call it. The names in the tables read as the
situation they describe: ``base -> (left, right)``.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from syncrecon import (
    MISSING,
    ConfigurationError,
    Decision,
    Direction,
    FieldMap,
    FieldPolicy,
    FieldState,
    NaturalKey,
    Outcome,
    Reconciler,
    Record,
    Side,
    SyncDefinition,
    decide,
    escalate,
    merge,
    one_sided,
    recency,
    source_of_truth,
    value_map,
)
from syncrecon._policy import as_policy, is_blank, merge_lists, values_equal
from syncrecon.storage.memory import MemoryStorage
from syncrecon.testing import ManualClock, SimulatedSystem

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
UNRESOLVED = "unresolved_conflict"
ONE_WAY = "one_way_conflict"


def state(
    left: Any,
    right: Any,
    base: Any = MISSING,
    *,
    lt: datetime | None = None,
    rt: datetime | None = None,
    per_field: bool = False,
    field: str = "f",
) -> FieldState:
    return FieldState(
        field=field,
        left=left,
        right=right,
        base=base,
        left_modified_at=lt,
        right_modified_at=rt,
        left_per_field=per_field,
        right_per_field=per_field,
    )


def assert_takes(decision: Decision, side: Side, value: Any) -> None:
    expected = Outcome.TAKE_LEFT if side is Side.LEFT else Outcome.TAKE_RIGHT
    assert decision.outcome is expected, decision.explain()
    assert decision.value == value
    assert decision.category is None
    assert decision.writes_right is (side is Side.LEFT)
    assert decision.writes_left is (side is Side.RIGHT)


def assert_agree(decision: Decision) -> None:
    assert decision.outcome is Outcome.AGREE, decision.explain()
    assert decision.rule == "agree"
    assert not decision.is_discrepancy
    assert not decision.writes_left
    assert not decision.writes_right


def assert_escalates(decision: Decision, category: str) -> None:
    assert decision.outcome is Outcome.ESCALATE, decision.explain()
    assert decision.escalated
    assert decision.category == category
    assert decision.value is None
    assert not decision.writes_left
    assert not decision.writes_right


# -- blank values and equality ---------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", "\t\n", [], (), {}, set(), MISSING])
def test_blank_values(value: Any) -> None:
    assert is_blank(value)


@pytest.mark.parametrize("value", [0, False, 0.0, "0", " x ", [None], {"a": None}])
def test_falsy_but_not_blank(value: Any) -> None:
    assert not is_blank(value)


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (None, "", True),
        (None, [], True),
        ("", [], True),
        ("  ", None, True),
        ({}, None, True),
        (1, 1.0, True),
        ((1, "a"), [1, "a"], True),
        ([None, "x"], ["", "x"], True),
        (True, 1, False),
        (False, 0, False),
        (0, None, False),
        ("a", "A", False),
        ([1, 2], [2, 1], False),
        ([1], [1, 1], False),
        ({"a": 1}, {"a": 1}, True),
        ({"a": 1}, {"a": 2}, False),
    ],
)
def test_values_equal(a: Any, b: Any, equal: bool) -> None:
    assert values_equal(a, b) is equal
    assert values_equal(b, a) is equal


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(Decimal("1200.50"), 1200.5, id="decimal-float"),
        pytest.param(Decimal("3"), 3, id="decimal-int"),
        pytest.param(OrderedDict(a=1), {"a": 1}, id="dict-subclass"),
        pytest.param(Side.LEFT, "left", id="str-enum"),
        pytest.param(Decimal("0.1"), 0.1, id="decimal-float-inexact"),
    ],
)
def test_values_equal_across_types_follows_python_equality(a: Any, b: Any) -> None:
    assert values_equal(a, b) is (a == b)
    assert values_equal(b, a) is (a == b)
    if a == b:
        assert_agree(decide(escalate("amount"), state(a, b, base=a)))


@pytest.mark.parametrize(
    "policy",
    [
        source_of_truth("left"),
        source_of_truth("right", unless_blank=True),
        recency(),
        merge(),
        escalate("x"),
        one_sided(),
    ],
    ids=repr,
)
@pytest.mark.parametrize(("left", "right"), [(None, ""), ("", []), ([], None), ("  ", None)])
def test_blank_values_agree_under_every_policy(policy: FieldPolicy, left: Any, right: Any) -> None:
    assert_agree(decide(policy, state(left, right, base="something")))


def test_decide_does_not_ask_the_policy_when_values_agree() -> None:
    def explodes(_: FieldState) -> Decision | None:
        raise AssertionError("called")

    decision = decide(explodes, state("same", "same", base="old"))
    assert_agree(decision)
    assert decision.value == "same"


# -- source of truth -------------------------------------------------------------------------


@pytest.mark.parametrize("side", [Side.LEFT, Side.RIGHT])
class TestSourceOfTruth:
    def test_only_source_changed_propagates(self, side: Side) -> None:
        s = state("new", "old", "old") if side is Side.LEFT else state("old", "new", "old")
        assert_takes(decide(source_of_truth(side), s), side, "new")

    def test_only_other_side_changed_is_reverted(self, side: Side) -> None:
        s = state("old", "new", "old") if side is Side.LEFT else state("new", "old", "old")
        decision = decide(source_of_truth(side), s)
        assert_takes(decision, side, "old")
        assert decision.rule == "source_of_truth"
        assert f"the change on {side.other} is not propagated" in decision.reason

    def test_both_changed_alike_agree(self, side: Side) -> None:
        assert_agree(decide(source_of_truth(side), state("new", "new", "old")))

    def test_both_changed_differently_source_wins(self, side: Side) -> None:
        s = state("mine", "theirs", "old")
        winner = "mine" if side is Side.LEFT else "theirs"
        assert_takes(decide(source_of_truth(side), s), side, winner)

    def test_never_synced_source_wins(self, side: Side) -> None:
        s = state("l", "r")
        assert_takes(decide(source_of_truth(side), s), side, s.value(side))

    def test_blank_source_wins_without_unless_blank(self, side: Side) -> None:
        s = state(None, "x", "x") if side is Side.LEFT else state("x", None, "x")
        assert_takes(decide(source_of_truth(side), s), side, None)

    @pytest.mark.parametrize("blank", [None, "", "  ", []])
    def test_unless_blank_takes_the_other_side(self, side: Side, blank: Any) -> None:
        s = state(blank, "x", "x") if side is Side.LEFT else state("x", blank, "x")
        decision = decide(source_of_truth(side, unless_blank=True), s)
        assert_takes(decision, side.other, "x")
        assert "blank" in decision.reason

    def test_unless_blank_non_blank_source_wins(self, side: Side) -> None:
        s = state("l", "r", "old")
        decision = decide(source_of_truth(side, unless_blank=True), s)
        assert_takes(decision, side, s.value(side))

    def test_unless_blank_both_blank_agree(self, side: Side) -> None:
        assert_agree(decide(source_of_truth(side, unless_blank=True), state(None, "", "x")))


def test_source_of_truth_accepts_strings_and_rejects_unknown_sides() -> None:
    assert source_of_truth("right").side is Side.RIGHT
    with pytest.raises(ValueError):
        source_of_truth("middle")


# -- recency ---------------------------------------------------------------------------------


def test_recency_only_left_changed_propagates_without_times() -> None:
    decision = decide(recency(), state("new", "old", "old"))
    assert_takes(decision, Side.LEFT, "new")
    assert decision.reason == "only left changed since the last sync"


def test_recency_only_right_changed_propagates_without_times() -> None:
    decision = decide(recency(), state("old", "new", "old"))
    assert_takes(decision, Side.RIGHT, "new")
    assert decision.reason == "only right changed since the last sync"


def test_recency_one_sided_change_wins_even_when_the_other_side_is_newer() -> None:
    # The right record was touched later (another field), but only left changed this field.
    s = state("new", "old", "old", lt=T0, rt=T0 + timedelta(hours=1))
    assert_takes(decide(recency(), s), Side.LEFT, "new")


def test_recency_both_changed_alike_agree() -> None:
    assert_agree(decide(recency(), state("new", "new", "old", lt=T0, rt=T0)))


@pytest.mark.parametrize("base", ["old", MISSING], ids=["conflict", "never-synced"])
def test_recency_newer_side_wins(base: Any) -> None:
    later = T0 + timedelta(minutes=1)
    assert_takes(decide(recency(), state("l", "r", base, lt=later, rt=T0)), Side.LEFT, "l")
    assert_takes(decide(recency(), state("l", "r", base, lt=T0, rt=later)), Side.RIGHT, "r")


@pytest.mark.parametrize("skew", [timedelta(seconds=5), timedelta(minutes=2), timedelta(0)])
@pytest.mark.parametrize("newer", [Side.LEFT, Side.RIGHT])
def test_recency_skew_boundary(skew: timedelta, newer: Side) -> None:
    policy = recency(skew=skew)

    def case(gap: timedelta) -> FieldState:
        lt, rt = (T0 + gap, T0) if newer is Side.LEFT else (T0, T0 + gap)
        return state("l", "r", "old", lt=lt, rt=rt)

    # Exactly at the tolerance the policy abstains: decide escalates rather than guess.
    at_skew = decide(policy, case(skew))
    assert_escalates(at_skew, UNRESOLVED)
    assert at_skew.rule == "recency"
    # One microsecond beyond it, the newer side wins.
    beyond = decide(policy, case(skew + timedelta(microseconds=1)))
    assert_takes(beyond, newer, "l" if newer is Side.LEFT else "r")
    if skew:
        assert_escalates(decide(policy, case(skew / 2)), UNRESOLVED)


@pytest.mark.parametrize(
    ("lt", "rt"), [(None, T0), (T0, None), (None, None)], ids=["no-left", "no-right", "none"]
)
@pytest.mark.parametrize("base", ["old", MISSING], ids=["conflict", "never-synced"])
def test_recency_missing_times_escalate(
    lt: datetime | None, rt: datetime | None, base: Any
) -> None:
    assert_escalates(decide(recency(), state("l", "r", base, lt=lt, rt=rt)), UNRESOLVED)


def test_recency_reason_names_the_time_granularity() -> None:
    later = T0 + timedelta(minutes=1)
    by_field = decide(recency(), state("l", "r", "old", lt=later, rt=T0, per_field=True))
    by_record = decide(recency(), state("l", "r", "old", lt=later, rt=T0, per_field=False))
    assert "field times" in by_field.reason
    assert "record-level times" in by_record.reason
    assert "0:01:00" in by_field.reason


def test_record_prefers_its_field_time_over_the_record_time() -> None:
    record = Record(
        key="k",
        fields={"notes": "n", "stage": "s"},
        modified_at=T0 + timedelta(hours=2),
        field_modified_at={"notes": T0},
    )
    assert record.modified("notes") == (T0, True)
    assert record.modified("stage") == (T0 + timedelta(hours=2), False)
    assert Record(key="k", modified_at=T0).modified("notes") == (T0, False)


def test_recency_uses_per_field_times_over_record_times_in_a_cycle() -> None:
    # Left edits notes first, right edits notes later, then left edits another field: by
    # record times left is newer, by the notes' own times right is. Right must win.
    clock = ManualClock(T0)
    left = SimulatedSystem("crm-a", clock=clock, field_timestamps=True)
    right = SimulatedSystem("crm-b", clock=clock, field_timestamps=True)
    start = {"email": "ada@example.com", "notes": "n0", "stage": "lead"}
    lkey, rkey = left.create(start), right.create(start)
    sync = SyncDefinition(
        name="deals",
        left=left,
        right=right,
        fields=[
            FieldMap(left="email", right="email", policy=source_of_truth("left")),
            FieldMap(left="notes", right="notes", policy=recency()),
            FieldMap(left="stage", right="stage", policy=source_of_truth("left")),
        ],
        natural_key=NaturalKey(left="email", right="email"),
    )
    reconciler = Reconciler(sync, MemoryStorage(), clock=clock)
    reconciler.run_cycle()
    clock.advance(60)
    left.edit(lkey, notes="from left")
    clock.advance(60)
    right.edit(rkey, notes="from right")
    clock.advance(60)
    left.edit(lkey, stage="won")
    left_time, right_time = left.get(lkey).modified_at, right.get(rkey).modified_at
    assert left_time is not None
    assert right_time is not None
    assert left_time > right_time  # the record times say left is newer

    report = reconciler.run_cycle()

    assert left.get(lkey).fields["notes"] == "from right"
    assert right.get(rkey).fields["notes"] == "from right"
    assert right.get(rkey).fields["stage"] == "won"
    assert report.auto_resolved.get("recency") == 1
    (item,) = reconciler.storage.list_items(field="notes")
    assert "field times" in item.explanation


# -- merge -----------------------------------------------------------------------------------


MERGE_CASES = [
    # id, base, left, right, outcome, value
    ("left-added", ["a"], ["a", "b"], ["a"], Outcome.TAKE_LEFT, ["a", "b"]),
    ("right-added", ["a"], ["a"], ["a", "c"], Outcome.TAKE_RIGHT, ["a", "c"]),
    ("left-removed", ["a", "b"], ["a"], ["a", "b"], Outcome.TAKE_LEFT, ["a"]),
    ("right-removed", ["a", "b"], ["a", "b"], ["b"], Outcome.TAKE_RIGHT, ["b"]),
    ("both-added", ["a"], ["a", "b"], ["a", "c"], Outcome.MERGE, ["a", "b", "c"]),
    ("add-left-remove-right", ["a", "b"], ["a", "b", "c"], ["a"], Outcome.MERGE, ["a", "c"]),
    ("remove-left-add-right", ["a", "b"], ["b"], ["a", "b", "d"], Outcome.MERGE, ["b", "d"]),
    ("both-removed-different", ["a", "b", "c"], ["b", "c"], ["a", "c"], Outcome.MERGE, ["c"]),
    ("cleared-left", ["a", "b"], None, ["a", "b"], Outcome.TAKE_LEFT, None),
    ("never-synced-union", MISSING, ["a", "b"], ["b", "c"], Outcome.MERGE, ["a", "b", "c"]),
    ("never-synced-subset", MISSING, ["a"], [], Outcome.TAKE_LEFT, ["a"]),
    ("never-synced-blank-left", MISSING, None, ["x"], Outcome.TAKE_RIGHT, ["x"]),
    ("synced-empty", [], ["a"], ["b"], Outcome.MERGE, ["a", "b"]),
    ("scalar-base", "a", ["a", "b"], ["a"], Outcome.TAKE_LEFT, ["a", "b"]),
]


@pytest.mark.parametrize(
    ("base", "left", "right", "outcome", "value"),
    [c[1:] for c in MERGE_CASES],
    ids=[c[0] for c in MERGE_CASES],
)
def test_merge_three_way(base: Any, left: Any, right: Any, outcome: Outcome, value: Any) -> None:
    decision = decide(merge(), state(left, right, base))
    assert decision.outcome is outcome, decision.explain()
    assert values_equal(decision.value, value)
    assert decision.rule == "merge"
    if outcome is Outcome.MERGE:
        assert decision.writes_left
        assert decision.writes_right


def test_merge_both_changed_alike_agree() -> None:
    assert_agree(decide(merge(), state(["a", "b"], ["a", "b"], ["a"])))


def test_merge_removal_is_not_resurrected_by_the_union() -> None:
    decision = decide(merge(), state(["vip"], ["vip", "churn-risk"], ["vip", "churn-risk"]))
    assert_takes(decision, Side.LEFT, ["vip"])
    assert "three-way union" in decision.reason


def test_merge_without_base_is_a_union_and_says_so() -> None:
    decision = decide(merge(), state(["a"], ["b"]))
    assert decision.value == ["a", "b"]
    assert "never synced" in decision.reason


def test_merge_is_order_stable() -> None:
    # Left's items in left's order, then right's new items in right's order.
    assert merge_lists(["c", "a"], ["b", "a", "d"], None) == ["c", "a", "b", "d"]
    assert merge_lists(["z", "y", "x"], ["w", "x", "v"], ["x"]) == [
        "z",
        "y",
        "x",
        "w",
        "v",
    ]
    decision = decide(merge(), state(["c", "a"], ["b", "a", "d"], ["a"]))
    assert decision.value == ["c", "a", "b", "d"]


def test_merge_drops_duplicates() -> None:
    assert merge_lists(["a", "a", "b"], ["b", "b"], None) == ["a", "b"]


def test_merge_unhashable_items() -> None:
    one, two = {"id": 1, "tags": ["x"]}, {"id": 2}
    decision = decide(merge(), state([one], [two], []))
    assert decision.outcome is Outcome.MERGE
    assert decision.value == [one, two]
    # Removed on left since the base, added on right: the removal holds.
    decision = decide(merge(), state([], [{"tags": ["x"], "id": 1}, two], [one]))
    assert decision.outcome is Outcome.MERGE
    assert decision.value == [two]


def test_merge_treats_dict_items_with_reordered_keys_as_one_item() -> None:
    assert merge_lists([{"a": 1, "b": 2}], [{"b": 2, "a": 1}], None) == [{"a": 1, "b": 2}]


def test_merge_sets_and_tuples() -> None:
    decision = decide(merge(), state(("a", "b"), {"c"}, MISSING))
    assert decision.value == ["a", "b", "c"]


# -- escalate and one_sided --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "left", "right"),
    [("old", "new", "old"), ("old", "old", "new"), ("old", "l", "r"), (MISSING, "l", "r")],
    ids=["left-changed", "right-changed", "both-changed", "never-synced"],
)
@pytest.mark.parametrize("category", ["manual_review", "amount"])
def test_escalate_always_escalates(base: Any, left: Any, right: Any, category: str) -> None:
    policy = escalate() if category == "manual_review" else escalate(category)
    decision = decide(policy, state(left, right, base))
    assert_escalates(decision, category)
    assert decision.rule == "escalate"
    assert category in decision.reason


def test_escalate_both_changed_alike_agree() -> None:
    assert_agree(decide(escalate("amount"), state(5, 5, 4)))


def test_one_sided() -> None:
    assert_takes(decide(one_sided(), state("new", "old", "old")), Side.LEFT, "new")
    assert_takes(decide(one_sided(), state("old", "new", "old")), Side.RIGHT, "new")
    assert_escalates(decide(one_sided(), state("l", "r", "old")), UNRESOLVED)
    assert_escalates(decide(one_sided(), state("l", "r")), UNRESOLVED)


# -- fallback chains ---------------------------------------------------------------------------


def test_chain_falls_back_when_the_first_policy_abstains() -> None:
    decision = decide(recency() | escalate("notes"), state("l", "r", "old"))
    assert_escalates(decision, "notes")
    assert decision.rule == "escalate"


def test_chain_uses_the_first_policy_that_decides() -> None:
    chain = one_sided() | source_of_truth("right")
    assert_takes(decide(chain, state("new", "old", "old")), Side.LEFT, "new")
    decision = decide(chain, state("l", "r", "old"))
    assert_takes(decision, Side.RIGHT, "r")
    assert decision.rule == "source_of_truth"


def test_chain_of_abstainers_escalates_unresolved_with_the_chain_name() -> None:
    chain = one_sided() | recency()
    decision = decide(chain, state("l", "r", "old"))
    assert_escalates(decision, UNRESOLVED)
    assert decision.rule == "one_sided | recency"


def test_chain_flattens_and_keeps_order() -> None:
    chain = one_sided() | recency() | escalate("x")
    assert chain.name == "one_sided | recency | escalate"
    assert (
        repr(chain) == "one_sided() | recency(skew=datetime.timedelta(seconds=5)) | escalate('x')"
    )


def prefer_longer(s: FieldState) -> Decision | None:
    if len(str(s.left)) == len(str(s.right)):
        return None
    side = Side.LEFT if len(str(s.left)) > len(str(s.right)) else Side.RIGHT
    return Decision(
        outcome=Outcome.TAKE_LEFT if side is Side.LEFT else Outcome.TAKE_RIGHT,
        state=s,
        rule="prefer_longer",
        reason="longer text wins",
        value=s.value(side),
    )


def test_plain_callable_on_the_left_of_a_chain() -> None:
    chain = prefer_longer | escalate("tie")
    assert isinstance(chain, FieldPolicy)
    assert_takes(decide(chain, state("long one", "short", "x")), Side.LEFT, "long one")
    assert_escalates(decide(chain, state("aa", "bb", "x")), "tie")
    assert chain.name == "prefer_longer | escalate"


def test_plain_callable_on_the_right_of_a_chain() -> None:
    chain = recency() | prefer_longer
    assert_takes(decide(chain, state("a", "bbb", "x")), Side.RIGHT, "bbb")
    # Recency decides first when it can.
    later = T0 + timedelta(hours=1)
    assert_takes(decide(chain, state("a", "bbb", "x", lt=later, rt=T0)), Side.LEFT, "a")


def test_plain_callable_returning_none_escalates_unresolved() -> None:
    def never(_: FieldState) -> Decision | None:
        return None

    decision = decide(never, state("l", "r", "old"))
    assert_escalates(decision, UNRESOLVED)
    assert decision.rule == "never"
    chain = as_policy(never) | never
    assert_escalates(decide(chain, state("l", "r", "old")), UNRESOLVED)
    assert_escalates(decide(never | escalate("ops"), state("l", "r")), "ops")


def test_a_lambda_is_a_policy() -> None:
    decision = decide(lambda s: None, state("l", "r"))
    assert_escalates(decision, UNRESOLVED)
    assert decision.rule == "<lambda>"


def test_non_callable_is_not_a_policy() -> None:
    with pytest.raises(TypeError):
        decide("recency", state("l", "r"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        recency() | 42  # type: ignore[operator]


# -- field maps: direction and transforms ----------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "source"),
    [(Direction.LEFT_TO_RIGHT, Side.LEFT), (Direction.RIGHT_TO_LEFT, Side.RIGHT)],
)
def test_one_way_field_defaults_to_its_source_as_source_of_truth(
    direction: Direction, source: Side
) -> None:
    fm = FieldMap(left="stage", right="StageName", direction=direction)
    assert fm.policy == source_of_truth(source)
    # A change on the receiving side is overwritten by the source's value.
    s = state("old", "new", "old") if source is Side.LEFT else state("new", "old", "old")
    assert_takes(fm.decide(s), source, "old")


def test_two_way_field_needs_a_policy() -> None:
    with pytest.raises(ConfigurationError, match="needs a policy"):
        FieldMap(left="stage", right="StageName")


def test_field_map_accepts_a_plain_callable_policy() -> None:
    fm = FieldMap(left="notes", right="Notes", policy=prefer_longer)
    assert isinstance(fm.policy, FieldPolicy)
    assert_takes(fm.decide(state("abc", "a", "x")), Side.LEFT, "abc")


@pytest.mark.parametrize(
    ("direction", "blocked", "s"),
    [
        # recency: the right side is newer, but the field only flows left -> right.
        (
            Direction.LEFT_TO_RIGHT,
            Side.LEFT,
            state("l", "r", "old", lt=T0, rt=T0 + timedelta(hours=1)),
        ),
        (
            Direction.RIGHT_TO_LEFT,
            Side.RIGHT,
            state("l", "r", "old", lt=T0 + timedelta(hours=1), rt=T0),
        ),
        # only the receiving side changed: recency would propagate it against the direction.
        (Direction.LEFT_TO_RIGHT, Side.LEFT, state("old", "new", "old")),
        (Direction.RIGHT_TO_LEFT, Side.RIGHT, state("new", "old", "old")),
    ],
)
def test_one_way_field_escalates_a_write_against_its_direction(
    direction: Direction, blocked: Side, s: FieldState
) -> None:
    fm = FieldMap(left="notes", right="Notes", policy=recency(), direction=direction)
    decision = fm.decide(s)
    assert_escalates(decision, ONE_WAY)
    assert f"never flows to {blocked}" in decision.reason
    assert decision.rule == "recency"


def test_one_way_field_escalates_a_merge() -> None:
    fm = FieldMap(left="tags", right="Tags", policy=merge(), direction="left_to_right")
    assert_escalates(fm.decide(state(["a", "b"], ["a", "c"], ["a"])), ONE_WAY)
    # A merge whose result only writes the right side is allowed.
    assert_takes(fm.decide(state(["a", "b"], ["a"], ["a"])), Side.LEFT, ["a", "b"])


def test_one_way_field_passes_agreement_and_policy_escalations_through() -> None:
    fm = FieldMap(
        left="amount", right="Amount", policy=escalate("amount"), direction="right_to_left"
    )
    assert_agree(fm.decide(state(1, 1, 0)))
    assert_escalates(fm.decide(state(1, 2, 0)), "amount")


def test_two_way_field_does_not_restrict_writes() -> None:
    fm = FieldMap(left="notes", right="Notes", policy=recency())
    assert_takes(fm.decide(state("old", "new", "old")), Side.RIGHT, "new")
    assert Direction.BOTH.allows_write(Side.LEFT)
    assert Direction.BOTH.allows_write(Side.RIGHT)
    assert Direction.LEFT_TO_RIGHT.allows_write(Side.RIGHT)
    assert not Direction.LEFT_TO_RIGHT.allows_write(Side.LEFT)
    assert Direction.RIGHT_TO_LEFT.allows_write(Side.LEFT)
    assert not Direction.RIGHT_TO_LEFT.allows_write(Side.RIGHT)


STAGES = {"appointmentscheduled": "Prospecting", "closedwon": "Closed Won", "closedlost": "Lost"}


def test_value_map_round_trip() -> None:
    t = value_map(STAGES)
    for left, right in STAGES.items():
        assert t.to_right(left) == right
        assert t.to_left(right) == left
        assert t.to_left(t.to_right(left)) == left
        assert t.to_right(t.to_left(right)) == right


def test_value_map_passes_none_and_unmapped_values_through() -> None:
    t = value_map(STAGES)
    assert t.to_right(None) is None
    assert t.to_left(None) is None
    assert t.to_right("custom") == "custom"
    assert t.to_left("Custom Stage") == "Custom Stage"
    assert t.to_right(["unhashable"]) == ["unhashable"]


def test_value_map_strict_rejects_unmapped_values() -> None:
    t = value_map(STAGES, strict=True)
    assert t.to_right("closedwon") == "Closed Won"
    assert t.to_right(None) is None
    with pytest.raises(ValueError, match="custom"):
        t.to_right("custom")
    with pytest.raises(ValueError, match="closedwon"):
        t.to_left("closedwon")  # a left value is not a right value
    with pytest.raises(ValueError):
        t.to_left(["unhashable"])


def test_value_map_must_be_one_to_one() -> None:
    with pytest.raises(ConfigurationError, match="one-to-one"):
        value_map({"closedwon": "Closed", "closedlost": "Closed"})
    assert issubclass(ConfigurationError, ValueError)


def test_value_map_in_a_field_map_compares_in_the_left_vocabulary() -> None:
    fm = FieldMap(left="stage", right="StageName", policy=recency(), transform=value_map(STAGES))
    right_value = fm.transform.to_left("Closed Won")
    decision = fm.decide(state("appointmentscheduled", right_value, "appointmentscheduled"))
    assert_takes(decision, Side.RIGHT, "closedwon")
    assert fm.transform.to_right(decision.value) == "Closed Won"


def test_default_transform_is_identity() -> None:
    fm = FieldMap(left="a", right="b", policy=recency())
    value = {"x": [1]}
    assert fm.transform.to_right(value) is value
    assert fm.transform.to_left(value) is value


# -- decisions explain themselves ---------------------------------------------------------------


def test_explain_a_taken_value() -> None:
    later = T0 + timedelta(minutes=3)
    decision = decide(recency(), state("call back", "called", "left vm", lt=later, rt=T0))
    text = decision.explain()
    assert "field 'f'" in text
    assert "left='call back'" in text
    assert "right='called'" in text
    assert "base='left vm'" in text
    assert "rule recency: take_left -> 'call back'" in text
    assert f"why: {decision.reason}" in text
    assert "left is newer by 0:03:00" in text
    assert later.isoformat() in text
    assert "(record)" in text
    assert str(decision) == text


def test_explain_an_escalation() -> None:
    decision = decide(escalate("amount"), state(100, 250, None, field="amount"))
    text = decision.explain()
    assert "field 'amount'" in text
    assert "left=100 right=250 base=None" in text
    assert "escalate to an operator (amount)" in text
    assert "why: differences in this field always need an operator (amount)" in text
    assert "times: left=unknown right=unknown" in text


def test_explain_never_synced_and_unresolved() -> None:
    decision = decide(recency(), state("l", "r"))
    text = decision.explain()
    assert "base=never synced" in text
    assert f"({UNRESOLVED})" in text
    assert "rule recency" in text
    assert "no rule could decide" in text


def test_explain_agreement_and_per_field_times() -> None:
    decision = decide(recency(), state("x", "x", "y", lt=T0, rt=T0, per_field=True))
    text = decision.explain()
    assert "both sides agree: nothing to do" in text
    assert "(field)" in text


def test_explain_a_merge() -> None:
    decision = decide(merge(), state(["a"], ["b"], []))
    assert "rule merge: merge -> ['a', 'b']" in decision.explain()


# -- which side a decision writes ------------------------------------------------------------


def _decision(outcome: Outcome, value: Any, left: Any = "l", right: Any = "r") -> Decision:
    return Decision(outcome=outcome, state=state(left, right), rule="t", reason="r", value=value)


@pytest.mark.parametrize(
    ("outcome", "value", "writes_left", "writes_right"),
    [
        (Outcome.TAKE_LEFT, "l", False, True),
        (Outcome.TAKE_RIGHT, "r", True, False),
        (Outcome.MERGE, "m", True, True),
        (Outcome.MERGE, "l", False, True),
        (Outcome.MERGE, "r", True, False),
        (Outcome.AGREE, "l", False, False),
        (Outcome.ESCALATE, None, False, False),
    ],
)
def test_writes_left_and_right(
    outcome: Outcome, value: Any, writes_left: bool, writes_right: bool
) -> None:
    decision = _decision(outcome, value)
    assert decision.writes_left is writes_left
    assert decision.writes_right is writes_right


def test_taking_a_value_the_target_already_holds_writes_nothing() -> None:
    # Blank and equal-by-value targets need no write.
    assert not _decision(Outcome.TAKE_LEFT, None, left=None, right="").writes_right
    assert not _decision(Outcome.TAKE_RIGHT, [1], left=(1,), right=[1]).writes_left


def test_merge_agrees_on_the_same_items_in_another_order() -> None:
    from syncrecon import FieldState, Outcome, decide, merge

    state = FieldState(
        field="tags", left=["upsell", "renewal"], right=["renewal", "upsell"], base=["upsell"]
    )
    decision = decide(merge(), state)
    assert decision.outcome is Outcome.AGREE
    assert not decision.writes_left
    assert not decision.writes_right
    # Duplicates count: the same items with another multiplicity still merge.
    other = decide(merge(), FieldState(field="tags", left=["a", "a"], right=["a", "b"]))
    assert other.outcome is not Outcome.AGREE
