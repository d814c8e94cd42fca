"""The steps every writer shares: the cycle, the fast loop and the operator queue.

Whoever writes a value to a system does the same things around the write, in this order:
claim the records (one claim space, :func:`record_name`), remember the write in the echo
ledger before making it (:func:`echo_entries`, so the webhook it causes is recognized as
syncrecon's own even if it arrives before the write's answer), skip a side that already holds
the value (:func:`holds`), write, and commit the outcome with the base in one step. These
helpers are that shared vocabulary; each writer keeps its own batching and its own outcome.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ._codec import fingerprint
from ._models import Side
from ._policy import values_equal
from ._sync import FieldMap
from .storage._base import Echo

__all__ = ["echo_entries", "holds", "record_name"]


def record_name(sync: str, side: Side, key: str) -> str:
    """A record's name in the claim space shared by fast-loop workers and cycles
    (:attr:`~syncrecon.storage.InboxEntry.record`)."""
    return f"{sync}:{Side(side).value}:{key}"


def echo_entries(
    sync: str,
    side: Side,
    key: str,
    fields: Mapping[str, Any],
    *,
    now: datetime,
    ttl: timedelta,
    source_times: Mapping[str, datetime | None] | None = None,
) -> list[Echo]:
    """Echo-ledger entries for writing ``fields`` (the target's names and values) to ``key``.

    Each entry keeps the time of the edit its value copies (``source_times``, by target field),
    so a later read of the target is timed by that edit, not by the write. None when echoes
    are switched off (``ttl`` of zero).
    """
    if ttl <= timedelta(0):
        return []
    times = source_times or {}
    return [
        Echo(
            sync=sync,
            side=side,
            key=key,
            field=name,
            fingerprint=fingerprint(value),
            expires_at=now + ttl,
            source_time=times.get(name),
        )
        for name, value in fields.items()
    ]


def holds(fm: FieldMap, side: Side, raw: Any, value: Any) -> bool:
    """Whether ``raw``, a value of field ``fm`` as ``side`` stores it, already is ``value``
    (in the left vocabulary): on the right, either way through the field's transform."""
    if side is Side.LEFT:
        return values_equal(raw, value)
    try:
        if values_equal(fm.transform.to_left(raw), value):
            return True
    except Exception:  # a value the transform does not take: compare the other way
        pass
    try:
        return values_equal(raw, fm.transform.to_right(value))
    except Exception:  # nor that way: not held
        return False
