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
