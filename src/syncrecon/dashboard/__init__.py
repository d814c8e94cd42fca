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

And the signals they exist for (:class:`Signals`), counting each discrepancy once: the
auto-resolution rate ``auto_resolved / (auto_resolved + escalated)`` (numbers 3 and 4) and its
trend over equal buckets (weekly by default), escalation spikes (a bucket whose escalations
are at least ``spike_min`` and more than ``spike_factor`` times the median of the earlier
buckets), and the fast loop's duplicates, stale events, echoes and rejections.

Counters have hourly resolution, so the window's start (and every bucket edge) is rounded *up*
to the hour: an hour of counts belongs to the window its first instant falls in, and counts and
timestamps agree exactly. Counters without a ``sync`` label (the fast loop's) are not filtered
by ``sync``.

Renderings: :meth:`Dashboard.to_text`, :meth:`Dashboard.to_dict` (JSON-ready),
:meth:`Dashboard.to_html` (one self-contained page: inline CSS and SVG, no script, nothing
loaded from anywhere) and ``_repr_html_`` for notebooks. ``python -m syncrecon dashboard --db
PATH`` prints the table.
"""

from __future__ import annotations

from ._build import build_dashboard
from ._format import format_duration
from ._model import (
    FAST_LOOP_SIGNALS,
    RATE_FLAT,
    TTR_EDGES,
    UNCATEGORIZED,
    CyclePoint,
    Dashboard,
    EventCount,
    FastLoopEvents,
    HistogramBin,
    OpenItem,
    Reconciliation,
    Signals,
    Spike,
    TimeToResolution,
    TrendBucket,
)
from ._stats import nearest_rank

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
]
