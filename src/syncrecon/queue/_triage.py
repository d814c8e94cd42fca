"""Triage suggestions: a pluggable hook that proposes a resolution for a queue item, and the
rule-based default.

A suggestion is only ever shown: nothing is resolved without an operator. When an operator
resolves an item exactly as suggested, the queue counts it (``triage_suggestions_taken``),
next to how often suggestions were shown (``triage_suggestions_shown``), so a dashboard can
tell how useful the hook is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, Literal, Protocol, runtime_checkable

import attrs

from .._clock import utc
from .._models import Side
from .._policy import values_equal
from ..storage._base import Discrepancy
from ._items import DUPLICATE_CATEGORY, group_key, is_record_level
from ._views import plain, shown

SHOWN_METRIC: Final = "triage_suggestions_shown"
"""The counter of suggestions shown (by :meth:`OperatorQueue.show` and ``suggest``), labelled
``sync`` and ``source``."""
TAKEN_METRIC: Final = "triage_suggestions_taken"
"""The counter of resolutions that took the suggestion exactly, labelled ``sync`` and
``source``."""


@attrs.frozen
class UseValue:
    """A suggested resolution that sets this value (in the left vocabulary)."""

    value: Any


SuggestedResolution = Literal["left", "right", "acknowledge"] | UseValue
"""What a :class:`Suggestion` proposes: take the left or the right value, a value of its own
(:class:`UseValue`), or acknowledge a record-level item."""


def _check_resolution(_: object, __: object, value: object) -> None:
    if value is None or isinstance(value, UseValue) or value in ("left", "right", "acknowledge"):
        return
    raise ValueError(
        "a suggestion's resolution is 'left', 'right', 'acknowledge', UseValue(...) or None,"
        f" not {value!r}"
    )


def _texts(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        return (values,)
    return tuple(str(v) for v in values)


@attrs.frozen(kw_only=True)
class Suggestion:
    """What a :class:`Triage` proposes for one item, and why.

    ``resolution`` is ``"left"`` or ``"right"`` (take that side's value), a
    :class:`UseValue`, ``"acknowledge"`` (close a record-level item), or ``None`` when the
    suggestion only flags something (``category`` says what, ``reasons`` why). ``category``
    names what the triage takes the item for (``"case_or_whitespace"``,
    ``"time_zone_shift"``, ``"same_record"``...); ``source`` names the triage
    (``"rules"``; it labels the counters).
    """

    category: str | None = None
    resolution: SuggestedResolution | None = attrs.field(default=None, validator=_check_resolution)
    reasons: tuple[str, ...] = attrs.field(default=(), converter=_texts)
    source: str = "rules"

    def describe(self, systems: Mapping[Side, str] | None = None) -> str:
        """The proposed resolution in words; ``systems`` names the sides' systems (``take
        hubspot's value``), else the side is named (``take the left value``)."""
        if self.resolution is None:
            return "no resolution proposed"
        if isinstance(self.resolution, UseValue):
            return f"set the value {shown(self.resolution.value, 80)}"
        if self.resolution == "acknowledge":
            return "acknowledge (close without writing)"
        name = (systems or {}).get(Side(self.resolution))
        if name and name != self.resolution:
            return f"take {name}'s value"
        return f"take the {self.resolution} value"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (a value in the tagged form of :func:`item_data`)."""
        resolution: Any = self.resolution
        if isinstance(resolution, UseValue):
            resolution = {"value": plain(resolution.value)}
        return {
            "category": self.category,
            "resolution": resolution,
            "reasons": list(self.reasons),
            "source": self.source,
        }

    def __str__(self) -> str:
        head = f"suggested by {self.source}: {self.describe()}"
        if self.category:
            head += f" ({self.category})"
        return "; ".join([head, *self.reasons])


@runtime_checkable
class Triage(Protocol):
    """Proposes a resolution for a queue item, or nothing.

    ``history`` holds the record's other queue items, newest first (for a record-less item,
    the field's). For a ``possible_duplicate`` item it holds the other items of its duplicate
    group instead, and every item of the group (``item`` too) carries its record's mapped
    values, by left field name in the left vocabulary, as its ``left_value`` (a left record)
    or ``right_value`` (a right record), when the queue knows the sync and could read them.

    A suggestion is never applied by itself. Optional: a class attribute ``repeatable =
    False`` says the hook is costly or not deterministic (a language model): the queue then
    asks it only to show a suggestion, never again to check whether a resolution took it
    (it counts only what it showed itself).
    """

    def suggest(self, item: Discrepancy, history: Sequence[Discrepancy]) -> Suggestion | None:
        """A suggestion for ``item``, or ``None``."""
        ...


class RuleTriage:
    """The default :class:`Triage`: three rules that see what a person would see at once.

    - **case or whitespace**: two text values that differ only in case or surrounding
      whitespace: take the side whose form the base has (the left one when the base has
      neither);
    - **time-zone shift**: a date or datetime moved by exactly a whole-hour (or half-hour)
      offset, at most 14 hours: flagged as a likely time-zone shift rather than an edit; when
      the base equals one side, that side is suggested (the other one moved);
    - **same record**: a duplicate group whose records hold the same value in every mapped
      field: acknowledge them as one real-world record (then merge them in the systems).
    """

    repeatable = True
    source = "rules"

    def __repr__(self) -> str:
        return "RuleTriage()"

    def suggest(self, item: Discrepancy, history: Sequence[Discrepancy]) -> Suggestion | None:
        """See :class:`Triage`."""
        if item.category == DUPLICATE_CATEGORY:
            return self._same_record(item, history)
        if is_record_level(item):
            return None
        return self._case(item) or self._time_zone(item)

    def _case(self, item: Discrepancy) -> Suggestion | None:
        left, right = item.left_value, item.right_value
        if not (isinstance(left, str) and isinstance(right, str)) or left == right:
            return None
        if left.strip().casefold() != right.strip().casefold():
            return None
        take: Literal["left", "right"] = "left"
        why = "neither matches the base, so the left one is suggested"
        base = item.base_value if item.has_base else None
        if isinstance(base, str) and base == right and base != left:
            take, why = "right", "the right one keeps the base's form"
        elif isinstance(base, str) and base == left:
            why = "the left one keeps the base's form"
        return Suggestion(
            category="case_or_whitespace",
            resolution=take,
            reasons=(
                f"the values differ only in case or surrounding whitespace"
                f" ({shown(left, 40)} / {shown(right, 40)}); {why}",
            ),
            source=self.source,
        )

    def _time_zone(self, item: Discrepancy) -> Suggestion | None:
        left, right = _moment(item.left_value), _moment(item.right_value)
        if left is None or right is None:
            return None
        shift = right - left
        if not shift or shift % timedelta(minutes=30) or abs(shift) > timedelta(hours=14):
            return None
        hours, rest = divmod(abs(shift), timedelta(hours=1))
        offset = f"{'+' if shift > timedelta(0) else '-'}{hours}" + (":30" if rest else "")
        reasons = [
            f"the right value is the left one moved by exactly {offset} hours"
            f" ({shown(item.left_value, 40)} / {shown(item.right_value, 40)}):"
            " a time-zone shift is likely, not an edit"
        ]
        take: Literal["left", "right"] | None = None
        base = _moment(item.base_value) if item.has_base else None
        if base is not None and base == left:
            take = "left"
            reasons.append("the left value is the base: the right one moved")
        elif base is not None and base == right:
            take = "right"
            reasons.append("the right value is the base: the left one moved")
        return Suggestion(
            category="time_zone_shift", resolution=take, reasons=tuple(reasons), source=self.source
        )

    def _same_record(self, item: Discrepancy, history: Sequence[Discrepancy]) -> Suggestion | None:
        group = group_key(item)
        if group is None:
            return None
        members = [item, *(h for h in history if group_key(h) == group)]
        values = [_record_values(m) for m in members]
        if len(values) < 2 or any(v is None or not v for v in values):
            return None
        first = values[0]
        assert first is not None
        for other in values[1:]:
            assert other is not None
            if set(other) != set(first) or not all(values_equal(first[f], other[f]) for f in first):
                return None
        return Suggestion(
            category="same_record",
            resolution="acknowledge",
            reasons=(
                f"the {len(values)} records of this group hold the same value in every mapped"
                f" field ({', '.join(sorted(first))}): they look like one real-world record;"
                " merge them in the systems and acknowledge the group",
            ),
            source=self.source,
        )


def _record_values(item: Discrepancy) -> Mapping[str, Any] | None:
    """The mapped values the queue put on a duplicate group's item (see :class:`Triage`)."""
    value = item.left_value if item.left_key else item.right_value
    return value if isinstance(value, Mapping) else None


def _moment(value: Any) -> datetime | None:
    """A date or datetime value (an ISO text too) as an aware datetime; a date is midnight."""
    if isinstance(value, str):
        text = value.strip()
        if len(text) < 10 or not text[:4].isdigit():
            return None
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                value = date.fromisoformat(text)
            except ValueError:
                return None
    if isinstance(value, datetime):
        return utc(value)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    return None


def suggestion_taken(
    suggestion: Suggestion, item: Discrepancy, *, take: str | None, value: Any, given: bool
) -> bool:
    """Whether resolving ``item`` with ``take`` (or ``value``, when ``given``; neither: an
    acknowledgement) is exactly what ``suggestion`` proposed."""
    proposed = suggestion.resolution
    if proposed is None:
        return False
    if proposed == "acknowledge":
        return take is None and not given
    if take is None and not given:
        return False
    chosen = value if given else (item.left_value if take == "left" else item.right_value)
    if isinstance(proposed, UseValue):
        return values_equal(chosen, proposed.value)
    if take is not None:
        return take == proposed
    recorded = item.left_value if proposed == "left" else item.right_value
    return values_equal(chosen, recorded)
