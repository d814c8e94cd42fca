"""How a queue item reads: the view of one item (text and JSON), an item as JSON-ready data,
and a value as a person reads it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import attrs
from dateutil import parser as _dateparser

from .. import _codec
from .._clock import utc
from .._models import Side
from .._policy import values_equal
from ..storage._base import Discrepancy, Status, display_text
from ._items import is_record_level

if TYPE_CHECKING:
    from ._triage import Suggestion


def _default_systems() -> dict[Side, str]:
    return {Side.LEFT: "left", Side.RIGHT: "right"}


@attrs.frozen(kw_only=True)
class ItemView:
    """One queue item as an operator sees it: both values, the base, why, and the history.

    ``history`` holds the other queue items of the same record (for a record-less item, of the
    same field), newest first. ``current_base`` is the base stored on the link now (it may have
    moved since the item was opened), or ``None`` with ``linked=False`` when the record is not
    linked (any more).

    ``group`` names the duplicate group of a ``possible_duplicate`` item (see
    :func:`group_key`), ``None`` for other items; ``group_items`` holds the group's other
    active items (:meth:`OperatorQueue.group` lists them all). ``suggestion`` is what the
    queue's triage proposes, if anything (never applied by itself). ``systems`` names each
    side's system (its connector's name; ``"left"`` and ``"right"`` when the sync definition
    is not known) and ``urls`` the record's page in each system whose connector offers one.
    """

    item: Discrepancy
    left_value: Any
    right_value: Any
    base_value: Any
    has_base: bool
    explanation: str
    history: tuple[Discrepancy, ...] = ()
    linked: bool = False
    current_base: Any = None
    group: str | None = None
    group_items: tuple[Discrepancy, ...] = ()
    suggestion: Suggestion | None = None
    systems: Mapping[Side, str] = attrs.field(factory=_default_systems)
    urls: Mapping[Side, str] = attrs.field(factory=dict)

    @property
    def id(self) -> int:
        """The item's id."""
        assert self.item.id is not None
        return self.item.id

    @property
    def record_level(self) -> bool:
        """See :func:`is_record_level`."""
        return is_record_level(self.item)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary: the item's data, the current base, the history, the group,
        the suggestion, the systems' names and the records' pages."""
        out = item_data(self.item)
        out["linked"] = self.linked
        out["current_base"] = plain(self.current_base)
        out["history"] = [item_data(h) for h in self.history]
        out["group"] = self.group
        out["group_items"] = [item_data(g) for g in self.group_items]
        out["suggestion"] = None if self.suggestion is None else self.suggestion.to_dict()
        out["systems"] = {str(side): name for side, name in self.systems.items()}
        out["urls"] = {str(side): url for side, url in self.urls.items()}
        return out

    def system(self, side: Side) -> str:
        """The name of ``side``'s system (``"left"``/``"right"`` when not known)."""
        return self.systems.get(side) or str(side)

    @property
    def explained(self) -> str:
        """The explanation as a person reads it (:func:`explanation_text`): values as
        :func:`display_value` shows them, the systems by name. ``explanation`` (and the JSON)
        keep the stored text."""
        return explanation_text(self.item, self.systems, text=self.explanation)

    def _moved(self, value: Any) -> str:
        """Which side moved away from the base, for the text view."""
        if not self.has_base:
            return ""
        if values_equal(value, self.base_value):
            return "  (as last agreed)"
        return "  (changed since last agreed)"

    def __str__(self) -> str:
        item = self.item
        left, right = self.system(Side.LEFT), self.system(Side.RIGHT)
        width = max(7, len(left) + 1, len(right) + 1)

        def row(label: str, text: str) -> str:
            return f"  {(label + ':').ljust(width)} {text}"

        lines = [
            f"item {item.id}: {item.status.value}"
            + (f" ({item.category})" if item.category else "")
            + f" in sync {item.sync!r}",
            row("record", f"{left} {item.left_key or '-'} / {right} {item.right_key or '-'}"),
            row("field", item.field + (" (the whole record)" if item.field == "*" else "")),
        ]
        if not self.record_level:
            lines += [
                row(left, shown(self.left_value) + self._moved(self.left_value)),
                row(right, shown(self.right_value) + self._moved(self.right_value)),
                row("base", shown(self.base_value) if self.has_base else "(never synced)"),
            ]
        lines.append(
            row(
                "rule",
                f"{item.rule or '-'}; detected {item.detected_at.isoformat()},"
                f" seen {item.times_seen} time{'s' if item.times_seen != 1 else ''}",
            )
        )
        for side in Side:
            if side in self.urls:
                lines.append(f"  open in {self.system(side)}: {self.urls[side]}")
        if item.assignee:
            lines.append(f"  assigned to: {item.assignee}")
        if item.resolved_at is not None:
            took = item.resolved_at - item.detected_at
            lines.append(f"  closed {item.resolved_at.isoformat()} (after {took})")
            if item.status is Status.RESOLVED and not self.record_level:
                lines.append(f"  resolution: {shown(item.resolution)}")
        if item.note:
            lines.append(f"  note: {item.note}")
        if self.explanation:
            lines.append("  why:")
            lines += [f"    {line}" for line in self.explained.splitlines()]
        if self.suggestion is not None:
            lines.append(f"  suggestion: {self.suggestion.describe(self.systems)}")
            if self.suggestion.category:
                lines.append(f"    ({self.suggestion.category}, from {self.suggestion.source})")
            else:
                lines.append(f"    (from {self.suggestion.source})")
            lines += [f"    {reason}" for reason in self.suggestion.reasons]
        if self.group is not None:
            lines.append(f"  duplicate group {self.group}: {len(self.group_items) + 1} items")
            for g in self.group_items:
                where = f"{left} {g.left_key}" if g.left_key else f"{right} {g.right_key or '-'}"
                lines.append(f"    #{g.id} {where} {g.status.value}")
        if self.history:
            lines.append("  history of this record:")
            for h in self.history:
                lines.append(
                    f"    #{h.id} {h.detected_at.isoformat()} {h.field} {h.status.value}"
                    + (f" ({h.category})" if h.category else "")
                    + (f" -> {shown(h.resolution)}" if h.status is Status.RESOLVED else "")
                )
        return "\n".join(lines)


def item_data(item: Discrepancy) -> dict[str, Any]:
    """A queue item as JSON-ready data (the form ``queue list --json`` prints).

    Values are plain JSON; a ``date``, ``datetime`` or ``Decimal`` is a tagged object
    (``{"$date": "2026-01-31"}``), the form ``--value`` accepts back.
    """
    return {
        "id": item.id,
        "sync": item.sync,
        "left_key": item.left_key,
        "right_key": item.right_key,
        "field": item.field,
        "status": item.status.value,
        "category": item.category,
        "rule": item.rule,
        "left_value": plain(item.left_value),
        "right_value": plain(item.right_value),
        "base_value": plain(item.base_value),
        "has_base": item.has_base,
        "resolution": plain(item.resolution),
        "explanation": item.explanation,
        "note": item.note,
        "assignee": item.assignee,
        "times_seen": item.times_seen,
        "detected_at": item.detected_at.isoformat(),
        "updated_at": None if item.updated_at is None else item.updated_at.isoformat(),
        "resolved_at": None if item.resolved_at is None else item.resolved_at.isoformat(),
    }


_SIDE_WORD = re.compile(r"(?<![\w'\"-])(left|right)(?![\w'\"-])")
"""``left`` or ``right`` as a word of an explanation (not inside a quoted name or value)."""

_TIMES = re.compile(
    r"^(?P<indent>\s*)times: left=(?P<left>unknown|\S+ \((?:field|record)\))"
    r" right=(?P<right>unknown|\S+ \((?:field|record)\))$"
)
_RULE = re.compile(
    r"^(?P<indent>\s*)rule (?P<rule>.+?): (?P<outcome>take_left|take_right|merge) -> "
)


def explanation_text(
    item: Discrepancy, systems: Mapping[Side, str] | None = None, *, text: str | None = None
) -> str:
    """An item's explanation (``text``, the item's own by default) as a person reads it.

    The explanation is stored as the reconciler wrote it (:meth:`Decision.explain`, with
    values as Python writes them and the sides called ``left`` and ``right``); the JSON keeps
    that. Shown to a person, a decision's values come from the item's own fields, as
    :func:`display_value` shows them (``2026-10-29``, ``(blank)``), its times as UTC times, and
    every ``left``/``right`` names its system when ``systems`` knows it. Other explanations
    keep their text, with the systems named.
    """
    names = _side_names(systems)
    text = item.explanation if text is None else text

    def named(line: str) -> str:
        return _SIDE_WORD.sub(lambda m: names[Side(m.group(1))], line)

    lines = text.splitlines()
    if not lines:
        return text
    head = f"field {item.field!r}: left="
    if not lines[0].startswith(head):  # not a decision's explanation
        return "\n".join(named(line) for line in lines)
    left, right = names[Side.LEFT], names[Side.RIGHT]
    base = display_value(item.base_value) if item.has_base else "(never synced)"
    out = [
        f"field {item.field!r}: {left} {display_value(item.left_value)},"
        f" {right} {display_value(item.right_value)}, last agreed {base}"
    ]
    for line in lines[1:]:
        times = _TIMES.match(line)
        rule = _RULE.match(line)
        if times is not None:
            out.append(
                f"{times['indent']}last changed: {left} {_when(times['left'])},"
                f" {right} {_when(times['right'])}"
            )
        elif rule is not None:
            what = rule["outcome"]
            if what == "take_left":
                done = f"take {left}'s value {display_value(item.left_value)}"
            elif what == "take_right":
                done = f"take {right}'s value {display_value(item.right_value)}"
            elif item.resolution is not None:
                done = f"merge both lists into {display_value(item.resolution)}"
            else:
                done = "merge both lists"
            out.append(f"{rule['indent']}rule {rule['rule']}: {done}")
        else:
            out.append(named(line))
    return "\n".join(out)


def _side_names(systems: Mapping[Side, str] | None) -> dict[Side, str]:
    """Each side's name for an explanation: its system's, told apart when both are alike."""
    names = {side: ((systems or {}).get(side) or str(side)) for side in Side}
    if names[Side.LEFT] == names[Side.RIGHT]:
        names = {side: f"{names[side]} ({side})" for side in Side}
    return names


def _when(text: str) -> str:
    """``2026-11-29T23:02:22.330000+00:00 (field)`` as ``2026-11-29 23:02:22.33 UTC (the
    field's own time)``; ``unknown`` as is."""
    stamp, _, kind = text.partition(" (")
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return text
    own = "the field's own time" if kind.startswith("field") else "the record's time"
    return f"{display_value(moment)} ({own})"


def display_value(value: Any) -> str:
    """A value as a person reads it: ``2026-08-22``, ``2026-08-22 14:30:00 UTC``, ``1250.50``,
    ``vip, eu``, ``(blank)``; text in quotes, so ``"42"`` and ``42`` stay apart.

    For reading only: ``--value`` and ``queue list --json`` keep syncrecon's tagged JSON form
    (``{"$date": "2026-08-22"}``), which round-trips exactly. A queue search matches this
    text of an item's values.
    """
    return display_text(value)


def shown(value: Any, width: int | None = None) -> str:
    """:func:`display_value`, cut to ``width`` characters (ending in ``…``) when given."""
    text = display_value(value)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def plain(value: Any) -> Any:
    """A JSON-ready copy of a value: dates and decimals in syncrecon's tagged form."""
    return json.loads(_codec.dumps(value))


_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}


def read_value(text: str, *, like: Any = None) -> Any:
    """The value an operator typed, read as a person writes it.

    ``like`` is a value of the same field (the item's left value, or its right value when the
    left one is blank): the text is read as that kind of value, so a date is written
    ``2026-08-22``, an amount ``1200.50`` (or ``1,200.50``), a list ``a, b, c`` and a yes/no
    ``yes``. Empty text is blank. Without a hint, or when the hint is text, JSON is taken as
    JSON (``42``, ``true``, ``null``, ``"quoted text"``, ``["a", "b"]``, syncrecon's tagged
    ``{"$date": "2026-08-22"}``) and anything else as plain text. Raises ``ValueError`` with an
    operator's message when the text is not such a value.
    """
    raw = text.strip()
    if raw == "":
        return None
    quoted = len(raw) > 1 and raw.startswith('"') and raw.endswith('"')
    if raw.startswith("{"):
        return _codec.loads(raw)  # syncrecon's tagged JSON ({"$date": ...}) or an object
    if isinstance(like, bool):
        word = raw.casefold()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError(f"{text!r} is not yes or no (write yes, no, true or false)")
    if isinstance(like, datetime):
        try:
            return utc(_dateparser.isoparse(raw))
        except ValueError:
            raise ValueError(
                f"{text!r} is not a date and time (write it like 2026-08-22T14:30:00Z)"
            ) from None
    if isinstance(like, date):
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"{text!r} is not a date (write it like 2026-08-22)") from None
    if isinstance(like, Decimal | int | float):
        number = raw.replace(",", "").replace("_", "")
        try:
            if isinstance(like, Decimal):
                return Decimal(number)
            if isinstance(like, int) and number.lstrip("+-").isdigit():
                return int(number)
            return float(number) if isinstance(like, float) else Decimal(number)
        except (InvalidOperation, ValueError):
            raise ValueError(f"{text!r} is not a number (write it like 1200.50)") from None
    if isinstance(like, list | tuple):
        if raw.startswith("["):
            return _codec.loads(raw)
        item = like[0] if like else None
        return [read_value(part, like=item) for part in raw.split(",") if part.strip()]
    if isinstance(like, str):
        return _codec.loads(raw) if quoted else raw
    try:
        return _codec.loads(raw)
    except ValueError:
        return raw


def input_text(value: Any) -> str:
    """A value as an operator would type it (what :func:`read_value` reads back, given a value
    of the same field as ``like``): ``2026-08-22``, ``1200.50``, ``a, b``, empty for blank."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return utc(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal | int | float):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and all(
        isinstance(v, str) and "," not in v and v.strip() == v and v for v in value
    ):
        return ", ".join(value)
    return _codec.dumps(value)
