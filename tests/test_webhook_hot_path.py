"""The per-request shortcuts of the ASGI front door give what the general path gives.

Each request is served with as little work on the event loop as it can be (headers normalized
once, a one-message body taken as it is, the handler's own JSON answers sent without checking
their headers again, change events from a parser kept without converting them again); these
tests pin that each shortcut answers exactly as the general path does, and that the general
path still serves everything else.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from syncrecon.webhooks import ChangeEvent, EventKind, WebhookRequest, WebhookResponse
from syncrecon.webhooks._events import LowerHeaders
from syncrecon.webhooks._wire import wire_headers
from syncrecon.webhooks.asgi import WebhookApp, _asgi_messages

CAP = 1000


class RecordingHandler:
    """Answers every request 200 and records what it was given."""

    def __init__(self, response: WebhookResponse | None = None) -> None:
        self.max_body_bytes = CAP
        self.response = response or WebhookResponse.json(200, {"ok": True})
        self.requests: list[WebhookRequest] = []
        self.rejected: list[tuple[str, str]] = []

    def handle(self, request: WebhookRequest) -> WebhookResponse:
        raise AssertionError("the ASGI app awaits ahandle")

    async def ahandle(self, request: WebhookRequest) -> WebhookResponse:
        self.requests.append(request)
        return self.response

    def reject_too_large(self, method: str, url: str) -> WebhookResponse:
        self.rejected.append((method, url))
        return WebhookResponse.json(413, {"error": "too large"})


def scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": "/webhooks/crm",
        "raw_path": b"/webhooks/crm",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "server": ("127.0.0.1", 8000),
    }


def call(
    app: WebhookApp, headers: list[tuple[bytes, bytes]], messages: list[dict[str, Any]]
) -> list[MutableMapping[str, Any]]:
    pending = list(messages)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return pending.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope(headers), receive, send))
    return sent


def test_headers_are_normalized_once_and_kept() -> None:
    handler = RecordingHandler()
    headers = [(b"Host", b"example.com"), (b"X-Tag", b"a"), (b"x-tag", b"b")]
    call(WebhookApp(handler), headers, [{"type": "http.request", "body": b"{}"}])
    (request,) = handler.requests
    assert request.headers == {"host": "example.com", "x-tag": "a,b"}
    assert type(request.headers) is LowerHeaders
    assert request.url == "http://example.com/webhooks/crm"


def test_normalized_headers_pass_through_and_others_are_copied() -> None:
    ready = LowerHeaders({"webhook-id": "msg_1"})
    assert WebhookRequest(method="POST", url="http://h/", headers=ready).headers is ready
    plain = {"Webhook-ID": "msg_1"}
    request = WebhookRequest(method="POST", url="http://h/", headers=plain)
    assert request.headers == {"webhook-id": "msg_1"}
    assert request.headers is not plain
    assert request == WebhookRequest(method="POST", url="http://h/", headers=ready)


@pytest.mark.parametrize("body", [b'{"a": 1}', bytearray(b'{"a": 1}')])
def test_a_one_message_body_is_handed_over_as_bytes(body: bytes) -> None:
    handler = RecordingHandler()
    sent = call(WebhookApp(handler), [], [{"type": "http.request", "body": body}])
    assert sent[0]["status"] == 200
    assert handler.requests[0].body == b'{"a": 1}'
    assert type(handler.requests[0].body) is bytes


def test_a_chunked_body_is_joined() -> None:
    handler = RecordingHandler()
    messages = [
        {"type": "http.request", "body": b'{"a": ', "more_body": True},
        {"type": "http.request", "body": b"1}", "more_body": False},
    ]
    call(WebhookApp(handler), [], messages)
    assert handler.requests[0].body == b'{"a": 1}'


def test_a_one_message_body_over_the_cap_is_rejected_unread() -> None:
    handler = RecordingHandler()
    sent = call(WebhookApp(handler), [], [{"type": "http.request", "body": b"x" * (CAP + 1)}])
    assert sent[0]["status"] == 413
    assert handler.requests == []
    assert handler.rejected == [("POST", "http://127.0.0.1:8000/webhooks/crm")]


def test_a_client_gone_before_its_body_is_not_answered() -> None:
    handler = RecordingHandler()
    assert call(WebhookApp(handler), [], [{"type": "http.disconnect"}]) == []
    assert handler.requests == []


@pytest.mark.parametrize(
    "response",
    [
        WebhookResponse(status=200, body=b'{"accepted": 1, "duplicates": 0}'),
        WebhookResponse.json(503, {"error": "temporarily unavailable; retry"}),
        WebhookResponse(status=202, headers={"content-type": "text/plain"}, body=b"ok"),
        WebhookResponse(status=200, headers={"Content-Length": "99", "x-a": "b"}, body=b"{}"),
    ],
)
def test_the_answer_is_sent_as_the_checked_path_sends_it(response: WebhookResponse) -> None:
    start, end = _asgi_messages(response)
    expected = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in wire_headers(response)]
    assert start == {"type": "http.response.start", "status": response.status, "headers": expected}
    assert end == {"type": "http.response.body", "body": response.body}


def test_headers_that_cannot_be_sent_are_still_refused() -> None:
    bad = WebhookResponse(status=200, headers={"x-a": "b\r\nx-b: c"}, body=b"{}")
    sent = call(WebhookApp(RecordingHandler(bad)), [], [{"type": "http.request", "body": b"{}"}])
    assert sent[0]["status"] == 500


def event(**changes: Any) -> ChangeEvent:
    fields: dict[str, Any] = {
        "system": "crm",
        "object_type": "deal",
        "key": "d1",
        "kind": EventKind.UPDATE,
        "occurred_at": datetime(2026, 1, 31, 12, tzinfo=UTC),
        "event_id": "msg_1",
        "field": "notes",
        **changes,
    }
    return ChangeEvent(**fields)


def test_change_event_keeps_values_already_in_shape() -> None:
    when = datetime(2026, 1, 31, 12, tzinfo=UTC)
    keys = ("a", "b")
    e = event(occurred_at=when, merged_keys=keys)
    assert e.occurred_at is when
    assert e.merged_keys is keys
    assert e.kind is EventKind.UPDATE


def test_change_event_still_converts_everything_else() -> None:
    plus_two = timezone(timedelta(hours=2))
    e = event(kind="merge", occurred_at=datetime(2026, 1, 31, 14, tzinfo=plus_two))
    assert e.kind is EventKind.MERGE
    assert e.occurred_at == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert e.occurred_at.tzinfo is UTC
    naive = event(occurred_at=datetime(2026, 1, 31, 12), merged_keys=["a"])
    assert naive.occurred_at == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert naive.merged_keys == ("a",)
    with pytest.raises(ValueError):
        event(kind="nonsense")
