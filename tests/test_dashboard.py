"""The dashboard: each number from a known history, the signals, and the three renderings.

The history is written straight into storage, as the reconciler, the fast loop and an operator
would leave it: a cycle is a stored report plus the counters it bumps (committed together at
its finish), webhook outcomes are counters, and queue items are opened and later closed at
explicit times. ``NOW`` is injected, so every number is exact.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from syncrecon import (
    ConfigurationError,
    FieldMap,
    NaturalKey,
    Reconciler,
    SyncDefinition,
    escalate,
    recency,
)
from syncrecon.dashboard import (
    TTR_EDGES,
    Dashboard,
    build_dashboard,
    format_duration,
    nearest_rank,
)
from syncrecon.dashboard._cli import register_cli, run_cli
from syncrecon.storage import (
    Counter,
    CycleRecord,
    Discrepancy,
    ItemUpdate,
    Status,
    Step,
    Storage,
)
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import ManualClock, SimulatedSystem

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
M = timedelta(minutes=1)


# -- writing a known history ---------------------------------------------------------------------


def cycle(
    storage: Storage,
    at: datetime,
    *,
    found: int,
    auto: Mapping[str, int] | None = None,
    escalated: Mapping[str, int] | None = None,
    sync: str = "deals",
    mode: str = "full",
    halted: str | None = None,
) -> None:
    """A finished cycle: its report and its counters in one step, as the reconciler commits."""
    auto, escalated = dict(auto or {}), dict(escalated or {})
    counters = [
        Counter(metric="cycles", labels={"sync": sync, "mode": mode}),
        Counter(metric="discrepancies", labels={"sync": sync}, amount=found),
        *(
            Counter(metric="auto_resolved", labels={"sync": sync, "rule": r}, amount=n)
            for r, n in auto.items()
        ),
        *(
            Counter(metric="escalated", labels={"sync": sync, "category": c}, amount=n)
            for c, n in escalated.items()
        ),
    ]
    record = CycleRecord(
        id=f"{sync}-{at.isoformat()}",
        sync=sync,
        started_at=at - M,
        finished_at=at,
        mode=mode,
        dry_run=False,
        report={
            "discrepancies_found": found,
            "auto_resolved": auto,
            "escalated": escalated,
            "halted": halted,
        },
    )
    storage.commit(Step(at=at, cycle=record, counters=[c for c in counters if c.amount]))


def events(
    storage: Storage,
    at: datetime,
    source: str,
    direction: str,
    outcome: str,
    n: int,
    reason: str | None = None,
) -> None:
    labels = {"source": source, "direction": direction, "outcome": outcome}
    if reason is not None:
        labels["reason"] = reason
    storage.commit(
        Step(at=at, counters=[Counter(metric="webhook_events", labels=labels, amount=n)])
    )


_keys = iter(range(1, 1_000_000))


def item(
    storage: Storage,
    detected: datetime,
    status: Status,
    *,
    category: str | None = None,
    rule: str | None = "recency",
    sync: str = "deals",
    field: str = "amount",
    key: str | None = None,
) -> int:
    """Open a queue item at ``detected`` (each on its own record unless ``key`` is given)."""
    key = key or f"L{next(_keys)}"
    [item_id] = storage.commit(
        Step(
            at=detected,
            new_items=[
                Discrepancy(
                    sync=sync,
                    field=field,
                    status=status,
                    detected_at=detected,
                    left_key=key,
                    right_key=f"R-{key}",
                    rule=rule,
                    category=category,
                    resolved_at=detected if status is Status.AUTO_RESOLVED else None,
                )
            ],
        )
    )
    return item_id


def escalation(
    storage: Storage,
    detected: datetime,
    category: str | None,
    *,
    closed: datetime | None = None,
    status: Status = Status.RESOLVED,
    sync: str = "deals",
    field: str = "amount",
) -> int:
    """An escalated item, closed by an operator at ``closed`` when given."""
    item_id = item(
        storage,
        detected,
        Status.ESCALATED,
        category=category,
        rule="escalate",
        sync=sync,
        field=field,
    )
    if closed is not None:
        storage.commit(
            Step(
                at=closed, item_updates=[ItemUpdate(id=item_id, status=status, resolved_at=closed)]
            )
        )
    return item_id


def history(storage: Storage) -> None:
    """The known history most tests read (window: the 7 days before NOW)."""
    # Fast loop. The window starts at NOW - 7 days exactly (on the hour): counted. The hour
    # before it and the week before are not.
    events(storage, NOW - D, "hubspot", "hubspot->billing", "applied", 10)
    events(storage, NOW - D, "hubspot", "hubspot->billing", "duplicate", 3)
    events(storage, NOW - D, "hubspot", "hubspot->billing", "stale", 2)
    events(storage, NOW - 7 * D, "hubspot", "hubspot->billing", "echo", 4)
    events(storage, NOW - 2 * D, "billing", "billing->hubspot", "applied", 5)
    events(storage, NOW - 2 * D, "billing", "billing->hubspot", "rejected", 2, "SignatureError")
    events(storage, NOW - M, "billing", "billing->hubspot", "rejected", 1, "MalformedPayloadError")
    events(storage, NOW - 7 * D - M, "hubspot", "hubspot->billing", "applied", 100)
    events(storage, NOW - 8 * D, "hubspot", "hubspot->billing", "applied", 100)

    # Cycles: three in the window, one 10 days ago (only in the trend).
    cycle(storage, NOW - 10 * D, found=50, auto={"recency": 40}, escalated={"deletion": 1})
    cycle(
        storage,
        NOW - 6 * D,
        found=10,
        auto={"recency": 6, "source_of_truth": 2},
        escalated={"deal_value": 2},
    )
    cycle(storage, NOW - 3 * D, found=5, auto={"recency": 3}, escalated={"deal_value": 2})
    cycle(
        storage,
        NOW - H,
        found=4,
        auto={"merge": 2},
        escalated={"deal_value": 2},
        mode="incremental",
    )

    # The operator queue. Escalations closed in the window, with known times to resolution:
    # 30m, 2h (dismissed), 5h, 1d, 2d, and 10d (detected before the window).
    escalation(storage, NOW - 5 * D, "deal_value", closed=NOW - 5 * D + 30 * M)
    escalation(
        storage,
        NOW - 4 * D,
        "possible_duplicate",
        closed=NOW - 4 * D + 2 * H,
        status=Status.DISMISSED,
    )
    escalation(storage, NOW - 3 * D, "deal_value", closed=NOW - 3 * D + 5 * H)
    escalation(storage, NOW - 4 * D, "contract_dates", closed=NOW - 3 * D)
    escalation(storage, NOW - 5 * D, "deal_value", closed=NOW - 3 * D)
    escalation(storage, NOW - 12 * D, "deal_value", closed=NOW - 2 * D)
    # Closed before the window: not in the distribution.
    escalation(storage, NOW - 20 * D, "deletion", closed=NOW - 9 * D)
    # Still waiting: the oldest was detected 30 days ago.
    escalation(storage, NOW - 30 * D, "schema_drift", field="stage")
    escalation(storage, NOW - 6 * D, "deal_value")
    escalation(storage, NOW - 2 * D, "contract_dates")
    # Settled by rules, and one pending write: new discrepancies, not escalations.
    for when in (NOW - 6 * D, NOW - 3 * D, NOW - D):
        item(storage, when, Status.AUTO_RESOLVED)
    item(storage, NOW - 2 * H, Status.OPEN)


@pytest.fixture
def board(storage: Storage) -> Dashboard:
    history(storage)
    return build_dashboard(storage, now=NOW)


# -- the pure helpers ----------------------------------------------------------------------------


def test_nearest_rank_is_a_value_at_rank_ceil_p_n() -> None:
    assert nearest_rank([1, 2, 3, 4], 50) == 2
    assert nearest_rank([1, 2, 3, 4], 90) == 4
    assert nearest_rank([1, 2, 3, 4], 25) == 1
    assert nearest_rank([1, 2, 3, 4], 26) == 2
    assert nearest_rank([1, 2, 3, 4], 100) == 4
    assert nearest_rank([7], 1) == 7
    ten = list(range(1, 11))
    assert (nearest_rank(ten, 50), nearest_rank(ten, 90), nearest_rank(ten, 91)) == (5, 9, 10)


@pytest.mark.parametrize(("values", "percent"), [([], 50), ([1], 0), ([1], 101)])
def test_nearest_rank_rejects_what_has_no_answer(values: list[int], percent: int) -> None:
    with pytest.raises(ValueError):
        nearest_rank(values, percent)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=45), "45s"),
        (timedelta(minutes=5), "5m"),
        (timedelta(minutes=5, seconds=3), "5m 3s"),
        (timedelta(hours=2, minutes=5), "2h 5m"),
        (timedelta(days=3), "3d"),
        (timedelta(days=3, hours=4, minutes=59), "3d 4h"),
        (timedelta(seconds=-5), "0s"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


# -- the five numbers ------------------------------------------------------------------------------


def test_the_window_is_the_seven_days_before_now(board: Dashboard) -> None:
    assert board.window_start == NOW - 7 * D
    assert board.window_end == board.generated_at == NOW


def test_number_1_fast_loop_events_by_source_direction_and_outcome(board: Dashboard) -> None:
    ev = board.fast_loop_events
    assert ev.total == 10 + 3 + 2 + 4 + 5 + 2 + 1
    assert ev.by_source == {"hubspot": 19, "billing": 8}
    assert ev.by_direction == {"hubspot->billing": 19, "billing->hubspot": 8}
    assert ev.by_outcome == {"applied": 15, "echo": 4, "duplicate": 3, "rejected": 3, "stale": 2}
    assert ev.by_source_direction == {
        ("billing", "billing->hubspot"): {"applied": 5, "rejected": 3},
        ("hubspot", "hubspot->billing"): {"applied": 10, "duplicate": 3, "echo": 4, "stale": 2},
    }
    assert ev.rejected_by_reason == {"SignatureError": 2, "MalformedPayloadError": 1}


def test_number_2_cycles_and_discrepancies(board: Dashboard) -> None:
    rec = board.reconciliation
    assert rec.cycles == 3
    assert rec.cycles_by_mode == {"full": 2, "incremental": 1}
    assert rec.discrepancies_found == 10 + 5 + 4
    # Distinct items first detected in the window: 7 escalations, 3 auto-resolved, 1 open.
    assert rec.new_discrepancies == 11
    assert [p.finished_at for p in rec.per_cycle] == [NOW - 6 * D, NOW - 3 * D, NOW - H]
    assert [(p.discrepancies, p.auto_resolved, p.escalated) for p in rec.per_cycle] == [
        (10, 8, 2),
        (5, 3, 2),
        (4, 2, 2),
    ]
    assert [p.auto_resolution_rate for p in rec.per_cycle] == [0.8, 0.6, 0.5]
    assert rec.per_cycle[-1].mode == "incremental"


def test_number_3_auto_resolved_by_rule(board: Dashboard) -> None:
    assert board.auto_resolved == {"recency": 9, "merge": 2, "source_of_truth": 2}


def test_number_4_escalations_first_detected_in_the_window_by_category(board: Dashboard) -> None:
    # Each item once, however many cycles saw it (the cycles' own counts said 2 + 2 + 2).
    assert board.escalated == {"deal_value": 4, "contract_dates": 2, "possible_duplicate": 1}


def test_number_5_time_to_resolution(board: Dashboard) -> None:
    ttr = board.time_to_resolution
    assert ttr.durations == (30 * M, 2 * H, 5 * H, D, 2 * D, 10 * D)
    assert (ttr.count, ttr.resolved, ttr.dismissed) == (6, 5, 1)
    assert ttr.p50 == 5 * H  # rank ceil(0.5 * 6) = 3
    assert ttr.p90 == 10 * D  # rank ceil(0.9 * 6) = 6
    assert ttr.max == 10 * D
    assert ttr.percentile(33) == 2 * H  # rank ceil(1.98) = 2
    assert ttr.percentile(34) == 5 * H  # rank ceil(2.04) = 3
    assert [(b.label, b.count) for b in ttr.histogram] == [
        ("<1h", 1),
        ("1h-4h", 1),
        ("4h-1d", 1),
        ("1d-3d", 2),
        ("3d-7d", 0),
        ("7d-14d", 1),
        (">=14d", 0),
    ]
    assert [b.low for b in ttr.histogram[1:]] == list(TTR_EDGES)


def test_queue_depth_and_oldest_item(board: Dashboard) -> None:
    ttr = board.time_to_resolution
    assert ttr.queue_depth == 3
    assert ttr.queue_by_category == {"contract_dates": 1, "deal_value": 1, "schema_drift": 1}
    oldest = ttr.oldest_open
    assert oldest is not None
    assert (oldest.category, oldest.field, oldest.age) == ("schema_drift", "stage", 30 * D)
    assert oldest.detected_at == NOW - 30 * D


def test_an_earlier_now_sees_the_queue_as_it_stood(storage: Storage) -> None:
    history(storage)
    then = NOW - 2 * D - H  # before the 10-day item was closed and the last one was opened
    ttr = build_dashboard(storage, now=then).time_to_resolution
    assert ttr.queue_depth == 3  # schema_drift, deal_value (6 days), deal_value (12 days)
    assert ttr.queue_by_category == {"deal_value": 2, "schema_drift": 1}
    assert ttr.oldest_open is not None
    assert ttr.oldest_open.age == 30 * D - 2 * D - H
    assert ttr.durations == (30 * M, 2 * H, 5 * H, D, 2 * D, 11 * D)  # 11d: closed 9 days ago


def test_ages_move_with_the_injected_now(storage: Storage) -> None:
    escalation(storage, NOW - 3 * H, "deal_value")
    for later in (0, 1, 5):
        board = build_dashboard(storage, now=NOW + later * H)
        assert board.time_to_resolution.oldest_open is not None
        assert board.time_to_resolution.oldest_open.age == (3 + later) * H


def test_counters_belong_to_the_window_their_hour_starts_in(storage: Storage) -> None:
    now = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)  # not on the hour
    events(storage, datetime(2026, 2, 22, 12, 10, tzinfo=UTC), "a", "a->b", "applied", 1)
    events(storage, datetime(2026, 2, 22, 13, 0, tzinfo=UTC), "a", "a->b", "applied", 10)
    events(storage, datetime(2026, 3, 1, 12, 20, tzinfo=UTC), "a", "a->b", "applied", 100)
    board = build_dashboard(storage, now=now)
    assert board.window_start == datetime(2026, 2, 22, 13, 0, tzinfo=UTC)
    assert board.fast_loop_events.total == 110


def test_one_sync_only(storage: Storage) -> None:
    history(storage)
    cycle(storage, NOW - D, found=99, auto={"recency": 90}, sync="tickets")
    escalation(storage, NOW - D, "deal_value", sync="tickets")
    deals = build_dashboard(storage, now=NOW, sync="deals")
    tickets = build_dashboard(storage, now=NOW, sync="tickets")
    everything = build_dashboard(storage, now=NOW)
    assert deals.reconciliation.cycles == 3
    assert tickets.reconciliation.cycles == 1
    assert everything.reconciliation.cycles == 4
    assert deals.auto_resolved == {"recency": 9, "merge": 2, "source_of_truth": 2}
    assert tickets.auto_resolved == {"recency": 90}
    assert tickets.escalated == {"deal_value": 1}
    assert tickets.time_to_resolution.queue_depth == 1
    assert [p.sync for p in tickets.reconciliation.per_cycle] == ["tickets"]
    # The fast loop's counters carry no sync label: every sync's dashboard shows them.
    assert tickets.fast_loop_events.total == deals.fast_loop_events.total == 27


def test_an_empty_database(storage: Storage) -> None:
    board = build_dashboard(storage, now=NOW)
    assert board.fast_loop_events.total == 0
    assert board.reconciliation.cycles == 0
    assert board.auto_resolved == {}
    assert board.escalated == {}
    ttr = board.time_to_resolution
    assert (ttr.count, ttr.p50, ttr.p90, ttr.max, ttr.queue_depth) == (0, None, None, None, 0)
    assert ttr.oldest_open is None
    assert board.signals.auto_resolution_rate is None
    assert board.signals.spikes == ()
    assert len(board.signals.trend) == 8


@pytest.mark.parametrize(
    "kwargs",
    [{"window": timedelta(minutes=30)}, {"bucket": timedelta(minutes=5)}, {"trend_buckets": 0}],
)
def test_bad_windows_are_refused(memory_storage: Storage, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        build_dashboard(memory_storage, now=NOW, **kwargs)  # type: ignore[arg-type]


# -- the signals ----------------------------------------------------------------------------------


def test_auto_resolution_rate_counts_each_discrepancy_once(board: Dashboard) -> None:
    # 13 fixed by rules, 7 escalated: the rules settled 13 of 20.
    assert board.signals.auto_resolution_rate == pytest.approx(13 / 20)


def test_fast_loop_outcome_signals(board: Dashboard) -> None:
    assert board.signals.fast_loop_outcomes == {
        "duplicates": 3,
        "stale": 2,
        "echoes": 4,
        "rejections": 3,
    }


def weeks(storage: Storage, escalations: list[int], auto: list[int] | None = None) -> None:
    """One cycle and ``escalations[i]`` escalations in week ``i`` of 8 (the last ends at NOW)."""
    for i, n in enumerate(escalations):
        middle = NOW - (len(escalations) - i) * 7 * D + 3 * D
        cycle(storage, middle, found=n, auto={"recency": auto[i]} if auto else None)
        for _ in range(n):
            escalation(storage, middle, "deal_value")


def test_the_trend_has_eight_weekly_buckets_ending_now(storage: Storage) -> None:
    weeks(storage, [1, 2, 3, 4, 5, 6, 7, 8])
    trend = build_dashboard(storage, now=NOW).signals.trend
    assert len(trend) == 8
    assert trend[-1].end == NOW
    assert trend[-1].start == NOW - 7 * D
    assert trend[0].start == NOW - 56 * D
    assert all(a.end == b.start for a, b in itertools.pairwise(trend))
    assert [b.escalated for b in trend] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [b.cycles for b in trend] == [1] * 8


def test_a_longer_window_gets_as_many_buckets_as_it_needs(storage: Storage) -> None:
    board = build_dashboard(storage, now=NOW, window=timedelta(days=90))
    assert len(board.signals.trend) == 13  # ceil(90 / 7)
    daily = build_dashboard(storage, now=NOW, window=timedelta(days=7), bucket=D)
    assert len(daily.signals.trend) == 8
    assert daily.signals.trend[0].start == NOW - 8 * D


def test_an_escalation_spike_is_over_twice_the_median_before_it(storage: Storage) -> None:
    weeks(storage, [2, 3, 2, 2, 3, 2, 2, 7])
    board = build_dashboard(storage, now=NOW)
    found = [(s.start, s.end, s.category, s.count, s.baseline) for s in board.signals.spikes]
    # The median of [2, 3, 2, 2, 3, 2, 2] is 2, and 7 > 2 * 2: for all and for the category.
    assert found == [
        (NOW - 7 * D, NOW, None, 7, 2.0),
        (NOW - 7 * D, NOW, "deal_value", 7, 2.0),
    ]


def test_spikes_of_the_known_history(board: Dashboard) -> None:
    # Escalations by week, from the first week with any activity (30 days ago): 1, 0, 1, 1, 7;
    # deal_value alone: 0, 0, 0, 1, 4.
    found = [(s.start, s.category, s.count, s.baseline) for s in board.signals.spikes]
    assert found == [(NOW - 7 * D, None, 7, 1.0), (NOW - 7 * D, "deal_value", 4, 0.0)]
    assert [b.escalated for b in board.signals.trend] == [0, 0, 0, 1, 0, 1, 1, 7]


def test_twice_the_median_is_not_yet_a_spike(storage: Storage) -> None:
    weeks(storage, [2, 3, 2, 2, 3, 2, 2, 4])
    board = build_dashboard(storage, now=NOW)
    assert [s for s in board.signals.spikes if s.category is None] == []


def test_a_spike_needs_spike_min_escalations(storage: Storage) -> None:
    weeks(storage, [0, 0, 0, 0, 0, 0, 0, 2])  # a cycle every week; 2 escalations at the end
    assert build_dashboard(storage, now=NOW).signals.spikes == ()
    lower = build_dashboard(storage, now=NOW, spike_min=2).signals.spikes
    assert [(s.category, s.count, s.baseline) for s in lower] == [
        (None, 2, 0.0),
        ("deal_value", 2, 0.0),
    ]


def test_weeks_before_anything_happened_are_no_baseline(storage: Storage) -> None:
    # A new install: its first week is not a spike against the empty weeks before it.
    escalation(storage, NOW - 3 * D, "deal_value")
    for _ in range(9):
        escalation(storage, NOW - 3 * D, "deal_value")
    assert build_dashboard(storage, now=NOW).signals.spikes == ()


def test_rate_trend_compares_the_newest_bucket_with_the_median_before(storage: Storage) -> None:
    # auto / (auto + escalated) per week: 1/2, 3/5, 7/10 ..., newest 9/10.
    weeks(storage, [1, 2, 3, 3, 3, 3, 3, 1], auto=[1, 3, 7, 7, 7, 7, 7, 9])
    sig = build_dashboard(storage, now=NOW).signals
    rates = [b.auto_resolution_rate for b in sig.trend]
    assert rates == pytest.approx([0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7, 0.9])
    assert sig.rate_change == pytest.approx(0.9 - 0.7)
    assert sig.rate_direction == "up"


@pytest.mark.parametrize(("newest_auto", "direction"), [(12, "up"), (7, "flat"), (3, "down")])
def test_rate_direction(storage: Storage, newest_auto: int, direction: str) -> None:
    weeks(storage, [3] * 8, auto=[7] * 7 + [newest_auto])  # 0.7 before; 0.8, 0.7, 0.5 newest
    assert build_dashboard(storage, now=NOW).signals.rate_direction == direction


def test_no_rate_trend_without_an_earlier_rate(storage: Storage) -> None:
    cycle(storage, NOW - D, found=3, auto={"recency": 3})
    sig = build_dashboard(storage, now=NOW).signals
    assert sig.auto_resolution_rate == 1.0
    assert (sig.rate_change, sig.rate_direction) == (None, None)


# -- renderings ------------------------------------------------------------------------------------


VOID = {"meta", "link", "br", "hr", "img", "input", "source", "col", "area", "base", "wbr"}


class Structure(HTMLParser):
    """Checks nesting while parsing: every element closed in order, void elements aside."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.counts[tag] = self.counts.get(tag, 0) + 1
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href", "action")]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.counts[tag] = self.counts.get(tag, 0) + 1
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href", "action")]

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Structure:
    parser = Structure()
    parser.feed(page)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    return parser


def assert_self_contained(page: str) -> None:
    lowered = page.lower()
    assert "<script" not in lowered
    assert "@import" not in lowered
    assert "url(" not in lowered
    assert "@font-face" not in lowered
    assert "http:" not in lowered
    assert "https:" not in lowered
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", lowered)
    assert "<link" not in lowered
    assert "<iframe" not in lowered
    assert "<object" not in lowered


def test_the_page_is_one_well_formed_html_document(board: Dashboard) -> None:
    page = board.to_html()
    found = parse(page)
    assert found.doctype
    assert (found.counts["html"], found.counts["head"], found.counts["body"]) == (1, 1, 1)
    assert found.counts["style"] == 1
    assert found.counts["svg"] >= 3
    assert found.urls == []
    assert_self_contained(page)
    assert page.index("<head>") < page.index("</head>") < page.index("<body>")


def test_the_page_has_the_charts(board: Dashboard) -> None:
    page = board.to_html()
    svgs = re.findall(r"<svg\b.*?</svg>", page, re.S)
    labels = [re.search(r'aria-label="([^"]*)"', s)[1] for s in svgs]  # type: ignore[index]
    assert labels == [
        "Fast-loop events by source, direction and outcome",
        "Discrepancies found and the share auto-resolved per cycle",
        "Time to resolution of the escalations closed in the window",
        "Escalations and auto-resolution rate per bucket",
    ]
    histogram = svgs[2]
    assert histogram.count('class="bar"') == len(TTR_EDGES) + 1
    assert "<title>7d-14d: 1</title>" in histogram
    cycles = svgs[1]
    assert cycles.count('class="bar"') == 3 + 1  # one per cycle, and the legend's
    assert "<polyline" in cycles


def test_the_page_escapes_user_data(storage: Storage) -> None:
    evil = '<script>alert("x")</script>'
    events(storage, NOW - D, '"><img src=x onerror=alert(1)>', "a&b->c", "applied", 1)
    escalation(storage, NOW - D, evil, field="<b>field</b>")
    cycle(storage, NOW - D, found=1, auto={"<i>rule</i>": 1}, mode="<em>full</em>")
    board = build_dashboard(storage, now=NOW, sync=None)
    page = board.to_html()
    found = parse(page)
    assert "<script" not in page
    assert "<img" not in page
    assert "<i>" not in page
    assert found.counts.get("img") is None
    assert found.counts.get("em") is None
    text = "".join(found.text)
    assert evil in text
    assert "<b>field</b>" in text
    assert "a&b->c" in text
    assert_self_contained(page)


def test_an_empty_dashboard_still_renders_every_chart(memory_storage: Storage) -> None:
    board = build_dashboard(memory_storage, now=NOW)
    found = parse(board.to_html())
    assert found.counts["svg"] == 4
    assert "no fast-loop events in this window" in "".join(found.text)
    assert "(none)" in board.to_text()
    json.dumps(board.to_dict())


def test_repr_html_is_a_fragment_for_notebooks(board: Dashboard) -> None:
    fragment = board._repr_html_()
    found = parse(fragment)
    assert "html" not in found.counts
    assert "body" not in found.counts
    assert found.counts["svg"] >= 3
    assert_self_contained(fragment)


def test_to_dict_is_json_with_the_five_numbers(board: Dashboard) -> None:
    data = json.loads(json.dumps(board.to_dict()))
    assert list(data) == [
        "window",
        "fast_loop_events",
        "reconciliation",
        "auto_resolved",
        "escalated",
        "time_to_resolution",
        "signals",
        "api_requests",
        "triage",
    ]
    assert data["triage"] == {}  # no suggestion was shown
    assert data["window"]["start"] == "2026-02-22T12:00:00+00:00"
    assert data["window"]["end"] == "2026-03-01T12:00:00+00:00"
    assert data["fast_loop_events"]["by_source"] == {"hubspot": 19, "billing": 8}
    assert data["reconciliation"]["cycles"] == 3
    assert data["reconciliation"]["discrepancies_found"] == 19
    assert len(data["reconciliation"]["per_cycle"]) == 3
    assert data["auto_resolved"] == {
        "total": 13,
        "by_rule": {"recency": 9, "merge": 2, "source_of_truth": 2},
    }
    assert data["escalated"]["total"] == 7
    ttr = data["time_to_resolution"]
    assert (ttr["p50_seconds"], ttr["p90_seconds"], ttr["max_seconds"]) == (18000, 864000, 864000)
    assert ttr["queue_depth"] == 3
    assert ttr["oldest_open"]["age_seconds"] == 30 * 86400
    assert ttr["histogram"][0] == {
        "label": "<1h",
        "low_seconds": 0.0,
        "high_seconds": 3600.0,
        "count": 1,
    }
    assert data["signals"]["auto_resolution_rate"] == pytest.approx(0.65)
    assert data["signals"]["fast_loop_outcomes"]["rejections"] == 3
    assert data["signals"]["spike_rule"] == {"factor": 2.0, "min": 3}


def test_the_text_table(board: Dashboard) -> None:
    text = board.to_text()
    assert str(board) == text
    assert text.startswith("syncrecon dashboard: all syncs, 2026-02-22 12:00 to 2026-03-01 12:00")
    lines = text.splitlines()

    def row(first: str) -> list[str]:
        [found] = [line.split() for line in lines if line.split()[:1] == [first]]
        return found

    assert "1. Fast-loop events: 27" in lines
    assert row("hubspot") == ["hubspot", "(hubspot->billing)", "19", "10", "4", "3", "0", "2"]
    assert "  rejected by reason: SignatureError 2, MalformedPayloadError 1" in lines
    assert (
        "2. Reconciliation: 3 cycles (full 2, incremental 1), 19 discrepancies found"
        " (one that waits is counted by every cycle)" in lines
    )
    assert "  11 new queue items this week: 4 settled automatically, 7 sent to an operator" in lines
    assert row("recency") == ["recency", "9", "69.2%"]
    assert row("deal_value") == ["deal_value", "4", "57.1%"]
    assert (
        "5. Time to resolution: 6 closed (5 resolved, 1 dismissed); p50 5h, p90 10d, max 10d"
        in lines
    )
    assert row("1d-3d") == ["1d-3d", "2", "#" * 20]
    assert (
        "  queue: 3 wait for an operator now (of any age)"
        " (contract_dates 1, deal_value 1, schema_drift 1)" in lines
    )
    assert any(line.startswith("  oldest open: #") and "waiting 30d" in line for line in lines)
    # Earlier weeks' rates 0, 0 and 40/41 have the median 0: the newest (65%) is up 65 points.
    assert "  auto-resolution rate: 65.0% (trend up, +65.0 points)" in lines
    assert "  escalation spike from 2026-02-22 12:00: 7 (all categories), median before 1" in lines
    assert "  fast-loop outcomes: duplicates 3, stale 2, echoes 4, rejections 3" in lines


# -- the command line --------------------------------------------------------------------------


def cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="syncrecon")
    register_cli(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["dashboard", *argv])


def test_cli_prints_the_table_the_json_and_writes_the_page(
    sqlite_storage: SQLiteStorage,
    sqlite_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    history(sqlite_storage)
    sqlite_storage.close()
    until = "--until=2026-03-01T12:00:00+00:00"

    assert run_cli(cli("--db", str(sqlite_path), until)) == 0
    table = capsys.readouterr().out
    assert "5. Time to resolution: 6 closed" in table
    assert "  queue: 3 wait for an operator now" in table

    assert run_cli(cli("--db", str(sqlite_path), until, "--json")) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"fast_loop_events", "reconciliation", "auto_resolved", "escalated"} <= set(data)
    assert data["time_to_resolution"]["p50_seconds"] == 5 * 3600

    page = tmp_path / "dashboard.html"
    assert run_cli(cli("--db", str(sqlite_path), until, "--html", str(page))) == 0
    out = capsys.readouterr()
    assert out.out == ""
    assert str(page) in out.err
    found = parse(page.read_text("utf-8"))
    assert found.counts["svg"] >= 3
    assert_self_contained(page.read_text("utf-8"))


def test_cli_days_and_sync(
    sqlite_storage: SQLiteStorage, sqlite_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history(sqlite_storage)
    cycle(sqlite_storage, NOW - D, found=1, sync="tickets")
    args = cli("--db", str(sqlite_path), "--until", NOW.isoformat(), "--days", "2", "--json")
    assert run_cli(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["window"]["seconds"] == 2 * 86400
    assert data["reconciliation"]["cycles"] == 2  # NOW - 1 hour (deals), NOW - 1 day (tickets)
    args = cli("--db", str(sqlite_path), "--until", NOW.isoformat(), "--sync", "tickets", "--json")
    assert run_cli(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["window"]["sync"] == "tickets"
    assert data["reconciliation"]["cycles"] == 1


def test_cli_without_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nothing.sqlite"
    assert run_cli(cli("--db", str(missing))) == 2
    assert "no database" in capsys.readouterr().err
    assert not missing.exists()


@pytest.mark.parametrize("argv", [["--days", "0"], ["--until", "yesterday"], []])
def test_cli_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        cli(*(["--db", "x.sqlite"] if argv else []), *argv)


def test_python_m_syncrecon_dashboard_prints_the_same_table(
    sqlite_storage: SQLiteStorage, sqlite_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command as ``python -m syncrecon`` wires it, byte for byte the table of the library.
    from syncrecon.__main__ import main

    history(sqlite_storage)
    expected = build_dashboard(sqlite_storage, now=NOW).to_text()
    assert main(["dashboard", "--db", str(sqlite_path), "--until", NOW.isoformat()]) == 0
    assert capsys.readouterr().out == expected
    assert main(["dashboard", "--db", str(sqlite_path.with_name("missing.sqlite"))]) == 2
    assert "syncrecon dashboard: no database at" in capsys.readouterr().err


def test_the_command_line_plumbing_is_not_public() -> None:
    import syncrecon.dashboard
    from syncrecon.dashboard import _cli

    for name in ("register_cli", "run_cli"):
        assert name not in syncrecon.dashboard.__all__
        assert name not in vars(syncrecon.dashboard)
        assert callable(getattr(_cli, name))


def test_api_requests_by_system_and_endpoint(storage: Storage) -> None:
    at = NOW - timedelta(hours=3)
    rows = [
        ({"sync": "deals", "system": "hubspot", "endpoint": "GET /crm/v3/objects/deals"}, 10),
        (
            {"sync": "deals", "system": "hubspot", "endpoint": "POST /crm/v3/objects/deals/search"},
            4,
        ),
        (
            {"sync": "deals", "system": "salesforce", "endpoint": "GET /services/data/v61.0/query"},
            2,
        ),
        ({"sync": "other", "system": "zendesk", "endpoint": "GET /api/v2/tickets"}, 7),
    ]
    storage.commit(
        Step(
            at=at,
            counters=[
                Counter(metric="api_requests", labels=labels, amount=n) for labels, n in rows
            ],
        )
    )
    board = build_dashboard(storage, now=NOW, sync="deals")
    assert board.api_requests == {
        "hubspot": {"GET /crm/v3/objects/deals": 10, "POST /crm/v3/objects/deals/search": 4},
        "salesforce": {"GET /services/data/v61.0/query": 2},
    }
    assert board.to_dict()["api_requests"]["hubspot"]["GET /crm/v3/objects/deals"] == 10
    assert "POST /crm/v3/objects/deals/search" in board.to_text()
    assert "GET /services/data/v61.0/query" in board.to_html()
    assert "zendesk" not in board.to_html()


# -- one unit per row: sightings, discrepancies counted once, queue items -------------------------


def _reconciled(storage: Storage, clock: ManualClock) -> Dashboard:
    """Three real cycles: one rule fix, one record created, one escalation that waits.

    The waiting escalation is seen again by every cycle (3 sightings), but it is one item
    sent to an operator; the create is a fix that opens no queue item.
    """
    crm = SimulatedSystem("crm", clock=clock)
    erp = SimulatedSystem("erp", clock=clock)
    crm.create({"email": "ada@example.com", "notes": "", "amount": 100})
    crm.create({"email": "bob@example.com", "notes": "new", "amount": 5})
    clock.advance(5 * M)
    erp.create({"email": "ada@example.com", "notes": "pays yearly", "amount": 120})
    accounts = SyncDefinition(
        name="accounts",
        left=crm,
        right=erp,
        fields=[
            FieldMap(left="notes", right="notes", policy=recency()),
            FieldMap(left="amount", right="amount", policy=escalate("money")),
        ],
        natural_key=NaturalKey(left="email", right="email"),
        create_on=["right"],
    )
    reconciler = Reconciler(accounts, storage, clock=clock)
    for _ in range(3):
        reconciler.run_cycle()
        clock.advance(H)
    return build_dashboard(storage, now=clock.now())


def _text_table(text: str, header: str, count: int) -> tuple[list[str], list[list[str]]]:
    """The text table whose header starts with ``header``: its column names and its ``count``
    rows, cut at the rule of dashes under the header (names may hold spaces)."""
    lines = text.splitlines()
    n = next(i for i, line in enumerate(lines) if line.strip().startswith(header))
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", lines[n + 1])]
    rows = [[line[s:e].strip() for s, e in spans] for line in lines[n + 2 : n + 2 + count]]
    return [lines[n][s:e].strip() for s, e in spans], rows


def test_the_signals_row_counts_each_discrepancy_once_in_every_rendering(
    memory_storage: Storage, clock: ManualClock
) -> None:
    board = _reconciled(memory_storage, clock)
    # What the cycles saw: 2 + 1 + 1 discrepancies (the waiting amount every time), each
    # cycle's own "for an operator" repeats the waiting item.
    rec = board.reconciliation
    assert [(p.discrepancies, p.auto_resolved, p.escalated) for p in rec.per_cycle] == [
        (3, 2, 1),
        (1, 0, 1),
        (1, 0, 1),
    ]
    # Counted once each: 2 auto-resolved (the notes, the create), 1 sent to an operator.
    assert board.auto_resolved == {"create_on": 1, "recency": 1}
    assert board.escalated == {"money": 1}
    assert rec.new_discrepancies == 2  # queue items: the create opened none
    assert board.signals.auto_resolution_rate == pytest.approx(2 / 3)
    newest = board.signals.trend[-1]
    assert (newest.auto_resolved, newest.escalated) == (2, 1)
    assert newest.auto_resolution_rate == pytest.approx(2 / 3)

    text = board.to_text()
    names, rows = _text_table(text, "bucket from (UTC)", 8)
    # No sighting (found) in a row of discrepancies counted once.
    assert names == names_of_the_signals_row()
    assert rows[-1][1:5] == ["3", "2", "1", "66.7%"]
    lines = text.splitlines()
    assert (
        "Signals (each discrepancy counted once;"
        " auto rate = auto-resolved / (auto-resolved + sent to an operator))" in lines
    )
    assert "  auto-resolution rate: 66.7%" in lines
    # The per-cycle table says its operator column repeats what waits.
    names, rows = _text_table(text, "finished (UTC)", 3)
    assert names == [
        "finished (UTC)",
        "mode",
        "found",
        "auto-resolved",
        "for an operator",
        "auto-resolved / found",  # not the signals' auto rate: another unit
    ]
    assert [r[2:] for r in rows] == [
        ["3", "2", "1", "66.7%"],
        ["1", "0", "1", "0.0%"],
        ["1", "0", "1", "0.0%"],
    ]
    assert "  per cycle: a discrepancy that waits for an operator is counted by every cycle" in (
        text.splitlines()
    )
    assert "  2 new queue items this week: 1 settled automatically, 1 sent to an operator" in (
        text.splitlines()
    )

    data = board.to_dict()
    row = data["signals"]["trend"][-1]
    assert set(row) == {
        "start",
        "end",
        "cycles",
        "auto_resolved",
        "escalated",
        "escalated_by_category",
        "auto_resolution_rate",
    }
    assert (row["auto_resolved"], row["escalated"]) == (2, 1)
    assert row["auto_resolved"] == data["auto_resolved"]["total"]
    assert row["escalated"] == data["escalated"]["total"]
    assert row["auto_resolution_rate"] == data["signals"]["auto_resolution_rate"]

    html = board.to_html()
    page = parse(html)
    words = " ".join(" ".join(page.text).split())
    assert "3 sent to an operator" not in words
    assert "3 escalated" not in words
    assert "1 sent to an operator, 2 auto-resolved, rate 66.7%" in words  # the trend's tooltip
    # A cycle's tooltip.
    assert "1 for an operator (new or still waiting), auto-resolved / found 0.0%" in words
    tables = Rows()
    tables.feed(html)
    trend = next(t for t in tables.tables if t[0][:1] == ["bucket from (UTC)"])
    assert trend[0] == names_of_the_signals_row()
    assert trend[-1] == [newest.start.strftime("%Y-%m-%d %H:%M"), "3", "2", "1", "66.7%", ""]


def names_of_the_signals_row() -> list[str]:
    return [
        "bucket from (UTC)",
        "cycles",
        "auto-resolved",
        "sent to an operator",
        "auto rate",
        "spike",
    ]


class Rows(HTMLParser):
    """The page's tables as rows of cell texts (header row first)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
