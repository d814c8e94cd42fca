"""The five-number dashboard: is the sync drifting, does a source misbehave, does review keep pace?

>>> from syncrecon.dashboard import build_dashboard
>>> board = build_dashboard(storage)  # doctest: +SKIP
>>> print(board.to_text())  # doctest: +SKIP

:func:`build_dashboard` only reads storage; ``now`` is injectable. For a window
``[start, now)`` (default: the last 7 days) it returns a :class:`Dashboard` with

1. **fast-loop events** by source, direction and outcome (storage counters ``webhook_events``);
2. **reconciliation**: cycles run and discrepancies found (counters ``cycles`` and
   ``discrepancies``), with a per-cycle series from the stored cycle reports;
3. **auto-resolved** discrepancies by rule (counter ``auto_resolved``: one per fix);
4. **escalated** discrepancies by category: queue items first detected in the window that went
   to an operator (status escalated, resolved or dismissed), each counted once, whoever opened
   it (a cycle, the fast loop, schema-drift detection);
5. **time to resolution** of the operator queue: for escalations closed (resolved or dismissed)
   in the window, ``resolved_at - detected_at``: p50, p90, max (nearest rank, see
   :func:`nearest_rank`) and a histogram over :data:`TTR_EDGES`; with the queue's current depth
   and its oldest open item.

And the signals they exist for (:class:`Signals`): the auto-resolution rate
``auto_resolved / (auto_resolved + escalated)`` and its trend over equal buckets (weekly by
default), escalation spikes (a bucket whose escalations are at least ``spike_min`` and more than
``spike_factor`` times the median of the earlier buckets), and the fast loop's duplicates, stale
events, echoes and rejections.

Counters have hourly resolution, so the window's start (and every bucket edge) is rounded *up*
to the hour: an hour of counts belongs to the window its first instant falls in, and counts and
timestamps agree exactly. Counters without a ``sync`` label (the fast loop's) are not filtered
by ``sync``.

Renderings: :meth:`Dashboard.to_text`, :meth:`Dashboard.to_dict` (JSON-ready),
:meth:`Dashboard.to_html` (one self-contained page: inline CSS and SVG, no script, nothing
loaded from anywhere) and ``_repr_html_`` for notebooks. ``python -m syncrecon dashboard --db
PATH`` prints the table (:func:`register_cli`, :func:`run_cli`).
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import math
import statistics
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import attrs

from ._clock import utc
from ._exceptions import ConfigurationError, SyncReconError
from .storage._base import CycleRecord, Discrepancy, Status, Storage

__all__ = [
    "FAST_LOOP_SIGNALS",
    "RATE_FLAT",
    "TTR_EDGES",
    "UNCATEGORIZED",
    "CyclePoint",
    "Dashboard",
    "EventCount",
    "FastLoopEvents",
    "HistogramBin",
    "OpenItem",
    "Reconciliation",
    "Signals",
    "Spike",
    "TimeToResolution",
    "TrendBucket",
    "build_dashboard",
    "format_duration",
    "nearest_rank",
    "register_cli",
    "run_cli",
]

_T = TypeVar("_T")
_HOUR = timedelta(hours=1)
_PAGE = 1000

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

_OPERATOR_STATUSES = (Status.ESCALATED, Status.RESOLVED, Status.DISMISSED)
_CLOSED_STATUSES = (Status.RESOLVED, Status.DISMISSED)
UNCATEGORIZED = "uncategorized"
"""The category shown for an escalated item that has none."""

RATE_FLAT = 0.05
"""A change of the auto-resolution rate of at most this much (5 points) is ``"flat"``."""


# -- the pure core: percentiles, histogram, spikes, trend --------------------------------------


def nearest_rank(values: Sequence[_T], percent: int) -> _T:
    """The nearest-rank ``percent``-th percentile of ``values``, which must be sorted.

    It is the value at 1-based rank ``ceil(percent / 100 * n)`` (at least 1): the smallest
    value such that at least ``percent`` % of the values are less than or equal to it. It is
    always one of the values, never an interpolation: of ``[1, 2, 3, 4]`` the 50th percentile is
    ``2`` and the 90th is ``4``; the 100th is the maximum. Raises ``ValueError`` when ``values``
    is empty or ``percent`` is not in 1..100.
    """
    if not values:
        raise ValueError("no values")
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in 1..100, got {percent}")
    rank = max(1, -(-percent * len(values) // 100))  # integer ceil: no float rounding
    return values[rank - 1]


def format_duration(value: timedelta) -> str:
    """A short human duration, truncated to two units: ``45s``, ``2h 5m``, ``3d 4h``."""
    seconds = max(0, int(value.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s" if seconds else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def _short(value: timedelta) -> str:
    """A histogram edge: ``1h``, ``4h``, ``1d``."""
    seconds = int(value.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _histogram(
    durations: Sequence[timedelta], edges: Sequence[timedelta]
) -> tuple[HistogramBin, ...]:
    lows = [timedelta(0), *edges]
    highs: list[timedelta | None] = [*edges, None]
    counts = [0] * len(lows)
    for value in durations:
        index = 0
        while index < len(edges) and value >= edges[index]:
            index += 1
        counts[index] += 1
    return tuple(
        HistogramBin(low=low, high=high, count=n)
        for low, high, n in zip(lows, highs, counts, strict=True)
    )


def _spikes_in(
    counts: Sequence[int], factor: float, minimum: int, first: int = 0
) -> list[tuple[int, float]]:
    """``(index, baseline)`` of each bucket after ``first`` that spikes against those before it.

    The baseline is the median of ``counts[first:index]`` (:func:`statistics.median`: the mean
    of the two middle values for an even number); a spike is ``count >= minimum`` and
    ``count > factor * baseline``.
    """
    found = []
    for index in range(first + 1, len(counts)):
        baseline = float(statistics.median(counts[first:index]))
        if counts[index] >= minimum and counts[index] > factor * baseline:
            found.append((index, baseline))
    return found


def _rate(auto: int, escalated: int) -> float | None:
    total = auto + escalated
    return None if total == 0 else auto / total


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def _ranked(counts: Mapping[str, int]) -> dict[str, int]:
    """Largest first, then by name; zeros dropped."""
    return {k: v for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if v}


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
    """One reconciliation cycle as its stored report tells it.

    ``discrepancies`` counts what the cycle found; a discrepancy still waiting for an operator
    is found again by every cycle, so it is counted by each of them.
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
        """Of what this cycle found, the share its rules fixed (``None`` if it found nothing)."""
        return _ratio(self.auto_resolved, self.discrepancies)


@attrs.frozen(kw_only=True)
class Reconciliation:
    """Number 2: cycles run and discrepancies found in the window, and the cycles themselves.

    ``cycles`` and ``discrepancies_found`` come from the storage counters (the cycles' reports
    summed: a discrepancy that waits is counted by each cycle that sees it);
    ``new_discrepancies`` counts queue items first detected in the window, each once.
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
    """One bucket of the trend: ``[start, end)``, what the rules fixed and what was escalated."""

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

    ``auto_resolution_rate`` is ``auto_resolved / (auto_resolved + escalated)`` over the window:
    the share of the discrepancies settled without a person, each counted once. ``trend`` holds
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

    # -- JSON -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary: times in ISO 8601, durations in seconds, rates as 0..1."""
        ev, rec, ttr, sig = (
            self.fast_loop_events,
            self.reconciliation,
            self.time_to_resolution,
            self.signals,
        )
        return {
            "window": {
                "start": self.window_start.isoformat(),
                "end": self.window_end.isoformat(),
                "seconds": self.window.total_seconds(),
                "bucket_seconds": self.bucket.total_seconds(),
                "sync": self.sync,
                "generated_at": self.generated_at.isoformat(),
            },
            "fast_loop_events": {
                "total": ev.total,
                "by_source": ev.by_source,
                "by_direction": ev.by_direction,
                "by_outcome": ev.by_outcome,
                "rejected_by_reason": dict(ev.rejected_by_reason),
                "rows": [attrs.asdict(r) for r in ev.rows],
            },
            "reconciliation": {
                "cycles": rec.cycles,
                "cycles_by_mode": dict(rec.cycles_by_mode),
                "discrepancies_found": rec.discrepancies_found,
                "new_discrepancies": rec.new_discrepancies,
                "per_cycle": [_cycle_dict(c) for c in rec.per_cycle],
            },
            "auto_resolved": {
                "total": sum(self.auto_resolved.values()),
                "by_rule": dict(self.auto_resolved),
            },
            "escalated": {
                "total": sum(self.escalated.values()),
                "by_category": dict(self.escalated),
            },
            "time_to_resolution": {
                "count": ttr.count,
                "resolved": ttr.resolved,
                "dismissed": ttr.dismissed,
                "p50_seconds": _seconds(ttr.p50),
                "p90_seconds": _seconds(ttr.p90),
                "max_seconds": _seconds(ttr.max),
                "histogram": [
                    {
                        "label": b.label,
                        "low_seconds": b.low.total_seconds(),
                        "high_seconds": _seconds(b.high),
                        "count": b.count,
                    }
                    for b in ttr.histogram
                ],
                "queue_depth": ttr.queue_depth,
                "queue_by_category": dict(ttr.queue_by_category),
                "oldest_open": None if ttr.oldest_open is None else _open_dict(ttr.oldest_open),
            },
            "signals": {
                "auto_resolution_rate": sig.auto_resolution_rate,
                "rate_change": sig.rate_change,
                "rate_direction": sig.rate_direction,
                "trend": [
                    {
                        "start": b.start.isoformat(),
                        "end": b.end.isoformat(),
                        "cycles": b.cycles,
                        "discrepancies_found": b.discrepancies_found,
                        "auto_resolved": b.auto_resolved,
                        "escalated": b.escalated,
                        "escalated_by_category": dict(b.escalated_by_category),
                        "auto_resolution_rate": b.auto_resolution_rate,
                    }
                    for b in sig.trend
                ],
                "spikes": [
                    {
                        "start": s.start.isoformat(),
                        "end": s.end.isoformat(),
                        "category": s.category,
                        "count": s.count,
                        "baseline": s.baseline,
                    }
                    for s in sig.spikes
                ],
                "spike_rule": {"factor": sig.spike_factor, "min": sig.spike_min},
                "fast_loop_outcomes": dict(sig.fast_loop_outcomes),
            },
            "api_requests": {system: dict(n) for system, n in self.api_requests.items()},
        }

    # -- text -----------------------------------------------------------------------------------

    def to_text(self) -> str:
        """A plain-text report: the five numbers as tables, then the signals."""
        return _render_text(self)

    def __str__(self) -> str:
        return self.to_text()

    # -- HTML -----------------------------------------------------------------------------------

    def to_html(self) -> str:
        """One self-contained HTML page: inline CSS and SVG charts, no script, no external load."""
        title = "syncrecon dashboard" + (f": {self.sync}" if self.sync else "")
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"{_render_html(self)}\n</body>\n</html>\n"
        )

    def _repr_html_(self) -> str:
        """The dashboard in a notebook cell: the page's content and style, no ``<html>``."""
        return f"<style>{_CSS}</style>\n{_render_html(self)}"


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _cycle_dict(point: CyclePoint) -> dict[str, Any]:
    return {
        "cycle_id": point.cycle_id,
        "sync": point.sync,
        "mode": point.mode,
        "started_at": point.started_at.isoformat(),
        "finished_at": point.finished_at.isoformat(),
        "discrepancies": point.discrepancies,
        "auto_resolved": point.auto_resolved,
        "escalated": point.escalated,
        "auto_resolution_rate": point.auto_resolution_rate,
        "halted": point.halted,
    }


def _open_dict(item: OpenItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "sync": item.sync,
        "field": item.field,
        "category": item.category,
        "left_key": item.left_key,
        "right_key": item.right_key,
        "detected_at": item.detected_at.isoformat(),
        "age_seconds": item.age.total_seconds(),
        "assignee": item.assignee,
    }


# -- reading storage ----------------------------------------------------------------------------


def _ceil_hour(value: datetime) -> datetime:
    floor = value.replace(minute=0, second=0, microsecond=0)
    return floor if floor == value else floor + _HOUR


def _counters(
    storage: Storage,
    metric: str,
    since: datetime | None,
    until: datetime | None,
    sync: str | None,
) -> list[tuple[Mapping[str, str], int]]:
    """Totals per label set; a label set without ``sync`` is kept whatever ``sync`` is."""
    rows = storage.counter_totals(metric, since=since, until=until)
    return [(labels, n) for labels, n in rows if sync is None or labels.get("sync", sync) == sync]


def _api_requests(
    storage: Storage, start: datetime, end: datetime, sync: str | None
) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for labels, n in _counters(storage, "api_requests", start, end, sync):
        by_endpoint = out.setdefault(labels.get("system", ""), {})
        endpoint = labels.get("endpoint", "calls")
        by_endpoint[endpoint] = by_endpoint.get(endpoint, 0) + n
    return {system: dict(sorted(e.items())) for system, e in sorted(out.items())}


def _request_rows(requests: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    return [
        [system, endpoint, str(n)]
        for system, by_endpoint in requests.items()
        for endpoint, n in by_endpoint.items()
    ]


def _sum(rows: Iterable[tuple[Mapping[str, str], int]]) -> int:
    return sum(n for _, n in rows)


def _group(rows: Iterable[tuple[Mapping[str, str], int]], label: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for labels, n in rows:
        key = labels.get(label, "")
        out[key] = out.get(key, 0) + n
    return _ranked(out)


def _pages(
    storage: Storage,
    *,
    sync: str | None,
    statuses: Sequence[Status] | None = None,
    resolved_since: datetime | None = None,
) -> Iterator[list[Discrepancy]]:
    """Queue items newest first (by detection), a page at a time, each item once.

    Paged by keyset (the last item's detection time and id), so each page costs the same
    however much history lies before it.
    """
    before: tuple[datetime, int] | None = None
    while True:
        page = storage.list_items(
            sync=sync,
            statuses=statuses,
            limit=_PAGE,
            before=before,
            resolved_since=resolved_since,
        )
        yield page
        if len(page) < _PAGE or page[-1].id is None:
            return
        before = (page[-1].detected_at, page[-1].id)


def _detected_since(storage: Storage, sync: str | None, since: datetime) -> list[Discrepancy]:
    """Every queue item detected at or after ``since`` (paging stops at the first older one)."""
    found: list[Discrepancy] = []
    for page in _pages(storage, sync=sync):
        found.extend(i for i in page if i.detected_at >= since)
        if page and page[-1].detected_at < since:
            break
    return found


def _cycles_between(
    storage: Storage, sync: str | None, start: datetime, end: datetime
) -> list[CycleRecord]:
    """The stored cycles that finished in ``[start, end)``, oldest first."""
    limit = 500
    while True:
        found = storage.list_cycles(sync=sync, limit=limit)
        if len(found) < limit or found[-1].started_at < start:
            break
        limit *= 4
    inside = [c for c in found if start <= c.finished_at < end and not c.dry_run]
    return sorted(inside, key=lambda c: (c.finished_at, c.id))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _total(value: Any) -> int:
    if isinstance(value, Mapping):
        return sum(_int(v) for v in value.values())
    return _int(value)


def _point(cycle: CycleRecord) -> CyclePoint:
    report = cycle.report
    halted = report.get("halted")
    return CyclePoint(
        cycle_id=cycle.id,
        sync=cycle.sync,
        mode=cycle.mode,
        started_at=cycle.started_at,
        finished_at=cycle.finished_at,
        discrepancies=_int(report.get("discrepancies_found")),
        auto_resolved=_total(report.get("auto_resolved")),
        escalated=_total(report.get("escalated")),
        halted=halted if isinstance(halted, str) else None,
    )


def _went_to_operator(item: Discrepancy) -> bool:
    return item.status in _OPERATOR_STATUSES


def _category(item: Discrepancy) -> str:
    return item.category or UNCATEGORIZED


def _tally(items: Iterable[Discrepancy]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[_category(item)] = out.get(_category(item), 0) + 1
    return _ranked(out)


def _queue(storage: Storage, sync: str | None, start: datetime, end: datetime) -> TimeToResolution:
    """Number 5: escalations closed in ``[start, end)`` and the queue as it stood at ``end``."""
    durations: list[timedelta] = []
    resolved = dismissed = 0
    waiting: list[Discrepancy] = []
    # Only items closed in the window or after it matter here: read no older history.
    for page in _pages(storage, sync=sync, statuses=_CLOSED_STATUSES, resolved_since=start):
        for item in page:
            if item.resolved_at is None or item.detected_at >= end:
                continue
            if item.resolved_at >= end:
                waiting.append(item)  # closed after ``end``: it still waited at ``end``
            elif item.resolved_at >= start:
                durations.append(max(timedelta(0), item.resolved_at - item.detected_at))
                if item.status is Status.DISMISSED:
                    dismissed += 1
                else:
                    resolved += 1
    for page in _pages(storage, sync=sync, statuses=[Status.ESCALATED]):
        waiting.extend(i for i in page if i.detected_at < end)
    durations.sort()
    oldest = min(waiting, key=lambda i: (i.detected_at, i.id or 0), default=None)
    return TimeToResolution(
        durations=tuple(durations),
        resolved=resolved,
        dismissed=dismissed,
        histogram=_histogram(durations, TTR_EDGES),
        queue_depth=len(waiting),
        queue_by_category=_tally(waiting),
        oldest_open=None
        if oldest is None
        else OpenItem(
            id=oldest.id,
            sync=oldest.sync,
            field=oldest.field,
            category=oldest.category,
            left_key=oldest.left_key,
            right_key=oldest.right_key,
            detected_at=oldest.detected_at,
            age=end - oldest.detected_at,
            assignee=oldest.assignee,
        ),
    )


def _fast_loop(
    storage: Storage, sync: str | None, start: datetime | None, end: datetime
) -> FastLoopEvents:
    rows: dict[tuple[str, str, str], int] = {}
    reasons: dict[str, int] = {}
    for labels, n in _counters(storage, "webhook_events", start, end, sync):
        key = (
            labels.get("source", "unknown"),
            labels.get("direction", "unknown"),
            labels.get("outcome", "unknown"),
        )
        rows[key] = rows.get(key, 0) + n
        if "reason" in labels:
            reasons[labels["reason"]] = reasons.get(labels["reason"], 0) + n
    return FastLoopEvents(
        rows=tuple(
            EventCount(source=s, direction=d, outcome=o, count=n)
            for (s, d, o), n in sorted(rows.items())
            if n
        ),
        rejected_by_reason=_ranked(reasons),
    )


def _edges(now: datetime, bucket: timedelta, count: int) -> list[datetime]:
    """``count + 1`` bucket edges, oldest first: the last is ``now``, the others on the hour."""
    return [_ceil_hour(now - k * bucket) for k in range(count, 0, -1)] + [now]


def _at_least_an_hour(name: str, value: timedelta) -> None:
    if value < _HOUR:
        raise ConfigurationError(f"{name} must be at least one hour, got {value}")


def _spikes(trend: Sequence[TrendBucket], factor: float, minimum: int) -> list[Spike]:
    """Spikes of all escalations and of each category, judged from the first active bucket on."""
    first = next((i for i, b in enumerate(trend) if b.active), len(trend))
    series: dict[str | None, list[int]] = {None: [b.escalated for b in trend]}
    for name in sorted({c for b in trend for c in b.escalated_by_category}):
        series[name] = [b.escalated_by_category.get(name, 0) for b in trend]
    spikes = [
        Spike(
            start=trend[index].start,
            end=trend[index].end,
            category=category,
            count=counts[index],
            baseline=baseline,
        )
        for category, counts in series.items()
        for index, baseline in _spikes_in(counts, factor, minimum, first)
    ]
    spikes.sort(key=lambda s: (s.start, s.category is not None, s.category or ""))
    return spikes


def _rate_trend(trend: Sequence[TrendBucket]) -> tuple[float | None, str | None]:
    """The newest bucket's rate minus the earlier buckets' median rate, and its direction."""
    newest = trend[-1].auto_resolution_rate
    earlier = [r for r in (b.auto_resolution_rate for b in trend[:-1]) if r is not None]
    if newest is None or not earlier:
        return None, None
    change = newest - statistics.median(earlier)
    if change > RATE_FLAT:
        return change, "up"
    if change < -RATE_FLAT:
        return change, "down"
    return change, "flat"


def build_dashboard(
    storage: Storage,
    *,
    now: datetime | None = None,
    window: timedelta = timedelta(days=7),
    bucket: timedelta = timedelta(days=7),
    sync: str | None = None,
    trend_buckets: int = 8,
    spike_factor: float = 2.0,
    spike_min: int = 3,
) -> Dashboard:
    """Read the five numbers and their signals for the window ``[now - window, now)``.

    Only reads ``storage``. ``now`` defaults to the wall clock; ``sync`` narrows everything to
    one sync (counters without a sync label, as the fast loop's, are not narrowed). The window's
    start and the bucket edges are rounded up to the hour (counters are hourly).

    The trend has ``max(trend_buckets, ceil(window / bucket))`` buckets of ``bucket`` each,
    the newest ending at ``now``: with the defaults, eight weekly buckets. A bucket is an
    escalation spike when its escalations are at least ``spike_min`` and more than
    ``spike_factor`` times the median of the buckets before it, counted from the first bucket
    with any activity (a cycle, a discrepancy, a fix or an escalation).

    Raises :class:`~syncrecon.ConfigurationError` for a window or bucket under one hour, and
    whatever storage raises (:class:`~syncrecon.StorageError`).
    """
    _at_least_an_hour("window", window)
    _at_least_an_hour("bucket", bucket)
    if trend_buckets < 1:
        raise ConfigurationError(f"trend_buckets must be at least 1, got {trend_buckets}")
    end = utc(now) if now is not None else datetime.now(UTC)
    start = _ceil_hour(end - window)

    # Numbers 1 to 3 come from the counters.
    events = _fast_loop(storage, sync, start, end)
    cycle_rows = _counters(storage, "cycles", start, end, sync)
    auto_by_rule = _group(_counters(storage, "auto_resolved", start, end, sync), "rule")

    # Number 4 and the trend's escalations: queue items by the time they were detected.
    edges = _edges(end, bucket, max(trend_buckets, math.ceil(window / bucket)))
    recent = [
        i for i in _detected_since(storage, sync, min(edges[0], start)) if i.detected_at < end
    ]
    escalated = _tally(i for i in recent if i.detected_at >= start and _went_to_operator(i))
    trend = []
    for low, high in itertools.pairwise(edges):
        by_category = _tally(
            i for i in recent if low <= i.detected_at < high and _went_to_operator(i)
        )
        trend.append(
            TrendBucket(
                start=low,
                end=high,
                cycles=_sum(_counters(storage, "cycles", low, high, sync)),
                discrepancies_found=_sum(_counters(storage, "discrepancies", low, high, sync)),
                auto_resolved=_sum(_counters(storage, "auto_resolved", low, high, sync)),
                escalated=sum(by_category.values()),
                escalated_by_category=by_category,
            )
        )
    rate_change, direction = _rate_trend(trend)

    by_outcome = events.by_outcome
    return Dashboard(
        generated_at=end,
        window_start=start,
        window_end=end,
        window=window,
        bucket=bucket,
        sync=sync,
        fast_loop_events=events,
        reconciliation=Reconciliation(
            cycles=_sum(cycle_rows),
            cycles_by_mode=_group(cycle_rows, "mode"),
            discrepancies_found=_sum(_counters(storage, "discrepancies", start, end, sync)),
            new_discrepancies=sum(1 for i in recent if i.detected_at >= start),
            per_cycle=tuple(_point(c) for c in _cycles_between(storage, sync, start, end)),
        ),
        auto_resolved=auto_by_rule,
        escalated=escalated,
        time_to_resolution=_queue(storage, sync, start, end),
        api_requests=_api_requests(storage, start, end, sync),
        signals=Signals(
            auto_resolution_rate=_rate(sum(auto_by_rule.values()), sum(escalated.values())),
            trend=tuple(trend),
            rate_change=rate_change,
            rate_direction=direction,
            spikes=tuple(_spikes(trend, spike_factor, spike_min)),
            spike_factor=spike_factor,
            spike_min=spike_min,
            fast_loop_outcomes={
                name: by_outcome.get(outcome, 0) for name, outcome in FAST_LOOP_SIGNALS.items()
            },
        ),
    )


# -- text ---------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _dur(value: timedelta | None) -> str:
    return "n/a" if value is None else format_duration(value)


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M")


def _n(count: int, one: str, many: str | None = None) -> str:
    """``1 cycle``, ``2 cycles``."""
    return f"{count} {one if count == 1 else many or one + 's'}"


def _trend_words(sig: Signals) -> str:
    if sig.rate_change is None or sig.rate_direction is None:
        return ""
    return f" (trend {sig.rate_direction}, {sig.rate_change * 100:+.1f} points)"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the first column left-aligned, the others right."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return ("  " + "  ".join(parts)).rstrip()

    return [line(headers), "  " + "  ".join("-" * w for w in widths), *map(line, rows)]


def _share_rows(counts: Mapping[str, int]) -> list[list[str]]:
    total = sum(counts.values())
    return [[k, str(v), _pct(_ratio(v, total))] for k, v in counts.items()]


def _listed(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


_TEXT_CYCLES = 12


def _render_text(d: Dashboard) -> str:
    ev, rec, ttr, sig = d.fast_loop_events, d.reconciliation, d.time_to_resolution, d.signals
    days = d.window / timedelta(days=1)
    out = [
        f"syncrecon dashboard: {'sync ' + repr(d.sync) if d.sync else 'all syncs'},"
        f" {_when(d.window_start)} to {_when(d.window_end)} UTC ({days:g} days)",
        "",
        f"1. Fast-loop events: {ev.total}",
    ]
    if ev.rows:
        outcomes = list(ev.by_outcome)
        out += _table(
            ["source (direction)", "total", *outcomes],
            [
                [
                    f"{src} ({direction})",
                    str(sum(c.values())),
                    *(str(c.get(o, 0)) for o in outcomes),
                ]
                for (src, direction), c in sorted(ev.by_source_direction.items())
            ],
        )
    else:
        out.append("  (none)")
    if ev.rejected_by_reason:
        out.append(f"  rejected by reason: {_listed(ev.rejected_by_reason)}")

    modes = _listed(rec.cycles_by_mode)
    out += [
        "",
        f"2. Reconciliation: {_n(rec.cycles, 'cycle')}{f' ({modes})' if modes else ''},"
        f" {_n(rec.discrepancies_found, 'discrepancy', 'discrepancies')} found,"
        f" {_n(rec.new_discrepancies, 'new queue item')}",
    ]
    if rec.per_cycle:
        shown = rec.per_cycle[-_TEXT_CYCLES:]
        if len(rec.per_cycle) > len(shown):
            out.append(f"  the last {len(shown)} of {len(rec.per_cycle)} cycles:")
        out += _table(
            ["finished (UTC)", "mode", "found", "auto", "escalated", "auto rate"],
            [
                [
                    _when(c.finished_at),
                    c.mode + (" HALTED" if c.halted else ""),
                    str(c.discrepancies),
                    str(c.auto_resolved),
                    str(c.escalated),
                    _pct(c.auto_resolution_rate),
                ]
                for c in shown
            ],
        )

    if d.api_requests:
        out += ["  API requests by system and endpoint:"]
        out += _table(["system", "endpoint", "requests"], _request_rows(d.api_requests))
    out += ["", f"3. Auto-resolved by rule: {sum(d.auto_resolved.values())}"]
    out += (
        _table(["rule", "count", "share"], _share_rows(d.auto_resolved))
        if d.auto_resolved
        else ["  (none)"]
    )
    out += ["", f"4. Escalated to an operator by category: {sum(d.escalated.values())}"]
    out += (
        _table(["category", "count", "share"], _share_rows(d.escalated))
        if d.escalated
        else ["  (none)"]
    )

    out += [
        "",
        f"5. Time to resolution: {ttr.count} closed ({ttr.resolved} resolved,"
        f" {ttr.dismissed} dismissed); p50 {_dur(ttr.p50)}, p90 {_dur(ttr.p90)},"
        f" max {_dur(ttr.max)}",
    ]
    if ttr.count:
        top = max(b.count for b in ttr.histogram)
        out += _table(
            ["time", "count", ""],
            [[b.label, str(b.count), "#" * round(20 * b.count / top)] for b in ttr.histogram],
        )
    queue = _listed(ttr.queue_by_category)
    out.append(f"  queue depth: {ttr.queue_depth}{f' ({queue})' if queue else ''}")
    if ttr.oldest_open is not None:
        o = ttr.oldest_open
        out.append(
            f"  oldest open: #{o.id} {o.category or UNCATEGORIZED} {o.field!r}"
            f" of {o.left_key or o.right_key or '-'}, waiting {format_duration(o.age)}"
        )

    spiked = {s.start for s in sig.spikes if s.category is None}
    out += [
        "",
        "Signals",
        f"  auto-resolution rate: {_pct(sig.auto_resolution_rate)}{_trend_words(sig)}",
        *_table(
            ["bucket from (UTC)", "cycles", "found", "auto", "escalated", "auto rate", "spike"],
            [
                [
                    _when(b.start),
                    str(b.cycles),
                    str(b.discrepancies_found),
                    str(b.auto_resolved),
                    str(b.escalated),
                    _pct(b.auto_resolution_rate),
                    "SPIKE" if b.start in spiked else "",
                ]
                for b in sig.trend
            ],
        ),
    ]
    for s in sig.spikes:
        what = f"category {s.category!r}" if s.category else "all categories"
        out.append(
            f"  escalation spike from {_when(s.start)}: {s.count} ({what}),"
            f" median before {s.baseline:g}"
        )
    if not sig.spikes:
        out.append("  no escalation spike")
    out.append(f"  fast-loop outcomes: {_listed(sig.fast_loop_outcomes)}")
    return "\n".join(out) + "\n"


# -- HTML ---------------------------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _tag(name: str, content: str = "", /, **attributes: object) -> str:
    """An element; ``content`` is markup (escape text first), attribute values are escaped.

    ``class_`` is written ``class`` and other underscores become dashes (``text_anchor``).
    """
    written = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{_e(_f(v) if isinstance(v, float) else v)}"'
        for key, v in attributes.items()
    )
    return f"<{name}{written}>{content}</{name}>"


def _tip(text: str) -> str:
    """A tooltip for the enclosing SVG shape."""
    return _tag("title", _e(text))


_CSS = (
    ".sr-dash{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2433;"
    "max-width:1080px;margin:0 auto;padding:16px;line-height:1.4}"
    ".sr-dash h1{font-size:1.5em;margin:0 0 4px}"
    ".sr-dash h2{font-size:1.15em;margin:28px 0 8px;border-bottom:1px solid #d8dce3;"
    "padding-bottom:4px}"
    ".sr-dash .sub{color:#5b6475;margin:0 0 12px}"
    ".sr-dash .cards{display:flex;flex-wrap:wrap;gap:10px}"
    ".sr-dash .card{flex:1 1 140px;border:1px solid #d8dce3;border-radius:6px;padding:8px 12px;"
    "background:#f7f8fa}"
    ".sr-dash .card .n{font-size:1.6em;font-weight:600}"
    ".sr-dash .card .l{color:#5b6475;font-size:.85em}"
    ".sr-dash table{border-collapse:collapse;margin:8px 0;font-size:.9em}"
    ".sr-dash th,.sr-dash td{padding:3px 10px;border-bottom:1px solid #e6e9ee;text-align:right}"
    ".sr-dash th:first-child,.sr-dash td:first-child{text-align:left}"
    ".sr-dash th{background:#f0f2f5}"
    ".sr-dash svg.chart{width:100%;max-width:720px;height:auto;display:block;margin:8px 0}"
    ".sr-dash svg text{font-size:11px;fill:#3a4252}"
    ".sr-dash .axis{stroke:#9aa3b2;stroke-width:1}"
    ".sr-dash .grid{stroke:#e6e9ee;stroke-width:1}"
    ".sr-dash .bar{fill:#4c78a8}"
    ".sr-dash .bar.spike{fill:#e45756}"
    ".sr-dash .rate{fill:none;stroke:#f58518;stroke-width:2}"
    ".sr-dash .dot{fill:#f58518}"
    ".sr-dash .empty{fill:#f7f8fa}"
    ".sr-dash .warn{color:#b3261e;font-weight:600}"
    ".sr-dash .muted{color:#5b6475}"
)

_OUTCOME_COLORS = {
    "applied": "#4c78a8",
    "duplicate": "#9d9d9d",
    "stale": "#f58518",
    "echo": "#72b7b2",
    "rejected": "#e45756",
    "deferred": "#eeca3b",
    "ignored": "#b279a2",
}
_PALETTE = ("#54a24b", "#ff9da6", "#9d755d", "#bab0ac", "#439894", "#d67195")


def _colors(outcomes: Sequence[str]) -> dict[str, str]:
    """A fill per outcome: the known ones keep theirs, others take the palette in turn."""
    others = [o for o in outcomes if o not in _OUTCOME_COLORS]
    return {
        o: _OUTCOME_COLORS.get(o) or _PALETTE[others.index(o) % len(_PALETTE)] for o in outcomes
    }


def _nice(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (1 at least)."""
    if value <= 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def _f(value: float) -> str:
    return f"{value:.1f}"


def _svg(width: int, height: int, label: str, parts: Iterable[str]) -> str:
    return _tag(
        "svg",
        _tip(label) + "".join(parts),
        class_="chart",
        viewBox=f"0 0 {width} {height}",
        role="img",
        aria_label=label,
    )


def _empty(width: int, height: int, label: str, message: str) -> str:
    return _svg(
        width,
        height,
        label,
        [
            _tag("rect", class_="empty", x=0, y=0, width=width, height=height),
            _tag("text", _e(message), x=width / 2, y=height / 2, text_anchor="middle"),
        ],
    )


@attrs.frozen
class _Frame:
    """A chart's plot area in SVG units."""

    left: float
    right: float
    top: float
    bottom: float

    def y(self, fraction: float) -> float:
        return self.bottom - (self.bottom - self.top) * fraction

    def axes(self, top_value: float, *, rate_axis: bool = False) -> list[str]:
        """Grid lines with counts on the left (and 0-100 % on the right), and the two axes."""
        parts = []
        for i in range(5):
            y = self.y(i / 4)
            parts.append(_tag("line", class_="grid", x1=self.left, y1=y, x2=self.right, y2=y))
            count = top_value * i / 4
            if count == int(count):  # whole counts only: 0, 1, 2 of a top of 2; not 0.5
                label = str(int(count))
                parts.append(_tag("text", label, x=self.left - 4, y=y + 4, text_anchor="end"))
            if rate_axis:
                parts.append(_tag("text", f"{25 * i}%", x=self.right + 4, y=y + 4))
        parts.append(
            _tag("line", class_="axis", x1=self.left, y1=self.top, x2=self.left, y2=self.bottom)
        )
        parts.append(
            _tag("line", class_="axis", x1=self.left, y1=self.bottom, x2=self.right, y2=self.bottom)
        )
        return parts


def _legend(x: float, y: float, bar: str, rate: str) -> list[str]:
    return [
        _tag("rect", class_="bar", x=x, y=y, width=10, height=10),
        _tag("text", _e(bar), x=x + 14, y=y + 9),
        _tag("line", class_="rate", x1=x + 220, y1=y + 5, x2=x + 240, y2=y + 5),
        _tag("text", _e(rate), x=x + 244, y=y + 9),
    ]


def _histogram_svg(ttr: TimeToResolution) -> str:
    label = "Time to resolution of the escalations closed in the window"
    if not ttr.count:
        return _empty(640, 200, label, "no escalation was closed in this window")
    frame = _Frame(44, 630, 16, 200)
    top_value = _nice(max(b.count for b in ttr.histogram))
    parts = frame.axes(top_value)
    slot = (frame.right - frame.left) / len(ttr.histogram)
    for i, b in enumerate(ttr.histogram):
        y = frame.y(b.count / top_value)
        x = frame.left + i * slot
        parts.append(
            _tag(
                "rect",
                _tip(f"{b.label}: {b.count}"),
                class_="bar",
                x=x + slot * 0.15,
                y=y,
                width=slot * 0.7,
                height=frame.bottom - y,
            )
        )
        middle = x + slot / 2
        parts.append(_tag("text", _e(b.label), x=middle, y=frame.bottom + 16, text_anchor="middle"))
        if b.count:
            parts.append(_tag("text", str(b.count), x=middle, y=y - 4, text_anchor="middle"))
    parts.append(_tag("text", "time from detection to close", x=337.0, y=234, text_anchor="middle"))
    return _svg(640, 240, label, parts)


def _cycles_svg(d: Dashboard) -> str:
    label = "Discrepancies found and auto-resolution rate per cycle"
    points = d.reconciliation.per_cycle
    if not points:
        return _empty(640, 200, label, "no reconciliation cycle finished in this window")
    frame = _Frame(44, 596, 16, 210)
    top_value = _nice(max(p.discrepancies for p in points))
    parts = frame.axes(top_value, rate_axis=True)
    span = (d.window_end - d.window_start).total_seconds()
    bar_w = max(1.0, min(10.0, (frame.right - frame.left) / len(points) * 0.6))
    line: list[str] = []
    for p in points:
        at = (p.finished_at - d.window_start).total_seconds() / span
        x = frame.left + (frame.right - frame.left) * min(1.0, max(0.0, at))
        y = frame.y(p.discrepancies / top_value)
        tip = _tip(
            f"{_when(p.finished_at)} {p.mode}: {p.discrepancies} found, {p.auto_resolved}"
            f" auto-resolved, {p.escalated} escalated, rate {_pct(p.auto_resolution_rate)}"
        )
        parts.append(
            _tag(
                "rect",
                tip,
                class_="bar",
                x=x - bar_w / 2,
                y=y,
                width=bar_w,
                height=frame.bottom - y,
            )
        )
        if p.auto_resolution_rate is not None:
            ry = frame.y(min(1.0, p.auto_resolution_rate))
            line.append(f"{_f(x)},{_f(ry)}")
            if len(points) <= 100:
                parts.append(_tag("circle", tip, class_="dot", cx=x, cy=ry, r=2.5))
    if len(line) > 1:
        parts.append(_tag("polyline", class_="rate", points=" ".join(line)))
    parts.append(_tag("text", _e(_when(d.window_start)), x=frame.left, y=frame.bottom + 16))
    parts.append(
        _tag(
            "text",
            _e(_when(d.window_end)),
            x=frame.right,
            y=frame.bottom + 16,
            text_anchor="end",
        )
    )
    parts += _legend(frame.left, 238, "discrepancies found (left axis)", "auto-resolution rate")
    return _svg(640, 256, label, parts)


def _events_svg(ev: FastLoopEvents) -> str:
    label = "Fast-loop events by source, direction and outcome"
    grid = sorted(ev.by_source_direction.items())
    if not grid:
        return _empty(640, 100, label, "no fast-loop events in this window")
    row_h, left, right, top = 26, 220, 590, 10
    outcomes = list(ev.by_outcome)
    colors = _colors(outcomes)
    bottom = top + row_h * len(grid)
    height = bottom + 14 + 18 * math.ceil(len(outcomes) / 4)
    top_value = _nice(max(sum(c.values()) for _, c in grid))
    parts: list[str] = []
    for i, ((src, direction), counts) in enumerate(grid):
        y = top + i * row_h
        name = f"{src} ({direction})"
        parts.append(_tag("text", _e(name), x=left - 6, y=y + 15, text_anchor="end"))
        x = float(left)
        for outcome in outcomes:
            n = counts.get(outcome, 0)
            if n:
                width = (right - left) * n / top_value
                parts.append(
                    _tag(
                        "rect",
                        _tip(f"{name} {outcome}: {n}"),
                        x=x,
                        y=y + 3,
                        width=width,
                        height=row_h - 8,
                        fill=colors[outcome],
                    )
                )
                x += width
        parts.append(_tag("text", str(sum(counts.values())), x=x + 4, y=y + 15))
    parts.append(_tag("line", class_="axis", x1=left, y1=top, x2=left, y2=bottom))
    for i, outcome in enumerate(outcomes):
        lx, ly = 20 + (i % 4) * 150, bottom + 8 + (i // 4) * 18
        parts.append(_tag("rect", x=lx, y=ly, width=10, height=10, fill=colors[outcome]))
        parts.append(_tag("text", _e(outcome), x=lx + 14, y=ly + 9))
    return _svg(640, height, label, parts)


def _trend_svg(sig: Signals) -> str:
    label = "Escalations and auto-resolution rate per bucket"
    trend = sig.trend
    frame = _Frame(44, 596, 16, 200)
    top_value = _nice(max(b.escalated for b in trend))
    parts = frame.axes(top_value, rate_axis=True)
    spiked = {s.start for s in sig.spikes if s.category is None}
    slot = (frame.right - frame.left) / len(trend)
    line = []
    for i, b in enumerate(trend):
        y = frame.y(b.escalated / top_value)
        middle = frame.left + (i + 0.5) * slot
        tip = _tip(
            f"{_when(b.start)} to {_when(b.end)}: {b.escalated} escalated, {b.auto_resolved}"
            f" auto-resolved, rate {_pct(b.auto_resolution_rate)}"
            + (" (spike)" if b.start in spiked else "")
        )
        parts.append(
            _tag(
                "rect",
                tip,
                class_="bar spike" if b.start in spiked else "bar",
                x=middle - slot * 0.3,
                y=y,
                width=slot * 0.6,
                height=frame.bottom - y,
            )
        )
        day = _e(b.start.strftime("%m-%d"))
        parts.append(_tag("text", day, x=middle, y=frame.bottom + 16, text_anchor="middle"))
        if b.auto_resolution_rate is not None:
            ry = frame.y(min(1.0, b.auto_resolution_rate))
            line.append(f"{_f(middle)},{_f(ry)}")
            parts.append(_tag("circle", tip, class_="dot", cx=middle, cy=ry, r=3.0))
    if len(line) > 1:
        parts.append(_tag("polyline", class_="rate", points=" ".join(line)))
    parts += _legend(frame.left, 224, "escalations (red: a spike)", "auto-resolution rate")
    return _svg(640, 242, label, parts)


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(_tag("th", _e(h)) for h in headers)
    body = "".join(_tag("tr", "".join(_tag("td", _e(c)) for c in row)) for row in rows)
    return _tag("table", _tag("thead", _tag("tr", head)) + _tag("tbody", body))


def _card(value: object, text: str) -> str:
    return _tag(
        "div", _tag("div", _e(value), class_="n") + _tag("div", _e(text), class_="l"), class_="card"
    )


def _render_html(d: Dashboard) -> str:
    ev, rec, ttr, sig = d.fast_loop_events, d.reconciliation, d.time_to_resolution, d.signals
    days = d.window / timedelta(days=1)
    scope = f"sync {d.sync}" if d.sync else "all syncs"
    out = [
        '<div class="sr-dash">',
        _tag("h1", "syncrecon dashboard"),
        _tag(
            "p",
            _e(f"{scope}: {_when(d.window_start)} to {_when(d.window_end)} UTC ({days:g} days)"),
            class_="sub",
        ),
        _tag(
            "div",
            _card(ev.total, "fast-loop events")
            + _card(rec.cycles, "reconciliation cycles")
            + _card(rec.discrepancies_found, "discrepancies found")
            + _card(sum(d.auto_resolved.values()), "auto-resolved")
            + _card(sum(d.escalated.values()), "escalated to an operator")
            + _card(_dur(ttr.p50), "median time to resolution")
            + _card(ttr.queue_depth, "waiting in the queue")
            + _card(_pct(sig.auto_resolution_rate), "auto-resolution rate"),
            class_="cards",
        ),
        _tag("h2", "1. Fast-loop events by source and direction"),
        _events_svg(ev),
    ]
    if ev.rows:
        outcomes = list(ev.by_outcome)
        out.append(
            _html_table(
                ["source", "direction", "total", *outcomes],
                [
                    [src, direction, sum(c.values()), *(c.get(o, 0) for o in outcomes)]
                    for (src, direction), c in sorted(ev.by_source_direction.items())
                ],
            )
        )
    if ev.rejected_by_reason:
        out.append(_html_table(["rejected because", "events"], list(ev.rejected_by_reason.items())))

    modes = ", ".join(f"{k} {v}" for k, v in rec.cycles_by_mode.items())
    out += [
        _tag("h2", "2. Reconciliation cycles and discrepancies"),
        _tag(
            "p",
            _e(
                f"{_n(rec.cycles, 'cycle')}{f' ({modes})' if modes else ''} found"
                f" {_n(rec.discrepancies_found, 'discrepancy', 'discrepancies')};"
                f" {_n(rec.new_discrepancies, 'new queue item')}. "
            )
            + _tag(
                "span",
                "A discrepancy that waits for an operator is found again by every cycle.",
                class_="muted",
            ),
        ),
        _cycles_svg(d),
        _html_table(["system", "endpoint", "API requests"], _request_rows(d.api_requests))
        if d.api_requests
        else "",
        _tag("h2", "3. Auto-resolved by rule"),
        _html_table(["rule", "count", "share"], _share_rows(d.auto_resolved))
        if d.auto_resolved
        else _tag("p", "none", class_="muted"),
        _tag("h2", "4. Escalated to an operator by category"),
        _html_table(["category", "count", "share"], _share_rows(d.escalated))
        if d.escalated
        else _tag("p", "none", class_="muted"),
        _tag("h2", "5. Time to resolution of the operator queue"),
        _tag(
            "p",
            _e(
                f"{ttr.count} closed ({ttr.resolved} resolved, {ttr.dismissed} dismissed):"
                f" p50 {_dur(ttr.p50)}, p90 {_dur(ttr.p90)}, max {_dur(ttr.max)}"
                " (nearest rank)."
            ),
        ),
        _histogram_svg(ttr),
        _tag("p", _e(f"Queue depth: {ttr.queue_depth}.")),
    ]
    if ttr.queue_by_category:
        out.append(_html_table(["waiting: category", "items"], list(ttr.queue_by_category.items())))
    if ttr.oldest_open is not None:
        o = ttr.oldest_open
        out.append(
            _tag(
                "p",
                _e(f"Oldest open item: #{o.id} ({o.category or UNCATEGORIZED}), field ")
                + _tag("code", _e(o.field))
                + " of "
                + _tag("code", _e(o.left_key or o.right_key or "-"))
                + _e(f", waiting {format_duration(o.age)} since {_when(o.detected_at)} UTC."),
            )
        )

    out += [
        _tag("h2", "Signals"),
        _tag(
            "p",
            "Auto-resolution rate: "
            + _tag("strong", _e(_pct(sig.auto_resolution_rate)))
            + _e(_trend_words(sig))
            + ".",
        ),
        _trend_svg(sig),
    ]
    if sig.spikes:
        out.append(
            _tag(
                "p",
                _e(
                    f"Escalation spikes (at least {sig.spike_min} and over"
                    f" {sig.spike_factor:g}x the median of the earlier buckets):"
                ),
                class_="warn",
            )
        )
        out.append(
            _html_table(
                ["from (UTC)", "category", "escalations", "median before"],
                [
                    [_when(s.start), s.category or "all", s.count, f"{s.baseline:g}"]
                    for s in sig.spikes
                ],
            )
        )
    else:
        out.append(_tag("p", "No escalation spike."))
    out.append(_html_table(["fast-loop outcome", "events"], list(sig.fast_loop_outcomes.items())))
    out.append("</div>")
    return "\n".join(out)


# -- the command line ---------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _instant(text: str) -> datetime:
    try:
        return utc(datetime.fromisoformat(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc


def register_cli(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``dashboard`` command to a command line's subparsers; return its parser."""
    parser = subparsers.add_parser(
        "dashboard",
        help="the five-number dashboard of a database",
        description="Print the dashboard of a syncrecon SQLite database (or write it as HTML).",
    )
    parser.add_argument("--db", required=True, metavar="PATH", help="the SQLite database")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--html", metavar="FILE", help="write a self-contained HTML page")
    parser.add_argument("--sync", help="only this sync (default: every sync)")
    parser.add_argument(
        "--days", type=_positive_int, default=7, metavar="N", help="the window (default: 7)"
    )
    parser.add_argument(
        "--until", type=_instant, metavar="TIME", help="the window's end (ISO 8601; default: now)"
    )
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Run ``dashboard``: print the table, or ``--json``; ``--html FILE`` writes the page.

    Returns the exit status: 0, or 2 when the database does not exist or cannot be read.
    """
    from .storage.sqlite import SQLiteStorage

    path = Path(args.db)
    if not path.is_file():
        print(f"syncrecon dashboard: no database at {path}", file=sys.stderr)
        return 2
    storage = SQLiteStorage(path)
    try:
        board = build_dashboard(
            storage,
            now=getattr(args, "until", None),
            window=timedelta(days=args.days),
            sync=args.sync,
        )
    except SyncReconError as exc:
        print(f"syncrecon dashboard: {exc}", file=sys.stderr)
        return 2
    finally:
        storage.close()
    if args.html:
        Path(args.html).write_text(board.to_html(), encoding="utf-8")
        print(f"dashboard written to {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps(board.to_dict(), indent=2))
    elif not args.html:
        print(board.to_text(), end="")
    return 0
