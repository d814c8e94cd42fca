"""Clocks. Everything that needs the time takes a :class:`Clock`, so tests can inject one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock", "parse_ts", "ts", "utc"]


@runtime_checkable
class Clock(Protocol):
    """Tells the current time as a timezone-aware UTC ``datetime``."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime (naive values are taken to be UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def ts(value: datetime) -> str:
    """A UTC timestamp as fixed-width text that sorts in time order (naive means UTC)."""
    return utc(value).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_ts(text: str) -> datetime:
    """The inverse of :func:`ts`."""
    return datetime.fromisoformat(text)
