"""The inbox processor: claim events per record, triage each, write, commit the outcomes.

Events are claimed in batches (a record's events all go to one worker, for ``lease``). In a
batch, oldest first, each event is triaged (:mod:`._triage` decides; this module reads what
each decision needs, just before it, and records the verdict); the writes it planned are
coalesced and made (:mod:`._apply`); then every outcome, base, order time, queue item and
counter of the batch is committed in one transaction, only while this worker still holds the
events' claim.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from .._codec import fingerprint
from .._connector import Caller
from .._drift import SCHEMA_DRIFT_CATEGORY
from .._models import Side
from .._sync import SyncDefinition
from ..storage._base import InboxEntry, Link, Status, Step
from ._apply import write_planned
from ._events import ChangeEvent, EventOutcome
from ._inbox import outcome_counter, stored_event
from ._triage import (
    Candidate,
    FieldFacts,
    Match,
    Planned,
    Verdict,
    check_field,
    check_order,
    decide,
    match,
    screen,
)

if TYPE_CHECKING:
    from ._handler import WebhookHandler, WebhookSource


def drain_inbox(handler: WebhookHandler, caller: Caller) -> tuple[dict[str, int], int]:
    """Process claimed batches until the inbox has none: ``(outcomes counted, writes)``."""
    outcomes: dict[str, int] = {}
    writes = 0
    while True:
        claimed = handler.storage.claim_events(
            handler.owner, limit=handler.batch_size, now=handler.clock.now(), lease=handler.lease
        )
        if not claimed:
            return outcomes, writes
        batch = Batch(handler, caller)
        batch.run(claimed)
        writes += batch.writes
        for outcome, n in batch.outcomes.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + n


class Batch:
    """One claimed batch of inbox entries, processed together so writes coalesce."""

    def __init__(self, handler: WebhookHandler, caller: Caller) -> None:
        self.h = handler
        self.caller = caller
        self.storage = handler.storage
        self.now = handler.clock.now()
        # The outcomes commit only while this worker still holds the events' claim.
        self.step = Step(at=self.now, claim_owner=handler.owner)
        self.outcomes: dict[str, int] = {}
        self.writes = 0
        self.planned: list[Planned] = []
        self._fields: dict[str, FieldFacts] = {}

    def run(self, claimed: Sequence[InboxEntry]) -> None:
        """Triage every event, oldest first; make the planned writes; commit it all."""
        events = []
        for entry in claimed:
            src = self.h.sources.get(entry.source)
            if src is None:
                self.done(entry, None, EventOutcome.IGNORED, "the source is no longer configured")
                continue
            events.append((entry, src, stored_event(entry.event)))
        # Oldest first, so a later change to the same field supersedes an earlier one.
        events.sort(key=lambda t: (t[2].occurred_at, t[0].id or 0))
        for entry, src, event in events:
            self._triage(entry, src, event)
        write_planned(self)
        self.storage.commit(self.step)

    def done(
        self, entry: InboxEntry, src: WebhookSource | None, outcome: EventOutcome, note: str
    ) -> None:
        """Record an event's outcome (and count it for the dashboard)."""
        assert entry.id is not None
        self.step.events_done.append((entry.id, outcome.value, note))
        self.outcomes[outcome.value] = self.outcomes.get(outcome.value, 0) + 1
        if src is not None:
            self.step.counters.append(outcome_counter(src, outcome))

    # One event: each read just before the check that needs it ------------------------------

    def _triage(self, entry: InboxEntry, src: WebhookSource, event: ChangeEvent) -> None:
        """Take one event through the checks of :mod:`._triage`, in order, until one settles
        it; what a check needs is read only when the event gets that far."""
        found: Verdict | Match | Candidate | Planned | None = screen(src, event)
        if found is None:
            found = match(src, event, self._link(src, event))
        if isinstance(found, Match):
            found = check_field(found, self._field_facts(src.sync), now=self.now)
        if isinstance(found, Candidate):
            found = check_order(found, self._last_applied(found))
        if isinstance(found, Candidate):
            found = decide(entry, found, echo=self._unspent_echo(found), now=self.now)
        if isinstance(found, Planned):
            self.planned.append(found)
        else:
            assert isinstance(found, Verdict)
            self._record(entry, src, found)

    def _record(self, entry: InboxEntry, src: WebhookSource, verdict: Verdict) -> None:
        """Record a verdict: what it says to record beside the event, then its outcome."""
        if verdict.spend_echo is not None:
            self.step.drop_echoes.append(verdict.spend_echo)
        if verdict.quarantine is not None:
            facts = self._field_facts(src.sync)
            self._fields[src.sync.name] = attrs.evolve(
                facts, quarantined=facts.quarantined | {verdict.quarantine}
            )
        if verdict.item is not None:
            self.step.new_items.append(verdict.item)
        if verdict.newest is not None:
            self.step.field_times.append(verdict.newest)
            self._supersede(*verdict.newest[:3])
        self.done(entry, src, verdict.outcome, verdict.note)

    def _supersede(self, sync: str, left_key: str, field: str) -> None:
        """Drop older planned writes of one field: a newer change in this batch replaced them."""
        keep = []
        for p in self.planned:
            if (p.source.sync.name, p.left_key, p.fm.left) == (sync, left_key, field):
                self.done(p.entry, p.source, EventOutcome.STALE, "superseded in its batch")
            else:
                keep.append(p)
        self.planned = keep

    # What the checks read -------------------------------------------------------------------

    def _link(self, src: WebhookSource, event: ChangeEvent) -> Link | None:
        return self.storage.get_links(src.sync.name, src.side, [event.key]).get(event.key)

    def _field_facts(self, sync: SyncDefinition) -> FieldFacts:
        """Quarantined fields, fields waiting for an operator, known types: once per batch."""
        found = self._fields.get(sync.name)
        if found is None:
            drifted = self.storage.list_items(
                sync=sync.name,
                statuses=[Status.ESCALATED],
                category=SCHEMA_DRIFT_CATEGORY,
                limit=10_000,
            )
            waiting = self.storage.active_items(sync.name).values()
            schemas: Mapping[tuple[Side, str], Mapping[str, Any]] = {
                (f.side, f.field): f.info for f in self.storage.get_schemas(sync.name)
            }
            found = FieldFacts(
                quarantined=frozenset(
                    i.field for i in drifted if not i.left_key and not i.right_key
                ),
                waiting=frozenset(
                    (i.left_key or "", i.right_key or "", i.field)
                    for i in waiting
                    if i.status is Status.ESCALATED
                ),
                schemas=schemas,
            )
            self._fields[sync.name] = found
        return found

    def _last_applied(self, c: Candidate) -> datetime | None:
        """The source time of the change last applied to the candidate's field."""
        key = (c.link.left_key, c.fm.left)
        return self.storage.get_field_times(c.source.sync.name, [key]).get(key)

    def _unspent_echo(self, c: Candidate) -> int | None:
        """An echo entry of the candidate's value that this batch has not used yet."""
        src, event = c.source, c.event
        echo = self.storage.find_echo(
            src.sync.name, src.side, event.key, str(event.field), fingerprint(event.value), self.now
        )
        return None if echo is None or echo in self.step.drop_echoes else echo
