"""The dashboard's values: frozen attrs classes and the constants that define them.

Every value is immutable and knows only its own arithmetic (totals, shares, percentiles);
reading storage happens in :mod:`._queries` and :mod:`._build`, rendering in :mod:`._json`,
:mod:`._text` and :mod:`._html`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from .._clock import utc
from ._format import _short
from ._stats import _ranked, _rate, _ratio, nearest_rank

TTR_EDGES: tuple[timedelta, ...] = (
    timedelta(hours=1),
    timedelta(hours=4),
    timedelta(days=1),
    timedelta(days=3),
    timedelta(days=7),
    timedelta(days=14),
)
"""Edges of the time-to-resolution histogram: ``<1h, 1h-4h, 4h-1d, 1d-3d, 3d-7d, 7d-14d, >=14d``.

A bin holds ``low <= t < high``: an item closed after exactly 4 hours falls in ``4h-1d``.
"""

FAST_LOOP_SIGNALS: Mapping[str, str] = {
    "duplicates": "duplicate",
    "stale": "stale",
    "echoes": "echo",
    "rejections": "rejected",
}
"""The fast-loop outcomes that are signals, by their name on the dashboard."""

UNCATEGORIZED = "uncategorized"
"""The category shown for an escalated item that has none."""

RATE_FLAT = 0.05
"""A change of the auto-resolution rate of at most this much (5 points) is ``"flat"``."""


def _as_map(value: Mapping[str, int]) -> Mapping[str, int]:
    return dict(value)


# -- the values ---------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class EventCount:
    """Fast-loop events of one source, direction and outcome."""

    source: str
    direction: str
    outcome: str
    count: int


@attrs.frozen(kw_only=True)
class FastLoopEvents:
    """Number 1: the fast loop's events in the window, by source, direction and outcome.

    ``rows`` hold every (source, direction, outcome) with its count; ``rejected_by_reason``
    the rejections by the error that refused them (``SignatureError``, ...).
    """

    rows: tuple[EventCount, ...] = ()
    rejected_by_reason: Mapping[str, int] = attrs.field(factory=dict, converter=_as_map)

    @property
    def total(self) -> int:
        """Every event counted in the window."""
        return sum(r.count for r in self.rows)

    def _by(self, attr: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows:
            key = getattr(row, attr)
            out[key] = out.get(key, 0) + row.count
        return _ranked(out)

    @property
    def by_source(self) -> dict[str, int]:
        """Events per source (the webhook URL's last segment), largest first."""
        return self._by("source")

    @property
    def by_direction(self) -> dict[str, int]:
        """Events per direction (``"from->to"`` system names), largest first."""
        return self._by("direction")

    @property
    def by_outcome(self) -> dict[str, int]:
        """Events per outcome (applied, duplicate, stale, echo, rejected, ...), largest first."""
        return self._by("outcome")

    @property
    def by_source_direction(self) -> dict[tuple[str, str], dict[str, int]]:
        """Per (source, direction): events per outcome."""
        out: dict[tuple[str, str], dict[str, int]] = {}
        for row in self.rows:
            outcomes = out.setdefault((row.source, row.direction), {})
            outcomes[row.outcome] = outcomes.get(row.outcome, 0) + row.count
        return out


@attrs.frozen(kw_only=True)
class CyclePoint:
    """One reconciliation cycle as its stored report tells it: sightings, this cycle's own.

    ``discrepancies`` counts what the cycle found, ``auto_resolved`` what its rules fixed and
    ``escalated`` what it left for an operator, new or still waiting: a discrepancy waiting for
    an operator is found again by every cycle, so it is counted by each of them (summed over
    cycles, ``escalated`` is not number 4, which counts each escalation once).
    """

    cycle_id: str
    sync: str
    mode: str
    started_at: datetime = attrs.field(converter=utc)
    finished_at: datetime = attrs.field(converter=utc)
    discrepancies: int
    auto_resolved: int
    escalated: int
    halted: str | None = None

    @property
    def auto_resolution_rate(self) -> float | None:
        """Of what this cycle found, the share its rules fixed (``None`` if it found nothing).

        ``auto_resolved / discrepancies``: sightings, not the signals' auto-resolution rate.
        """
        return _ratio(self.auto_resolved, self.discrepancies)


@attrs.frozen(kw_only=True)
class Reconciliation:
    """Number 2: cycles run and discrepancies found in the window, and the cycles themselves.

    ``cycles`` and ``discrepancies_found`` come from the storage counters (the cycles' reports
    summed: a discrepancy that waits is counted by each cycle that sees it);
    ``new_discrepancies`` counts queue items first detected in the window, each once: those
    sent to an operator (number 4) and those settled automatically (or being settled); a record
    created opens no queue item, so number 3 may count more fixes than items settled.
    ``per_cycle`` lists the cycles that finished in the window, oldest first.
    """

    cycles: int
    cycles_by_mode: Mapping[str, int] = attrs.field(factory=dict, converter=_as_map)
    discrepancies_found: int
    new_discrepancies: int
    per_cycle: tuple[CyclePoint, ...] = ()


@attrs.frozen(kw_only=True)
class HistogramBin:
    """Items closed after ``low <= time < high`` (``high`` is ``None`` for the last bin)."""

    low: timedelta
    high: timedelta | None
    count: int

    @property
    def label(self) -> str:
        """``<1h``, ``1h-4h``, ..., ``>=14d``."""
        if self.high is None:
            return f">={_short(self.low)}"
        if not self.low:
            return f"<{_short(self.high)}"
        return f"{_short(self.low)}-{_short(self.high)}"


@attrs.frozen(kw_only=True)
class OpenItem:
    """An escalated item still waiting, and how long it has waited at the dashboard's ``now``."""

    id: int | None
    sync: str
    field: str
    category: str | None
    left_key: str | None
    right_key: str | None
    detected_at: datetime = attrs.field(converter=utc)
    age: timedelta
    assignee: str | None = None


@attrs.frozen(kw_only=True)
class TimeToResolution:
    """Number 5: how fast the operator queue is worked, and what waits in it.

    ``durations`` are the times to resolution (``resolved_at - detected_at``, never negative)
    of the escalations closed in the window, sorted; ``resolved`` and ``dismissed`` split them
    by how they were closed. ``queue_depth`` counts the escalated items open at ``now``,
    ``queue_by_category`` splits them, and ``oldest_open`` is the one that waited longest.
    """

    durations: tuple[timedelta, ...] = ()
    resolved: int = 0
    dismissed: int = 0
    histogram: tuple[HistogramBin, ...] = ()
    queue_depth: int = 0
    queue_by_category: Mapping[str, int] = attrs.field(factory=dict, converter=_as_map)
    oldest_open: OpenItem | None = None

    @property
    def count(self) -> int:
        """Escalations closed in the window."""
        return len(self.durations)

    def percentile(self, percent: int) -> timedelta | None:
        """The nearest-rank percentile (:func:`nearest_rank`); ``None`` when nothing closed."""
        return nearest_rank(self.durations, percent) if self.durations else None

    @property
    def p50(self) -> timedelta | None:
        """The median time to resolution (nearest rank)."""
        return self.percentile(50)

    @property
    def p90(self) -> timedelta | None:
        """The 90th percentile time to resolution (nearest rank)."""
        return self.percentile(90)

    @property
    def max(self) -> timedelta | None:
        """The longest time to resolution."""
        return self.durations[-1] if self.durations else None


@attrs.frozen(kw_only=True)
class TrendBucket:
    """One bucket of the trend ``[start, end)``: its discrepancies, each counted once.

    ``auto_resolved`` counts the fixes of the rules (number 3 of the bucket: one per discrepancy
    fixed, records created included), ``escalated`` the queue items first detected in the
    bucket that went to an operator (number 4 of the bucket), ``escalated_by_category`` splits
    them. ``cycles`` counts the cycles run. ``discrepancies_found`` sums what those cycles
    found (sightings: a waiting discrepancy is counted by every cycle); it only tells whether
    the bucket saw activity and is not part of the bucket's row.
    """

    start: datetime = attrs.field(converter=utc)
    end: datetime = attrs.field(converter=utc)
    cycles: int
    discrepancies_found: int
    auto_resolved: int
    escalated: int
    escalated_by_category: Mapping[str, int] = attrs.field(factory=dict, converter=_as_map)

    @property
    def auto_resolution_rate(self) -> float | None:
        """``auto_resolved / (auto_resolved + escalated)``; ``None`` when both are 0."""
        return _rate(self.auto_resolved, self.escalated)

    @property
    def active(self) -> bool:
        """Whether anything happened: a cycle ran, or something was found, fixed or escalated."""
        return bool(self.cycles or self.discrepancies_found or self.auto_resolved or self.escalated)


@attrs.frozen(kw_only=True)
class Spike:
    """A trend bucket whose escalations (of one ``category``, or all when ``None``) spiked.

    ``baseline`` is the median escalations of the buckets before it.
    """

    start: datetime = attrs.field(converter=utc)
    end: datetime = attrs.field(converter=utc)
    category: str | None
    count: int
    baseline: float


@attrs.frozen(kw_only=True)
class Signals:
    """What the five numbers exist to show.

    ``auto_resolution_rate`` is ``auto_resolved / (auto_resolved + escalated)`` over the window
    (numbers 3 and 4): the share of the discrepancies settled without a person, each counted
    once (a fix happens once per discrepancy, an escalation is one queue item). ``trend`` holds
    the equal buckets that end at ``now``, oldest first; ``rate_change`` is the newest bucket's
    rate minus the median rate of the earlier buckets that have one, and ``rate_direction`` is
    ``"up"`` or ``"down"`` when it moved by more than 5 points, ``"flat"`` otherwise (``None``
    without enough data). ``spikes`` are the buckets whose escalations were at least
    ``spike_min`` and more than ``spike_factor`` times the median of the earlier buckets (from
    the first with any activity), for all categories together (``category=None``) and for each
    category. ``fast_loop_outcomes`` counts
    the fast loop's duplicates, stale events, echoes and rejections in the window.
    """

    auto_resolution_rate: float | None
    trend: tuple[TrendBucket, ...] = ()
    rate_change: float | None = None
    rate_direction: str | None = None
    spikes: tuple[Spike, ...] = ()
    spike_factor: float = 2.0
    spike_min: int = 3
    fast_loop_outcomes: Mapping[str, int] = attrs.field(factory=dict, converter=_as_map)


@attrs.frozen(kw_only=True)
class Dashboard:
    """The five numbers of one window ``[window_start, window_end)``, with their signals.

    ``auto_resolved`` maps each rule to the discrepancies it fixed (number 3); ``escalated``
    each category to the escalations first detected in the window (number 4). Render it with
    :meth:`to_text`, :meth:`to_dict` or :meth:`to_html`; a notebook shows it as HTML.
    """

    generated_at: datetime = attrs.field(converter=utc)
    window_start: datetime = attrs.field(converter=utc)
    window_end: datetime = attrs.field(converter=utc)
    window: timedelta
    bucket: timedelta
    sync: str | None
    fast_loop_events: FastLoopEvents
    reconciliation: Reconciliation
    auto_resolved: Mapping[str, int] = attrs.field(converter=_as_map)
    escalated: Mapping[str, int] = attrs.field(converter=_as_map)
    time_to_resolution: TimeToResolution
    signals: Signals
    #: API requests in the window by system and endpoint, both loops (what providers bill and
    #: limit; HTTP connectors count each request, others each call under ``"calls"``).
    api_requests: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)
    #: Triage suggestions in the window by their source (``rules``, a model...): how many an
    #: operator was shown (``shown``) and how many were resolved exactly as suggested
    #: (``taken``). Suggestions are never applied without an operator.
    triage: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)

    # -- renderings: each lives in its own module -----------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary: times in ISO 8601, durations in seconds, rates as 0..1."""
        from ._json import render_dict

        return render_dict(self)

    def to_text(self) -> str:
        """A plain-text report: the five numbers as tables, then the signals."""
        from ._text import render_text

        return render_text(self)

    def __str__(self) -> str:
        return self.to_text()

    def to_html(self) -> str:
        """One self-contained HTML page: inline CSS and SVG charts, no script, no external load."""
        from ._html import render_page

        return render_page(self)

    def _repr_html_(self) -> str:
        """The dashboard in a notebook cell: the page's content and style, no ``<html>``."""
        from ._html import render_fragment

        return render_fragment(self)
