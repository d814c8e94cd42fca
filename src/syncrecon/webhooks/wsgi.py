"""Serve a webhook handler from a WSGI host: any PEP 3333 server, Flask, Django.

:class:`WebhookWSGI` is a WSGI application that imports no framework. Mount it next to a
Flask app with Werkzeug's dispatcher::

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from syncrecon.webhooks.wsgi import WebhookWSGI

    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/webhooks": WebhookWSGI(handler)})

or give a route to the handler with :func:`flask_view` or :func:`django_view`, which import
their framework only when called (install ``syncrecon[flask]`` or ``syncrecon[django]``)::

    app.add_url_rule("/webhooks/<path:source>", view_func=flask_view(handler), methods=["POST"])

    urlpatterns = [path("webhooks/<path:source>", django_view(handler))]

Each does what the ASGI adapter (:mod:`syncrecon.webhooks.asgi`) does: rebuild the URL the
provider used (from ``REQUEST_URI`` or ``RAW_URI`` when the server keeps the raw path, from
``SCRIPT_NAME`` and ``PATH_INFO`` otherwise), answer 400 for a malformed ``Content-Length``,
answer a body over the handler's ``max_body_bytes`` with
:meth:`~syncrecon.webhooks.RequestHandler.reject_too_large` without reading more than one
byte past the cap, call :meth:`~syncrecon.webhooks.RequestHandler.handle` with the raw body
bytes, and turn an exception escaping the handler into a logged, generic 500.

A body without a ``Content-Length`` is read only when the server says the input stream ends
where the body ends (``wsgi.input_terminated``, as Werkzeug, gunicorn and others do for
chunked requests); otherwise, as PEP 3333 requires, it is taken to be empty.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import attrs

from .._exceptions import ConfigurationError
from ._events import RequestHandler, WebhookRequest, WebhookResponse
from ._wire import (
    READ_CHUNK,
    MalformedLengthError,
    bad_length,
    build_url,
    declared_length,
    host_header,
    incomplete_body,
    join_headers,
    normalize_prefix,
    request_target,
    server_error,
    status_line,
    wire_headers,
)

__all__ = ["WebhookWSGI", "django_view", "flask_view"]

log = logging.getLogger("syncrecon.webhooks")

_Read = Callable[[int], bytes]


@attrs.frozen
class WebhookWSGI:
    """A webhook handler as a WSGI application (PEP 3333).

    :param handler: what answers the requests: a :class:`~syncrecon.webhooks.WebhookHandler`
        or anything else that implements :class:`~syncrecon.webhooks.RequestHandler`. Its
        ``max_body_bytes`` is read on every request.
    :param path_prefix: prepended to the URL's path, for a prefix that a reverse proxy strips
        before forwarding without setting ``SCRIPT_NAME``. A mount point that is in
        ``SCRIPT_NAME`` (Werkzeug's ``DispatcherMiddleware``, a server's mount option) is taken
        into account on its own: do not repeat it here.
    :raises ConfigurationError: when ``path_prefix`` does not start with ``/``.
    :raises TypeError: when ``handler`` does not implement the protocol.
    """

    handler: RequestHandler = attrs.field()
    path_prefix: str = attrs.field(default="", kw_only=True, converter=normalize_prefix)

    @handler.validator
    def _check_handler(self, _attribute: object, value: object) -> None:
        _check(value)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request."""
        stream = environ.get("wsgi.input")
        declared = environ.get("CONTENT_LENGTH")
        if stream is None or not (declared or environ.get("wsgi.input_terminated")):
            read: _Read = _empty  # PEP 3333: no Content-Length, no body
        else:
            read = stream.read
        response, headers = _answer(
            self.handler,
            method=str(environ.get("REQUEST_METHOD", "GET")),
            url=_environ_url(environ, self.path_prefix),
            headers=_environ_headers(environ),
            read=read,
        )
        start_response(status_line(response.status), headers)
        return [response.body]


def flask_view(handler: RequestHandler, *, path_prefix: str = "") -> Callable[..., Any]:
    """A Flask view function that forwards the request to ``handler``.

    Register it for ``POST`` under any rule; the rule's variables are ignored (the handler
    sees the full URL). Its endpoint name is ``"syncrecon_webhook"``: pass ``endpoint=`` to
    ``add_url_rule`` when you register more than one. The body is read from
    ``request.stream``, so Flask's ``MAX_CONTENT_LENGTH`` still applies when it is the lower.

    :param path_prefix: as for :class:`WebhookWSGI`.
    :raises ConfigurationError: when Flask is not installed (``pip install syncrecon[flask]``).
    """
    _check(handler)
    prefix = normalize_prefix(path_prefix)
    flask = _import_extra("flask", "flask_view", extra="flask")

    def syncrecon_webhook(**_route_values: object) -> Any:
        request = flask.request
        environ: WSGIEnvironment = request.environ
        response, headers = _answer(
            handler,
            method=str(request.method),
            url=_environ_url(environ, prefix),
            headers=_environ_headers(environ),
            read=request.stream.read,
        )
        return flask.Response(response.body, status=response.status, headers=headers)

    return syncrecon_webhook


def django_view(handler: RequestHandler, *, path_prefix: str = "") -> Callable[[Any], Any]:
    """A Django view function that forwards the request to ``handler``.

    The view is exempt from CSRF protection (providers send no CSRF token: the signature is
    the protection). The URL is built with ``request.scheme`` and ``request.get_host()``, so
    ``SECURE_PROXY_SSL_HEADER``, ``USE_X_FORWARDED_HOST`` and ``ALLOWED_HOSTS`` apply. The
    body is read from the request stream, never through ``request.body``, so
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` does not apply and the handler's ``max_body_bytes`` does;
    a chunked body is read too when the server marks its end (``wsgi.input_terminated``).

    :param path_prefix: as for :class:`WebhookWSGI`.
    :raises ConfigurationError: when Django is not installed (``pip install syncrecon[django]``).
    """
    _check(handler)
    prefix = normalize_prefix(path_prefix)
    http = _import_extra("django.http", "django_view", extra="django")
    csrf = _import_extra("django.views.decorators.csrf", "django_view", extra="django")

    def syncrecon_webhook(request: Any, *_args: object, **_kwargs: object) -> Any:
        meta: Mapping[str, Any] = request.META
        wsgi = "wsgi.input" in meta
        read: _Read = request.read
        if wsgi and not meta.get("CONTENT_LENGTH") and meta.get("wsgi.input_terminated"):
            read = meta["wsgi.input"].read  # Django itself reads no chunked body
        path = (
            str(meta.get("SCRIPT_NAME", "")) + str(meta.get("PATH_INFO", ""))
            if wsgi
            else str(request.path)
        )
        url = build_url(
            scheme=str(request.scheme),
            host=str(request.get_host()),
            prefix=prefix,
            target=request_target(path, _raw_path(meta), encoding="latin-1" if wsgi else "utf-8"),
            query=str(meta.get("QUERY_STRING", "")),
        )
        response, headers = _answer(
            handler, method=str(request.method), url=url, headers=_environ_headers(meta), read=read
        )
        answer = http.HttpResponse(response.body, status=response.status)
        for name, value in headers:
            answer[name] = value
        return answer

    view: Callable[[Any], Any] = csrf.csrf_exempt(syncrecon_webhook)
    return view


# --------------------------------------------------------------------------------------------
# The steps every WSGI front door shares


def _answer(
    handler: RequestHandler, *, method: str, url: str, headers: dict[str, str], read: _Read
) -> tuple[WebhookResponse, list[tuple[str, str]]]:
    """Read the body (bounded), call the handler, and return its response and its headers.

    ``read`` must return ``b""`` at the end of the body: the callers hand in a stream that
    ends there, or one that is empty when there is no body.
    """
    cap = handler.max_body_bytes
    try:
        declared = declared_length(headers.get("content-length"))
    except MalformedLengthError:
        response = bad_length()
        return response, wire_headers(response)
    body: bytes | None = None
    if declared is None or declared <= cap:
        body = _read_body(read, declared, cap)
        if body is not None and declared is not None and len(body) < declared:
            response = incomplete_body()  # the client went away: it reads no answer
            return response, wire_headers(response)
    try:
        if body is None:
            response = handler.reject_too_large(method, url)
        else:
            request = WebhookRequest(method=method, url=url, headers=headers, body=body)
            response = handler.handle(request)
        return response, wire_headers(response)
    except Exception:
        log.exception("webhook handler failed on %s %s", method, url)
        response = server_error()
        return response, wire_headers(response)


def _read_body(read: _Read, declared: int | None, cap: int) -> bytes | None:
    """The body, or ``None`` when it streams past ``cap``; never reads ``cap + 1`` bytes more.

    With a ``declared`` length (at most ``cap``), reads that many bytes or up to the end of
    the stream, whichever comes first.
    """
    want = cap + 1 if declared is None else declared
    body = bytearray()
    while len(body) < want:
        size = min(READ_CHUNK, want - len(body))
        chunk = read(size)
        if not chunk:
            break
        body += chunk[:size]
    return None if len(body) > cap else bytes(body)


def _empty(_size: int) -> bytes:
    return b""


def _environ_headers(environ: Mapping[str, Any]) -> dict[str, str]:
    pairs = [
        (key[5:].replace("_", "-"), str(value))
        for key, value in environ.items()
        if key.startswith("HTTP_")
    ]
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            pairs.append((key.replace("_", "-"), str(environ[key])))
    return join_headers(pairs)


def _raw_path(environ: Mapping[str, Any]) -> str | None:
    """The raw path as the client sent it, when the server keeps the request target."""
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not target:
        return None
    path = str(target).partition("?")[0].partition("#")[0]
    if not path.startswith("/"):  # absolute form: http://host/path
        _, _, rest = path.partition("://")
        path = "/" + rest.partition("/")[2] if rest else path
    return path


def _environ_url(environ: Mapping[str, Any], prefix: str) -> str:
    """The full URL of a request (PEP 3333's "URL Reconstruction", with the raw path)."""
    scheme = str(environ.get("wsgi.url_scheme") or "http")
    host = environ.get("HTTP_HOST")
    if not host:
        port = str(environ.get("SERVER_PORT") or "")
        host = host_header(
            str(environ.get("SERVER_NAME") or "localhost"),
            int(port) if port.isascii() and port.isdigit() else None,
            scheme,
        )
    path = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    target = request_target(path, _raw_path(environ), encoding="latin-1")
    query = str(environ.get("QUERY_STRING", ""))
    return build_url(scheme=scheme, host=str(host), prefix=prefix, target=target, query=query)


def _check(handler: object) -> None:
    if not isinstance(handler, RequestHandler):
        raise TypeError(f"handler must implement RequestHandler, got {handler!r}")


def _import_extra(module: str, user: str, *, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigurationError(
            f"{user} needs the {extra!r} package: install it with `pip install syncrecon[{extra}]`"
        ) from None
