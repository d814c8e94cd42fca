"""The fast loop: verify, store, de-duplicate, order, suppress echoes, decide and write.

:class:`WebhookHandler` answers webhook requests (framework-free: a :class:`WebhookRequest`
in, a :class:`WebhookResponse` out) and processes the events it stored:

request -> source (404) -> size (413) -> signature and timestamp (401) -> parse (400) ->
durable inbox, duplicates dropped (2xx only now) -> [deferred: a worker drains the inbox] ->
per event: mapped field? linked? older than the last applied change (stale)? our own write
coming back (echo)? equal to the base (no-op)? -> the field's policy decides, exactly as in
the slow loop -> coalesced batch writes, each target re-read first, and the echo entries of
each write (value and the time of the edit it copies) committed before its call -> outcome,
base, order time and counters in one transaction. A write that keeps failing goes to the
outbox; an outbox entry that runs out of tries becomes a queue item. Nothing is dropped.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio.to_thread
import attrs

from .._clock import Clock, SystemClock
from .._codec import fingerprint
from .._connector import (
    Caller,
    RetrySettings,
    read_batch,
    write_batch,
    write_batch_or_failures,
)
from .._drift import SCHEMA_DRIFT_CATEGORY, fits
from .._exceptions import (
    ConnectorError,
    MalformedPayloadError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    StorageError,
    UnknownSourceError,
    WebhookError,
)
from .._models import Change, ChangeOp, Record, Side, WriteResult
from .._policy import MISSING, FieldState, values_equal
from .._policy import Outcome as Decided
from .._sync import FieldMap, SyncDefinition
from ..storage._base import (
    BaseUpdate,
    Counter,
    Discrepancy,
    Echo,
    InboxEntry,
    OutboxEntry,
    OutboxUpdate,
    Status,
    Step,
    Storage,
)
from ._events import (
    ChangeEvent,
    EventKind,
    EventOutcome,
    PayloadParser,
    WebhookRequest,
    WebhookResponse,
)
from ._verify import Verifier

__all__ = ["ProcessReport", "WebhookHandler", "WebhookSource", "fingerprint"]

log = logging.getLogger("syncrecon.webhooks")


@attrs.frozen(kw_only=True)
class WebhookSource:
    """Where webhooks come from: a system on one side of a sync, its verifier and parser.

    ``name`` is the last segment of the URL the provider posts to (``/webhooks/hubspot``).
    Events about another ``object_type`` than the sync's are ignored (when it is given).
    """

    name: str
    sync: SyncDefinition
    side: Side = attrs.field(converter=Side)
    verifier: Verifier
    parser: PayloadParser
    object_type: str | None = None

    @property
    def system(self) -> str:
        """The name of the system the webhooks come from."""
        return self.sync.connector(self.side).name

    @property
    def direction(self) -> str:
        """``"from->to"`` system names, the dashboard's direction label."""
        return f"{self.system}->{self.sync.connector(self.side.other).name}"


@attrs.frozen(kw_only=True)
class ProcessReport:
    """What one drain of the inbox and the outbox did: outcomes counted, writes made."""

    outcomes: Mapping[str, int]
    writes: int
    outbox_retried: int
    outbox_exhausted: int

    @property
    def processed(self) -> int:
        """Events processed."""
        return sum(self.outcomes.values())


@attrs.define
class _Planned:
    """A write the fast loop decided, before it is coalesced and re-read."""

    entry: InboxEntry
    event: ChangeEvent
    source: WebhookSource
    fm: FieldMap
    left_key: str
    right_key: str
    value: Any  # left vocabulary
    base: Any  # left vocabulary (what the target should still hold)
    rule: str


class WebhookHandler:
    """The fast loop's front door and its processor.

    ``inline=False`` (the default) stores each event and answers at once; a worker calls
    :meth:`process_pending` (or runs ``python -m syncrecon worker``) to drain the inbox.
    ``inline=True`` processes right after storing, for simple hosts. ``max_body_bytes`` caps
    a request's body. ``echo_ttl`` is how long a written value is remembered (recorded before
    the write, with the time of the edit it copies) so the webhook it causes is recognized and
    a cycle that reads it compares that edit's time, not the write's. Failed writes are
    retried from the outbox up to ``outbox_attempts`` times with exponential backoff from
    ``outbox_backoff``.

    ``verify_source=True`` re-reads the events' source records in one batch
    next to the targets' re-read, and drops as ``stale`` an event whose value the source no
    longer holds (a newer change's webhook is late or lost): one extra read call per batch,
    counted, rather than an old value written over a newer one.
    """

    def __init__(
        self,
        sources: Iterable[WebhookSource],
        storage: Storage,
        *,
        clock: Clock | None = None,
        retry: RetrySettings | None = None,
        inline: bool = False,
        max_body_bytes: int = 1_000_000,
        echo_ttl: timedelta = timedelta(minutes=15),
        batch_size: int = 500,
        lease: timedelta = timedelta(minutes=2),
        outbox_attempts: int = 6,
        outbox_backoff: timedelta = timedelta(seconds=30),
        verify_source: bool = False,
    ) -> None:
        self.sources = {s.name: s for s in sources}
        if not self.sources:
            raise ValueError("a webhook handler needs at least one source")
        self.storage = storage
        self.clock: Clock = clock or SystemClock()
        self.retry = retry or RetrySettings()
        self.inline = inline
        self.max_body_bytes = max_body_bytes
        self.echo_ttl = echo_ttl
        self.batch_size = batch_size
        self.lease = lease
        self.outbox_attempts = outbox_attempts
        self.outbox_backoff = outbox_backoff
        self.verify_source = verify_source
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"
        self.storage.setup()

    def __repr__(self) -> str:
        return f"WebhookHandler(sources={sorted(self.sources)}, storage={self.storage!r})"

    # -- the front door ----------------------------------------------------------------------

    def handle(self, request: WebhookRequest, *, source: str | None = None) -> WebhookResponse:
        """Answer one webhook request. Never raises for anything the sender controls.

        ``source`` names the source; by default it is the last segment of the URL's path.
        """
        return self._handle(request, source, in_worker_thread=False)

    async def ahandle(
        self, request: WebhookRequest, *, source: str | None = None
    ) -> WebhookResponse:
        """:meth:`handle` for async hosts; storage and connector work runs in a thread."""

        def work() -> WebhookResponse:
            return self._handle(request, source, in_worker_thread=True)

        return await anyio.to_thread.run_sync(work)

    def reject_too_large(self, method: str, url: str) -> WebhookResponse:
        """Count and answer a request whose body is over ``max_body_bytes`` (413)."""
        name = WebhookRequest(method=method, url=url).path.rstrip("/").rsplit("/", 1)[-1]
        error = PayloadTooLargeError(f"the body is over {self.max_body_bytes} bytes")
        return self._reject(self.sources.get(name), error)

    def _handle(
        self, request: WebhookRequest, name: str | None, *, in_worker_thread: bool
    ) -> WebhookResponse:
        name = name or request.path.rstrip("/").rsplit("/", 1)[-1]
        src = self.sources.get(name)
        try:
            if src is None:
                raise UnknownSourceError(f"no webhook source named {name!r}")
            if request.method.upper() != "POST":
                raise MethodNotAllowedError("webhooks are POSTed")
            if len(request.body) > self.max_body_bytes:
                raise PayloadTooLargeError(f"the body is over {self.max_body_bytes} bytes")
            src.verifier.verify(
                method=request.method, url=request.url, headers=request.headers, body=request.body
            )
            try:
                events = list(src.parser.parse(request.body, request.headers))
            except WebhookError:
                raise
            except Exception as exc:  # a parser must raise MalformedPayloadError; be safe
                raise MalformedPayloadError(f"unreadable payload: {type(exc).__name__}") from exc
        except WebhookError as exc:
            return self._reject(src, exc)
        try:
            ids = self._enqueue(src, events)
        except StorageError:
            log.exception("could not store webhook events from %s", name)
            return WebhookResponse.json(503, {"error": "temporarily unavailable; retry"})
        stored = sum(1 for i in ids if i is not None)
        if self.inline and stored:
            try:
                self._process(in_worker_thread=in_worker_thread)
            except Exception:  # the events are stored: a worker or the next request retries
                log.exception("inline processing failed; events stay in the inbox")
        return WebhookResponse.json(200, {"accepted": stored, "duplicates": len(ids) - stored})

    def _reject(self, src: WebhookSource | None, error: WebhookError) -> WebhookResponse:
        labels = {
            "source": src.name if src else "unknown",
            "direction": src.direction if src else "unknown",
            "outcome": EventOutcome.REJECTED.value,
            "reason": type(error).__name__,
        }
        try:
            self.storage.enqueue_events(
                [], [Counter(metric="webhook_events", labels=labels)], self.clock.now()
            )
        except StorageError:
            log.exception("could not count a rejected webhook")
        return WebhookResponse.json(error.status_code, {"error": str(error)})

    def _enqueue(self, src: WebhookSource, events: Sequence[ChangeEvent]) -> list[int | None]:
        now = self.clock.now()
        entries = [
            InboxEntry(
                source=src.name,
                dedupe_key=e.dedupe_key,
                event=_event_data(e),
                received_at=now,
                record=f"{src.sync.name}:{src.side.value}:{e.key}",
            )
            for e in events
        ]
        # Two identical deliveries inside one request count as one.
        unique: dict[str, InboxEntry] = {}
        for entry in entries:
            unique.setdefault(entry.dedupe_key, entry)
        ids = self.storage.enqueue_events(list(unique.values()), [], now)
        dupes = len(entries) - sum(1 for i in ids if i is not None)
        if dupes:
            self.storage.enqueue_events(
                [], [self._counter(src, EventOutcome.DUPLICATE, dupes)], now
            )
        return ids + [None] * (len(entries) - len(unique))

    @staticmethod
    def _counter(src: WebhookSource, outcome: EventOutcome, amount: int = 1) -> Counter:
        return Counter(
            metric="webhook_events",
            labels={"source": src.name, "direction": src.direction, "outcome": outcome.value},
            amount=amount,
        )

    # -- processing --------------------------------------------------------------------------

    def process_pending(self) -> ProcessReport:
        """Drain the inbox and retry the outbox entries that are due (sync hosts, workers)."""
        return self._process(in_worker_thread=False)

    async def aprocess_pending(self) -> ProcessReport:
        """:meth:`process_pending` for async hosts."""
        return await anyio.to_thread.run_sync(lambda: self._process(in_worker_thread=True))

    def _process(self, *, in_worker_thread: bool) -> ProcessReport:
        outcomes: dict[str, int] = {}
        writes = retried = exhausted = 0
        with Caller(self.retry, in_worker_thread=in_worker_thread) as caller:
            while True:
                claimed = self.storage.claim_events(
                    self.owner, limit=self.batch_size, now=self.clock.now(), lease=self.lease
                )
                if not claimed:
                    break
                batch = _Batch(self, caller)
                batch.run(claimed)
                writes += batch.writes
                for outcome, n in batch.outcomes.items():
                    outcomes[outcome] = outcomes.get(outcome, 0) + n
            r, x, w = self._retry_outbox(caller)
            retried, exhausted, writes = retried + r, exhausted + x, writes + w
            self._count_requests(caller)
        return ProcessReport(
            outcomes=dict(sorted(outcomes.items())),
            writes=writes,
            outbox_retried=retried,
            outbox_exhausted=exhausted,
        )

    def _count_requests(self, caller: Caller) -> None:
        """The HTTP requests this round made, by system and endpoint, for the dashboard."""
        counters = [
            Counter(
                metric="api_requests",
                labels={"system": system, "endpoint": endpoint, "loop": "fast"},
                amount=n,
            )
            for system, by_endpoint in sorted(caller.requests.items())
            for endpoint, n in sorted(by_endpoint.items())
            if n
        ]
        if counters:
            self.storage.commit(Step(at=self.clock.now(), counters=counters))

    def _retry_outbox(self, caller: Caller) -> tuple[int, int, int]:
        retried = exhausted = writes = 0
        while True:
            now = self.clock.now()
            due = self.storage.claim_outbox(
                self.owner, limit=self.batch_size, now=now, lease=self.lease
            )
            if not due:
                return retried, exhausted, writes
            for entry in due:
                retried += 1
                ok, gave_up = self._retry_one(caller, entry)
                writes += ok
                exhausted += gave_up

    def _retry_one(self, caller: Caller, entry: OutboxEntry) -> tuple[int, int]:
        sync = self._sync(entry.sync)
        connector = sync.connector(entry.side)
        now = self.clock.now()
        step = Step(at=now)
        assert entry.id is not None
        quarantined = {
            i.field
            for i in self.storage.list_items(
                sync=entry.sync, statuses=[Status.ESCALATED], category=SCHEMA_DRIFT_CATEGORY
            )
            if not i.left_key and not i.right_key
        }
        if quarantined & set(entry.base):
            step.outbox_update.append(  # held, not spent: it goes once the quarantine lifts
                OutboxUpdate(
                    id=entry.id,
                    status="pending",
                    attempts=entry.attempts,
                    next_at=now + self.outbox_backoff,
                    last_error="held: the field is quarantined (schema drift)",
                )
            )
            self.storage.commit(step)
            return 0, 0
        newest = self.storage.get_field_times(
            entry.sync, [(entry.left_key, name) for name in entry.base]
        )
        if entry.source_time is not None and any(t > entry.source_time for t in newest.values()):
            step.outbox_update.append(
                OutboxUpdate(
                    id=entry.id,
                    status="done",
                    attempts=entry.attempts,
                    next_at=now,
                    last_error="superseded by a newer change of the field",
                )
            )
            self.storage.commit(step)
            return 0, 0
        # Before the re-read, as in a batch: the entries exist before the value can.
        times = dict.fromkeys(entry.fields, entry.source_time)
        echoes = self._echoes(sync, entry.side, entry.key, entry.fields, now, times)
        self._record_echoes(now, echoes)
        try:
            current = {r.key: r for r in read_batch(caller, connector, [entry.key])}
            record = current.get(entry.key)
            if record is None or record.deleted:
                step.outbox_update.append(
                    OutboxUpdate(
                        id=entry.id,
                        status="done",
                        attempts=entry.attempts + 1,
                        next_at=now,
                        last_error="the target is gone; nothing to write",
                    )
                )
                self.storage.commit(step)
                return 0, 0
            if any(not values_equal(record.fields.get(f), v) for f, v in entry.expect.items()):
                # Changed since the write was decided: reconciliation decides with both sides.
                step.outbox_update.append(
                    OutboxUpdate(
                        id=entry.id,
                        status="failed",
                        attempts=entry.attempts + 1,
                        next_at=now,
                        last_error="the target changed; left to reconciliation",
                    )
                )
                self.storage.commit(step)
                return 0, 0
            change = Change(op=ChangeOp.UPDATE, key=entry.key, fields=entry.fields, ref="outbox")
            result = write_batch(caller, connector, [change])[0]
        except Exception as exc:  # after retries: try again later
            result = WriteResult(
                ref="outbox", ok=False, error=f"{type(exc).__name__}: {exc}", retryable=True
            )
        attempts = entry.attempts + 1
        if result.ok:
            step.outbox_update.append(
                OutboxUpdate(id=entry.id, status="done", attempts=attempts, next_at=now)
            )
            step.bases.append(
                BaseUpdate(sync=entry.sync, left_key=entry.left_key, values=entry.base)
            )
            self.storage.commit(step)
            return 1, 0
        if attempts >= self.outbox_attempts or not result.retryable:
            step.outbox_update.append(
                OutboxUpdate(
                    id=entry.id,
                    status="failed",
                    attempts=attempts,
                    next_at=now,
                    last_error=result.error,
                )
            )
            step.new_items.extend(
                Discrepancy(
                    sync=entry.sync,
                    field=name,
                    status=Status.OPEN,
                    detected_at=now,
                    left_key=entry.left_key,
                    right_key=entry.right_key,
                    rule="fast_loop",
                    resolution=value,
                    explanation=f"a fast-loop write to {entry.side} failed {attempts} times"
                    f" ({result.error}); reconciliation decides again",
                )
                for name, value in entry.base.items()
            )
            self.storage.commit(step)
            return 0, 1
        delay = self.outbox_backoff * (2 ** (attempts - 1))
        step.outbox_update.append(
            OutboxUpdate(
                id=entry.id,
                status="pending",
                attempts=attempts,
                next_at=now + delay,
                last_error=result.error,
            )
        )
        self.storage.commit(step)
        return 0, 0

    def _sync(self, name: str) -> SyncDefinition:
        for src in self.sources.values():
            if src.sync.name == name:
                return src.sync
        raise LookupError(f"no source of this handler serves sync {name!r}")

    def _echoes(
        self,
        sync: SyncDefinition,
        side: Side,
        key: str,
        fields: Mapping[str, Any],
        now: datetime,
        source_times: Mapping[str, datetime | None],
    ) -> list[Echo]:
        """The echo entries of one write: per target field, the value's fingerprint and the
        time of the edit it copies."""
        return [
            Echo(
                sync=sync.name,
                side=side,
                key=key,
                field=name,
                fingerprint=fingerprint(value),
                expires_at=now + self.echo_ttl,
                source_time=source_times.get(name),
            )
            for name, value in fields.items()
        ]

    def _record_echoes(self, now: datetime, echoes: list[Echo]) -> None:
        """Commit a write's echo entries BEFORE its call (invariant 1).

        From the moment the target holds a value syncrecon wrote until the commit that moves
        the base, a cycle may read the target: the entry tells it the value's edit time (not
        the time of the write), so recency never prefers the copy of an older edit over a
        newer one; and a webhook of the write that comes back before that commit is already
        recognized as an echo. An entry whose write then fails is harmless: it only says that
        *if* the target holds this value, this is its edit's time.
        """
        if echoes:
            self.storage.commit(Step(at=now, echoes=echoes))


def _event_data(event: ChangeEvent) -> dict[str, Any]:
    return {
        "system": event.system,
        "object_type": event.object_type,
        "key": event.key,
        "kind": event.kind.value,
        "occurred_at": event.occurred_at,
        "event_id": event.event_id,
        "field": event.field,
        "value": event.value,
        "dedupe_key": event.dedupe_key,
        "merged_keys": list(event.merged_keys),
        "change_source": event.change_source,
    }


def _event(data: Mapping[str, Any]) -> ChangeEvent:
    return ChangeEvent(**{**data, "merged_keys": tuple(data.get("merged_keys") or ())})


class _Batch:
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
        self.planned: list[_Planned] = []
        self._quarantine: dict[str, set[str]] = {}
        self._waiting: dict[str, set[tuple[str, str, str]]] = {}
        self._known: dict[str, dict[tuple[Side, str], Mapping[str, Any]]] = {}

    def done(
        self, entry: InboxEntry, src: WebhookSource | None, outcome: EventOutcome, note: str
    ) -> None:
        assert entry.id is not None
        self.step.events_done.append((entry.id, outcome.value, note))
        self.outcomes[outcome.value] = self.outcomes.get(outcome.value, 0) + 1
        if src is not None:
            self.step.counters.append(self.h._counter(src, outcome))

    def run(self, claimed: Sequence[InboxEntry]) -> None:
        events = []
        for entry in claimed:
            src = self.h.sources.get(entry.source)
            if src is None:
                self.done(entry, None, EventOutcome.IGNORED, "the source is no longer configured")
                continue
            events.append((entry, src, _event(entry.event)))
        # Oldest first, so a later change to the same field supersedes an earlier one.
        events.sort(key=lambda t: (t[2].occurred_at, t[0].id or 0))
        for entry, src, event in events:
            self._triage(entry, src, event)
        self._write()
        self.storage.commit(self.step)

    # A single event -------------------------------------------------------------------------

    def _triage(self, entry: InboxEntry, src: WebhookSource, event: ChangeEvent) -> None:
        sync = src.sync
        if src.object_type is not None and event.object_type != src.object_type:
            self.done(entry, src, EventOutcome.IGNORED, f"object type {event.object_type!r}")
            return
        if event.kind in (EventKind.CREATE, EventKind.MERGE):
            self.done(
                entry, src, EventOutcome.DEFERRED, f"{event.kind.value}: matched by reconciliation"
            )
            return
        link = self.storage.get_links(sync.name, src.side, [event.key]).get(event.key)
        if link is None:
            self.done(
                entry, src, EventOutcome.DEFERRED, "not linked yet: reconciliation matches it"
            )
            return
        if event.kind is EventKind.DELETE:
            # Deletions need the guard and the source-of-truth rule of the slow loop.
            self.done(entry, src, EventOutcome.DEFERRED, "deletion: decided by reconciliation")
            return
        fm = _field(sync, src.side, event.field)
        if fm is None:
            self.done(entry, src, EventOutcome.IGNORED, f"field {event.field!r} is not mapped")
            return
        if not fm.direction.allows_write(src.side.other):
            self.done(entry, src, EventOutcome.DEFERRED, "the field does not flow this way")
            return
        if fm.left in self._quarantined(sync):
            self.done(entry, src, EventOutcome.DEFERRED, "the field is quarantined (schema drift)")
            return
        if (link.left_key, link.right_key, fm.left) in self._escalated(sync):
            self.done(entry, src, EventOutcome.DEFERRED, "the field waits for an operator")
            return
        known = self._schemas(sync).get((src.side, str(event.field)))
        if known is not None and not fits(event.value, known):
            self._drift(sync, fm, src, event, known)
            self.done(entry, src, EventOutcome.DEFERRED, "the value does not fit the field's type")
            return
        try:
            value = event.value if src.side is Side.LEFT else fm.transform.to_left(event.value)
        except Exception as exc:
            self.done(entry, src, EventOutcome.DEFERRED, f"the value does not map: {exc}")
            return
        last = self.storage.get_field_times(sync.name, [(link.left_key, fm.left)]).get(
            (link.left_key, fm.left)
        )
        if last is not None and event.occurred_at <= last:
            self.done(entry, src, EventOutcome.STALE, f"older than the change applied at {last}")
            return
        echo = self.storage.find_echo(
            sync.name, src.side, event.key, str(event.field), fingerprint(event.value), self.now
        )
        if echo is not None and echo not in self.step.drop_echoes:
            self.step.drop_echoes.append(echo)
            self.done(entry, src, EventOutcome.ECHO, "the webhook of syncrecon's own write")
            return
        base = link.base.get(fm.left, MISSING)
        if base is not MISSING and values_equal(value, base):
            # A change back to the synced value is still the newest change of this field: it
            # moves the order guard and cancels an older change planned in this batch.
            self.step.field_times.append((sync.name, link.left_key, fm.left, event.occurred_at))
            self._supersede(sync.name, link.left_key, fm.left)
            self.done(entry, src, EventOutcome.ECHO, "equal to the last-synced value")
            return
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
            status = Status.ESCALATED if decision.escalated else Status.OPEN
            self.step.new_items.append(
                Discrepancy(
                    sync=sync.name,
                    field=fm.left,
                    status=status,
                    detected_at=self.now,
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
            )
            self.done(entry, src, EventOutcome.DEFERRED, f"{decision.rule}: {decision.reason}")
            return
        if src.side is Side.LEFT:
            # The write goes right: the value (and the base the target is checked against) must
            # map there. One that does not is left to the slow loop, which escalates it; it never
            # fails the batch it came in.
            try:
                fm.transform.to_right(value)
                if base is not MISSING:
                    fm.transform.to_right(base)
            except Exception as exc:
                self.done(
                    entry,
                    src,
                    EventOutcome.DEFERRED,
                    f"the value does not map to {sync.connector(Side.RIGHT).name}:"
                    f" {type(exc).__name__}: {exc}",
                )
                return
        self.planned.append(
            _Planned(
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
        )

    def _supersede(self, sync: str, left_key: str, field: str) -> None:
        """Drop older planned writes of one field: a newer change in this batch replaced them."""
        keep = []
        for p in self.planned:
            if (p.source.sync.name, p.left_key, p.fm.left) == (sync, left_key, field):
                self.done(p.entry, p.source, EventOutcome.STALE, "superseded in its batch")
            else:
                keep.append(p)
        self.planned = keep

    def _quarantined(self, sync: SyncDefinition) -> set[str]:
        found = self._quarantine.get(sync.name)
        if found is None:
            items = self.storage.list_items(
                sync=sync.name,
                statuses=[Status.ESCALATED],
                category=SCHEMA_DRIFT_CATEGORY,
                limit=10_000,
            )
            found = {i.field for i in items if not i.left_key and not i.right_key}
            self._quarantine[sync.name] = found
        return found

    def _escalated(self, sync: SyncDefinition) -> set[tuple[str, str, str]]:
        found = self._waiting.get(sync.name)
        if found is None:
            found = {
                (i.left_key or "", i.right_key or "", i.field)
                for i in self.storage.active_items(sync.name).values()
                if i.status is Status.ESCALATED
            }
            self._waiting[sync.name] = found
        return found

    def _schemas(self, sync: SyncDefinition) -> dict[tuple[Side, str], Mapping[str, Any]]:
        found = self._known.get(sync.name)
        if found is None:
            found = {(f.side, f.field): f.info for f in self.storage.get_schemas(sync.name)}
            self._known[sync.name] = found
        return found

    def _drift(
        self,
        sync: SyncDefinition,
        fm: FieldMap,
        src: WebhookSource,
        event: ChangeEvent,
        known: Mapping[str, Any],
    ) -> None:
        """Quarantine a field whose webhook value does not fit its known type, and escalate."""
        self._quarantined(sync).add(fm.left)
        self.step.new_items.append(
            Discrepancy(
                sync=sync.name,
                field=fm.left,
                status=Status.ESCALATED,
                detected_at=self.now,
                rule="schema",
                category=SCHEMA_DRIFT_CATEGORY,
                explanation=f"a webhook from {src.system} carried {event.value!r} for"
                f" {event.field!r}, which does not fit its known type {known.get('type')!r}"
                f" (options {known.get('options')!r}). Writes to this field are stopped until"
                " an operator updates the mapping and resolves this item.",
            )
        )

    # Coalesced writes -------------------------------------------------------------------------

    def _write(self) -> None:
        # Coalesce: per target record, the latest change of each field wins; older ones in
        # the same batch were superseded before they were written.
        targets: dict[tuple[str, Side, str], dict[str, _Planned]] = {}
        for p in self.planned:
            target = p.source.side.other
            key = p.right_key if target is Side.RIGHT else p.left_key
            fields = targets.setdefault((p.source.sync.name, target, key), {})
            earlier = fields.get(p.fm.left)
            if earlier is not None:
                self.done(
                    earlier.entry, earlier.source, EventOutcome.STALE, "superseded in its batch"
                )
            fields[p.fm.left] = p
        # Every write this batch may make is in the echo ledger before the first call: the
        # value, and the time of the edit it copies (its event's). One commit for the batch,
        # before the re-reads, so the window between a target's re-read and its write is not
        # widened; an entry whose write is then not made (a conflict, a failure) is harmless.
        self.h._record_echoes(
            self.now,
            [
                echo
                for (sync_name, side, key), fields in targets.items()
                for echo in self.h._echoes(
                    self.h._sync(sync_name),
                    side,
                    key,
                    {_target_name(side, p.fm): _target_value(side, p) for p in fields.values()},
                    self.now,
                    {_target_name(side, p.fm): p.event.occurred_at for p in fields.values()},
                )
            ],
        )
        by_connector: dict[tuple[str, Side], list[tuple[str, dict[str, _Planned]]]] = {}
        for (sync_name, side, key), fields in targets.items():
            by_connector.setdefault((sync_name, side), []).append((key, fields))
        for (sync_name, side), records in by_connector.items():
            sync = self.h._sync(sync_name)
            connector = sync.connector(side)
            size = min(
                connector.capabilities.max_read_batch, connector.capabilities.max_write_batch
            )
            for i in range(0, len(records), size):
                self._write_chunk(sync, side, records[i : i + size])

    def _current_at_source(
        self, sync: SyncDefinition, side: Side, records: list[tuple[str, dict[str, _Planned]]]
    ) -> list[tuple[str, dict[str, _Planned]]]:
        """Re-read the events' source records (one batch) and keep only the events whose value
        the source still holds: an event whose source has moved on is older than the state,
        and writing it would put an old value over a newer one (the newer change's webhook
        may be late or lost; reconciliation repairs it). Invariant 1."""
        source = side.other
        connector = sync.connector(source)
        keys = sorted(
            {
                (p.left_key if source is Side.LEFT else p.right_key)
                for _, f in records
                for p in f.values()
            }
        )
        try:
            found = {r.key: r for r in read_batch(self.caller, connector, keys)}
        except (ConnectorError, StorageError) as exc:
            for _, fields in records:
                for p in fields.values():
                    self._to_outbox(sync, side, p, f"re-reading the source failed: {exc}")
            return []
        kept: list[tuple[str, dict[str, _Planned]]] = []
        for key, fields in records:
            still: dict[str, _Planned] = {}
            for name, p in fields.items():
                record = found.get(p.left_key if source is Side.LEFT else p.right_key)
                if record is None or record.deleted:
                    self.done(p.entry, p.source, EventOutcome.DEFERRED, "the source record is gone")
                elif not _same_reported(
                    record.fields.get(str(p.event.field), MISSING), p.event.value
                ):
                    # The order guard moves: this change is not the field's newest.
                    self.step.field_times.append(
                        (sync.name, p.left_key, p.fm.left, p.event.occurred_at)
                    )
                    self.done(
                        p.entry,
                        p.source,
                        EventOutcome.STALE,
                        "the source holds a newer value of the field",
                    )
                else:
                    still[name] = p
            if still:
                kept.append((key, still))
        return kept

    def _write_chunk(
        self, sync: SyncDefinition, side: Side, records: list[tuple[str, dict[str, _Planned]]]
    ) -> None:
        connector = sync.connector(side)
        if self.h.verify_source:
            records = self._current_at_source(sync, side, records)
            if not records:
                return
        try:
            found = {r.key: r for r in read_batch(self.caller, connector, [k for k, _ in records])}
        except Exception as exc:
            for _, fields in records:
                for p in fields.values():
                    self._to_outbox(sync, side, p, f"re-read failed: {exc}")
            return
        changes: list[Change] = []
        sent: dict[str, list[_Planned]] = {}
        for key, fields in records:
            current = found.get(key)
            if current is None or current.deleted:
                for p in fields.values():
                    self.done(p.entry, p.source, EventOutcome.DEFERRED, "the target record is gone")
                continue
            ok = []
            for p in fields.values():
                now_value = self._target_value(side, p.fm, current)
                if now_value is _UNMAPPABLE or (
                    p.base is not MISSING and not values_equal(now_value, p.base)
                ):
                    self._conflict(p, None if now_value is _UNMAPPABLE else now_value)
                    continue
                ok.append(p)
            if not ok:
                continue
            payload = {_target_name(side, p.fm): _target_value(side, p) for p in ok}
            changes.append(Change(op=ChangeOp.UPDATE, key=key, fields=payload, ref=key))
            sent[key] = ok
        if not changes:
            return
        # After retries: a transient failure goes to the outbox; a permanent one (a
        # connector's own bug included) is never retried as if it were the network.
        results = write_batch_or_failures(self.caller, connector, changes)
        for change, result in zip(changes, results, strict=True):
            assert change.key is not None
            for p in sent[change.key]:
                if result.ok:
                    self._applied(sync, side, change, p)
                elif result.retryable:
                    self._to_outbox(sync, side, p, result.error or "write failed")
                else:
                    self._rejected(sync, side, p, result.error or "rejected")
            if result.ok:
                self.writes += 1

    def _target_value(self, side: Side, fm: FieldMap, record: Record) -> Any:
        if side is Side.LEFT:
            return record.fields.get(fm.left)
        try:
            return fm.transform.to_left(record.fields.get(fm.right))
        except Exception:
            return _UNMAPPABLE

    def _applied(self, sync: SyncDefinition, side: Side, change: Change, p: _Planned) -> None:
        self.step.bases.append(
            BaseUpdate(sync=sync.name, left_key=p.left_key, values={p.fm.left: p.value})
        )
        self.step.field_times.append((sync.name, p.left_key, p.fm.left, p.event.occurred_at))
        self.done(p.entry, p.source, EventOutcome.APPLIED, f"{p.rule}: written to {side}")

    def _conflict(self, p: _Planned, now_value: Any) -> None:
        # The event is the newest known change of the field, even if it is not written.
        self.step.field_times.append(
            (p.source.sync.name, p.left_key, p.fm.left, p.event.occurred_at)
        )
        self.step.new_items.append(
            Discrepancy(
                sync=p.source.sync.name,
                field=p.fm.left,
                status=Status.OPEN,
                detected_at=self.now,
                left_key=p.left_key,
                right_key=p.right_key,
                left_value=p.value if p.source.side is Side.LEFT else now_value,
                right_value=now_value if p.source.side is Side.LEFT else p.value,
                base_value=None if p.base is MISSING else p.base,
                has_base=p.base is not MISSING,
                rule="fast_loop",
                explanation="both sides changed since the last sync; reconciliation decides",
            )
        )
        self.done(p.entry, p.source, EventOutcome.DEFERRED, "the target changed too: a conflict")

    def _to_outbox(self, sync: SyncDefinition, side: Side, p: _Planned, error: str) -> None:
        key = p.right_key if side is Side.RIGHT else p.left_key
        target_name = p.fm.right if side is Side.RIGHT else p.fm.left
        value = p.fm.transform.to_right(p.value) if side is Side.RIGHT else p.value
        expect = {}
        if p.base is not MISSING:
            expect[target_name] = p.fm.transform.to_right(p.base) if side is Side.RIGHT else p.base
        self.step.outbox_add.append(
            OutboxEntry(
                sync=sync.name,
                side=side,
                key=key,
                left_key=p.left_key,
                right_key=p.right_key,
                fields={target_name: value},
                expect=expect,
                base={p.fm.left: p.value},
                next_at=self.now + self.h.outbox_backoff,
                last_error=error,
                source_time=p.event.occurred_at,
            )
        )
        self.step.field_times.append((sync.name, p.left_key, p.fm.left, p.event.occurred_at))
        self.done(p.entry, p.source, EventOutcome.DEFERRED, f"queued in the outbox: {error}")

    def _rejected(self, sync: SyncDefinition, side: Side, p: _Planned, error: str) -> None:
        self.step.new_items.append(
            Discrepancy(
                sync=sync.name,
                field=p.fm.left,
                status=Status.OPEN,
                detected_at=self.now,
                left_key=p.left_key,
                right_key=p.right_key,
                rule="fast_loop",
                resolution=p.value,
                explanation=f"{side} rejected the fast loop's write: {error}",
            )
        )
        self.done(p.entry, p.source, EventOutcome.DEFERRED, f"rejected by {side}: {error}")


_UNMAPPABLE = object()


def _target_name(side: Side, fm: FieldMap) -> str:
    """The field's own name on the ``side`` written to."""
    return fm.right if side is Side.RIGHT else fm.left


def _target_value(side: Side, p: _Planned) -> Any:
    """A planned write's value in the vocabulary of the ``side`` written to."""
    return p.fm.transform.to_right(p.value) if side is Side.RIGHT else p.value


def _same_reported(current: Any, reported: Any) -> bool:
    """Whether the source's current value is the one an event reported (webhooks often carry
    numbers and booleans as text: ``"1200"`` reports ``1200``)."""
    if current is MISSING:
        return True  # the source's answer lacks the field: unknown, not a newer value
    if values_equal(current, reported):
        return True
    scalars = (str, int, float, Decimal, bool)
    if isinstance(current, scalars) and isinstance(reported, scalars):
        return str(current).strip().lower() == str(reported).strip().lower()
    return False


def _field(sync: SyncDefinition, side: Side, name: str | None) -> FieldMap | None:
    for fm in sync.fields:
        if (fm.left if side is Side.LEFT else fm.right) == name:
            return fm
    return None
