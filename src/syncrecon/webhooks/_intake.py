"""The front door: one webhook request in, its answer out, its events in the inbox.

request -> source (404) -> method (405) -> size (413) -> signature and timestamp (401) ->
parse, and every string storable (400) -> durable inbox, duplicates dropped (200
``{"accepted", "duplicates"}``; 503 when the inbox cannot be written, so the provider
retries) -> with ``inline=True``, the processing of what was stored -> the handler's
listeners told how many events are new.

Each request is checked on its own (:func:`admit`): a bad one is refused with its 4xx before
it meets any other, and so is one holding a string the inbox could not store
(:func:`unstorable`: a lone surrogate, or a NUL in a name). What a request stores becomes a
:class:`~._group.Ticket`; with ``group_commit`` (the default) the tickets of concurrent
requests share one durable commit (:mod:`._group`, :func:`commit_group`), otherwise each is
committed alone. Either way a request is answered 2xx only after the commit that holds its
events returned. A storage failure answers every request of the commit 503 with nothing of it
stored; a group failed by anything else is committed again ticket by ticket, so that only the
request it is tied to fails. The sync door (:func:`answer`) and the async door
(:func:`aanswer`) differ only in how they wait.

Nothing the sender controls makes it raise or answer 5xx; every rejection is counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio.to_thread

from .. import _codec
from .._exceptions import (
    MalformedPayloadError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    StorageError,
    UnknownSourceError,
    WebhookError,
)
from .._write_path import record_name
from ..storage._base import Counter, InboxEntry
from ._events import ChangeEvent, EventOutcome, WebhookRequest, WebhookResponse
from ._group import Ticket, share_out
from ._inbox import event_row, outcome_counter

if TYPE_CHECKING:
    from ._handler import WebhookHandler, WebhookSource

log = logging.getLogger("syncrecon.webhooks")

OFF_LOOP_BYTES = 64 * 1024
"""A body at least this large is verified and parsed in a worker thread by the async door,
so that a large batch does not hold up the event loop; smaller ones are checked on the loop."""

_UNAVAILABLE = {"error": "temporarily unavailable; retry"}


class Refusal:
    """A request refused before it stores anything: its 4xx, and the counter it bumps."""

    __slots__ = ("response", "ticket")

    def __init__(self, response: WebhookResponse, ticket: Ticket) -> None:
        self.response = response
        self.ticket = ticket


# --------------------------------------------------------------------------------------------
# The two doors


def answer(
    handler: WebhookHandler, request: WebhookRequest, name: str | None, *, in_worker_thread: bool
) -> WebhookResponse:
    """Verify, parse and store one request's events, and say how it went (never raises for
    anything the sender controls). Blocks the calling thread until its events are durable."""
    admitted = admit(handler, request, name)
    ticket = admitted.ticket if isinstance(admitted, Refusal) else admitted
    commit(handler, ticket)
    if isinstance(admitted, Refusal):
        return refused(admitted)
    response, stored = outcome(handler, ticket)
    if handler.inline and stored:
        _process_inline(handler, in_worker_thread=in_worker_thread)
    if stored:
        handler._tell_listeners(stored)
    return response


async def aanswer(
    handler: WebhookHandler, request: WebhookRequest, name: str | None
) -> WebhookResponse:
    """:func:`answer` on an event loop: the checks run on the loop (in a worker thread for a
    large body), the commit in a thread, the loop awaits it."""
    if len(request.body) >= OFF_LOOP_BYTES:
        admitted = await anyio.to_thread.run_sync(admit, handler, request, name)
    else:
        admitted = admit(handler, request, name)
    ticket = admitted.ticket if isinstance(admitted, Refusal) else admitted
    if ticket.entries and handler.group_commit:  # the usual request, one coroutine less
        await handler._committer.acommit(ticket)
    else:
        await acommit(handler, ticket)
    if isinstance(admitted, Refusal):
        return refused(admitted)
    response, stored = outcome(handler, ticket)
    if stored:
        if handler.inline:
            await anyio.to_thread.run_sync(lambda: _process_inline(handler, in_worker_thread=True))
        if handler._listeners:
            handler._tell_listeners(stored)
    return response


def commit(handler: WebhookHandler, ticket: Ticket) -> None:
    """Commit the ticket in this thread, alone or with the requests it arrives with."""
    if ticket.empty:
        ticket.ids = []
    elif handler.group_commit:
        handler._committer.commit(ticket)
    else:
        _commit_alone(handler, ticket)


async def acommit(handler: WebhookHandler, ticket: Ticket) -> None:
    """:func:`commit` without blocking the event loop."""
    if ticket.empty:
        ticket.ids = []
    elif handler.group_commit:
        await handler._committer.acommit(ticket)
    else:
        await anyio.to_thread.run_sync(_commit_alone, handler, ticket)


def _commit_alone(handler: WebhookHandler, ticket: Ticket) -> None:
    try:
        commit_group(handler, [ticket])
    except Exception as exc:  # handed to the request, as a group's failure would be
        ticket.error = exc


def _process_inline(handler: WebhookHandler, *, in_worker_thread: bool) -> None:
    try:
        handler._process(in_worker_thread=in_worker_thread)
    except Exception:  # the events are stored: a worker or the next request retries
        log.exception("inline processing failed; events stay in the inbox")


# --------------------------------------------------------------------------------------------
# The steps


def admit(handler: WebhookHandler, request: WebhookRequest, name: str | None) -> Ticket | Refusal:
    """Check one request on its own: its ticket (the inbox entries of its events, each
    delivery once), or its refusal. Never raises for anything the sender controls."""
    name = name or request.path.rstrip("/").rsplit("/", 1)[-1]
    src = handler.sources.get(name)
    try:
        if src is None:
            raise UnknownSourceError(f"no webhook source named {name!r}")
        return ticket_for(handler, src, _verified_events(handler, src, request))
    except WebhookError as exc:
        return refusal(src, exc)


def _verified_events(
    handler: WebhookHandler, src: WebhookSource, request: WebhookRequest
) -> list[ChangeEvent]:
    """The request's events, once it passed the method, size and signature checks."""
    if request.method.upper() != "POST":
        raise MethodNotAllowedError("webhooks are POSTed")
    if len(request.body) > handler.max_body_bytes:
        raise PayloadTooLargeError(f"the body is over {handler.max_body_bytes} bytes")
    src.verifier.verify(
        method=request.method, url=request.url, headers=request.headers, body=request.body
    )
    try:
        events = src.parser.parse(request.body, request.headers)
        return events if type(events) is list else list(events)
    except WebhookError:
        raise
    except Exception as exc:
        # A parser must raise MalformedPayloadError: anything else is a bug in the parser. The
        # sender still gets its 400, and the operator a traceback (the request was signed: a
        # genuine event the parser could not read).
        log.error(
            "the %s parser raised %s instead of MalformedPayloadError; answered 400",
            src.name,
            type(exc).__name__,
            exc_info=exc,
        )
        raise MalformedPayloadError(f"unreadable payload: {type(exc).__name__}") from exc


def refusal(src: WebhookSource | None, error: WebhookError) -> Refusal:
    """A refused request: its error's 4xx, and the rejection counter it bumps."""
    labels = {
        "source": src.name if src else "unknown",
        "direction": src.direction if src else "unknown",
        "outcome": EventOutcome.REJECTED.value,
        "reason": type(error).__name__,
    }
    return Refusal(
        WebhookResponse.json(error.status_code, {"error": str(error)}),
        Ticket(counters=[Counter(metric="webhook_events", labels=labels)]),
    )


def refused(refusal: Refusal) -> WebhookResponse:
    """The refusal's answer once its counter was committed (or could not be)."""
    if refusal.ticket.error is not None:
        log.error("could not count a rejected webhook", exc_info=refusal.ticket.error)
    return refusal.response


def reject(
    handler: WebhookHandler, src: WebhookSource | None, error: WebhookError
) -> WebhookResponse:
    """Count a refused request and answer it with its error's 4xx (blocks until counted)."""
    refused_ = refusal(src, error)
    commit(handler, refused_.ticket)
    return refused(refused_)


def ticket_for(
    handler: WebhookHandler, src: WebhookSource, events: Sequence[ChangeEvent]
) -> Ticket:
    """The inbox entries of ``events``; two identical deliveries inside one request count as
    one (the other is a duplicate). Raises :class:`~syncrecon.MalformedPayloadError` (400)
    when an event holds a string the inbox cannot store (:func:`unstorable`), so that such a
    request fails alone, before it joins a group, and stores nothing."""
    now = handler.clock.now()
    unique: dict[str, InboxEntry] = {}
    for e in events:
        flaw = unstorable(e)
        if flaw is not None:
            raise MalformedPayloadError(f"the payload cannot be stored: {flaw}")
        if e.dedupe_key not in unique:
            unique[e.dedupe_key] = InboxEntry(
                source=src.name,
                dedupe_key=e.dedupe_key,
                event=event_row(e),
                received_at=now,
                record=record_name(src.sync.name, src.side, e.key),
            )
    return Ticket(list(unique.values()), source=src, repeats=len(events) - len(unique))


_SCALARS = frozenset({int, float, bool, type(None)})


def unstorable(event: ChangeEvent) -> str | None:
    """Why the inbox could not store ``event``, or ``None``. The message never repeats the
    sender's data. An event of ASCII names and a scalar value costs a join and two scans.

    - Every string the inbox keeps must encode as UTF-8: a lone surrogate (a JSON
      ``"\\ud800"`` that a parser decoded) makes SQLite and PostgreSQL raise.
    - The names kept in columns of their own, now or by the processing (record key, merged
      keys, event id, dedupe key, field name, system, object type) must hold no NUL, which
      PostgreSQL text refuses. The event itself is kept as JSON, where a NUL in a value is the
      escape ``\\u0000``: a value may hold one.
    """
    parts = (
        event.system,
        event.object_type,
        event.key,
        event.event_id,
        event.dedupe_key,
        event.field or "",
        *event.merged_keys,
    )
    try:
        names = "".join(parts)
    except TypeError:  # a name that is not a string (a parser's slip): check the others
        names = "".join(p for p in parts if isinstance(p, str))
    if "\x00" in names:
        return "a key, id or field name holds a NUL character"
    value = event.value
    if type(value) is str:
        text = value
    elif type(value) in _SCALARS:
        text = ""
    else:  # a list or an object: what the inbox will store of it
        try:
            text = _codec.dumps(value)
        except (TypeError, ValueError, RecursionError):
            log.error("the %s parser returned a field value that is not JSON", event.system)
            return "a field value is not JSON"
    text = f"{names}{text}{event.change_source or ''}"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "it holds a lone surrogate (an unpaired \\ud800-\\udfff escape)"
    return None


def commit_group(handler: WebhookHandler, group: Sequence[Ticket]) -> None:
    """Store a group's entries and counters in one transaction, give each ticket its ids,
    then count the group's duplicate deliveries (a failure to count them is logged). Raises
    what the storage raised before the group was stored, or
    :class:`~._group.StoredGroupError` when the storage stored it but returned the wrong
    number of ids: the committer hands either to every ticket of the group, and commits the
    tickets one by one after any other failure (see :class:`~._group.GroupCommitter`)."""
    entries = [e for t in group for e in t.entries]
    counters = [c for t in group for c in t.counters]
    now = handler.clock.now()
    ids = handler.storage.enqueue_events(entries, counters, now)
    share_out(group, ids)
    dupes: dict[str, tuple[WebhookSource, int]] = {}
    for t in group:
        n = t.repeats + (t.ids or []).count(None)
        if n and t.source is not None:
            _, seen = dupes.get(t.source.name, (t.source, 0))
            dupes[t.source.name] = (t.source, seen + n)
    if dupes:
        try:
            handler.storage.enqueue_events(
                [], [outcome_counter(s, EventOutcome.DUPLICATE, n) for s, n in dupes.values()], now
            )
        except Exception:  # the events are stored; only their count is lost
            log.exception("could not count duplicate webhook deliveries")


def outcome(handler: WebhookHandler, ticket: Ticket) -> tuple[WebhookResponse, int]:
    """The answer to a committed request, and how many new events it stored. A storage
    failure is 503 (the provider retries); any other failure is raised (a bug: the adapter
    answers a generic 500)."""
    if ticket.error is not None:
        if isinstance(ticket.error, StorageError):
            name = ticket.source.name if ticket.source is not None else "?"
            log.error("could not store webhook events from %s", name, exc_info=ticket.error)
            return WebhookResponse.json(503, _UNAVAILABLE), 0
        raise RuntimeError("storing the webhook's events failed") from ticket.error
    ids = ticket.ids or []
    stored = len(ids) - ids.count(None)
    dupes = len(ids) + ticket.repeats - stored
    # What WebhookResponse.json(200, {"accepted": ..., "duplicates": ...}) sends, made at once.
    body = b'{"accepted": %d, "duplicates": %d}' % (stored, dupes)
    return WebhookResponse(status=200, body=body), stored
