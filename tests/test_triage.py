"""Triage suggestions: the rule-based default, the pluggable hook, and the counters of
suggestions shown and taken. A suggestion is never applied without an operator."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import pytest

from syncrecon import FieldMap, Status, SyncDefinition, escalate
from syncrecon.queue import (
    OperatorQueue,
    ResolutionOutcome,
    RuleTriage,
    Suggestion,
    Triage,
    UseValue,
)
from syncrecon.storage import Discrepancy, Storage
from syncrecon.testing import ManualClock
from test_queue import SYNC, World, amount_conflict, make_sync

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
RULES = RuleTriage()


def field_item(left: Any, right: Any, *, base: Any = None, has_base: bool = False) -> Discrepancy:
    return Discrepancy(
        sync=SYNC, field="name", status=Status.ESCALATED, detected_at=T0, left_key="L1",
        right_key="R1", left_value=left, right_value=right, base_value=base, has_base=has_base,
        id=1,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# The rules


@pytest.mark.parametrize(
    ("left", "right", "base", "take"),
    [
        ("Acme Corp", "ACME CORP ", None, "left"),  # neither is the base: the left one
        ("Acme Corp", " acme corp", "Acme Corp", "left"),  # the left one keeps the base's form
        ("acme corp", "Acme Corp", "Acme Corp", "right"),  # the right one does
        ("Straße", "STRASSE", None, "left"),  # case folding
    ],
)
def test_values_that_differ_only_in_case_or_whitespace(
    left: str, right: str, base: str | None, take: str
) -> None:
    found = RULES.suggest(field_item(left, right, base=base, has_base=base is not None), [])
    assert found is not None
    assert (found.category, found.resolution, found.source) == ("case_or_whitespace", take, "rules")
    assert "differ only in case or surrounding whitespace" in found.reasons[0]


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("Acme", "Acme Corp"),
        ("Acme", "Acme"),
        ("a b", "ab"),  # inner whitespace is content
        (1, "1"),
        (None, "x"),
        (["a"], ["A"]),
    ],
)
def test_other_values_get_no_case_suggestion(left: Any, right: Any) -> None:
    assert RULES.suggest(field_item(left, right), []) is None


@pytest.mark.parametrize(
    ("left", "right", "offset"),
    [
        (T0, T0 + timedelta(hours=2), "+2"),
        (T0, T0 - timedelta(hours=5), "-5"),
        (T0, T0 + timedelta(hours=5, minutes=30), "+5:30"),
        (T0, T0 + timedelta(hours=14), "+14"),
        (date(2026, 3, 2), datetime(2026, 3, 1, 23, 0, tzinfo=UTC), "-1"),
        ("2026-03-01T10:00:00Z", "2026-03-01T07:00:00+00:00", "-3"),
        (datetime(2026, 3, 1, 10, 0), T0 + timedelta(hours=1), "+1"),  # naive is UTC
    ],
)
def test_a_whole_hour_move_is_flagged_as_a_time_zone_shift(
    left: Any, right: Any, offset: str
) -> None:
    found = RULES.suggest(field_item(left, right), [])
    assert found is not None
    assert found.category == "time_zone_shift"
    assert found.resolution is None  # only a flag: no base says which side moved
    assert f"moved by exactly {offset} hours" in found.reasons[0]
    assert "time-zone shift" in found.reasons[0]


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (T0, T0 + timedelta(minutes=15)),
        (T0, T0 + timedelta(hours=1, minutes=1)),
        (T0, T0 + timedelta(hours=15)),
        (T0, T0),
        (date(2026, 3, 1), date(2026, 3, 2)),  # a day apart: an edit as likely as not
        ("2026-03-01", "soon"),
        ("10:00", "12:00"),
    ],
)
def test_other_moves_are_not_flagged(left: Any, right: Any) -> None:
    assert RULES.suggest(field_item(left, right), []) is None


def test_the_base_says_which_side_moved() -> None:
    moved = T0 + timedelta(hours=-8)
    found = RULES.suggest(field_item(T0, moved, base=T0, has_base=True), [])
    assert found is not None
    assert found.resolution == "left"
    assert "the left value is the base: the right one moved" in found.reasons
    found = RULES.suggest(field_item(T0, moved, base=moved, has_base=True), [])
    assert found is not None
    assert found.resolution == "right"


def test_record_level_items_other_than_duplicates_get_nothing() -> None:
    item = Discrepancy(
        sync=SYNC, field="*", status=Status.ESCALATED, detected_at=T0, left_key="L1",
        category="deletion",
    )  # fmt: skip
    assert RULES.suggest(item, []) is None


def test_a_suggestion_is_checked_and_reads_well() -> None:
    with pytest.raises(ValueError, match="'left', 'right', 'acknowledge'"):
        Suggestion(resolution="middle")  # type: ignore[arg-type]
    s = Suggestion(category="x", resolution=UseValue(date(2026, 1, 31)), reasons=["why"])
    assert s.reasons == ("why",)
    assert s.describe() == "set the value 2026-01-31"
    assert s.to_dict() == {
        "category": "x",
        "resolution": {"value": {"$date": "2026-01-31"}},
        "reasons": ["why"],
        "source": "rules",
    }
    assert str(s) == "suggested by rules: set the value 2026-01-31 (x); why"
    assert Suggestion(reasons="one").reasons == ("one",)
    assert Suggestion().describe() == "no resolution proposed"
    assert isinstance(RULES, Triage)
    assert repr(RULES) == "RuleTriage()"


# --------------------------------------------------------------------------------------------
# Through the queue: shown, taken, never applied


def text_sync(clock: ManualClock) -> SyncDefinition:
    """``test_queue``'s sync, with the region flowing both ways."""
    base = make_sync(clock)
    region = FieldMap(left="region", right="Region", policy=escalate("region"))
    return SyncDefinition(
        name=SYNC,
        left=base.left,
        right=base.right,
        fields=[region if f.left == "region" else f for f in base.fields],
        natural_key=base.natural_key,
    )


@pytest.fixture
def world(storage: Storage, clock: ManualClock) -> World:
    return World(storage, clock, text_sync(clock))


def case_conflict(world: World) -> tuple[str, str, int]:
    """The region, edited on both sides, in case and whitespace only: escalated."""
    lk, rk = world.pair(1, region="emea")
    world.cycle()
    world.left.edit(lk, region="EMEA ")
    world.right.edit(rk, Region="Emea")
    world.cycle()
    (item,) = world.queue.list(field="region")
    assert item.id is not None
    world.clear_logs()
    return lk, rk, item.id


def totals(storage: Storage, metric: str) -> list[tuple[dict[str, str], int]]:
    return [(dict(labels), n) for labels, n in storage.counter_totals(metric)]


def test_show_and_suggest_offer_it_and_count_it_shown(world: World) -> None:
    _lk, rk, item_id = case_conflict(world)
    view = world.queue.show(item_id)
    assert view.suggestion is not None
    assert (view.suggestion.category, view.suggestion.resolution) == ("case_or_whitespace", "left")
    assert "suggestion: take crm's value" in str(view)  # the system by name
    assert "(case_or_whitespace, from rules)" in str(view)
    assert world.queue.suggest(item_id) == view.suggestion
    assert world.queue.show(item_id, suggest=False).suggestion is None
    assert totals(world.storage, "triage_suggestions_shown") == [
        ({"source": "rules", "sync": SYNC}, 2)
    ]
    # Never applied by itself: nothing was written, the item waits.
    assert world.left.write_log == world.right.write_log == []
    assert world.storage.get_item(item_id).status is Status.ESCALATED
    assert world.right.get(rk).fields["Region"] == "Emea"


def test_taking_the_suggestion_is_counted(world: World) -> None:
    _lk, rk, item_id = case_conflict(world)
    world.queue.show(item_id)
    world.queue.resolve(item_id, take="left", by="ada")
    assert world.right.get(rk).fields["Region"] == "EMEA "
    assert totals(world.storage, "triage_suggestions_taken") == [
        ({"source": "rules", "sync": SYNC}, 1)
    ]


def test_a_value_equal_to_the_suggested_side_counts_too(world: World) -> None:
    _lk, _rk, item_id = case_conflict(world)
    world.queue.resolve(item_id, value="EMEA ")  # not shown here: the rules are asked again
    assert totals(world.storage, "triage_suggestions_taken") == [
        ({"source": "rules", "sync": SYNC}, 1)
    ]


def test_another_resolution_is_not_counted(world: World) -> None:
    _lk, _rk, item_id = case_conflict(world)
    world.queue.show(item_id)
    world.queue.resolve(item_id, take="right")
    assert totals(world.storage, "triage_suggestions_taken") == []


def test_a_resolution_that_does_not_close_is_not_counted(world: World) -> None:
    _lk, rk, item_id = case_conflict(world)
    world.right.edit(rk, Region="apac")
    assert world.queue.resolve(item_id, take="left").outcome is ResolutionOutcome.CHANGED
    assert totals(world.storage, "triage_suggestions_taken") == []


def test_acknowledging_a_group_of_one_record_is_taken(world: World) -> None:
    world.left.create({"email": "dup@example.com", "amount": 1, "stage": "lead"})
    world.left.create({"email": "DUP@example.com", "amount": 1, "stage": "lead"})
    world.cycle()
    items = world.queue.list(category="possible_duplicate")
    assert len(items) == 2
    suggestion = world.queue.suggest(items[0].id or 0)
    assert suggestion is not None
    assert (suggestion.category, suggestion.resolution) == ("same_record", "acknowledge")
    assert "the 2 records of this group hold the same value" in suggestion.reasons[0]
    results = world.queue.acknowledge_many([i.id or 0 for i in items], by="erin")
    assert {r.outcome for r in results} == {ResolutionOutcome.ACKNOWLEDGED}
    assert totals(world.storage, "triage_suggestions_taken") == [
        ({"source": "rules", "sync": SYNC}, 2)
    ]


def test_records_that_differ_are_not_one_record(world: World) -> None:
    world.left.create({"email": "dup@example.com", "amount": 1})
    world.right.create({"Email": "dup@example.com", "Amount": 2})
    world.right.create({"Email": "Dup@example.com", "Amount": 1})
    world.cycle()
    items = world.queue.list(category="possible_duplicate")
    assert len(items) == 3
    assert all(world.queue.suggest(i.id or 0) is None for i in items)
    reader = OperatorQueue(world.storage, clock=world.clock)  # cannot read the records
    assert reader.suggest(items[0].id or 0) is None


class Recorder:
    """A triage that proposes a value and remembers what it was asked."""

    repeatable: ClassVar[bool] = False

    def __init__(self, answer: Suggestion | None) -> None:
        self.answer = answer
        self.asked: list[tuple[Discrepancy, list[Discrepancy]]] = []

    def suggest(self, item: Discrepancy, history: Sequence[Discrepancy]) -> Suggestion | None:
        self.asked.append((item, list(history)))
        return self.answer


def test_a_custom_triage_sees_the_item_and_its_records_history(
    storage: Storage, clock: ManualClock
) -> None:
    world = World(storage, clock)
    triage = Recorder(Suggestion(resolution=UseValue(125), source="model", reasons=["midway"]))
    world.queue = OperatorQueue(storage, [world.sync], clock=clock, triage=triage)
    (lk, _rk), first = amount_conflict(world)
    world.queue.resolve(first, take="left")
    world.left.edit(lk, amount=175, stage="won")
    world.cycle()
    (current,) = world.queue.list(field="amount")
    assert current.id is not None
    view = world.queue.show(current.id)
    assert view.suggestion is not None
    assert view.suggestion.source == "model"
    item, history = triage.asked[-1]
    assert item.id == current.id
    assert [h.field for h in history] == ["stage", "amount"]
    result = world.queue.resolve(current.id, value=125)
    assert result.outcome is ResolutionOutcome.RESOLVED
    assert totals(storage, "triage_suggestions_taken") == [({"source": "model", "sync": SYNC}, 1)]
    assert totals(storage, "triage_suggestions_shown") == [({"source": "model", "sync": SYNC}, 1)]
    assert len(triage.asked) == 1  # not repeatable: asked once, to show it


def test_a_triage_that_is_not_repeatable_is_not_asked_to_count(
    storage: Storage, clock: ManualClock
) -> None:
    world = World(storage, clock)
    triage = Recorder(Suggestion(resolution="left", source="model"))
    world.queue = OperatorQueue(storage, [world.sync], clock=clock, triage=triage)
    _keys, item_id = amount_conflict(world)
    world.queue.resolve(item_id, take="left")
    assert triage.asked == []
    assert totals(storage, "triage_suggestions_taken") == []


def test_a_suggestion_shown_for_older_values_is_not_the_one_taken(
    storage: Storage, clock: ManualClock
) -> None:
    world = World(storage, clock)
    triage = Recorder(Suggestion(resolution="left", source="model"))
    world.queue = OperatorQueue(storage, [world.sync], clock=clock, triage=triage)
    (lk, _rk), item_id = amount_conflict(world)
    world.queue.show(item_id)
    world.left.edit(lk, amount=160)
    world.cycle()  # new values on the same item: the suggestion shown was for the old ones
    world.queue.resolve(item_id, take="left")
    assert totals(storage, "triage_suggestions_taken") == []


def test_a_failing_or_confused_triage_suggests_nothing(
    storage: Storage, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def suggest(self, item: Discrepancy, history: Sequence[Discrepancy]) -> Suggestion:
            raise RuntimeError("model is down")

    class Confused:
        def suggest(self, item: Discrepancy, history: Sequence[Discrepancy]) -> Any:
            return "take left"

    world = World(storage, clock)
    _keys, item_id = amount_conflict(world)
    for triage in (Broken(), Confused()):
        queue = OperatorQueue(storage, [world.sync], clock=clock, triage=triage)
        assert queue.show(item_id).suggestion is None
    assert (
        OperatorQueue(storage, [world.sync], clock=clock, triage=Broken())
        .resolve(item_id, take="left")
        .closed
    )
    assert "failed to suggest" in caplog.text
    assert "not a Suggestion" in caplog.text
    assert totals(storage, "triage_suggestions_shown") == []


def test_no_triage_no_suggestions(storage: Storage, clock: ManualClock) -> None:
    world = World(storage, clock, text_sync(clock))
    world.queue = OperatorQueue(storage, [world.sync], clock=clock, triage=None)
    _lk, _rk, item_id = case_conflict(world)
    assert world.queue.show(item_id).suggestion is None
    assert world.queue.suggest(item_id) is None
    world.queue.resolve(item_id, take="left")
    assert storage.counter_totals("triage_suggestions_taken") == []


@pytest.mark.anyio
async def test_the_async_suggestion(world: World) -> None:
    _lk, _rk, item_id = case_conflict(world)
    found = await world.queue.asuggest(item_id)
    assert found is not None
    assert found.resolution == "left"
    assert (await world.queue.ashow(item_id)).suggestion == found


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_the_dashboard_counts_suggestions_shown_and_taken(world: World) -> None:
    from syncrecon.dashboard import build_dashboard

    _lk, _rk, item_id = case_conflict(world)
    world.queue.show(item_id)
    world.queue.show(item_id)
    world.queue.resolve(item_id, take="left", by="ada")
    dash = build_dashboard(world.storage, now=world.clock.now())
    assert dash.triage == {"rules": {"shown": 2, "taken": 1}}
    assert dash.to_dict()["triage"] == {"rules": {"shown": 2, "taken": 1}}
    assert "Triage suggestions (rules): 2 shown, 1 taken (50%)" in dash.to_text()
    html = dash.to_html()
    assert "Triage suggestions, shown to operators and taken by them" in html
    assert (
        '<td data-label="source">rules</td><td data-label="shown">2</td>'
        '<td data-label="taken">1</td><td data-label="taken share">50%</td>'
    ) in html


def test_a_suggestion_names_the_system_whose_value_it_takes() -> None:
    from syncrecon import Side

    hint = Suggestion(resolution="right", category="case_or_whitespace")
    names = {Side.LEFT: "hubspot", Side.RIGHT: "salesforce"}
    assert hint.describe(names) == "take salesforce's value"
    assert hint.describe() == "take the right value"  # no names known: the side
    assert Suggestion(resolution="acknowledge").describe(names).startswith("acknowledge")
