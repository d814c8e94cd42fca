"""Values of the fast loop: an HTTP request and response, and a normalized change event.

The webhook handler is framework-free: adapters (ASGI, WSGI, your own) turn their request
into a :class:`WebhookRequest` and send back the :class:`WebhookResponse` they get.
"""

from __future__ import annotations

import enum
import json
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import attrs

from .._clock import utc

__all__ = [
    "ChangeEvent",
    "EventKind",
    "EventOutcome",
    "PayloadParser",
    "RequestHandler",
    "WebhookRequest",
    "WebhookResponse",
]


class LowerHeaders(dict[str, str]):
    """Headers an adapter already normalized (text names in lower case, text values), so
    :class:`WebhookRequest` keeps them without copying them again. Private to syncrecon."""

    __slots__ = ()


def _headers(value: Mapping[str, str] | Iterable[tuple[str, str]]) -> Mapping[str, str]:
    if type(value) is LowerHeaders:
        return value
    items = value.items() if isinstance(value, Mapping) else value
    return {str(k).lower(): str(v) for k, v in items}


@attrs.frozen(kw_only=True)
class WebhookRequest:
    """An incoming webhook request. Header names are kept lower-cased.

    ``body`` is the raw bytes exactly as received: signatures are computed over them.
    """

    method: str
    url: str
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_headers)
    body: bytes = b""

    @property
    def path(self) -> str:
        """The URL's path (without the query string); never raises, whatever the URL."""
        try:
            return urllib.parse.urlsplit(self.url).path or "/"
        except ValueError:  # a malformed host ("[") the client sent
            rest = self.url.split("://", 1)[-1]
            path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
            return path.split("?", 1)[0].split("#", 1)[0]


@attrs.frozen(kw_only=True)
class WebhookResponse:
    """What the handler answers: a status, headers and a (JSON) body."""

    status: int
    headers: Mapping[str, str] = attrs.field(factory=lambda: {"content-type": "application/json"})
    body: bytes = b""

    @classmethod
    def json(cls, status: int, payload: Mapping[str, Any]) -> WebhookResponse:
        """A JSON response."""
        return cls(status=status, body=json.dumps(payload, sort_keys=True).encode())


class EventKind(enum.StrEnum):
    """What a change event reports."""

    UPDATE = "update"
    """One field changed to ``value``."""
    CREATE = "create"
    """A record was created."""
    DELETE = "delete"
    """A record was deleted."""
    MERGE = "merge"
    """Records were merged into ``key`` (the others are in ``merged_keys``)."""


class EventOutcome(enum.StrEnum):
    """What the fast loop did with one event; each is counted for the dashboard."""

    APPLIED = "applied"
    """Written to the other system (or nothing needed writing and the base moved)."""
    DUPLICATE = "duplicate"
    """A delivery seen before; acknowledged and not processed again."""
    STALE = "stale"
    """Older than a change already applied to the same field; not written."""
    ECHO = "echo"
    """The webhook caused by syncrecon's own write, or a value equal to the base."""
    REJECTED = "rejected"
    """Refused at the door (bad signature, malformed, too large, unknown source)."""
    DEFERRED = "deferred"
    """Left to the reconciliation queue (a conflict, an escalation, no link, a failed write)."""
    IGNORED = "ignored"
    """About a field or object type no sync maps."""


def _keys(value: Iterable[str]) -> tuple[str, ...]:
    return value if type(value) is tuple else tuple(value)


def _kind(value: str) -> EventKind:
    return value if type(value) is EventKind else EventKind(value)


def _utc_time(value: datetime) -> datetime:
    # A parser's events are UTC already: only the others need converting.
    return value if value.tzinfo is UTC else utc(value)


@attrs.frozen(kw_only=True)
class ChangeEvent:
    """One change a webhook reported, normalized.

    ``system`` is the source system's name (its connector's name), ``key`` the record's key
    there, ``field`` the system's own field name (``None`` for record-level events), and
    ``occurred_at`` when the change happened at the source. ``event_id`` is the provider's id
    of the event; ``dedupe_key`` is what makes a delivery unique (the event id, or a composite
    where the provider's id is not unique, as with HubSpot). ``change_source`` is the
    provider's note of who made the change, when it gives one.
    """

    system: str
    object_type: str
    key: str
    kind: EventKind = attrs.field(converter=_kind)
    occurred_at: datetime = attrs.field(converter=_utc_time)
    event_id: str
    field: str | None = None
    value: Any = None
    dedupe_key: str = ""
    merged_keys: tuple[str, ...] = attrs.field(default=(), converter=_keys)
    change_source: str | None = None

    def __attrs_post_init__(self) -> None:
        if not self.dedupe_key:
            object.__setattr__(self, "dedupe_key", self.event_id)
        if self.kind is EventKind.UPDATE and self.field is None:
            raise ValueError("an update event needs a field")


@runtime_checkable
class PayloadParser(Protocol):
    """Turns a verified request body into change events.

    Raise :class:`~syncrecon.MalformedPayloadError` for a body that is not JSON or not the
    expected shape; never any other exception for input the sender controls.
    """

    def parse(self, body: bytes, headers: Mapping[str, str]) -> Sequence[ChangeEvent]:
        """The events in ``body``."""
        ...


@runtime_checkable
class RequestHandler(Protocol):
    """What framework adapters drive: :class:`~syncrecon.webhooks.WebhookHandler` is one.

    An adapter checks ``Content-Length`` against ``max_body_bytes`` and reads at most
    ``max_body_bytes + 1`` bytes; an oversized request goes to :meth:`reject_too_large`
    (which counts it and answers 413) without its body ever being read whole.
    """

    max_body_bytes: int

    def handle(self, request: WebhookRequest) -> WebhookResponse:
        """Answer one request (sync hosts)."""
        ...

    async def ahandle(self, request: WebhookRequest) -> WebhookResponse:
        """Answer one request (async hosts)."""
        ...

    def reject_too_large(self, method: str, url: str) -> WebhookResponse:
        """Count and answer a request whose body is over the cap (413)."""
        ...
