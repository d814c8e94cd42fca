"""The operator queue as web pages: a pure ASGI 3 application with plain HTML forms.

:class:`QueueApp` imports no web framework (install the ``web`` extra for a server:
``pip install "syncrecon[web]"``). Serve it on its own, or mount it next to your app::

    from fastapi import FastAPI
    from syncrecon.queue import OperatorQueue
    from syncrecon.web import QueueApp

    api = FastAPI()
    api.mount("/ops/queue", QueueApp(OperatorQueue(storage, [deals_sync])))

Pages (relative to the mount point):

- ``GET /`` lists the queue; the query string filters it (``sync``, ``status``: ``active``
  by default, a status or ``all``; ``category``, ``field``, ``key``, ``assignee``,
  ``older_than_hours``, ``limit``);
- ``GET /items/{id}`` shows an item with its forms: resolve (take the left value, the right
  value or a JSON value; a record-level item is acknowledged), dismiss (with a reason) and
  assign;
- ``POST /items/{id}/resolve``, ``/dismiss`` and ``/assign`` take
  ``application/x-www-form-urlencoded`` forms and answer ``303 See Other`` back to the item;
- ``GET /dashboard`` renders :func:`syncrecon.dashboard.build_dashboard` (404 when the app is
  made with ``dashboard=False`` or that module is not installed).

No page needs JavaScript, and the pages forbid scripts, framing and foreign form targets
(``Content-Security-Policy``). Every value shown is HTML-escaped.

Protection. The app has no login of its own: put it behind the host's authentication (a
middleware, a reverse proxy), and pass ``operator`` to record who decides. Only ``POST``
changes anything, and a ``POST`` is refused (403) unless its ``Origin`` header (or, without
one, its ``Referer``) names the same host as its ``Host`` header, or one of
``trusted_origins``: a cross-site form cannot resolve items on an operator's behalf. A script
that posts must send a matching ``Origin``. Behind a proxy that rewrites ``Host``, list the
public origin in ``trusted_origins``.

Every request (``GET`` too) must also name an allowed host in its ``Host`` header, or it is
answered ``400`` and goes no further: a page without a login of its own must not be readable
through DNS rebinding (a hostile site whose name resolves to ``127.0.0.1``). By default only
loopback names are allowed (``localhost``, ``127.0.0.1``, ``[::1]``, on any port); served under
other names, or behind a proxy, pass the public names in ``allowed_hosts``
(``["ops.example.com"]``; ``"ops.example.com:8443"`` allows that port only; ``"*"`` any host).

A resolve form carries the values the page showed; when the item's values changed before the
form was sent (a cycle saw new values), nothing is done and the page says so.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import anyio.to_thread

from . import _codec
from ._exceptions import (
    ConfigurationError,
    ItemClosedError,
    ItemNotFoundError,
    LeaseHeldError,
    QueueError,
)
from ._policy import values_equal
from .queue import (
    DEFAULT_STATUSES,
    ItemView,
    OperatorQueue,
    Resolution,
    display_value,
    is_record_level,
)
from .queue._items import StatusFilter
from .storage._base import Discrepancy, Status
from .webhooks._asgi_base import serve_scope

__all__ = ["LOOPBACK_HOSTS", "QueueApp"]

log = logging.getLogger("syncrecon.web")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_FORM_TYPE: Final = "application/x-www-form-urlencoded"
_CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)
LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "[::1]")
"""The hosts :class:`QueueApp` serves by default (any port): loopback names only."""
_STATUS_CHOICES: Final = ("active", *(s.value for s in Status), "all")
_DONE: Final = {
    "resolved": ("ok", "Resolved: the value is written where it was needed; the item is closed."),
    "acknowledged": ("ok", "Acknowledged: the item is closed; nothing was written."),
    "changed": (
        "warn",
        "Not resolved: a record changed since the item was opened, so nothing was written."
        " The item is back in review; its note says what changed.",
    ),
    "failed": (
        "warn",
        "Not resolved: a read or a write failed; the item stays open and the base did not"
        " move. Its note has the error.",
    ),
    "stale": (
        "warn",
        "Nothing was done: the item's values changed after this page was loaded. Review them"
        " and choose again.",
    ),
    "dismissed": ("ok", "Dismissed: the item is closed without a change."),
    "assigned": ("ok", "Assignment saved."),
}
_STYLE: Final = """
body{font:15px/1.45 system-ui,sans-serif;margin:1.5rem auto;max-width:72rem;padding:0 1rem;
color:#1d1d1f}
a{color:#0b57d0}table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f6}code,pre{font:13px ui-monospace,monospace}
pre{background:#f6f6f8;padding:.6rem;white-space:pre-wrap}
form{border:1px solid #ddd;padding:.6rem .8rem;margin:.6rem 0;border-radius:6px}
form.filters{display:flex;flex-wrap:wrap;gap:.4rem;align-items:end}
label{display:inline-block;margin:.15rem .6rem .15rem 0}
.ok{background:#e6f4ea;padding:.5rem}.warn{background:#fef7e0;padding:.5rem}
.error{background:#fce8e6;padding:.5rem}nav a{margin-right:1rem}
"""


class _HTTPError(Exception):
    """An answer other than the page: ``status`` and a message to show."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _text(value: Any, width: int | None = None) -> str:
    """A value as JSON text (the form the custom-value field takes)."""
    try:
        text = _codec.dumps(value)
    except TypeError:
        text = repr(value)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _shown(value: Any, width: int | None = None) -> str:
    """A value as a person reads it (dates, times, decimals, lists, blanks)."""
    text = display_value(value)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours >= 48:
        return f"{hours / 24:.1f} d"
    if hours >= 1:
        return f"{hours:.1f} h"
    return f"{max(delta.total_seconds(), 0) / 60:.0f} min"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _split_host(text: str) -> tuple[str, str | None] | None:
    """``(name, port or None)`` of a ``Host`` header or an allowed host; ``None`` if malformed.

    Names are lower-cased without a trailing dot; IPv6 addresses keep their brackets (``::1``
    is read as ``[::1]``).
    """
    text = text.strip().lower()
    if text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address (allowed hosts only: a Host header has [])
    port: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        name, rest = text[: end + 1], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port = rest[1:]
    else:
        name, colon, tail = text.partition(":")
        if colon:
            port = tail
    name = name.rstrip(".") if not name.startswith("[") else name
    if port is not None and not (port.isascii() and port.isdigit() and len(port) <= 5):
        return None
    if not name or any(c in name for c in "/@?#\\ ,") or not name.isascii():
        return None
    return name, port


def _host_key(netloc: str, scheme: str) -> str:
    """``host[:port]`` lower-cased, without user info and without the scheme's default port."""
    host = netloc.rsplit("@", 1)[-1].strip().lower()
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and host.endswith(default):
        host = host[: -len(default)]
    return host


class QueueApp:
    """The operator queue's web pages, as an ASGI 3 application.

    :param queue: the queue to show and work; resolving needs its sync definitions.
    :param dashboard: serve ``/dashboard`` (when :mod:`syncrecon.dashboard` is installed).
    :param operator: names the operator of a request from its ASGI scope (your authentication
        middleware's user, say); when given, it is recorded as ``by`` and the pages do not ask
        for a name. Return ``None`` to fall back to the name typed in the form.
    :param trusted_origins: origins (``https://ops.example.com``) whose ``POST`` is accepted
        besides the request's own host, for a proxy that rewrites ``Host``.
    :param max_body_bytes: the largest form accepted (413 above it).
    :param allowed_hosts: the host names a request's ``Host`` header may name (any port, or
        ``"name:port"`` for that port only; ``"*"`` allows any). Any other host gets ``400``.
        By default loopback only: ``localhost``, ``127.0.0.1`` and ``[::1]``.
    """

    def __init__(
        self,
        queue: OperatorQueue,
        *,
        dashboard: bool = True,
        operator: Callable[[Scope], str | None] | None = None,
        trusted_origins: Iterable[str] = (),
        max_body_bytes: int = 64 * 1024,
        allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    ) -> None:
        self.queue = queue
        self.dashboard = dashboard
        self.operator = operator
        self.max_body_bytes = max_body_bytes
        trusted: set[str] = set()
        for origin in trusted_origins:
            parts = urllib.parse.urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigurationError(
                    f"a trusted origin looks like https://host, got {origin!r}"
                )
            trusted.add(_host_key(parts.netloc, parts.scheme))
        self.trusted = frozenset(trusted)
        if isinstance(allowed_hosts, str):
            raise ConfigurationError("allowed_hosts is a list of host names, not one string")
        hosts: set[tuple[str, str | None]] = set()
        for allowed in allowed_hosts:
            parsed = _split_host(allowed) if allowed != "*" else ("*", None)
            if parsed is None:
                raise ConfigurationError(
                    f"an allowed host looks like ops.example.com or ops.example.com:8443,"
                    f" got {allowed!r}"
                )
            hosts.add(parsed)
        self.allowed_hosts = frozenset(hosts)

    def __repr__(self) -> str:
        return f"QueueApp({self.queue!r}, dashboard={self.dashboard})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection."""
        await serve_scope(self._http, scope, receive, send)

    # -- dispatch ------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = str(scope["method"]).upper()
        root = str(scope.get("root_path") or "").rstrip("/")
        path = str(scope.get("path") or "/")
        if root and path.startswith(root):
            path = path[len(root) :]
        path = "/" + path.strip("/")
        headers = _headers(scope)
        if not self._host_allowed(headers.get("host")):
            log.warning("refused a request for host %r (not in allowed_hosts)", headers.get("host"))
            await _respond_plain(send, 400, "Bad Request: this host name is not served here.\n")
            return
        try:
            query = _query(scope)
            status, body, extra = await self._route(
                method, path, root, query, headers, scope, receive
            )
        except _HTTPError as exc:
            status, extra = exc.status, exc.headers
            body = self._page(
                root, f"Error {exc.status}", f'<p class="error">{_e(exc.message)}</p>'
            )
        except Exception:
            log.exception("queue page failed on %s %s", method, path)
            status, extra = 500, {}
            body = self._page(root, "Error 500", '<p class="error">Internal server error.</p>')
        await _respond(send, status, body, extra, head=method == "HEAD")

    async def _route(
        self,
        method: str,
        path: str,
        root: str,
        query: Mapping[str, Sequence[str]],
        headers: Mapping[str, str],
        scope: Scope,
        receive: Receive,
    ) -> tuple[int, str, dict[str, str]]:
        parts = path.strip("/").split("/") if path != "/" else []
        reading = method in ("GET", "HEAD")
        if not parts:
            _allow(reading, "GET, HEAD")
            return 200, await self._list_page(root, query), {}
        if parts == ["dashboard"]:
            _allow(reading, "GET, HEAD")
            return 200, await self._dashboard(), {}
        if parts[0] == "items" and len(parts) in (2, 3) and _is_id(parts[1]):
            item_id = int(parts[1])
            if len(parts) == 2:
                _allow(reading, "GET, HEAD")
                return 200, await self._item_page(root, item_id, query), {}
            if parts[2] in ("resolve", "dismiss", "assign"):
                _allow(method == "POST", "POST")
                self._check_origin(headers)
                form = await self._form(headers, receive)
                done = await self._act(parts[2], item_id, form, scope)
                location = f"{urllib.parse.quote(root)}/items/{item_id}?done={done}"
                return 303, "", {"location": location}
        raise _HTTPError(404, "No such page.")

    def _host_allowed(self, header: str | None) -> bool:
        if ("*", None) in self.allowed_hosts:
            return True
        parsed = _split_host(header or "")
        if parsed is None:
            return False
        name, _port = parsed
        return (name, None) in self.allowed_hosts or parsed in self.allowed_hosts

    def _check_origin(self, headers: Mapping[str, str]) -> None:
        host = headers.get("host", "")
        source = headers.get("origin")
        if source is None:
            source = headers.get("referer")
        parts = urllib.parse.urlsplit(source or "")
        if parts.scheme not in ("http", "https") or not parts.netloc or not host:
            raise _HTTPError(403, "Refused: a change needs an Origin (or Referer) of this site.")
        seen = _host_key(parts.netloc, parts.scheme)
        if seen != _host_key(host, parts.scheme) and seen not in self.trusted:
            raise _HTTPError(403, "Refused: the form was not sent from this site.")

    async def _form(self, headers: Mapping[str, str], receive: Receive) -> dict[str, str]:
        kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind and kind != _FORM_TYPE:
            raise _HTTPError(415, f"Send the form as {_FORM_TYPE}.")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _HTTPError(400, "The client went away.")
            body += message.get("body") or b""
            if len(body) > self.max_body_bytes:
                raise _HTTPError(413, "The form is too large.")
            if not message.get("more_body", False):
                break
        if body and not kind:
            raise _HTTPError(415, f"Send the form as {_FORM_TYPE}.")
        try:
            fields = urllib.parse.parse_qs(
                body.decode("utf-8"), keep_blank_values=True, max_num_fields=50
            )
        except (UnicodeDecodeError, ValueError):
            raise _HTTPError(400, "The form cannot be read.") from None
        return {name: values[-1] for name, values in fields.items()}

    # -- actions -------------------------------------------------------------------------------

    def _by(self, form: Mapping[str, str], scope: Scope) -> str | None:
        if self.operator is not None:
            name = self.operator(scope)
            if name:
                return name
        return form.get("by", "").strip() or None

    async def _act(self, action: str, item_id: int, form: Mapping[str, str], scope: Scope) -> str:
        q = self.queue
        by = self._by(form, scope)
        try:
            if action == "dismiss":
                await q.adismiss(item_id, form.get("reason", ""), by=by)
                return "dismissed"
            if action == "assign":
                await q.aassign(item_id, form.get("to", ""))
                return "assigned"
            return await self._resolve(item_id, form, by)
        except ItemNotFoundError as exc:
            raise _HTTPError(404, str(exc)) from None
        except KeyError:
            raise _HTTPError(404, f"No queue item has the id {item_id}.") from None
        except (ItemClosedError, LeaseHeldError) as exc:
            raise _HTTPError(409, str(exc)) from None
        except (QueueError, ConfigurationError) as exc:
            raise _HTTPError(400, str(exc)) from None

    async def _resolve(self, item_id: int, form: Mapping[str, str], by: str | None) -> str:
        q = self.queue
        note = form.get("note", "").strip() or None
        take = form.get("take", "")
        kwargs: dict[str, Any] = {}
        if take in ("left", "right"):
            kwargs["take"] = take
        elif take == "value":
            try:
                kwargs["value"] = _codec.loads(form.get("value", ""))
            except ValueError:
                raise _HTTPError(400, "The custom value is not JSON (text needs quotes).") from None
        elif take:
            raise _HTTPError(400, "Choose the left value, the right value or a custom value.")
        if "seen_left" in form or "seen_right" in form:
            item = await anyio.to_thread.run_sync(lambda: q.storage.get_item(item_id))
            if not _same_as_seen(item, form):
                return "stale"
        result: Resolution = await q.aresolve(item_id, by=by, note=note, **kwargs)
        return result.outcome.value

    # -- pages ---------------------------------------------------------------------------------

    def _dashboard_available(self) -> bool:
        if not self.dashboard:
            return False
        try:
            return importlib.util.find_spec("syncrecon.dashboard") is not None
        except (ImportError, ValueError):
            return False

    async def _dashboard(self) -> str:
        if not self.dashboard:
            raise _HTTPError(404, "The dashboard is not served here.")
        try:
            module: Any = importlib.import_module("syncrecon.dashboard")
        except ModuleNotFoundError as exc:
            if exc.name == "syncrecon.dashboard":
                raise _HTTPError(404, "The dashboard is not installed.") from None
            raise
        storage = self.queue.storage

        def render() -> str:
            return str(module.build_dashboard(storage).to_html())

        return await anyio.to_thread.run_sync(render)

    def _page(self, root: str, title: str, content: str) -> str:
        nav = f'<a href="{_e(root)}/">Queue</a>'
        if self._dashboard_available():
            nav += f'<a href="{_e(root)}/dashboard">Dashboard</a>'
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)} · syncrecon</title><style>{_STYLE}</style></head>"
            f"<body><nav>{nav}</nav><h1>{_e(title)}</h1>{content}</body></html>\n"
        )

    async def _list_page(self, root: str, query: Mapping[str, Sequence[str]]) -> str:
        def arg(name: str) -> str | None:
            values = query.get(name)
            return values[-1].strip() or None if values else None

        status_arg = arg("status") or "active"
        if status_arg not in _STATUS_CHOICES:
            raise _HTTPError(400, f"Unknown status {status_arg!r}.")
        status: StatusFilter = (
            DEFAULT_STATUSES
            if status_arg == "active"
            else None
            if status_arg == "all"
            else status_arg
        )
        try:
            hours = arg("older_than_hours")
            older = None if hours is None else timedelta(hours=float(hours))
            limit = int(arg("limit") or 100)
        except (ValueError, OverflowError):
            raise _HTTPError(400, "older_than_hours and limit must be numbers.") from None
        limit = max(1, min(limit, 1000))
        assignee = query.get("assignee", [None])[-1]
        filters = {
            "sync": arg("sync"),
            "category": arg("category"),
            "field": arg("field"),
            "key": arg("key"),
        }
        try:
            items = await self.queue.alist(
                status=status,
                older_than=older,
                assignee=None if assignee is None else assignee.strip(),
                limit=limit,
                **filters,
            )
        except QueueError as exc:
            raise _HTTPError(400, str(exc)) from None
        now = self.queue.clock.now()

        def field(name: str, label: str, value: str | None, kind: str = "text") -> str:
            return (
                f'<label>{_e(label)}<br><input type="{kind}" name="{name}"'
                f' value="{_e(value or "")}" size="12"></label>'
            )

        options = "".join(
            f'<option value="{_e(c)}"{" selected" if c == status_arg else ""}>{_e(c)}</option>'
            for c in _STATUS_CHOICES
        )
        form = (
            f'<form class="filters" method="get" action="{_e(root)}/">'
            f'<label>status<br><select name="status">{options}</select></label>'
            + "".join(field(n, n, v) for n, v in filters.items())
            + field("assignee", "assignee", assignee)
            + field("older_than_hours", "older than (hours)", arg("older_than_hours"), "number")
            + field("limit", "limit", str(limit), "number")
            + '<button type="submit">Filter</button></form>'
        )
        rows = []
        for i in items:
            if is_record_level(i):
                whole = "the whole record" if i.field == "*" else "the whole field"
                values = f"<td colspan=2>({whole})</td>"
            else:
                values = (
                    f"<td><code>{_e(_shown(i.left_value, 40))}</code></td>"
                    f"<td><code>{_e(_shown(i.right_value, 40))}</code></td>"
                )
            rows.append(
                f'<tr><td><a href="{_e(root)}/items/{i.id}">#{i.id}</a></td>'
                f"<td>{_e(i.status.value)}</td><td>{_e(i.category or '-')}</td>"
                f"<td>{_e(i.sync)}</td>"
                f"<td>{_e(i.left_key or '-')} / {_e(i.right_key or '-')}</td>"
                f"<td>{_e(i.field)}</td><td>{_e(_age(now - i.detected_at))}</td>"
                f"<td>{_e(i.assignee or '-')}</td>{values}</tr>"
            )
        table = (
            "<table><thead><tr><th>Item</th><th>Status</th><th>Category</th><th>Sync</th>"
            "<th>Record (left / right)</th><th>Field</th><th>Age</th><th>Assignee</th>"
            "<th>Left</th><th>Right</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
            if rows
            else "<p>No items match.</p>"
        )
        count = f"<p>{len(items)} item{'s' if len(items) != 1 else ''}, newest first.</p>"
        return self._page(root, "Operator queue", form + count + table)

    async def _item_page(self, root: str, item_id: int, query: Mapping[str, Sequence[str]]) -> str:
        try:
            view = await self.queue.ashow(item_id)
        except ItemNotFoundError as exc:
            raise _HTTPError(404, str(exc)) from None
        item = view.item
        done = (query.get("done") or [""])[-1]
        banner = ""
        if done in _DONE:
            css, message = _DONE[done]
            banner = f'<p class="{css}">{_e(message)}</p>'
        parts = [banner, self._details(root, view)]
        if item.status.is_active:
            parts.append(self._forms(root, view))
        if view.history:
            parts.append("<h2>History of this record</h2>" + self._history(root, view.history))
        return self._page(root, f"Item #{item.id}", "".join(parts))

    def _details(self, root: str, view: ItemView) -> str:
        item = view.item
        now = self.queue.clock.now()

        def key_link(key: str | None) -> str:
            if not key:
                return "-"
            href = f"{root}/?{urllib.parse.urlencode({'key': key, 'status': 'all'})}"
            return f'<a href="{_e(href)}">{_e(key)}</a>'

        rows = [
            ("Status", _e(item.status.value)),
            ("Category", _e(item.category or "-")),
            ("Sync", _e(item.sync)),
            ("Record", f"left {key_link(item.left_key)} / right {key_link(item.right_key)}"),
            ("Field", _e(item.field) + (" (the whole record)" if item.field == "*" else "")),
            ("Rule", _e(item.rule or "-")),
            (
                "Detected",
                f"{_e(_when(item.detected_at))} ({_e(_age(now - item.detected_at))} ago),"
                f" seen {item.times_seen} time{'s' if item.times_seen != 1 else ''}",
            ),
            ("Assignee", _e(item.assignee or "-")),
        ]
        if item.resolved_at is not None:
            rows.append(
                (
                    "Closed",
                    f"{_e(_when(item.resolved_at))}"
                    f" (after {_e(_age(item.resolved_at - item.detected_at))})",
                )
            )
            if item.status is Status.RESOLVED and not view.record_level:
                rows.append(("Resolution", f"<code>{_e(_shown(item.resolution))}</code>"))
        if item.note:
            rows.append(("Note", _e(item.note)))
        out = "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
        out += "</table>"
        if not view.record_level:
            base = _shown(view.base_value) if view.has_base else "(never synced)"
            out += (
                "<h2>Values</h2><table><tr><th>Left</th><th>Right</th><th>Base</th></tr>"
                f"<tr><td><code>{_e(_shown(view.left_value))}</code></td>"
                f"<td><code>{_e(_shown(view.right_value))}</code></td>"
                f"<td><code>{_e(base)}</code></td></tr></table>"
            )
        if view.explanation:
            out += f"<h2>Why</h2><pre>{_e(view.explanation)}</pre>"
        return out

    def _forms(self, root: str, view: ItemView) -> str:
        item = view.item
        action = f"{root}/items/{item.id}"
        by = (
            ""
            if self.operator is not None
            else '<label>Your name <input type="text" name="by" size="16"></label>'
        )
        note = '<label>Note <input type="text" name="note" size="40"></label>'
        if view.record_level:
            resolve = (
                f'<form method="post" action="{_e(action)}/resolve"><h2>Resolve</h2>'
                "<p>This item is about a whole record or field: resolving acknowledges it"
                " and writes nothing"
                + (
                    " (for schema drift: do it once the mapping is fixed; it lifts the quarantine)"
                    if item.category == "schema_drift"
                    else ""
                )
                + f".</p>{by}{note}"
                '<p><button type="submit">Acknowledge and close</button></p></form>'
            )
        else:
            resolve = (
                f'<form method="post" action="{_e(action)}/resolve"><h2>Resolve</h2>'
                f'<input type="hidden" name="seen_left" value="{_e(_text(item.left_value))}">'
                f'<input type="hidden" name="seen_right" value="{_e(_text(item.right_value))}">'
                '<p><label><input type="radio" name="take" value="left" required> Take the left'
                f" value <code>{_e(_shown(item.left_value, 60))}</code></label><br>"
                '<label><input type="radio" name="take" value="right"> Take the right value'
                f" <code>{_e(_shown(item.right_value, 60))}</code></label><br>"
                '<label><input type="radio" name="take" value="value"> Use this value'
                ' (JSON, left vocabulary): <input type="text" name="value" size="30"'
                ' placeholder="&quot;text&quot;, 42, null"></label></p>'
                f"<p>{by}{note}</p>"
                "<p>The records are read again first; a value changed since the item was"
                " opened is never overwritten.</p>"
                '<p><button type="submit">Resolve</button></p></form>'
            )
        dismiss = (
            f'<form method="post" action="{_e(action)}/dismiss"><h2>Dismiss</h2>'
            '<label>Reason <input type="text" name="reason" size="40" required></label>'
            f'{by}<button type="submit">Dismiss</button></form>'
        )
        assign = (
            f'<form method="post" action="{_e(action)}/assign"><h2>Assign</h2>'
            '<label>To <input type="text" name="to" size="16"'
            f' value="{_e(item.assignee or "")}"></label>'
            ' <button type="submit">Assign</button> (empty: unassign)</form>'
        )
        return resolve + dismiss + assign

    def _history(self, root: str, history: Sequence[Discrepancy]) -> str:
        rows = "".join(
            f'<tr><td><a href="{_e(root)}/items/{h.id}">#{h.id}</a></td>'
            f"<td>{_e(_when(h.detected_at))}</td><td>{_e(h.field)}</td>"
            f"<td>{_e(h.status.value)}</td><td>{_e(h.category or '-')}</td>"
            f"<td>{_e(h.note or '')}</td></tr>"
            for h in history
        )
        return (
            "<table><tr><th>Item</th><th>Detected</th><th>Field</th><th>Status</th>"
            f"<th>Category</th><th>Note</th></tr>{rows}</table>"
        )


def _same_as_seen(item: Discrepancy, form: Mapping[str, str]) -> bool:
    for name, value in (("seen_left", item.left_value), ("seen_right", item.right_value)):
        if name not in form:
            continue
        try:
            seen = _codec.loads(form[name])
        except ValueError:
            return False
        if not values_equal(seen, value):
            return False
    return True


def _query(scope: Scope) -> dict[str, list[str]]:
    text = bytes(scope.get("query_string") or b"").decode("latin-1")
    try:
        return urllib.parse.parse_qs(text, max_num_fields=50)
    except ValueError:
        raise _HTTPError(400, "Too many query parameters.") from None


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18


def _allow(ok: bool, methods: str) -> None:
    if not ok:
        raise _HTTPError(405, f"Method not allowed here (allowed: {methods}).", {"allow": methods})


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope.get("headers") or ():
        key = bytes(name).decode("latin-1").lower()
        text = bytes(value).decode("latin-1")
        out[key] = f"{out[key]},{text}" if key in out else text
    return out


async def _respond_plain(send: Send, status: int, text: str) -> None:
    data = text.encode("utf-8")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _respond(
    send: Send, status: int, body: str, extra: Mapping[str, str], *, head: bool
) -> None:
    data = body.encode("utf-8")
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
        (b"content-security-policy", _CSP.encode()),
    ]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else data})
