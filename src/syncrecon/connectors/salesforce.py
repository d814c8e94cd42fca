"""Salesforce sObjects (Opportunity, Account, Contact, custom ``Foo__c``) over the REST API.

.. code-block:: python

    import httpx
    from syncrecon.connectors.salesforce import SalesforceConnector, jwt_bearer

    client = httpx.Client(timeout=60)
    auth = jwt_bearer(consumer_key="3MVG9...", username="sync@acme.com", private_key=pem)
    opportunities = SalesforceConnector(
        client, sobject="Opportunity", fields=["Name", "StageName", "Amount", "CloseDate"],
        auth=auth,                                  # instance_url comes from the token answer
    )

What it does with the REST API (facts from Salesforce's REST API guide):

- **Listing**: SOQL through ``/query`` with ``Sforce-Query-Options: batchSize=2000``, following
  ``nextRecordsUrl``. Incremental passes select ``WHERE SystemModstamp >= since ORDER BY
  SystemModstamp, Id``: ``SystemModstamp`` moves on automated changes too (workflows, triggers),
  which ``LastModifiedDate`` does not.
- **Deletions** (incremental passes): ``getDeleted`` (``/sobjects/{S}/deleted/``) for the
  window. It covers 15 days at most (less after the recycle bin is emptied): when ``since`` is
  older than its ``earliestDateAvailable``, :attr:`deletion_gap` is set and the listing asks
  ``/queryAll`` for ``IsDeleted = true`` rows instead; deletions purged beyond that are found by
  the next full sweep (``Reconciler(full_sweep_every=...)``).
- **Batches**: composite sObject collections: read up to 2,000 ids per ``POST``; create,
  update and delete up to 200 records with ``allOrNone=false``, one result per record in input
  order (a failed record never fails the others).
- **Types**: ``describe`` gives each field's type; active picklist values are the options;
  a ``multipicklist`` is a list of str (``;``-joined on the wire); ``date`` is a
  ``datetime.date``, ``datetime`` an aware UTC datetime.
- **Creates**: with ``external_id_field`` (an External ID, unique field) every create stores
  its idempotency key there, and a create whose answer was lost is found by a query on it
  (``find_created``) instead of made twice.
- **Limits**: ``Sforce-Limit-Info: api-usage=used/max`` keeps the limiter's daily window in
  step with the org; 403 ``REQUEST_LIMIT_EXCEEDED`` is throttling, retried with backoff;
  ``401 INVALID_SESSION_ID`` renews the session once (the auth does it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

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
    ClientCredentials,
    HttpApi,
    HttpConnector,
    HttpOperations,
    HttpRetry,
    JWTBearer,
    Op,
    RateLimiter,
    Secret,
    Timer,
    Verdict,
    Window,
    WriteResults,
    chunked,
    failure,
    shared_limiter,
)
from ..http._retry import body_json
from ._values import iso_date, join_multi, parse_date, parse_datetime, split_multi

__all__ = [
    "INSTANCE",
    "AsyncSalesforceConnector",
    "SalesforceConnector",
    "classify_salesforce",
    "client_credentials",
    "decode_value",
    "encode_value",
    "field_info",
    "jwt_bearer",
    "observe_salesforce",
    "soql_datetime",
    "soql_literal",
]

log = logging.getLogger("syncrecon.connectors.salesforce")

#: The placeholder host of an org whose URL the token answer names (``instance_url``).
INSTANCE = "instance.salesforce.invalid"
LOGIN_URL = "https://login.salesforce.com"
QUERY_PAGE = 2000
READ_BATCH = 2000
WRITE_BATCH = 200
DAY = 86_400.0
#: getDeleted covers 15 days at most (less once the recycle bin is emptied); a day's margin.
DELETED_WINDOW = timedelta(days=14)
RETRYABLE_CODES = frozenset(
    {"UNABLE_TO_LOCK_ROW", "REQUEST_LIMIT_EXCEEDED", "SERVER_UNAVAILABLE", "QUERY_TIMEOUT"}
)
# API names are checked against this at construction and values go through soql_literal, so
# the SOQL built below is never open to injection (hence the S608 waivers).
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


# -- auth ------------------------------------------------------------------------------------


def jwt_bearer(
    *,
    consumer_key: str,
    username: str,
    private_key: str | bytes | Secret,
    login_url: str = LOGIN_URL,
    clock: Clock | None = None,
    session_lifetime: timedelta | None = timedelta(hours=1),
) -> JWTBearer:
    """The OAuth 2 JWT bearer flow for a connected app (``login_url``: ``test.`` for a sandbox).

    The session is renewed after ``session_lifetime`` (Salesforce's answer has no expiry; set
    it below the org's session timeout) and at once on ``401 INVALID_SESSION_ID``.
    """
    return JWTBearer(
        f"{login_url.rstrip('/')}/services/oauth2/token",
        issuer=consumer_key,
        subject=username,
        audience=login_url.rstrip("/"),
        private_key=private_key,
        session_lifetime=session_lifetime,
        rebase_host=INSTANCE,
        clock=clock,
    )


def client_credentials(
    *, my_domain_url: str, client_id: str, client_secret: str | Secret, clock: Clock | None = None
) -> ClientCredentials:
    """The client credentials flow; the token request must go to the org's My Domain URL."""
    return ClientCredentials(
        f"{my_domain_url.rstrip('/')}/services/oauth2/token",
        client_id=client_id,
        client_secret=client_secret,
        rebase_host=INSTANCE,
        clock=clock,
    )


# -- values -----------------------------------------------------------------------------------

_NUMBERS = {"currency", "double", "percent", "int", "long"}


def field_info(field: Mapping[str, Any]) -> FieldInfo:
    """A describe field as a :class:`~syncrecon.FieldInfo` (active picklist values as options)."""
    kind = str(field.get("type") or "string")
    options = None
    if kind in ("picklist", "multipicklist"):
        options = [
            str(v.get("value"))
            for v in field.get("picklistValues") or ()
            if isinstance(v, Mapping) and v.get("active", True)
        ]
    required = not field.get("nillable", True) and bool(field.get("createable", False))
    return FieldInfo(
        name=str(field["name"]),
        type=kind,
        # An unrestricted picklist takes any value: its options are not a constraint.
        options=options if field.get("restrictedPicklist") else None,
        required=required and not field.get("defaultedOnCreate", False),
    )


def decode_value(kind: str | None, value: Any) -> Any:
    """A JSON value of a field of type ``kind`` as a typed value."""
    if value is None:
        return None
    if not isinstance(value, str):
        return value
    try:
        if kind == "multipicklist":
            return split_multi(value)
        if kind == "date":
            return parse_date(value)
        if kind == "datetime":
            return parse_datetime(value)
    except (ValueError, OverflowError):
        return value
    return value


def encode_value(kind: str | None, value: Any) -> Any:
    """A typed value as the JSON Salesforce takes for a field of type ``kind``."""
    if value is None:
        return None
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return join_multi(items)
    if isinstance(value, datetime):
        if kind == "date":
            return iso_date(value)
        return soql_datetime(value, millis=True)
    if isinstance(value, date):
        return iso_date(value)
    if isinstance(value, Decimal):
        return float(value)
    if kind in _NUMBERS and isinstance(value, str):
        try:
            return float(value) if "." in value else int(value)
        except ValueError:
            return value
    return value


def soql_datetime(value: datetime, *, millis: bool = False) -> str:
    """A UTC date-time literal (``2026-01-31T10:00:00Z``)."""
    from .._clock import utc

    value = utc(value)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += f".{value.microsecond // 1000:03d}"
    return text + "Z"


def soql_literal(value: Any) -> str:
    """A SOQL literal: quoted and escaped strings, numbers, booleans, ``null``, dates."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return soql_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


# -- what Salesforce's answers mean -------------------------------------------------------------


def classify_salesforce(system: str) -> Any:
    """403 ``REQUEST_LIMIT_EXCEEDED`` is throttling; ``QUERY_TIMEOUT`` is worth another try."""

    def classify(request: httpx.Request, response: httpx.Response) -> Verdict | None:
        if response.status_code not in (400, 403):
            return None
        body = body_json(response)
        first = body[0] if isinstance(body, list) and body else {}
        code = first.get("errorCode") if isinstance(first, Mapping) else None
        if code == "REQUEST_LIMIT_EXCEEDED":
            return Verdict(
                error=failure(system, request, response, RateLimitedError),
                retry=True,
                safe=True,
            )
        if code == "QUERY_TIMEOUT":
            return Verdict(error=failure(system, request, response, TransientError), retry=True)
        return None

    return classify


_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")


def observe_salesforce(response: httpx.Response, limiter: RateLimiter) -> None:
    """Feed the limiter the org's daily use from ``Sforce-Limit-Info``."""
    found = _USAGE.search(response.headers.get("sforce-limit-info", ""))
    if found:
        used, limit = int(found.group(1)), int(found.group(2))
        limiter.observe(limit=limit, remaining=limit - used, seconds=DAY)


# -- the operations ------------------------------------------------------------------------------


class _Salesforce(HttpOperations):
    def __init__(
        self,
        client: httpx.Client | httpx.AsyncClient,
        *,
        sobject: str,
        fields: Sequence[str],
        auth: httpx.Auth | None = None,
        access_token: str | None = None,
        instance_url: str | None = None,
        name: str = "salesforce",
        api_version: str = "61.0",
        daily_limit: int = 100_000,
        account: str | None = None,
        limiter: RateLimiter | None = None,
        retry: HttpRetry | None = None,
        external_id_field: str | None = None,
        incremental: bool = True,
        types: Mapping[str, str] | None = None,
        timer: Timer | None = None,
        clock: Clock | None = None,
    ) -> None:
        if (auth is None) == (access_token is None):
            raise ConfigurationError("Salesforce: give exactly one of auth= or access_token=")
        if access_token is not None and instance_url is None:
            raise ConfigurationError("Salesforce: access_token= needs instance_url=")
        for label in (sobject, *fields, *([external_id_field] if external_id_field else [])):
            if not _NAME.match(label):
                raise ConfigurationError(f"Salesforce: {label!r} is not an API name")
        if not fields:
            raise ConfigurationError("Salesforce: fields= names the fields to sync")
        self.name = name
        self.sobject = sobject
        self.fields = [f for f in dict.fromkeys(fields) if f not in ("Id", "SystemModstamp")]
        self.external_id_field = external_id_field
        self.version = f"v{api_version}"
        self.clock: Clock = clock or SystemClock()
        #: Set when a deletion window reached past ``getDeleted``'s ``earliestDateAvailable``.
        self.deletion_gap: tuple[datetime, datetime] | None = None
        if limiter is None:

            def make() -> RateLimiter:
                return RateLimiter([Window(daily_limit, DAY)], timer=timer, name=f"{name} API")

            limiter = shared_limiter(f"salesforce:{account}", make) if account else make()
        self._instance_url = instance_url.rstrip("/") if instance_url else None
        self._auth = auth
        base = instance_url or f"https://{INSTANCE}"
        self.api = HttpApi(
            client,
            system=name,
            base_url=base,
            auth=auth if auth is not None else BearerToken(str(access_token)),
            limiter=limiter,
            retry=retry,
            classifier=classify_salesforce(name),
            observe=observe_salesforce,
            timer=timer,
            clock=self.clock,
        )
        self.capabilities = Capabilities(
            page_size=QUERY_PAGE,
            max_read_batch=READ_BATCH,
            max_write_batch=WRITE_BATCH,
            incremental=incremental,
            field_timestamps=False,
            describes_fields=True,
            finds_created=external_id_field is not None,
            retries_requests=True,
        )
        self._types: dict[str, str] | None = dict(types) if types is not None else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, sobject={self.sobject!r})"

    def record_url(self, key: str) -> str | None:
        """The record's page in Salesforce (``{instance_url}/lightning/r/{sobject}/{id}/view``),
        or ``None`` while the org's URL is not known (an ``auth`` whose token answer, which
        names it, has not come yet). No request is made."""
        base = self._instance_url
        if base is None:
            token = getattr(self._auth, "token", None)
            found = getattr(token, "instance_url", None)
            base = found.rstrip("/") if isinstance(found, str) and found else None
        if base is None or not key:
            return None
        return f"{base}/lightning/r/{self.sobject}/{quote(str(key), safe='')}/view"

    def _data(self, suffix: str) -> str:
        return f"/services/data/{self.version}{suffix}"

    # -- types --------------------------------------------------------------------------------

    def describe_op(self) -> Op[Sequence[FieldInfo]]:
        path = self._data(f"/sobjects/{self.sobject}/describe")
        reply = yield self.api.request("GET", path, endpoint=f"GET {path}")
        fields = [
            field_info(f)
            for f in reply.json().get("fields", [])
            if isinstance(f, Mapping) and isinstance(f.get("name"), str)
        ]
        self._types = {f.name: f.type for f in fields}
        return fields

    def _ensure_types(self) -> Op[dict[str, str]]:
        if self._types is None:
            yield from self.describe_op()
        assert self._types is not None
        return self._types

    def _columns(self) -> list[str]:
        cols = ["Id", "SystemModstamp", *self.fields]
        if self.external_id_field:
            cols.append(self.external_id_field)
        return list(dict.fromkeys(cols))

    def _record(self, row: Mapping[str, Any]) -> Record:
        types = self._types or {}
        stamp = row.get("SystemModstamp")
        return Record(
            key=str(row["Id"]),
            fields={
                name: decode_value(types.get(name), row[name])
                for name in self.fields
                if name in row
            },
            modified_at=parse_datetime(stamp) if isinstance(stamp, str) and stamp else None,
            deleted=bool(row.get("IsDeleted", False)),
        )

    # -- listing -----------------------------------------------------------------------------

    def _query(self, soql: str, *, all_rows: bool = False) -> httpx.Request:
        path = self._data("/queryAll/" if all_rows else "/query/")
        return self.api.request(
            "GET",
            path,
            params={"q": soql},
            headers={"Sforce-Query-Options": f"batchSize={QUERY_PAGE}"},
            endpoint=f"GET {path.rstrip('/')}",
        )

    def list_op(self, *, since: datetime | None, cursor: str | None) -> Op[Page]:
        yield from self._ensure_types()
        cols = ", ".join(self._columns())
        if cursor is None:
            if since is None or not self.capabilities.incremental:
                request = self._query(f"SELECT {cols} FROM {self.sobject} ORDER BY Id")  # noqa: S608
            else:
                request = self._query(
                    f"SELECT {cols} FROM {self.sobject} WHERE SystemModstamp >= "  # noqa: S608
                    f"{soql_datetime(since)} ORDER BY SystemModstamp, Id"
                )
            return (yield from self._page(request, since))
        if cursor.startswith(("q:", "x:")):
            # "x:" continues the deleted rows of a queryAll: its nextRecordsUrl says "query"
            # like any other (the REST API guide), so the mode travels in the cursor.
            request = self.api.request(
                "GET",
                cursor[2:],
                headers={"Sforce-Query-Options": f"batchSize={QUERY_PAGE}"},
                endpoint=f"GET {self._data('/query')}/{{locator}}",
            )
            return (yield from self._page(request, since, deleted_rows=cursor[0] == "x"))
        if cursor == "d:" and since is not None:
            return (yield from self._deleted(since))
        raise ConfigurationError(f"{self.name}: not a cursor of this connector: {cursor!r}")

    def _page(
        self, request: httpx.Request, since: datetime | None, *, deleted_rows: bool = False
    ) -> Op[Page]:
        reply = yield request
        body = reply.json()
        rows = [r for r in body.get("records", []) if isinstance(r, Mapping)]
        if deleted_rows:
            records = [
                Record(key=str(r["Id"]), deleted=True, modified_at=self._stamp(r)) for r in rows
            ]
        else:
            records = [self._record(r) for r in rows]
        following = body.get("nextRecordsUrl")
        if not body.get("done", True) and following:
            return Page(records=records, next_cursor=f"{'x' if deleted_rows else 'q'}:{following}")
        if since is not None and not deleted_rows and self.capabilities.incremental:
            return Page(records=records, next_cursor="d:")  # then the deletions
        return Page(records=records)

    @staticmethod
    def _stamp(row: Mapping[str, Any]) -> datetime | None:
        stamp = row.get("SystemModstamp")
        return parse_datetime(stamp) if isinstance(stamp, str) and stamp else None

    def _deleted(self, since: datetime) -> Op[Page]:
        now = self.clock.now()
        # getDeleted takes whole minutes, a window of at least one, starting no more than
        # 15 days back; an earlier start only reads more, never less.
        start = min(since, now - timedelta(minutes=2))
        earliest: datetime | None = None
        body: Mapping[str, Any] = {}
        if start < now - DELETED_WINDOW:
            earliest = now - DELETED_WINDOW
        else:
            path = self._data(f"/sobjects/{self.sobject}/deleted/")
            query = urlencode({"start": soql_datetime(start), "end": soql_datetime(now)})
            try:
                reply = yield self.api.request(
                    "GET", f"{path}?{query}", endpoint=f"GET {path.rstrip('/')}"
                )
            except PermanentError as exc:
                if exc.code != "INVALID_REPLICATION_DATE":
                    raise
                earliest = now - DELETED_WINDOW
            else:
                body = reply.json()
                stated = body.get("earliestDateAvailable")
                if isinstance(stated, str) and stated and parse_datetime(stated) > start:
                    earliest = parse_datetime(stated)
        if earliest is None:
            return self._deleted_page(body)
        # getDeleted no longer covers the window: what the recycle bin still holds comes
        # from queryAll; what was purged before is for the next full sweep to find.
        self.deletion_gap = (since, earliest)
        log.warning(
            "%s: deletions since %s are beyond getDeleted's window (earliest %s);"
            " reading IsDeleted rows with queryAll, the next full sweep finds the rest",
            self.name,
            since.isoformat(),
            earliest.isoformat(),
        )
        request = self._query(
            f"SELECT Id, SystemModstamp FROM {self.sobject} WHERE IsDeleted = true"  # noqa: S608
            f" AND SystemModstamp >= {soql_datetime(since)} ORDER BY SystemModstamp, Id",
            all_rows=True,
        )
        reply = yield request
        answer = reply.json()
        rows = [r for r in answer.get("records", []) if isinstance(r, Mapping)]
        records = [Record(key=str(r["Id"]), deleted=True, modified_at=self._stamp(r)) for r in rows]
        following = answer.get("nextRecordsUrl")
        if not answer.get("done", True) and following:
            return Page(records=records, next_cursor=f"x:{following}")
        return Page(records=records)

    @staticmethod
    def _deleted_page(body: Mapping[str, Any]) -> Page:
        records = [
            Record(
                key=str(d["id"]),
                deleted=True,
                modified_at=parse_datetime(d["deletedDate"])
                if isinstance(d.get("deletedDate"), str)
                else None,
            )
            for d in body.get("deletedRecords", [])
            if isinstance(d, Mapping) and d.get("id")
        ]
        return Page(records=records)

    # -- reading -----------------------------------------------------------------------------

    def read_op(self, keys: Sequence[str]) -> Op[Sequence[Record]]:
        yield from self._ensure_types()
        path = self._data(f"/composite/sobjects/{self.sobject}")
        out: list[Record] = []
        for chunk in chunked(list(keys), READ_BATCH):
            reply = yield self.api.request(
                "POST",
                path,
                json={"ids": list(chunk), "fields": self._columns()},
                endpoint=f"POST {path}",
                idempotent=True,
            )
            rows = reply.json()
            # Ids that do not exist (or were deleted) come back as null: simply absent.
            out.extend(self._record(r) for r in rows or [] if isinstance(r, Mapping))
        return out

    def find_created_op(self, idempotency_keys: Sequence[str]) -> Op[Mapping[str, Record]]:
        field = self.external_id_field
        if field is None:
            raise ConfigurationError(f"{self.name}: find_created needs external_id_field=")
        yield from self._ensure_types()
        found: dict[str, Record] = {}
        cols = ", ".join(self._columns())
        for chunk in chunked(list(idempotency_keys), 200):
            keys = ", ".join(soql_literal(k) for k in chunk)
            soql = f"SELECT {cols} FROM {self.sobject} WHERE {field} IN ({keys})"  # noqa: S608
            reply = yield self._query(soql)
            body = reply.json()
            while True:
                for row in body.get("records", []):
                    if isinstance(row, Mapping) and isinstance(row.get(field), str):
                        found[row[field]] = self._record(row)
                following = body.get("nextRecordsUrl")
                if body.get("done", True) or not following:
                    break
                reply = yield self.api.request(
                    "GET", following, endpoint=f"GET {self._data('/query')}/{{locator}}"
                )
                body = reply.json()
        return found

    # -- writing -----------------------------------------------------------------------------

    def _payload(self, change: Change) -> dict[str, Any]:
        types = self._types or {}
        body: dict[str, Any] = {"attributes": {"type": self.sobject}}
        for name, value in change.fields.items():
            body[name] = encode_value(types.get(name), value)
        if change.op is ChangeOp.UPDATE:
            body["Id"] = change.key
        elif self.external_id_field and change.idempotency_key:
            body[self.external_id_field] = change.idempotency_key
        return body

    def write_op(self, changes: Sequence[Change]) -> Op[Sequence[WriteResult]]:
        yield from self._ensure_types()
        results = WriteResults(changes)
        groups: dict[ChangeOp, list[int]] = {}
        for index, change in enumerate(changes):
            if change.op is not ChangeOp.CREATE and not change.key:
                results.fail(index, f"a {change.op.value} needs the record's key")
                continue
            groups.setdefault(change.op, []).append(index)
        path = self._data("/composite/sobjects")
        for op, indexes in groups.items():
            for chunk in chunked(indexes, WRITE_BATCH):
                batch = list(chunk)
                if op is ChangeOp.DELETE:
                    ids = ",".join(str(changes[i].key) for i in batch)
                    request = self.api.request(
                        "DELETE",
                        path,
                        params={"ids": ids, "allOrNone": "false"},
                        endpoint=f"DELETE {path}",
                    )
                else:
                    request = self.api.request(
                        "POST" if op is ChangeOp.CREATE else "PATCH",
                        path,
                        json={
                            "allOrNone": False,
                            "records": [self._payload(changes[i]) for i in batch],
                        },
                        endpoint=f"{'POST' if op is ChangeOp.CREATE else 'PATCH'} {path}",
                        # An update sets values: safe to repeat. A create is not, unless the
                        # external id field makes a repeat fail as a duplicate (then
                        # find_created finds the first one).
                        idempotent=op is ChangeOp.UPDATE,
                    )
                try:
                    reply = yield request
                except AuthenticationError:
                    raise  # credentials refused: the whole call fails, not each record
                except PermanentError as exc:
                    for i in batch:
                        results.fail(i, str(exc), retryable=False)
                    continue
                self._take_results(op, batch, reply.json(), results)
        return results.done()

    def _take_results(
        self, op: ChangeOp, batch: list[int], answer: Any, results: WriteResults
    ) -> None:
        rows = answer if isinstance(answer, list) else []
        for index, row in zip(batch, rows, strict=False):
            if not isinstance(row, Mapping):
                continue
            if row.get("success"):
                results.ok(index, key=str(row["id"]) if row.get("id") else None)
                continue
            errors = [e for e in row.get("errors") or [] if isinstance(e, Mapping)]
            codes = [str(e.get("statusCode") or "") for e in errors]
            if op is ChangeOp.DELETE and codes and set(codes) <= {"ENTITY_IS_DELETED"}:
                results.ok(index)  # already gone: the delete is done
                continue
            text = "; ".join(
                f"{e.get('statusCode')}: {e.get('message')}"
                + (f" ({', '.join(map(str, e['fields']))})" if e.get("fields") else "")
                for e in errors
            )
            results.fail(index, text or "rejected", retryable=bool(set(codes) & RETRYABLE_CODES))
        missing = [index for index in batch if index in set(results.pending())]
        if missing and op is ChangeOp.CREATE:
            # A create the answer says nothing about may have been made: its outcome is
            # unknown (syncrecon's create intents look it up), not a failure.
            raise TransientError(
                f"{self.name}: the answer has no result for {len(missing)} of {len(batch)}"
                " creates (the request may have been applied)",
                system=self.name,
            )
        for index in missing:
            results.fail(index, "the answer has no result for this record", retryable=True)


class SalesforceConnector(_Salesforce, HttpConnector):
    """Salesforce sObject records over an ``httpx.Client`` (see the module documentation).

    :param client: your ``httpx.Client``.
    :param sobject: the sObject's API name (``Opportunity``, ``Invoice__c``).
    :param fields: the fields to sync (``Id`` and ``SystemModstamp`` are always read).
    :param auth: :func:`jwt_bearer`, :func:`client_credentials` or any ``httpx.Auth``; or
        ``access_token`` with ``instance_url`` for a session you already have.
    :param api_version: the REST API version (``"61.0"``).
    :param daily_limit: the org's daily API allocation, until ``Sforce-Limit-Info`` says.
    :param account: the org id: connectors of one org in this process then share one
        limiter; without it each connector has its own.
    :param external_id_field: an External ID field that keeps each create's idempotency key.
    """


class AsyncSalesforceConnector(_Salesforce, AsyncHttpConnector):
    """:class:`SalesforceConnector` over an ``httpx.AsyncClient``, with ``async def`` methods."""
