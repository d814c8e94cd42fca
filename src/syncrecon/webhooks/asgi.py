"""Serve a webhook handler as a pure ASGI 3 application (Starlette, FastAPI, any ASGI server).

:class:`WebhookApp` is written against the ASGI specification alone and imports no framework.
Mount it under a Starlette or FastAPI app, or serve it on its own::

    from fastapi import FastAPI
    from syncrecon.webhooks.asgi import WebhookApp

    api = FastAPI()
    api.mount("/webhooks", WebhookApp(handler))

For every ``http`` request the app:

1. rebuilds the URL the provider used (scheme, ``Host`` header, mount point, the raw path as
   it was sent and the query string), because some schemes (HubSpot v3) sign the URL;
2. answers 400 for a malformed ``Content-Length`` without calling the handler;
3. hands a request whose ``Content-Length`` is over the handler's ``max_body_bytes`` to
   :meth:`~syncrecon.webhooks.RequestHandler.reject_too_large` without reading its body, and
   stops reading a body that streams past the cap (chunked) as soon as it does, so it never
   holds more than ``max_body_bytes`` bytes of it;
4. awaits :meth:`~syncrecon.webhooks.RequestHandler.ahandle` with the raw body bytes and sends
   the response back. An exception escaping the handler is logged (logger
   ``"syncrecon.webhooks"``) and answered with a generic 500: no traceback reaches the client.

``lifespan`` events are answered (there is nothing to start), ``websocket`` connections are
refused. Forwarded headers (``X-Forwarded-Proto``, ``X-Forwarded-Host``) are not trusted here:
let the server apply them (uvicorn's ``--proxy-headers``, ``--forwarded-allow-ips``), or pass
``path_prefix`` for a prefix that a reverse proxy strips before forwarding.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Final

import attrs

from ._asgi_base import Receive, Scope, Send, serve_scope
from ._events import LowerHeaders, RequestHandler, WebhookRequest, WebhookResponse
from ._wire import (
    MalformedLengthError,
    bad_length,
    build_url,
    declared_length,
    host_header,
    normalize_prefix,
    request_target,
    server_error,
    wire_headers,
)

__all__ = ["Receive", "Scope", "Send", "WebhookApp", "serve_scope"]

log = logging.getLogger("syncrecon.webhooks")


# --------------------------------------------------------------------------------------------
# The ASGI application


@attrs.frozen
class WebhookApp:
    """A webhook handler as an ASGI 3 application.

    :param handler: what answers the requests: a :class:`~syncrecon.webhooks.WebhookHandler`
        or anything else that implements :class:`~syncrecon.webhooks.RequestHandler`. Its
        ``max_body_bytes`` is read on every request.
    :param path_prefix: prepended to the URL's path, for a prefix that a reverse proxy strips
        before forwarding when the server is not told about it (uvicorn's ``--root-path``).
        The mount point of a Starlette or FastAPI ``mount`` (``scope["root_path"]``) is taken
        into account on its own: do not repeat it here.
    :raises ConfigurationError: when ``path_prefix`` does not start with ``/``.
    :raises TypeError: when ``handler`` does not implement the protocol.
    """

    handler: RequestHandler = attrs.field()
    path_prefix: str = attrs.field(default="", kw_only=True, converter=normalize_prefix)

    @handler.validator
    def _check_handler(self, _attribute: object, value: object) -> None:
        if not isinstance(value, RequestHandler):
            raise TypeError(f"handler must implement RequestHandler, got {value!r}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        if scope["type"] == "http":  # every request: one coroutine less than serve_scope
            await self._http(scope, receive, send)
        else:
            await serve_scope(self._http, scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = str(scope["method"])
        headers = _asgi_headers(scope)
        url = _asgi_url(scope, headers, self.path_prefix)
        cap = self.handler.max_body_bytes
        try:
            declared = declared_length(headers.get("content-length"))
        except MalformedLengthError:
            await _send_response(send, bad_length())
            return
        body: bytes | _Unread = _Unread.TOO_LARGE
        if declared is None or declared <= cap:
            body = await _read_body(receive, cap)
        if body is _Unread.DISCONNECTED:
            return  # nobody is left to answer
        try:
            if isinstance(body, bytes):
                request = WebhookRequest(method=method, url=url, headers=headers, body=body)
                response = await self.handler.ahandle(request)
            else:
                response = self.handler.reject_too_large(method, url)
            start, end = _asgi_messages(response)
        except Exception:
            log.exception("webhook handler failed on %s %s", method, url)
            start, end = _asgi_messages(server_error())
        await send(start)
        await send(end)


def _asgi_url(scope: Scope, headers: Mapping[str, str], prefix: str) -> str:
    """The full URL of an ``http`` request, as the provider sent it.

    The path is the raw path when the server keeps it (``raw_path``), so a signature over the
    URL sees the provider's own percent-encoding; the mount point (``scope["root_path"]``) is
    included whether or not the server or framework already put it into ``scope["path"]``
    (uvicorn and Starlette's ``Mount`` do; older servers and frameworks did not).
    """
    scheme = str(scope.get("scheme") or "http")
    host = headers.get("host")
    if not host:
        server = scope.get("server")
        host = host_header(str(server[0]), int(server[1]), scheme) if server else "localhost"
    root_path = str(scope.get("root_path") or "")
    path = str(scope.get("path") or "")
    if not path.startswith(root_path):
        path = root_path + path
    raw = scope.get("raw_path")
    target = request_target(
        path, bytes(raw).decode("latin-1") if raw is not None else None, encoding="utf-8"
    )
    query = bytes(scope.get("query_string") or b"").decode("latin-1")
    return build_url(scheme=scheme, host=host, prefix=prefix, target=target, query=query)


def _asgi_headers(scope: Scope) -> dict[str, str]:
    """The request's headers, as :func:`~._wire.join_headers` gives them (one pass: this
    runs on the event loop for every request), already in the form
    :class:`~syncrecon.webhooks.WebhookRequest` keeps, so it does not copy them again."""
    raw: Iterable[tuple[bytes, bytes]] = scope.get("headers") or ()
    headers = LowerHeaders()
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return headers


class _Unread(enum.Enum):
    """Why there is no body to hand to the handler."""

    TOO_LARGE = "too large"
    DISCONNECTED = "disconnected"


async def _read_body(receive: Receive, cap: int) -> bytes | _Unread:
    """The request body, or why not: over ``cap`` (found as soon as it is) or the client left."""
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        # The usual webhook: the whole body in one message, taken as it is.
        chunk = message.get("body") or b""
        if len(chunk) > cap:
            return _Unread.TOO_LARGE
        return chunk if type(chunk) is bytes else bytes(chunk)
    body = bytearray()
    while True:
        if message["type"] == "http.disconnect":
            return _Unread.DISCONNECTED
        chunk = message.get("body") or b""
        if len(body) + len(chunk) > cap:
            return _Unread.TOO_LARGE
        body += chunk
        if not message.get("more_body", False):
            return bytes(body)
        message = await receive()


_JSON_TYPE: Final = {"content-type": "application/json"}
_JSON_TYPE_WIRE: Final = (b"content-type", b"application/json")


def _asgi_messages(
    response: WebhookResponse,
) -> tuple[MutableMapping[str, Any], MutableMapping[str, Any]]:
    if response.headers == _JSON_TYPE:  # the handler's own answers: nothing to check
        headers = [_JSON_TYPE_WIRE, (b"content-length", b"%d" % len(response.body))]
    else:
        headers = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in wire_headers(response)
        ]
    return (
        {"type": "http.response.start", "status": response.status, "headers": headers},
        {"type": "http.response.body", "body": bytes(response.body)},
    )


async def _send_response(send: Send, response: WebhookResponse) -> None:
    start, end = _asgi_messages(response)
    await send(start)
    await send(end)
