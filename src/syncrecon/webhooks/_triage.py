"""Triage: what becomes of one webhook event. Pure decisions: no I/O, no clock.

The processor (:mod:`._process`) reads what each check needs just before it, hands it in as
frozen values, and records what comes back: a :class:`Verdict` (the event's outcome, with
what to record beside it) ends the event; a :class:`Match`, then a :class:`Candidate`, goes on
to the next check; a :class:`Planned` write goes on to the coalesced writes (:mod:`._apply`).
In the order they apply:

1. :func:`screen`, before anything is read: another object type (ignored); a creation or a
   merge (matched by reconciliation).
2. :func:`match`, given the record's link: not linked yet; a deletion (decided by
   reconciliation); a field that is not mapped (ignored) or does not flow this way.
3. :func:`check_field`, given what is known about the sync's fields (:class:`FieldFacts`):
   quarantined (schema drift); waiting for an operator; a value that does not fit the field's
   known type (drift: the field is quarantined now); a value that does not map.
4. :func:`check_order`, given the time of the change last applied to the field: stale.
5. :func:`decide`, given an unspent echo entry of the value: syncrecon's own write coming
   back (echo); equal to the last-synced value (echo, and the field's newest change); the
   field's policy does not take it (a queue item); a value that does not map to the target;
   otherwise a write is planned.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from .._drift import SCHEMA_DRIFT_CATEGORY, fits
from .._models import Side
from .._policy import MISSING, FieldState, values_equal
from .._policy import Outcome as Decided
from .._sync import FieldMap, SyncDefinition
from ..storage._base import Discrepancy, InboxEntry, Link, Status
from ._events import ChangeEvent, EventKind, EventOutcome

if TYPE_CHECKING:
    from ._handler import WebhookSource

OrderMove = tuple[str, str, str, datetime]
"""``(sync, left key, field, source time)``: the newest change of a field, for its order guard."""


@attrs.frozen(kw_only=True)
class Verdict:
    """An event's outcome, and what the batch records with it.

    ``item`` is a new queue item (the policy's decision, or schema drift); ``quarantine`` a
    field (left name) whose writes stop from now on; ``spend_echo`` the echo entry the event
    used up; ``newest`` says the event is its field's newest change though nothing is written:
    the field's order guard moves to its time and older writes of the field planned in the
    same batch are cancelled.
    """

    outcome: EventOutcome
    note: str
    item: Discrepancy | None = None
    quarantine: str | None = None
    spend_echo: int | None = None
    newest: OrderMove | None = None


@attrs.frozen(kw_only=True)
class Match:
    """An update of a mapped field of a linked record, flowing to the other side."""

    source: WebhookSource
    event: ChangeEvent
    link: Link
    fm: FieldMap


@attrs.frozen(kw_only=True)
class FieldFacts:
    """What is stored about a sync's fields, read once per batch.

    ``quarantined``: the fields (left names) whose writes are stopped by schema drift;
    ``waiting``: the ``(left key, right key, field)`` items escalated to an operator;
    ``schemas``: each ``(side, field)``'s known type.
    """

    quarantined: frozenset[str]
    waiting: frozenset[tuple[str, str, str]]
    schemas: Mapping[tuple[Side, str], Mapping[str, Any]]


@attrs.frozen(kw_only=True)
class Candidate:
    """A matched change whose value fits its field and maps to the left vocabulary."""

    source: WebhookSource
    event: ChangeEvent
    link: Link
    fm: FieldMap
    value: Any  # left vocabulary


@attrs.frozen(kw_only=True)
class Planned:
    """A write the fast loop decided, before it is coalesced and the target re-read."""

    entry: InboxEntry
    event: ChangeEvent
    source: WebhookSource
    fm: FieldMap
    left_key: str
    right_key: str
    value: Any  # left vocabulary
    base: Any  # left vocabulary (what the target should still hold)
    rule: str


def screen(src: WebhookSource, event: ChangeEvent) -> Verdict | None:
    """What needs nothing stored to decide: another object type, a creation or a merge."""
    if src.object_type is not None and event.object_type != src.object_type:
        return Verdict(outcome=EventOutcome.IGNORED, note=f"object type {event.object_type!r}")
    if event.kind in (EventKind.CREATE, EventKind.MERGE):
        return _deferred(f"{event.kind.value}: matched by reconciliation")
    return None


def match(src: WebhookSource, event: ChangeEvent, link: Link | None) -> Verdict | Match:
    """The linked record's mapped field the event changes, when it may be written this way."""
    if link is None:
        return _deferred("not linked yet: reconciliation matches it")
    if event.kind is EventKind.DELETE:
        # Deletions need the guard and the source-of-truth rule of the slow loop.
        return _deferred("deletion: decided by reconciliation")
    fm = mapped_field(src.sync, src.side, event.field)
    if fm is None:
        return Verdict(outcome=EventOutcome.IGNORED, note=f"field {event.field!r} is not mapped")
    if not fm.direction.allows_write(src.side.other):
        return _deferred("the field does not flow this way")
    return Match(source=src, event=event, link=link, fm=fm)


def check_field(m: Match, facts: FieldFacts, *, now: datetime) -> Verdict | Candidate:
    """Whether the field takes writes now and the value fits it and maps to the left."""
    src, event, link, fm = m.source, m.event, m.link, m.fm
    if fm.left in facts.quarantined:
        return _deferred("the field is quarantined (schema drift)")
    if (link.left_key, link.right_key, fm.left) in facts.waiting:
        return _deferred("the field waits for an operator")
    known = facts.schemas.get((src.side, str(event.field)))
    if known is not None and not fits(event.value, known):
        return Verdict(
            outcome=EventOutcome.DEFERRED,
            note="the value does not fit the field's type",
            item=_drift(src, fm, event, known, now),
            quarantine=fm.left,
        )
    try:
        value = event.value if src.side is Side.LEFT else fm.transform.to_left(event.value)
    except Exception as exc:  # a transform refusing a value is data, recorded in the note
        return _deferred(f"the value does not map: {exc}")
    return Candidate(source=src, event=event, link=link, fm=fm, value=value)


def check_order(c: Candidate, last_applied: datetime | None) -> Verdict | Candidate:
    """Stale: not newer than the change last applied to the field."""
    if last_applied is not None and c.event.occurred_at <= last_applied:
        return Verdict(
            outcome=EventOutcome.STALE, note=f"older than the change applied at {last_applied}"
        )
    return c


def decide(
    entry: InboxEntry, c: Candidate, *, echo: int | None, now: datetime
) -> Verdict | Planned:
    """An echo, a value back at the base, the field's policy, then the target's vocabulary.

    ``echo`` is an unspent echo entry of the value (one this batch has not used yet).
    """
    src, event, link, fm, value = c.source, c.event, c.link, c.fm, c.value
    sync = src.sync
    if echo is not None:
        return Verdict(
            outcome=EventOutcome.ECHO,
            note="the webhook of syncrecon's own write",
            spend_echo=echo,
        )
    base = link.base.get(fm.left, MISSING)
    if base is not MISSING and values_equal(value, base):
        # A change back to the synced value is still the newest change of this field: it
        # moves the order guard and cancels an older change planned in this batch.
        return Verdict(
            outcome=EventOutcome.ECHO,
            note="equal to the last-synced value",
            newest=(sync.name, link.left_key, fm.left, event.occurred_at),
        )
    other = value if base is MISSING else base
    left, right = (value, other) if src.side is Side.LEFT else (other, value)
    state = FieldState(
        field=fm.left,
        left=left,
        right=right,
        base=base,
        left_modified_at=event.occurred_at if src.side is Side.LEFT else None,
        right_modified_at=event.occurred_at if src.side is Side.RIGHT else None,
    )
    decision = fm.decide(state)
    wins = Decided.TAKE_LEFT if src.side is Side.LEFT else Decided.TAKE_RIGHT
    if decision.outcome is not wins:
        item = Discrepancy(
            sync=sync.name,
            field=fm.left,
            status=Status.ESCALATED if decision.escalated else Status.OPEN,
            detected_at=now,
            left_key=link.left_key,
            right_key=link.right_key,
            left_value=state.left,
            right_value=state.right,
            base_value=None if base is MISSING else base,
            has_base=base is not MISSING,
            rule=decision.rule,
            category=decision.category,
            explanation=decision.explain(),
            resolution=None if decision.escalated else decision.value,
        )
        return _deferred(f"{decision.rule}: {decision.reason}", item=item)
    if src.side is Side.LEFT:
        # The write goes right: the value (and the base the target is checked against) must
        # map there. One that does not is left to the slow loop, which escalates it; it never
        # fails the batch it came in.
        try:
            fm.transform.to_right(value)
            if base is not MISSING:
                fm.transform.to_right(base)
        except Exception as exc:  # a transform refusing a value is data, recorded in the note
            return _deferred(
                f"the value does not map to {sync.connector(Side.RIGHT).name}:"
                f" {type(exc).__name__}: {exc}"
            )
    return Planned(
        entry=entry,
        event=event,
        source=src,
        fm=fm,
        left_key=link.left_key,
        right_key=link.right_key,
        value=value,
        base=base,
        rule=decision.rule,
    )


def mapped_field(sync: SyncDefinition, side: Side, name: str | None) -> FieldMap | None:
    """The field mapping of the field called ``name`` on ``side``, if one maps it."""
    for fm in sync.fields:
        if (fm.left if side is Side.LEFT else fm.right) == name:
            return fm
    return None


def _deferred(note: str, *, item: Discrepancy | None = None) -> Verdict:
    return Verdict(outcome=EventOutcome.DEFERRED, note=note, item=item)


def _drift(
    src: WebhookSource,
    fm: FieldMap,
    event: ChangeEvent,
    known: Mapping[str, Any],
    now: datetime,
) -> Discrepancy:
    """The escalated item of a field whose webhook value does not fit its known type."""
    return Discrepancy(
        sync=src.sync.name,
        field=fm.left,
        status=Status.ESCALATED,
        detected_at=now,
        rule="schema",
        category=SCHEMA_DRIFT_CATEGORY,
        explanation=f"a webhook from {src.system} carried {event.value!r} for"
        f" {event.field!r}, which does not fit its known type {known.get('type')!r}"
        f" (options {known.get('options')!r}). Writes to this field are stopped until"
        " an operator updates the mapping and resolves this item.",
    )
