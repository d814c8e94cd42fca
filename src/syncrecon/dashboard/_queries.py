"""Reading storage for the dashboard: counters, cycle reports and the operator queue.

Everything here only reads. Counters come as totals per label set over ``[since, until)``
(hourly resolution). Queue items come newest first, a page at a time by keyset (the last
item's detection time and id), never by ``OFFSET``: a page costs the same however much history
lies before it. Closed items are read only when closed in the window or later
(``resolved_since``), and reading items detected since a time stops at the first older page.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from ..storage._base import CycleRecord, Discrepancy, Status, Storage
from ._model import (
    TTR_EDGES,
    UNCATEGORIZED,
    CyclePoint,
    EventCount,
    FastLoopEvents,
    HistogramBin,
    OpenItem,
    TimeToResolution,
)
from ._stats import _bin_counts, _ranked

_HOUR = timedelta(hours=1)
_PAGE = 1000
_OPERATOR_STATUSES = (Status.ESCALATED, Status.RESOLVED, Status.DISMISSED)
_CLOSED_STATUSES = (Status.RESOLVED, Status.DISMISSED)


def _ceil_hour(value: datetime) -> datetime:
    floor = value.replace(minute=0, second=0, microsecond=0)
    return floor if floor == value else floor + _HOUR


# -- counters -----------------------------------------------------------------------------------


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


def _sum(rows: Iterable[tuple[Mapping[str, str], int]]) -> int:
    return sum(n for _, n in rows)


def _group(rows: Iterable[tuple[Mapping[str, str], int]], label: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for labels, n in rows:
        key = labels.get(label, "")
        out[key] = out.get(key, 0) + n
    return _ranked(out)


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


def _api_requests(
    storage: Storage, start: datetime, end: datetime, sync: str | None
) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for labels, n in _counters(storage, "api_requests", start, end, sync):
        by_endpoint = out.setdefault(labels.get("system", ""), {})
        endpoint = labels.get("endpoint", "calls")
        by_endpoint[endpoint] = by_endpoint.get(endpoint, 0) + n
    return {system: dict(sorted(e.items())) for system, e in sorted(out.items())}


def _triage(
    storage: Storage, start: datetime, end: datetime, sync: str | None
) -> dict[str, dict[str, int]]:
    """Triage suggestions shown to operators and taken by them, by the triage's source."""
    out: dict[str, dict[str, int]] = {}
    for what in ("shown", "taken"):
        for labels, n in _counters(storage, f"triage_suggestions_{what}", start, end, sync):
            counts = out.setdefault(labels.get("source", ""), {"shown": 0, "taken": 0})
            counts[what] += n
    return dict(sorted(out.items()))


# -- cycle reports ------------------------------------------------------------------------------


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


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _total(value: Any) -> int:
    if isinstance(value, Mapping):
        return sum(_int(v) for v in value.values())
    return _int(value)


# -- the operator queue -------------------------------------------------------------------------


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


def _histogram(
    durations: Sequence[timedelta], edges: Sequence[timedelta]
) -> tuple[HistogramBin, ...]:
    lows = [timedelta(0), *edges]
    highs: list[timedelta | None] = [*edges, None]
    return tuple(
        HistogramBin(low=low, high=high, count=n)
        for low, high, n in zip(lows, highs, _bin_counts(durations, edges), strict=True)
    )


def _detected_since(storage: Storage, sync: str | None, since: datetime) -> list[Discrepancy]:
    """Every queue item detected at or after ``since`` (paging stops at the first older one)."""
    found: list[Discrepancy] = []
    for page in _pages(storage, sync=sync):
        found.extend(i for i in page if i.detected_at >= since)
        if page and page[-1].detected_at < since:
            break
    return found


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


def _went_to_operator(item: Discrepancy) -> bool:
    return item.status in _OPERATOR_STATUSES


def _tally(items: Iterable[Discrepancy]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[_category(item)] = out.get(_category(item), 0) + 1
    return _ranked(out)


def _category(item: Discrepancy) -> str:
    return item.category or UNCATEGORIZED
