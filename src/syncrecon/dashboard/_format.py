"""How the renderings write numbers: durations, rates, times, counted nouns, shared rows.

The text table and the HTML page say the same things in the same words; this is where the
words are made.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ._stats import _ratio

if TYPE_CHECKING:
    from ._model import Signals


# The words of the rows, one unit each, shared by the text and the page. A cycle's own counts
# are sightings (a discrepancy that waits is counted again by every cycle that sees it); the
# signals count each discrepancy once (auto-resolved by a rule, or sent to an operator).

PER_CYCLE_COLUMNS = (
    "finished (UTC)",
    "mode",
    "found",
    "auto-resolved",
    "for an operator",
    "auto-resolved / found",
)
"""The per-cycle table: what one cycle found, fixed and left for an operator (new or waiting)."""

PER_CYCLE_NOTE = "per cycle: a discrepancy that waits for an operator is counted by every cycle"

AUTO_RESOLVED_NOTE = (
    "one per discrepancy a rule fixed; a record created (create_on) opens no queue item"
)

SIGNALS_UNIT = (
    "each discrepancy counted once;"
    " auto rate = auto-resolved / (auto-resolved + sent to an operator)"
)

TREND_COLUMNS = (
    "bucket from (UTC)",
    "cycles",
    "auto-resolved",
    "sent to an operator",
    "auto rate",
    "spike",
)
"""The trend table: per bucket, discrepancies counted once (numbers 3 and 4 of the bucket)."""


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


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _dur(value: timedelta | None) -> str:
    return "n/a" if value is None else format_duration(value)


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M")


def _n(count: int, one: str, many: str | None = None) -> str:
    """``1 cycle``, ``2 cycles``."""
    return f"{count} {one if count == 1 else many or one + 's'}"


def _window_words(window: timedelta) -> str:
    """The window as a person says it: ``this week``, ``in the last 28 days``."""
    if window == timedelta(days=7):
        return "this week"
    if window == timedelta(days=1):
        return "today"
    days = window / timedelta(days=1)
    if days == int(days):
        return f"in the last {int(days)} days"
    return f"in the last {format_duration(window)}"


def _new_items_words(new: int, escalated: int, window: timedelta) -> str:
    """``11 new queue items this week: 4 settled automatically, 7 sent to an operator``.

    ``new`` counts the queue items first detected in the window (each once), ``escalated``
    those of them that went to an operator; the rest were settled (or are being settled) by
    the rules.
    """
    words = f"{_n(new, 'new queue item')} {_window_words(window)}"
    if not new:
        return words
    settled = max(0, new - escalated)
    return f"{words}: {settled} settled automatically, {escalated} sent to an operator"


def _waiting_words(depth: int) -> str:
    """``3 wait for an operator now (of any age)``: the queue's escalated items at ``now``."""
    verb = "waits" if depth == 1 else "wait"
    return f"{depth} {verb} for an operator now (of any age)"


def _listed(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _trend_words(sig: Signals) -> str:
    if sig.rate_change is None or sig.rate_direction is None:
        return ""
    return f" (trend {sig.rate_direction}, {sig.rate_change * 100:+.1f} points)"


def _share_rows(counts: Mapping[str, int]) -> list[list[str]]:
    total = sum(counts.values())
    return [[k, str(v), _pct(_ratio(v, total))] for k, v in counts.items()]


def _request_rows(requests: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    return [
        [system, endpoint, str(n)]
        for system, by_endpoint in requests.items()
        for endpoint, n in by_endpoint.items()
    ]
