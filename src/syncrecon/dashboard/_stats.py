"""The pure arithmetic of the dashboard: percentiles, shares, histogram bins, spikes.

Plain numbers in, plain numbers out: nothing here knows storage or the dashboard's values.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TypeVar

_T = TypeVar("_T")


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


def _rate(auto: int, escalated: int) -> float | None:
    total = auto + escalated
    return None if total == 0 else auto / total


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def _ranked(counts: Mapping[str, int]) -> dict[str, int]:
    """Largest first, then by name; zeros dropped."""
    return {k: v for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if v}


def _bin_counts(durations: Sequence[timedelta], edges: Sequence[timedelta]) -> list[int]:
    """How many ``durations`` fall in each bin ``[0, e0), [e0, e1), ..., [e_last, inf)``."""
    counts = [0] * (len(edges) + 1)
    for value in durations:
        index = 0
        while index < len(edges) and value >= edges[index]:
            index += 1
        counts[index] += 1
    return counts


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
