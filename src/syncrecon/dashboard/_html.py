"""The dashboard as HTML (:meth:`Dashboard.to_html`): one self-contained page.

The page has inline CSS and SVG charts, no script, and loads nothing from anywhere. A notebook
shows the same content and style without the ``<html>`` around it (``Dashboard._repr_html_``).
Every text and attribute value is escaped (:func:`_tag`).

Served inside the operator queue's web pages (:class:`syncrecon.web.QueueApp`), the page gets
``queue_url`` (the queue's mount point): a way back to the queue, and links from the waiting
items to their pages. Narrow screens (a phone, 400 px) stack the wide tables and let a chart
scroll sideways in its box rather than shrink its text below 10 px.
"""

from __future__ import annotations

import html
import math
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import attrs

from ._format import (
    AUTO_RESOLVED_NOTE,
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
    _window_words,
    format_duration,
)
from ._model import UNCATEGORIZED

if TYPE_CHECKING:
    from ._model import CyclePoint, Dashboard, FastLoopEvents, Signals, TimeToResolution


def render_page(d: Dashboard, *, queue_url: str | None = None) -> str:
    """The whole page: ``<!DOCTYPE html>``, the style in ``<head>``, the dashboard in ``<body>``.

    ``queue_url`` is where the operator queue's pages are served (``""`` at the root,
    ``"/ops/queue"`` under a prefix): the page then links back to the queue and to the items
    it names. Without it the page links nowhere (it may be a file sent by mail).
    """
    title = "syncrecon dashboard" + (f": {d.sync}" if d.sync else "")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{_render_html(d, queue_url)}\n</body>\n</html>\n"
    )


def render_fragment(d: Dashboard) -> str:
    """The page's style and content without ``<html>``, for a notebook cell."""
    return f"<style>{_CSS}</style>\n{_render_html(d)}"


_CSS = (
    ".sr-dash{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2433;"
    "max-width:1080px;margin:0 auto;padding:16px;line-height:1.4}"
    ".sr-dash h1{font-size:1.5em;margin:0 0 4px}"
    ".sr-dash h2{font-size:1.15em;margin:28px 0 8px;border-bottom:1px solid #d8dce3;"
    "padding-bottom:4px}"
    ".sr-dash .sub{color:#5b6475;margin:0 0 12px}"
    ".sr-dash .cards{display:flex;flex-wrap:wrap;gap:10px}"
    ".sr-dash .card{flex:1 1 220px;border:1px solid #d8dce3;border-radius:6px;padding:8px 12px;"
    "background:#f7f8fa}"
    ".sr-dash .card .n{font-size:1.6em;font-weight:600}"
    ".sr-dash .card .l{color:#5b6475;font-size:.85em}"
    ".sr-dash table{border-collapse:collapse;margin:8px 0;font-size:.9em}"
    ".sr-dash th,.sr-dash td{padding:3px 10px;border-bottom:1px solid #e6e9ee;text-align:right;"
    "overflow-wrap:anywhere}"
    ".sr-dash th:first-child,.sr-dash td:first-child{text-align:left}"
    ".sr-dash th{background:#f0f2f5}"
    ".sr-dash nav.sr-nav{margin:0 0 12px}"
    ".sr-dash nav.sr-nav a{margin-right:16px}"
    ".sr-dash a{color:#0b57d0}"
    ".sr-dash .card a{color:inherit}"
    ".sr-dash .chart-box{max-width:720px}"
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
    # A phone: wide tables become one block per row, a chart keeps its text at 10 px or more
    # and scrolls sideways in its box instead of shrinking (the page itself never does).
    "@media (max-width:600px){"
    ".sr-dash{padding:10px}"
    ".sr-dash .card{flex:1 1 120px}"
    ".sr-dash table.stack,.sr-dash table.stack tbody,.sr-dash table.stack tr,"
    ".sr-dash table.stack td{display:block}"
    ".sr-dash table.stack thead{display:none}"
    ".sr-dash table.stack tr{border:1px solid #d8dce3;border-radius:6px;margin:6px 0;"
    "padding:4px 0}"
    ".sr-dash table.stack td,.sr-dash table.stack td:first-child{border:0;text-align:left;"
    "padding:1px 10px}"
    ".sr-dash table.stack td::before{content:attr(data-label) ': ';color:#5b6475}"
    ".sr-dash .chart-box{overflow-x:auto}"
    ".sr-dash svg.chart{min-width:600px}"
    "}"
)


# -- the content --------------------------------------------------------------------------------


class _Queue:
    """Links into the operator queue's pages, when the dashboard is served with them."""

    def __init__(self, url: str | None) -> None:
        self.url = None if url is None else url.rstrip("/")

    def link(self, path: str, content: str, **query: str) -> str:
        """``content`` (markup) as a link to ``path`` in the queue, or as it is without one."""
        if self.url is None:
            return content
        href = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        return _tag("a", content, href=href)

    def waiting(self, content: str, category: str | None = None) -> str:
        """A link to the escalated items (of ``category``): the ones the dashboard counts."""
        query = {"status": "escalated"}
        if category is not None:
            query["category"] = category
        return self.link("/", content, **query)


def _render_html(d: Dashboard, queue_url: str | None = None) -> str:
    """The dashboard's content: a title, the headline cards, a section per number, the signals."""
    queue = _Queue(queue_url)
    out = [
        '<div class="sr-dash">',
        *_nav(queue),
        *_heading(d, queue),
        *_fast_loop_events(d.fast_loop_events),
        *_reconciliation(d, queue),
        *_shares("3. Auto-resolved by rule", "rule", d.auto_resolved, note=AUTO_RESOLVED_NOTE),
        *_shares("4. Escalated to an operator by category", "category", d.escalated),
        *_triage_html(d),
        *_time_to_resolution(d.time_to_resolution, queue),
        *_signals(d.signals),
        "</div>",
    ]
    return "\n".join(out)


def _triage_html(d: Dashboard) -> list[str]:
    """How often the triage's suggestions were taken, under number 4 (nothing when none)."""
    if not d.triage:
        return []
    rows = [
        [source, c["shown"], c["taken"], f"{c['taken'] / c['shown']:.0%}" if c["shown"] else "-"]
        for source, c in d.triage.items()
    ]
    return [
        _tag("p", "Triage suggestions, shown to operators and taken by them:"),
        _html_table(["source", "shown", "taken", "taken share"], rows),
    ]


def _nav(queue: _Queue) -> list[str]:
    if queue.url is None:
        return []
    return [
        _tag(
            "nav",
            queue.link("/", "&larr; Operator queue") + queue.waiting(_e("Waiting for an operator")),
            class_="sr-nav",
        )
    ]


def _heading(d: Dashboard, queue: _Queue) -> list[str]:
    ev, rec, ttr, sig = d.fast_loop_events, d.reconciliation, d.time_to_resolution, d.signals
    days = d.window / timedelta(days=1)
    scope = f"sync {d.sync}" if d.sync else "all syncs"
    period = _window_words(d.window)
    return [
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
            + _card(rec.new_discrepancies, f"new queue items {period}")
            + _card(ttr.queue_depth, "waiting for an operator now", queue.waiting)
            + _card(_dur(ttr.p50), "median time to resolution")
            # The rate and the two numbers it divides, each discrepancy counted once.
            + _card(
                sum(d.auto_resolved.values()),
                f"auto-resolved by rules {period} (records created included)",
            )
            + _card(sum(d.escalated.values()), f"sent to an operator {period}")
            + _card(_pct(sig.auto_resolution_rate), "auto-resolution rate"),
            class_="cards",
        ),
    ]


def _fast_loop_events(ev: FastLoopEvents) -> list[str]:
    out = [_tag("h2", "1. Fast-loop events by source and direction"), _events_svg(ev)]
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
    return out


def _reconciliation(d: Dashboard, queue: _Queue) -> list[str]:
    rec = d.reconciliation
    modes = _listed(rec.cycles_by_mode)
    depth = d.time_to_resolution.queue_depth
    return [
        _tag("h2", "2. Reconciliation cycles and discrepancies"),
        _tag(
            "p",
            _e(
                f"{_n(rec.cycles, 'cycle')}{f' ({modes})' if modes else ''} found"
                f" {_n(rec.discrepancies_found, 'discrepancy', 'discrepancies')}. "
            )
            + _tag(
                "span",
                _e(PER_CYCLE_NOTE[:1].upper() + PER_CYCLE_NOTE[1:] + "."),
                class_="muted",
            ),
        ),
        _tag(
            "p",
            _tag(
                "strong",
                _e(_new_items_words(rec.new_discrepancies, sum(d.escalated.values()), d.window)),
            )
            + "; "
            + queue.waiting(_e(_waiting_words(depth)))
            + ".",
        ),
        _cycles_svg(d),
        _cycles_span_words(d.reconciliation.per_cycle),
        _html_table(["system", "endpoint", "API requests"], _request_rows(d.api_requests))
        if d.api_requests
        else "",
    ]


def _shares(title: str, name: str, counts: Mapping[str, int], note: str = "") -> list[str]:
    """Numbers 3 and 4: a count per rule or category, with its share."""
    if not counts:
        return [_tag("h2", title), _tag("p", "none", class_="muted")]
    return [
        _tag("h2", title),
        *([_tag("p", _e(note[:1].upper() + note[1:] + "."), class_="muted")] if note else []),
        _html_table([name, "count", "share"], _share_rows(counts)),
    ]


def _time_to_resolution(ttr: TimeToResolution, queue: _Queue) -> list[str]:
    out = [
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
        _tag("p", "Queue: " + queue.waiting(_e(_waiting_words(ttr.queue_depth))) + "."),
    ]
    if ttr.queue_by_category:
        out.append(
            _html_table(
                ["waiting: category", "items"],
                [
                    [_Markup(queue.waiting(_e(c), category=c)), n]
                    for c, n in ttr.queue_by_category.items()
                ],
            )
        )
    if ttr.oldest_open is not None:
        o = ttr.oldest_open
        name = _e(f"#{o.id}") if o.id is None else queue.link(f"/items/{o.id}", _e(f"#{o.id}"))
        out.append(
            _tag(
                "p",
                "Oldest open item: "
                + name
                + _e(f" ({o.category or UNCATEGORIZED}), field ")
                + _tag("code", _e(o.field))
                + " of "
                + _tag("code", _e(o.left_key or o.right_key or "-"))
                + _e(f", waiting {format_duration(o.age)} since {_when(o.detected_at)} UTC."),
            )
        )
    return out


def _signals(sig: Signals) -> list[str]:
    spiked = {s.start for s in sig.spikes if s.category is None}
    out = [
        _tag("h2", "Signals"),
        _tag(
            "p",
            "Auto-resolution rate: "
            + _tag("strong", _e(_pct(sig.auto_resolution_rate)))
            + _e(_trend_words(sig))
            + ". "
            + _tag("span", _e(SIGNALS_UNIT[:1].upper() + SIGNALS_UNIT[1:] + "."), class_="muted"),
        ),
        _trend_svg(sig),
        _html_table(
            TREND_COLUMNS,
            [
                [
                    _when(b.start),
                    b.cycles,
                    b.auto_resolved,
                    b.escalated,
                    _pct(b.auto_resolution_rate),
                    "SPIKE" if b.start in spiked else "",
                ]
                for b in sig.trend
            ],
        ),
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
                ["from (UTC)", "category", "sent to an operator", "median before"],
                [
                    [_when(s.start), s.category or "all", s.count, f"{s.baseline:g}"]
                    for s in sig.spikes
                ],
            )
        )
    else:
        out.append(_tag("p", "No escalation spike."))
    out.append(_html_table(["fast-loop outcome", "events"], list(sig.fast_loop_outcomes.items())))
    return out


class _Markup(str):
    """A table cell that is markup already (a link made with :func:`_tag`): not escaped again."""

    __slots__ = ()


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A table; one of more than three columns stacks its rows on a narrow screen."""
    head = "".join(_tag("th", _e(h)) for h in headers)

    def cell(label: str, value: object) -> str:
        return _tag("td", value if isinstance(value, _Markup) else _e(value), data_label=label)

    body = "".join(
        _tag("tr", "".join(cell(h, c) for h, c in zip(headers, row, strict=True))) for row in rows
    )
    table = _tag("thead", _tag("tr", head)) + _tag("tbody", body)
    return _tag("table", table, class_="stack") if len(headers) > 3 else _tag("table", table)


def _card(value: object, text: str, link: Callable[[str], str] | None = None) -> str:
    number = _e(value) if link is None else link(_e(value))
    return _tag(
        "div", _tag("div", number, class_="n") + _tag("div", _e(text), class_="l"), class_="card"
    )


# -- the charts ---------------------------------------------------------------------------------


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


def _cycles_svg(d: Dashboard) -> str:
    label = "Discrepancies found and the share auto-resolved per cycle"
    points = d.reconciliation.per_cycle
    if not points:
        return _empty(640, 200, label, "no reconciliation cycle finished in this window")
    frame = _Frame(44, 596, 16, 210)
    top_value = _nice(max(p.discrepancies for p in points))
    parts = frame.axes(top_value, rate_axis=True)
    # The time axis spans the cycles (padded), not the whole window: a day of cycles in a
    # week's window would otherwise squeeze into one corner of the chart.
    low, high = _cycles_span(points, d.window_start, d.window_end)
    span = (high - low).total_seconds()
    bar_w = max(1.0, min(10.0, (frame.right - frame.left) / len(points) * 0.6))
    line: list[str] = []
    for p in points:
        at = (p.finished_at - low).total_seconds() / span
        x = frame.left + (frame.right - frame.left) * min(1.0, max(0.0, at))
        y = frame.y(p.discrepancies / top_value)
        tip = _tip(
            f"{_when(p.finished_at)} {p.mode}: {p.discrepancies} found, {p.auto_resolved}"
            f" auto-resolved, {p.escalated} for an operator (new or still waiting),"
            f" auto-resolved / found {_pct(p.auto_resolution_rate)}"
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
    for tick, text in _time_ticks(low, high):
        x = frame.left + (frame.right - frame.left) * (tick - low).total_seconds() / span
        parts.append(_tag("line", class_="axis", x1=x, y1=frame.bottom, x2=x, y2=frame.bottom + 4))
        parts.append(_tag("text", _e(text), x=x, y=frame.bottom + 16, text_anchor="middle"))
    parts += _legend(frame.left, 238, "discrepancies found (left axis)", "auto-resolved / found")
    return _svg(640, 256, label, parts)


def _cycles_span(
    points: Sequence[CyclePoint], window_start: datetime, window_end: datetime
) -> tuple[datetime, datetime]:
    """The per-cycle chart's time axis: the cycles' finish times, padded, inside the window.

    The padding is a twentieth of the span and at least five minutes on each side, so the
    first and last bars are not cut in half and one cycle stands in the middle of ten minutes.
    """
    first = min(p.finished_at for p in points)
    last = max(p.finished_at for p in points)
    pad = max((last - first) / 20, timedelta(minutes=5))
    low, high = max(first - pad, window_start), min(last + pad, window_end)
    if high <= low:  # a cycle at the very edge of a window of an hour
        low, high = first - pad, last + pad
    return low, high


_TICK_STEPS = tuple(
    timedelta(minutes=m)
    for m in (1, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080, 20160, 40320)
)


def _time_ticks(low: datetime, high: datetime, most: int = 6) -> list[tuple[datetime, str]]:
    """Round times (UTC) inside ``[low, high]``, at most ``most``, with their labels.

    The step is the smallest of 1, 5, 10, 15, 30 minutes, 1, 2, 3, 6, 12 hours, 1, 2, 7, 14 or
    28 days that gives at most ``most`` ticks. A label is ``HH:MM``, with the date (``MM-DD``)
    on the first tick and wherever the day changes; whole-day steps show the date only.
    """
    span = high - low
    step = next((s for s in _TICK_STEPS if span / s <= most), _TICK_STEPS[-1])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    tick = epoch + step * math.ceil((low - epoch) / step)
    out: list[tuple[datetime, str]] = []
    day = None
    while tick <= high:
        if step >= timedelta(days=1):
            text = tick.strftime("%m-%d")
        elif tick.date() != day:
            text = tick.strftime("%m-%d %H:%M")
        else:
            text = tick.strftime("%H:%M")
        day = tick.date()
        out.append((tick, text))
        tick += step
    return out


def _cycles_span_words(points: Sequence[CyclePoint]) -> str:
    """Under the per-cycle chart: the time its axis spans (the cycles', not the window's)."""
    if not points:
        return ""
    first = min(p.finished_at for p in points)
    last = max(p.finished_at for p in points)
    when = (
        f"at {_when(first)} UTC" if first == last else f"from {_when(first)} to {_when(last)} UTC"
    )
    return _tag(
        "p",
        _e(f"The chart's time axis spans the cycles: they finished {when}."),
        class_="muted",
    )


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
            f"{_when(b.start)} to {_when(b.end)}: {b.escalated} sent to an operator,"
            f" {b.auto_resolved} auto-resolved, rate {_pct(b.auto_resolution_rate)}"
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
    parts += _legend(frame.left, 224, "sent to an operator (red: spike)", "auto-resolution rate")
    return _svg(640, 242, label, parts)


# -- chart parts --------------------------------------------------------------------------------


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


def _svg(width: int, height: int, label: str, parts: Iterable[str]) -> str:
    """A chart in its box (the box scrolls sideways on a narrow screen)."""
    chart = _tag(
        "svg",
        _tip(label) + "".join(parts),
        class_="chart",
        viewBox=f"0 0 {width} {height}",
        role="img",
        aria_label=label,
    )
    return _tag("div", chart, class_="chart-box")


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


def _nice(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (1 at least)."""
    if value <= 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def _f(value: float) -> str:
    return f"{value:.1f}"


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


# -- markup -------------------------------------------------------------------------------------


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


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
