"""Building the dashboard: :func:`build_dashboard` reads the five numbers and derives the signals.

It checks its arguments, reads each number (:mod:`._queries`), splits the escalations into the
trend's buckets and finds the spikes and the rate's trend in them.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from .._clock import utc
from .._exceptions import ConfigurationError
from ..storage._base import Storage
from ._model import (
    FAST_LOOP_SIGNALS,
    RATE_FLAT,
    Dashboard,
    Reconciliation,
    Signals,
    Spike,
    TrendBucket,
)
from ._queries import (
    _HOUR,
    _api_requests,
    _ceil_hour,
    _counters,
    _cycles_between,
    _detected_since,
    _fast_loop,
    _group,
    _point,
    _queue,
    _sum,
    _tally,
    _triage,
    _went_to_operator,
)
from ._stats import _rate, _spikes_in


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
        triage=_triage(storage, start, end, sync),
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


def _at_least_an_hour(name: str, value: timedelta) -> None:
    if value < _HOUR:
        raise ConfigurationError(f"{name} must be at least one hour, got {value}")


def _edges(now: datetime, bucket: timedelta, count: int) -> list[datetime]:
    """``count + 1`` bucket edges, oldest first: the last is ``now``, the others on the hour."""
    return [_ceil_hour(now - k * bucket) for k in range(count, 0, -1)] + [now]


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
