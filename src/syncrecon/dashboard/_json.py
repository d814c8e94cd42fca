"""The dashboard as one JSON-ready dictionary (:meth:`Dashboard.to_dict`)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ._model import CyclePoint, Dashboard, OpenItem


def render_dict(d: Dashboard) -> dict[str, Any]:
    """The JSON-ready dictionary of ``d``: times in ISO 8601, durations in seconds, rates 0..1."""
    ev, rec, ttr, sig = (
        d.fast_loop_events,
        d.reconciliation,
        d.time_to_resolution,
        d.signals,
    )
    return {
        "window": {
            "start": d.window_start.isoformat(),
            "end": d.window_end.isoformat(),
            "seconds": d.window.total_seconds(),
            "bucket_seconds": d.bucket.total_seconds(),
            "sync": d.sync,
            "generated_at": d.generated_at.isoformat(),
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
            "total": sum(d.auto_resolved.values()),
            "by_rule": dict(d.auto_resolved),
        },
        "escalated": {
            "total": sum(d.escalated.values()),
            "by_category": dict(d.escalated),
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
        "api_requests": {system: dict(n) for system, n in d.api_requests.items()},
        "triage": {source: dict(n) for source, n in d.triage.items()},
    }


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
