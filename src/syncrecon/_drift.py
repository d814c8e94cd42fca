"""Schema drift: what changed in a mapped field's description, and whether it breaks the mapping.

Pure functions over field descriptions (:class:`~syncrecon.FieldInfo` or the plain data
storage keeps). A *breaking* change stops writes to the field (quarantine) until an operator
resolves its ``schema_drift`` escalation: a type change (a single-select becoming a
multi-select, say), a mapped field that is gone (deleted or renamed), or a picklist option
that the field's value map needs that was removed. A *harmless* change (an option added, an
option nobody maps removed) is recorded and changes nothing else.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from . import _codec
from ._models import FieldInfo, Side
from ._policy import FallbackChain, Merge
from ._sync import FieldMap

__all__ = ["DriftChange", "classify", "describe", "fits"]

SCHEMA_DRIFT_CATEGORY = "schema_drift"

_NUMBER = {"number", "integer", "int", "float", "double", "decimal", "currency", "percent"}
_BOOL = {"boolean", "bool", "checkbox"}
_SINGLE = {"enumeration", "picklist", "select", "single_select", "radio"}
_MULTI = {"multi_enumeration", "multipicklist", "multi_select", "checkboxes"}
_DATES = {"date", "datetime", "timestamp"}
_TEXT = {"string", "text", "textarea", "email", "phone", "url", "id", "reference"}


def describe(info: FieldInfo) -> tuple[str, dict[str, Any]]:
    """``(fingerprint, info as data)`` of a field description."""
    data = {
        "type": info.type,
        "options": None if info.options is None else sorted(info.options),
        "required": info.required,
    }
    return hashlib.sha256(_codec.dumps(data).encode()).hexdigest()[:24], data


@attrs.frozen(kw_only=True)
class DriftChange:
    """One change of a mapped field's description, and whether it breaks the mapping."""

    side: Side
    field: str
    breaking: bool
    description: str


def _needed(fm: FieldMap, side: Side) -> frozenset[Any] | None:
    return fm.transform.left_values if side is Side.LEFT else fm.transform.right_values


def classify(
    fm: FieldMap, side: Side, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> DriftChange | None:
    """What changed between the stored description ``old`` and the current ``new``.

    ``None`` when nothing did (or the field is seen for the first time).
    """
    name = fm.left if side is Side.LEFT else fm.right
    if old is None:
        return None
    if new is None:
        return DriftChange(
            side=side,
            field=name,
            breaking=True,
            description=f"{side} field {name!r} is gone (deleted or renamed)",
        )
    if old.get("type") != new.get("type"):
        return DriftChange(
            side=side,
            field=name,
            breaking=True,
            description=f"{side} field {name!r} changed type from {old.get('type')!r}"
            f" to {new.get('type')!r}",
        )
    before = set(old.get("options") or ())
    after = set(new.get("options") or ())
    removed, added = before - after, after - before
    needed = _needed(fm, side)
    lost = sorted(removed & set(needed), key=repr) if needed is not None else []
    if lost:
        return DriftChange(
            side=side,
            field=name,
            breaking=True,
            description=f"{side} field {name!r} lost options its value map needs: {lost}",
        )
    if removed or added or old.get("required") != new.get("required"):
        parts = []
        if added:
            parts.append(f"options added: {sorted(added, key=repr)}")
        if removed:
            parts.append(f"unmapped options removed: {sorted(removed, key=repr)}")
        if old.get("required") != new.get("required"):
            parts.append(f"required: {old.get('required')} -> {new.get('required')}")
        return DriftChange(
            side=side,
            field=name,
            breaking=False,
            description=f"{side} field {name!r}: {'; '.join(parts)}",
        )
    return None


def _number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float | Decimal):
        return True
    if isinstance(value, str):
        try:
            Decimal(value.strip())
        except (InvalidOperation, ValueError):
            return False
        return True
    return False


def _date(value: Any) -> bool:
    if isinstance(value, date | datetime):
        return True
    if isinstance(value, int) and not isinstance(value, bool):
        return True  # epoch milliseconds, as HubSpot sends dates
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return True
        try:
            datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return False
        return True
    return False


def fits(value: Any, info: Mapping[str, Any]) -> bool:
    """Whether ``value`` fits a field of this description (unknown types always fit).

    Providers send numbers, booleans and dates as text in webhooks (HubSpot does), so numeric,
    boolean and ISO-date strings fit those types; a multi-select value may be a list or a
    ``;``-separated string. ``None`` always fits.
    """
    if value is None:
        return True
    kind = str(info.get("type") or "").lower()
    options = info.get("options")
    if kind in _NUMBER:
        return _number(value)
    if kind in _BOOL:
        return isinstance(value, bool) or (
            isinstance(value, str) and value.strip().lower() in {"true", "false"}
        )
    if kind in _DATES:
        return _date(value)
    if kind in _SINGLE:
        if not isinstance(value, str | int) or isinstance(value, bool):
            return False
        return options is None or value in options or str(value) in options
    if kind in _MULTI:
        items = value.split(";") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return False
        return all(
            isinstance(i, str) and (options is None or i in options) for i in items if i != ""
        )
    if kind in _TEXT:
        return isinstance(value, str | int | float | Decimal) and not isinstance(value, bool)
    return True


INVALID_VALUE_CATEGORY = "invalid_value"

_SCALAR_TYPES = frozenset({str, int, float, bool, type(None), Decimal, date, datetime})


def storable_problem(value: Any, _depth: int = 0) -> str | None:
    """Why ``value`` cannot be kept as a field value (``None`` when it can).

    Field values are JSON values plus ``date``, ``datetime`` and ``Decimal``: ``bytes``, an
    object, a mapping with non-text keys or a nesting deeper than 32 levels are not.
    """
    kind = type(value)
    if kind in _SCALAR_TYPES:
        return None
    if _depth > 32:
        return "a value nested more than 32 levels deep"
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        for item in value:
            problem = storable_problem(item, _depth + 1)
            if problem is not None:
                return problem
        return None
    if kind is dict:
        for key, item in value.items():
            if not isinstance(key, str):
                return f"a mapping with a {type(key).__name__} key"
            problem = storable_problem(item, _depth + 1)
            if problem is not None:
                return problem
        return None
    if isinstance(value, str | int | float | Decimal | date):  # subclasses (enums) encode fine
        return None
    return f"a value of type {kind.__name__}"


def _merges(policy: object) -> bool:
    if isinstance(policy, Merge):
        return True
    return isinstance(policy, FallbackChain) and any(isinstance(p, Merge) for p in policy.policies)


@functools.lru_cache(maxsize=256)
def _merges_cached(fm: FieldMap) -> bool:
    return _merges(fm.policy)


def merges_as_list(fm: FieldMap) -> bool:
    """Whether the field merges as a list (asked once per value: cached per mapping)."""
    try:
        return _merges_cached(fm)
    except TypeError:  # a mapping whose custom policy is not hashable
        return _merges(fm.policy)


def misfit(
    fm: FieldMap,
    name: str,
    value: Any,
    info: Mapping[str, Any] | None,
    *,
    expects_list: bool | None = None,
) -> str | None:
    """Why ``value`` (of the side's field ``name``) does not fit the field, or ``None``.

    Checked before any decision: the value must be storable, a list field (one that merges)
    must hold a list (or nothing), and the value must fit the type and options the connector
    described for the field (``info``, when it described one). ``expects_list`` is
    ``merges_as_list(fm)`` when the caller has it at hand (a cycle works it out once).
    """
    problem = storable_problem(value)
    if problem is not None:
        return f"field {name!r} holds {problem}, which cannot be stored"
    if value is None:
        return None
    if expects_list is None:
        expects_list = merges_as_list(fm)
    if expects_list and not isinstance(value, list | tuple | set | frozenset):
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return f"field {name!r} holds a {type(value).__name__} ({shown}), but it merges as a list"
    if info is None:
        return None
    if isinstance(value, date) and str(info.get("type") or "").lower() in _TEXT:
        return None  # a date read from a text field: it has one canonical text form
    if not fits(value, info):
        return (
            f"field {name!r} holds a {type(value).__name__}, which does not fit its described"
            f" type {info.get('type')!r}"
            + (f" (options {list(info['options'])!r})" if info.get("options") else "")
        )
    return None
