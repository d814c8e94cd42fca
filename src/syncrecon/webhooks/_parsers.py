"""Payload parsers: turn a provider's webhook body into normalized change events.

Each parser is a frozen attrs class implementing :class:`~syncrecon.webhooks.PayloadParser`
for one provider's documented payload shape, and depends on no provider SDK:

- :class:`HubSpotParser`: HubSpot app webhooks (a JSON array of up to 100 notifications).
- :class:`StripeParser`: Stripe events (``data.object`` with ``previous_attributes``).
- :class:`ZendeskParser`: Zendesk event-subscription webhooks (``zen:event-type:...``).
- :class:`GenericJsonParser`: syncrecon's own JSON shape, for Standard Webhooks senders
  (your own systems); its docstring is the contract such a sender follows.

``parse`` decodes the body once and returns a list of :class:`~syncrecon.webhooks.ChangeEvent`
values, possibly empty: notifications that say nothing a sync can use (a Stripe
``invoice.paid``, a HubSpot ``associationChange``, a Zendesk ``comment_added``) produce no
event and are not an error. A body that is not UTF-8 JSON, or not the shape the parser
expects, raises :class:`~syncrecon.MalformedPayloadError` (a 400 answer) with a short message
that never repeats the sender's data; no other exception escapes ``parse`` for any body.
Specifically, ``MalformedPayloadError`` is raised for:

* bytes that are not UTF-8, or text that is not JSON (``NaN``, ``Infinity`` and numbers too
  large for a float are refused as well, since they cannot be compared or stored faithfully);
* escaped lone surrogates (``"\\ud800"``), which no storage can encode;
* nesting deeper than the decoder allows, or a field value nested more than 32 levels deep;
* a missing required key, or one of the wrong type: a timestamp that is not an integer (or an
  ISO 8601 string with a UTC offset, where the provider sends text), a record id that is
  neither a non-negative integer nor a non-empty string, an array item that is not an object.

Record keys, event ids and dedupe keys are always strings, and ``occurred_at`` is an aware UTC
datetime. Dedupe keys are unique within one system, not across systems.

Find a parser by name with :func:`parser_for`, and register one for your own system with
:func:`register_parser`::

    from syncrecon.webhooks import parser_for, register_parser

    register_parser("billing", lambda *, system: BillingParser(system=system))
    parser = parser_for("billing")
    events = parser.parse(raw_body, headers)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NoReturn, Protocol

import attrs

from .._exceptions import ConfigurationError, MalformedPayloadError
from ._events import ChangeEvent, EventKind, PayloadParser

__all__ = [
    "GenericJsonParser",
    "HubSpotParser",
    "ParserFactory",
    "StripeParser",
    "ZendeskParser",
    "parser_for",
    "register_parser",
]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Deepest nesting accepted in a field value (a list or object counts one level).
_MAX_VALUE_DEPTH: Final = 32
#: Longest accepted record key, event id or ``webhook-id``.
_MAX_ID_LENGTH: Final = 256
#: Longest accepted ISO 8601 timestamp.
_MAX_TIME_LENGTH: Final = 64
#: A JSON escape of a UTF-16 surrogate; only these can smuggle a lone surrogate into a str.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


# --------------------------------------------------------------------------------------------
# Decoding and shape checks shared by the parsers


def _malformed(message: str) -> NoReturn:
    raise MalformedPayloadError(message)


def _reject_constant(name: str) -> NoReturn:
    raise MalformedPayloadError(f"the body contains {name}, which is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedPayloadError("the body contains a number too large for a float")
    return value


_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _load_json(body: bytes) -> Any:
    """Decode ``body`` as strict UTF-8 JSON, once."""
    if isinstance(body, bytearray | memoryview):
        body = bytes(body)
    if not isinstance(body, bytes):
        _malformed("the body is not bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        _malformed("the body is not valid UTF-8")
    try:
        value = _DECODER.decode(text)
    except MalformedPayloadError:
        raise
    except RecursionError:
        _malformed("the body is nested too deeply")
    except ValueError:  # JSONDecodeError, or an integer longer than Python's digit limit
        _malformed("the body is not valid JSON")
    if _SURROGATE_ESCAPE.search(text) is not None:
        # Rare: the body escapes a surrogate. A pair decodes to one character; a lone one
        # would make every later encode (storage, logs) fail, so refuse it here.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            _malformed("the body contains a lone surrogate escape")
        except RecursionError:
            _malformed("the body is nested too deeply")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _malformed(f"{what} is not a JSON object")
    return value


def _text(obj: Mapping[str, Any], name: str, where: str = "") -> str:
    """The required non-empty string ``obj[name]``."""
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        _malformed(f"{where}{name} is missing or not a non-empty string")
    return value


def _key(value: Any, what: str) -> str:
    """A record key or id: a non-negative integer or a non-empty string, as a string."""
    if type(value) is int and value >= 0:
        text = str(value)
    elif isinstance(value, str) and value:
        text = value
    else:
        _malformed(f"{what} is missing or not a non-negative integer or non-empty string")
    if len(text) > _MAX_ID_LENGTH:
        _malformed(f"{what} is longer than {_MAX_ID_LENGTH} characters")
    return text


def _since_epoch(value: Any, what: str, unit: str) -> datetime:
    """An integer count of ``unit`` (``"milliseconds"`` or ``"seconds"``) since the epoch."""
    if type(value) is not int or value < 0:
        _malformed(f"{what} is missing or not a non-negative integer")
    try:
        return _EPOCH + timedelta(**{unit: value})
    except OverflowError:
        _malformed(f"{what} is out of range")


def _iso_time(value: Any, what: str) -> datetime:
    """An ISO 8601 timestamp with a UTC offset, as an aware UTC datetime."""
    if not isinstance(value, str) or len(value) > _MAX_TIME_LENGTH:
        _malformed(f"{what} is missing or not an ISO 8601 timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _malformed(f"{what} is not an ISO 8601 timestamp")
    if parsed.tzinfo is None:
        _malformed(f"{what} has no UTC offset")
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        _malformed(f"{what} is out of range")


def _value(value: Any, what: str) -> Any:
    """Return a field value after checking that it is not nested absurdly deep."""
    if isinstance(value, dict | list):
        stack: list[tuple[Any, int]] = [(value, 1)]
        while stack:
            current, depth = stack.pop()
            if depth > _MAX_VALUE_DEPTH:
                _malformed(f"{what} is nested more than {_MAX_VALUE_DEPTH} levels deep")
            for child in current.values() if isinstance(current, dict) else current:
                if isinstance(child, dict | list):
                    stack.append((child, depth + 1))
    return value


def _optional_text(value: Any) -> str | None:
    """An informational string (who made a change): used when it is one, ignored otherwise."""
    return value if isinstance(value, str) and value else None


def _change_event(**fields: Any) -> ChangeEvent:
    # ChangeEvent's ``converter=tuple`` on ``merged_keys`` leaves mypy an unsolved type
    # variable for that argument; keyword arguments through ``Any`` sidestep it.
    return ChangeEvent(**fields)


def _check_system(_instance: object, _attribute: object, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError("system must be a non-empty string (the connector's name)")


# --------------------------------------------------------------------------------------------
# HubSpot

#: HubSpot's ids of its standard object types, sent as ``objectTypeId`` with ``object.*``
#: subscription types; mapped to the names the legacy ``contact.*`` forms use.
_HUBSPOT_OBJECT_TYPE_IDS: Final = {
    "0-1": "contact",
    "0-2": "company",
    "0-3": "deal",
    "0-5": "ticket",
    "0-7": "product",
    "0-8": "line_item",
}
_HUBSPOT_ACTIONS: Final = {
    "creation": EventKind.CREATE,
    "restore": EventKind.CREATE,
    "deletion": EventKind.DELETE,
    "privacyDeletion": EventKind.DELETE,
    "propertyChange": EventKind.UPDATE,
    "merge": EventKind.MERGE,
}


def _object_types(value: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ConfigurationError("object_types must map non-empty strings to non-empty strings")
    return dict(value)


def _digest(parts: list[str | None]) -> str:
    """A digest of ``parts``; each is length-prefixed, so no two lists share an encoding."""
    text = "".join("~" if part is None else f"{len(part)}:{part}" for part in parts)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@attrs.frozen(kw_only=True)
class HubSpotParser:
    """Parses HubSpot app webhooks: a JSON array of notifications (HubSpot sends up to 100).

    Every item needs ``eventId``, ``subscriptionId``, ``portalId``, ``occurredAt``
    (milliseconds since the epoch, an integer) and ``subscriptionType``. The subscription
    type's action decides the event:

    - ``propertyChange``: an :attr:`~EventKind.UPDATE` of ``propertyName`` to
      ``propertyValue``, kept exactly as HubSpot sends it (a string; ``null`` is accepted
      too); transforms belong to field mappings;
    - ``creation`` and ``restore`` (a deleted record came back): a
      :attr:`~EventKind.CREATE`;
    - ``deletion`` and ``privacyDeletion``: a :attr:`~EventKind.DELETE`;
    - ``merge``: a :attr:`~EventKind.MERGE` into ``newObjectId`` when HubSpot created a new
      record for the result, otherwise into ``primaryObjectId``; the other ids
      (``primaryObjectId`` and ``mergedObjectIds``) become ``merged_keys``;
    - anything else (``associationChange``, ``conversation.newMessage``, ...): no event.

    ``key`` is ``objectId`` as a string. ``object_type`` is the prefix of the subscription
    type (``deal`` for ``deal.propertyChange``); for the generic ``object.*`` types it comes
    from ``objectTypeId``, with HubSpot's standard ids (``0-1``, ``0-3``, ...) read as the
    same names (``contact``, ``deal``, ...). ``object_types`` renames those names to your
    connector's object types (``{"deal": "deals", "2-123456": "vehicle"}``); names not in it
    are kept. ``change_source`` is ``changeSource`` (``CRM_UI``, ``INTEGRATION``, ``API``).

    HubSpot's ``eventId`` is not guaranteed to be unique, so ``dedupe_key`` is
    ``eventId:digest``, where the digest covers what makes a notification the same event:
    portal, subscription, subscription type, object type id, event id, ``occurredAt``, the
    object id and, for property changes, the property's name and new value (for merges, the
    ids involved). ``attemptNumber`` is left out: a retry of a notification yields the same
    keys, while two different changes are never given the same key.
    """

    system: str = attrs.field(default="hubspot", validator=_check_system)
    object_types: Mapping[str, str] = attrs.field(factory=dict, converter=_object_types, hash=False)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[ChangeEvent]:
        """The change events in one HubSpot request ``body``; ``headers`` are not used."""
        payload = _load_json(body)
        if not isinstance(payload, list):
            _malformed("a HubSpot body is a JSON array of notifications")
        events: list[ChangeEvent] = []
        for index, item in enumerate(payload):
            event = self._event(item, f"item {index}: ")
            if event is not None:
                events.append(event)
        return events

    def _event(self, item: Any, where: str) -> ChangeEvent | None:
        item = _object(item, f"{where}the notification")
        event_id = _key(item.get("eventId"), f"{where}eventId")
        subscription_id = _key(item.get("subscriptionId"), f"{where}subscriptionId")
        portal_id = _key(item.get("portalId"), f"{where}portalId")
        occurred_ms = item.get("occurredAt")
        occurred_at = _since_epoch(occurred_ms, f"{where}occurredAt", "milliseconds")
        subscription_type = _text(item, "subscriptionType", where)
        prefix, _, action = subscription_type.rpartition(".")
        if not prefix or not action:
            _malformed(f"{where}subscriptionType is not of the form 'object.action'")
        kind = _HUBSPOT_ACTIONS.get(action)
        if kind is None:
            return None

        type_id: str | None = None
        if prefix == "object":
            type_id = _text(item, "objectTypeId", where)
            name = _HUBSPOT_OBJECT_TYPE_IDS.get(type_id, type_id)
        else:
            name = prefix
        parts: list[str | None] = [
            portal_id,
            subscription_id,
            subscription_type,
            type_id,
            event_id,
            str(occurred_ms),
        ]
        field: str | None = None
        value: str | None = None
        merged_keys: tuple[str, ...] = ()
        if kind is EventKind.MERGE:
            primary = _key(item.get("primaryObjectId"), f"{where}primaryObjectId")
            merged = item.get("mergedObjectIds")
            if not isinstance(merged, list) or not merged:
                _malformed(f"{where}mergedObjectIds is missing or not a non-empty array")
            merged_ids = [_key(each, f"{where}mergedObjectIds item") for each in merged]
            new = item.get("newObjectId")
            key = primary if new is None else _key(new, f"{where}newObjectId")
            merged_keys = tuple(dict.fromkeys(k for k in (primary, *merged_ids) if k != key))
            if not merged_keys:
                _malformed(f"{where}a merge names no record other than the result")
            parts += [key, str(len(merged_keys)), *merged_keys]
        else:
            key = _key(item.get("objectId"), f"{where}objectId")
            parts.append(key)
            if kind is EventKind.UPDATE:
                field = _text(item, "propertyName", where)
                if "propertyValue" not in item:
                    _malformed(f"{where}propertyValue is missing")
                value = item["propertyValue"]
                if value is not None and not isinstance(value, str):
                    _malformed(f"{where}propertyValue is not a string or null")
                parts += [field, value]
        return _change_event(
            system=self.system,
            object_type=self.object_types.get(name, name),
            key=key,
            kind=kind,
            occurred_at=occurred_at,
            event_id=event_id,
            field=field,
            value=value,
            dedupe_key=f"{event_id}:{_digest(parts)}",
            merged_keys=merged_keys,
            change_source=_optional_text(item.get("changeSource")),
        )


# --------------------------------------------------------------------------------------------
# Stripe

_STRIPE_ACTIONS: Final = {
    "created": EventKind.CREATE,
    "updated": EventKind.UPDATE,
    "deleted": EventKind.DELETE,
}


@attrs.frozen(kw_only=True)
class StripeParser:
    """Parses Stripe events (``{"object": "event", "id": "evt_...", "type": ..., ...}``).

    The event needs ``id``, ``type``, ``created`` (seconds since the epoch, an integer) and
    ``data.object``. The last part of ``type`` decides the events:

    - ``*.updated``: one :attr:`~EventKind.UPDATE` per top-level key of
      ``data.previous_attributes``, with the key's *new* value from ``data.object``. A nested
      attribute is reported whole: a change to ``metadata.plan`` is an update of field
      ``metadata`` to the entire new ``metadata`` object (Stripe lists only the changed
      sub-keys in ``previous_attributes``, so the whole new value is the one that is safe to
      write). A key missing from ``data.object`` is reported with the value ``None``;
    - ``*.created``: a :attr:`~EventKind.CREATE`; ``*.deleted``: a :attr:`~EventKind.DELETE`;
    - any other type (``invoice.paid``, ``charge.succeeded``, ...): no event.

    ``key`` is ``data.object.id`` and ``object_type`` is ``data.object.object`` (so
    ``customer.subscription.updated`` reports ``subscription`` records). ``dedupe_key`` is
    the event id for record-level events and ``"<event id>:<field>"`` for updates: a
    redelivered event yields the same keys, and the updates of one event are distinct.
    ``change_source`` is the id of the API request that caused the event (``request.id``),
    or ``None`` when Stripe made the change itself.
    """

    system: str = attrs.field(default="stripe", validator=_check_system)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[ChangeEvent]:
        """The change events in one Stripe event ``body``; ``headers`` are not used."""
        event = _object(_load_json(body), "the body")
        if event.get("object") != "event":
            _malformed('the body is not a Stripe event ("object": "event")')
        event_id = _key(event.get("id"), "id")
        event_type = _text(event, "type")
        occurred_at = _since_epoch(event.get("created"), "created", "seconds")
        data = _object(event.get("data"), "data")
        obj = _object(data.get("object"), "data.object")
        prefix, _, action = event_type.rpartition(".")
        if not prefix or not action:
            _malformed("type is not of the form 'object.action'")
        kind = _STRIPE_ACTIONS.get(action)
        if kind is None:
            return []
        key = _key(obj.get("id"), "data.object.id")
        common: dict[str, Any] = {
            "system": self.system,
            "object_type": _text(obj, "object", "data.object."),
            "key": key,
            "occurred_at": occurred_at,
            "event_id": event_id,
            "change_source": _request_id(event.get("request")),
        }
        if kind is not EventKind.UPDATE:
            return [ChangeEvent(kind=kind, dedupe_key=event_id, **common)]
        previous = _object(data.get("previous_attributes"), "data.previous_attributes")
        events: list[ChangeEvent] = []
        for field in previous:
            if not field:
                _malformed("data.previous_attributes has an empty key")
            events.append(
                ChangeEvent(
                    kind=EventKind.UPDATE,
                    field=field,
                    value=_value(obj.get(field), "a data.object value"),
                    dedupe_key=f"{event_id}:{field}",
                    **common,
                )
            )
        return events


def _request_id(request: Any) -> str | None:
    """``request.id`` (``request`` was the id itself in API versions before 2017-05-25)."""
    if isinstance(request, dict):
        return _optional_text(request.get("id"))
    return _optional_text(request)


# --------------------------------------------------------------------------------------------
# Zendesk

_ZENDESK_PREFIX: Final = "zen:event-type:"
#: Ticket ``<name>_changed`` events whose ``event.current`` is the new value of a ticket
#: field, and that field's name in the Tickets API.
_ZENDESK_TICKET_FIELDS: Final = {
    "agent_assignment": "assignee_id",
    "brand": "brand_id",
    "custom_status": "custom_status_id",
    "description": "description",
    "external_id": "external_id",
    "form": "ticket_form_id",
    "group_assignment": "group_id",
    "organization": "organization_id",
    "priority": "priority",
    "problem_link": "problem_id",
    "requester": "requester_id",
    "status": "status",
    "subject": "subject",
    "submitter": "submitter_id",
    "task_due_at": "due_at",
    "type": "type",
}
_ZENDESK_RECORD_ACTIONS: Final = {
    "created": EventKind.CREATE,
    "undeleted": EventKind.CREATE,
    "deleted": EventKind.DELETE,
    "soft_deleted": EventKind.DELETE,
    "permanently_deleted": EventKind.DELETE,
}


@attrs.frozen(kw_only=True)
class ZendeskParser:
    """Parses Zendesk event-subscription webhooks (``"type": "zen:event-type:..."``).

    The body needs ``type``, ``id`` and ``time`` (ISO 8601 with a UTC offset); events that
    produce a change need ``detail`` with the record's ``id``. ``object_type`` is the
    domain in the type (``ticket``, ``user``, ``organization``) and ``key`` is
    ``detail.id``. The action in the type decides the event:

    - ``created`` and ``undeleted``: a :attr:`~EventKind.CREATE`; ``deleted``,
      ``soft_deleted`` and ``permanently_deleted``: a :attr:`~EventKind.DELETE`;
    - ``<field>_changed``: an :attr:`~EventKind.UPDATE` of ``field`` to ``event.current``.
      Ticket events use the Tickets API's field names (``agent_assignment_changed`` updates
      ``assignee_id``, ``group_assignment_changed`` ``group_id``, ``form_changed``
      ``ticket_form_id``, ``task_due_at_changed`` ``due_at``, ...), and for these
      ``event.current`` is required. ``ticket.tags_changed`` updates ``tags`` to the ticket's
      whole new tag list (``detail.tags``); ``ticket.custom_field_changed`` updates
      ``custom_fields.<id>`` (the id of ``event.custom_field``) to ``event.current.value``.
      Other ``_changed`` events (``user.name_changed``, ...) update ``<field>`` when their
      ``event`` has a ``current`` value, and produce no event otherwise
      (``ticket.followers_changed`` reports users added and removed, not a value);
    - ``ticket.merged``: a :attr:`~EventKind.MERGE` of the ticket into
      ``event.target_ticket_id``, when the payload names it;
    - any other type (``ticket.comment_added``, ``article.published``, ...): no event.

    Values are kept as Zendesk sends them. ``dedupe_key`` is the event's ``id``, which
    Zendesk documents as unique. ``change_source`` is ``detail.via.channel`` (``web``,
    ``api``, ...) when present.
    """

    system: str = attrs.field(default="zendesk", validator=_check_system)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[ChangeEvent]:
        """The change event in one Zendesk event ``body`` (zero or one); ``headers`` unused."""
        event = _object(_load_json(body), "the body")
        event_type = _text(event, "type")
        if not event_type.startswith(_ZENDESK_PREFIX):
            _malformed(f"type does not start with {_ZENDESK_PREFIX!r}")
        event_id = _key(event.get("id"), "id")
        occurred_at = _iso_time(event.get("time"), "time")
        domain, _, action = event_type[len(_ZENDESK_PREFIX) :].partition(".")
        if not domain or not action:
            return []

        kind = _ZENDESK_RECORD_ACTIONS.get(action)
        field: str | None = None
        value: Any = None
        merged_keys: tuple[str, ...] = ()
        if kind is None and action.endswith("_changed"):
            change = self._change(domain, action.removesuffix("_changed"), event)
            if change is None:
                return []
            kind = EventKind.UPDATE
            field, value = change
        elif kind is None and domain == "ticket" and action == "merged":
            target = event.get("event")
            if not isinstance(target, dict) or target.get("target_ticket_id") is None:
                return []
            kind = EventKind.MERGE
        elif kind is None:
            return []

        detail = _object(event.get("detail"), "detail")
        key = _key(detail.get("id"), "detail.id")
        if kind is EventKind.MERGE:
            merged_keys = (key,)
            key = _key(event["event"]["target_ticket_id"], "event.target_ticket_id")
            if merged_keys == (key,):
                _malformed("event.target_ticket_id is the merged ticket itself")
        elif field == "tags" and domain == "ticket":
            value = detail.get("tags")
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                _malformed("detail.tags is missing or not an array of strings")
        via = detail.get("via")
        return [
            _change_event(
                system=self.system,
                object_type=domain,
                key=key,
                kind=kind,
                occurred_at=occurred_at,
                event_id=event_id,
                field=field,
                value=value,
                dedupe_key=event_id,
                merged_keys=merged_keys,
                change_source=_optional_text(via.get("channel")) if isinstance(via, dict) else None,
            )
        ]

    @staticmethod
    def _change(domain: str, name: str, event: dict[str, Any]) -> tuple[str, Any] | None:
        """The field and new value a ``<name>_changed`` event reports, or ``None``."""
        if domain == "ticket" and name == "tags":
            return "tags", None  # the value is the whole list, read from detail.tags
        change = event.get("event")
        if domain == "ticket" and name == "custom_field":
            change = _object(change, "event")
            custom_field = _object(change.get("custom_field"), "event.custom_field")
            field_id = _key(custom_field.get("id"), "event.custom_field.id")
            if "current" not in change:
                _malformed("event.current is missing")
            current = change["current"]
            value = current.get("value") if isinstance(current, dict) else current
            return f"custom_fields.{field_id}", _value(value, "event.current")
        if domain == "ticket" and name in _ZENDESK_TICKET_FIELDS:
            change = _object(change, "event")
            if "current" not in change:
                _malformed("event.current is missing")
            return _ZENDESK_TICKET_FIELDS[name], _value(change["current"], "event.current")
        if isinstance(change, dict) and "current" in change:
            return name, _value(change["current"], "event.current")
        return None


# --------------------------------------------------------------------------------------------
# Generic JSON (Standard Webhooks senders)


def _header(headers: Mapping[str, str], name: str) -> object:
    """The header ``name`` (given in lower case), matched case-insensitively."""
    value: object = headers.get(name)
    if value is None:
        for key, each in headers.items():
            if isinstance(key, str) and key.lower() == name:
                return each
    return value


@attrs.frozen(kw_only=True)
class GenericJsonParser:
    """Parses syncrecon's generic JSON shape: the contract for your own systems' webhooks.

    Send the request the Standard Webhooks way (https://www.standardwebhooks.com): a
    ``webhook-id`` header that is unique per message and is kept when the message is retried
    (required: the event id), ``webhook-timestamp`` and ``webhook-signature``, checked by
    :class:`~syncrecon.webhooks.StandardWebhooksVerifier`. The body is one change, or a JSON
    array of changes, each of this shape::

        {
          "type": "contact.updated",
          "timestamp": "2026-01-31T12:00:00.250Z",
          "data": {
            "id": "c_1042",
            "object_type": "contact",
            "changes": {"email": "ada@example.com", "phone": null},
            "deleted": false
          }
        }

    - ``type`` (required, a non-empty string) is free text for your own use, except that a
      type ending in ``.created`` reports a new record;
    - ``timestamp`` (required) is when the change happened in your system, ISO 8601 with a
      UTC offset (``Z`` or ``+02:00``); it orders changes, so send the source's time, not the
      send time;
    - ``data.id`` (required) is the record's key, a string or a non-negative integer;
      ``data.object_type`` (required) names its object type;
    - ``data.changes`` (optional) maps each changed field to its new value (any JSON value);
    - ``data.deleted`` (optional, default ``false``) reports that the record was deleted;
      ``changes`` are then ignored.

    Each change yields a :attr:`~EventKind.DELETE` when ``deleted`` is true; otherwise a
    :attr:`~EventKind.CREATE` first when ``type`` ends in ``.created``, then one
    :attr:`~EventKind.UPDATE` per entry of ``changes``. Every event's ``event_id`` is the
    ``webhook-id``; ``dedupe_key`` is ``"<webhook-id>:<field>"`` for an update and the
    ``webhook-id`` for a record-level event, with the item's index inserted after the id when
    the body is an array (``"<webhook-id>:<index>:<field>"``), so a retried message yields the
    same keys.
    """

    system: str = attrs.field(validator=_check_system)

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[ChangeEvent]:
        """The change events in one request; ``headers`` must carry ``webhook-id``."""
        webhook_id = _header(headers, "webhook-id")
        if not isinstance(webhook_id, str) or not webhook_id.strip():
            _malformed("the webhook-id header is missing or empty")
        if len(webhook_id) > _MAX_ID_LENGTH:
            _malformed(f"the webhook-id header is longer than {_MAX_ID_LENGTH} characters")
        payload = _load_json(body)
        if not isinstance(payload, list):
            return self._events(payload, webhook_id, "")
        events: list[ChangeEvent] = []
        for index, item in enumerate(payload):
            events += self._events(item, webhook_id, str(index))
        return events

    def _events(self, item: Any, webhook_id: str, index: str) -> list[ChangeEvent]:
        where = f"item {index}: " if index else ""
        item = _object(item, f"{where}the change")
        event_type = _text(item, "type", where)
        occurred_at = _iso_time(item.get("timestamp"), f"{where}timestamp")
        data = _object(item.get("data"), f"{where}data")
        common: dict[str, Any] = {
            "system": self.system,
            "object_type": _text(data, "object_type", f"{where}data."),
            "key": _key(data.get("id"), f"{where}data.id"),
            "occurred_at": occurred_at,
            "event_id": webhook_id,
        }
        prefix = f"{webhook_id}:{index}" if index else webhook_id
        deleted = data.get("deleted", False)
        if not isinstance(deleted, bool):
            _malformed(f"{where}data.deleted is not a boolean")
        changes = _object(data.get("changes", {}), f"{where}data.changes")
        if deleted:
            return [ChangeEvent(kind=EventKind.DELETE, dedupe_key=prefix, **common)]
        events: list[ChangeEvent] = []
        if event_type.endswith(".created"):
            events.append(ChangeEvent(kind=EventKind.CREATE, dedupe_key=prefix, **common))
        for field, value in changes.items():
            if not field:
                _malformed(f"{where}data.changes has an empty field name")
            events.append(
                ChangeEvent(
                    kind=EventKind.UPDATE,
                    field=field,
                    value=_value(value, f"{where}a data.changes value"),
                    dedupe_key=f"{prefix}:{field}",
                    **common,
                )
            )
        return events


# --------------------------------------------------------------------------------------------
# The registry


class ParserFactory(Protocol):
    """Makes a parser for one system; it is called with the system's name as ``system=``.

    A parser class with a keyword ``system`` argument is one (every parser here is), and so
    is ``lambda *, system: MyParser(system, strict=True)``.
    """

    def __call__(self, *, system: str) -> PayloadParser:
        """A new parser whose events name ``system`` as their source."""
        ...


_REGISTRY: dict[str, ParserFactory] = {}


def _registry_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError("a parser's name must be a non-empty string")
    return name.strip().lower()


def register_parser(name: str, factory: ParserFactory, *, replace: bool = False) -> None:
    """Register ``factory`` under ``name`` (case-insensitive), for :func:`parser_for`.

    Raises :class:`~syncrecon.ConfigurationError` (a ``ValueError``) when ``name`` is
    already taken, unless ``replace`` is true, or when ``factory`` is not callable. The
    built-in names are ``hubspot``, ``stripe``, ``zendesk`` and ``generic``.
    """
    key = _registry_name(name)
    if not callable(factory):
        raise ConfigurationError("a parser factory must be callable")
    if key in _REGISTRY and not replace:
        raise ConfigurationError(
            f"a parser is already registered as {key!r}: pass replace=True to replace it"
        )
    _REGISTRY[key] = factory


def parser_for(name: str, *, system: str | None = None) -> PayloadParser:
    """A new parser from the factory registered as ``name`` (case-insensitive).

    Its events name ``system`` as their source; by default, ``name`` in lower case.
    ``parser_for("hubspot", system="hubspot-eu")`` is ``HubSpotParser(system="hubspot-eu")``.
    Raises :class:`~syncrecon.ConfigurationError` when no parser is registered as ``name``,
    or the factory returns something that is not a
    :class:`~syncrecon.webhooks.PayloadParser`.
    """
    key = _registry_name(name)
    factory = _REGISTRY.get(key)
    if factory is None:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigurationError(f"no parser is registered as {key!r} (known: {known})")
    parser = factory(system=key if system is None else system)
    if not isinstance(parser, PayloadParser):
        raise ConfigurationError(f"the factory registered as {key!r} did not return a parser")
    return parser


register_parser("hubspot", HubSpotParser)
register_parser("stripe", StripeParser)
register_parser("zendesk", ZendeskParser)
register_parser("generic", GenericJsonParser)
