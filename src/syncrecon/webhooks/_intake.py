"""The front door: one webhook request in, its answer out, its events in the inbox.

request -> source (404) -> method (405) -> size (413) -> signature and timestamp (401) ->
parse (400) -> durable inbox, duplicates dropped (200 ``{"accepted", "duplicates"}``; 503
when the inbox cannot be written, so the provider retries) -> with ``inline=True``, the
processing of what was stored -> the handler's listeners told how many events are new.

Nothing the sender controls makes it raise or answer 5xx; every rejection is counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

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
from ._inbox import event_row, outcome_counter

if TYPE_CHECKING:
    from ._handler import WebhookHandler, WebhookSource

log = logging.getLogger("syncrecon.webhooks")


def answer(
    handler: WebhookHandler, request: WebhookRequest, name: str | None, *, in_worker_thread: bool
) -> WebhookResponse:
    """Verify, parse and store one request's events, and say how it went (never raises for
    anything the sender controls)."""
    name = name or request.path.rstrip("/").rsplit("/", 1)[-1]
    src = handler.sources.get(name)
    try:
        if src is None:
            raise UnknownSourceError(f"no webhook source named {name!r}")
        events = _verified_events(handler, src, request)
    except WebhookError as exc:
        return reject(handler, src, exc)
    try:
        ids = enqueue(handler, src, events)
    except StorageError:
        log.exception("could not store webhook events from %s", name)
        return WebhookResponse.json(503, {"error": "temporarily unavailable; retry"})
    stored = sum(1 for i in ids if i is not None)
    if handler.inline and stored:
        try:
            handler._process(in_worker_thread=in_worker_thread)
        except Exception:  # the events are stored: a worker or the next request retries
            log.exception("inline processing failed; events stay in the inbox")
    if stored:
        handler._tell_listeners(stored)
    return WebhookResponse.json(200, {"accepted": stored, "duplicates": len(ids) - stored})


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
        return list(src.parser.parse(request.body, request.headers))
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


def reject(
    handler: WebhookHandler, src: WebhookSource | None, error: WebhookError
) -> WebhookResponse:
    """Count a refused request and answer it with its error's 4xx."""
    labels = {
        "source": src.name if src else "unknown",
        "direction": src.direction if src else "unknown",
        "outcome": EventOutcome.REJECTED.value,
        "reason": type(error).__name__,
    }
    try:
        handler.storage.enqueue_events(
            [], [Counter(metric="webhook_events", labels=labels)], handler.clock.now()
        )
    except StorageError:
        log.exception("could not count a rejected webhook")
    return WebhookResponse.json(error.status_code, {"error": str(error)})


def enqueue(
    handler: WebhookHandler, src: WebhookSource, events: Sequence[ChangeEvent]
) -> list[int | None]:
    """Store the events in the inbox: each one's id, ``None`` for a duplicate delivery."""
    now = handler.clock.now()
    entries = [
        InboxEntry(
            source=src.name,
            dedupe_key=e.dedupe_key,
            event=event_row(e),
            received_at=now,
            record=record_name(src.sync.name, src.side, e.key),
        )
        for e in events
    ]
    # Two identical deliveries inside one request count as one.
    unique: dict[str, InboxEntry] = {}
    for entry in entries:
        unique.setdefault(entry.dedupe_key, entry)
    ids = handler.storage.enqueue_events(list(unique.values()), [], now)
    dupes = len(entries) - sum(1 for i in ids if i is not None)
    if dupes:
        handler.storage.enqueue_events(
            [], [outcome_counter(src, EventOutcome.DUPLICATE, dupes)], now
        )
    return ids + [None] * (len(entries) - len(unique))
