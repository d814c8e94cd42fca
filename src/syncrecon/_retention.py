"""How long storage keeps what it no longer needs: the value :meth:`Storage.prune` applies.

>>> from datetime import timedelta
>>> from syncrecon import Retention
>>> Retention(cycles=timedelta(days=30)).inbox
datetime.timedelta(days=7)

The :class:`~syncrecon.worker.Worker` applies it on a schedule (``prune_every``, hourly by
default); a host without a worker calls ``storage.prune(retention, now)`` itself.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs

__all__ = ["Retention"]


def _age(_instance: Any, attribute: attrs.Attribute[Any], value: timedelta | None) -> None:
    if value is None:
        return
    if not isinstance(value, timedelta):
        raise TypeError(f"{attribute.name} must be a timedelta or None, got {value!r}")
    if value < timedelta(0):
        raise ValueError(f"{attribute.name} must not be negative, got {value!r}")


def _positive(_instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


@attrs.frozen(kw_only=True)
class Retention:
    """How long each kind of stored row is kept once it is no longer needed.

    Every age is a :class:`~datetime.timedelta` counted back from the ``now`` of a prune;
    ``None`` keeps that kind forever.

    :param inbox: processed (``done``) webhook events, by the time they were received. Keep
        them at least as long as your providers retry a delivery, so that a late retry is still
        recognised as a duplicate (Stripe retries for up to 3 days; the default is 7 days).
        Pending events are never pruned.
    :param echoes: entries of the echo ledger, this long after they expired (an expired entry
        no longer matches anything; the default drops them as soon as they expire).
    :param outbox: settled (``done`` or ``failed``) fast-loop retries, by the time they
        settled. Pending ones are never pruned.
    :param cycles: reconciliation cycle reports, by the time the cycle started.
    :param counters: hourly counters, by their hour (the dashboard reads them: keep at least
        the longest period you chart).
    :param closed_items: closed queue items (resolved, auto-resolved, dismissed), by the time
        they were closed. Kept forever by default: they are the audit trail of what operators
        decided. Active items are never pruned.
    :param batch: rows removed per transaction (SQLite): a big prune runs as many short
        transactions, so webhook enqueues are never blocked for long.
    """

    inbox: timedelta | None = attrs.field(default=timedelta(days=7), validator=_age)
    echoes: timedelta | None = attrs.field(default=timedelta(0), validator=_age)
    outbox: timedelta | None = attrs.field(default=timedelta(days=7), validator=_age)
    cycles: timedelta | None = attrs.field(default=timedelta(days=90), validator=_age)
    counters: timedelta | None = attrs.field(default=timedelta(days=400), validator=_age)
    closed_items: timedelta | None = attrs.field(default=None, validator=_age)
    batch: int = attrs.field(default=5000, validator=_positive)
