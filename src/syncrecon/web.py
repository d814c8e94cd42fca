"""The operator queue as web pages: a pure ASGI 3 application with plain HTML forms.

:class:`QueueApp` imports no web framework (install the ``web`` extra for a server:
``pip install "syncrecon[web]"``). Serve it on its own, or mount it next to your app::

    from fastapi import FastAPI
    from syncrecon.queue import OperatorQueue
    from syncrecon.web import QueueApp

    api = FastAPI()
    api.mount("/ops/queue", QueueApp(OperatorQueue(storage, [deals_sync])))

Pages (relative to the mount point):

- ``GET /`` lists the queue, a page at a time, with how many items match in all; the query
  string filters it (``search``: a partial match in keys, values and text; ``sync``,
  ``status``: ``active`` by default, a status or ``all``; ``category``, ``field``, ``key``,
  ``assignee``, ``unassigned=1``, ``older_than_hours``), sorts it (``order``: ``newest`` or
  ``oldest`` first) and pages it (``limit`` items from ``offset``). The form offers the syncs
  and categories the queue holds. A duplicate group's items are listed together;
- ``GET /items/{id}`` shows an item with its forms: resolve (take one system's value, the
  other's, or a JSON value; a record-level item is acknowledged; a schema-drift quarantine is
  lifted with a name and a confirmation), dismiss (with a reason) and assign; the triage's
  suggestion (chosen in the form, never sent by itself), the item's duplicate group, and a
  link to each record's page in its own system when its connector has ``record_url``. The
  list's filters ride along in its query string, so "back to the list" and "next item" keep
  them;
- ``POST /items/{id}/resolve``, ``/dismiss`` and ``/assign`` take
  ``application/x-www-form-urlencoded`` forms and answer ``303 See Other`` back to the item;
  a form that cannot be done is shown again on the item's page, with what was typed and why;
- ``POST /bulk`` acts on the items checked in the list, or on every item that matches its
  filters (2,000 at most): resolve by taking one side's value, acknowledge, dismiss or assign.
  It first answers a preview (what would be written to each item, or why an item would be
  skipped) with a form to confirm; only the confirmed form changes anything, and only the
  items the preview showed as possible;
- ``GET /dashboard`` renders :func:`syncrecon.dashboard.build_dashboard` at the queue's clock,
  with links back to the queue (404 when the app is made with ``dashboard=False`` or that
  module is not installed).

The pages name the two systems by their connectors' names (``crm``, ``erp``); an item whose
sync definition the app was not given says ``left`` and ``right``, and offers no resolve
buttons (only a sync definition can write): a sentence says why and what to do. Only the
choices that can work are offered (the queue's own preview decides): a one-way field's item
takes the value of the side it flows from, and a field quarantined by schema drift is
resolved once the quarantine is lifted.

No page needs JavaScript, and the pages forbid scripts, framing and foreign form targets
(``Content-Security-Policy``). Every value shown is HTML-escaped. The pages fit a phone's
screen: at 400 px the tables stack their rows instead of overflowing.

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

import contextlib
import html
import importlib
import importlib.util
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from datetime import timedelta
from typing import Any, Final

import anyio.to_thread
import attrs

from . import _codec
from ._drift import SCHEMA_DRIFT_CATEGORY
from ._exceptions import (
    ConfigurationError,
    ItemClosedError,
    ItemNotFoundError,
    LeaseHeldError,
    QueueError,
)
from ._models import Side
from ._policy import values_equal
from ._sync import Direction, FieldMap
from .queue import (
    DEFAULT_STATUSES,
    ItemView,
    OperatorQueue,
    Resolution,
    display_value,
    is_record_level,
    read_value,
)
from .queue._items import StatusFilter, group_key
from .queue._pages import ItemPage, QueueFilter
from .queue._resolve import PlannedResolution
from .queue._triage import UseValue
from .queue._views import explanation_text, input_text
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
_PAGE_SIZES: Final = (25, 50, 100, 200)
_DEFAULT_LIMIT: Final = 50
_MAX_LIMIT: Final = 1000
_BULK_CAP: Final = 2000
"""The most items one bulk action on the page acts on (narrow the filters for more)."""
_BULK_ACTIONS: Final = ("left", "right", "acknowledge", "dismiss", "assign")
_NEIGHBOURS_READ: Final = 1000
"""How many items of the list "next item" looks through (from the start of the list)."""
_DONE: Final = {
    "resolved": ("ok", "Resolved: the value is written where it was needed; the item is closed."),
    "acknowledged": ("ok", "Acknowledged: the item is closed; nothing was written."),
    "lifted": (
        "ok",
        "Quarantine lifted: the field syncs again from the next cycle. Nothing was written now.",
    ),
    "changed": (
        "warn",
        "Not resolved: a record changed since the item was opened, so nothing was written."
        " The item is back in review; its note says what changed.",
    ),
    "failed": (
        "warn",
        "Not resolved: a read or a write failed; the item stays open and nothing moved."
        " Its note has the error; try again later.",
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
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,sans-serif;margin:1rem auto;max-width:80rem;padding:0 1rem;
color:#1d1d1f}
a{color:#0b57d0}h1{font-size:1.6rem;margin:.6rem 0}h2{font-size:1.2rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
th{background:#f4f4f6}code,pre{font:13px ui-monospace,monospace}
pre{background:#f6f6f8;padding:.6rem;white-space:pre-wrap;overflow-wrap:anywhere}
form,section.box{border:1px solid #ddd;padding:.6rem .8rem;margin:.6rem 0;border-radius:6px}
form.filters{display:flex;flex-wrap:wrap;gap:.4rem .8rem;align-items:end}
form.filters label{margin:0}
input[type=text],input[type=number],input[type=search],select{font:inherit;max-width:100%}
label{display:inline-block;margin:.15rem .6rem .15rem 0;max-width:100%}
label.choice{display:block;margin:.3rem 0}
fieldset{border:0;padding:0;margin:.3rem 0}legend{font-weight:600;padding:0}
button{font:inherit;padding:.25rem .8rem}
.ok{background:#e6f4ea;padding:.5rem}.warn{background:#fef7e0;padding:.5rem}
.error{background:#fce8e6;padding:.5rem;border-left:4px solid #b3261e}
.info{background:#e8f0fe;padding:.5rem}
.muted{color:#555;font-size:13px}
.sys{color:#555;font-size:13px}
.pair{display:inline-grid;grid-template-columns:auto auto;gap:0 .6rem;vertical-align:top;
align-items:baseline}
form h2,section.box h2{margin-top:0}
.group{color:#555;font-size:13px}
nav.top a{margin-right:1rem}
nav.steps{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;margin:.4rem 0}
nav.pages{display:flex;flex-wrap:wrap;gap:.4rem 1.2rem;align-items:center;margin:.4rem 0}
.summary{margin:.4rem 0}
@media (max-width:640px){
body{font-size:14px;padding:0 .6rem;margin:.6rem auto}
h1{font-size:1.35rem}
table.stack,table.stack tbody,table.stack tr,table.stack td{display:block;width:100%}
table.stack thead{display:none}
table.stack tr{border:1px solid #ddd;border-radius:6px;margin:.5rem 0;padding:.2rem 0}
table.stack td{border:0;padding:.1rem .5rem}
table.stack td[data-label]::before{content:attr(data-label) ": ";color:#555;font-size:13px}
table.items td.id,table.items td.tag{display:inline-block;width:auto;padding:.15rem .4rem}
table.items td.id{font-weight:600}
table.items td.chip::before,table.items td.id::before{content:none}
table.items td.chip span{background:#f0f0f3;border-radius:4px;padding:0 .35rem}
table.keys th{width:34%}
form.filters label{flex:1 1 9rem}
form.filters input,form.filters select{width:100%}
form.filters input[type=checkbox]{width:auto}
}
"""


class _HTTPError(Exception):
    """An answer other than the page: ``status`` and a message to show."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class _BulkError(Exception):
    """A bulk form that could not be done: shown again on the list page, with ``message``."""


class _FormError(Exception):
    """A form that could not be done: shown again on its item's page, with ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_TITLES: Final = {
    400: "That cannot be done",
    403: "Refused",
    404: "Not found",
    405: "Not here",
    409: "Not done",
    413: "The form is too large",
    415: "The form cannot be read",
    500: "Something went wrong",
}


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


def _example(item: Discrepancy) -> str:
    """The custom-value box's placeholder: the item's value as it would be typed."""
    for value in (item.left_value, item.right_value):
        if value is not None:
            return input_text(value)[:40]
    return "a value"


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


def _when(value: Any) -> str:
    return "-" if value is None else str(value.strftime("%Y-%m-%d %H:%M:%S UTC"))


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


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


# -- what the list shows: its filters, carried from page to page ---------------------------------


@attrs.frozen(kw_only=True)
class _Filters:
    """The list's filters and page, read from a query string and written back into links.

    The item pages carry them too (in their own query string, and in each form's ``return``
    field), so "back to the list" and "next item" keep the operator's place.
    """

    status: str = "active"
    sync: str | None = None
    category: str | None = None
    field: str | None = None
    key: str | None = None
    assignee: str | None = None
    unassigned: bool = False
    older_than_hours: float | None = None
    search: str | None = None
    order: str = "newest"
    limit: int = _DEFAULT_LIMIT
    offset: int = 0

    @classmethod
    def read(cls, query: Mapping[str, Sequence[str]]) -> tuple[_Filters, list[str]]:
        """The filters in ``query``, and a sentence for each value that was left out."""
        problems: list[str] = []

        def arg(name: str) -> str | None:
            values = query.get(name)
            return (values[-1].strip() or None) if values else None

        status = arg("status") or "active"
        if status not in _STATUS_CHOICES:
            problems.append(f"There is no status {status!r}; showing the active items.")
            status = "active"
        order = arg("order") or "newest"
        if order not in ("newest", "oldest"):
            problems.append(f"Items are sorted newest or oldest first, not {order!r}.")
            order = "newest"
        hours: float | None = None
        text = arg("older_than_hours")
        if text is not None:
            try:
                hours = float(text)
                if not 0 <= hours < 1e6:
                    raise ValueError(text)
            except ValueError:
                problems.append(f"“Older than” takes a number of hours, not {text!r}.")
                hours = None
        limit, offset = _DEFAULT_LIMIT, 0
        for name in ("limit", "offset"):
            text = arg(name)
            if text is None:
                continue
            if not (text.isascii() and text.isdigit() and len(text) <= 9):
                problems.append(
                    f"{'Items a page' if name == 'limit' else 'The page'} takes a"
                    f" whole number, not {text!r}."
                )
                continue
            if name == "limit":
                limit = max(1, min(int(text), _MAX_LIMIT))
            else:
                offset = int(text)
        return (
            cls(
                status=status,
                sync=arg("sync"),
                category=arg("category"),
                field=arg("field"),
                key=arg("key"),
                assignee=arg("assignee"),
                unassigned=arg("unassigned") in ("1", "on", "yes", "true"),
                older_than_hours=hours,
                search=arg("search"),
                order=order,
                limit=limit,
                offset=offset,
            ),
            problems,
        )

    @classmethod
    def from_return(cls, text: str | None) -> _Filters:
        """The filters a form carried back (its ``return`` field); bad values are left out."""
        try:
            query = urllib.parse.parse_qs(text or "", max_num_fields=30)
        except ValueError:
            query = {}
        return cls.read(query)[0]

    @property
    def statuses(self) -> StatusFilter:
        if self.status == "active":
            return DEFAULT_STATUSES
        return None if self.status == "all" else self.status

    def where(self) -> dict[str, Any]:
        """The filters as :meth:`OperatorQueue.page` (and :class:`QueueFilter`) take them."""
        return {
            "status": self.statuses,
            "sync": self.sync,
            "category": self.category,
            "field": self.field,
            "key": self.key,
            "assignee": None if self.unassigned else self.assignee,
            "unassigned": self.unassigned,
            "search": self.search,
            "older_than": None
            if self.older_than_hours is None
            else timedelta(hours=self.older_than_hours),
        }

    def queue_filter(self) -> QueueFilter:
        return QueueFilter(**self.where())

    def params(self, **changes: Any) -> dict[str, str]:
        """The query parameters that differ from the defaults (after ``changes``)."""
        f = attrs.evolve(self, **changes) if changes else self
        out: dict[str, str] = {}
        if f.status != "active":
            out["status"] = f.status
        for name in ("sync", "category", "field", "key", "assignee"):
            value = getattr(f, name)
            if value:
                out[name] = value
        if f.unassigned:
            out["unassigned"] = "1"
        if f.older_than_hours is not None:
            out["older_than_hours"] = f"{f.older_than_hours:g}"
        if f.search:
            out["search"] = f.search
        if f.order != "newest":
            out["order"] = f.order
        if f.limit != _DEFAULT_LIMIT:
            out["limit"] = str(f.limit)
        if f.offset:
            out["offset"] = str(f.offset)
        return out

    def query(self, **changes: Any) -> str:
        """``?status=all&category=x`` (empty for the defaults)."""
        params = self.params(**changes)
        return "?" + urllib.parse.urlencode(params) if params else ""

    def narrowed(self) -> bool:
        """Whether anything but the page and the order differs from the defaults."""
        return bool(self.params(offset=0, limit=_DEFAULT_LIMIT, order="newest"))


# -- how an item's two sides are named, and what resolving it can do -----------------------------


@attrs.frozen
class _Names:
    """The two systems of a sync as the page names them: connector names, or left and right."""

    left: str
    right: str
    known: bool

    def __call__(self, side: Side) -> str:
        return self.left if side is Side.LEFT else self.right


_UNKNOWN_NAMES: Final = _Names("left", "right", known=False)


@attrs.frozen(kw_only=True)
class _Choices:
    """What the resolve form of a field item offers, and why it offers no more."""

    left: bool = False
    right: bool = False
    custom: bool = False
    why_not: str = ""

    @property
    def any(self) -> bool:
        return self.left or self.right or self.custom


class QueueApp:
    """The operator queue's web pages, as an ASGI 3 application.

    :param queue: the queue to show and work; resolving needs its sync definitions (without
        one, an item's page says so and offers no resolve buttons).
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
            body = self._error_page(root, path, exc.status, exc.message)
        except Exception:
            log.exception("queue page failed on %s %s", method, path)
            status, extra = 500, {}
            body = self._error_page(
                root, path, 500, "The page failed; the error is in the server's log."
            )
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
            status, page = await self._list_page(root, query)
            return status, page, {}
        if parts == ["dashboard"]:
            _allow(reading, "GET, HEAD")
            return 200, await self._dashboard(root), {}
        if parts == ["bulk"]:
            _allow(method == "POST", "POST")
            self._check_origin(headers)
            form = await self._form(headers, receive)
            try:
                return 200, await self._bulk(root, form, scope), {}
            except _BulkError as exc:
                filters = _Filters.from_return(form.get("return"))
                listed = urllib.parse.parse_qs(filters.query()[1:])
                _status, page = await self._list_page(root, listed, error=str(exc), bulk=form)
                return 400, page, {}
        if parts[0] == "items" and len(parts) in (2, 3) and _is_id(parts[1]):
            item_id = int(parts[1])
            if len(parts) == 2:
                _allow(reading, "GET, HEAD")
                filters = _Filters.read(query)[0]
                done = (query.get("done") or [""])[-1]
                return 200, await self._item_page(root, item_id, filters, done=done), {}
            if parts[2] in ("resolve", "dismiss", "assign"):
                _allow(method == "POST", "POST")
                self._check_origin(headers)
                form = await self._form(headers, receive)
                filters = _Filters.from_return(form.get("return"))
                try:
                    done = await self._act(parts[2], item_id, form, scope)
                except _FormError as exc:
                    page = await self._item_page(
                        root, item_id, filters, error=exc.message, form=form, action=parts[2]
                    )
                    return exc.status, page, {}
                back = urllib.parse.urlencode({"done": done, **filters.params()})
                location = f"{urllib.parse.quote(root)}/items/{item_id}?{back}"
                return 303, "", {"location": location}
        raise _HTTPError(404, "There is no such page here.")

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
                body.decode("utf-8"), keep_blank_values=True, max_num_fields=_MAX_LIMIT + 50
            )
        except (UnicodeDecodeError, ValueError):
            raise _HTTPError(400, "The form cannot be read.") from None
        # The checked items of a bulk form are many ``id`` fields: kept together, by commas.
        return {
            name: ",".join(values) if name == "id" else values[-1]
            for name, values in fields.items()
        }

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
                item = await anyio.to_thread.run_sync(lambda: q.storage.get_item(item_id))
                if _is_drift(item) and item.status.is_active:
                    raise _FormError(
                        400,
                        "A schema-drift item is closed by lifting its quarantine (with your name"
                        " and a confirmation), not by dismissing it.",
                    )
                if not form.get("reason", "").strip():
                    raise _FormError(400, "Say why the item is dismissed: the reason is kept.")
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
            raise _FormError(409, _sentence(str(exc))) from None
        except (QueueError, ConfigurationError) as exc:
            raise _FormError(400, _sentence(str(exc))) from None

    async def _resolve(self, item_id: int, form: Mapping[str, str], by: str | None) -> str:
        q = self.queue
        note = form.get("note", "").strip() or None
        item = await anyio.to_thread.run_sync(lambda: q.storage.get_item(item_id))
        if not item.status.is_active:
            raise _FormError(
                409, f"Item #{item_id} is {item.status.value} already: nothing was done."
            )
        if is_record_level(item):
            if _is_drift(item):
                if not by:
                    raise _FormError(400, "Type your name: lifting a quarantine records who did.")
                if form.get("confirm") != "yes":
                    raise _FormError(
                        400,
                        "Tick the box to confirm the mapping is fixed: lifting the quarantine"
                        " lets the next cycle write the field again.",
                    )
            result: Resolution = await q.aresolve(
                item_id, by=by, note=note, confirm=form.get("confirm") == "yes"
            )
            return "lifted" if _is_drift(item) and result.closed else result.outcome.value
        names = self._names(item.sync)
        if item.sync not in q.syncs:
            raise _FormError(400, _no_sync_sentence(item.sync))
        take = form.get("take", "")
        kwargs: dict[str, Any] = {}
        if take in ("left", "right"):
            kwargs["take"] = take
        elif take == "value":
            like = item.left_value if item.left_value is not None else item.right_value
            try:
                kwargs["value"] = read_value(form.get("value", ""), like=like)
            except ValueError as exc:
                raise _FormError(400, f"The other value cannot be read: {exc}.") from None
        elif take:
            raise _FormError(400, "Choose one of the values offered.")
        else:
            raise _FormError(
                400, f"Choose which value is right: {names.left}'s, {names.right}'s or another."
            )
        if ("seen_left" in form or "seen_right" in form) and not _same_as_seen(item, form):
            return "stale"
        result = await q.aresolve(item_id, by=by, note=note, **kwargs)
        return result.outcome.value

    # -- what the pages know about a sync ------------------------------------------------------

    def _names(self, sync_name: str, systems: Mapping[Side, str] | None = None) -> _Names:
        if sync_name not in self.queue.syncs:
            return _UNKNOWN_NAMES
        found = systems if systems is not None else self.queue.systems(sync_name)
        left, right = found.get(Side.LEFT, "left"), found.get(Side.RIGHT, "right")
        if left == right:  # two connectors of one name: tell them apart
            left, right = f"{left} (left)", f"{right} (right)"
        return _Names(left, right, known=True)

    def _field_map(self, item: Discrepancy) -> FieldMap | None:
        sync = self.queue.syncs.get(item.sync)
        if sync is None:
            return None
        try:
            return sync.field(item.field)
        except KeyError:
            return None

    async def _choices(self, item: Discrepancy, names: _Names) -> tuple[_Choices, int | None]:
        """The resolve choices that can work for a field item, and the quarantine's item id."""
        if item.sync not in self.queue.syncs:
            return _Choices(why_not=_no_sync_sentence(item.sync)), None
        fm = self._field_map(item)
        if fm is None:
            return _Choices(
                why_not=f"The sync “{item.sync}” no longer maps the field “{item.field}”, so this"
                " page cannot write it. Dismiss the item, with the reason."
            ), None
        if not item.left_key or not item.right_key:
            return _Choices(
                why_not="This item names no pair of linked records, so there is nothing to write"
                " a value to. Dismiss it once you have looked at it."
            ), None

        def quarantine() -> list[Discrepancy]:
            return [
                d
                for d in self.queue.storage.list_items(
                    sync=item.sync,
                    statuses=DEFAULT_STATUSES,
                    category=SCHEMA_DRIFT_CATEGORY,
                    field=item.field,
                )
                if is_record_level(d)
            ]

        drift = await anyio.to_thread.run_sync(quarantine)
        if drift:
            return _Choices(
                why_not=f"Writes to the field “{item.field}” are paused: its definition changed"
                f" in {names.left} or {names.right} (schema drift). Once the mapping is fixed,"
                " lift the quarantine on its own item, then resolve this one."
            ), drift[0].id
        # What the queue itself would do with each choice: only those that can work are offered.
        assert item.id is not None
        (left,) = await self.queue.apreview([item.id], take="left")
        (right,) = await self.queue.apreview([item.id], take="right")
        choices = _Choices(
            left=left.ok, right=right.ok, custom=fm.direction is Direction.BOTH and left.ok
        )
        if fm.direction is Direction.LEFT_TO_RIGHT:
            why = (
                f"“{item.field}” flows from {names.left} to {names.right} only, so only"
                f" {names.left}'s value can be taken here. To keep {names.right}'s value, change"
                f" it in {names.left} first, or dismiss the item."
            )
        elif fm.direction is Direction.RIGHT_TO_LEFT:
            why = (
                f"“{item.field}” flows from {names.right} to {names.left} only, so only"
                f" {names.right}'s value can be taken here. To keep {names.left}'s value, change"
                f" it in {names.right} first, or dismiss the item."
            )
        else:
            refused = [(n, plan) for n, plan in ((names.left, left), (names.right, right))]
            why = " ".join(
                f"{n}'s value cannot be taken: {_sentence(plan.reason or '')}"
                for n, plan in refused
                if not plan.ok
            )
        if not choices.any and not why:
            why = "None of the values can be written here; dismiss the item with the reason."
        return attrs.evolve(choices, why_not=why), None

    async def _neighbours(
        self, filters: _Filters, item: Discrepancy
    ) -> tuple[Discrepancy | None, Discrepancy | None]:
        """The items before and after ``item`` in the filtered list, in its order.

        An item that left the list (resolved just now) still has its place: the next item is
        the first one after where it stood.
        """
        try:
            items = await self.queue.alist(
                **filters.where(),
                order="oldest" if filters.order == "oldest" else "newest",
                limit=_NEIGHBOURS_READ,
            )
        except QueueError:
            return None, None
        here = (item.detected_at, item.id or 0)
        if filters.order == "oldest":
            before = [i for i in items if (i.detected_at, i.id or 0) < here]
            after = [i for i in items if (i.detected_at, i.id or 0) > here]
        else:
            before = [i for i in items if (i.detected_at, i.id or 0) > here]
            after = [i for i in items if (i.detected_at, i.id or 0) < here]
        return (before[-1] if before else None), (after[0] if after else None)

    async def _fetch(self, filters: _Filters) -> ItemPage:
        return await self.queue.apage(
            **filters.where(),
            order="oldest" if filters.order == "oldest" else "newest",
            limit=filters.limit,
            offset=filters.offset,
        )

    # -- pages ---------------------------------------------------------------------------------

    def _dashboard_available(self) -> bool:
        if not self.dashboard:
            return False
        try:
            return importlib.util.find_spec("syncrecon.dashboard") is not None
        except (ImportError, ValueError):
            return False

    async def _dashboard(self, root: str) -> str:
        if not self.dashboard:
            raise _HTTPError(404, "The dashboard is not served here.")
        try:
            module: Any = importlib.import_module("syncrecon.dashboard")
        except ModuleNotFoundError as exc:
            if exc.name == "syncrecon.dashboard":
                raise _HTTPError(404, "The dashboard is not installed.") from None
            raise
        storage, clock = self.queue.storage, self.queue.clock

        def render() -> str:
            board = module.build_dashboard(storage, now=clock.now())  # the queue's own time
            kind = getattr(module, "Dashboard", None)
            if isinstance(kind, type) and isinstance(board, kind):
                pages: Any = importlib.import_module("syncrecon.dashboard._html")
                return str(pages.render_page(board, queue_url=root))  # links to the queue
            return str(board.to_html())

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
            f'<body><nav class="top">{nav}</nav><main><h1>{_e(title)}</h1>{content}</main>'
            "</body></html>\n"
        )

    def _error_page(self, root: str, path: str, status: int, message: str) -> str:
        links = [f'<a href="{_e(root)}/">Back to the queue</a>']
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "items" and _is_id(parts[1]):
            links.insert(0, f'<a href="{_e(root)}/items/{int(parts[1])}">Back to the item</a>')
        if status == 403:
            message += (
                " Open the page from this site and send the form again (a page saved, or opened"
                " from another address, cannot change anything)."
            )
        return self._page(
            root,
            _TITLES.get(status, "That cannot be done"),
            f'<p class="error" role="alert">{_e(message)}</p>'
            f'<nav class="steps">{"".join(links)}</nav>',
        )

    async def _list_page(
        self,
        root: str,
        query: Mapping[str, Sequence[str]],
        *,
        error: str | None = None,
        bulk: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        filters, problems = _Filters.read(query)
        if error is not None:
            problems.append(error)
        try:
            page = await self._fetch(filters)
        except QueueError as exc:
            problems.append(_sentence(str(exc)))
            page = ItemPage(items=(), total=0, offset=filters.offset, limit=filters.limit)
        facets = await self.queue.afacets()
        now = self.queue.clock.now()
        content = [
            *(f'<p class="error" role="alert">{_e(p)}</p>' for p in problems),
            self._filter_form(root, filters, facets),
            self._summary(filters, page),
        ]
        if page.items:
            checked = set(_ids((bulk or {}).get("id", ""), strict=False))
            content.append(self._items_table(root, filters, page.items, now, checked))
            content.append(self._pager(root, filters, page))
            content.append(self._bulk_form(root, filters, page, facets.syncs, bulk or {}))
        else:
            content.append(
                "<p>No items match.</p>"
                + (
                    f'<p><a href="{_e(root)}/">Show all active items</a></p>'
                    if filters.narrowed()
                    else ""
                )
            )
        return (400 if problems else 200), self._page(root, "Operator queue", "".join(content))

    def _filter_form(self, root: str, f: _Filters, facets: Any) -> str:
        def text(name: str, label: str, value: str | None, options: Sequence[str] = ()) -> str:
            listed = f' list="known-{name}"' if options else ""
            field = (
                f'<label>{_e(label)}<br><input type="text" name="{name}"'
                f' value="{_e(value or "")}" size="12"{listed}></label>'
            )
            if options:
                field += (
                    f'<datalist id="known-{name}">'
                    + "".join(f'<option value="{_e(o)}"></option>' for o in options)
                    + "</datalist>"
                )
            return field

        def select(name: str, label: str, value: str | None, options: Sequence[str]) -> str:
            known = list(dict.fromkeys([*options, *([value] if value else [])]))
            choices = '<option value="">any</option>' + "".join(
                f'<option value="{_e(o)}"{" selected" if o == value else ""}>{_e(o)}</option>'
                for o in known
            )
            return f'<label>{_e(label)}<br><select name="{name}">{choices}</select></label>'

        statuses = "".join(
            f'<option value="{_e(c)}"{" selected" if c == f.status else ""}>{_e(c)}</option>'
            for c in _STATUS_CHOICES
        )
        orders = "".join(
            f'<option value="{o}"{" selected" if o == f.order else ""}>{o} first</option>'
            for o in ("newest", "oldest")
        )
        sizes = sorted({*_PAGE_SIZES, f.limit})
        per_page = "".join(
            f'<option value="{n}"{" selected" if n == f.limit else ""}>{n}</option>' for n in sizes
        )
        hours = "" if f.older_than_hours is None else f"{f.older_than_hours:g}"
        syncs = sorted({*facets.syncs, *self.queue.syncs})
        return (
            f'<form class="filters" method="get" action="{_e(root)}/">'
            '<label class="wide">Search<br><input type="search" name="search"'
            f' value="{_e(f.search or "")}" size="24" placeholder="key, value, text…"></label>'
            f'<label>Status<br><select name="status">{statuses}</select></label>'
            + select("sync", "Sync", f.sync, syncs)
            + select("category", "Category", f.category, facets.categories)
            + text("field", "Field", f.field, facets.fields)
            + text("key", "Record key", f.key)
            + text("assignee", "Assigned to", f.assignee, facets.assignees)
            + '<label><input type="checkbox" name="unassigned" value="1"'
            + (" checked" if f.unassigned else "")
            + "> Unassigned only</label>"
            + '<label>Older than (hours)<br><input type="number" name="older_than_hours"'
            f' min="0" step="any" value="{_e(hours)}" size="6"></label>'
            f'<label>Sort<br><select name="order">{orders}</select></label>'
            f'<label>Per page<br><select name="limit">{per_page}</select></label>'
            '<button type="submit">Filter</button></form>'
        )

    def _summary(self, f: _Filters, page: ItemPage) -> str:
        if not page.items:
            return ""
        what = "active item" if f.status == "active" else "item"
        order = "oldest" if f.order == "oldest" else "newest"
        if page.has_next or page.has_previous:
            last = page.offset + len(page.items)
            text = f"{page.offset + 1} to {last} of {_plural(page.total, what)}"
        else:
            text = _plural(page.total, what)
        return (
            f'<p class="summary">{_e(text[0].upper() + text[1:])}, {order} first.'
            ' <a href="#bulk">Act on several items</a></p>'
        )

    def _pager(self, root: str, f: _Filters, page: ItemPage) -> str:
        if not (page.has_next or page.has_previous):
            return ""
        links = []
        if page.previous_offset is not None:
            back = f.query(offset=page.previous_offset)
            links.append(f'<a href="{_e(root)}/{_e(back)}" rel="prev">&larr; Previous page</a>')
        pages = -(-page.total // page.limit)
        links.append(f"<span>Page {page.offset // page.limit + 1} of {pages}</span>")
        if page.next_offset is not None:
            ahead = f.query(offset=page.next_offset)
            links.append(f'<a href="{_e(root)}/{_e(ahead)}" rel="next">Next page &rarr;</a>')
        return f'<nav class="pages">{"".join(links)}</nav>'

    def _items_table(
        self,
        root: str,
        f: _Filters,
        items: Sequence[Discrepancy],
        now: Any,
        checked: set[int] | frozenset[int] = frozenset(),
    ) -> str:
        rows = []
        here = f.query()
        groups = _grouped(items)
        for i in groups:
            names = self._names(i.sync)
            group = group_key(i)
            category = _e(i.category or "-")
            if group is not None:
                size = sum(1 for g in groups if group_key(g) == group)
                natural = group[len(i.sync) + 1 :]
                category += (
                    '</span> <span class="group" title="A duplicate group: records that share'
                    f' one natural key">group {_e(natural)} ({size} here)'
                )
            if is_record_level(i):
                whole = "the whole record" if i.field == "*" else "the whole field"
                values = f"({whole})"
            else:
                values = _pair(
                    names,
                    f"<code>{_e(_shown(i.left_value, 40))}</code>",
                    f"<code>{_e(_shown(i.right_value, 40))}</code>",
                )
            record = "-"
            if i.left_key or i.right_key:
                record = _pair(names, _e(i.left_key or "-"), _e(i.right_key or "-"))
            rows.append(
                f'<tr><td class="id" data-label="Item"><label class="pick">'
                f'<input type="checkbox" name="id" value="{i.id}" form="bulk"'
                f'{" checked" if i.id in checked else ""} aria-label="Choose item #{i.id}">'
                f'</label> <a href="{_e(root)}/items/{i.id}{_e(here)}">#{i.id}</a></td>'
                f'<td class="tag chip" data-label="Status"><span>{_e(i.status.value)}</span></td>'
                f'<td class="tag chip" data-label="Category"><span>{category}</span>'
                f'</td><td class="tag chip" data-label="Sync"><span>{_e(i.sync)}</span></td>'
                f'<td data-label="Record">{record}</td>'
                f'<td data-label="Field">{_e(i.field)}</td>'
                f'<td data-label="Values">{values}</td>'
                f'<td class="tag" data-label="Age">{_e(_age(now - i.detected_at))}</td>'
                f'<td class="tag" data-label="Assigned to">{_e(i.assignee or "-")}</td></tr>'
            )
        return (
            '<table class="stack items"><thead><tr><th>Item</th><th>Status</th><th>Category</th>'
            "<th>Sync</th><th>Record</th><th>Field</th><th>Values</th><th>Age</th>"
            "<th>Assigned to</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        )

    def _bulk_form(
        self,
        root: str,
        f: _Filters,
        page: ItemPage,
        syncs: Sequence[str],
        kept: Mapping[str, str],
    ) -> str:
        one = f.sync or (syncs[0] if len(syncs) == 1 else None)
        names = self._names(one) if one else _UNKNOWN_NAMES
        left = f"{names.left}'s value" if names.known else "the left system's value"
        right = f"{names.right}'s value" if names.known else "the right system's value"
        actions = [
            ("", "Choose what to do…"),
            ("left", f"Resolve: take {left}"),
            ("right", f"Resolve: take {right}"),
            ("acknowledge", "Acknowledge whole-record items (nothing is written)"),
            ("dismiss", "Dismiss (with a reason)"),
            ("assign", "Assign (to the name below; empty unassigns)"),
        ]
        chosen = kept.get("action", "")
        options = "".join(
            f'<option value="{v}"{" selected" if v == chosen else ""}>{_e(t)}</option>'
            for v, t in actions
        )
        every = kept.get("scope") == "all"
        by = (
            ""
            if self.operator is not None
            else '<label>Your name <input type="text" name="by" size="14"'
            f' value="{_e(kept.get("by", ""))}"></label>'
        )
        return (
            f'<form method="post" action="{_e(root)}/bulk" id="bulk" class="bulk">'
            f'<input type="hidden" name="return" value="{_e(f.query()[1:])}">'
            "<h2>Act on several items</h2><fieldset><legend>Which items</legend>"
            '<label class="choice"><input type="radio" name="scope" value="checked"'
            f"{'' if every else ' checked'}> The items checked in the list</label>"
            '<label class="choice"><input type="radio" name="scope" value="all"'
            f"{' checked' if every else ''}> All {_plural(page.total, 'item')} that match"
            " the filters</label></fieldset>"
            f'<p><label>Action <select name="action" required>{options}</select></label></p>'
            '<p><label>Reason <input type="text" name="reason" size="28"'
            f' value="{_e(kept.get("reason", ""))}" placeholder="to dismiss"></label>'
            '<label>Assign to <input type="text" name="to" size="14"'
            f' value="{_e(kept.get("to", ""))}"></label></p>'
            f'<p>{by}<label>Note <input type="text" name="note" size="28"'
            f' value="{_e(kept.get("note", ""))}"></label></p>'
            '<p><button type="submit">Preview</button> <span class="muted">Nothing changes'
            " before you confirm on the next page.</span></p></form>"
        )

    async def _bulk(self, root: str, form: Mapping[str, str], scope: Scope) -> str:
        """A bulk form: its preview (what would be done to each item), or, confirmed, done."""
        q = self.queue
        filters = _Filters.from_return(form.get("return"))
        action = form.get("action", "")
        if action not in _BULK_ACTIONS:
            raise _BulkError("Choose what to do with the items.")
        reason = form.get("reason", "").strip()
        if action == "dismiss" and not reason:
            raise _BulkError("Say why the items are dismissed: the reason is kept on each.")
        try:
            ids = _ids(form.get("id", ""))
        except ValueError:
            raise _BulkError("The items sent cannot be read; choose them again.") from None
        by = self._by(form, scope)
        note = form.get("note", "").strip() or None
        to = form.get("to", "").strip()
        if form.get("step") == "confirm":
            if not ids:
                raise _BulkError("Nothing was confirmed: no item can be done as asked.")
            try:
                if action in ("left", "right"):
                    take: Any = action
                    done = await q.aresolve_many(ids, take=take, by=by, note=note)
                elif action == "acknowledge":
                    done = await q.aacknowledge_many(ids, by=by, note=note)
                elif action == "dismiss":
                    done = await q.adismiss_many(ids, reason=reason, by=by)
                else:
                    done = await q.aassign_many(ids, who=to)
            except (QueueError, ItemNotFoundError) as exc:
                raise _BulkError(_sentence(str(exc))) from None

            def acted_on() -> list[Discrepancy]:
                found = []
                for r in done:
                    with contextlib.suppress(KeyError):  # removed meanwhile (retention)
                        found.append(q.storage.get_item(r.item_id))
                return found

            names = self._common_names(await anyio.to_thread.run_sync(acted_on))
            return self._bulk_done_page(root, filters, action, done, names)
        if form.get("scope") == "all":
            total = await q.acount(**filters.where())
            if total > _BULK_CAP:
                raise _BulkError(
                    f"That is {total} items, more than {_BULK_CAP} at once: narrow the filters."
                )
            items = await q.alist(
                **filters.where(),
                order="oldest" if filters.order == "oldest" else "newest",
                limit=max(total, 1),
            )
        else:
            if not ids:
                raise _BulkError(
                    "Check the items to act on in the list, or choose all the items that match"
                    " the filters."
                )

            def read() -> list[Discrepancy]:
                return [q.storage.get_item(i) for i in ids]

            try:
                items = await anyio.to_thread.run_sync(read)
            except KeyError as exc:
                raise _BulkError(f"No queue item has the id {exc.args[0]}.") from None
        if not items:
            raise _BulkError("No items match the filters: nothing to do.")
        rows = await self._plan(action, items, reason=reason, to=to)
        return self._bulk_preview_page(root, filters, action, rows, form, by)

    async def _plan(
        self, action: str, items: Sequence[Discrepancy], *, reason: str, to: str
    ) -> list[tuple[Discrepancy, bool, str]]:
        """What the bulk ``action`` would do to each item: (item, can be done, in words)."""
        ids = [i.id or 0 for i in items]
        out: list[tuple[Discrepancy, bool, str]] = []
        if action in ("left", "right", "acknowledge"):
            take: Any = None if action == "acknowledge" else action
            plans = await self.queue.apreview(ids, take=take)
            for item, plan in zip(items, plans, strict=True):
                out.append((item, plan.ok, self._planned(item, plan)))
            return out
        for item in items:
            if not item.status.is_active:
                out.append((item, False, f"Skipped: it is {item.status.value} already."))
            elif action == "dismiss" and _is_drift(item):
                out.append((item, False, "Skipped: a quarantine is lifted on its own item's page."))
            elif action == "dismiss":
                out.append((item, True, f"Closed without a change; reason: {reason}."))
            else:
                out.append((item, True, f"Assigned to {to}." if to else "Unassigned."))
        return out

    def _common_names(self, items: Iterable[Discrepancy]) -> _Names:
        """The systems' names when every item is of one sync; ``left`` and ``right`` if not."""
        syncs = {i.sync for i in items}
        return self._names(syncs.pop()) if len(syncs) == 1 else _UNKNOWN_NAMES

    def _planned(self, item: Discrepancy, plan: PlannedResolution) -> str:
        """A planned resolution in an operator's words, with the systems' names."""
        names = self._names(item.sync)
        if not plan.ok:
            if _is_drift(item):
                return "Skipped: a quarantine is lifted on its own item's page."
            if not is_record_level(item) and plan.reason and "take=" in plan.reason:
                return "Skipped: it is about one value; resolve it by taking a value."
            if item.sync not in self.queue.syncs:
                return f"Skipped: this page has no definition of the sync “{item.sync}”."
            return f"Skipped: {_sentence(plan.reason or 'it cannot be done this way')}"
        if plan.acknowledge:
            return "Closed; nothing is written."
        if not plan.writes:
            return f"Both systems hold {_shown(plan.value, 60)} already: closed, nothing written."
        fm = self._field_map(item)
        written = []
        for side, raw in plan.writes.items():
            name = item.field if fm is None else (fm.left if side is Side.LEFT else fm.right)
            written.append(f"{_shown(raw, 60)} to {name} in {names(side)}")
        return "Writes " + "; ".join(written) + "."

    def _bulk_preview_page(
        self,
        root: str,
        filters: _Filters,
        action: str,
        rows: Sequence[tuple[Discrepancy, bool, str]],
        form: Mapping[str, str],
        by: str | None,
    ) -> str:
        doable = [item.id or 0 for item, ok, _text in rows if ok]
        verb = _BULK_VERBS[action]
        back = f"{root}/{filters.query()}"
        table = self._bulk_table(
            root, [(i, "yes" if ok else "no", t) for i, ok, t in rows], done="Can be done"
        )
        parts = [
            f'<p class="info">Nothing has changed yet. {_e(_plural(len(doable), "item"))} of'
            f" {len(rows)} can be {_e(verb)}; confirm below to do it.</p>",
            table,
        ]
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{_e(form.get(name, ""))}">'
            for name in ("action", "reason", "to", "note", "return")
        )
        if by and self.operator is None:
            hidden += f'<input type="hidden" name="by" value="{_e(by)}">'
        if doable:
            parts.append(
                f'<form method="post" action="{_e(root)}/bulk" id="confirm">{hidden}'
                '<input type="hidden" name="step" value="confirm">'
                f'<input type="hidden" name="id" value="{",".join(map(str, doable))}">'
                f'<button type="submit">Confirm: {_BULK_DO[action]}'
                f" {_e(_plural(len(doable), 'item'))}"
                f'</button> <a href="{_e(back)}">Cancel, back to the list</a></form>'
            )
        else:
            parts.append(
                f"<p>None of these items can be {_e(verb)}."
                f' <a href="{_e(back)}">Back to the list</a></p>'
            )
        title = f"Preview: {_bulk_title(action, self._common_names(r[0] for r in rows))}"
        return self._page(root, title, "".join(parts))

    def _bulk_done_page(
        self,
        root: str,
        filters: _Filters,
        action: str,
        done: Sequence[Resolution],
        names: _Names,
    ) -> str:
        counts: dict[str, int] = {}
        for r in done:
            counts[r.outcome.value] = counts.get(r.outcome.value, 0) + 1
        summary = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
        ok = all(r.ok for r in done)
        rows = [(r.item_id, r.outcome.value, _sentence(r.message)) for r in done]
        back = f"{root}/{filters.query()}"
        return self._page(
            root,
            f"Done: {_bulk_title(action, names)}",
            f'<p class="{"ok" if ok else "warn"}" role="status">{_e(_sentence(summary))}</p>'
            + self._bulk_table(root, rows)
            + f'<nav class="steps"><a href="{_e(back)}">&larr; Back to the list</a></nav>',
        )

    def _bulk_table(
        self,
        root: str,
        rows: Sequence[tuple[Discrepancy | int, str, str]],
        *,
        done: str = "Outcome",
    ) -> str:
        body = []
        for item, outcome, text in rows:
            if isinstance(item, Discrepancy):
                names = self._names(item.sync)
                what = _e(item.field)
                if item.left_key or item.right_key:
                    what += " of " + _pair(
                        names, _e(item.left_key or "-"), _e(item.right_key or "-")
                    )
                item_id = item.id
            else:
                what, item_id = "", item
            body.append(
                f'<tr><td data-label="Item"><a href="{_e(root)}/items/{item_id}">#{item_id}</a>'
                f'</td><td data-label="What">{what}</td>'
                f'<td data-label="{_e(done)}">{_e(outcome)}</td>'
                f'<td data-label="How">{_e(text)}</td></tr>'
            )
        return (
            '<table class="stack"><thead><tr><th>Item</th><th>What</th>'
            f"<th>{_e(done)}</th><th>How</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
        )

    async def _item_page(
        self,
        root: str,
        item_id: int,
        filters: _Filters,
        *,
        done: str = "",
        error: str | None = None,
        form: Mapping[str, str] | None = None,
        action: str | None = None,
    ) -> str:
        try:
            view = await self.queue.ashow(item_id)
        except ItemNotFoundError as exc:
            raise _HTTPError(404, _sentence(str(exc))) from None
        item = view.item
        names = self._names(item.sync, view.systems)
        newer, older = await self._neighbours(filters, item)
        parts = [self._steps(root, filters, newer, older)]
        if done in _DONE:
            css, message = _DONE[done]
            parts.append(f'<p class="{css}" role="status">{_e(message)}</p>')
        if error is not None:
            parts.append(f'<p class="error" role="alert">Not done: {_e(error)}</p>')
        parts.append(self._details(root, view, names))
        if item.status.is_active and view.suggestion is not None:
            parts.append(self._suggestion(view, names))
        if view.group is not None and item.status.is_active:
            parts.append(self._group(root, view, names, filters))
        if item.status.is_active:
            parts.append(await self._forms(root, view, names, filters, form or {}, action))
        if view.history:
            parts.append("<h2>History of this record</h2>" + self._history(root, view.history))
        return self._page(root, f"Item #{item.id}", "".join(parts))

    def _steps(
        self,
        root: str,
        filters: _Filters,
        newer: Discrepancy | None,
        older: Discrepancy | None,
    ) -> str:
        """Back to the list, and the previous and next items, all keeping the filters."""
        here = filters.query()
        links = [f'<a href="{_e(root)}/{_e(here)}">&larr; Back to the list</a>']
        if newer is not None:
            links.append(
                f'<a href="{_e(root)}/items/{newer.id}{_e(here)}" rel="prev">'
                f"Previous item (#{newer.id})</a>"
            )
        if older is not None:
            links.append(
                f'<a href="{_e(root)}/items/{older.id}{_e(here)}" rel="next">'
                f"Next item (#{older.id}) &rarr;</a>"
            )
        else:
            links.append('<span class="muted">No next item in this list.</span>')
        return f'<nav class="steps">{"".join(links)}</nav>'

    def _suggestion(self, view: ItemView, names: _Names) -> str:
        """What the triage proposes, in words; it is never applied without the operator."""
        hint = view.suggestion
        assert hint is not None
        item = view.item
        what = "nothing to do by itself; look at the reasons"
        if hint.resolution == "left":
            what = f"take {names.left}'s value {_shown(item.left_value, 60)}"
        elif hint.resolution == "right":
            what = f"take {names.right}'s value {_shown(item.right_value, 60)}"
        elif hint.resolution == "acknowledge":
            what = "acknowledge: close it without writing anything"
        elif isinstance(hint.resolution, UseValue):
            what = f"use the value {_shown(hint.resolution.value, 60)}"
        reasons = "".join(f"<li>{_e(_sentence(r))}</li>" for r in hint.reasons)
        kind = f" ({_e(hint.category)})" if hint.category else ""
        chosen = ""
        if hint.resolution in ("left", "right") or isinstance(hint.resolution, UseValue):
            chosen = " It is chosen in the form below: check it, then send the form."
        elif hint.resolution == "acknowledge":
            chosen = " If you agree, acknowledge it below."
        return (
            '<section class="box suggestion" id="suggestion"><h2>Suggestion</h2>'
            f"<p><strong>{_e(what[0].upper() + what[1:])}</strong>{kind}. Suggested by"
            f" {_e(hint.source)}; nothing is done until you decide.{_e(chosen)}</p>"
            + (f"<ul>{reasons}</ul>" if reasons else "")
            + "</section>"
        )

    def _group(self, root: str, view: ItemView, names: _Names, filters: _Filters) -> str:
        """A duplicate group: every item of it on one page, acknowledged or dismissed together."""
        item = view.item
        assert view.group is not None
        natural = view.group[len(item.sync) + 1 :]
        members = [item, *view.group_items]
        rows = "".join(
            '<tr><td data-label="Item">'
            + (
                f"#{m.id} (this one)"
                if m.id == item.id
                else f'<a href="{_e(root)}/items/{m.id}{_e(filters.query())}">#{m.id}</a>'
            )
            + f'</td><td data-label="Record">'
            f"{_pair(names, _e(m.left_key or '-'), _e(m.right_key or '-'))}</td>"
            f'<td data-label="Status">{_e(m.status.value)}</td></tr>'
            for m in members
        )
        ids = ",".join(str(m.id) for m in members)
        by = (
            ""
            if self.operator is not None
            else '<label>Your name <input type="text" name="by" size="14"></label>'
        )
        return (
            '<section class="box" id="group"><h2>Duplicate group</h2>'
            f"<p>{_plural(len(members), 'record')} share the natural key"
            f" <code>{_e(natural)}</code>: they may be one real record entered twice. Merge them"
            " in the systems if so, then acknowledge the group; or dismiss it.</p>"
            '<table class="stack"><thead><tr><th>Item</th><th>Record</th><th>Status</th></tr>'
            f"</thead><tbody>{rows}</tbody></table>"
            f'<form method="post" action="{_e(root)}/bulk" class="inline">'
            f'<input type="hidden" name="return" value="{_e(filters.query()[1:])}">'
            f'<input type="hidden" name="id" value="{ids}">'
            '<label>All of them: <select name="action" required>'
            '<option value="acknowledge">acknowledge (nothing is written)</option>'
            '<option value="dismiss">dismiss (with a reason)</option></select></label>'
            '<label>Reason <input type="text" name="reason" size="20"></label>'
            f'{by}<button type="submit">Preview</button></form></section>'
        )

    def _details(self, root: str, view: ItemView, names: _Names) -> str:
        item = view.item
        now = self.queue.clock.now()

        def key_link(side: Side, key: str | None) -> str:
            if not key:
                return "-"
            href = f"{root}/?{urllib.parse.urlencode({'key': key, 'status': 'all'})}"
            out = f'<a href="{_e(href)}" title="Every item of this record">{_e(key)}</a>'
            url = view.urls.get(side)
            if url:
                out += (
                    f' (<a href="{_e(url)}" rel="noopener noreferrer">'
                    f"open in {_e(names(side))}</a>)"
                )
            return out

        fm = self._field_map(item)
        field = _e(item.field) + (" (the whole record)" if item.field == "*" else "")
        if fm is not None and fm.right != fm.left:
            field = (
                f"<code>{_e(fm.left)}</code> in {_e(names.left)},"
                f" <code>{_e(fm.right)}</code> in {_e(names.right)}"
            )
        rows = [
            ("Status", _e(item.status.value)),
            ("Category", _e(item.category or "-")),
            (
                "Sync",
                _e(item.sync) + ("" if names.known else " (its definition is not loaded here)"),
            ),
        ]
        if item.left_key or item.right_key:
            records = _pair(
                names, key_link(Side.LEFT, item.left_key), key_link(Side.RIGHT, item.right_key)
            )
            rows.append(("Records", records))
        rows += [
            ("Field", field),
            ("Rule", _e(item.rule or "-")),
            (
                "Detected",
                f"{_e(_when(item.detected_at))} ({_e(_age(now - item.detected_at))} ago),"
                f" seen {_plural(item.times_seen, 'time')}",
            ),
            ("Assigned to", _e(item.assignee or "-")),
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
        out = '<table class="keys">' + "".join(
            f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows
        )
        out += "</table>"
        if not view.record_level:
            base = _shown(view.base_value) if view.has_base else "(never synced)"

            def moved(value: Any) -> str:
                # Which side moved away from the last agreed value (a three-way view).
                if not view.has_base:
                    return ""
                if values_equal(value, view.base_value):
                    return ' <span class="muted">(as last agreed)</span>'
                return ' <strong class="moved">changed since last agreed</strong>'

            out += (
                '<h2>Values</h2><table class="stack values"><thead><tr>'
                f"<th>{_e(names.left)}</th><th>{_e(names.right)}</th>"
                "<th>Last agreed value</th></tr></thead><tbody>"
                f'<tr><td data-label="{_e(names.left)}">'
                f"<code>{_e(_shown(view.left_value))}</code>{moved(view.left_value)}</td>"
                f'<td data-label="{_e(names.right)}">'
                f"<code>{_e(_shown(view.right_value))}</code>{moved(view.right_value)}</td>"
                f'<td data-label="Last agreed value"><code>{_e(base)}</code></td></tr>'
                "</tbody></table>"
            )
        if view.explanation:
            # As a person reads it: values shown like the table's, the systems by name.
            why = explanation_text(item, {Side.LEFT: names.left, Side.RIGHT: names.right})
            out += f"<h2>Why</h2><pre>{_e(why)}</pre>"
        return out

    async def _forms(
        self,
        root: str,
        view: ItemView,
        names: _Names,
        filters: _Filters,
        form: Mapping[str, str],
        action: str | None,
    ) -> str:
        item = view.item
        target = f"{root}/items/{item.id}"
        back = f'<input type="hidden" name="return" value="{_e(filters.query()[1:])}">'

        def kept(name: str, for_action: str) -> str:
            """What the operator typed in the form that came back with an error."""
            return form.get(name, "") if action == for_action else ""

        def by(for_action: str, *, required: bool = False) -> str:
            if self.operator is not None:
                return ""
            need = " required" if required else ""
            return (
                '<label>Your name <input type="text" name="by" size="16"'
                f' value="{_e(kept("by", for_action))}"{need}></label>'
            )

        def note(for_action: str) -> str:
            return (
                '<label>Note <input type="text" name="note" size="40"'
                f' value="{_e(kept("note", for_action))}"></label>'
            )

        if view.record_level and _is_drift(item):
            confirmed = " checked" if kept("confirm", "resolve") == "yes" else ""
            resolve = (
                f'<form method="post" action="{_e(target)}/resolve" id="resolve">{back}'
                "<h2>Lift the quarantine</h2>"
                f"<p>syncrecon stopped writing the field “{_e(item.field)}” because its"
                f" definition changed in {_e(names.left)} or {_e(names.right)}. Once the"
                " mapping is fixed (ask whoever configures the sync), lift the quarantine: the"
                " next cycle syncs the field again. Nothing is written now.</p>"
                f"<p>{by('resolve', required=True)}{note('resolve')}</p>"
                '<p><label class="choice"><input type="checkbox" name="confirm" value="yes"'
                f" required{confirmed}> The mapping of “{_e(item.field)}” is fixed: writes to"
                " it may resume.</label></p>"
                '<p><button type="submit">Lift the quarantine</button></p></form>'
            )
        elif view.record_level:
            resolve = (
                f'<form method="post" action="{_e(target)}/resolve" id="resolve">{back}'
                "<h2>Acknowledge</h2>"
                "<p>This item is about a whole record or field: acknowledging closes it and"
                " writes nothing.</p>"
                f"<p>{by('resolve')}{note('resolve')}</p>"
                '<p><button type="submit">Acknowledge and close</button></p></form>'
            )
        else:
            resolve = await self._resolve_form(target, view, names, back, kept, by, note)
        reason = _e(kept("reason", "dismiss"))
        dismiss = (
            ""
            if _is_drift(item)
            else (
                f'<form method="post" action="{_e(target)}/dismiss" id="dismiss">{back}'
                "<h2>Dismiss</h2><p>Close the item without changing anything. If the systems still"
                " differ, a later cycle finds it again.</p>"
                '<label>Reason <input type="text" name="reason" size="40" required'
                f' value="{reason}"></label>{by("dismiss")}'
                '<button type="submit">Dismiss</button></form>'
            )
        )
        to = kept("to", "assign") if action == "assign" else item.assignee or ""
        assign = (
            f'<form method="post" action="{_e(target)}/assign" id="assign">{back}'
            '<h2>Assign</h2><label>To <input type="text" name="to" size="16"'
            f' value="{_e(to)}"></label>'
            ' <button type="submit">Assign</button> <span class="muted">(empty: unassign)</span>'
            "</form>"
        )
        return resolve + dismiss + assign

    async def _resolve_form(
        self,
        target: str,
        view: ItemView,
        names: _Names,
        back: str,
        kept: Callable[[str, str], str],
        by: Callable[..., str],
        note: Callable[[str], str],
    ) -> str:
        item = view.item
        choices, drift_id = await self._choices(item, names)
        if not choices.any:
            more = ""
            if drift_id is not None:
                more = (
                    f' <a href="{_e(target.rsplit("/", 1)[0])}/{drift_id}">'
                    f"Open the schema-drift item #{drift_id}</a>."
                )
            return (
                '<section class="box" id="resolve"><h2>Resolve</h2>'
                f'<p class="info">{_e(choices.why_not)}{more}</p></section>'
            )
        take = kept("take", "resolve")
        typed = kept("value", "resolve")
        hint = view.suggestion
        if not take and hint is not None:  # the suggestion is chosen, never sent by itself
            if hint.resolution in ("left", "right"):
                take = str(hint.resolution)
            elif isinstance(hint.resolution, UseValue) and choices.custom:
                take, typed = "value", input_text(hint.resolution.value)
        if (take == "left" and not choices.left) or (take == "right" and not choices.right):
            take = ""
        if not take and not (choices.left and choices.right):
            take = "left" if choices.left else "right"  # the only choice: chosen already

        def radio(value: str) -> str:
            first = " required" if value == ("left" if choices.left else "right") else ""
            return (
                f'<input type="radio" name="take" value="{value}"{first}'
                + (" checked" if take == value else "")
                + ">"
            )

        options = []
        if choices.left:
            options.append(
                f'<label class="choice">{radio("left")} Take {_e(names.left)}\'s value'
                f" <code>{_e(_shown(item.left_value, 60))}</code>"
                f' <span class="muted">(written to {_e(names.right)})</span></label>'
            )
        if choices.right:
            options.append(
                f'<label class="choice">{radio("right")} Take {_e(names.right)}\'s value'
                f" <code>{_e(_shown(item.right_value, 60))}</code>"
                f' <span class="muted">(written to {_e(names.left)})</span></label>'
            )
        if choices.custom:
            options.append(
                f'<label class="choice">{radio("value")} Another value:'
                ' <input type="text" name="value" size="24"'
                f' value="{_e(typed)}"'
                f' placeholder="{_e(_example(item))}"></label>'
                f'<span class="muted">Written to both systems, as {_e(names.left)} holds it.'
                " Write it as you read it: a date 2026-08-22, an amount 1200.50, a list"
                " a, b, c; leave it empty for blank.</span>"
            )
        why = f'<p class="info">{_e(choices.why_not)}</p>' if choices.why_not else ""
        return (
            f'<form method="post" action="{_e(target)}/resolve" id="resolve">{back}'
            "<h2>Resolve</h2>"
            f'<input type="hidden" name="seen_left" value="{_e(_text(item.left_value))}">'
            f'<input type="hidden" name="seen_right" value="{_e(_text(item.right_value))}">'
            f"{why}<fieldset><legend>Which value is right?</legend>{''.join(options)}"
            f"</fieldset><p>{by('resolve')}{note('resolve')}</p>"
            '<p class="muted">Both records are read again first; a value changed since the item'
            " was opened is never overwritten.</p>"
            '<p><button type="submit">Resolve</button></p></form>'
        )

    def _history(self, root: str, history: Sequence[Discrepancy]) -> str:
        rows = "".join(
            f'<tr><td data-label="Item"><a href="{_e(root)}/items/{h.id}">#{h.id}</a></td>'
            f'<td data-label="Detected">{_e(_when(h.detected_at))}</td>'
            f'<td data-label="Field">{_e(h.field)}</td>'
            f'<td data-label="Status">{_e(h.status.value)}</td>'
            f'<td data-label="Category">{_e(h.category or "-")}</td>'
            f'<td data-label="Note">{_e(h.note or "")}</td></tr>'
            for h in history
        )
        return (
            '<table class="stack"><thead><tr><th>Item</th><th>Detected</th><th>Field</th>'
            "<th>Status</th><th>Category</th><th>Note</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )


_BULK_VERBS: Final = {
    "left": "resolved",
    "right": "resolved",
    "acknowledge": "acknowledged",
    "dismiss": "dismissed",
    "assign": "assigned",
}
_BULK_DO: Final = {
    "left": "resolve",
    "right": "resolve",
    "acknowledge": "acknowledge",
    "dismiss": "dismiss",
    "assign": "assign",
}


def _bulk_title(action: str, names: _Names) -> str:
    """``resolve, taking crm's value``: what a bulk action does, for its pages' titles."""
    if action in ("left", "right"):
        side = Side(action)
        system = f"{names(side)}'s" if names.known else f"the {side} system's"
        return f"resolve, taking {system} value"
    return _BULK_DO[action]


def _ids(text: str, *, strict: bool = True) -> list[int]:
    """Item ids from ``"3,5,8"`` (each once, in order); a bad one is a ``ValueError``."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not _is_id(part):
            if strict:
                raise ValueError(part)
            continue
        out.append(int(part))
    return list(dict.fromkeys(out))[:_BULK_CAP]


def _grouped(items: Sequence[Discrepancy]) -> list[Discrepancy]:
    """``items`` in their order, but each duplicate group's items together, where its first is."""
    members: dict[str, list[Discrepancy]] = {}
    for item in items:
        group = group_key(item)
        if group is not None:
            members.setdefault(group, []).append(item)
    out: list[Discrepancy] = []
    placed: set[int] = set()
    for item in items:
        if (item.id or 0) in placed:
            continue
        group = group_key(item)
        for member in members[group] if group is not None else [item]:
            out.append(member)
            placed.add(member.id or 0)
    return out


def _pair(names: _Names, left: str, right: str) -> str:
    """Two lines, one per system: its name, then ``left`` or ``right`` (markup)."""
    return (
        f'<span class="pair"><span class="sys">{_e(names.left)}</span><span>{left}</span>'
        f'<span class="sys">{_e(names.right)}</span><span>{right}</span></span>'
    )


def _is_drift(item: Discrepancy) -> bool:
    return item.category == SCHEMA_DRIFT_CATEGORY and is_record_level(item)


def _no_sync_sentence(sync: str) -> str:
    return (
        f"This page cannot resolve the item: it was started without the settings of the sync"
        f" “{sync}”, so it cannot write to either system. You can still assign or dismiss the"
        f" item here. To resolve it, ask whoever runs syncrecon to give the queue page the"
        f" “{sync}” sync definition (it needs that sync definition to write)."
    )


def _sentence(text: str) -> str:
    """An error message as a sentence: a capital first, a full stop last."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


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
