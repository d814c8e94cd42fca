"""Typed values from and to providers' wire formats (shared by the ready connectors)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from dateutil.parser import isoparse

__all__ = ["as_number", "iso_date", "iso_datetime", "parse_date", "parse_datetime"]


def as_number(text: str) -> int | float:
    """``"12"`` -> 12, ``"12.50"`` -> 12.5; a float that is whole stays a float."""
    stripped = text.strip()
    try:
        return int(stripped)
    except ValueError:
        value = float(stripped)
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"not a finite number: {text!r}") from None
        return value


def parse_datetime(text: str) -> datetime:
    """An ISO 8601 date-time (``Z``, ``+00:00`` or ``+0000``) or epoch milliseconds, as UTC."""
    stripped = text.strip()
    if stripped.isdigit():
        return datetime.fromtimestamp(int(stripped) / 1000, tz=UTC)
    value = isoparse(stripped)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_date(text: str) -> date:
    """``YYYY-MM-DD`` (or epoch milliseconds at midnight UTC, as HubSpot sends some dates)."""
    stripped = text.strip()
    if stripped.isdigit():
        return datetime.fromtimestamp(int(stripped) / 1000, tz=UTC).date()
    return isoparse(stripped[:10]).date()


def iso_datetime(value: datetime, *, sep: str = "T", zulu: bool = True) -> str:
    """``2026-01-31T10:00:00.000Z`` (milliseconds, UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    text = value.strftime(f"%Y-%m-%d{sep}%H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    return text + ("Z" if zulu else "+0000")


def iso_date(value: date) -> str:
    return value.isoformat() if not isinstance(value, datetime) else value.date().isoformat()


def number_text(value: Any) -> str:
    """A number as providers take it: no exponent, no trailing ``.0`` on whole floats."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a number")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(Decimal(repr(value)), "f")  # 1e+16 -> 10000000000000000, no exponent
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, str):
        return str(as_number(value))
    raise TypeError(f"not a number: {type(value).__name__}")


def split_multi(text: str) -> list[str]:
    """``"a;b"`` -> ``["a", "b"]``; empty parts are dropped."""
    return [part for part in text.split(";") if part != ""]


def join_multi(values: Iterable[Any]) -> str:
    return ";".join(str(v) for v in values)
