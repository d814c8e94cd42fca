"""An in-process emulator of the Salesforce REST API, for offline tests of Salesforce connectors.

:class:`SalesforceEmulator` answers the documented request and response shapes of the REST API
(``/services/data/vXX.X/...``) and of the OAuth 2.0 token endpoint, so a connector written
against Salesforce's documentation runs against it unchanged:

* OAuth 2.0 JWT bearer flow and client credentials flow (``/services/oauth2/token``); every data
  call checks ``Authorization: Bearer``, and sessions expire after inactivity on the
  emulator's clock (401 ``INVALID_SESSION_ID``).
* ``query`` / ``queryAll`` with the SOQL subset a sync connector uses, 2,000-record batches
  (``Sforce-Query-Options: batchSize=``) and ``nextRecordsUrl`` query locators; ``COUNT()``.
* sObject Collections: retrieve (GET and POST), create, update and delete, with per-record
  results in input order and ``allOrNone`` roll-back; single-record GET/POST/PATCH/DELETE.
* ``describe``, global describe, ``deleted`` (getDeleted) and ``updated`` (getUpdated),
  ``limits``, a rolling 24-hour API allocation (``Sforce-Limit-Info``; 403
  ``REQUEST_LIMIT_EXCEEDED`` past it).
* Deterministic fault injection: failed calls, lost responses (applied, then a read timeout),
  slow query pages, query timeouts.

Everything that needs the time reads the injected clock, so tests run on virtual time.

A query locator (``nextRecordsUrl``) keeps the ids that matched when the query ran and lives two
days on that clock; each page shows those records' values when it is fetched (records purged in
between are left out, so a page can be short).

Two ways in: :meth:`SalesforceEmulator.transport` gives an ``httpx.MockTransport`` for
``httpx.Client`` and ``httpx.AsyncClient``; the emulator is also an ASGI 3 application (for
``httpx.ASGITransport`` or uvicorn). Lost responses (:meth:`~SalesforceEmulator.lose_response_next`)
need the transport: in ASGI mode they are not consumed.

Not emulated: relationship queries and sub-queries, aggregate functions other than ``COUNT()``,
``GROUP BY``, date literals such as ``TODAY`` or ``LAST_N_DAYS:n``, SOSL, Bulk API, upsert by
external id, composite and batch resources, triggers, validation rules, sharing and field-level
security, record types, the two-hour purge of large delete logs, the per-app API quota,
duplicate-id checks within one collection request and ``If-Modified-Since`` on describe.
Error ``message`` texts follow Salesforce's where they are documented or widely quoted; match
on ``errorCode`` (``error`` for OAuth), not on the message.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NoReturn
from urllib.parse import parse_qsl

import attrs
import httpx

from .._clock import Clock, SystemClock

__all__ = [
    "SalesforceEmulator",
    "SalesforceField",
    "SalesforceRequest",
    "default_salesforce_objects",
    "make_jwt_assertion",
    "make_test_key_pair",
]

FIELD_TYPES = frozenset(
    {
        "id",
        "string",
        "textarea",
        "picklist",
        "multipicklist",
        "currency",
        "double",
        "int",
        "percent",
        "boolean",
        "date",
        "datetime",
        "email",
        "phone",
        "url",
        "reference",
    }
)
_TEXT = frozenset(
    {"string", "textarea", "picklist", "multipicklist", "email", "phone", "url", "reference", "id"}
)
_FOLDED = _TEXT - {"id", "reference"}  # compared and sorted without regard to case
_NUMBERS = frozenset({"currency", "double", "percent", "int"})
_DEFAULT_LENGTH = {
    "id": 18,
    "reference": 18,
    "string": 255,
    "textarea": 255,
    "picklist": 255,
    "multipicklist": 4099,
    "email": 80,
    "phone": 40,
    "url": 255,
}
_DEFAULT_PRECISION = {"currency": (18, 2), "double": (18, 6), "percent": (3, 0)}
_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "currency": "xsd:double",
    "double": "xsd:double",
    "percent": "xsd:double",
    "int": "xsd:int",
    "boolean": "xsd:boolean",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}
_SYSTEM_FIELDS = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")
_STANDARD_PREFIXES = {
    "Account": "001",
    "Contact": "003",
    "Opportunity": "006",
    "User": "005",
    "Lead": "00Q",
    "Task": "00T",
    "Event": "00U",
    "Case": "500",
    "Campaign": "701",
    "Contract": "800",
    "Order": "801",
    "Product2": "01t",
}
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # in ASCII order
_ID_RE = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
_VERSION_RE = re.compile(r"/services/data/v(\d{2,3}\.\d)(/.*)?")
_BATCH_DEFAULT = 2000
_BATCH_MIN = 200
_RETRIEVE_MAX = 2000
_WRITE_MAX = 200
_CHUNK_MAX = 10
_LOCATOR_LIFETIME = timedelta(days=2)
_JWT_LEEWAY = timedelta(seconds=30)
_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_LOGIN_HOSTS = frozenset({"login.salesforce.com", "test.salesforce.com"})
_JSON = "application/json;charset=UTF-8"

_LIMIT_MESSAGE = "TotalRequests Limit exceeded."
_BURST_MESSAGE = "ConcurrentPerOrgLongTxn Limit exceeded."
_ROLLED_BACK = (
    "Record rolled back because not all records were valid and the request was using "
    "AllOrNone header"
)
_DEFAULT_FAULT_BODIES: dict[int, tuple[str, str]] = {
    400: ("INVALID_OPERATION", "The request could not be completed."),
    401: ("INVALID_SESSION_ID", "Session expired or invalid"),
    403: ("REQUEST_LIMIT_EXCEEDED", _LIMIT_MESSAGE),
    404: ("NOT_FOUND", "The requested resource does not exist"),
    500: ("UNKNOWN_EXCEPTION", "An unexpected error occurred. Please try again."),
    502: ("SERVER_UNAVAILABLE", "Bad gateway."),
    503: ("SERVER_UNAVAILABLE", "The server is unavailable. Please try again later."),
}


# --------------------------------------------------------------------------------------------
# Values that cross the boundary


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class SalesforceField:
    """One field of an emulated sObject, as ``describe`` reports it.

    ``type`` is one of the describe types (``id``, ``string``, ``textarea``, ``picklist``,
    ``multipicklist``, ``currency``, ``double``, ``int``, ``percent``, ``boolean``, ``date``,
    ``datetime``, ``email``, ``phone``, ``url``, ``reference``). ``picklist`` lists the active
    values and ``inactive_picklist`` the inactive ones; a ``restricted`` picklist refuses
    anything else (``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST``). A field that is not
    ``nillable`` and is ``createable`` is required on create (``REQUIRED_FIELD_MISSING``).
    ``length`` (text: 255, email 80, phone 40), ``precision`` and ``scale`` (currency 18/2,
    double 18/6, percent 3/0) default by type; numbers are rounded half-up to the scale.
    """

    name: str
    type: str = attrs.field(default="string", validator=attrs.validators.in_(FIELD_TYPES))
    label: str | None = None
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    picklist: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    inactive_picklist: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    restricted: bool = False
    default: str | None = None
    reference_to: tuple[str, ...] = attrs.field(default=(), converter=_strings)

    @property
    def max_length(self) -> int:
        """The maximum length of a text value (0 for types without one)."""
        if self.length is not None:
            return self.length
        return _DEFAULT_LENGTH.get(self.type, 0)

    @property
    def filterable(self) -> bool:
        """Whether SOQL may filter or sort on it (long text areas may not)."""
        return not (self.type == "textarea" and self.max_length > 255)

    def describe(self) -> dict[str, Any]:
        """The field as the describe sObject resource reports it."""
        precision, scale = _DEFAULT_PRECISION.get(self.type, (0, 0))
        picklist = [
            {
                "active": True,
                "defaultValue": value == self.default,
                "label": value,
                "validFor": None,
                "value": value,
            }
            for value in self.picklist
        ] + [
            {"active": False, "defaultValue": False, "label": v, "validFor": None, "value": v}
            for v in self.inactive_picklist
        ]
        system = self.name in _SYSTEM_FIELDS
        return {
            "name": self.name,
            "label": self.label or _label(self.name),
            "type": self.type,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"),
            "length": self.max_length,
            "byteLength": self.max_length * 3,
            "precision": self.precision if self.precision is not None else precision,
            "scale": self.scale if self.scale is not None else scale,
            "digits": 9 if self.type == "int" else 0,
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "defaultedOnCreate": system or self.type == "boolean",
            "calculated": False,
            "custom": self.name.endswith("__c"),
            "externalId": False,
            "idLookup": self.name == "Id",
            "unique": False,
            "filterable": self.filterable,
            "sortable": self.filterable and self.type != "multipicklist",
            "picklistValues": picklist,
            "restrictedPicklist": self.restricted,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.name[:-2] if self.type == "reference" else None,
            "defaultValue": None,
        }


@attrs.frozen(kw_only=True)
class SalesforceRequest:
    """One HTTP request the emulator answered: method, path, status and endpoint name."""

    method: str
    path: str
    status: int
    endpoint: str
    at: datetime


def _label(name: str) -> str:
    base = name.removesuffix("__c")
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", base).replace("_", " ")


def _system_fields() -> list[SalesforceField]:
    def read_only(name: str, kind: str) -> SalesforceField:
        return SalesforceField(
            name=name, type=kind, nillable=False, createable=False, updateable=False
        )

    return [
        read_only("Id", "id"),
        read_only("IsDeleted", "boolean"),
        read_only("CreatedDate", "datetime"),
        read_only("LastModifiedDate", "datetime"),
        read_only("SystemModstamp", "datetime"),
    ]


def default_salesforce_objects() -> dict[str, list[SalesforceField]]:
    """The sObjects an emulator has when none are given: Opportunity, Account and Contact.

    Opportunity: ``Name`` (string, required), ``StageName`` (restricted picklist, required,
    with an inactive value ``Perception Analysis``), ``Amount`` (currency), ``CloseDate``
    (date, required), ``Description`` (long text area), ``Tags__c`` (restricted multi-select
    picklist with an inactive value ``Legacy``). Account: ``Name``, ``Industry``, ``Website``,
    ``Phone``, ``AnnualRevenue``, ``NumberOfEmployees``. Contact: ``FirstName``, ``LastName``,
    ``Email``, ``Phone``, ``AccountId``. Extend it: ``{**default_salesforce_objects(), ...}``.
    """
    stages = (
        "Prospecting",
        "Qualification",
        "Needs Analysis",
        "Value Proposition",
        "Proposal/Price Quote",
        "Negotiation/Review",
        "Closed Won",
        "Closed Lost",
    )
    return {
        "Opportunity": [
            SalesforceField(name="Name", length=120, nillable=False),
            SalesforceField(
                name="StageName",
                type="picklist",
                picklist=stages,
                inactive_picklist=("Perception Analysis",),
                restricted=True,
                nillable=False,
                default="Prospecting",
            ),
            SalesforceField(name="Amount", type="currency"),
            SalesforceField(name="CloseDate", type="date", nillable=False),
            SalesforceField(name="Description", type="textarea", length=32000),
            SalesforceField(
                name="Tags__c",
                type="multipicklist",
                label="Tags",
                picklist=("Renewal", "Upsell", "Partner", "Enterprise"),
                inactive_picklist=("Legacy",),
                restricted=True,
            ),
        ],
        "Account": [
            SalesforceField(name="Name", nillable=False),
            SalesforceField(
                name="Industry",
                type="picklist",
                picklist=("Agriculture", "Banking", "Technology", "Retail", "Other"),
            ),
            SalesforceField(name="Website", type="url"),
            SalesforceField(name="Phone", type="phone"),
            SalesforceField(name="AnnualRevenue", type="currency"),
            SalesforceField(name="NumberOfEmployees", type="int"),
        ],
        "Contact": [
            SalesforceField(name="FirstName", length=40),
            SalesforceField(name="LastName", length=80, nillable=False),
            SalesforceField(name="Email", type="email"),
            SalesforceField(name="Phone", type="phone"),
            SalesforceField(name="AccountId", type="reference", reference_to=("Account",)),
        ],
    }


# --------------------------------------------------------------------------------------------
# Ids and times


def _suffix(id15: str) -> str:
    """The three characters that make a 15-character id case-insensitively unique."""
    out = ""
    for start in (0, 5, 10):
        bits = 0
        for position, char in enumerate(id15[start : start + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        out += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return out


def _make_id(prefix: str, number: int) -> str:
    digits = ""
    for _ in range(10):
        number, rest = divmod(number, 62)
        digits = _BASE62[rest] + digits
    id15 = f"{prefix}00{digits}"
    return id15 + _suffix(id15)


def _normal_id(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character id, or ``None`` if it is malformed."""
    if not _ID_RE.fullmatch(value):
        return None
    if len(value) == 15:
        return value + _suffix(value)
    if _suffix(value[:15]) != value[15:].upper():
        return None
    return value[:15] + _suffix(value[:15])


def _stamp(moment: datetime) -> str:
    """A datetime as Salesforce writes it: ``2026-01-01T00:00:00.000+0000`` (UTC)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _parse_datetime(text: str, *, naive_is_utc: bool) -> datetime | None:
    match = re.fullmatch(
        r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:?\d{2})?", text.strip()
    )
    if match is None:
        return None
    base, fraction, zone = match.groups()
    if zone is None and not naive_is_utc:
        return None
    micro = (fraction or ".0")[1:7].ljust(6, "0")
    zone = "+00:00" if zone in (None, "Z") else zone
    try:
        return datetime.fromisoformat(f"{base}.{micro}{zone}").astimezone(UTC)
    except ValueError:
        return None


def _parse_date(text: str) -> date | None:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# Errors


class _ApiError(Exception):
    """An error answered as ``[{"message", "errorCode"[, "fields"]}]`` with an HTTP status."""

    def __init__(
        self, status: int, code: str, message: str, fields: Sequence[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def body(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            entry["fields"] = list(self.fields)
        return [entry]


class _OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class _RecordError(Exception):
    """A per-record failure in a save result."""

    def __init__(self, code: str, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = list(fields)

    def entry(self) -> dict[str, Any]:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


def _not_found() -> _ApiError:
    return _ApiError(404, "NOT_FOUND", "The requested resource does not exist")


# --------------------------------------------------------------------------------------------
# Field values


class _Mismatch(Exception):
    pass


def _coerce(field: SalesforceField, value: Any) -> Any:
    """A value as stored (and sent in JSON) for ``field``; raises ``_Mismatch``."""
    if value is None:
        return None
    kind = field.type
    if kind in _TEXT:
        if isinstance(value, str):
            if kind in ("id", "reference"):
                return _normal_id(value) or value
            if kind == "multipicklist" and field.picklist:
                # Salesforce keeps a multi-select in its picklist's order, not the order
                # written (knowledge article 000231088); unknown values go last.
                known = {v: i for i, v in enumerate((*field.picklist, *field.inactive_picklist))}
                parts = [p for p in value.split(";") if p != ""]
                parts.sort(key=lambda p: known.get(p, len(known)))
                return ";".join(dict.fromkeys(parts))
            return value
        raise _Mismatch
    if kind in _NUMBERS:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, str):
            try:
                value = Decimal(value)
            except ArithmeticError as exc:
                raise _Mismatch from exc
        if kind == "int":
            if isinstance(value, int):
                return value
            if isinstance(value, float | Decimal) and value == int(value):
                return int(value)
            raise _Mismatch
        if isinstance(value, int | float | Decimal):
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")):
                raise _Mismatch
            scale = field.scale if field.scale is not None else _DEFAULT_PRECISION[kind][1]
            exact = Decimal(repr(number)).quantize(Decimal(1).scaleb(-scale), ROUND_HALF_UP)
            return float(exact)
        raise _Mismatch
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if kind == "date":
        if isinstance(value, datetime):
            raise _Mismatch
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, str) and (parsed := _parse_date(value)) is not None:
            return parsed.isoformat()
        raise _Mismatch
    # datetime
    if isinstance(value, datetime):
        return _stamp(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, str) and (moment := _parse_datetime(value, naive_is_utc=True)):
        return _stamp(moment)
    raise _Mismatch


def _json_type_name(value: Any) -> str:
    if isinstance(value, str):
        return "VALUE_STRING"
    if isinstance(value, bool):
        return "VALUE_TRUE" if value else "VALUE_FALSE"
    if isinstance(value, int):
        return "VALUE_NUMBER_INT"
    if isinstance(value, float):
        return "VALUE_NUMBER_FLOAT"
    if isinstance(value, list):
        return "START_ARRAY"
    return "START_OBJECT"


# --------------------------------------------------------------------------------------------
# The store


class _SObject:
    def __init__(self, name: str, key_prefix: str, fields: Sequence[SalesforceField]) -> None:
        self.name = name
        self.key_prefix = key_prefix
        self.fields: dict[str, SalesforceField] = {}  # lower-case name -> field
        for field in [*_system_fields(), *fields]:
            self.fields[field.name.lower()] = field
        self.records: dict[str, dict[str, Any]] = {}
        self.delete_log: dict[str, str] = {}  # id -> deletedDate
        self.numbers = itertools.count(1)
        self.purged_at: str | None = None
        self.purged: set[str] = set()  # ids of records deleted for good

    def field(self, name: str) -> SalesforceField | None:
        return self.fields.get(name.lower())

    def forget(self, record_id: str) -> None:
        """Delete a record from the Recycle Bin for good (its delete-log entry goes too)."""
        self.records.pop(record_id, None)
        self.delete_log.pop(record_id, None)
        self.purged.add(record_id)

    def booleans(self) -> list[str]:
        return [f.name for f in self.fields.values() if f.type == "boolean"]

    def new_id(self) -> str:
        return _make_id(self.key_prefix, next(self.numbers))

    def describe(self, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": _label(self.name),
            "labelPlural": _label(self.name) + "s",
            "keyPrefix": self.key_prefix,
            "custom": self.name.endswith("__c"),
            "createable": True,
            "updateable": True,
            "deletable": True,
            "undeletable": True,
            "queryable": True,
            "retrieveable": True,
            "replicateable": True,
            "searchable": True,
            "fields": [field.describe() for field in self.fields.values()],
            "childRelationships": [],
            "recordTypeInfos": [],
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }

    def summary(self, version: str) -> dict[str, Any]:
        described = self.describe(version)
        del described["fields"], described["childRelationships"], described["recordTypeInfos"]
        return described


@attrs.define
class _Session:
    username: str
    user_id: str
    expires_at: datetime


@attrs.define
class _Cursor:
    locator: str
    version: str
    sobject: str
    ids: list[str]
    fields: list[str]
    batch: int
    expires_at: datetime
    all_rows: bool


@attrs.define
class _Fault:
    status: int
    remaining: int
    path_contains: str | None
    body: Any
    headers: dict[str, str]


@attrs.define
class _Loss:
    remaining: int
    path_contains: str | None


# --------------------------------------------------------------------------------------------
# SOQL


_TOKEN_RE = re.compile(
    r"""
     (?P<ws>\s+)
    |(?P<string>'(?:[^'\\]|\\.)*')
    |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
    |(?P<date>\d{4}-\d{2}-\d{2}(?![\dT]))
    |(?P<baddate>\d{4}-\d{2}-\d{2}T[\d:.+-]*)
    |(?P<number>[+-]?\d+(?:\.\d+)?)
    |(?P<op>!=|<>|<=|>=|=|<|>)
    |(?P<punct>[(),])
    |(?P<ident>[A-Za-z_][A-Za-z0-9_.:]*)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_Predicate = Callable[[dict[str, Any]], bool]


@attrs.frozen
class _Token:
    kind: str  # string datetime date number op punct ident end
    text: str
    pos: int


@attrs.frozen
class _Literal:
    kind: str  # string number boolean null date datetime
    value: Any


@attrs.frozen
class _Order:
    field: SalesforceField
    descending: bool
    nulls_last: bool


@attrs.frozen
class _Query:
    sobject: _SObject
    fields: list[str]
    count: bool
    where: _Predicate | None
    order: list[_Order]
    limit: int | None
    offset: int


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None or match.lastgroup is None:
            raise _SoqlError(text, pos, text[pos : pos + 12].split(" ")[0], "MALFORMED_QUERY")
        if match.lastgroup != "ws":
            out.append(_Token(match.lastgroup, match.group(), pos))
        pos = match.end()
    out.append(_Token("end", "<EOF>", len(text)))
    return out


class _SoqlError(_ApiError):
    def __init__(self, query: str, pos: int, detail: str, code: str, plain: bool = False) -> None:
        line = f"unexpected token: '{detail}'" if not plain else detail
        message = f"\n{query}\n{' ' * pos}^\nERROR at Row:1:Column:{pos + 1}\n{line}"
        super().__init__(400, code, message)


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


class _Parser:
    """A recursive-descent parser for the SOQL subset; resolves names against the store."""

    def __init__(self, text: str, objects: Mapping[str, _SObject]) -> None:
        self.text = text
        self.objects = objects
        self.tokens = _tokens(text)
        self.at = 0
        self.sobject: _SObject | None = None

    # -- token helpers

    def peek(self) -> _Token:
        return self.tokens[self.at]

    def take(self) -> _Token:
        token = self.tokens[self.at]
        self.at = min(self.at + 1, len(self.tokens) - 1)
        return token

    def keyword(self, *words: str) -> bool:
        token = self.peek()
        if token.kind == "ident" and token.text.upper() in words:
            self.at += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            self.fail(self.peek())

    def expect_punct(self, char: str) -> None:
        token = self.take()
        if token.kind != "punct" or token.text != char:
            self.fail(token)

    def fail(self, token: _Token) -> NoReturn:
        raise _SoqlError(self.text, token.pos, token.text, "MALFORMED_QUERY")

    def error(self, token: _Token, code: str, message: str) -> _SoqlError:
        return _SoqlError(self.text, token.pos, message, code, plain=True)

    # -- grammar

    def parse(self) -> _Query:
        self.expect_keyword("SELECT")
        count = False
        names: list[_Token] = []
        if self.peek().text.upper() == "COUNT" and self.tokens[self.at + 1].text == "(":
            self.take()
            self.expect_punct("(")
            self.expect_punct(")")
            count = True
        else:
            names.append(self.field_token())
            while self.peek().text == ",":
                self.take()
                names.append(self.field_token())
        self.expect_keyword("FROM")
        source = self.take()
        if source.kind != "ident":
            self.fail(source)
        sobject = self.objects.get(source.text.lower())
        if sobject is None:
            raise self.error(
                source, "INVALID_TYPE", f"sObject type '{source.text}' is not supported."
            )
        self.sobject = sobject
        fields: list[str] = []
        for token in names:
            field = self.resolve(token)
            if field.name in fields:
                raise self.error(
                    token, "MALFORMED_QUERY", f"duplicate field selected: {field.name}"
                )
            fields.append(field.name)
        where = self.condition() if self.keyword("WHERE") else None
        order: list[_Order] = []
        if self.keyword("ORDER"):
            if count:
                self.fail(self.tokens[self.at - 1])
            self.expect_keyword("BY")
            order.append(self.order_item())
            while self.peek().text == ",":
                self.take()
                order.append(self.order_item())
        limit = self.number_after("LIMIT")
        offset = self.number_after("OFFSET")
        if offset is not None and offset > 2000:
            raise _ApiError(
                400, "NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000"
            )
        if self.peek().kind != "end":
            self.fail(self.peek())
        return _Query(sobject, fields, count, where, order, limit, offset or 0)

    def field_token(self) -> _Token:
        token = self.take()
        if token.kind != "ident" or token.text.upper() in ("FROM", "SELECT"):
            self.fail(token)
        return token

    def resolve(self, token: _Token) -> SalesforceField:
        assert self.sobject is not None
        field = self.sobject.field(token.text)
        if field is None:
            raise self.error(
                token,
                "INVALID_FIELD",
                f"No such column '{token.text}' on entity '{self.sobject.name}'. If you are "
                "attempting to use a custom field, be sure to append the '__c' after the "
                "custom field name.",
            )
        return field

    def number_after(self, word: str) -> int | None:
        if not self.keyword(word):
            return None
        token = self.take()
        if token.kind != "number" or not token.text.isdigit():
            self.fail(token)
        return int(token.text)

    def order_item(self) -> _Order:
        token = self.take()
        if token.kind != "ident":
            self.fail(token)
        field = self.resolve(token)
        if not field.filterable or field.type == "multipicklist":
            raise self.error(
                token, "INVALID_FIELD", f"field '{field.name}' can not be sorted in a query call"
            )
        descending = False
        if self.keyword("DESC"):
            descending = True
        else:
            self.keyword("ASC")
        nulls_last = descending
        if self.keyword("NULLS"):
            if self.keyword("LAST"):
                nulls_last = True
            else:
                self.expect_keyword("FIRST")
                nulls_last = False
        return _Order(field, descending, nulls_last)

    def condition(self) -> _Predicate:
        parts = [self.term()]
        joiner: str | None = None
        while self.peek().kind == "ident" and self.peek().text.upper() in ("AND", "OR"):
            token = self.take()
            word = token.text.upper()
            if joiner is not None and word != joiner:
                self.fail(token)  # SOQL needs parentheses to mix AND and OR
            joiner = word
            parts.append(self.term())
        if len(parts) == 1:
            return parts[0]
        if joiner == "AND":
            return lambda record: all(part(record) for part in parts)
        return lambda record: any(part(record) for part in parts)

    def term(self) -> _Predicate:
        if self.keyword("NOT"):
            inner = self.term()
            return lambda record: not inner(record)
        if self.peek().text == "(":
            self.take()
            inner = self.condition()
            self.expect_punct(")")
            return inner
        token = self.take()
        if token.kind != "ident":
            self.fail(token)
        field = self.resolve(token)
        if not field.filterable:
            raise self.error(
                token, "INVALID_FIELD", f"field '{field.name}' can not be filtered in query call"
            )
        operator = self.peek()
        if operator.kind == "op":
            self.take()
            return self.compare(field, operator.text, self.literal(field))
        negated = self.keyword("NOT")
        if self.keyword("IN"):
            values = self.literal_list(field)
            return _in(field, values, negated)
        if negated:
            self.fail(self.peek())
        if self.keyword("LIKE"):
            literal = self.literal(field)
            if field.type not in _FOLDED or literal.kind != "string":
                raise self.error(operator, "INVALID_QUERY_FILTER_OPERATOR", "invalid operator")
            return _like(field, literal.value)
        if self.peek().text.upper() in ("INCLUDES", "EXCLUDES"):
            word = self.take().text.upper()
            if field.type != "multipicklist":
                raise self.error(
                    operator,
                    "INVALID_QUERY_FILTER_OPERATOR",
                    "includes or excludes operator only valid on multipicklist field",
                )
            return _includes(field, self.literal_list(field), word == "EXCLUDES")
        token = self.peek()
        raise _SoqlError(self.text, token.pos, token.text, "MALFORMED_QUERY")

    def literal_list(self, field: SalesforceField) -> list[_Literal]:
        self.expect_punct("(")
        values = [self.literal(field)]
        while self.peek().text == ",":
            self.take()
            values.append(self.literal(field))
        self.expect_punct(")")
        return values

    def literal(self, field: SalesforceField) -> _Literal:
        token = self.take()
        literal: _Literal
        if token.kind == "string":
            literal = _Literal("string", _unquote(token.text))
        elif token.kind == "number":
            text = token.text
            literal = _Literal("number", float(text) if "." in text else int(text))
        elif token.kind == "date":
            if _parse_date(token.text) is None:
                self.fail(token)
            literal = _Literal("date", token.text)
        elif token.kind == "datetime":
            moment = _parse_datetime(token.text, naive_is_utc=False)
            if moment is None:
                self.fail(token)
            literal = _Literal("datetime", _stamp(moment))
        elif token.kind == "ident" and token.text.upper() in ("TRUE", "FALSE"):
            literal = _Literal("boolean", token.text.upper() == "TRUE")
        elif token.kind == "ident" and token.text.upper() == "NULL":
            literal = _Literal("null", None)
        else:
            self.fail(token)
        return self.check_type(field, literal, token)

    def check_type(self, field: SalesforceField, literal: _Literal, token: _Token) -> _Literal:
        if literal.kind == "null":
            return literal
        kind = field.type
        wanted = {
            "date": "date",
            "datetime": "datetime",
            "boolean": "boolean",
        }.get(kind, "number" if kind in _NUMBERS else "string")
        if literal.kind != wanted:
            quoted = (
                "should be enclosed in quotes"
                if wanted == "string"
                else ("should not be enclosed in quotes")
            )
            type_name = {"datetime": "dateTime"}.get(kind, kind)
            raise self.error(
                token,
                "INVALID_FIELD",
                f"value of filter criterion for field '{field.name}' must be of type "
                f"{type_name} and {quoted}",
            )
        if kind in ("id", "reference"):
            normal = _normal_id(literal.value)
            if normal is None:
                raise self.error(
                    token, "INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {literal.value}"
                )
            return _Literal("string", normal)
        return literal

    def compare(self, field: SalesforceField, op: str, literal: _Literal) -> _Predicate:
        name = field.name
        if literal.kind == "null":
            if op == "=":
                return lambda record: record.get(name) is None
            if op in ("!=", "<>"):
                return lambda record: record.get(name) is not None
            raise _ApiError(400, "MALFORMED_QUERY", f"invalid operator on null for {name}")
        fold = _folder(field)
        value = fold(literal.value)
        if op == "=":
            return lambda r: (x := r.get(name)) is not None and fold(x) == value
        if op in ("!=", "<>"):
            return lambda r: (x := r.get(name)) is None or fold(x) != value
        if field.type in ("boolean", "multipicklist"):
            raise _ApiError(
                400, "INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on field {name}"
            )
        if op == "<":
            return lambda r: (x := r.get(name)) is not None and fold(x) < value
        if op == "<=":
            return lambda r: (x := r.get(name)) is not None and fold(x) <= value
        if op == ">":
            return lambda r: (x := r.get(name)) is not None and fold(x) > value
        return lambda r: (x := r.get(name)) is not None and fold(x) >= value


def _same(value: Any) -> Any:
    return value


def _multi(value: Any) -> Any:
    return ";".join(sorted({part.strip().lower() for part in str(value).split(";")}))


def _folder(field: SalesforceField) -> Callable[[Any], Any]:
    if field.type == "multipicklist":
        return _multi
    if field.type in _FOLDED:
        return str.lower
    return _same


def _in(field: SalesforceField, literals: list[_Literal], negated: bool) -> _Predicate:
    name = field.name
    fold = _folder(field)
    values = {fold(lit.value) for lit in literals if lit.kind != "null"}
    with_null = any(lit.kind == "null" for lit in literals)

    def member(record: dict[str, Any]) -> bool:
        value = record.get(name)
        return with_null if value is None else fold(value) in values

    if negated:
        return lambda record: not member(record)
    return member


def _like(field: SalesforceField, pattern: str) -> _Predicate:
    regex = ""
    escaped = False
    for char in pattern:
        if escaped:
            regex += re.escape(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "%":
            regex += ".*"
        elif char == "_":
            regex += "."
        else:
            regex += re.escape(char)
    compiled = re.compile(regex, re.IGNORECASE | re.DOTALL)
    name = field.name
    return lambda r: (x := r.get(name)) is not None and compiled.fullmatch(x) is not None


def _includes(field: SalesforceField, literals: list[_Literal], exclude: bool) -> _Predicate:
    specs = [
        {part.strip().lower() for part in str(lit.value).split(";")}
        for lit in literals
        if lit.kind == "string"
    ]
    name = field.name

    def hit(record: dict[str, Any]) -> bool:
        value = record.get(name)
        have = {part.strip().lower() for part in value.split(";")} if value else set()
        return any(spec <= have for spec in specs)

    if exclude:
        return lambda record: not hit(record)
    return hit


def _picklist_rank(rank: Mapping[str, int]) -> Callable[[Any], Any]:
    def key(value: Any) -> Any:
        folded = str(value).lower()
        return (rank.get(folded, len(rank)), folded)

    return key


def _sort(rows: list[dict[str, Any]], order: Sequence[_Order]) -> None:
    for item in reversed(order):
        name = item.field.name
        fold = _folder(item.field)
        if item.field.type == "picklist":  # sorted in the picklist's defined order
            field = item.field
            rank = {v.lower(): i for i, v in enumerate((*field.picklist, *field.inactive_picklist))}
            fold = _picklist_rank(rank)
        # ranks: ascending puts rank 0 first; reverse=True puts it last
        null_rank = 0 if item.nulls_last == item.descending else 2

        def key(
            record: dict[str, Any],
            name: str = name,
            fold: Callable[[Any], Any] = fold,
            null_rank: int = null_rank,
        ) -> tuple[Any, ...]:
            value = record.get(name)
            return (null_rank,) if value is None else (1, fold(value))

        rows.sort(key=key, reverse=item.descending)


# --------------------------------------------------------------------------------------------
# The emulator


class SalesforceEmulator:
    """An in-process Salesforce org behind the documented REST API.

    Construct it with the sObjects and their fields (``objects``: name -> fields; the system
    fields ``Id``, ``IsDeleted``, ``CreatedDate``, ``LastModifiedDate`` and ``SystemModstamp``
    are added to every object; by default Opportunity, Account and Contact), a ``clock`` (every
    timestamp, session expiry, the 24-hour API window and the deleted-records window read it),
    and the limits to enforce. Reach it over HTTP through :meth:`transport` (an
    ``httpx.MockTransport``), as an ASGI 3 application, or call :meth:`handle` directly; set the
    test's data up with :meth:`add`, :meth:`edit`, :meth:`delete` and :meth:`bulk_add`.

    Sessions: register a JWT client (:meth:`register_jwt_client`) or a client-credentials client
    (:meth:`register_client_credentials`) and let the connector log in, or get a token directly
    with :meth:`issue_token`. A session expires after ``session_timeout`` without use.

    Every request is logged in :attr:`requests` and counted by endpoint in :attr:`calls`;
    :attr:`api_usage` is the rolling 24-hour count the ``Sforce-Limit-Info`` header reports.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        objects: Mapping[str, Sequence[SalesforceField]] | None = None,
        instance_url: str = "https://example.my.salesforce.com",
        login_url: str = "https://login.salesforce.com",
        daily_api_limit: int = 100_000,
        session_timeout: timedelta = timedelta(hours=2),
        deleted_retention: timedelta = timedelta(days=15),
        updated_retention: timedelta = timedelta(days=30),
        burst_limit: int | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.instance_url = instance_url.rstrip("/")
        self.login_url = login_url.rstrip("/")
        self.daily_api_limit = daily_api_limit
        self.session_timeout = session_timeout
        self.deleted_retention = deleted_retention
        self.updated_retention = updated_retention
        self.burst_limit = burst_limit
        self._sleep = sleep
        self._lock = threading.RLock()
        self._objects: dict[str, _SObject] = {}
        self._custom_prefixes = itertools.count(0)
        for name, fields in (
            objects if objects is not None else default_salesforce_objects()
        ).items():
            self.add_object(name, fields)
        self.org_id = _make_id("00D", 1)
        self._users: dict[str, str] = {}  # username -> user id
        self._jwt_clients: dict[str, tuple[str, str]] = {}  # consumer key -> (pem, username)
        self._secret_clients: dict[str, tuple[str, str]] = {}  # id -> (secret, username)
        self._sessions: dict[str, _Session] = {}
        self._tokens = itertools.count(1)
        self._cursors: dict[str, _Cursor] = {}
        self._locators = itertools.count(1)
        self._usage: collections.deque[datetime] = collections.deque()
        self._burst: collections.deque[datetime] = collections.deque()
        self._faults: list[_Fault] = []
        self._losses: list[_Loss] = []
        self._query_timeouts = 0
        self._page_delay = 0.0
        self.requests: list[SalesforceRequest] = []
        """Every request answered, in order."""
        self.calls: collections.Counter[str] = collections.Counter()
        """Requests answered by endpoint name (``query``, ``query_more``, ``describe``...)."""

    def __repr__(self) -> str:
        sizes = ", ".join(f"{o.name}: {len(o.records)}" for o in self._objects.values())
        return f"SalesforceEmulator({self.instance_url!r}, {sizes})"

    # -- set-up ------------------------------------------------------------------------------

    def add_object(
        self, name: str, fields: Sequence[SalesforceField] = (), *, key_prefix: str | None = None
    ) -> None:
        """Add an sObject (custom ones end in ``__c``) with its fields."""
        with self._lock:
            if key_prefix is None:
                key_prefix = _STANDARD_PREFIXES.get(name)
            if key_prefix is None:
                key_prefix = "a" + _make_id("", next(self._custom_prefixes))[10:12]
            self._objects[name.lower()] = _SObject(name, key_prefix, fields)

    def add_field(
        self,
        sobject: str,
        name: str,
        type: str = "string",
        *,
        picklist: Sequence[str] = (),
        inactive_picklist: Sequence[str] = (),
        restricted: bool = False,
        **options: Any,
    ) -> SalesforceField:
        """Add a field to an sObject (as an administrator would); return its definition."""
        field = SalesforceField(
            name=name,
            type=type,
            picklist=tuple(picklist),
            inactive_picklist=tuple(inactive_picklist),
            restricted=restricted,
            **options,
        )
        with self._lock:
            self._object(sobject).fields[name.lower()] = field
        return field

    def register_jwt_client(self, consumer_key: str, public_key_pem: str, username: str) -> None:
        """Register a connected app for the JWT bearer flow, pre-authorized for ``username``."""
        with self._lock:
            self._jwt_clients[consumer_key] = (public_key_pem, username)
            self._user_id(username)

    def register_client_credentials(
        self, client_id: str, client_secret: str, username: str = "integration@example.com"
    ) -> None:
        """Register a connected app for the client credentials flow, running as ``username``."""
        with self._lock:
            self._secret_clients[client_id] = (client_secret, username)
            self._user_id(username)

    def issue_token(self, username: str = "integration@example.com") -> str:
        """Start a session without the OAuth dance; return its access token."""
        with self._lock:
            return self._new_session(username)

    def expire_sessions(self) -> None:
        """End every session: the next data call with an old token answers 401."""
        with self._lock:
            self._sessions.clear()

    # -- the test's hands on the data ----------------------------------------------------------

    def add(self, sobject: str, fields: Mapping[str, Any] | None = None, **more: Any) -> str:
        """Create a record as a user would (no validation beyond names and types); its id."""
        with self._lock:
            obj = self._object(sobject)
            now = _stamp(self.clock.now())
            record = self._new_record(obj, now)
            record.update(self._values(obj, {**(fields or {}), **more}))
            obj.records[record["Id"]] = record
            return str(record["Id"])

    def bulk_add(
        self, sobject: str, n: int, factory: Callable[[int], Mapping[str, Any]]
    ) -> list[str]:
        """Create ``n`` records with ``factory(i)``'s fields, all stamped with one time."""
        with self._lock:
            obj = self._object(sobject)
            now = _stamp(self.clock.now())
            resolved: dict[str, SalesforceField] = {}
            ids: list[str] = []
            template = self._new_record(obj, now)
            for i in range(n):
                record = template.copy()
                record["Id"] = obj.new_id()
                for name, value in factory(i).items():
                    field = resolved.get(name)
                    if field is None:
                        field = resolved[name] = self._known(obj, name)
                    if type(value) is str and field.type in _FOLDED:
                        record[field.name] = value
                    else:
                        record[field.name] = self._value(field, value)
                obj.records[record["Id"]] = record
                ids.append(record["Id"])
            return ids

    def edit(self, sobject: str, id: str, automated: bool = False, **fields: Any) -> None:
        """Change a record. A user's edit moves ``LastModifiedDate`` and ``SystemModstamp``;
        an automated one (a workflow, a formula's recalculation) moves ``SystemModstamp``
        only, and with no fields it only touches it."""
        with self._lock:
            obj = self._object(sobject)
            record = obj.records[self._id(id)]
            record.update(self._values(obj, fields))
            now = _stamp(self.clock.now())
            record["SystemModstamp"] = now
            if not automated:
                record["LastModifiedDate"] = now

    def delete(self, sobject: str, id: str) -> None:
        """Delete a record as a user would: it goes to the Recycle Bin."""
        with self._lock:
            obj = self._object(sobject)
            self._soft_delete(obj, obj.records[self._id(id)], _stamp(self.clock.now()))

    def undelete(self, sobject: str, id: str) -> None:
        """Restore a record from the Recycle Bin."""
        with self._lock:
            obj = self._object(sobject)
            record = obj.records[self._id(id)]
            now = _stamp(self.clock.now())
            record.update(IsDeleted=False, SystemModstamp=now, LastModifiedDate=now)
            obj.delete_log.pop(record["Id"], None)

    def purge_recycle_bin(self, sobject: str | None = None) -> None:
        """Empty the Recycle Bin (of one sObject, or all): deleted records are gone from
        ``queryAll`` and ``earliestDateAvailable`` moves to now."""
        with self._lock:
            now = _stamp(self.clock.now())
            for obj in [self._object(sobject)] if sobject else list(self._objects.values()):
                for record_id in [i for i, r in obj.records.items() if r["IsDeleted"]]:
                    obj.forget(record_id)
                obj.purged_at = now

    purge = purge_recycle_bin

    def get(self, sobject: str, id: str) -> dict[str, Any]:
        """A copy of a record's fields (deleted ones too); ``KeyError`` if there is none."""
        with self._lock:
            obj = self._object(sobject)
            record = obj.records[self._id(id)]
            return {f.name: record.get(f.name) for f in obj.fields.values()}

    def records(self, sobject: str, *, include_deleted: bool = False) -> dict[str, dict[str, Any]]:
        """Copies of the records by id (those in the Recycle Bin only if asked)."""
        with self._lock:
            obj = self._object(sobject)
            names = [f.name for f in obj.fields.values()]
            return {
                record_id: {name: record.get(name) for name in names}
                for record_id, record in obj.records.items()
                if include_deleted or not record["IsDeleted"]
            }

    # -- faults ------------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        n: int = 1,
        path_contains: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``n`` requests (whose path contains ``path_contains``, if given)
        with ``status`` and ``body`` (default: Salesforce's error list for that status, e.g.
        403 ``REQUEST_LIMIT_EXCEEDED``), without applying them."""
        if body is None:
            code, message = _DEFAULT_FAULT_BODIES.get(status, ("UNKNOWN_EXCEPTION", "Error"))
            body = [{"message": message, "errorCode": code}]
        with self._lock:
            self._faults.append(_Fault(status, n, path_contains, body, dict(headers or {})))

    def lose_response_next(self, n: int = 1, path_contains: str | None = None) -> None:
        """Apply the next ``n`` requests (matching ``path_contains``), then raise
        ``httpx.ReadTimeout`` instead of answering. Only :meth:`transport` loses responses;
        :meth:`handle` and the ASGI application answer normally and leave the fault queued."""
        with self._lock:
            self._losses.append(_Loss(n, path_contains))

    def query_timeout_next(self, n: int = 1) -> None:
        """Answer the next ``n`` queries (first pages of ``query`` or ``queryAll``) with 400
        ``QUERY_TIMEOUT``."""
        with self._lock:
            self._query_timeouts += n

    def slow_pages(self, seconds: float) -> None:
        """Take ``seconds`` before answering each query page: calls the ``sleep`` given to the
        constructor, else advances the clock if it has ``advance()``, else sleeps. ``0`` ends
        it."""
        with self._lock:
            self._page_delay = float(seconds)

    # -- counters ------------------------------------------------------------------------------

    @property
    def api_usage(self) -> int:
        """API requests counted in the rolling 24-hour window."""
        with self._lock:
            self._prune_usage(self.clock.now())
            return len(self._usage)

    def reset_counters(self) -> None:
        """Forget the request log, the per-endpoint counts and the API usage."""
        with self._lock:
            self.requests.clear()
            self.calls.clear()
            self._usage.clear()
            self._burst.clear()

    # -- HTTP ------------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        """An ``httpx.MockTransport`` for ``httpx.Client`` and ``httpx.AsyncClient`` (any host:
        the login URL, the instance URL...). It honours :meth:`lose_response_next`."""
        return httpx.MockTransport(self._transport_handler)

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request (the core every front door calls)."""
        response, _lost = self._serve(request, can_lose=False)
        return response

    def _transport_handler(self, request: httpx.Request) -> httpx.Response:
        response, lost = self._serve(request, can_lose=True)
        if lost:
            raise httpx.ReadTimeout(
                "emulated read timeout (the request was applied)", request=request
            )
        return response

    async def __call__(
        self,
        scope: Mapping[str, Any],
        receive: Callable[[], Any],
        send: Callable[[Mapping[str, Any]], Any],
    ) -> None:
        """The ASGI 3 application (``httpx.ASGITransport(app=emulator)``, uvicorn)."""
        import anyio.to_thread

        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(bytes(k), bytes(v)) for k, v in scope.get("headers", [])]
        host = next((v.decode("latin-1") for k, v in headers if k.lower() == b"host"), None)
        if host is None:
            server = scope.get("server") or ("localhost", None)
            host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
        raw_path = scope.get("raw_path") or scope["path"].encode()
        url = f"{scope.get('scheme', 'http')}://{host}{raw_path.decode('latin-1')}"
        query = scope.get("query_string", b"")
        if query:
            url += "?" + query.decode("latin-1")
        request = httpx.Request(scope["method"], url, headers=headers, content=body)
        response = await anyio.to_thread.run_sync(self.handle, request)
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in response.headers.multi_items()
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.content})

    # -- dispatch ----------------------------------------------------------------------------

    def _serve(self, request: httpx.Request, *, can_lose: bool) -> tuple[httpx.Response, bool]:
        with self._lock:
            now = self.clock.now()
            path = request.url.path
            endpoint, version, rest = _endpoint(request.method, path)
            response = self._answer(request, now, endpoint, version, rest)
            self.requests.append(
                SalesforceRequest(
                    method=request.method,
                    path=path,
                    status=response.status_code,
                    endpoint=endpoint,
                    at=now,
                )
            )
            self.calls[endpoint] += 1
            lost = False
            if can_lose:
                for loss in self._losses:
                    if loss.remaining > 0 and (
                        loss.path_contains is None or loss.path_contains in path
                    ):
                        loss.remaining -= 1
                        lost = True
                        break
                self._losses = [loss for loss in self._losses if loss.remaining > 0]
            return response, lost

    def _answer(
        self,
        request: httpx.Request,
        now: datetime,
        endpoint: str,
        version: str | None,
        rest: str,
    ) -> httpx.Response:
        path = request.url.path
        for fault in self._faults:
            if fault.remaining > 0 and (fault.path_contains is None or fault.path_contains in path):
                fault.remaining -= 1
                self._faults = [f for f in self._faults if f.remaining > 0]
                headers = self._limit_header() if version is not None else {}
                return _respond(fault.status, fault.body, {**headers, **fault.headers})
        if endpoint == "oauth_token":
            return self._token(request, now)
        if endpoint == "versions":
            return _respond(
                200, [{"label": "Emulated", "url": "/services/data/v61.0", "version": "61.0"}]
            )
        if version is None:
            return _respond(404, _not_found().body())
        if self._session(request, now) is None:
            return _respond(
                401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
            )
        self._prune_usage(now)
        if len(self._usage) >= self.daily_api_limit:
            return _respond(
                403,
                [{"message": _LIMIT_MESSAGE, "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
                self._limit_header(),
            )
        if self.burst_limit is not None:
            while self._burst and self._burst[0] <= now - timedelta(seconds=1):
                self._burst.popleft()
            if len(self._burst) >= self.burst_limit:
                return _respond(
                    403,
                    [{"message": _BURST_MESSAGE, "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
                    self._limit_header(),
                )
            self._burst.append(now)
        self._usage.append(now)
        try:
            status, body = self._route(request, now, endpoint, version, rest)
        except _ApiError as exc:
            status, body = exc.status, exc.body()
        return _respond(status, body, self._limit_header())

    def _route(
        self, request: httpx.Request, now: datetime, endpoint: str, version: str, rest: str
    ) -> tuple[int, Any]:
        params = request.url.params
        parts = [p for p in rest.split("/") if p]
        if endpoint == "unknown":
            raise _not_found()
        if endpoint == "method_not_allowed":
            raise _ApiError(
                405,
                "METHOD_NOT_ALLOWED",
                f"HTTP Method '{request.method}' not allowed for this resource",
            )
        if endpoint == "resources":
            base = f"/services/data/v{version}"
            return 200, {
                name: f"{base}/{name}"
                for name in ("sobjects", "query", "queryAll", "limits", "composite")
            }
        if endpoint in ("query", "queryAll"):
            return 200, self._query(request, now, version, all_rows=endpoint == "queryAll")
        if endpoint == "query_more":
            return 200, self._query_more(parts[1], now, version)
        if endpoint == "limits":
            return 200, self._limits(now)
        if endpoint == "global_describe":
            return 200, {
                "encoding": "UTF-8",
                "maxBatchSize": 200,
                "sobjects": [obj.summary(version) for obj in self._objects.values()],
            }
        if endpoint.startswith("collections_"):
            return self._collections(request, endpoint, now, version, parts)
        obj = self._objects.get(parts[1].lower())
        if obj is None:
            raise _not_found()
        if endpoint == "sobject_info":
            return 200, {"objectDescribe": obj.summary(version), "recentItems": []}
        if endpoint == "describe":
            return 200, obj.describe(version)
        if endpoint == "sobject_create":
            results = self._save_all([(obj, self._body_record(request, obj))], "create", False, now)
            result = results[0]
            if not result["success"]:
                raise _record_failure(result)
            return 201, result
        if endpoint in ("deleted", "updated"):
            return 200, self._replication(obj, endpoint, params, now)
        record_id = parts[2]
        if endpoint == "record_get":
            record = self._live_record(obj, record_id)
            names = self._field_names(obj, params.get("fields"))
            if "Id" not in names:
                names.insert(0, "Id")
            return 200, self._render(obj, record, names, version)
        if endpoint == "record_update":
            values = self._body_record(request, obj)
            values["Id"] = record_id
            result = self._save_all([(obj, values)], "update", False, now)[0]
            if not result["success"]:
                code = result["errors"][0]["statusCode"]
                if code in ("INVALID_CROSS_REFERENCE_KEY", "MALFORMED_ID"):
                    raise _not_found()
                if code == "ENTITY_IS_DELETED":
                    raise _ApiError(404, code, "entity is deleted")
                raise _record_failure(result)
            return 204, None
        if endpoint == "record_delete":
            result = self._delete_all([record_id], False, now)[0]
            if not result["success"]:
                code = result["errors"][0]["statusCode"]
                if code == "ENTITY_IS_DELETED":
                    raise _ApiError(404, code, "entity is deleted")
                raise _not_found()
            return 204, None
        raise _not_found()

    # -- auth --------------------------------------------------------------------------------

    def _user_id(self, username: str) -> str:
        if username not in self._users:
            self._users[username] = _make_id("005", len(self._users) + 1)
        return self._users[username]

    def _new_session(self, username: str) -> str:
        number = next(self._tokens)
        digest = hashlib.sha256(f"{self.org_id}:{number}".encode()).hexdigest()
        token = f"{self.org_id[:15]}!AQ{digest[:48]}"
        self._sessions[token] = _Session(
            username, self._user_id(username), self.clock.now() + self.session_timeout
        )
        return token

    def _session(self, request: httpx.Request, now: datetime) -> _Session | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or not token:
            return None
        session = self._sessions.get(token.strip())
        if session is None:
            return None
        if now >= session.expires_at:
            del self._sessions[token.strip()]
            return None
        session.expires_at = now + self.session_timeout
        return session

    def _token(self, request: httpx.Request, now: datetime) -> httpx.Response:
        if request.method != "POST":
            return _respond(
                405, {"error": "invalid_request", "error_description": "must use HTTP POST"}
            )
        form = dict(request.url.params.items())
        content_type = request.headers.get("content-type", "")
        if request.content and "json" not in content_type:
            form.update(parse_qsl(request.content.decode("utf-8", "replace")))
        try:
            grant = form.get("grant_type")
            if grant == _JWT_GRANT:
                body = self._jwt_grant(form.get("assertion", ""), now)
            elif grant == "client_credentials":
                body = self._client_grant(request, form, now)
            elif not grant:
                raise _OAuthError("invalid_request", "grant type not supported")
            else:
                raise _OAuthError("unsupported_grant_type", "grant type not supported")
        except _OAuthError as exc:
            return _respond(exc.status, {"error": exc.error, "error_description": exc.description})
        return _respond(200, body)

    def _token_body(self, username: str) -> dict[str, Any]:
        return {
            "access_token": self._new_session(username),
            "scope": "api",
            "instance_url": self.instance_url,
            "id": f"{self.login_url}/id/{self.org_id}/{self._user_id(username)}",
            "token_type": "Bearer",
        }

    def _jwt_grant(self, assertion: str, now: datetime) -> dict[str, Any]:
        try:
            import jwt
        except ImportError as exc:  # pragma: no cover - the jwt extra is missing
            raise _OAuthError("invalid_grant", "PyJWT is not installed") from exc
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise _OAuthError("invalid_grant", "invalid assertion") from exc
        client = self._jwt_clients.get(str(claims.get("iss", "")))
        if client is None:
            raise _OAuthError("invalid_client_id", "client identifier invalid")
        pem, username = client
        if header.get("alg") != "RS256":
            raise _OAuthError("invalid_grant", "invalid assertion")
        try:
            jwt.decode(
                assertion,
                pem,
                algorithms=["RS256"],
                options={
                    "verify_exp": False,
                    "verify_aud": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise _OAuthError("invalid_grant", "invalid assertion") from exc
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.login_url not in [str(a).rstrip("/") for a in audiences]:
            raise _OAuthError("invalid_grant", "audience is invalid")
        expires = claims.get("exp")
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            raise _OAuthError("invalid_grant", "invalid assertion")
        if datetime.fromtimestamp(expires, UTC) + _JWT_LEEWAY <= now:
            raise _OAuthError("invalid_grant", "expired authorization code")
        if claims.get("sub") != username:
            raise _OAuthError("invalid_grant", "user hasn't approved this consumer")
        return self._token_body(username)

    def _client_grant(
        self, request: httpx.Request, form: Mapping[str, str], now: datetime
    ) -> dict[str, Any]:
        if request.url.host in _LOGIN_HOSTS or (
            request.url.host == httpx.URL(self.login_url).host
            and request.url.host != httpx.URL(self.instance_url).host
        ):
            raise _OAuthError("invalid_request", "request not supported on this domain")
        client_id = form.get("client_id", "")
        secret = form.get("client_secret", "")
        if not client_id and "authorization" in request.headers:
            import base64

            scheme, _, encoded = request.headers["authorization"].partition(" ")
            if scheme.lower() == "basic":
                try:
                    client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
                except ValueError:
                    client_id = ""
        client = self._secret_clients.get(client_id)
        if client is None:
            raise _OAuthError("invalid_client_id", "client identifier invalid")
        if secret != client[0]:
            raise _OAuthError("invalid_client", "invalid client credentials")
        body = self._token_body(client[1])
        body["id"] = f"{self.instance_url}/id/{self.org_id}/{self._user_id(client[1])}"
        body["signature"] = hashlib.sha256(body["access_token"].encode()).hexdigest()[:44]
        body["issued_at"] = str(int(now.timestamp() * 1000))
        return body

    # -- limits --------------------------------------------------------------------------------

    def _prune_usage(self, now: datetime) -> None:
        cutoff = now - timedelta(hours=24)
        while self._usage and self._usage[0] <= cutoff:
            self._usage.popleft()

    def _limit_header(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={len(self._usage)}/{self.daily_api_limit}"}

    def _limits(self, now: datetime) -> dict[str, Any]:
        used = len(self._usage)
        return {
            "DailyApiRequests": {
                "Max": self.daily_api_limit,
                "Remaining": max(self.daily_api_limit - used, 0),
            },
            "ConcurrentPerOrgLongTxn": {"Max": 25, "Remaining": 25},
            "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            "DataStorageMB": {"Max": 1024, "Remaining": 1024},
            "FileStorageMB": {"Max": 1024, "Remaining": 1024},
        }

    # -- query -----------------------------------------------------------------------------

    def _pause(self) -> None:
        if self._page_delay <= 0:
            return
        if self._sleep is not None:
            self._sleep(self._page_delay)
            return
        advance = getattr(self.clock, "advance", None)
        if callable(advance):
            advance(self._page_delay)
        else:  # pragma: no cover - the wall clock
            time.sleep(self._page_delay)

    def _query(
        self, request: httpx.Request, now: datetime, version: str, *, all_rows: bool
    ) -> dict[str, Any]:
        text = request.url.params.get("q")
        if text is None or not text.strip():
            raise _ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        query = _Parser(text, self._objects).parse()
        if self._query_timeouts > 0:
            self._query_timeouts -= 1
            raise _ApiError(400, "QUERY_TIMEOUT", "Your query request was running for too long.")
        self._pause()
        obj = query.sobject
        self._expire_bin(obj, now)
        where = query.where
        rows = [
            record
            for record in obj.records.values()
            if (all_rows or not record["IsDeleted"]) and (where is None or where(record))
        ]
        if query.order:
            _sort(rows, query.order)
        rows = rows[query.offset :]
        if query.limit is not None:
            rows = rows[: query.limit]
        if query.count:
            return {"totalSize": len(rows), "done": True, "records": []}
        batch = _batch_size(request.headers.get("sforce-query-options", ""))
        for locator in [k for k, c in self._cursors.items() if c.expires_at <= now]:
            del self._cursors[locator]
        ids = [record["Id"] for record in rows]
        cursor = _Cursor(
            locator=_make_id("01g", next(self._locators)),
            version=version,
            sobject=obj.name,
            ids=ids,
            fields=query.fields,
            batch=batch,
            expires_at=now + _LOCATOR_LIFETIME,
            all_rows=all_rows,
        )
        return self._page(cursor, 0, version)

    def _query_more(self, locator_text: str, now: datetime, version: str) -> dict[str, Any]:
        locator, _, offset_text = locator_text.rpartition("-")
        cursor = self._cursors.get(locator)
        if cursor is None or not offset_text.isdigit() or cursor.expires_at <= now:
            self._cursors.pop(locator, None)
            raise _ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        offset = int(offset_text)
        if offset >= len(cursor.ids):
            raise _ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        self._pause()
        return self._page(cursor, offset, version)

    def _page(self, cursor: _Cursor, offset: int, version: str) -> dict[str, Any]:
        obj = self._objects[cursor.sobject.lower()]
        chunk = cursor.ids[offset : offset + cursor.batch]
        records = []
        for record_id in chunk:
            record = obj.records.get(record_id)
            if record is not None:
                records.append(self._render(obj, record, cursor.fields, version))
        end = offset + len(chunk)
        body: dict[str, Any] = {"totalSize": len(cursor.ids), "done": end >= len(cursor.ids)}
        if end < len(cursor.ids):
            self._cursors[cursor.locator] = cursor
            # As the REST API guide says (QueryAll More Results): a queryAll locator's
            # nextRecordsUrl says ``query``, not ``queryAll``.
            kind = "query"
            body["nextRecordsUrl"] = f"/services/data/v{version}/{kind}/{cursor.locator}-{end}"
        else:
            self._cursors.pop(cursor.locator, None)
        body["records"] = records
        return body

    def _render(
        self, obj: _SObject, record: Mapping[str, Any], names: Sequence[str], version: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attributes": {
                "type": obj.name,
                "url": f"/services/data/v{version}/sobjects/{obj.name}/{record['Id']}",
            }
        }
        for name in names:
            out[name] = record.get(name)
        return out

    # -- getDeleted / getUpdated -------------------------------------------------------------

    def _expire_bin(self, obj: _SObject, now: datetime) -> None:
        """Records deleted before the retention window are gone for good."""
        floor = _stamp(_day_start(now) - self.deleted_retention)
        for record_id, deleted_at in list(obj.delete_log.items()):
            if deleted_at < floor:
                obj.forget(record_id)

    def _replication(
        self, obj: _SObject, kind: str, params: httpx.QueryParams, now: datetime
    ) -> dict[str, Any]:
        start_text, end_text = params.get("start"), params.get("end")
        if not start_text or not end_text:
            raise _ApiError(400, "MISSING_ARGUMENT", "start and end parameters are required")
        start = _parse_datetime(start_text.replace(" ", "+"), naive_is_utc=True)
        end = _parse_datetime(end_text.replace(" ", "+"), naive_is_utc=True)
        if start is None or end is None:
            raise _ApiError(
                400, "INVALID_REPLICATION_DATE", "start and end must be ISO 8601 date-times"
            )
        start = start.replace(second=0, microsecond=0)  # the API ignores the seconds
        end = end.replace(second=0, microsecond=0)
        if end - start < timedelta(minutes=1):
            raise _ApiError(
                400,
                "INVALID_REPLICATION_DATE",
                "startDate must chronologically precede endDate by more than one minute",
            )
        retention = self.deleted_retention if kind == "deleted" else self.updated_retention
        floor = _day_start(now) - retention
        if start < floor:
            days = retention.days
            raise _ApiError(
                400,
                "INVALID_REPLICATION_DATE",
                f"startDate cannot be more than {days} days ago",
            )
        covered = _stamp(min(end, now.replace(second=0, microsecond=0)))
        first = _stamp(start)
        if kind == "updated":
            ids = [
                record_id
                for record_id, record in obj.records.items()
                if not record["IsDeleted"] and first <= record["SystemModstamp"] < covered
            ]
            return {"ids": ids, "latestDateCovered": covered}
        self._expire_bin(obj, now)
        earliest = _stamp(floor)
        if obj.purged_at is not None:
            earliest = max(earliest, obj.purged_at[:17] + "00.000+0000")
        deleted = [
            {"id": record_id, "deletedDate": deleted_at}
            for record_id, deleted_at in sorted(obj.delete_log.items(), key=lambda kv: kv[1])
            if max(first, earliest) <= deleted_at < covered
        ]
        return {
            "deletedRecords": deleted,
            "earliestDateAvailable": earliest,
            "latestDateCovered": covered,
        }

    # -- collections ---------------------------------------------------------------------------

    def _collections(
        self,
        request: httpx.Request,
        endpoint: str,
        now: datetime,
        version: str,
        parts: Sequence[str],
    ) -> tuple[int, Any]:
        if endpoint == "collections_retrieve":
            obj = self._objects.get(parts[2].lower())
            if obj is None:
                raise _not_found()
            if request.method == "GET":
                ids = [i for i in request.url.params.get("ids", "").split(",") if i]
                names = self._field_names(obj, request.url.params.get("fields"))
            else:
                body = _json_body(request)
                if not isinstance(body, dict):
                    raise _ApiError(
                        400, "JSON_PARSER_ERROR", "Expected an object with ids and fields"
                    )
                ids = [str(i) for i in body.get("ids") or []]
                fields = body.get("fields") or []
                names = self._field_names(obj, ",".join(str(f) for f in fields))
            if not ids:
                raise _ApiError(400, "MISSING_ARGUMENT", "ids parameter is required")
            if len(ids) > _RETRIEVE_MAX:
                raise _ApiError(
                    400,
                    "EXCEEDED_ID_LIMIT",
                    f"record limit reached. cannot submit more than {_RETRIEVE_MAX} records "
                    "into this call",
                )
            out: list[dict[str, Any] | None] = []
            for raw in ids:
                record_id = _normal_id(raw)
                record = obj.records.get(record_id) if record_id else None
                if record is None or record["IsDeleted"]:
                    out.append(None)
                else:
                    out.append(self._render(obj, record, names, version))
            return 200, out
        if endpoint == "collections_delete":
            ids = [i for i in request.url.params.get("ids", "").split(",") if i]
            if not ids:
                raise _ApiError(400, "MISSING_ARGUMENT", "ids parameter is required")
            _check_count(len(ids))
            all_or_none = request.url.params.get("allOrNone", "false").lower() == "true"
            return 200, self._delete_all(ids, all_or_none, now)
        body = _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise _ApiError(400, "JSON_PARSER_ERROR", "The request body must have a records list")
        records = body["records"]
        _check_count(len(records))
        all_or_none = body.get("allOrNone", False) is True
        items: list[tuple[_SObject, dict[str, Any]]] = []
        chunks = 0
        previous: str | None = None
        for entry in records:
            if not isinstance(entry, dict):
                raise _ApiError(400, "JSON_PARSER_ERROR", "Each record must be a JSON object")
            attributes = entry.get("attributes")
            type_name = attributes.get("type") if isinstance(attributes, dict) else None
            if not isinstance(type_name, str) or not type_name:
                raise _ApiError(400, "INVALID_TYPE", "Must send a concrete entity type.")
            obj = self._objects.get(type_name.lower())
            if obj is None:
                raise _ApiError(
                    400, "INVALID_TYPE", f"sObject type '{type_name}' is not supported."
                )
            if obj.name != previous:
                chunks += 1
                previous = obj.name
            items.append((obj, self._parse_values(obj, entry)))
        if chunks > _CHUNK_MAX:
            raise _ApiError(
                400,
                "EXCEEDED_MAX_TYPES_LIMIT",
                f"In one request, the number of chunks is limited to {_CHUNK_MAX}",
            )
        op = "create" if endpoint == "collections_create" else "update"
        return 200, self._save_all(items, op, all_or_none, now)

    def _body_record(self, request: httpx.Request, obj: _SObject) -> dict[str, Any]:
        body = _json_body(request)
        if not isinstance(body, dict):
            raise _ApiError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        return self._parse_values(obj, body)

    def _parse_values(self, obj: _SObject, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Deserialize one record: unknown names and values of the wrong JSON type fail the
        whole request, as Salesforce's deserializer does."""
        values: dict[str, Any] = {}
        for name, value in entry.items():
            if name == "attributes":
                continue
            field = obj.field(name)
            if field is None:
                raise _ApiError(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {obj.name}"
                )
            if field.name == "Id":
                values["Id"] = value
                continue
            try:
                values[field.name] = _coerce(field, value)
            except _Mismatch:
                raise _ApiError(
                    400,
                    "JSON_PARSER_ERROR",
                    f"Cannot deserialize instance of {field.type} from "
                    f"{_json_type_name(value)} value {value} or request may be missing a "
                    f"required field at [line:1, column:1]",
                ) from None
        return values

    def _save_all(
        self,
        items: Sequence[tuple[_SObject, dict[str, Any]]],
        op: str,
        all_or_none: bool,
        now: datetime,
    ) -> list[dict[str, Any]]:
        stamp = _stamp(now)
        undo: list[tuple[_SObject, str, dict[str, Any] | None]] = []
        results: list[dict[str, Any]] = []
        for obj, values in items:
            try:
                record_id = self._save(obj, values, op, stamp, undo)
                results.append({"id": record_id, "success": True, "errors": []})
            except _RecordError as exc:
                results.append({"success": False, "errors": [exc.entry()]})
        if all_or_none and not all(r["success"] for r in results):
            self._roll_back(undo)
            for i, result in enumerate(results):
                if result["success"]:
                    results[i] = _rolled_back()
        return results

    def _save(
        self,
        obj: _SObject,
        values: dict[str, Any],
        op: str,
        stamp: str,
        undo: list[tuple[_SObject, str, dict[str, Any] | None]],
    ) -> str:
        raw_id = values.pop("Id", None)
        if op == "create":
            if raw_id is not None:
                raise _RecordError("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
            record = None
        else:
            if raw_id is None:
                raise _RecordError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
            record = self._record_for_write(obj, str(raw_id))
        locked = [
            name
            for name in values
            if not (
                obj.fields[name.lower()].createable
                if op == "create"
                else obj.fields[name.lower()].updateable
            )
        ]
        if locked:
            raise _RecordError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(locked)}. Please check the security "
                "settings of this field and verify that it is read/write for your profile or "
                "permission set.",
                locked,
            )
        for name, value in values.items():
            _check_value(obj.fields[name.lower()], value)
        if op == "create":
            for field in obj.fields.values():
                if field.type == "picklist" and field.default and field.name not in values:
                    values[field.name] = field.default
        merged = {**(record or {}), **values}
        missing = [
            f.name
            for f in obj.fields.values()
            if not f.nillable
            and f.createable
            and f.type != "boolean"
            and merged.get(f.name) is None
        ]
        if missing:
            raise _RecordError(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        if record is None:
            record = self._new_record(obj, stamp)
            record.update(values)
            obj.records[record["Id"]] = record
            undo.append((obj, record["Id"], None))
        else:
            undo.append((obj, record["Id"], dict(record)))
            record.update(values)
            record["SystemModstamp"] = record["LastModifiedDate"] = stamp
        return str(record["Id"])

    def _record_for_write(self, obj: _SObject, raw_id: str) -> dict[str, Any]:
        record_id = _normal_id(raw_id)
        if record_id is None or not record_id.startswith(obj.key_prefix):
            raise _RecordError(
                "MALFORMED_ID", f"{obj.name} ID: id value of incorrect type: {raw_id}", ["Id"]
            )
        record = obj.records.get(record_id)
        if record is None:
            if record_id in obj.purged:
                raise _RecordError("ENTITY_IS_DELETED", "entity is deleted")
            raise _RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        if record["IsDeleted"]:
            raise _RecordError("ENTITY_IS_DELETED", "entity is deleted")
        return record

    def _delete_all(
        self, ids: Sequence[str], all_or_none: bool, now: datetime
    ) -> list[dict[str, Any]]:
        stamp = _stamp(now)
        undo: list[tuple[_SObject, str, dict[str, Any] | None]] = []
        results: list[dict[str, Any]] = []
        for raw in ids:
            try:
                record_id = _normal_id(raw)
                obj = next(
                    (
                        o
                        for o in self._objects.values()
                        if record_id and record_id.startswith(o.key_prefix)
                    ),
                    None,
                )
                if record_id is None or obj is None:
                    raise _RecordError("MALFORMED_ID", f"malformed id {raw}", [])
                record = self._record_for_write(obj, record_id)
                undo.append((obj, record_id, dict(record)))
                self._soft_delete(obj, record, stamp)
                results.append({"id": record_id, "success": True, "errors": []})
            except _RecordError as exc:
                results.append({"success": False, "errors": [exc.entry()]})
        if all_or_none and not all(r["success"] for r in results):
            self._roll_back(undo)
            for i, result in enumerate(results):
                if result["success"]:
                    results[i] = _rolled_back()
        return results

    def _roll_back(self, undo: list[tuple[_SObject, str, dict[str, Any] | None]]) -> None:
        for obj, record_id, previous in reversed(undo):
            if previous is None:
                obj.records.pop(record_id, None)
            else:
                obj.records[record_id] = previous
                if not previous["IsDeleted"]:
                    obj.delete_log.pop(record_id, None)

    # -- records -------------------------------------------------------------------------------

    def _object(self, sobject: str) -> _SObject:
        obj = self._objects.get(sobject.lower())
        if obj is None:
            raise KeyError(f"no sObject {sobject!r}")
        return obj

    def _id(self, raw: str) -> str:
        record_id = _normal_id(raw)
        if record_id is None:
            raise KeyError(f"malformed id {raw!r}")
        return record_id

    def _new_record(self, obj: _SObject, stamp: str) -> dict[str, Any]:
        record: dict[str, Any] = dict.fromkeys(obj.booleans(), False)
        record.update(
            Id=obj.new_id(),
            IsDeleted=False,
            CreatedDate=stamp,
            LastModifiedDate=stamp,
            SystemModstamp=stamp,
        )
        return record

    def _known(self, obj: _SObject, name: str) -> SalesforceField:
        field = obj.field(name)
        if field is None or field.name in _SYSTEM_FIELDS:
            raise ValueError(f"{obj.name} has no writable field {name!r}")
        return field

    def _value(self, field: SalesforceField, value: Any) -> Any:
        try:
            return _coerce(field, value)
        except _Mismatch:
            raise ValueError(f"{value!r} is not a {field.type} value for {field.name}") from None

    def _values(self, obj: _SObject, fields: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in fields.items():
            field = self._known(obj, name)
            out[field.name] = self._value(field, value)
        return out

    def _soft_delete(self, obj: _SObject, record: dict[str, Any], stamp: str) -> None:
        record.update(IsDeleted=True, SystemModstamp=stamp, LastModifiedDate=stamp)
        obj.delete_log[record["Id"]] = stamp

    def _live_record(self, obj: _SObject, raw_id: str) -> dict[str, Any]:
        record_id = _normal_id(raw_id)
        record = obj.records.get(record_id) if record_id else None
        if record is None:
            raise _not_found()
        if record["IsDeleted"]:
            raise _ApiError(404, "ENTITY_IS_DELETED", "entity is deleted")
        return record

    def _field_names(self, obj: _SObject, text: str | None) -> list[str]:
        if text is None:
            return [field.name for field in obj.fields.values()]
        names: list[str] = []
        for raw in (part.strip() for part in text.split(",")):
            if not raw:
                continue
            field = obj.field(raw)
            if field is None:
                raise _ApiError(
                    400, "INVALID_FIELD", f"No such column '{raw}' on entity '{obj.name}'"
                )
            if field.name not in names:
                names.append(field.name)
        if not names:
            raise _ApiError(400, "MISSING_ARGUMENT", "fields parameter is required")
        return names


# --------------------------------------------------------------------------------------------
# Helpers


def _endpoint(method: str, path: str) -> tuple[str, str | None, str]:
    """Name the endpoint a request addresses: (name, API version or None, path after it)."""
    stripped = path.rstrip("/")
    if stripped == "/services/oauth2/token":
        return "oauth_token", None, ""
    if stripped == "/services/data":
        return "versions", None, ""
    match = _VERSION_RE.fullmatch(path)
    if match is None:
        return "unknown", None, ""
    version, rest = match.group(1), match.group(2) or ""
    table = _routes([p for p in rest.split("/") if p])
    if table is None:
        return "unknown", version, rest
    return table.get(method, "method_not_allowed"), version, rest


def _routes(parts: Sequence[str]) -> dict[str, str] | None:
    """The endpoint names by HTTP method for one path (split after the version)."""
    count = len(parts)
    head = parts[0] if parts else ""
    if count == 0:
        return {"GET": "resources"}
    if head in ("query", "queryAll") and count <= 2:
        return {"GET": head if count == 1 else "query_more"}
    if list(parts) == ["limits"]:
        return {"GET": "limits"}
    if head == "composite" and count in (2, 3) and parts[1] == "sobjects":
        if count == 2:
            return {
                "POST": "collections_create",
                "PATCH": "collections_update",
                "DELETE": "collections_delete",
            }
        return {"GET": "collections_retrieve", "POST": "collections_retrieve"}
    if head == "sobjects" and count == 1:
        return {"GET": "global_describe"}
    if head == "sobjects" and count == 2:
        return {"GET": "sobject_info", "POST": "sobject_create"}
    if head == "sobjects" and count == 3 and parts[2] in ("describe", "deleted", "updated"):
        return {"GET": parts[2]}
    if head == "sobjects" and count == 3:
        return {"GET": "record_get", "PATCH": "record_update", "DELETE": "record_delete"}
    return None


def _respond(status: int, body: Any, headers: Mapping[str, str] | None = None) -> httpx.Response:
    out = dict(headers or {})
    if status == 204 or body is None:
        return httpx.Response(status, headers=out)
    out["Content-Type"] = _JSON
    return httpx.Response(status, headers=out, content=json.dumps(body).encode())


def _json_body(request: httpx.Request) -> Any:
    try:
        return json.loads(request.content or b"null")
    except ValueError:
        raise _ApiError(
            400, "JSON_PARSER_ERROR", "Unexpected character in the request body at [line:1]"
        ) from None


def _check_count(count: int) -> None:
    if count > _WRITE_MAX:
        raise _ApiError(
            400,
            "EXCEEDED_ID_LIMIT",
            f"record limit reached. cannot submit more than {_WRITE_MAX} records into this call",
        )


def _batch_size(header: str) -> int:
    match = re.search(r"batchSize\s*=\s*(\d+)", header, re.IGNORECASE)
    if match is None:
        return _BATCH_DEFAULT
    return min(max(int(match.group(1)), _BATCH_MIN), _BATCH_DEFAULT)


def _day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _rolled_back() -> dict[str, Any]:
    return {
        "success": False,
        "errors": [
            {
                "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": _ROLLED_BACK,
                "fields": [],
            }
        ],
    }


def _record_failure(result: Mapping[str, Any]) -> _ApiError:
    error = result["errors"][0]
    return _ApiError(400, error["statusCode"], error["message"], error["fields"])


def _check_value(field: SalesforceField, value: Any) -> None:
    """The per-record checks of one value (picklists, lengths, numeric range)."""
    if value is None:
        return
    if field.type in ("picklist", "multipicklist") and field.restricted:
        allowed = set(field.picklist)
        chosen = value.split(";") if field.type == "multipicklist" else [value]
        if any(part not in allowed for part in chosen):
            raise _RecordError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{field.label or _label(field.name)}: bad value for restricted picklist field: "
                f"{value}",
                [field.name],
            )
    if isinstance(value, str) and field.type in _TEXT and len(value) > field.max_length:
        raise _RecordError(
            "STRING_TOO_LONG",
            f"{field.label or _label(field.name)}: data value too large: {value[:40]} "
            f"(max length={field.max_length})",
            [field.name],
        )
    if field.type in ("id", "reference") and _normal_id(str(value)) is None:
        raise _RecordError(
            "MALFORMED_ID",
            f"{field.label or _label(field.name)}: id value of incorrect type: {value}",
            [field.name],
        )
    if field.type in _NUMBERS and field.type != "int":
        precision, scale = _DEFAULT_PRECISION[field.type]
        precision = field.precision if field.precision is not None else precision
        scale = field.scale if field.scale is not None else scale
        if abs(value) >= 10 ** (precision - scale):
            raise _RecordError(
                "NUMBER_OUTSIDE_VALID_RANGE",
                f"{field.label or _label(field.name)}: value outside of valid range on numeric "
                f"field: {value}",
                [field.name],
            )


# --------------------------------------------------------------------------------------------
# Test keys


def make_test_key_pair(bits: int = 2048) -> tuple[str, str]:
    """A fresh RSA key pair for the JWT bearer flow: ``(private_pem, public_pem)``.

    Register the public key with :meth:`SalesforceEmulator.register_jwt_client` and sign
    assertions with the private one. Needs ``cryptography`` (``pip install syncrecon[jwt]``).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def make_jwt_assertion(
    private_pem: str,
    *,
    consumer_key: str,
    username: str,
    audience: str = "https://login.salesforce.com",
    expires_at: datetime,
) -> str:
    """An RS256 JWT bearer assertion with Salesforce's claims (``iss``, ``sub``, ``aud``,
    ``exp``). Needs PyJWT (``pip install syncrecon[jwt]``)."""
    import jwt

    claims = {
        "iss": consumer_key,
        "sub": username,
        "aud": audience,
        "exp": int(expires_at.timestamp()),
    }
    return jwt.encode(claims, private_pem, algorithm="RS256")
