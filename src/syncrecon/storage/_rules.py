"""The storage rules every backend applies, decided once: pure functions, no I/O.

A backend reads what a rule needs, calls the rule and writes what it returns; it never decides
again how a new queue item merges into an active one, when a lease is free or which rows a
retention removes. A new backend (PostgreSQL) calls the same functions, so the backends cannot
drift apart. Each function states the invariant it decides; ``tests/storage/test_storage_rules.py``
tests them without a backend, the contract tests check that every backend applies them.

Only the backends import this module (``import syncrecon`` does not load it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from .._clock import utc
from .._exceptions import StorageError
from .._retention import Retention
from ._base import Discrepancy, ItemUpdate, Status, Step, lease_lost

__all__ = [
    "PRUNE_KINDS",
    "check_fence",
    "check_reopen",
    "counter_hour",
    "counter_window",
    "escalation_kept",
    "first_sighting",
    "lease_free",
    "merge_base",
    "merge_item",
    "prune_cutoffs",
    "update_item",
]


# -- the queue -----------------------------------------------------------------------------------


def escalation_kept(active: Status, new: Status) -> bool:
    """Whether a new sighting of status ``new`` leaves an ``active`` item escalated.

    An escalation is never lowered: an escalated item waits for an operator, so a sighting that
    is only ``OPEN`` (an automatic fix planned, e.g. by the fast loop) does not turn it back
    into an open item. A sighting that closes the item (auto-resolved, resolved, dismissed)
    does close it, and an escalated sighting keeps it escalated anyway.
    """
    return Status(active) is Status.ESCALATED and Status(new) is Status.OPEN


def first_sighting(item: Discrepancy, at: datetime) -> Discrepancy:
    """A new item for a key with no active item, as stored by a step at ``at``.

    It is seen once (``times_seen`` 1) and updated at ``at``; everything else (``detected_at``,
    ``assignee``, ``note``, the values) is the item's own. The backend gives it its id.
    """
    return attrs.evolve(item, times_seen=1, updated_at=at)


def merge_item(active: Discrepancy, new: Discrepancy, at: datetime) -> Discrepancy:
    """The active item ``active`` after a new sighting ``new`` of its key, by a step at ``at``.

    One key has at most one active item, so a new item that names an active one updates it:

    - the new sighting's values, status, rule, category, explanation, resolution and cycle;
    - the active item's ``id``, first ``detected_at`` and ``assignee``;
    - the new ``note`` if it has one, else the active item's;
    - ``times_seen`` one more than the active item's, ``updated_at`` the step's time;
    - unless :func:`escalation_kept`: then it stays escalated, with the active item's rule and
      category (the reason it was escalated).

    The result may be closed (a sighting that closes the item): the backend then no longer
    counts it as the key's active item. Of ``active`` only the id, status, rule, category,
    ``detected_at``, assignee, note and ``times_seen`` are read, so a backend need not decode
    its stored values.
    """
    status, rule, category = Status(new.status), new.rule, new.category
    if escalation_kept(active.status, status):
        status, rule, category = Status.ESCALATED, active.rule, active.category
    return attrs.evolve(
        new,
        id=active.id,
        status=status,
        rule=rule,
        category=category,
        detected_at=active.detected_at,
        assignee=active.assignee,
        note=new.note if new.note is not None else active.note,
        times_seen=active.times_seen + 1,
        updated_at=at,
    )


def update_item(prior: Discrepancy, update: ItemUpdate, at: datetime) -> Discrepancy:
    """The item ``prior`` after ``update`` (an operator's or the cycle's decision) at ``at``.

    Status, resolution and ``resolved_at`` are the update's (``None`` clears them); the note is
    kept unless the update gives one; the assignee is kept when the update's is ``None``,
    cleared when it is ``""`` and set otherwise. The rest of ``prior`` is carried over unread:
    a backend that writes back only the fields named here may pass ``prior`` without its
    values.
    """
    assignee = prior.assignee if update.assignee is None else (update.assignee or None)
    return attrs.evolve(
        prior,
        status=update.status,
        resolution=update.resolution,
        resolved_at=update.resolved_at,
        note=update.note if update.note is not None else prior.note,
        assignee=assignee,
        updated_at=at,
    )


def check_reopen(item: Discrepancy, holder: int | None) -> None:
    """Refuse to make ``item`` active while another item (``holder``) is active for its key.

    ``holder`` is the id of the key's active item, if any (``item`` itself is fine). Raises
    :class:`~syncrecon.StorageError`: the step fails and changes nothing.
    """
    if Status(item.status).is_active and holder is not None and holder != item.id:
        raise StorageError(
            f"item {item.id} cannot be reopened: item {holder} is active for"
            f" the same record and field"
        )


# -- links ---------------------------------------------------------------------------------------


def merge_base(
    base: Mapping[str, Any], values: Mapping[str, Any], drop: Sequence[str]
) -> dict[str, Any]:
    """A link's base after a :class:`~syncrecon.storage.BaseUpdate` of ``values`` and ``drop``:
    the values set per field, then the dropped fields forgotten (a field both set and dropped
    is forgotten). The other fields keep their base.

    ``base`` is not changed; the result holds the very objects of ``base`` and ``values``
    (the backend copies them when it must).
    """
    merged = dict(base)
    merged.update(values)
    for name in drop:
        merged.pop(name, None)
    return merged


# -- leases --------------------------------------------------------------------------------------


def lease_free(holder: tuple[str, datetime] | None, owner: str, now: datetime) -> bool:
    """Whether ``owner`` may take a lease held by ``holder`` (``(owner, expires_at)``) at ``now``.

    Free when nobody holds it, when ``owner`` holds it already (taking it again renews it) or
    when it expired: a lease held until ``t`` is free at ``t``.
    """
    return holder is None or holder[0] == owner or utc(holder[1]) <= utc(now)


def check_fence(step: Step, holder: str | None) -> None:
    """Refuse ``step`` when its :attr:`Step.fence` lease is not held by the fence's owner.

    ``holder`` is the owner of the fence's lease now (``None`` when nobody holds it); expiry
    does not matter: a lease that expired but that nobody took is still its owner's. Raises
    :class:`~syncrecon.LeaseLostError`: the step changes nothing.
    """
    if step.fence is None:
        return
    name, owner = step.fence
    if holder != owner:
        raise lease_lost(name, owner, holder)


# -- counters and retention ------------------------------------------------------------------------


def counter_hour(at: datetime) -> datetime:
    """The hour (UTC) a counter increment made at ``at`` is added to."""
    return utc(at).replace(minute=0, second=0, microsecond=0)


def counter_window(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    """The hours ``counter_totals(since=..., until=...)`` adds up: ``(low, high)``.

    An hour counts when it starts at or after ``low`` and before ``high`` (``None``: no bound).
    ``since`` counts its whole hour; ``until`` excludes the hour that starts at it and includes
    the hour it falls in otherwise.
    """
    return (
        None if since is None else counter_hour(since),
        None if until is None else utc(until),
    )


PRUNE_KINDS = ("inbox", "echoes", "outbox", "cycles", "counters", "items")
"""What :meth:`~syncrecon.storage.MetricsStore.prune` removes, in the order it reports them."""


def prune_cutoffs(retention: Retention, now: datetime) -> dict[str, datetime]:
    """The kinds ``retention`` prunes at ``now``, each with its cutoff, in :data:`PRUNE_KINDS`
    order: a row of that kind goes when its time is before the cutoff.

    A kind whose age is ``None`` is kept (and not reported). The times compared are: an inbox
    entry's receipt (processed entries only), an echo's expiry, a settled outbox entry's
    ``next_at``, a cycle's start, a counter's hour (the cutoff is rounded down to its hour) and
    a closed item's ``resolved_at``. Pending events, pending outbox entries and active items are
    never removed.
    """
    now = utc(now)
    ages = {
        "inbox": retention.inbox,
        "echoes": retention.echoes,
        "outbox": retention.outbox,
        "cycles": retention.cycles,
        "counters": retention.counters,
        "items": retention.closed_items,
    }
    cuts: dict[str, datetime] = {}
    for kind in PRUNE_KINDS:
        age = ages[kind]
        if age is not None:
            cuts[kind] = counter_hour(now - age) if kind == "counters" else now - age
    return cuts
