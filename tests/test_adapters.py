"""The ASGI and WSGI adapters, over real HTTP on loopback and called directly.

A fake :class:`~syncrecon.webhooks.RequestHandler` records what it was handed, so each test
checks the adapter alone: the URL (mount point, raw path, query string), the headers and the
body bytes exactly as the client sent them, the body cap (by ``Content-Length`` and by a
chunked body that streams past it), malformed ``Content-Length``, lifespan, and that an
exception in the handler is a generic 500 with no traceback in it.

Servers run in threads on ``127.0.0.1`` with an ephemeral port: uvicorn for ASGI (bare, under
Starlette and FastAPI, with a root path), Werkzeug and ``wsgiref`` (behind ``wsgiref``'s PEP
3333 validator) for WSGI, Flask both ways, and Django in a subprocess (its settings are global
to a process).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler as WsgirefRequestHandler
from wsgiref.simple_server import make_server as make_wsgiref_server
from wsgiref.types import WSGIApplication
from wsgiref.validate import validator

import httpx
import pytest
import uvicorn
from werkzeug.serving import WSGIRequestHandler, make_server

from syncrecon import ConfigurationError
from syncrecon.webhooks import RequestHandler, WebhookRequest, WebhookResponse
from syncrecon.webhooks.asgi import WebhookApp
from syncrecon.webhooks.wsgi import WebhookWSGI, django_view, flask_view

CAP = 1024
#: Every byte value, CR LF sequences and something that looks like the end of a chunked body:
#: whatever the framing, the handler must see exactly these bytes.
BODY = bytes(range(256)) + b"\r\n0\r\n\r\n" + b'{"a": "\xc3\xa9"}' + bytes(range(255, -1, -1))
GENERIC_500 = b'{"error": "internal server error"}'
BAD_LENGTH = b'{"error": "malformed Content-Length"}'
SECRET = "the database password is hunter2"
TIMEOUT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeHandler:
    """A :class:`RequestHandler` that records every call and answers a fixed response."""

    def __init__(self, *, max_body_bytes: int = CAP, error: Exception | None = None) -> None:
        self.max_body_bytes = max_body_bytes
        self.error = error
        self.response = WebhookResponse(
            status=202,
            headers={"content-type": "application/json", "x-fake": "yes"},
            body=b'{"stored": 1}',
        )
        self.calls: list[str] = []
        self.requests: list[WebhookRequest] = []
        self.rejected: list[tuple[str, str]] = []

    def _answer(self, request: WebhookRequest) -> WebhookResponse:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return self.response

    def handle(self, request: WebhookRequest) -> WebhookResponse:
        self.calls.append("handle")
        return self._answer(request)

    async def ahandle(self, request: WebhookRequest) -> WebhookResponse:
        self.calls.append("ahandle")
        return self._answer(request)

    def reject_too_large(self, method: str, url: str) -> WebhookResponse:
        self.calls.append("reject_too_large")
        self.rejected.append((method, url))
        if self.error is not None:
            raise self.error
        return WebhookResponse.json(413, {"error": "too large"})


def test_the_fake_is_a_request_handler() -> None:
    assert isinstance(FakeHandler(), RequestHandler)


# --------------------------------------------------------------------------------------------
# Servers on loopback


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def serve_asgi(app: Any, **options: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yield its base URL; stop it cleanly."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to start")
        assert server.started, "uvicorn did not start (lifespan failed?)"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        assert not thread.is_alive()


class QuietWerkzeugHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        pass


class QuietWsgirefHandler(WsgirefRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_wsgi(app: WSGIApplication, server: str = "werkzeug") -> Iterator[str]:
    """Serve ``app`` with Werkzeug (or ``wsgiref``) in a thread; yield its base URL."""
    if server == "werkzeug":
        httpd: Any = make_server("127.0.0.1", 0, app, request_handler=QuietWerkzeugHandler)
    else:
        httpd = make_wsgiref_server("127.0.0.1", 0, app, handler_class=QuietWsgirefHandler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=server, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(TIMEOUT)
        assert not thread.is_alive()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as client:
        yield client


def chunked(data: bytes, size: int = 100) -> Iterator[bytes]:
    """``data`` as an iterator, which httpx sends chunked (no ``Content-Length``)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def raw_exchange(base_url: str, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as it is on a socket; return the response's status and body."""
    port = httpx.URL(base_url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def post_with_length(path: str, length: str, body: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


# --------------------------------------------------------------------------------------------
# The hosts under test. Each builds an app around a handler and tells where it answers.


def bare_asgi(handler: FakeHandler) -> tuple[Any, str]:
    return WebhookApp(handler), ""


def starlette_mount(handler: FakeHandler) -> tuple[Any, str]:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("home")

    routes = [Route("/", home), Mount("/webhooks", app=WebhookApp(handler))]
    return Starlette(routes=routes), "/webhooks"


def fastapi_mount(handler: FakeHandler) -> tuple[Any, str]:
    from fastapi import FastAPI

    api = FastAPI()

    @api.get("/")
    def home() -> dict[str, str]:
        return {"home": "yes"}

    api.mount("/webhooks", WebhookApp(handler))
    return api, "/webhooks"


def bare_wsgi(handler: FakeHandler) -> tuple[Any, str]:
    return WebhookWSGI(handler), ""


def flask_dispatcher(handler: FakeHandler) -> tuple[Any, str]:
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    app = Flask("syncrecon_test_dispatcher")
    app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, {"/webhooks": WebhookWSGI(handler)}
    )
    return app, "/webhooks"


def flask_route(handler: FakeHandler) -> tuple[Any, str]:
    from flask import Flask

    app = Flask("syncrecon_test_route")
    app.add_url_rule("/hooks/<path:rest>", view_func=flask_view(handler), methods=["POST"])
    return app, "/hooks"


ASGI_HOSTS = [bare_asgi, starlette_mount, fastapi_mount]
WSGI_HOSTS = [bare_wsgi, flask_dispatcher, flask_route]


@contextlib.contextmanager
def serve(host: Callable[[FakeHandler], tuple[Any, str]], handler: FakeHandler) -> Iterator[str]:
    """Serve the host's app; yield the base URL of the webhook endpoint."""
    app, mount = host(handler)
    context = serve_asgi(app) if host in ASGI_HOSTS else serve_wsgi(app)
    with context as base_url:
        yield base_url + mount


HOSTS = [*ASGI_HOSTS, *WSGI_HOSTS]
HOST_IDS = [host.__name__ for host in HOSTS]
FRONT_DOOR = {host: "ahandle" if host in ASGI_HOSTS else "handle" for host in HOSTS}


# --------------------------------------------------------------------------------------------
# Over HTTP: every host


@pytest.mark.parametrize("host", HOSTS, ids=HOST_IDS)
def test_a_request_reaches_the_handler_exactly(host: Any, client: httpx.Client) -> None:
    handler = FakeHandler()
    with serve(host, handler) as base:
        target = "/hubspot/a%20b%2Fc:@!$;=,~?x=1%202&y=%3A&z=%E2%9C%93&empty="
        response = client.post(
            base + target,
            content=BODY,
            headers=[
                ("X-HubSpot-Signature-v3", "c2lnbmF0dXJl+/=="),
                ("X-Request-Timestamp", "1700000000000"),
                ("Content-Type", "application/json"),
                ("X-Repeated", "one"),
                ("X-Repeated", "two"),
            ],
        )
    assert response.status_code == 202
    assert response.content == b'{"stored": 1}'
    assert response.headers["x-fake"] == "yes"
    assert response.headers["content-type"] == "application/json"
    assert handler.calls == [FRONT_DOOR[host]]
    (seen,) = handler.requests
    assert seen.method == "POST"
    assert seen.url == base + target
    assert seen.body == BODY
    assert seen.headers["x-hubspot-signature-v3"] == "c2lnbmF0dXJl+/=="
    assert seen.headers["x-request-timestamp"] == "1700000000000"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["content-length"] == str(len(BODY))
    assert seen.headers["x-repeated"] == "one,two"
    assert seen.headers["host"] == httpx.URL(base).netloc.decode()


@pytest.mark.parametrize("host", HOSTS, ids=HOST_IDS)
def test_a_chunked_body_reaches_the_handler_exactly(host: Any, client: httpx.Client) -> None:
    handler = FakeHandler()
    with serve(host, handler) as base:
        response = client.post(base + "/stripe", content=chunked(BODY, size=7))
    assert response.status_code == 202
    (seen,) = handler.requests
    assert seen.body == BODY
    assert seen.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in seen.headers


@pytest.mark.parametrize("host", HOSTS, ids=HOST_IDS)
def test_a_body_of_exactly_the_cap_is_accepted(host: Any, client: httpx.Client) -> None:
    handler = FakeHandler()
    body = os.urandom(CAP)
    with serve(host, handler) as base:
        by_length = client.post(base + "/s", content=body)
        streamed = client.post(base + "/s", content=chunked(body, size=300))
    assert (by_length.status_code, streamed.status_code) == (202, 202)
    assert [request.body for request in handler.requests] == [body, body]


@pytest.mark.parametrize("host", HOSTS, ids=HOST_IDS)
def test_content_length_over_the_cap_is_rejected_unread(host: Any, client: httpx.Client) -> None:
    handler = FakeHandler()
    with serve(host, handler) as base:
        response = client.post(base + "/s?q=1", content=b"x" * (CAP + 1))
    assert response.status_code == 413
    assert response.json() == {"error": "too large"}
    assert handler.calls == ["reject_too_large"]
    assert handler.rejected == [("POST", base + "/s?q=1")]


@pytest.mark.parametrize("host", HOSTS, ids=HOST_IDS)
def test_a_chunked_body_streaming_past_the_cap_is_rejected(host: Any, client: httpx.Client) -> None:
    handler = FakeHandler()
    with serve(host, handler) as base:
        response = client.post(base + "/s", content=chunked(b"y" * (4 * CAP), size=256))
    assert response.status_code == 413
    assert handler.calls == ["reject_too_large"]
    assert handler.rejected == [("POST", base + "/s")]


@pytest.mark.parametrize("host", HOSTS, ids=HOST_IDS)
def test_a_handler_exception_is_a_generic_500(
    host: Any, client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    handler = FakeHandler(error=RuntimeError(SECRET))
    with caplog.at_level(logging.ERROR, logger="syncrecon.webhooks"), serve(host, handler) as base:
        failed = client.post(base + "/s", content=b"{}")
        failed_rejecting = client.post(base + "/s", content=b"z" * (CAP + 1))
    for response in (failed, failed_rejecting):
        assert response.status_code == 500
        assert response.content == GENERIC_500
        assert response.headers["content-type"] == "application/json"
        assert SECRET not in response.text
        assert "Traceback" not in response.text
    assert handler.calls == [FRONT_DOOR[host], "reject_too_large"]
    logged = [r for r in caplog.records if r.name == "syncrecon.webhooks"]
    assert len(logged) == 2
    assert all(r.exc_info is not None and r.exc_info[1] is handler.error for r in logged)


@pytest.mark.parametrize("host", HOSTS, ids=HOST_IDS)
def test_a_malformed_content_length_is_400_without_the_handler(host: Any) -> None:
    handler = FakeHandler()
    with serve(host, handler) as base:
        path = httpx.URL(base).path + "/s"
        status, body = raw_exchange(base, post_with_length(path, "12abc", b"{}"))
    assert status == 400
    if host not in ASGI_HOSTS:  # uvicorn refuses it before the app is called
        assert body == BAD_LENGTH
    assert handler.calls == []


@pytest.mark.parametrize("host", HOSTS, ids=HOST_IDS)
def test_other_methods_are_the_handlers_to_answer(host: Any, client: httpx.Client) -> None:
    handler = FakeHandler()
    with serve(host, handler) as base:
        response = client.request("PUT", base + "/s", content=b"{}")
    if host is flask_route:  # the route is registered for POST only
        assert response.status_code == 405
        assert handler.calls == []
    else:
        assert response.status_code == 202
        assert [r.method for r in handler.requests] == ["PUT"]


# --------------------------------------------------------------------------------------------
# Over HTTP: host-specific


def test_the_bare_app_serves_lifespan_and_stops_cleanly() -> None:
    # lifespan="on": uvicorn does not start unless the app completes startup (the shutdown
    # answer is checked directly by test_lifespan_startup_and_shutdown_complete).
    handler = FakeHandler()
    with serve_asgi(WebhookApp(handler)) as base, httpx.Client(timeout=TIMEOUT) as client:
        assert client.post(base + "/", content=b"{}").status_code == 202


def test_a_root_path_and_a_path_prefix_are_in_the_url(client: httpx.Client) -> None:
    # uvicorn --root-path (a proxy that strips /proxy and says so) and path_prefix (one that
    # does not) both put the prefix into the URL the handler sees.
    handler = FakeHandler()
    app = WebhookApp(handler, path_prefix="/outer/")
    with serve_asgi(app, root_path="/proxy") as base:
        client.post(base + "/a%2Fb?x=%20", content=b"{}")
    assert handler.requests[0].url == base + "/outer/proxy/a%2Fb?x=%20"


def test_a_wsgi_path_prefix_is_in_the_url(client: httpx.Client) -> None:
    handler = FakeHandler()
    with serve_wsgi(WebhookWSGI(handler, path_prefix="/outer")) as base:
        client.post(base + "/s?a=b", content=b"{}")
    assert handler.requests[0].url == base + "/outer/s?a=b"


def test_a_pep_3333_validated_server_passes_bodies_through(client: httpx.Client) -> None:
    # wsgiref's validator checks both sides of PEP 3333 and warns (an error here) on a breach.
    handler = FakeHandler()
    with serve_wsgi(validator(WebhookWSGI(handler)), server="wsgiref") as base:
        response = client.post(base + "/s%20t?q=1", content=BODY, headers={"X-Sig": "v1,abc"})
        empty = client.post(base + "/s")
    assert (response.status_code, empty.status_code) == (202, 202)
    assert response.content == b'{"stored": 1}'
    first, second = handler.requests
    assert (first.url, first.body, first.headers["x-sig"]) == (base + "/s%20t?q=1", BODY, "v1,abc")
    assert (second.url, second.body) == (base + "/s", b"")


# --------------------------------------------------------------------------------------------
# Django, in a subprocess of its own


DJANGO_HOST = textwrap.dedent(
    """
    import base64, json, sys, threading

    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="not-a-secret-" * 4,
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF="__main__",
        MIDDLEWARE=[
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
        ],
        INSTALLED_APPS=[],
    )
    django.setup()

    from django.core.wsgi import get_wsgi_application
    from django.urls import path
    from werkzeug.serving import WSGIRequestHandler, make_server

    from syncrecon.webhooks import WebhookResponse
    from syncrecon.webhooks.wsgi import django_view


    class EchoHandler:
        max_body_bytes = int(sys.argv[1])

        def handle(self, request):
            seen = {
                "method": request.method,
                "url": request.url,
                "headers": dict(request.headers),
                "body": base64.b64encode(request.body).decode(),
            }
            return WebhookResponse.json(202, seen)

        async def ahandle(self, request):
            return self.handle(request)

        def reject_too_large(self, method, url):
            return WebhookResponse.json(413, {"rejected": [method, url]})


    class Quiet(WSGIRequestHandler):
        def log(self, *args):
            pass


    urlpatterns = [path("hooks/<path:rest>", django_view(EchoHandler()))]
    server = make_server("127.0.0.1", 0, get_wsgi_application(), request_handler=Quiet)
    print(server.server_port, flush=True)

    def stop_at_eof():
        sys.stdin.read()
        server.shutdown()

    threading.Thread(target=stop_at_eof, daemon=True).start()
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    """
)


@pytest.fixture(scope="module")
def django_base() -> Iterator[str]:
    pytest.importorskip("django")
    with subprocess.Popen(
        [sys.executable, "-c", DJANGO_HOST, str(CAP)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            port = int(process.stdout.readline())
            yield f"http://127.0.0.1:{port}/hooks"
        finally:
            process.stdin.close()
            try:
                process.wait(TIMEOUT)
            finally:
                process.kill()
    assert process.returncode == 0


def test_django_view_passes_requests_through(django_base: str, client: httpx.Client) -> None:
    import base64

    target = "/zendesk/a%20b?x=1%202"
    by_length = client.post(django_base + target, content=BODY, headers={"X-Sig": "abc"})
    streamed = client.post(django_base + target, content=chunked(BODY, size=50))
    for response in (by_length, streamed):
        assert response.status_code == 202  # and not 403: the view is CSRF-exempt
        seen = response.json()
        assert seen["method"] == "POST"
        assert seen["url"] == django_base + target
        assert base64.b64decode(seen["body"]) == BODY
    assert by_length.json()["headers"]["x-sig"] == "abc"


def test_django_view_rejects_bodies_over_the_cap(django_base: str, client: httpx.Client) -> None:
    by_length = client.post(django_base + "/s", content=b"x" * (CAP + 1))
    streamed = client.post(django_base + "/s", content=chunked(b"x" * (4 * CAP), size=256))
    for response in (by_length, streamed):
        assert response.status_code == 413
        assert response.json() == {"rejected": ["POST", django_base + "/s"]}
    status, body = raw_exchange(django_base, post_with_length("/hooks/s", "-1"))
    assert (status, body) == (400, BAD_LENGTH)


# --------------------------------------------------------------------------------------------
# ASGI, called directly


class ASGICall:
    """Drive the app with a scope and body messages; record what it sends."""

    def __init__(self, messages: list[MutableMapping[str, Any]]) -> None:
        self.incoming = list(messages)
        self.received = 0
        self.sent: list[MutableMapping[str, Any]] = []

    async def receive(self) -> MutableMapping[str, Any]:
        self.received += 1
        if self.incoming:
            return self.incoming.pop(0)
        return {"type": "http.request", "body": b"w" * 100, "more_body": True}  # never ends

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body(self) -> bytes:
        return bytes(self.sent[1]["body"])


def http_scope(**overrides: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "https",
        "path": "/hooks/s",
        "raw_path": b"/hooks/s",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"example.com")],
        "server": ("10.0.0.1", 8443),
    }
    scope.update(overrides)
    return scope


def body(data: bytes, *, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": data, "more_body": more}


async def call(app: WebhookApp, scope: dict[str, Any], *messages: Any) -> ASGICall:
    driver = ASGICall(list(messages))
    await app(scope, driver.receive, driver.send)
    return driver


@pytest.mark.anyio
async def test_lifespan_startup_and_shutdown_complete() -> None:
    driver = ASGICall([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    await WebhookApp(FakeHandler())({"type": "lifespan"}, driver.receive, driver.send)
    assert [m["type"] for m in driver.sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


@pytest.mark.anyio
async def test_websockets_are_refused() -> None:
    driver = ASGICall([{"type": "websocket.connect"}])
    await WebhookApp(FakeHandler())({"type": "websocket"}, driver.receive, driver.send)
    assert [m["type"] for m in driver.sent] == ["websocket.close"]


@pytest.mark.anyio
async def test_an_unknown_scope_type_raises() -> None:
    driver = ASGICall([])
    with pytest.raises(ValueError, match="unsupported ASGI scope type"):
        await WebhookApp(FakeHandler())({"type": "telepathy"}, driver.receive, driver.send)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "value",
    ["", " ", "abc", "-1", "+5", "1_0", "0x10", "1.0", "1e3", "5,5", "1 2", "\u0661\u0662", "²"],
)
async def test_malformed_content_length_is_400(value: str) -> None:
    handler = FakeHandler()
    headers = [(b"host", b"example.com"), (b"content-length", value.encode())]
    driver = await call(WebhookApp(handler), http_scope(headers=headers), body(b"12"))
    assert driver.status == 400
    assert driver.body == BAD_LENGTH
    assert dict(driver.sent[0]["headers"])[b"content-length"] == str(len(BAD_LENGTH)).encode()
    assert driver.received == 0
    assert handler.calls == []


@pytest.mark.anyio
@pytest.mark.parametrize(("value", "status"), [(" 2 ", 202), ("1025", 413), ("9" * 5000, 413)])
async def test_content_length_is_read_as_a_number(value: str, status: int) -> None:
    handler = FakeHandler()
    headers = [(b"host", b"h"), (b"content-length", value.encode())]
    driver = await call(WebhookApp(handler), http_scope(headers=headers), body(b"12"))
    assert driver.status == status
    if status == 413:
        assert driver.received == 0  # rejected on the header alone


@pytest.mark.anyio
async def test_a_streamed_body_stops_being_read_past_the_cap() -> None:
    # The driver's body never ends: the app must stop on its own once over the cap.
    handler = FakeHandler(max_body_bytes=1000)
    driver = await call(WebhookApp(handler), http_scope())
    assert driver.status == 413
    assert driver.received == 11  # 1,000 bytes in 100-byte messages, then one more
    assert handler.calls == ["reject_too_large"]


@pytest.mark.anyio
async def test_a_body_in_many_messages_is_joined() -> None:
    handler = FakeHandler()
    messages = [body(BODY[i : i + 10], more=True) for i in range(0, len(BODY), 10)]
    driver = await call(WebhookApp(handler), http_scope(), *messages, body(b""))
    assert driver.status == 202
    assert handler.requests[0].body == BODY


@pytest.mark.anyio
async def test_a_client_that_leaves_mid_body_gets_no_answer() -> None:
    handler = FakeHandler()
    messages = [body(b"{", more=True), {"type": "http.disconnect"}]
    driver = await call(WebhookApp(handler), http_scope(), *messages)
    assert driver.sent == []
    assert handler.calls == []


@pytest.mark.anyio
async def test_a_response_header_that_cannot_be_sent_is_a_500() -> None:
    handler = FakeHandler()
    handler.response = WebhookResponse(status=200, headers={"x-bad": "line\r\nbreak"})
    driver = await call(WebhookApp(handler), http_scope(), body(b"{}"))
    assert (driver.status, driver.body) == (500, GENERIC_500)


@pytest.mark.anyio
async def test_the_content_length_sent_is_the_bodys() -> None:
    handler = FakeHandler()
    handler.response = WebhookResponse(status=200, headers={"Content-Length": "999"}, body=b"ok")
    driver = await call(WebhookApp(handler), http_scope(), body(b"{}"))
    assert driver.sent[0]["headers"] == [(b"content-length", b"2")]
    assert driver.body == b"ok"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("overrides", "url"),
    [
        ({}, "https://example.com/hooks/s"),
        ({"query_string": b"a=%20b&c"}, "https://example.com/hooks/s?a=%20b&c"),
        # Starlette's Mount and uvicorn keep the mount point in path and raw_path...
        ({"root_path": "/hooks"}, "https://example.com/hooks/s"),
        # ...uvicorn's --root-path puts it in path and raw_path; older servers in neither.
        ({"root_path": "/p", "path": "/s", "raw_path": b"/s"}, "https://example.com/p/s"),
        ({"root_path": "/p", "path": "/p/s", "raw_path": b"/s"}, "https://example.com/p/s"),
        # The raw path keeps the client's percent-encoding...
        (
            {"path": "/a b/c:d", "raw_path": b"/a%20b/c%3Ad"},
            "https://example.com/a%20b/c%3Ad",
        ),
        # ...even under a mount point that is only in path...
        (
            {"root_path": "/m n", "path": "/m n/a/b", "raw_path": b"/a%2Fb"},
            "https://example.com/m%20n/a%2Fb",
        ),
        # ...and without one, the decoded path is encoded again.
        ({"path": "/a b/\u00e9", "raw_path": None}, "https://example.com/a%20b/%C3%A9"),
        ({"path": "/x", "raw_path": b"/other"}, "https://example.com/x"),
        # No Host header: the server's address, without the scheme's default port.
        ({"headers": []}, "https://10.0.0.1:8443/hooks/s"),
        ({"headers": [], "server": ("::1", 443)}, "https://[::1]/hooks/s"),
        ({"headers": [], "server": None, "scheme": "http"}, "http://localhost/hooks/s"),
    ],
)
async def test_the_url_is_the_one_the_client_used(overrides: dict[str, Any], url: str) -> None:
    handler = FakeHandler()
    await call(WebhookApp(handler), http_scope(**overrides), body(b""))
    assert handler.requests[0].url == url


@pytest.mark.anyio
async def test_path_prefix_goes_in_front() -> None:
    handler = FakeHandler()
    app = WebhookApp(handler, path_prefix="/api/")
    await call(app, http_scope(root_path="/hooks"), body(b""))
    assert handler.requests[0].url == "https://example.com/api/hooks/s"


def test_constructor_checks() -> None:
    with pytest.raises(ConfigurationError, match="path_prefix"):
        WebhookApp(FakeHandler(), path_prefix="api")
    with pytest.raises(ConfigurationError, match="path_prefix"):
        WebhookWSGI(FakeHandler(), path_prefix="api")
    with pytest.raises(TypeError, match="RequestHandler"):
        WebhookApp(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RequestHandler"):
        WebhookWSGI(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RequestHandler"):
        flask_view(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="RequestHandler"):
        django_view(object())  # type: ignore[arg-type]
    assert WebhookApp(FakeHandler(), path_prefix="/").path_prefix == ""


# --------------------------------------------------------------------------------------------
# WSGI, called directly (behind wsgiref's PEP 3333 validator)


class Input:
    """A ``wsgi.input`` that counts what is read and never ends unless told to."""

    def __init__(self, data: bytes | None) -> None:
        self.data = data
        self.read_total = 0

    def read(self, size: int = -1) -> bytes:
        assert size >= 0, "an unbounded read"
        if self.data is None:
            chunk = b"v" * size
        else:
            chunk, self.data = self.data[:size], self.data[size:]
        self.read_total += len(chunk)
        return chunk

    def readline(self, size: int = -1) -> bytes:
        raise AssertionError("not used")

    def readlines(self, hint: int = -1) -> list[bytes]:
        raise AssertionError("not used")

    def __iter__(self) -> Iterator[bytes]:
        raise AssertionError("not used")


def call_wsgi(
    handler: FakeHandler, stream: Input, *, validate: bool = True, **environ: Any
) -> tuple[str, dict[str, str], bytes]:
    base: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/s",
        "QUERY_STRING": "",
        "SERVER_NAME": "example.com",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": stream,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    base.update(environ)
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, headers))
        return lambda data: None

    app: WSGIApplication = WebhookWSGI(handler)
    result = (validator(app) if validate else app)(base, start_response)
    try:
        content = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started[0]
    return status, dict(headers), content


def test_wsgi_reads_exactly_content_length() -> None:
    handler = FakeHandler()
    stream = Input(BODY + b"trailing bytes of the next request")
    status, headers, content = call_wsgi(handler, stream, CONTENT_LENGTH=str(len(BODY)))
    assert status == "202 Accepted"
    assert headers["x-fake"] == "yes"
    assert headers["content-length"] == str(len(content))
    assert handler.requests[0].body == BODY
    assert stream.read_total == len(BODY)


def test_wsgi_without_content_length_reads_nothing_unless_terminated() -> None:
    handler = FakeHandler()
    stream = Input(None)  # reading it would never end
    status, _, _ = call_wsgi(handler, stream)
    assert status.startswith("202")
    assert handler.requests[0].body == b""
    assert stream.read_total == 0


def test_wsgi_terminated_input_stops_one_byte_past_the_cap() -> None:
    handler = FakeHandler()
    stream = Input(None)
    status, _, content = call_wsgi(handler, stream, **{"wsgi.input_terminated": True})
    assert status == "413 Request Entity Too Large"
    assert content == b'{"error": "too large"}'
    assert stream.read_total == CAP + 1
    assert handler.calls == ["reject_too_large"]


def test_wsgi_terminated_input_within_the_cap_is_read_to_its_end() -> None:
    handler = FakeHandler()
    status, _, _ = call_wsgi(handler, Input(BODY), **{"wsgi.input_terminated": True})
    assert status.startswith("202")
    assert handler.requests[0].body == BODY


def test_wsgi_content_length_over_the_cap_is_not_read() -> None:
    handler = FakeHandler()
    stream = Input(None)
    status, _, _ = call_wsgi(handler, stream, CONTENT_LENGTH=str(CAP + 1))
    assert status.startswith("413")
    assert stream.read_total == 0
    assert handler.rejected == [("POST", "http://example.com/s")]


@pytest.mark.parametrize("value", ["abc", "-1", "+1", " ", "1,1", "\u0661"])
def test_wsgi_malformed_content_length_is_400(value: str) -> None:
    handler = FakeHandler()
    stream = Input(None)
    # (the validator would refuse such an environ itself)
    status, _, content = call_wsgi(handler, stream, validate=False, CONTENT_LENGTH=value)
    assert (status, content) == ("400 Bad Request", BAD_LENGTH)
    assert stream.read_total == 0
    assert handler.calls == []


def test_wsgi_a_body_shorter_than_its_length_is_400() -> None:
    handler = FakeHandler()
    status, _, content = call_wsgi(handler, Input(b"{}"), CONTENT_LENGTH="10")
    assert status.startswith("400")
    assert b"shorter" in content
    assert handler.calls == []


def test_wsgi_handler_exception_is_a_generic_500(caplog: pytest.LogCaptureFixture) -> None:
    handler = FakeHandler(error=ValueError(SECRET))
    with caplog.at_level(logging.ERROR, logger="syncrecon.webhooks"):
        status, _, content = call_wsgi(handler, Input(b"{}"), CONTENT_LENGTH="2")
    assert (status, content) == ("500 Internal Server Error", GENERIC_500)
    assert caplog.records[-1].exc_info is not None


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "http://example.com/s"),
        ({"HTTP_HOST": "h.example:8080", "QUERY_STRING": "a=%20"}, "http://h.example:8080/s?a=%20"),
        ({"SERVER_PORT": "8443", "wsgi.url_scheme": "https"}, "https://example.com:8443/s"),
        ({"SERVER_PORT": "443", "wsgi.url_scheme": "https"}, "https://example.com/s"),
        # A mount point in SCRIPT_NAME, and the raw target when the server keeps it.
        ({"SCRIPT_NAME": "/hooks", "REQUEST_URI": "/hooks/s?x"}, "http://example.com/hooks/s"),
        ({"PATH_INFO": "/a/b", "RAW_URI": "/a%2Fb"}, "http://example.com/a%2Fb"),
        (
            {"SCRIPT_NAME": "/m n", "PATH_INFO": "/a/b", "RAW_URI": "/a%2fb"},
            "http://example.com/m%20n/a%2fb",
        ),
        (
            {"PATH_INFO": "/a/b", "REQUEST_URI": "http://proxy.example/a%2Fb"},
            "http://example.com/a%2Fb",
        ),
        # No raw target: PATH_INFO (bytes as Latin-1) is encoded again.
        ({"PATH_INFO": "/caf\u00c3\u00a9 x"}, "http://example.com/caf%C3%A9%20x"),
        ({"PATH_INFO": "/x", "RAW_URI": "/elsewhere"}, "http://example.com/x"),
    ],
)
def test_wsgi_url_reconstruction(environ: dict[str, Any], url: str) -> None:
    handler = FakeHandler()
    call_wsgi(handler, Input(b""), **environ)
    assert handler.requests[0].url == url


# --------------------------------------------------------------------------------------------
# Framework helpers import their framework lazily


def test_importing_the_adapters_imports_no_framework() -> None:
    code = (
        "import sys, syncrecon.webhooks.asgi, syncrecon.webhooks.wsgi; "
        "print(sorted(m for m in ('flask', 'django', 'starlette', 'fastapi', 'werkzeug', "
        "'uvicorn') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("make_view", "module", "extra"),
    [(flask_view, "flask", "flask"), (django_view, "django.http", "django")],
)
def test_a_missing_framework_is_a_clear_error(
    make_view: Any, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(ConfigurationError, match=rf"pip install syncrecon\[{extra}\]"):
        make_view(FakeHandler())
