"""HubSpot CRM v3 objects: deals, contacts, companies and custom objects.

.. code-block:: python

    import httpx
    from syncrecon.connectors.hubspot import HubSpotConnector

    client = httpx.Client(timeout=30)            # yours: proxies, certificates, timeouts
    deals = HubSpotConnector(
        client,
        object_type="deals",
        properties=["dealname", "dealstage", "amount", "closedate", "tags"],
        token="pat-na1-...",                     # a private app's token (or auth=...)
    )

What it does with HubSpot's API (facts from HubSpot's documentation):

- **Full sweep**: ``GET /crm/v3/objects/{type}`` at 100 per page (50 when per-field history is
  asked for), following ``paging.next.after``.
- **Incremental** (``since`` given): ``POST /crm/v3/objects/{type}/search`` filtered on the
  last-modified property (``hs_lastmodifieddate``; ``lastmodifieddate`` for contacts) from
  ``since - lookback``, sorted by ``hs_object_id`` and paged by ``hs_object_id > last``
  (never by ``after``), 200 per page. Each page is a fresh query from offset 0, so search's
  10,000-result cap is never reached and 10,000 records sharing one timestamp cannot make it
  loop. ``lookback`` (5 minutes) catches records search had not indexed yet. Search has its
  own limit (5 requests per second per account) and its own limiter. Then, once per
  ``archived_every`` (an hour), the archived listing (``?archived=true``, no time filter: one
  request per 100 archived records) reports the records archived since the previous scan.
- **Batches** of 100: ``batch/read``, ``batch/update``, ``batch/create`` (each input with a
  unique ``objectWriteTraceId``, so a 207 multi-status answer names each failed input) and
  ``batch/archive`` (204, no per-record result: every archived record is reported done). A
  batch HubSpot refuses as a whole (400) is split in halves until the bad record is alone, so
  one bad value never fails the rest.
- **Types**: the properties API gives each property's type; values are strings on the wire
  and typed both ways: ``number`` (int or float), ``bool``, ``date`` (``datetime.date``),
  ``datetime`` (aware UTC), ``enumeration`` (str) and multi-checkbox enumerations (a list of
  str, ``;``-joined on the wire). An empty string is ``None`` and ``None`` is written as ``""``
  (how HubSpot clears a property).
- **Per-field times** (``field_history=True``): ``propertiesWithHistory``; pages and read
  batches halve to 50, which the request count shows.
- **Creates**: with ``idempotency_property`` (a unique-value text property you create in
  HubSpot) each create carries its idempotency key there and syncrecon can look a create up
  after a lost answer (``find_created``, by ``batch/read`` with that ``idProperty``).
- **Limits**: a rolling window per account (``tier``: 100 requests per 10 s for free and
  starter, 190 for professional and enterprise, 110 for marketplace apps), adjusted from the
  ``X-HubSpot-RateLimit-*`` headers; 429 waits for ``Retry-After``; ``policyName: DAILY`` is
  not retried before the reset; 423 waits at least 2 s; 477 honours ``Retry-After``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from .._clock import Clock, SystemClock
from .._exceptions import (
    AuthenticationError,
    ConfigurationError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from .._models import Capabilities, Change, ChangeOp, FieldInfo, Page, Record, WriteResult
from ..http import (
    AsyncHttpConnector,
    BearerToken,
    HttpApi,
    HttpConnector,
    HttpOperations,
    HttpRetry,
    Op,
    RateLimiter,
    Timer,
    Verdict,
    Window,
    WriteResults,
    chunked,
    failure,
    parse_retry_after,
    shared_limiter,
)
from ..http._retry import body_json
from ._values import (
    as_number,
    iso_date,
    iso_datetime,
    join_multi,
    number_text,
    parse_date,
    parse_datetime,
    split_multi,
)

__all__ = [
    "AsyncHubSpotConnector",
    "HubSpotConnector",
    "classify_hubspot",
    "decode_value",
    "encode_value",
    "field_info",
    "observe_hubspot",
]

BASE_URL = "https://api.hubapi.com"
PAGE = 100
HISTORY_PAGE = 50
SEARCH_PAGE = 200
SEARCH_CAP = 10_000

#: Requests per 10 seconds, per app and account, by subscription (HubSpot's usage guidelines).
TIERS: Mapping[str, int] = {
    "free": 100,
    "starter": 100,
    "professional": 190,
    "enterprise": 190,
    "api_add_on": 250,
    "marketplace": 110,
}
SEARCH_PER_SECOND = 5

STANDARD_TYPES: Mapping[str, str] = {"0-1": "contacts", "0-2": "companies", "0-3": "deals"}

APP_URL = "https://app.hubspot.com"
"""Where HubSpot's pages are (an account in another data centre is redirected from here)."""
#: The type ids of HubSpot's standard objects, by the names the API takes.
_OBJECT_TYPE_IDS: Mapping[str, str] = {
    **{name: type_id for type_id, name in STANDARD_TYPES.items()},
    "tickets": "0-5",
}
_TYPE_ID = re.compile(r"^[0-9]+-[0-9]+$")


def _modified_property(object_type: str) -> str:
    name = STANDARD_TYPES.get(object_type, object_type)
    return "lastmodifieddate" if name == "contacts" else "hs_lastmodifieddate"


# -- values -----------------------------------------------------------------------------------


def field_info(prop: Mapping[str, Any]) -> FieldInfo:
    """A HubSpot property (from the properties API) as a :class:`~syncrecon.FieldInfo`.

    A multi-checkbox enumeration becomes type ``multi_enumeration``; options are the values
    of all options, hidden ones included (HubSpot still accepts them).
    """
    kind = str(prop.get("type") or "string")
    field_type = str(prop.get("fieldType") or "")
    if kind == "enumeration" and field_type == "checkbox":
        kind = "multi_enumeration"
    options = None
    if kind in ("enumeration", "multi_enumeration"):
        # Hidden options included: HubSpot still takes them, and a record may hold one (to
        # drift detection, hiding an option must not look like removing it).
        options = [str(o.get("value")) for o in prop.get("options") or () if isinstance(o, Mapping)]
    return FieldInfo(name=str(prop["name"]), type=kind, options=options)


def decode_value(kind: str | None, text: Any) -> Any:
    """A wire value (a string) as a typed value for a property of type ``kind``.

    A value that does not parse as its type is kept as the string it is: syncrecon's value
    checks then hold that one field (an ``invalid_value`` escalation), not the record.
    """
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        return text
    try:
        if kind == "number":
            return as_number(text)
        if kind == "bool":
            lowered = text.strip().lower()
            if lowered in ("true", "false"):
                return lowered == "true"
            return text
        if kind == "date":
            return parse_date(text)
        if kind == "datetime":
            return parse_datetime(text)
        if kind == "multi_enumeration":
            return split_multi(text)
    except (ValueError, OverflowError):
        return text
    return text


def encode_value(kind: str | None, value: Any) -> str:
    """A typed value as HubSpot's wire string for a property of type ``kind``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return join_multi(items)
    if isinstance(value, datetime):
        if kind == "date":
            return iso_date(value)
        return iso_datetime(value)
    if isinstance(value, date):
        return iso_date(value)
    if kind == "number" or isinstance(value, int | float):
        try:
            return number_text(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


# -- what HubSpot's answers mean ---------------------------------------------------------------


def classify_hubspot(system: str) -> Any:
    """HubSpot's throttle signals, read before the generic rules (see the module text)."""

    def classify(request: httpx.Request, response: httpx.Response) -> Verdict | None:
        status = response.status_code
        if status not in (423, 429, 477):
            return None
        wait = parse_retry_after(response.headers.get("retry-after"))
        if status == 429:
            body = body_json(response)
            policy = body.get("policyName") if isinstance(body, Mapping) else None
            if policy == "DAILY":
                # The daily limit resets at the account's midnight: not worth retrying now.
                return Verdict(
                    error=failure(system, request, response, RateLimitedError, code="DAILY"),
                    retry=False,
                    safe=True,
                )
            return Verdict(
                error=failure(
                    system,
                    request,
                    response,
                    RateLimitedError,
                    retry_after=wait,
                    code=str(policy) if policy else None,
                ),
                retry=True,
                wait=wait,
                safe=True,
            )
        if status == 423:
            wait = max(2.0, wait or 0.0)  # "wait at least 2 seconds"
        return Verdict(
            error=failure(system, request, response, RateLimitedError, retry_after=wait),
            retry=True,
            wait=wait,
            safe=True,
        )

    return classify


def observe_hubspot(response: httpx.Response, limiter: RateLimiter) -> None:
    """Feed the limiter HubSpot's ``X-HubSpot-RateLimit-*`` headers."""
    headers = response.headers
    interval = _int(headers.get("x-hubspot-ratelimit-interval-milliseconds"))
    limit = _int(headers.get("x-hubspot-ratelimit-max"))
    remaining = _int(headers.get("x-hubspot-ratelimit-remaining"))
    if interval and (limit is not None or remaining is not None):
        limiter.observe(limit=limit, remaining=remaining, seconds=interval / 1000)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# -- the operations ------------------------------------------------------------------------------


class _HubSpot(HttpOperations):
    def __init__(
        self,
        client: httpx.Client | httpx.AsyncClient,
        *,
        object_type: str,
        properties: Sequence[str],
        token: str | None = None,
        auth: httpx.Auth | None = None,
        name: str = "hubspot",
        base_url: str = BASE_URL,
        tier: str = "free",
        account: str | None = None,
        limiter: RateLimiter | None = None,
        search_limiter: RateLimiter | None = None,
        retry: HttpRetry | None = None,
        field_history: bool = False,
        lookback: timedelta = timedelta(minutes=5),
        archived_every: timedelta | None = timedelta(hours=1),
        incremental: bool = True,
        idempotency_property: str | None = None,
        types: Mapping[str, str] | None = None,
        timer: Timer | None = None,
        clock: Clock | None = None,
        portal_id: str | int | None = None,
    ) -> None:
        if (token is None) == (auth is None):
            raise ConfigurationError("HubSpot: give exactly one of token= or auth=")
        if tier not in TIERS:
            raise ConfigurationError(f"HubSpot: tier must be one of {sorted(TIERS)}")
        if not properties:
            raise ConfigurationError("HubSpot: properties= names the properties to sync")
        self.name = name
        self.object_type = object_type
        portal = str(portal_id).strip() if portal_id is not None else None
        if portal is not None and not portal.isdigit():
            raise ConfigurationError(
                f"HubSpot: portal_id must be the account's number, not {portal!r}"
            )
        self.portal_id = portal
        self.properties = list(dict.fromkeys(properties))
        self.field_history = field_history
        self.lookback = lookback
        self.archived_every = archived_every
        self._archived_scan: datetime | None = None  # when the last full archived scan began
        self._scan_started: datetime | None = None
        self.idempotency_property = idempotency_property
        self.modified_property = _modified_property(object_type)
        self.clock: Clock = clock or SystemClock()
        per_10s = TIERS[tier]
        if limiter is None:

            def general() -> RateLimiter:
                return RateLimiter([Window(per_10s, 10.0)], timer=timer, name=f"{name} API")

            limiter = shared_limiter(f"hubspot:{account}", general) if account else general()
        if search_limiter is None:

            def search() -> RateLimiter:
                return RateLimiter(
                    [Window(SEARCH_PER_SECOND, 1.0)], timer=timer, name=f"{name} search"
                )

            search_limiter = (
                shared_limiter(f"hubspot-search:{account}", search) if account else search()
            )
        common: dict[str, Any] = {
            "system": name,
            "base_url": base_url,
            "auth": auth if auth is not None else BearerToken(str(token)),
            "retry": retry,
            "classifier": classify_hubspot(name),
            "timer": timer,
            "clock": self.clock,
        }
        self.api = HttpApi(client, limiter=limiter, observe=observe_hubspot, **common)
        self.search_api = HttpApi(client, limiter=search_limiter, **common)
        page = HISTORY_PAGE if field_history else PAGE
        self.page_size = page
        self.capabilities = Capabilities(
            page_size=page,
            max_read_batch=page,
            max_write_batch=PAGE,
            incremental=incremental,
            field_timestamps=field_history,
            describes_fields=True,
            finds_created=idempotency_property is not None,
            retries_requests=True,
        )
        self._types: dict[str, str] | None = dict(types) if types is not None else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, object_type={self.object_type!r})"

    def record_url(self, key: str) -> str | None:
        """The record's page in HubSpot
        (``https://app.hubspot.com/contacts/{portal_id}/record/{object_type_id}/{id}``), or
        ``None`` when the connector was given no ``portal_id`` (or the object type has no
        known type id). No request is made."""
        type_id = _OBJECT_TYPE_IDS.get(self.object_type, self.object_type)
        if self.portal_id is None or not _TYPE_ID.match(type_id) or not key:
            return None
        return f"{APP_URL}/contacts/{self.portal_id}/record/{type_id}/{quote(str(key), safe='')}"

    # -- types --------------------------------------------------------------------------------

    def _path(self, suffix: str = "") -> str:
        return f"/crm/v3/objects/{self.object_type}{suffix}"

    def _ensure_types(self) -> Op[dict[str, str]]:
        if self._types is None:
            fields = yield from self.describe_op()
            self._types = {f.name: f.type for f in fields}
        return self._types

    def describe_op(self) -> Op[Sequence[FieldInfo]]:
        reply = yield self.api.request(
            "GET",
            f"/crm/v3/properties/{self.object_type}",
            endpoint=f"GET /crm/v3/properties/{self.object_type}",
        )
        body = reply.json()
        fields = [
            field_info(p)
            for p in body.get("results", [])
            if isinstance(p, Mapping) and isinstance(p.get("name"), str)
        ]
        self._types = {f.name: f.type for f in fields}
        return fields

    def decode(self, properties: Mapping[str, Any]) -> dict[str, Any]:
        """The synced properties of a wire object, typed (absent ones stay absent)."""
        types = self._types or {}
        return {
            name: decode_value(types.get(name), properties[name])
            for name in self.properties
            if name in properties
        }

    def encode(self, fields: Mapping[str, Any]) -> dict[str, str]:
        types = self._types or {}
        return {name: encode_value(types.get(name), value) for name, value in fields.items()}

    def _record(self, item: Mapping[str, Any]) -> Record:
        props = item.get("properties") or {}
        history = item.get("propertiesWithHistory")
        field_times: dict[str, datetime] | None = None
        if self.field_history and isinstance(history, Mapping):
            field_times = {}
            for name, versions in history.items():
                stamps = [
                    parse_datetime(v["timestamp"])
                    for v in versions or ()
                    if isinstance(v, Mapping) and isinstance(v.get("timestamp"), str)
                ]
                if stamps:
                    field_times[name] = max(stamps)
        updated = item.get("updatedAt") or props.get(self.modified_property)
        return Record(
            key=str(item["id"]),
            fields=self.decode(props),
            modified_at=parse_datetime(updated) if isinstance(updated, str) and updated else None,
            field_modified_at=field_times,
        )

    def _wanted(self) -> list[str]:
        wanted = [*self.properties, self.modified_property]
        if self.idempotency_property:
            wanted.append(self.idempotency_property)
        return list(dict.fromkeys(wanted))

    # -- listing ----------------------------------------------------------------------------

    def list_op(self, *, since: datetime | None, cursor: str | None) -> Op[Page]:
        yield from self._ensure_types()
        if since is None or not self.capabilities.incremental:
            return (yield from self._sweep(cursor))
        if cursor is None or cursor.startswith("s:"):
            last = cursor[2:] if cursor else ""
            return (yield from self._search(since, last))
        return (yield from self._archived(since, cursor[2:] or None))

    def _sweep(self, cursor: str | None) -> Op[Page]:
        params: dict[str, Any] = {"limit": self.page_size, "properties": ",".join(self._wanted())}
        if self.field_history:
            params["propertiesWithHistory"] = ",".join(self.properties)
        if cursor:
            params["after"] = cursor
        reply = yield self.api.request(
            "GET", self._path(), params=params, endpoint=f"GET {self._path()}"
        )
        body = reply.json()
        records = [self._record(item) for item in body.get("results", [])]
        after = ((body.get("paging") or {}).get("next") or {}).get("after")
        return Page(records=records, next_cursor=str(after) if after else None)

    def _search(self, since: datetime, last: str) -> Op[Page]:
        floor = since - self.lookback
        filters: list[dict[str, Any]] = [
            {
                "propertyName": self.modified_property,
                "operator": "GTE",
                "value": str(int(floor.timestamp() * 1000)),
            }
        ]
        if last:
            filters.append({"propertyName": "hs_object_id", "operator": "GT", "value": last})
        body = {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "properties": [*self._wanted(), "hs_object_id"],
            "limit": SEARCH_PAGE,
        }
        reply = yield self.search_api.request(
            "POST",
            self._path("/search"),
            json=body,
            endpoint=f"POST {self._path('/search')}",
            idempotent=True,
        )
        answer = reply.json()
        items = [i for i in answer.get("results", []) if isinstance(i, Mapping)]
        if self.field_history and items:
            # Search has no history: the page is read again with it (counted requests).
            found = yield from self.read_op([str(i["id"]) for i in items])
            records = list(found)
        else:
            records = [self._record(i) for i in items]
        if len(items) < SEARCH_PAGE:
            # Then the archived ones, when a scan is due: the archived listing has no time
            # filter, so each scan reads every archived record (see archived_every).
            now = self.clock.now()
            due = (
                self.archived_every is None
                or self._archived_scan is None
                or now - self._archived_scan >= self.archived_every
            )
            return Page(records=records, next_cursor="a:" if due else None)
        return Page(records=records, next_cursor=f"s:{max(int(i['id']) for i in items)}")

    def _archived(self, since: datetime, after: str | None) -> Op[Page]:
        # Everything archived since the previous scan began (or since ``since``, if earlier).
        if after is None:
            self._scan_started = self.clock.now()
        start = since if self._archived_scan is None else min(since, self._archived_scan)
        floor = start - self.lookback
        params: dict[str, Any] = {"limit": PAGE, "archived": "true", "properties": "hs_object_id"}
        if after:
            params["after"] = after
        reply = yield self.api.request(
            "GET", self._path(), params=params, endpoint=f"GET {self._path()}?archived"
        )
        body = reply.json()
        records = []
        for item in body.get("results", []):
            stamp = item.get("archivedAt") or item.get("updatedAt")
            when = parse_datetime(stamp) if isinstance(stamp, str) and stamp else None
            if when is None or when >= floor:
                records.append(Record(key=str(item["id"]), deleted=True, modified_at=when))
        nxt = ((body.get("paging") or {}).get("next") or {}).get("after")
        if not nxt:
            self._archived_scan = self._scan_started
        return Page(records=records, next_cursor=f"a:{nxt}" if nxt else None)

    # -- reading -----------------------------------------------------------------------------

    def _batch_read(self, ids: Sequence[str], id_property: str | None = None) -> Op[list[Any]]:
        out: list[Any] = []
        size = HISTORY_PAGE if self.field_history else PAGE
        for chunk in chunked(list(ids), size):
            body: dict[str, Any] = {
                "inputs": [{"id": i} for i in chunk],
                "properties": self._wanted(),
            }
            if self.field_history:
                body["propertiesWithHistory"] = self.properties
            if id_property:
                body["idProperty"] = id_property
            reply = yield self.api.request(
                "POST",
                self._path("/batch/read"),
                params={"archived": "false"},
                json=body,
                endpoint=f"POST {self._path('/batch/read')}",
                idempotent=True,
            )
            # A 207 lists the ids it did not find among its errors: they are simply absent.
            out.extend(i for i in reply.json().get("results", []) if isinstance(i, Mapping))
        return out

    def read_op(self, keys: Sequence[str]) -> Op[Sequence[Record]]:
        yield from self._ensure_types()
        items = yield from self._batch_read(keys)
        return [self._record(i) for i in items if not i.get("archived")]

    def find_created_op(self, idempotency_keys: Sequence[str]) -> Op[Mapping[str, Record]]:
        prop = self.idempotency_property
        if prop is None:
            raise ConfigurationError(f"{self.name}: find_created needs idempotency_property=")
        yield from self._ensure_types()
        items = yield from self._batch_read(idempotency_keys, id_property=prop)
        found: dict[str, Record] = {}
        for item in items:
            value = (item.get("properties") or {}).get(prop)
            if isinstance(value, str) and value:
                found[value] = self._record(item)
        return found

    # -- writing -----------------------------------------------------------------------------

    def write_op(self, changes: Sequence[Change]) -> Op[Sequence[WriteResult]]:
        yield from self._ensure_types()
        results = WriteResults(changes)
        groups: dict[ChangeOp, list[int]] = {}
        for index, change in enumerate(changes):
            if change.op is not ChangeOp.CREATE and not change.key:
                results.fail(index, f"a {change.op.value} needs the record's key")
                continue
            groups.setdefault(change.op, []).append(index)
        for op, indexes in groups.items():
            for chunk in chunked(indexes, PAGE):
                yield from self._write_group(op, list(chunk), changes, results)
        return results.done()

    def _inputs(self, op: ChangeOp, indexes: list[int], changes: Sequence[Change]) -> list[Any]:
        inputs: list[dict[str, Any]] = []
        for index in indexes:
            change = changes[index]
            if op is ChangeOp.DELETE:
                inputs.append({"id": change.key})
            elif op is ChangeOp.UPDATE:
                inputs.append({"id": change.key, "properties": self.encode(change.fields)})
            else:
                props = self.encode(change.fields)
                if self.idempotency_property and change.idempotency_key:
                    props[self.idempotency_property] = change.idempotency_key
                inputs.append({"properties": props, "objectWriteTraceId": f"t{index}"})
        return inputs

    def _write_group(
        self, op: ChangeOp, indexes: list[int], changes: Sequence[Change], results: WriteResults
    ) -> Op[None]:
        suffix = {ChangeOp.CREATE: "create", ChangeOp.UPDATE: "update", ChangeOp.DELETE: "archive"}
        path = self._path(f"/batch/{suffix[op]}")
        request = self.api.request(
            "POST",
            path,
            json={"inputs": self._inputs(op, indexes, changes)},
            endpoint=f"POST {path}",
            # Updates set values and archives are final: both are safe to repeat. A create is
            # not (HubSpot does not de-duplicate by trace id): syncrecon's create intents and
            # find_created handle a lost answer instead.
            idempotent=op is not ChangeOp.CREATE,
        )
        try:
            reply = yield request
        except AuthenticationError:
            raise  # credentials refused: the whole call fails, not each record
        except PermanentError as exc:
            if (
                exc.status in (400, 409, 422)
                and exc.endpoint == f"POST {path}"
                and len(indexes) > 1
            ):
                # Refused as a whole: halve it until the bad input is alone.
                half = len(indexes) // 2
                yield from self._write_group(op, indexes[:half], changes, results)
                yield from self._write_group(op, indexes[half:], changes, results)
                return
            for index in indexes:
                results.fail(index, str(exc), retryable=False)
            return
        if op is ChangeOp.DELETE:
            for index in indexes:  # 204: HubSpot answers no per-record result for archives
                results.ok(index)
            return
        self._take_results(op, indexes, changes, results, reply)

    def _take_results(
        self,
        op: ChangeOp,
        indexes: list[int],
        changes: Sequence[Change],
        results: WriteResults,
        reply: httpx.Response,
    ) -> None:
        body = reply.json()
        by_trace = {f"t{index}": index for index in indexes}
        by_key: dict[str, list[int]] = {}
        for index in indexes:
            by_key.setdefault(str(changes[index].key), []).append(index)
        for error in body.get("errors", []) or []:
            if not isinstance(error, Mapping):
                continue
            context = error.get("context") or {}
            message = str(error.get("message") or error.get("category") or "rejected")
            status = str(error.get("status") or "")
            retryable = error.get("category") in ("RATE_LIMITS", "INTERNAL_ERROR") or status in (
                "429",
                "500",
                "502",
                "503",
                "504",
            )
            targets: list[int] = []
            for trace in context.get("objectWriteTraceId", []) or []:
                if trace in by_trace:
                    targets.append(by_trace[trace])
            for key in context.get("ids", []) or context.get("id", []) or []:
                targets.extend(by_key.get(str(key), []))
            for index in targets:
                results.fail(index, message, retryable=retryable)
        unmatched: list[Mapping[str, Any]] = []
        for item in body.get("results", []) or []:
            if not isinstance(item, Mapping):
                continue
            modified = item.get("updatedAt")
            when = parse_datetime(modified) if isinstance(modified, str) and modified else None
            trace = item.get("objectWriteTraceId")
            if op is ChangeOp.CREATE and trace in by_trace:
                results.ok(by_trace[trace], key=str(item["id"]), modified_at=when)
            elif op is ChangeOp.UPDATE and str(item.get("id")) in by_key:
                for index in by_key[str(item["id"])]:
                    results.ok(index, modified_at=when)
            else:
                unmatched.append(item)
        pending = [i for i in indexes if i in set(results.pending())]
        if op is ChangeOp.CREATE and unmatched and len(unmatched) == len(pending):
            # An answer without trace ids: HubSpot keeps the input order.
            for index, item in zip(pending, unmatched, strict=True):
                results.ok(index, key=str(item["id"]))
        elif op is ChangeOp.CREATE and pending:
            # A create the answer says nothing about may have been made: its outcome is
            # unknown, which syncrecon's create intents handle (looked up, never repeated
            # blindly); a plain failure would claim it was not made.
            raise TransientError(
                f"{self.name}: POST {self._path('/batch/create')} answered no result for"
                f" {len(pending)} of {len(indexes)} creates (the request may have been applied)",
                system=self.name,
                endpoint=f"POST {self._path('/batch/create')}",
            )

    # -- webhooks ------------------------------------------------------------------------------

    def webhook_source(
        self,
        sync: Any,
        side: Any,
        *,
        client_secrets: Sequence[str],
        name: str | None = None,
        clock: Clock | None = None,
    ) -> Any:
        """A :class:`~syncrecon.webhooks.WebhookSource` for this connector's webhooks.

        HubSpot's v3 signature is checked with the app's client secrets (several during a
        rotation), the notifications are parsed by :class:`~syncrecon.webhooks.HubSpotParser`
        and each ``propertyValue`` is typed like the connector types what it reads (a number
        property's ``"1200"`` is ``1200``), so both loops see the same values. A connector that
        does not know its property types yet describes them here (one request); an async one
        must have awaited ``describe_fields()`` first (or been given ``types=``).
        """
        from ..webhooks import HubSpotParser, HubSpotV3Verifier, WebhookSource

        if self._types is None:
            # The front door types values as the connector reads them: it needs the property
            # types before the first webhook, in a process that may never list or read.
            if self.api.is_async:
                raise ConfigurationError(
                    f"{self.name}: await describe_fields() (or pass types=) before"
                    " webhook_source(), so webhook values are typed like the records read"
                )
            self.api.run(self.describe_op())

        singular = {"deals": "deal", "contacts": "contact", "companies": "company"}
        kind = STANDARD_TYPES.get(self.object_type, self.object_type)
        object_type = singular.get(kind, self.object_type)
        parser = HubSpotParser(system=self.name, object_types={object_type: self.object_type})
        verifier = HubSpotV3Verifier(secrets=list(client_secrets), clock=clock or self.clock)
        return WebhookSource(
            name=name or self.name,
            sync=sync,
            side=side,
            verifier=verifier,
            parser=_TypedParser(parser, self),
            object_type=self.object_type,
        )


class _TypedParser:
    """Types the values of parsed HubSpot events with the connector's property types."""

    def __init__(self, parser: Any, connector: _HubSpot) -> None:
        self.parser = parser
        self.connector = connector

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[Any]:
        import attrs

        events = list(self.parser.parse(body, headers))
        types = self.connector._types
        if types is None:
            return events
        return [
            attrs.evolve(e, value=decode_value(types.get(e.field), e.value))
            if e.field is not None and isinstance(e.value, str)
            else e
            for e in events
        ]

    def __repr__(self) -> str:
        return f"TypedParser({self.parser!r})"


class HubSpotConnector(_HubSpot, HttpConnector):
    """HubSpot CRM objects over an ``httpx.Client`` (see the module documentation).

    :param client: your ``httpx.Client``.
    :param object_type: ``deals``, ``contacts``, ``companies``, or a custom object's type id
        (``2-12345``).
    :param properties: the properties to sync (and read).
    :param token: a private app's access token, or ``auth``: any ``httpx.Auth``, such as
        :class:`~syncrecon.http.OAuth2RefreshToken` for a public app.
    :param tier: the account's subscription, for the default rate limits.
    :param account: the account (portal) id: connectors of one account in this process then
        share one limiter (and one for search); without it each connector has its own (the
        fast loop and the cycles share a connector, so they share its limiter).
    :param field_history: read per-field modification times (``propertiesWithHistory``).
    :param lookback: how far before ``since`` an incremental listing starts (search lags).
    :param archived_every: how often an incremental listing also scans the archived records
        for deletions (``None``: every time). The archived listing has no time filter, so a
        scan costs one request per 100 archived records; between scans an archival waits,
        and the next scan reaches back to where the previous one began.
    :param idempotency_property: a unique text property that records each create's
        idempotency key, so a create whose answer was lost is found, not repeated.
    :param timer: the time the limiter and retries wait on (a virtual one in tests).
    :param portal_id: the account's (portal's) number: with it, :meth:`record_url` gives each
        record's page in HubSpot (the operator queue links to it).
    """


class AsyncHubSpotConnector(_HubSpot, AsyncHttpConnector):
    """:class:`HubSpotConnector` over an ``httpx.AsyncClient``, with ``async def`` methods."""
