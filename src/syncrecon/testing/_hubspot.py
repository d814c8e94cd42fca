"""An in-process emulator of HubSpot's CRM v3 API, for offline tests of HTTP connectors.

:class:`HubSpotEmulator` answers the documented endpoints with HubSpot's documented shapes, so
a connector written against the real API docs runs against it unchanged::

    emulator = HubSpotEmulator(clock=ManualClock())
    deal = emulator.add("deals", {"dealname": "Ada", "amount": "100"})
    with httpx.Client(
        transport=emulator.transport(),
        base_url="https://api.hubapi.com",
        headers={"Authorization": f"Bearer {emulator.access_token}"},
    ) as client:
        page = client.get("/crm/v3/objects/deals", params={"limit": 100}).json()

Emulated: private-app and OAuth bearer auth (``POST /oauth/v1/token`` with
``grant_type=refresh_token``), list, search, batch read/create/update/upsert/archive,
single-object read/create/update/archive and the properties API, for deals (``0-3``),
contacts (``0-1``), companies (``0-2``) and custom object types registered by id
(``"2-12345"``); rate limits with HubSpot's headers and 429 bodies; the search caps and index
lag; deterministic fault injection. Every timestamp comes from the ``clock``.

Not emulated: associations (accepted on create and ignored, never returned), merge,
GDPR delete, the v1/v2 APIs, webhooks, pipelines, owners, property/group writes over HTTP,
scopes (no 403s), ``hapikey`` auth and the ``authorization_code``/``client_credentials``
grants.

Both front doors, :meth:`HubSpotEmulator.transport` (an :class:`httpx.MockTransport` for
``httpx.Client`` and ``httpx.AsyncClient``) and the ASGI 3 app (the emulator itself, for
``httpx.ASGITransport`` or uvicorn), call one plain function, :meth:`HubSpotEmulator.handle`.
``lose_response_next`` raises :class:`httpx.ReadTimeout` out of ``handle`` after applying the
request: through ``transport()`` (and ``httpx.ASGITransport``, which re-raises app errors) the
client sees a read timeout; a real server such as uvicorn answers 500 instead.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import collections
import fnmatch
import functools
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

import anyio.to_thread
import attrs
import httpx

from .._clock import Clock, SystemClock, utc

__all__ = ["HubSpotEmulator", "HubSpotOption", "HubSpotProperty", "HubSpotRequest"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000
_TEN_SECONDS_MS = 10_000
_SEARCH_RESULT_CAP = 10_000
_MAX_BATCH = 100
_MAX_LIST = 100
_MAX_LIST_WITH_HISTORY = 50
_MAX_SEARCH = 200
_MAX_FILTER_GROUPS = 5
_MAX_FILTERS_PER_GROUP = 6
_MAX_FILTERS = 18
_MAX_STRING = 65_536

PROPERTY_TYPES = ("bool", "date", "datetime", "enumeration", "number", "phone_number", "string")
_DEFAULT_FIELD_TYPE = {
    "bool": "booleancheckbox",
    "date": "date",
    "datetime": "date",
    "enumeration": "select",
    "number": "number",
    "phone_number": "phonenumber",
    "string": "text",
}
_OPERATORS = frozenset(
    {
        "EQ",
        "NEQ",
        "LT",
        "LTE",
        "GT",
        "GTE",
        "BETWEEN",
        "IN",
        "NOT_IN",
        "HAS_PROPERTY",
        "NOT_HAS_PROPERTY",
        "CONTAINS_TOKEN",
        "NOT_CONTAINS_TOKEN",
    }
)
_RATE_POLICIES = {
    "TEN_SECONDLY_ROLLING": "You have reached your ten_secondly_rolling limit.",
    "SECONDLY": "You have reached your secondly limit.",
    "DAILY": "You have reached your daily limit.",
}
_AUTH_HELP = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you"
    " can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


# -- time --------------------------------------------------------------------------------------


def _ms(when: datetime) -> int:
    delta = utc(when) - _EPOCH
    return delta.days * _DAY_MS + delta.seconds * 1000 + delta.microseconds // 1000


@functools.lru_cache(maxsize=1 << 16)
def _iso(ms: int) -> str:
    """HubSpot's timestamp form: ``2026-01-01T00:00:00.000Z``."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _parse_datetime(text: str) -> int | None:
    """Epoch milliseconds from epoch-ms digits or ISO 8601 (naive = UTC); None if neither."""
    text = text.strip()
    if re.fullmatch(r"-?\d{1,15}", text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _ms(moment)


# -- definitions -------------------------------------------------------------------------------


@attrs.frozen
class HubSpotOption:
    """One option of an enumeration property."""

    label: str
    value: str
    hidden: bool = False
    display_order: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "value": self.value,
            "hidden": self.hidden,
            "displayOrder": self.display_order,
        }


def _options(
    raw: Iterable[str | HubSpotOption | Mapping[str, Any]] | None,
) -> tuple[HubSpotOption, ...]:
    out: list[HubSpotOption] = []
    for order, item in enumerate(raw or ()):
        if isinstance(item, HubSpotOption):
            out.append(item)
        elif isinstance(item, str):
            out.append(HubSpotOption(label=item, value=item, display_order=order))
        else:
            value = str(item["value"])
            out.append(
                HubSpotOption(
                    label=str(item.get("label", value)),
                    value=value,
                    hidden=bool(item.get("hidden", False)),
                    display_order=int(item.get("displayOrder", order)),
                )
            )
    return tuple(out)


@attrs.frozen(kw_only=True)
class HubSpotProperty:
    """A property definition, as ``GET /crm/v3/properties/{objectType}`` describes it."""

    name: str
    label: str
    type: str
    field_type: str
    group_name: str
    description: str = ""
    options: tuple[HubSpotOption, ...] = ()
    display_order: int = -1
    has_unique_value: bool = False
    calculated: bool = False
    read_only: bool = False
    hidden: bool = False
    hubspot_defined: bool = False
    created_at_ms: int = 0

    @property
    def multiple(self) -> bool:
        """A multiple-checkbox enumeration: values are ``;``-separated option values."""
        return self.type == "enumeration" and self.field_type == "checkbox"

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "description": self.description,
            "groupName": self.group_name,
            "options": [option.to_json() for option in self.options],
            "displayOrder": self.display_order,
            "calculated": self.calculated,
            "externalOptions": False,
            "hasUniqueValue": self.has_unique_value,
            "hidden": self.hidden,
            "hubspotDefined": self.hubspot_defined,
            "formField": not (self.read_only or self.calculated),
            "modificationMetadata": {
                "archivable": not self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only or self.calculated,
            },
            "archived": False,
            "updatedAt": _iso(self.created_at_ms),
        }
        if not self.hubspot_defined:
            body["createdAt"] = _iso(self.created_at_ms)
        return body


@attrs.frozen(kw_only=True)
class HubSpotRequest:
    """One request the emulator received, as ``emulator.requests`` logs it.

    ``operation`` names the endpoint: ``list``, ``search``, ``get``, ``create``, ``update``,
    ``archive``, ``batch/read``, ``batch/create``, ``batch/update``, ``batch/upsert``,
    ``batch/archive``, ``properties``, ``property``, ``oauth/token`` or ``unknown``.
    ``object_type`` is the type id (``"0-3"``) when the path names a known type. ``lost`` is
    true when the request was applied and its answer then withheld (``lose_response_next``).
    """

    method: str
    path: str
    query: str
    status: int
    operation: str
    object_type: str | None = None
    lost: bool = False


# -- storage -----------------------------------------------------------------------------------

_Snap = tuple[list[str | None], int, int | None]  # values, updated, archived_at
_NEVER = -(2**62)


class _Rec:
    __slots__ = ("archived_at", "created", "hist", "id", "snaps", "src", "updated", "vals")

    def __init__(self, rid: int, created: int, vals: list[str | None], src: str) -> None:
        self.id = rid
        self.created = created
        self.updated = created
        self.archived_at: int | None = None
        self.vals = vals
        self.src = src
        # property slot -> [(value, ms, sourceType, sourceId)], oldest first; created lazily
        self.hist: dict[int, list[tuple[str, int, str, str | None]]] | None = None
        # (indexed-at ms, state) while search index lag is on
        self.snaps: list[tuple[int, _Snap | None]] | None = None


class _ObjectType:
    def __init__(
        self,
        type_id: str,
        name: str,
        singular: str,
        modified_prop: str,
        group_name: str,
        default_props: Sequence[str],
    ) -> None:
        self.type_id = type_id
        self.name = name
        self.singular = singular
        self.modified_prop = modified_prop
        self.group_name = group_name
        self.default_props = list(default_props)
        self.props: dict[str, HubSpotProperty] = {}
        self.slots: dict[str, int] = {}
        self.recs: dict[int, _Rec] = {}
        self.ids: list[int] = []
        # unique property name -> value key -> record id (active records only)
        self.unique: dict[str, dict[str, int]] = {}
        self.derived = {"hs_object_id", "createdate", modified_prop}

    def slot(self, name: str) -> int:
        slot = self.slots.get(name)
        if slot is None:
            slot = self.slots[name] = len(self.slots)
        return slot

    def unique_key(self, name: str, value: str) -> str:
        return value.casefold() if (self.type_id == "0-1" and name == "email") else value

    def is_unique(self, name: str) -> bool:
        return name in self.unique


@attrs.define
class _Token:
    app: str  # "private" or "oauth": the rate window is per app
    expires_ms: int | None


@attrs.define
class _Fault:
    kind: str  # "fail", "rate", "lose"
    remaining: int
    path_contains: str | None
    status: int = 0
    policy: str = ""
    retry_after: float | None = None

    def matches(self, path: str) -> bool:
        return self.remaining > 0 and (self.path_contains is None or self.path_contains in path)


class _Problem:
    __slots__ = ("code", "message", "name")

    def __init__(self, code: str, message: str, name: str) -> None:
        self.code = code
        self.message = message
        self.name = name


class _Conflict:
    __slots__ = ("existing", "message", "name")

    def __init__(self, message: str, name: str, existing: str) -> None:
        self.message = message
        self.name = name
        self.existing = existing


class _ApiError(Exception):
    """A whole-request error: becomes HubSpot's error body."""

    def __init__(
        self,
        status: int,
        category: str,
        message: str,
        *,
        errors: Sequence[Mapping[str, Any]] = (),
        context: Mapping[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.errors = list(errors)
        self.context = context


def _problems_message(problems: Sequence[_Problem]) -> str:
    details = [
        {
            "isValid": False,
            "message": p.message,
            "error": p.code,
            "name": p.name,
            "localizedErrorMessage": p.message,
        }
        for p in problems
    ]
    return "Property values were not valid: " + json.dumps(details, separators=(",", ":"))


def _problem_details(problems: Sequence[_Problem]) -> list[dict[str, Any]]:
    return [
        {"message": p.message, "code": p.code, "in": p.name, "context": {"propertyName": [p.name]}}
        for p in problems
    ]


def _number(text: str) -> str | None:
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    out = format(number, "f")
    if "." in out:
        out = out.rstrip("0").rstrip(".")
    return "0" if out in ("-0", "") else out


# -- the emulator ------------------------------------------------------------------------------

_Handler = Callable[[httpx.Request, _ObjectType, str | None], httpx.Response]

_ROUTES = [
    (re.compile(r"^/crm/v3/objects/([^/]+)/search/?$"), "search"),
    (re.compile(r"^/crm/v3/objects/([^/]+)/batch/(read|create|update|upsert|archive)/?$"), "batch"),
    (re.compile(r"^/crm/v3/objects/([^/]+)/?$"), "collection"),
    (re.compile(r"^/crm/v3/objects/([^/]+)/([^/]+)/?$"), "object"),
    (re.compile(r"^/crm/v3/properties/([^/]+)/?$"), "properties"),
    (re.compile(r"^/crm/v3/properties/([^/]+)/([^/]+)/?$"), "property"),
]


class HubSpotEmulator:
    """HubSpot's CRM v3 API in memory, behind an ``httpx`` transport or as an ASGI app.

    :param clock: Any object with ``now() -> aware datetime``; every timestamp, rate window,
        token expiry and index lag reads it (default: the wall clock).
    :param access_token: A private-app token that never expires (``None``: none).
    :param client_id: The OAuth app's client id.
    :param client_secret: The OAuth app's client secret.
    :param refresh_token: The OAuth app's initial refresh token.
    :param access_token_ttl: Seconds an OAuth access token lives (``expires_in``).
    :param rotate_refresh_tokens: Issue a new refresh token on each refresh; the old one is
        then invalid (HubSpot keeps it; this is for testing a connector that stores rotations).
    :param portal_id: Put in token responses and 429 ``groupName``.
    :param app_id: Put in token responses and 429 ``groupName``.
    :param ten_second_limit: Requests per rolling 10 s for the private app (``access_token``;
        HubSpot: 100 Free/Starter, 190 Professional/Enterprise; ``None``: unlimited).
    :param oauth_ten_second_limit: The same for the OAuth app, whose tokens share one window
        (HubSpot: 110 for a public app).
    :param daily_limit: Requests per day per account for the private app, reset at midnight in
        ``daily_reset_tz`` (``None``: unlimited). OAuth tokens have no daily limit and get
        no daily headers.
    :param search_limit_per_second: Search requests per rolling second per account.
    :param index_lag: Seconds before a create or update shows in search (list/read are
        instant).
    :param sleep: Called with seconds by ``slow_pages``; default: advance the clock if it has
        ``advance``, else ``time.sleep``.
    :param seed: Seeds correlation ids and issued tokens (deterministic runs).
    :param standard_objects: Register deals, contacts and companies with default properties.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        access_token: str | None = "pat-emulator-token",
        client_id: str = "emulator-client-id",
        client_secret: str = "emulator-client-secret",
        refresh_token: str | None = "emulator-refresh-token",
        access_token_ttl: float = 1800,
        rotate_refresh_tokens: bool = False,
        portal_id: int = 12345678,
        app_id: int = 1234567,
        ten_second_limit: int | None = 100,
        oauth_ten_second_limit: int | None = 110,
        daily_limit: int | None = 250_000,
        search_limit_per_second: int | None = 5,
        daily_reset_tz: tzinfo = UTC,
        index_lag: float = 0.0,
        sleep: Callable[[float], None] | None = None,
        seed: int = 0,
        standard_objects: bool = True,
    ) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.access_token = access_token
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_token_ttl = access_token_ttl
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.portal_id = portal_id
        self.app_id = app_id
        self.ten_second_limit = ten_second_limit
        self.oauth_ten_second_limit = oauth_ten_second_limit
        self.daily_limit = daily_limit
        self.search_limit_per_second = search_limit_per_second
        self.daily_reset_tz = daily_reset_tz
        self.index_lag = index_lag
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._types: dict[str, _ObjectType] = {}
        self._aliases: dict[str, str] = {}
        self._next_id = 1001
        self._tokens: dict[str, _Token] = {}
        if access_token is not None:
            self._tokens[access_token] = _Token("private", None)
        self._refresh_tokens: set[str] = set()
        self.refresh_token = refresh_token
        if refresh_token is not None:
            self._refresh_tokens.add(refresh_token)
        self._windows: dict[str, collections.deque[int]] = {}
        self._search_window: collections.deque[int] = collections.deque()
        self._day: object = None
        self._daily_used = 0
        self._faults: list[_Fault] = []
        self._slow = 0.0
        #: Every request received, in order.
        self.requests: list[HubSpotRequest] = []
        #: Requests per operation (``"list"``, ``"batch/read"``, ...).
        self.calls: collections.Counter[str] = collections.Counter()
        if standard_objects:
            self._register_standard()

    def __repr__(self) -> str:
        counts = ", ".join(f"{t.name}={len(t.recs)}" for t in self._types.values())
        return f"HubSpotEmulator({counts})"

    # -- object types and properties -------------------------------------------------------

    def _register_standard(self) -> None:
        self.register_object_type(
            "0-3",
            "deals",
            singular="DEAL",
            group_name="dealinformation",
            default_properties=[
                "amount",
                "closedate",
                "createdate",
                "dealname",
                "dealstage",
                "hs_lastmodifieddate",
                "hs_object_id",
                "pipeline",
            ],
        )
        stages = [
            ("Appointment Scheduled", "appointmentscheduled"),
            ("Qualified To Buy", "qualifiedtobuy"),
            ("Presentation Scheduled", "presentationscheduled"),
            ("Decision Maker Bought-In", "decisionmakerboughtin"),
            ("Contract Sent", "contractsent"),
            ("Closed Won", "closedwon"),
            ("Closed Lost", "closedlost"),
        ]
        for name, kind, field, label, options in [
            ("dealname", "string", "text", "Deal Name", None),
            ("amount", "number", "number", "Amount", None),
            ("closedate", "datetime", "date", "Close Date", None),
            (
                "dealstage",
                "enumeration",
                "radio",
                "Deal Stage",
                [{"label": lab, "value": val} for lab, val in stages],
            ),
            (
                "pipeline",
                "enumeration",
                "select",
                "Pipeline",
                [{"label": "Sales Pipeline", "value": "default"}],
            ),
            ("description", "string", "textarea", "Deal Description", None),
        ]:
            self.add_property(
                "0-3",
                name,
                type=kind,
                field_type=field,
                label=label,
                options=options,
                _hubspot_defined=True,
            )
        self.register_object_type(
            "0-1",
            "contacts",
            singular="CONTACT",
            group_name="contactinformation",
            modified_property="lastmodifieddate",
            default_properties=[
                "createdate",
                "email",
                "firstname",
                "hs_object_id",
                "lastmodifieddate",
                "lastname",
            ],
        )
        lifecycle: list[Any] = [
            "subscriber",
            "lead",
            "marketingqualifiedlead",
            "salesqualifiedlead",
            "opportunity",
            "customer",
            "evangelist",
            "other",
        ]
        for name, kind, field, label, options in [
            ("email", "string", "text", "Email", None),
            ("firstname", "string", "text", "First Name", None),
            ("lastname", "string", "text", "Last Name", None),
            ("phone", "string", "phonenumber", "Phone Number", None),
            ("company", "string", "text", "Company Name", None),
            ("lifecyclestage", "enumeration", "radio", "Lifecycle Stage", lifecycle),
        ]:
            self.add_property(
                "0-1",
                name,
                type=kind,
                field_type=field,
                label=label,
                options=options,
                _hubspot_defined=True,
            )
        # HubSpot's email definition says hasUniqueValue false, yet a second contact with the
        # same email is refused (409 "Contact already exists"): unique here, flag unchanged.
        self._types["0-1"].unique["email"] = {}
        self.register_object_type(
            "0-2",
            "companies",
            singular="COMPANY",
            group_name="companyinformation",
            default_properties=[
                "createdate",
                "domain",
                "hs_lastmodifieddate",
                "hs_object_id",
                "name",
            ],
        )
        for name, kind, field, label in [
            ("name", "string", "text", "Company name"),
            ("domain", "string", "text", "Company Domain Name"),
            ("phone", "string", "phonenumber", "Phone Number"),
            ("city", "string", "text", "City"),
            ("numberofemployees", "number", "number", "Number of Employees"),
            ("description", "string", "textarea", "Description"),
        ]:
            self.add_property(
                "0-2", name, type=kind, field_type=field, label=label, _hubspot_defined=True
            )

    def register_object_type(
        self,
        type_id: str,
        name: str,
        *,
        properties: Iterable[HubSpotProperty | Mapping[str, Any]] = (),
        singular: str | None = None,
        group_name: str | None = None,
        modified_property: str = "hs_lastmodifieddate",
        default_properties: Sequence[str] | None = None,
        primary_display_property: str | None = None,
    ) -> None:
        """Add an object type, e.g. a custom object ``("2-12345", "cars")``.

        The type answers to its id, its name and (custom types) ``p{portal_id}_{name}``.
        ``properties`` are :class:`HubSpotProperty` values or ``add_property`` keyword
        mappings (``{"name": "vin", "has_unique_value": True}``). ``hs_object_id``,
        ``createdate`` and ``modified_property`` are always defined.
        """
        with self._lock:
            if type_id in self._types:
                raise ValueError(f"object type {type_id!r} is already registered")
            defaults = list(default_properties or ())
            if default_properties is None:
                defaults = ["createdate", modified_property, "hs_object_id"]
                if primary_display_property:
                    defaults.append(primary_display_property)
            ot = _ObjectType(
                type_id,
                name,
                singular or name.upper().rstrip("S"),
                modified_property,
                group_name or f"{name}_information",
                defaults,
            )
            self._types[type_id] = ot
            for alias in (type_id, name, name.lower()):
                self._aliases[alias] = type_id
            if type_id.startswith("2-"):
                self._aliases[f"p{self.portal_id}_{name}"] = type_id
            now = self._now_ms()
            for prop_name, label, kind, field in [
                ("hs_object_id", "Record ID", "number", "number"),
                ("createdate", "Create Date", "datetime", "date"),
                (modified_property, "Last Modified Date", "datetime", "date"),
            ]:
                ot.props[prop_name] = HubSpotProperty(
                    name=prop_name,
                    label=label,
                    type=kind,
                    field_type=field,
                    group_name=ot.group_name,
                    read_only=True,
                    hubspot_defined=True,
                    created_at_ms=now,
                )
            for prop in properties:
                if isinstance(prop, HubSpotProperty):
                    self._install_property(ot, prop)
                else:
                    spec = dict(prop)
                    self.add_property(type_id, spec.pop("name"), **spec)

    def _lookup(self, ref: str) -> _ObjectType | None:
        type_id = self._aliases.get(ref) or self._aliases.get(ref.lower())
        return self._types[type_id] if type_id is not None else None

    def _type(self, object_type: str) -> _ObjectType:
        ot = self._lookup(object_type)
        if ot is None:
            raise KeyError(f"unknown object type {object_type!r}")
        return ot

    def add_property(
        self,
        object_type: str,
        name: str,
        type: str = "string",
        field_type: str | None = None,
        options: Iterable[str | HubSpotOption | Mapping[str, Any]] | None = None,
        *,
        label: str | None = None,
        group_name: str | None = None,
        description: str = "",
        has_unique_value: bool = False,
        calculated: bool = False,
        read_only: bool = False,
        hidden: bool = False,
        _hubspot_defined: bool = False,
    ) -> HubSpotProperty:
        """Define a property. ``type`` is one of :data:`PROPERTY_TYPES`; ``field_type`` defaults
        from it (``enumeration`` -> ``select``; pass ``"checkbox"`` for a multiple checkbox,
        whose values are ``;``-separated). ``options`` are values, :class:`HubSpotOption` or
        ``{"label", "value", "hidden", "displayOrder"}`` mappings."""
        if type not in PROPERTY_TYPES:
            raise ValueError(f"property type must be one of {PROPERTY_TYPES}, not {type!r}")
        with self._lock:
            ot = self._type(object_type)
            if name in ot.derived:
                raise ValueError(f"{name!r} is a built-in property")
            opts = _options(options)
            if type == "bool" and not opts:
                opts = (
                    HubSpotOption(label="Yes", value="true", display_order=0),
                    HubSpotOption(label="No", value="false", display_order=1),
                )
            prop = HubSpotProperty(
                name=name,
                label=label or name.replace("_", " ").title(),
                type=type,
                field_type=field_type or _DEFAULT_FIELD_TYPE[type],
                group_name=group_name or ot.group_name,
                description=description,
                options=opts,
                has_unique_value=has_unique_value,
                calculated=calculated,
                read_only=read_only,
                hidden=hidden,
                hubspot_defined=_hubspot_defined,
                created_at_ms=self._now_ms(),
            )
            self._install_property(ot, prop)
            return prop

    def _install_property(self, ot: _ObjectType, prop: HubSpotProperty) -> None:
        if prop.has_unique_value:
            slot = ot.slot(prop.name)
            index: dict[str, int] = {}
            for rec in ot.recs.values():
                value = rec.vals[slot] if slot < len(rec.vals) else None
                if value is None or rec.archived_at is not None:
                    continue
                key = ot.unique_key(prop.name, value)
                if key in index:
                    raise ValueError(f"records {index[key]} and {rec.id} share {prop.name}")
                index[key] = rec.id
            ot.unique[prop.name] = index
        ot.props[prop.name] = prop
        ot.slot(prop.name)

    def properties(self, object_type: str) -> list[HubSpotProperty]:
        """The property definitions of a type."""
        with self._lock:
            return list(self._type(object_type).props.values())

    # -- data helpers (no HTTP) ------------------------------------------------------------

    def _now_ms(self) -> int:
        return _ms(self.clock.now())

    def _new_record(
        self, ot: _ObjectType, changes: Mapping[int, str | None], src: str, now: int
    ) -> _Rec:
        width = max(changes, default=-1) + 1
        vals: list[str | None] = [None] * width
        for slot, value in changes.items():
            vals[slot] = value
        rid = self._next_id
        self._next_id += 1
        rec = _Rec(rid, now, vals, src)
        ot.recs[rid] = rec
        ot.ids.append(rid)
        for name, index in ot.unique.items():
            slot = ot.slots[name]
            value = vals[slot] if slot < width else None
            if value is not None:
                index[ot.unique_key(name, value)] = rid
        if self.index_lag > 0:
            rec.snaps = [(now, (rec.vals, rec.updated, None))]
        return rec

    def _value(
        self, ot: _ObjectType, rec: _Rec, name: str, snap: _Snap | None = None
    ) -> str | None:
        vals, updated = (rec.vals, rec.updated) if snap is None else (snap[0], snap[1])
        if name in ot.derived:
            if name == "hs_object_id":
                return str(rec.id)
            if name == "createdate":
                return _iso(rec.created)
            return _iso(updated)
        slot = ot.slots.get(name)
        if slot is None or slot >= len(vals):
            return None
        return vals[slot]

    def _apply(
        self,
        ot: _ObjectType,
        rec: _Rec,
        changes: Mapping[int, str | None],
        source: tuple[str, str | None],
        now: int,
    ) -> bool:
        """Write changed values; keep history; bump the modification time. False: no change."""
        names = list(ot.slots)
        vals = rec.vals
        new_vals: list[str | None] | None = None
        for slot, value in changes.items():
            old = vals[slot] if slot < len(vals) else None
            if old == value:
                continue
            if new_vals is None:
                new_vals = list(vals)
            if slot >= len(new_vals):
                new_vals.extend([None] * (slot + 1 - len(new_vals)))
            if rec.hist is None:
                rec.hist = {}
            entries = rec.hist.get(slot)
            if entries is None:
                entries = rec.hist[slot] = []
                if old is not None:
                    entries.append((old, rec.created, rec.src, None))
            entries.append((value if value is not None else "", now, source[0], source[1]))
            new_vals[slot] = value
            name = names[slot]
            index = ot.unique.get(name)
            if index is not None and rec.archived_at is None:
                if old is not None:
                    index.pop(ot.unique_key(name, old), None)
                if value is not None:
                    index[ot.unique_key(name, value)] = rec.id
        if new_vals is None:
            return False
        before: _Snap = (rec.vals, rec.updated, rec.archived_at)
        rec.vals = new_vals
        rec.updated = max(now, rec.updated)
        self._index(rec, before, now)
        return True

    def _index(self, rec: _Rec, before: _Snap, now: int) -> None:
        lag = int(self.index_lag * 1000)
        if lag <= 0:
            rec.snaps = None
            return
        if rec.snaps is None:
            rec.snaps = [(_NEVER, before)]
        rec.snaps.append((now, (rec.vals, rec.updated, rec.archived_at)))
        cutoff = now - lag
        keep = 0
        while keep + 1 < len(rec.snaps) and rec.snaps[keep + 1][0] <= cutoff:
            keep += 1
        if keep:
            del rec.snaps[:keep]

    def _indexed(self, rec: _Rec, now: int) -> _Snap | None:
        """The state search sees (None: not indexed yet)."""
        lag = int(self.index_lag * 1000)
        if lag <= 0 or rec.snaps is None:
            return (rec.vals, rec.updated, rec.archived_at)
        cutoff = now - lag
        state: _Snap | None = None
        for at, snap in rec.snaps:
            if at > cutoff:
                break
            state = snap
        return state

    def _set_archived(self, ot: _ObjectType, rec: _Rec, archived: bool, now: int) -> None:
        if (rec.archived_at is not None) == archived:
            return
        for name, index in ot.unique.items():
            slot = ot.slots[name]
            value = rec.vals[slot] if slot < len(rec.vals) else None
            if value is None:
                continue
            key = ot.unique_key(name, value)
            if archived:
                if index.get(key) == rec.id:
                    del index[key]
            elif key in index and index[key] != rec.id:
                raise ValueError(f"{name}={value!r} is taken by record {index[key]}")
        before: _Snap = (rec.vals, rec.updated, rec.archived_at)
        if archived:
            rec.archived_at = now
        else:
            rec.archived_at = None
            rec.updated = max(now, rec.updated)
            for name, index in ot.unique.items():
                slot = ot.slots[name]
                value = rec.vals[slot] if slot < len(rec.vals) else None
                if value is not None:
                    index[ot.unique_key(name, value)] = rec.id
        self._index(rec, before, now)

    def _helper_changes(
        self, ot: _ObjectType, properties: Mapping[str, Any], exclude: int | None
    ) -> dict[int, str | None]:
        changes, problems = self._validate(ot, properties)
        if problems:
            raise ValueError(_problems_message(problems))
        conflicts = self._conflicts(ot, changes, exclude, {})
        if conflicts:
            raise ValueError(conflicts[0].message)
        return changes

    def add(self, object_type: str, properties: Mapping[str, Any] | None = None) -> str:
        """Create a record as a HubSpot user would; return its id. Values are checked as the
        API checks them (``ValueError``)."""
        with self._lock:
            ot = self._type(object_type)
            changes = self._helper_changes(ot, properties or {}, None)
            return str(self._new_record(ot, changes, "CRM_UI", self._now_ms()).id)

    def bulk_add(
        self, object_type: str, n: int, factory: Callable[[int], Mapping[str, Any]]
    ) -> list[str]:
        """Create ``n`` records, ``factory(i)`` giving the properties of the ``i``-th; return
        their ids. All share one creation time. Fast enough for 100,000 records."""
        with self._lock:
            ot = self._type(object_type)
            now = self._now_ms()
            ids: list[str] = []
            for i in range(n):
                changes = self._helper_changes(ot, factory(i), None)
                ids.append(str(self._new_record(ot, changes, "CRM_UI", now).id))
            return ids

    def _rec(self, ot: _ObjectType, record_id: str | int) -> _Rec:
        try:
            return ot.recs[int(record_id)]
        except (KeyError, ValueError):
            raise KeyError(f"no {ot.name} record {record_id!r}") from None

    def edit(self, object_type: str, record_id: str | int, /, **properties: Any) -> bool:
        """Change properties as a HubSpot user would: bumps the modification date and the
        property history when a value changes. ``None`` or ``""`` clears a value. Returns
        whether anything changed."""
        with self._lock:
            ot = self._type(object_type)
            rec = self._rec(ot, record_id)
            changes = self._helper_changes(ot, properties, rec.id)
            return self._apply(ot, rec, changes, ("CRM_UI", None), self._now_ms())

    def archive(self, object_type: str, record_id: str | int) -> None:
        """Archive (soft-delete) a record, as the recycle bin does; ``archivedAt`` is now and
        the modification date does not move."""
        with self._lock:
            ot = self._type(object_type)
            self._set_archived(ot, self._rec(ot, record_id), True, self._now_ms())

    def restore(self, object_type: str, record_id: str | int) -> None:
        """Restore an archived record (bumps its modification date)."""
        with self._lock:
            ot = self._type(object_type)
            self._set_archived(ot, self._rec(ot, record_id), False, self._now_ms())

    def _record_json(self, ot: _ObjectType, rec: _Rec) -> dict[str, Any]:
        props = {name: self._value(ot, rec, name) for name in ot.props}
        body: dict[str, Any] = {
            "id": str(rec.id),
            "properties": {k: v for k, v in props.items() if v is not None},
            "createdAt": _iso(rec.created),
            "updatedAt": _iso(rec.updated),
            "archived": rec.archived_at is not None,
        }
        if rec.archived_at is not None:
            body["archivedAt"] = _iso(rec.archived_at)
        return body

    def get(self, object_type: str, record_id: str | int) -> dict[str, Any]:
        """A record in the API's shape, with every property that has a value (``KeyError``
        if there is no such record; archived records are returned, ``archived`` true)."""
        with self._lock:
            ot = self._type(object_type)
            return self._record_json(ot, self._rec(ot, record_id))

    def records(self, object_type: str, *, archived: bool | None = False) -> list[dict[str, Any]]:
        """All records of a type in id order, as :meth:`get` gives them (``archived=None``:
        both active and archived)."""
        with self._lock:
            ot = self._type(object_type)
            return [
                self._record_json(ot, rec)
                for rec in ot.recs.values()
                if archived is None or (rec.archived_at is not None) == archived
            ]

    def count(self, object_type: str, *, archived: bool = False) -> int:
        """How many active (or archived) records a type has."""
        with self._lock:
            ot = self._type(object_type)
            return sum((r.archived_at is not None) == archived for r in ot.recs.values())

    def history(self, object_type: str, record_id: str | int, name: str) -> list[dict[str, Any]]:
        """A property's history, newest first, as ``propertiesWithHistory`` gives it."""
        with self._lock:
            ot = self._type(object_type)
            return self._history(ot, self._rec(ot, record_id), name)

    # -- auth --------------------------------------------------------------------------------

    def _token_value(self, prefix: str) -> str:
        return f"{prefix}-{self._rng.getrandbits(128):032x}"

    def issue_access_token(self, ttl: float | None = None) -> str:
        """A fresh OAuth access token that expires after ``ttl`` seconds (default
        ``access_token_ttl``), as a refresh would give."""
        with self._lock:
            token = self._token_value("emu-oauth")
            lifetime = self.access_token_ttl if ttl is None else ttl
            self._tokens[token] = _Token("oauth", self._now_ms() + int(lifetime * 1000))
            return token

    def revoke_refresh_tokens(self) -> None:
        """Invalidate every refresh token (as an uninstalled app would)."""
        with self._lock:
            self._refresh_tokens.clear()

    def _correlation_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # -- faults ------------------------------------------------------------------------------

    def rate_limit_next(
        self, n: int = 1, policy: str = "TEN_SECONDLY_ROLLING", path_contains: str | None = None
    ) -> None:
        """Answer the next ``n`` matching requests 429 with HubSpot's body for ``policy``
        (``TEN_SECONDLY_ROLLING``, ``SECONDLY`` or ``DAILY``); nothing is applied."""
        if policy not in _RATE_POLICIES:
            raise ValueError(f"policy must be one of {sorted(_RATE_POLICIES)}")
        with self._lock:
            self._faults.append(_Fault("rate", n, path_contains, status=429, policy=policy))

    def fail_next(
        self,
        status: int,
        n: int = 1,
        path_contains: str | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with ``status`` (5xx, 423 "locked: wait at
        least 2 s", 477 "migration in progress" with ``Retry-After``, default 60 s, or any
        other); nothing is applied. ``path_contains=None`` matches every request, including
        ``/oauth/v1/token``."""
        if status == 477 and retry_after is None:
            retry_after = 60
        with self._lock:
            self._faults.append(
                _Fault("fail", n, path_contains, status=status, retry_after=retry_after)
            )

    def lose_response_next(self, n: int = 1, path_contains: str | None = None) -> None:
        """Apply the next ``n`` matching requests, then raise :class:`httpx.ReadTimeout`
        instead of answering (the client never sees the answer; the change is made)."""
        with self._lock:
            self._faults.append(_Fault("lose", n, path_contains))

    def slow_pages(self, seconds: float) -> None:
        """Before answering each list or search page, call ``sleep(seconds)`` (0: stop)."""
        with self._lock:
            self._slow = seconds

    def clear_faults(self) -> None:
        """Drop every pending injected fault and stop ``slow_pages``."""
        with self._lock:
            self._faults.clear()
            self._slow = 0.0

    def _take_fault(self, kinds: tuple[str, ...], path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.kind in kinds and fault.matches(path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # -- request log -------------------------------------------------------------------------

    def request_count(
        self,
        operation: str | None = None,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        status: int | None = None,
    ) -> int:
        """How many logged requests match every given criterion."""
        with self._lock:
            return sum(
                (operation is None or r.operation == operation)
                and (method is None or r.method == method.upper())
                and (path_contains is None or path_contains in r.path)
                and (status is None or r.status == status)
                for r in self.requests
            )

    # -- front doors -------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        """An ``httpx`` transport for ``httpx.Client`` and ``httpx.AsyncClient`` (base URL
        ``https://api.hubapi.com``; any host is accepted)."""
        return httpx.MockTransport(self.handle)

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Any],
        send: Callable[[dict[str, Any]], Any],
    ) -> None:
        """The ASGI 3 app: the same API over any ASGI server or ``httpx.ASGITransport``."""
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
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        host = next((v for k, v in headers if k.lower() == "host"), None)
        if host is None:
            server = scope.get("server") or ("api.hubapi.com", None)
            host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
        url = httpx.URL(f"{scope.get('scheme', 'http')}://{host}").copy_with(path=scope["path"])
        if scope.get("query_string"):
            url = url.copy_with(query=scope["query_string"])
        request = httpx.Request(scope["method"], url, headers=headers, content=b"".join(chunks))
        response = await anyio.to_thread.run_sync(self.handle, request)
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(k.lower(), v) for k, v in response.headers.raw],
            }
        )
        await send({"type": "http.response.body", "body": response.content})

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request: the core both front doors call. Thread-safe."""
        path = request.url.path
        operation, ref, rest = self._route(request.method, path)
        if operation in ("list", "search"):
            with self._lock:
                delay = self._slow
            if delay > 0:
                self._do_sleep(delay)
        with self._lock:
            ot = self._lookup(ref) if ref else None
            response = self._process(request, operation, ref, rest)
            lost = self._take_fault(("lose",), path) is not None
            self.calls[operation] += 1
            self.requests.append(
                HubSpotRequest(
                    method=request.method,
                    path=path,
                    query=request.url.query.decode("ascii", "replace"),
                    status=response.status_code,
                    operation=operation,
                    object_type=ot.type_id if ot is not None else None,
                    lost=lost,
                )
            )
        if lost:
            raise httpx.ReadTimeout("emulated: the response was lost", request=request)
        return response

    def _do_sleep(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
            return
        advance = getattr(self.clock, "advance", None)
        if callable(advance):
            advance(seconds)
        else:
            time.sleep(seconds)

    @staticmethod
    def _route(method: str, path: str) -> tuple[str, str | None, str | None]:
        if path.rstrip("/") == "/oauth/v1/token":
            return "oauth/token", None, None
        for pattern, kind in _ROUTES:
            match = pattern.match(path)
            if match is None:
                continue
            ref = match[1]
            second = match[2] if pattern.groups > 1 else None
            if kind == "search":
                return "search", ref, None
            if kind == "batch":
                return f"batch/{second}", ref, None
            if kind == "collection":
                return ("list" if method == "GET" else "create"), ref, None
            if kind == "object":
                op = {"GET": "get", "PATCH": "update", "DELETE": "archive"}.get(method, "get")
                return op, ref, second
            if kind == "properties":
                return "properties", ref, None
            return "property", ref, second
        return "unknown", None, None

    # -- responses ---------------------------------------------------------------------------

    def _json(
        self, status: int, body: Any, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        return httpx.Response(status, json=body, headers=dict(headers or {}))

    def _error_response(self, error: _ApiError) -> httpx.Response:
        body: dict[str, Any] = {
            "status": "error",
            "message": error.message,
            "correlationId": self._correlation_id(),
            "category": error.category,
        }
        if error.context is not None:
            body["context"] = error.context
        if error.errors:
            body["errors"] = error.errors
        return self._json(error.status, body)

    def _rate_limited(
        self, policy: str, headers: Mapping[str, str], app: str = "private"
    ) -> httpx.Response:
        kind = {
            "TEN_SECONDLY_ROLLING": f"{app}_app-api-calls-ten-secondly",
            "DAILY": f"{app}_app-api-calls-daily",
            "SECONDLY": "search-api-calls-secondly",
        }[policy]
        body = {
            "status": "error",
            "message": _RATE_POLICIES[policy],
            "errorType": "RATE_LIMIT",
            "correlationId": self._correlation_id(),
            "policyName": policy,
            "groupName": f"publicapi:{kind}:{self.app_id}:{self.portal_id}",
        }
        return self._json(429, body, headers)

    def _injected(self, fault: _Fault) -> httpx.Response:
        if fault.kind == "rate":
            headers = {} if fault.policy == "SECONDLY" else self._limit_headers("private", 0)
            return self._rate_limited(fault.policy, headers)
        status = fault.status
        if status == 423:
            message = "The resource is locked by another operation; wait at least 2 seconds."
            category = "LOCKED"
        elif status == 477:
            message = "This account is being migrated between data hosting locations."
            category = "MIGRATION_IN_PROGRESS"
        elif status >= 500:
            message = "An internal error occurred. Pause, then retry."
            category = "INTERNAL_ERROR"
        else:
            message = f"Injected error {status}."
            category = "VALIDATION_ERROR"
        response = self._error_response(_ApiError(status, category, message))
        if fault.retry_after is not None:
            response.headers["Retry-After"] = f"{fault.retry_after:g}"
        return response

    def _ten_second_limit(self, app: str) -> int | None:
        return self.ten_second_limit if app == "private" else self.oauth_ten_second_limit

    def _limit_headers(self, app: str, remaining: int) -> dict[str, str]:
        headers = {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(_TEN_SECONDS_MS),
            "X-HubSpot-RateLimit-Max": str(self._ten_second_limit(app) or 0),
            "X-HubSpot-RateLimit-Remaining": str(max(remaining, 0)),
        }
        if app == "private" and self.daily_limit is not None:
            headers["X-HubSpot-RateLimit-Daily"] = str(self.daily_limit)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(
                max(self.daily_limit - self._daily_used, 0)
            )
        return headers

    # -- the pipeline ------------------------------------------------------------------------

    def _process(
        self, request: httpx.Request, operation: str, ref: str | None, rest: str | None
    ) -> httpx.Response:
        path = request.url.path
        fault = self._take_fault(("fail", "rate"), path)
        if fault is not None:
            return self._injected(fault)
        try:
            if operation == "oauth/token":
                return self._oauth(request)
            token = self._authenticate(request)
            limited, headers = self._count_request(token, operation == "search")
            if limited is not None:
                return limited
            try:
                response = self._dispatch(request, operation, ref, rest)
            except _ApiError as error:
                response = self._error_response(error)
            response.headers.update(headers)
            return response
        except _ApiError as error:
            return self._error_response(error)

    def _authenticate(self, request: httpx.Request) -> _Token:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _ApiError(401, "INVALID_AUTHENTICATION", _AUTH_HELP)
        token = self._tokens.get(value.strip())
        if token is None:
            raise _ApiError(
                401,
                "INVALID_AUTHENTICATION",
                "The access token provided is not valid. " + _AUTH_HELP,
            )
        if token.expires_ms is not None:
            now = self._now_ms()
            if now >= token.expires_ms:
                ago = (now - token.expires_ms) // 1000
                raise _ApiError(
                    401,
                    "EXPIRED_AUTHENTICATION",
                    f"The OAuth token used to make this call expired {ago} second(s) ago.",
                )
        return token

    def _count_request(
        self, token: _Token, search: bool
    ) -> tuple[httpx.Response | None, dict[str, str]]:
        now = self._now_ms()
        daily = token.app == "private" and self.daily_limit is not None
        if daily:
            day = (_EPOCH + timedelta(milliseconds=now)).astimezone(self.daily_reset_tz).date()
            if day != self._day:
                self._day = day
                self._daily_used = 0
            assert self.daily_limit is not None
            if self._daily_used >= self.daily_limit:
                headers = {} if search else self._limit_headers(token.app, 0)
                return self._rate_limited("DAILY", headers), {}
        if search:
            limit = self.search_limit_per_second
            if limit is not None:
                window = self._search_window
                while window and window[0] <= now - 1000:
                    window.popleft()
                if len(window) >= limit:
                    return self._rate_limited("SECONDLY", {}), {}
                window.append(now)
            if daily:
                self._daily_used += 1
            return None, {}  # search responses carry no rate-limit headers
        window = self._windows.setdefault(token.app, collections.deque())
        while window and window[0] <= now - _TEN_SECONDS_MS:
            window.popleft()
        limit = self._ten_second_limit(token.app)
        if limit is not None and len(window) >= limit:
            headers = self._limit_headers(token.app, 0)
            return self._rate_limited("TEN_SECONDLY_ROLLING", headers, token.app), {}
        window.append(now)
        if daily:
            self._daily_used += 1
        remaining = (limit - len(window)) if limit is not None else 0
        return None, self._limit_headers(token.app, remaining)

    def _oauth(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            raise _ApiError(405, "VALIDATION_ERROR", "Method not allowed.")
        form: dict[str, str] = dict(request.url.params.multi_items())
        ctype = request.headers.get("content-type", "")
        if "json" in ctype:
            try:
                parsed = json.loads(request.content or b"{}")
            except ValueError:
                parsed = {}
            if isinstance(parsed, dict):
                form.update({str(k): str(v) for k, v in parsed.items()})
        else:
            form.update(httpx.QueryParams(request.content.decode("utf-8", "replace")).items())

        def refused(status: str, error: str, message: str) -> httpx.Response:
            body = {
                "status": status,
                "message": message,
                "correlationId": self._correlation_id(),
                "category": status,
                "error": error,
                "error_description": message,
            }
            return self._json(400, body)

        grant = form.get("grant_type", "")
        if grant != "refresh_token":
            return refused(
                "BAD_GRANT_TYPE", "unsupported_grant_type", f"unsupported grant type: {grant!r}"
            )
        if form.get("client_id") != self.client_id:
            return refused("BAD_CLIENT_ID", "invalid_client", "missing or invalid client id")
        if form.get("client_secret") != self.client_secret:
            return refused(
                "BAD_CLIENT_SECRET", "invalid_client", "missing or invalid client secret"
            )
        refresh = form.get("refresh_token", "")
        if refresh not in self._refresh_tokens:
            return refused(
                "BAD_REFRESH_TOKEN",
                "invalid_grant",
                "refresh token is invalid, expired or revoked",
            )
        if self.rotate_refresh_tokens:
            self._refresh_tokens.discard(refresh)
            refresh = self._token_value("emu-refresh")
            self._refresh_tokens.add(refresh)
            self.refresh_token = refresh
        access = self.issue_access_token()
        body = {
            "token_type": "bearer",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": int(self.access_token_ttl),
            "token_use": "access_token",
            "hub_id": self.portal_id,
        }
        return self._json(200, body)

    def _dispatch(
        self, request: httpx.Request, operation: str, ref: str | None, rest: str | None
    ) -> httpx.Response:
        if operation == "unknown" or ref is None:
            raise _ApiError(404, "OBJECT_NOT_FOUND", f"No endpoint at {request.url.path}.")
        ot = self._lookup(ref)
        if ot is None:
            raise _ApiError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {ref}")
        allowed = {
            "list": "GET",
            "create": "POST",
            "search": "POST",
            "get": "GET",
            "update": "PATCH",
            "archive": "DELETE",
            "properties": "GET",
            "property": "GET",
        }.get(operation, "POST")
        if request.method != allowed:
            raise _ApiError(405, "VALIDATION_ERROR", f"Method {request.method} not allowed.")
        handler: dict[str, _Handler] = {
            "list": self._list,
            "create": self._create_one,
            "search": self._search,
            "get": self._get_one,
            "update": self._update_one,
            "archive": self._archive_one,
            "properties": self._properties,
            "property": self._property,
            "batch/read": self._batch_read,
            "batch/create": self._batch_create,
            "batch/update": self._batch_update,
            "batch/upsert": self._batch_upsert,
            "batch/archive": self._batch_archive,
        }
        return handler[operation](request, ot, rest)

    # -- parsing -----------------------------------------------------------------------------

    @staticmethod
    def _body(request: httpx.Request) -> dict[str, Any]:
        try:
            body = json.loads(request.content or b"{}")
        except ValueError as exc:
            raise _ApiError(400, "VALIDATION_ERROR", f"Invalid input JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _ApiError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
        return body

    @staticmethod
    def _names(values: Iterable[Any]) -> list[str]:
        out: list[str] = []
        for value in values:
            if not isinstance(value, str):
                raise _ApiError(400, "VALIDATION_ERROR", "Property names must be strings.")
            out.extend(part.strip() for part in value.split(",") if part.strip())
        return out

    def _body_names(self, body: Mapping[str, Any], key: str) -> list[str] | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise _ApiError(400, "VALIDATION_ERROR", f"{key} must be a list of property names.")
        return self._names(value)

    @staticmethod
    def _bool_param(params: httpx.QueryParams, name: str) -> bool:
        value: str | None = params.get(name)
        if value is None or value == "":
            return False
        if value.lower() not in ("true", "false"):
            raise _ApiError(400, "VALIDATION_ERROR", f"{name} must be true or false.")
        return value.lower() == "true"

    @staticmethod
    def _int(value: Any, name: str, default: int) -> int:
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            raise _ApiError(400, "VALIDATION_ERROR", f"{name} must be an integer.")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise _ApiError(400, "VALIDATION_ERROR", f"{name} must be an integer.") from None

    # -- property values -------------------------------------------------------------------

    def _coerce(self, prop: HubSpotProperty, raw: Any) -> tuple[str | None, _Problem | None]:
        if raw is None:
            return None, None
        if isinstance(raw, bool):
            raw = "true" if raw else "false"
        elif isinstance(raw, int | float):
            raw = str(raw)
        if not isinstance(raw, str):
            return None, _Problem(
                "INVALID_PROPERTY_VALUE", f"{raw!r} is not a valid value", prop.name
            )
        if raw == "":
            return None, None
        kind = prop.type
        if kind in ("string", "phone_number"):
            if len(raw) > _MAX_STRING:
                return None, _Problem(
                    "INVALID_PROPERTY_VALUE",
                    f"Property value for {prop.name} exceeds {_MAX_STRING} characters",
                    prop.name,
                )
            return raw, None
        if kind == "number":
            number = _number(raw)
            if number is None:
                return None, _Problem(
                    "INVALID_FLOAT", f'"{raw}" was not a valid number.', prop.name
                )
            return number, None
        if kind == "bool":
            if raw.lower() not in ("true", "false"):
                return None, _Problem(
                    "INVALID_BOOLEAN",
                    f'"{raw}" was not a valid boolean (true or false).',
                    prop.name,
                )
            return raw.lower(), None
        if kind == "datetime":
            ms = _parse_datetime(raw)
            if ms is None:
                return None, _Problem(
                    "INVALID_DATE", f'"{raw}" was not a valid datetime.', prop.name
                )
            return _iso(ms), None
        if kind == "date":
            ms = _parse_datetime(raw)
            if ms is None or ms % _DAY_MS:
                return None, _Problem(
                    "INVALID_DATE",
                    f'"{raw}" was not a valid date: a date is midnight UTC (YYYY-MM-DD).',
                    prop.name,
                )
            return _iso(ms)[:10], None
        # enumeration
        allowed = {option.value for option in prop.options}
        parts = [p for p in raw.split(";") if p != ""] if prop.multiple else [raw]
        bad = [p for p in parts if p not in allowed]
        if bad:
            return None, _Problem(
                "INVALID_OPTION",
                f'"{bad[0]}" was not one of the allowed options: [{", ".join(sorted(allowed))}]',
                prop.name,
            )
        return (";".join(parts) or None), None

    def _validate(
        self, ot: _ObjectType, properties: Any
    ) -> tuple[dict[int, str | None], list[_Problem]]:
        if not isinstance(properties, Mapping):
            raise _ApiError(400, "VALIDATION_ERROR", "properties must be an object.")
        changes: dict[int, str | None] = {}
        problems: list[_Problem] = []
        for name, raw in properties.items():
            prop = ot.props.get(name)
            if prop is None:
                problems.append(
                    _Problem("PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist', name)
                )
                continue
            if prop.read_only or prop.calculated:
                problems.append(
                    _Problem(
                        "READ_ONLY_VALUE",
                        f'"{name}" is a read only property; its value cannot be set.',
                        name,
                    )
                )
                continue
            value, problem = self._coerce(prop, raw)
            if problem is not None:
                problems.append(problem)
            else:
                changes[ot.slots[name]] = value
        return changes, problems

    def _conflicts(
        self,
        ot: _ObjectType,
        changes: Mapping[int, str | None],
        exclude: int | None,
        pending: dict[tuple[str, str], str],
    ) -> list[_Conflict]:
        """Unique-value conflicts with stored records or earlier inputs of the same batch
        (``pending``: (property, key) -> the input that claimed it; updated here)."""
        out: list[_Conflict] = []
        names = list(ot.slots)
        claims: list[tuple[str, str]] = []
        for slot, value in changes.items():
            name = names[slot]
            if value is None or name not in ot.unique:
                continue
            key = ot.unique_key(name, value)
            holder = ot.unique[name].get(key)
            if holder is not None and holder != exclude:
                existing = str(holder)
            elif (name, key) in pending:
                existing = pending[(name, key)]
            else:
                claims.append((name, key))
                continue
            if ot.type_id == "0-1" and name == "email":
                message = f"Contact already exists. Existing ID: {existing}"
            else:
                message = (
                    f'A {ot.singular.lower()} with {name} "{value}" already exists.'
                    f" Existing ID: {existing}"
                )
            out.append(_Conflict(message, name, existing))
        if not out:
            marker = str(exclude) if exclude is not None else "(this batch)"
            for claim in claims:
                pending[claim] = marker
        return out

    # -- rendering records -----------------------------------------------------------------

    def _history(self, ot: _ObjectType, rec: _Rec, name: str) -> list[dict[str, Any]]:
        if name in ot.derived:
            value = self._value(ot, rec, name)
            at = rec.created if name != ot.modified_prop else rec.updated
            return [{"value": value, "timestamp": _iso(at), "sourceType": "CALCULATED"}]
        slot = ot.slots.get(name)
        if slot is None:
            return []
        entries = rec.hist.get(slot) if rec.hist else None
        if entries is None:
            value = rec.vals[slot] if slot < len(rec.vals) else None
            entries = [] if value is None else [(value, rec.created, rec.src, None)]
        out: list[dict[str, Any]] = []
        for value, at, source, source_id in reversed(entries):
            item: dict[str, Any] = {"value": value, "timestamp": _iso(at), "sourceType": source}
            if source_id is None and source == "INTEGRATION":
                source_id = str(self.app_id)
            if source_id is not None:
                item["sourceId"] = source_id
            out.append(item)
        return out

    def _render(
        self,
        ot: _ObjectType,
        rec: _Rec,
        names: Sequence[str] | None,
        *,
        history: Sequence[str] = (),
        snap: _Snap | None = None,
        extra: Iterable[str] = (),
    ) -> dict[str, Any]:
        wanted = ot.default_props if names is None else names
        props: dict[str, str | None] = {}
        for name in (*wanted, *extra, "createdate", ot.modified_prop, "hs_object_id"):
            if name in ot.props and name not in props:
                props[name] = self._value(ot, rec, name, snap)
        archived_at = rec.archived_at if snap is None else snap[2]
        updated = rec.updated if snap is None else snap[1]
        body: dict[str, Any] = {
            "id": str(rec.id),
            "properties": props,
            "createdAt": _iso(rec.created),
            "updatedAt": _iso(updated),
            "archived": archived_at is not None,
        }
        if archived_at is not None:
            body["archivedAt"] = _iso(archived_at)
        if history:
            body["propertiesWithHistory"] = {
                name: self._history(ot, rec, name) for name in history if name in ot.props
            }
        return body

    def _source(self) -> tuple[str, str | None]:
        return ("INTEGRATION", str(self.app_id))

    # -- list --------------------------------------------------------------------------------

    @staticmethod
    def _cursor(rid: int) -> str:
        return base64.urlsafe_b64encode(str(rid).encode()).decode().rstrip("=")

    @staticmethod
    def _uncursor(after: str) -> int:
        try:
            padded = after + "=" * (-len(after) % 4)
            return int(base64.urlsafe_b64decode(padded.encode()).decode())
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise _ApiError(400, "VALIDATION_ERROR", f"Invalid paging cursor: {after!r}") from None

    def _list(self, request: httpx.Request, ot: _ObjectType, _: str | None) -> httpx.Response:
        params = request.url.params
        names = self._names(params.get_list("properties")) if "properties" in params else None
        history = self._names(params.get_list("propertiesWithHistory"))
        archived = self._bool_param(params, "archived")
        limit = self._int(params.get("limit"), "limit", 10)
        cap = _MAX_LIST_WITH_HISTORY if history else _MAX_LIST
        if not 1 <= limit <= cap:
            raise _ApiError(
                400,
                "VALIDATION_ERROR",
                f"limit must be between 1 and {cap}"
                + (" when propertiesWithHistory is requested" if history else ""),
                context={"limit": [str(limit)]},
            )
        start = self._uncursor(params["after"]) if params.get("after") else 0
        ids, recs = ot.ids, ot.recs
        i = bisect.bisect_left(ids, start)
        page: list[_Rec] = []
        after: int | None = None
        while i < len(ids):
            rec = recs[ids[i]]
            i += 1
            if (rec.archived_at is not None) != archived:
                continue
            if len(page) == limit:
                after = rec.id
                break
            page.append(rec)
        body: dict[str, Any] = {
            "results": [self._render(ot, rec, names, history=history) for rec in page]
        }
        if after is not None:
            cursor = self._cursor(after)
            link = request.url.copy_set_param("after", cursor)
            body["paging"] = {"next": {"after": cursor, "link": str(link)}}
        return self._json(200, body)

    # -- search ------------------------------------------------------------------------------

    def _keyer(self, ot: _ObjectType, name: str) -> Callable[[str], Any]:
        """Text -> comparable key for a property (raises ValueError on bad text)."""
        prop = ot.props[name]
        if prop.type == "number":

            def number(text: str) -> Any:
                value = _number(text)
                if value is None:
                    raise ValueError(text)
                return Decimal(value)

            return number
        if prop.type in ("datetime", "date"):

            def moment(text: str) -> Any:
                value = _parse_datetime(text)
                if value is None:
                    raise ValueError(text)
                return value

            return moment
        return str.casefold

    def _record_keys(self, ot: _ObjectType, name: str) -> Callable[[_Rec, _Snap], list[Any] | None]:
        """(record, indexed state) -> the property's comparable keys (None: no value)."""
        if name == "hs_object_id":
            return lambda rec, snap: [Decimal(rec.id)]
        if name == "createdate":
            return lambda rec, snap: [rec.created]
        if name == ot.modified_prop:
            return lambda rec, snap: [snap[1]]
        slot = ot.slots[name]
        keyer = self._keyer(ot, name)
        multiple = ot.props[name].multiple

        def keys(rec: _Rec, snap: _Snap) -> list[Any] | None:
            vals = snap[0]
            value = vals[slot] if slot < len(vals) else None
            if value is None:
                return None
            parts = value.split(";") if multiple else [value]
            try:
                return [keyer(part) for part in parts]
            except ValueError:
                return None

        return keys

    def _compile_filter(self, ot: _ObjectType, raw: Any) -> Callable[[_Rec, _Snap], bool]:
        if not isinstance(raw, dict):
            raise _ApiError(400, "VALIDATION_ERROR", "Each filter must be an object.")
        name = raw.get("propertyName")
        operator = raw.get("operator")
        if not isinstance(name, str) or name not in ot.props:
            raise _ApiError(
                400,
                "VALIDATION_ERROR",
                f"There was a problem with the request: property {name!r} does not exist.",
            )
        if operator not in _OPERATORS:
            raise _ApiError(400, "VALIDATION_ERROR", f"Unknown filter operator: {operator!r}.")
        keys = self._record_keys(ot, name)
        keyer = self._keyer(ot, name)

        def operand(key: str) -> Any:
            value = raw.get(key)
            if value is None or isinstance(value, dict | list):
                raise _ApiError(400, "VALIDATION_ERROR", f"Filter on {name} needs {key}.")
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            try:
                return keyer(text)
            except ValueError:
                raise _ApiError(
                    400, "VALIDATION_ERROR", f"{text!r} is not a valid value for {name}."
                ) from None

        if operator == "HAS_PROPERTY":
            return lambda rec, snap: keys(rec, snap) is not None
        if operator == "NOT_HAS_PROPERTY":
            return lambda rec, snap: keys(rec, snap) is None
        if operator in ("IN", "NOT_IN"):
            values = raw.get("values")
            if not isinstance(values, list):
                raise _ApiError(400, "VALIDATION_ERROR", f"{operator} on {name} needs values.")
            wanted = set()
            for item in values:
                try:
                    wanted.add(keyer(str(item)))
                except ValueError:
                    raise _ApiError(
                        400, "VALIDATION_ERROR", f"{item!r} is not a valid value for {name}."
                    ) from None
            inside: bool = operator == "IN"
            return lambda rec, snap: (any(k in wanted for k in (keys(rec, snap) or ()))) == inside
        if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
            token = str(raw.get("value", "")).casefold()
            contains: bool = operator == "CONTAINS_TOKEN"

            def has_token(rec: _Rec, snap: _Snap) -> bool:
                found = keys(rec, snap)
                if found is None:
                    return not contains
                text = " ".join(str(k) for k in found).casefold()
                words = re.split(r"[^\w@.]+", text)
                hit = any(fnmatch.fnmatchcase(w, token) for w in (*words, text))
                return hit == contains

            return has_token
        if operator == "BETWEEN":
            low, high = operand("value"), operand("highValue")
            return lambda rec, snap: any(low <= k <= high for k in (keys(rec, snap) or ()))
        value = operand("value")
        compare: Callable[[Any], bool] = {
            "EQ": lambda k: k == value,
            "NEQ": lambda k: k == value,
            "LT": lambda k: k < value,
            "LTE": lambda k: k <= value,
            "GT": lambda k: k > value,
            "GTE": lambda k: k >= value,
        }[operator]
        if operator == "NEQ":
            return lambda rec, snap: not any(compare(k) for k in (keys(rec, snap) or ()))
        return lambda rec, snap: any(compare(k) for k in (keys(rec, snap) or ()))

    def _sorts(self, ot: _ObjectType, raw: Any) -> list[tuple[str, bool]]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise _ApiError(400, "VALIDATION_ERROR", "sorts must be a list.")
        out: list[tuple[str, bool]] = []
        for item in raw:
            if isinstance(item, str):
                descending = item.startswith("-")
                name = item.lstrip("-")
            elif isinstance(item, dict):
                name = item.get("propertyName", "")
                direction = str(item.get("direction", "ASCENDING")).upper()
                if direction not in ("ASCENDING", "DESCENDING"):
                    raise _ApiError(
                        400, "VALIDATION_ERROR", f"Unknown sort direction {direction!r}."
                    )
                descending = direction == "DESCENDING"
            else:
                raise _ApiError(400, "VALIDATION_ERROR", "Each sort must be a string or an object.")
            if name not in ot.props:
                raise _ApiError(
                    400, "VALIDATION_ERROR", f"Cannot sort by unknown property {name!r}."
                )
            out.append((name, descending))
        return out

    def _search(self, request: httpx.Request, ot: _ObjectType, _: str | None) -> httpx.Response:
        body = self._body(request)
        groups = body.get("filterGroups") or []
        if not isinstance(groups, list):
            raise _ApiError(400, "VALIDATION_ERROR", "filterGroups must be a list.")
        if len(groups) > _MAX_FILTER_GROUPS:
            raise _ApiError(
                400,
                "VALIDATION_ERROR",
                f"Too many filter groups ({len(groups)}); the maximum is {_MAX_FILTER_GROUPS}.",
            )
        compiled: list[list[Callable[[_Rec, _Snap], bool]]] = []
        total_filters = 0
        for group in groups:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list):
                raise _ApiError(400, "VALIDATION_ERROR", "Each filter group needs filters.")
            if len(filters) > _MAX_FILTERS_PER_GROUP:
                raise _ApiError(
                    400,
                    "VALIDATION_ERROR",
                    f"Too many filters in a group ({len(filters)}); the maximum is"
                    f" {_MAX_FILTERS_PER_GROUP}.",
                )
            total_filters += len(filters)
            compiled.append([self._compile_filter(ot, f) for f in filters])
        if total_filters > _MAX_FILTERS:
            raise _ApiError(
                400,
                "VALIDATION_ERROR",
                f"Too many filters ({total_filters}); the maximum is {_MAX_FILTERS} in all.",
            )
        sorts = self._sorts(ot, body.get("sorts"))
        names = self._body_names(body, "properties")
        if names == []:
            names = None
        limit = self._int(body.get("limit"), "limit", 10)
        if not 0 <= limit <= _MAX_SEARCH:
            raise _ApiError(400, "VALIDATION_ERROR", f"limit must be between 0 and {_MAX_SEARCH}.")
        offset = self._int(body.get("after"), "after", 0)
        if offset < 0:
            raise _ApiError(400, "VALIDATION_ERROR", "after must not be negative.")
        if offset >= _SEARCH_RESULT_CAP:
            raise _ApiError(
                400,
                "VALIDATION_ERROR",
                "The search endpoints are limited to 10,000 total results for any given query;"
                f" after={offset} pages beyond that. Narrow the query (for example by a window of"
                " hs_lastmodifieddate or hs_object_id) instead.",
                context={"after": [str(offset)]},
            )
        query = body.get("query")
        words = str(query).casefold().split() if query else []
        now = self._now_ms()
        matches: list[tuple[_Rec, _Snap]] = []
        for rec in ot.recs.values():
            snap = self._indexed(rec, now)
            if snap is None or snap[2] is not None:
                continue
            if compiled and not any(all(f(rec, snap) for f in group) for group in compiled):
                continue
            if words and not self._query_matches(ot, snap, words):
                continue
            matches.append((rec, snap))
        for name, descending in reversed(sorts):
            keys = self._record_keys(ot, name)
            present = [(m, keys(*m)) for m in matches]
            have = [(m, k) for m, k in present if k is not None]
            have.sort(key=lambda pair: pair[1][0], reverse=descending)
            matches = [m for m, _k in have] + [m for m, k in present if k is None]
        total = len(matches)
        end = min(offset + limit, total, _SEARCH_RESULT_CAP)
        page = matches[offset:end]
        out: dict[str, Any] = {
            "total": total,
            "results": [self._render(ot, rec, names, snap=snap) for rec, snap in page],
        }
        if limit > 0 and end < total:
            out["paging"] = {"next": {"after": str(end)}}
        return self._json(200, out)

    def _query_matches(self, ot: _ObjectType, snap: _Snap, words: list[str]) -> bool:
        texts = [
            (snap[0][slot] or "").casefold()
            for name, slot in ot.slots.items()
            if slot < len(snap[0])
            and ot.props.get(name) is not None
            and ot.props[name].type in ("string", "phone_number", "enumeration")
        ]
        haystack = " ".join(texts)
        return all(word in haystack for word in words)

    # -- single objects ----------------------------------------------------------------------

    def _find(
        self, ot: _ObjectType, key: str, id_property: str | None, archived: bool
    ) -> _Rec | None:
        if id_property and id_property != "hs_object_id":
            if id_property not in ot.unique:
                raise _ApiError(
                    400,
                    "VALIDATION_ERROR",
                    f"{id_property} is not a unique property of {ot.name}; it cannot be an"
                    " idProperty.",
                )
            if archived:
                slot = ot.slots[id_property]
                wanted = ot.unique_key(id_property, key)
                for rec in ot.recs.values():
                    value = rec.vals[slot] if slot < len(rec.vals) else None
                    if (
                        rec.archived_at is not None
                        and value is not None
                        and ot.unique_key(id_property, value) == wanted
                    ):
                        return rec
                return None
            rid = ot.unique[id_property].get(ot.unique_key(id_property, key))
            return ot.recs.get(rid) if rid is not None else None
        try:
            found = ot.recs.get(int(key))
        except ValueError:
            return None
        if found is None or (found.archived_at is not None) != archived:
            return None
        return found

    def _not_found(self, ot: _ObjectType, key: str) -> _ApiError:
        return _ApiError(
            404,
            "OBJECT_NOT_FOUND",
            "Object not found.  objectId are usually numeric.",
            context={"id": [key]},
        )

    def _get_one(self, request: httpx.Request, ot: _ObjectType, key: str | None) -> httpx.Response:
        params = request.url.params
        names = self._names(params.get_list("properties")) if "properties" in params else None
        history = self._names(params.get_list("propertiesWithHistory"))
        archived = self._bool_param(params, "archived")
        rec = self._find(ot, key or "", params.get("idProperty"), archived)
        if rec is None:
            raise self._not_found(ot, key or "")
        return self._json(200, self._render(ot, rec, names, history=history))

    def _write_failure(
        self, problems: Sequence[_Problem], conflicts: Sequence[_Conflict]
    ) -> _ApiError:
        if problems:
            return _ApiError(
                400,
                "VALIDATION_ERROR",
                _problems_message(problems),
                errors=_problem_details(problems),
            )
        first = conflicts[0]
        return _ApiError(409, "CONFLICT", first.message, context={"existingId": [first.existing]})

    def _create_one(self, request: httpx.Request, ot: _ObjectType, _: str | None) -> httpx.Response:
        body = self._body(request)
        changes, problems = self._validate(ot, body.get("properties", {}))
        conflicts = [] if problems else self._conflicts(ot, changes, None, {})
        if problems or conflicts:
            raise self._write_failure(problems, conflicts)
        rec = self._new_record(ot, changes, "INTEGRATION", self._now_ms())
        names = list(body.get("properties", {}))
        return self._json(201, self._render(ot, rec, None, extra=names))

    def _update_one(
        self, request: httpx.Request, ot: _ObjectType, key: str | None
    ) -> httpx.Response:
        body = self._body(request)
        rec = self._find(ot, key or "", request.url.params.get("idProperty"), False)
        if rec is None:
            raise self._not_found(ot, key or "")
        changes, problems = self._validate(ot, body.get("properties", {}))
        conflicts = [] if problems else self._conflicts(ot, changes, rec.id, {})
        if problems or conflicts:
            raise self._write_failure(problems, conflicts)
        self._apply(ot, rec, changes, self._source(), self._now_ms())
        names = list(body.get("properties", {}))
        return self._json(200, self._render(ot, rec, None, extra=names))

    def _archive_one(
        self, request: httpx.Request, ot: _ObjectType, key: str | None
    ) -> httpx.Response:
        rec = self._find(ot, key or "", None, False)
        if rec is not None:
            self._set_archived(ot, rec, True, self._now_ms())
        return httpx.Response(204)

    # -- batch -------------------------------------------------------------------------------

    def _inputs(self, body: Mapping[str, Any]) -> list[Any]:
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            raise _ApiError(400, "VALIDATION_ERROR", "inputs must be a list.")
        if len(inputs) > _MAX_BATCH:
            raise _ApiError(
                400,
                "VALIDATION_ERROR",
                f"Batch input is limited to {_MAX_BATCH} inputs; got {len(inputs)}.",
                context={"inputs": [str(len(inputs))]},
            )
        for item in inputs:
            if not isinstance(item, dict):
                raise _ApiError(400, "VALIDATION_ERROR", "Each input must be an object.")
        return inputs

    @staticmethod
    def _input_id(item: Mapping[str, Any]) -> str:
        value = item.get("id")
        if value is None or isinstance(value, dict | list | bool):
            raise _ApiError(400, "VALIDATION_ERROR", "Each input needs an id.")
        return str(value)

    @staticmethod
    def _std_error(
        category: str,
        message: str,
        context: Mapping[str, list[str]],
        errors: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        return {
            "status": "error",
            "category": category,
            "message": message,
            "context": dict(context),
            "errors": list(errors),
            "links": {},
        }

    def _batch_answer(
        self, results: list[dict[str, Any]], errors: list[dict[str, Any]], started: int, ok: int
    ) -> httpx.Response:
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": _iso(started),
            "completedAt": _iso(self._now_ms()),
        }
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
            return self._json(207, body)
        return self._json(ok, body)

    def _batch_read(self, request: httpx.Request, ot: _ObjectType, _: str | None) -> httpx.Response:
        started = self._now_ms()
        body = self._body(request)
        inputs = self._inputs(body)
        names = self._body_names(body, "properties")
        if names == []:
            names = None
        history = self._body_names(body, "propertiesWithHistory") or []
        id_property = body.get("idProperty")
        archived = self._bool_param(request.url.params, "archived")
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        seen: set[int] = set()
        for item in inputs:
            key = self._input_id(item)
            rec = self._find(ot, key, id_property, archived)
            if rec is None:
                missing.append(key)
            elif rec.id not in seen:
                seen.add(rec.id)
                results.append(self._render(ot, rec, names, history=history))
        errors = []
        if missing:
            errors.append(
                self._std_error(
                    "OBJECT_NOT_FOUND",
                    f"Could not get some {ot.singular} objects, they may be deleted or not exist."
                    " Check that ids are valid.",
                    {"ids": missing},
                )
            )
        return self._batch_answer(results, errors, started, 200)

    def _record_error(
        self,
        context: Mapping[str, list[str]],
        problems: Sequence[_Problem],
        conflicts: Sequence[_Conflict],
    ) -> dict[str, Any]:
        if problems:
            return self._std_error(
                "VALIDATION_ERROR",
                _problems_message(problems),
                context,
                _problem_details(problems),
            )
        first = conflicts[0]
        return self._std_error(
            "CONFLICT",
            first.message,
            {**context, "existingId": [first.existing]},
            [{"message": first.message, "code": "CONFLICT", "in": first.name}],
        )

    def _batch_create(
        self, request: httpx.Request, ot: _ObjectType, _: str | None
    ) -> httpx.Response:
        started = self._now_ms()
        inputs = self._inputs(self._body(request))
        traces = [item.get("objectWriteTraceId") for item in inputs]
        multi_status = all(isinstance(t, str) and t for t in traces) and len(set(traces)) == len(
            traces
        )
        pending: dict[tuple[str, str], str] = {}
        plans: list[tuple[dict[int, str | None] | None, dict[str, Any] | None]] = []
        for index, item in enumerate(inputs):
            changes, problems = self._validate(ot, item.get("properties", {}))
            conflicts = [] if problems else self._conflicts(ot, changes, None, pending)
            if problems or conflicts:
                trace = traces[index]
                context = {"objectWriteTraceId": [str(trace)]} if multi_status else {}
                plans.append((None, self._record_error(context, problems, conflicts)))
                if not multi_status:
                    raise self._write_failure(problems, conflicts)
            else:
                plans.append((changes, None))
        now = self._now_ms()
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for index, (planned, error) in enumerate(plans):
            if error is not None or planned is None:
                errors.append(error or {})
                continue
            rec = self._new_record(ot, planned, "INTEGRATION", now)
            names = list(inputs[index].get("properties", {}))
            rendered = self._render(ot, rec, None, extra=names)
            if traces[index] is not None:
                rendered["objectWriteTraceId"] = str(traces[index])
            results.append(rendered)
        return self._batch_answer(results, errors, started, 201)

    def _batch_update(
        self, request: httpx.Request, ot: _ObjectType, _: str | None
    ) -> httpx.Response:
        started = self._now_ms()
        body = self._body(request)
        inputs = self._inputs(body)
        keys = [self._input_id(item) for item in inputs]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise _ApiError(
                400,
                "VALIDATION_ERROR",
                f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique",
                context={"ids": duplicates},
            )
        pending: dict[tuple[str, str], str] = {}
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        missing: list[str] = []
        now = self._now_ms()
        for item, key in zip(inputs, keys, strict=True):
            rec = self._find(ot, key, item.get("idProperty") or body.get("idProperty"), False)
            if rec is None:
                missing.append(key)
                continue
            changes, problems = self._validate(ot, item.get("properties", {}))
            conflicts = [] if problems else self._conflicts(ot, changes, rec.id, pending)
            if problems or conflicts:
                errors.append(self._record_error({"ids": [key]}, problems, conflicts))
                continue
            self._apply(ot, rec, changes, self._source(), now)
            results.append(self._render(ot, rec, None, extra=list(item.get("properties", {}))))
        if missing:
            errors.insert(
                0,
                self._std_error(
                    "OBJECT_NOT_FOUND",
                    f"Could not update some {ot.singular} objects, they may be deleted or not"
                    " exist. Check that ids are valid.",
                    {"ids": missing},
                ),
            )
        return self._batch_answer(results, errors, started, 200)

    def _batch_upsert(
        self, request: httpx.Request, ot: _ObjectType, _: str | None
    ) -> httpx.Response:
        started = self._now_ms()
        body = self._body(request)
        inputs = self._inputs(body)
        pending: dict[tuple[str, str], str] = {}
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        now = self._now_ms()
        for item in inputs:
            key = self._input_id(item)
            id_property = item.get("idProperty") or body.get("idProperty")
            if not isinstance(id_property, str) or id_property not in ot.unique:
                raise _ApiError(
                    400,
                    "VALIDATION_ERROR",
                    f"Upsert needs an idProperty that is a unique property of {ot.name};"
                    f" got {id_property!r}.",
                )
            properties = item.get("properties", {})
            changes, problems = self._validate(ot, properties)
            rec = self._find(ot, key, id_property, False)
            if not problems:
                coerced, problem = self._coerce(ot.props[id_property], key)
                if problem is not None:
                    problems.append(problem)
                else:
                    changes[ot.slots[id_property]] = coerced
            exclude = rec.id if rec is not None else None
            conflicts = [] if problems else self._conflicts(ot, changes, exclude, pending)
            if problems or conflicts:
                errors.append(self._record_error({"ids": [key]}, problems, conflicts))
                continue
            created = rec is None
            if rec is None:
                rec = self._new_record(ot, changes, "INTEGRATION", now)
            else:
                self._apply(ot, rec, changes, self._source(), now)
            rendered = self._render(ot, rec, None, extra=[*properties, id_property])
            rendered["new"] = created
            if item.get("objectWriteTraceId") is not None:
                rendered["objectWriteTraceId"] = str(item["objectWriteTraceId"])
            results.append(rendered)
        return self._batch_answer(results, errors, started, 200)

    def _batch_archive(
        self, request: httpx.Request, ot: _ObjectType, _: str | None
    ) -> httpx.Response:
        inputs = self._inputs(self._body(request))
        now = self._now_ms()
        for item in inputs:
            rec = self._find(ot, self._input_id(item), None, False)
            if rec is not None:
                self._set_archived(ot, rec, True, now)
        return httpx.Response(204)

    # -- properties --------------------------------------------------------------------------

    def _properties(self, request: httpx.Request, ot: _ObjectType, _: str | None) -> httpx.Response:
        return self._json(200, {"results": [p.to_json() for p in ot.props.values()]})

    def _property(
        self, request: httpx.Request, ot: _ObjectType, name: str | None
    ) -> httpx.Response:
        prop = ot.props.get(name or "")
        if prop is None:
            raise _ApiError(
                404,
                "OBJECT_NOT_FOUND",
                f"Unable to find property {name} for object type {ot.type_id}",
                context={"propertyName": [name or ""]},
            )
        return self._json(200, prop.to_json())
