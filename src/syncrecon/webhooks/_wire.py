"""The no-I/O steps the ASGI and WSGI webhook adapters share: lengths, URLs, headers, the
fixed answers. Private to :mod:`syncrecon.webhooks`."""

from __future__ import annotations

import http
import urllib.parse
from collections.abc import Iterable
from typing import Final

from .._exceptions import ConfigurationError
from ._events import WebhookResponse

#: Characters left as they are when a decoded path has to be percent-encoded again: RFC 3986's
#: ``pchar`` and ``/`` (letters, digits and ``_.-~`` are always left alone).
_PATH_SAFE: Final = "/!$&'()*+,;=:@"
#: A number with more digits than this is over any cap (and far from ``int()``'s digit limit).
_MAX_LENGTH_DIGITS: Final = 18
_TOO_LONG: Final = 10**_MAX_LENGTH_DIGITS
#: How much of a body the WSGI adapter asks its input stream for at once.
READ_CHUNK: Final = 64 * 1024


class MalformedLengthError(ValueError):
    """A ``Content-Length`` that is not a plain non-negative decimal number."""


def declared_length(value: str | None) -> int | None:
    """The body length a ``Content-Length`` value declares, or ``None`` when there is none.

    Strict: optional surrounding blanks around ASCII digits and nothing else (no sign, no
    ``_``, no list of values). A number too long to matter is returned as one over any cap.

    :raises MalformedLengthError: for any other value.
    """
    if value is None:
        return None
    digits = value.strip(" \t")
    if not digits or not digits.isascii() or not digits.isdigit():
        raise MalformedLengthError(value)
    if len(digits) > _MAX_LENGTH_DIGITS:
        return _TOO_LONG
    return int(digits)


def normalize_prefix(value: str) -> str:
    prefix = value.rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise ConfigurationError(f"path_prefix must start with '/', got {value!r}")
    if "?" in prefix or "#" in prefix:
        raise ConfigurationError(f"path_prefix must be a path, got {value!r}")
    return prefix


def request_target(path: str, raw_path: str | None, *, encoding: str) -> str:
    """The path as the client sent it, percent-encoding and all.

    ``path`` is the server's decoded path (including the mount point), ``raw_path`` the raw
    form when the server keeps it, which may lack a prefix the server or a framework added to
    ``path`` (a mount point, a configured root path). ``encoding`` is how the server turned
    percent-decoded bytes into text (UTF-8 for ASGI, Latin-1 for WSGI). When the raw form does
    not match, ``path`` is encoded again, which gives the sent form for all usual URLs.
    """
    if raw_path is not None and raw_path.startswith("/"):
        decoded = urllib.parse.unquote(raw_path, encoding=encoding, errors="replace")
        if decoded == path:
            return raw_path
        if path.endswith(decoded):
            mount = path[: len(path) - len(decoded)]
            return _quote(mount, encoding) + raw_path
    return _quote(path, encoding) or "/"


def _quote(path: str, encoding: str) -> str:
    return urllib.parse.quote(path, safe=_PATH_SAFE, encoding=encoding, errors="replace")


def build_url(*, scheme: str, host: str, prefix: str, target: str, query: str) -> str:
    url = f"{scheme}://{host}{prefix}{target}"
    return f"{url}?{query}" if query else url


def host_header(name: str, port: int | None, scheme: str) -> str:
    """``host[:port]`` from a server address, leaving out the scheme's default port."""
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"  # an IPv6 address
    if port is None or (scheme, port) in {("http", 80), ("https", 443)}:
        return name
    return f"{name}:{port}"


def join_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased header names; repeated headers joined with ``","`` as WSGI servers do."""
    headers: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    return headers


def bad_length() -> WebhookResponse:
    return WebhookResponse.json(400, {"error": "malformed Content-Length"})


def incomplete_body() -> WebhookResponse:
    return WebhookResponse.json(400, {"error": "the body is shorter than its Content-Length"})


def server_error() -> WebhookResponse:
    return WebhookResponse.json(500, {"error": "internal server error"})


def wire_headers(response: WebhookResponse) -> list[tuple[str, str]]:
    """The response's headers to send, with a ``content-length`` that matches its body.

    :raises ValueError: for a header that cannot be sent (not Latin-1, or a line break in it).
    """
    headers = [
        (str(name), str(value))
        for name, value in response.headers.items()
        if str(name).lower() != "content-length"
    ]
    headers.append(("content-length", str(len(response.body))))
    for name, value in headers:
        text = name + value
        if "\r" in text or "\n" in text or "\0" in text:
            raise ValueError(f"a line break or NUL in the header {name!r}: {value!r}")
        text.encode("latin-1")  # UnicodeEncodeError, a ValueError, when it cannot be sent
    return headers


def status_line(status: int) -> str:
    try:
        return f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"
