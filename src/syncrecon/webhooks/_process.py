"""The inbox processor: claim events per record, triage each, write, commit the outcomes.

Events are claimed in batches (a record's events all go to one worker, for ``lease``). What
the checks of the batch's events need is read first, once for the whole batch: per sync and
side, the links of their records and the echo entries of their values (one query each); per
sync, the order times of their fields and what is known about the sync's fields. Then, oldest
first, each event is triaged (:mod:`._triage` decides; this module hands it what was read and
records the verdict); the writes it planned are coalesced and made (:mod:`._apply`); then every
outcome, base, order time, queue item and counter of the batch is committed in one
transaction, only while this worker still holds the events' claim.

What was read stays true while the batch triages: the claim keeps other workers (and a
cycle's write batches) off these records, and the batch itself commits nothing until every
event is triaged. What an earlier event of the batch decides reaches the later ones through
the batch: a spent echo entry (``drop_echoes``), a newer change of a field (superseding), a
quarantined field (the field facts); events are triaged oldest first, so a later event of a
field is never older than an earlier one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import attrs

from .._codec import fingerprint
from .._connector import Caller
from .._drift import SCHEMA_DRIFT_CATEGORY
from .._models import Side
from .._sync import SyncDefinition
from ..storage._base import (
    BatchReadStore,
    Discrepancy,
    InboxEntry,
    ItemKey,
    Link,
    Status,
    Step,
    Storage,
)
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
    mapped_field,
    match,
    screen,
)

if TYPE_CHECKING:
    from ._handler import WebhookHandler, WebhookSource

    Event = tuple[InboxEntry, WebhookSource, ChangeEvent]


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


def batch_reads(storage: Storage) -> BatchReadStore | None:
    """``storage`` as a :class:`BatchReadStore`, or ``None`` when it lacks the optional role
    (its events are then read per event, with the same outcomes).

    Looked up with ``getattr``, not ``isinstance``: a wrapper that forwards its attributes
    (``__getattr__``) has the role too, on every Python (from 3.12 a protocol's ``isinstance``
    does not call ``__getattr__``).
    """
    names = ("find_echoes", "active_items_of")
    if all(callable(getattr(storage, name, None)) for name in names):
        return cast(BatchReadStore, storage)
    return None


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
        self._bulk = batch_reads(handler.storage)
        # Read ahead for the whole batch (:meth:`_read_ahead`); a sync and side missing here
        # (none of its events got that far) is read per event.
        self._links: dict[tuple[str, Side], dict[str, Link]] = {}
        self._times: dict[str, dict[tuple[str, str], datetime]] = {}
        self._echoes: dict[tuple[str, Side], dict[tuple[str, str, str], int]] = {}

    def run(self, claimed: Sequence[InboxEntry]) -> None:
        """Triage every event, oldest first; make the planned writes; commit it all."""
        events: list[Event] = []
        for entry in claimed:
            src = self.h.sources.get(entry.source)
            if src is None:
                self.done(entry, None, EventOutcome.IGNORED, "the source is no longer configured")
                continue
            events.append((entry, src, stored_event(entry.event)))
        # Oldest first, so a later change to the same field supersedes an earlier one.
        events.sort(key=lambda t: (t[2].occurred_at, t[0].id or 0))
        self._read_ahead(events)
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

    def _read_ahead(self, events: Sequence[Event]) -> None:
        """Read what the checks of ``events`` need, a few queries for the whole batch: per sync
        and side, the links of the records that pass :func:`screen`, then the echo entries of
        the linked ones (with :class:`BatchReadStore`); per sync, the order times of the
        mapped fields they change. The field facts follow when first needed."""
        keys: dict[tuple[str, Side], set[str]] = {}
        for _, src, event in events:
            if screen(src, event) is None:
                keys.setdefault((src.sync.name, src.side), set()).add(event.key)
        for (sync, side), wanted in keys.items():
            self._links[(sync, side)] = self.storage.get_links(sync, side, sorted(wanted))
        fields: dict[str, set[tuple[str, str]]] = {}
        linked: dict[tuple[str, Side], set[str]] = {}
        for _, src, event in events:
            link = self._links.get((src.sync.name, src.side), {}).get(event.key)
            fm = None if link is None else mapped_field(src.sync, src.side, event.field)
            if link is not None and fm is not None:
                fields.setdefault(src.sync.name, set()).add((link.left_key, fm.left))
                linked.setdefault((src.sync.name, src.side), set()).add(event.key)
        for sync, wanted_fields in fields.items():
            self._times[sync] = self.storage.get_field_times(sync, sorted(wanted_fields))
        if self._bulk is not None:
            for (sync, side), wanted in linked.items():
                self._echoes[(sync, side)] = self._bulk.find_echoes(
                    sync, side, sorted(wanted), self.now
                )

    # One event: what each check needs, read ahead or just before it ------------------------

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
        links = self._links.get((src.sync.name, src.side))
        if links is None:
            links = self.storage.get_links(src.sync.name, src.side, [event.key])
        return links.get(event.key)

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
            waiting = self._active_items(sync.name).values()
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

    def _active_items(self, sync: str) -> dict[ItemKey, Discrepancy]:
        """The active items of the batch's linked records (every active item of ``sync`` from
        a storage without :class:`BatchReadStore`: the same answer for these records)."""
        if self._bulk is None:
            return self.storage.active_items(sync)
        left_keys = {
            link.left_key
            for (name, _), links in self._links.items()
            if name == sync
            for link in links.values()
        }
        return self._bulk.active_items_of(sync, sorted(left_keys)) if left_keys else {}

    def _last_applied(self, c: Candidate) -> datetime | None:
        """The source time of the change last applied to the candidate's field."""
        key = (c.link.left_key, c.fm.left)
        times = self._times.get(c.source.sync.name)
        if times is None:
            times = self.storage.get_field_times(c.source.sync.name, [key])
        return times.get(key)

    def _unspent_echo(self, c: Candidate) -> int | None:
        """An echo entry of the candidate's value that this batch has not used yet."""
        src, event = c.source, c.event
        field, fp = str(event.field), fingerprint(event.value)
        found = self._echoes.get((src.sync.name, src.side))
        if found is None:
            echo = self.storage.find_echo(src.sync.name, src.side, event.key, field, fp, self.now)
        else:
            echo = found.get((event.key, field, fp))
        return None if echo is None or echo in self.step.drop_echoes else echo
