"""The dashboard as a plain-text report (:meth:`Dashboard.to_text`): tables, then the signals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from ._format import (
    AUTO_RESOLVED_NOTE,
    PER_CYCLE_COLUMNS,
    PER_CYCLE_NOTE,
    SIGNALS_UNIT,
    TREND_COLUMNS,
    _dur,
    _listed,
    _n,
    _new_items_words,
    _pct,
    _request_rows,
    _share_rows,
    _trend_words,
    _waiting_words,
    _when,
    format_duration,
)
from ._model import UNCATEGORIZED

if TYPE_CHECKING:
    from ._model import Dashboard, FastLoopEvents, Signals, TimeToResolution

_TEXT_CYCLES = 12
"""The text shows at most this many of the window's cycles, the newest."""


def render_text(d: Dashboard) -> str:
    """The five numbers as tables, then the signals; ends with a newline."""
    days = d.window / timedelta(days=1)
    out = [
        f"syncrecon dashboard: {'sync ' + repr(d.sync) if d.sync else 'all syncs'},"
        f" {_when(d.window_start)} to {_when(d.window_end)} UTC ({days:g} days)",
        "",
        *_fast_loop_events(d.fast_loop_events),
        "",
        *_reconciliation(d),
        "",
        *_shares(
            f"3. Auto-resolved by rule: {sum(d.auto_resolved.values())}",
            "rule",
            d.auto_resolved,
            note=AUTO_RESOLVED_NOTE,
        ),
        "",
        *_shares(
            f"4. Escalated to an operator by category: {sum(d.escalated.values())}",
            "category",
            d.escalated,
        ),
        *_triage_lines(d),
        "",
        *_time_to_resolution(d.time_to_resolution),
        "",
        *_signals(d.signals),
    ]
    return "\n".join(out) + "\n"


def _triage_lines(d: Dashboard) -> list[str]:
    """How often the triage's suggestions were taken (nothing when none was shown)."""
    return [
        f"  Triage suggestions ({source}): {c['shown']} shown, {c['taken']} taken"
        + (f" ({c['taken'] / c['shown']:.0%})" if c["shown"] else "")
        for source, c in d.triage.items()
    ]


def _fast_loop_events(ev: FastLoopEvents) -> list[str]:
    out = [f"1. Fast-loop events: {ev.total}"]
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
    return out


def _reconciliation(d: Dashboard) -> list[str]:
    rec, api_requests = d.reconciliation, d.api_requests
    modes = _listed(rec.cycles_by_mode)
    out = [
        f"2. Reconciliation: {_n(rec.cycles, 'cycle')}{f' ({modes})' if modes else ''},"
        f" {_n(rec.discrepancies_found, 'discrepancy', 'discrepancies')} found"
        " (one that waits is counted by every cycle)",
        f"  {_new_items_words(rec.new_discrepancies, sum(d.escalated.values()), d.window)}",
    ]
    if rec.per_cycle:
        shown = rec.per_cycle[-_TEXT_CYCLES:]
        out.append(f"  {PER_CYCLE_NOTE}")
        if len(rec.per_cycle) > len(shown):
            out.append(f"  the last {len(shown)} of {len(rec.per_cycle)} cycles:")
        out += _table(
            list(PER_CYCLE_COLUMNS),
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
    if api_requests:
        out += ["  API requests by system and endpoint:"]
        out += _table(["system", "endpoint", "requests"], _request_rows(api_requests))
    return out


def _shares(title: str, name: str, counts: Mapping[str, int], note: str = "") -> list[str]:
    """Numbers 3 and 4: a count per rule or category, with its share."""
    if not counts:
        return [title, "  (none)"]
    return [
        title,
        *([f"  {note}"] if note else []),
        *_table([name, "count", "share"], _share_rows(counts)),
    ]


def _time_to_resolution(ttr: TimeToResolution) -> list[str]:
    out = [
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
    out.append(f"  queue: {_waiting_words(ttr.queue_depth)}{f' ({queue})' if queue else ''}")
    if ttr.oldest_open is not None:
        o = ttr.oldest_open
        out.append(
            f"  oldest open: #{o.id} {o.category or UNCATEGORIZED} {o.field!r}"
            f" of {o.left_key or o.right_key or '-'}, waiting {format_duration(o.age)}"
        )
    return out


def _signals(sig: Signals) -> list[str]:
    spiked = {s.start for s in sig.spikes if s.category is None}
    out = [
        f"Signals ({SIGNALS_UNIT})",
        f"  auto-resolution rate: {_pct(sig.auto_resolution_rate)}{_trend_words(sig)}",
        *_table(
            list(TREND_COLUMNS),
            [
                [
                    _when(b.start),
                    str(b.cycles),
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
    return out


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
