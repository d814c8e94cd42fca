"""Tests for the payload parsers: provider samples, dedupe keys, malformed bodies, fuzzing.

The sample payloads are written from each provider's documented shape (HubSpot's webhooks
API, Stripe's event object, Zendesk's event-subscription webhooks); the generic shape is our
own contract. Fuzzing checks the one promise every parser makes: for any body, ``parse``
returns a list of :class:`ChangeEvent` or raises :class:`MalformedPayloadError`, nothing else.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syncrecon.webhooks._parsers as parsers
from syncrecon._exceptions import ConfigurationError, MalformedPayloadError
from syncrecon.webhooks._events import ChangeEvent, EventKind, PayloadParser
from syncrecon.webhooks._parsers import (
    GenericJsonParser,
    HubSpotParser,
    StripeParser,
    ZendeskParser,
    parser_for,
    register_parser,
)

Json = Any
Path = tuple[str | int, ...]


def encode(payload: Json) -> bytes:
    return json.dumps(payload).encode()


def changed(payload: Json, path: Path, value: Json) -> Json:
    """A deep copy of ``payload`` with the item at ``path`` set to ``value``."""
    result = copy.deepcopy(payload)
    target = result
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return result


def removed(payload: Json, path: Path) -> Json:
    """A deep copy of ``payload`` without the key at ``path``."""
    result = copy.deepcopy(payload)
    target = result
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return result


def nested(depth: int, leaf: Json = 1) -> Json:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# ------------------------------------------------------------------------------------------
# Samples

PORTAL = 62515
APP = 1160452
T_MS = 1_708_986_598_741
T_AT = datetime(2024, 2, 26, 22, 29, 58, 741000, tzinfo=UTC)


def hubspot_item(subscription_type: str, event_id: int | str = 1828475502, **fields: Json) -> Json:
    item: dict[str, Json] = {
        "eventId": event_id,
        "subscriptionId": 2449834,
        "portalId": PORTAL,
        "appId": APP,
        "occurredAt": T_MS,
        "subscriptionType": subscription_type,
        "attemptNumber": 0,
        "objectId": 65059681032,
        "changeSource": "CRM_UI",
        "sourceId": "userId:45678",
    }
    item.update(fields)
    return item


HUBSPOT_BATCH: list[Json] = [
    hubspot_item("contact.creation", changeFlag="CREATED"),
    hubspot_item(
        "deal.propertyChange",
        event_id=3816279340,
        subscriptionId=25,
        objectId=9876543210,
        propertyName="amount",
        propertyValue="60000",
        changeSource="INTEGRATION",
    ),
    hubspot_item("contact.deletion", event_id=4, objectId=123, changeFlag="DELETED"),
    hubspot_item(
        "contact.merge",
        event_id=5,
        objectId=101,
        primaryObjectId=101,
        mergedObjectIds=[102, 103],
        numberOfPropertiesMoved=7,
    ),
    hubspot_item("company.restore", event_id=6, objectId=555),
    hubspot_item("contact.privacyDeletion", event_id=7, objectId=124),
    hubspot_item(
        "contact.associationChange",
        event_id=8,
        associationType="CONTACT_TO_COMPANY",
        fromObjectId=1,
        toObjectId=2,
        associationRemoved=False,
    ),
    hubspot_item(
        "object.propertyChange",
        event_id=9,
        objectTypeId="0-3",
        objectId=777,
        propertyName="dealstage",
        propertyValue="closedwon",
    ),
    hubspot_item("object.creation", event_id=10, objectTypeId="2-7654321", objectId=42),
]

STRIPE_CUSTOMER: dict[str, Json] = {
    "id": "cus_NffrFeUfNV2Hib",
    "object": "customer",
    "address": None,
    "balance": 0,
    "created": 1680893993,
    "currency": None,
    "email": "jenny.rosen@example.com",
    "invoice_settings": {"custom_fields": None, "default_payment_method": None},
    "livemode": False,
    "metadata": {"plan": "pro", "region": "eu"},
    "name": "Jenny Rosen",
    "phone": None,
    "preferred_locales": ["en", "de"],
    "tax_exempt": "none",
}


def stripe_event(
    event_type: str = "customer.updated",
    obj: Json = None,
    previous: Json = None,
    event_id: str = "evt_1NG8Du2eZvKYlo2CUI79vXWy",
) -> dict[str, Json]:
    data: dict[str, Json] = {"object": STRIPE_CUSTOMER if obj is None else obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {
        "id": event_id,
        "object": "event",
        "api_version": "2023-10-16",
        "created": 1686089970,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_6YPQdIbVXGUZqz", "idempotency_key": "c2f7ad1a-e5aa-4b1f"},
        "type": event_type,
    }


STRIPE_UPDATED = stripe_event(
    previous={
        "email": "jenny@old.example.com",
        "metadata": {"plan": "basic"},
        "preferred_locales": ["en"],
    }
)

ZENDESK_TICKET: dict[str, Json] = {
    "actor_id": "20978392",
    "assignee_id": "235324",
    "brand_id": "123",
    "created_at": "2026-01-14T22:55:29Z",
    "custom_status": "1",
    "description": "The printer is on fire.",
    "external_id": "",
    "form_id": "6876543",
    "group_id": "98738",
    "id": "35436",
    "is_public": True,
    "organization_id": "10002",
    "priority": "HIGH",
    "requester_id": "20978392",
    "status": "OPEN",
    "subject": "Printer on fire",
    "submitter_id": "76872",
    "tags": ["enterprise", "printer"],
    "type": "INCIDENT",
    "updated_at": "2026-01-15T02:50:15Z",
    "via": {"channel": "web_form"},
}


def zendesk_event(
    event_type: str = "ticket.status_changed",
    event: Json = None,
    detail: Json = None,
    event_id: str = "2b24ef10-19d4-4740-93cf-8f98ec4776c0",
    time: str = "2026-01-15T02:50:15.906323869Z",
) -> dict[str, Json]:
    return {
        "type": f"zen:event-type:{event_type}",
        "account_id": 12514403,
        "id": event_id,
        "time": time,
        "zendesk_event_version": "2022-11-06",
        "subject": "zen:ticket:35436",
        "detail": ZENDESK_TICKET if detail is None else detail,
        "event": {"current": "OPEN", "previous": "NEW"} if event is None else event,
    }


ZENDESK_STATUS = zendesk_event()
WEBHOOK_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
SW_HEADERS = {"webhook-id": WEBHOOK_ID}


def generic_change(
    event_type: str = "contact.updated",
    changes: Json = None,
    deleted: Json = False,
    record_id: Json = "c_1042",
    timestamp: str = "2026-01-31T12:00:00.250Z",
) -> dict[str, Json]:
    return {
        "type": event_type,
        "timestamp": timestamp,
        "data": {
            "id": record_id,
            "object_type": "contact",
            "changes": {"email": "ada@example.com", "phone": None} if changes is None else changes,
            "deleted": deleted,
        },
    }


GENERIC_UPDATE = generic_change()


# ------------------------------------------------------------------------------------------
# HubSpot


def test_hubspot_batch_from_the_docs() -> None:
    events = HubSpotParser().parse(encode(HUBSPOT_BATCH), {})
    summary = [(e.kind, e.object_type, e.key, e.field, e.value) for e in events]
    assert summary == [
        (EventKind.CREATE, "contact", "65059681032", None, None),
        (EventKind.UPDATE, "deal", "9876543210", "amount", "60000"),
        (EventKind.DELETE, "contact", "123", None, None),
        (EventKind.MERGE, "contact", "101", None, None),
        (EventKind.CREATE, "company", "555", None, None),  # a restore brings a record back
        (EventKind.DELETE, "contact", "124", None, None),  # privacy deletion
        # the association change produces nothing
        (EventKind.UPDATE, "deal", "777", "dealstage", "closedwon"),  # 0-3 is a deal
        (EventKind.CREATE, "2-7654321", "42", None, None),  # a custom object's id is kept
    ]
    assert all(e.system == "hubspot" for e in events)
    assert all(e.occurred_at == T_AT for e in events)
    assert [e.event_id for e in events] == [
        "1828475502",
        "3816279340",
        "4",
        "5",
        "6",
        "7",
        "9",
        "10",
    ]
    assert events[0].change_source == "CRM_UI"
    assert events[1].change_source == "INTEGRATION"
    assert events[3].merged_keys == ("102", "103")
    assert len({e.dedupe_key for e in events}) == len(events)


def test_hubspot_occurred_at_is_exact_to_the_millisecond() -> None:
    body = encode([hubspot_item("contact.creation", occurredAt=1_700_000_000_001)])
    (event,) = HubSpotParser().parse(body, {})
    assert event.occurred_at == datetime(2023, 11, 14, 22, 13, 20, 1000, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)


def test_hubspot_property_value_is_kept_as_given() -> None:
    values = ["", "  padded  ", "0.10", "true", "1572480000000", "chocolate;strawberry", None]
    body = encode(
        [
            hubspot_item("contact.propertyChange", i, propertyName="x", propertyValue=v)
            for i, v in enumerate(values)
        ]
    )
    assert [e.value for e in HubSpotParser().parse(body, {})] == values


def test_hubspot_merge_into_a_new_object() -> None:
    item = hubspot_item(
        "company.merge", primaryObjectId=11, mergedObjectIds=[12, 11], newObjectId=20
    )
    (event,) = HubSpotParser().parse(encode([item]), {})
    assert event.kind is EventKind.MERGE
    assert event.key == "20"
    assert event.merged_keys == ("11", "12")


def test_hubspot_object_types_rename() -> None:
    parser = HubSpotParser(object_types={"deal": "deals", "2-7654321": "vehicle"})
    events = parser.parse(encode(HUBSPOT_BATCH), {})
    types = [e.object_type for e in events]
    assert types == [
        "contact",
        "deals",
        "contact",
        "contact",
        "company",
        "contact",
        "deals",
        "vehicle",
    ]


def test_hubspot_empty_batch() -> None:
    assert HubSpotParser().parse(b"[]", {}) == []


def test_hubspot_string_ids_are_accepted() -> None:
    item = hubspot_item("contact.creation", event_id="abc", objectId="65059681032")
    (event,) = HubSpotParser().parse(encode([item]), {})
    assert (event.event_id, event.key) == ("abc", "65059681032")


def test_hubspot_a_retry_gives_the_same_dedupe_keys() -> None:
    parser = HubSpotParser()
    first = parser.parse(encode(HUBSPOT_BATCH), {})
    retried = [changed(item, ("attemptNumber",), 3) for item in HUBSPOT_BATCH]
    again = parser.parse(encode(retried), {})
    assert [e.dedupe_key for e in again] == [e.dedupe_key for e in first]
    assert again == first


def test_hubspot_two_changes_in_the_same_millisecond_get_different_keys() -> None:
    # Same object, same millisecond, even the same (non-unique) eventId.
    a = hubspot_item("contact.propertyChange", 1, propertyName="email", propertyValue="a@x.io")
    b = hubspot_item("contact.propertyChange", 1, propertyName="phone", propertyValue="+1 555")
    c = hubspot_item("contact.propertyChange", 1, propertyName="email", propertyValue="c@x.io")
    events = HubSpotParser().parse(encode([a, b, c]), {})
    assert len({e.dedupe_key for e in events}) == 3


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("eventId",), 2),
        (("subscriptionId",), 2449835),
        (("portalId",), 62516),
        (("occurredAt",), T_MS + 1),
        (("objectId",), 65059681033),
        (("subscriptionType",), "company.propertyChange"),
        (("propertyName",), "lastname"),
        (("propertyValue",), "Lovelace-King"),
        (("propertyValue",), None),
    ],
)
def test_hubspot_dedupe_key_covers_what_makes_an_event(path: Path, value: Json) -> None:
    base = hubspot_item("contact.propertyChange", propertyName="firstname", propertyValue="Ada")
    parser = HubSpotParser()
    (one,) = parser.parse(encode([base]), {})
    (other,) = parser.parse(encode([changed(base, path, value)]), {})
    assert one.dedupe_key != other.dedupe_key


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("attemptNumber",), 9),
        (("changeSource",), "API"),
        (("sourceId",), "userId:1"),
        (("appId",), 1),
    ],
)
def test_hubspot_dedupe_key_ignores_delivery_details(path: Path, value: Json) -> None:
    base = hubspot_item("contact.propertyChange", propertyName="firstname", propertyValue="Ada")
    parser = HubSpotParser()
    (one,) = parser.parse(encode([base]), {})
    (other,) = parser.parse(encode([changed(base, path, value)]), {})
    assert one.dedupe_key == other.dedupe_key


def test_hubspot_merge_dedupe_key_covers_the_merged_ids() -> None:
    base = hubspot_item("contact.merge", primaryObjectId=1, mergedObjectIds=[2])
    parser = HubSpotParser()
    (one,) = parser.parse(encode([base]), {})
    (other,) = parser.parse(encode([changed(base, ("mergedObjectIds",), [3])]), {})
    assert one.dedupe_key != other.dedupe_key


def test_hubspot_hundred_notifications() -> None:
    items = [
        hubspot_item(
            "deal.propertyChange", i, objectId=i, propertyName="amount", propertyValue=str(i)
        )
        for i in range(100)
    ]
    events = HubSpotParser().parse(encode(items), {})
    assert len(events) == 100
    assert len({e.dedupe_key for e in events}) == 100


PROPERTY_CHANGE = hubspot_item(
    "contact.propertyChange", propertyName="email", propertyValue="a@b.c"
)
MERGE = hubspot_item("contact.merge", primaryObjectId=1, mergedObjectIds=[2])

HUBSPOT_MALFORMED: dict[str, Json] = {
    "object-not-array": PROPERTY_CHANGE,
    "item-not-object": [PROPERTY_CHANGE, "contact.creation"],
    "item-null": [None],
    "no-eventId": [removed(PROPERTY_CHANGE, ("eventId",))],
    "eventId-float": [changed(PROPERTY_CHANGE, ("eventId",), 1.5)],
    "no-subscriptionId": [removed(PROPERTY_CHANGE, ("subscriptionId",))],
    "portalId-list": [changed(PROPERTY_CHANGE, ("portalId",), [PORTAL])],
    "no-occurredAt": [removed(PROPERTY_CHANGE, ("occurredAt",))],
    "occurredAt-string": [changed(PROPERTY_CHANGE, ("occurredAt",), str(T_MS))],
    "occurredAt-float": [changed(PROPERTY_CHANGE, ("occurredAt",), float(T_MS))],
    "occurredAt-bool": [changed(PROPERTY_CHANGE, ("occurredAt",), True)],
    "occurredAt-negative": [changed(PROPERTY_CHANGE, ("occurredAt",), -1)],
    "occurredAt-huge": [changed(PROPERTY_CHANGE, ("occurredAt",), 10**30)],
    "occurredAt-past-9999": [changed(PROPERTY_CHANGE, ("occurredAt",), 253_402_300_800_000)],
    "no-subscriptionType": [removed(PROPERTY_CHANGE, ("subscriptionType",))],
    "subscriptionType-no-dot": [changed(PROPERTY_CHANGE, ("subscriptionType",), "creation")],
    "subscriptionType-empty-prefix": [changed(PROPERTY_CHANGE, ("subscriptionType",), ".merge")],
    "subscriptionType-number": [changed(PROPERTY_CHANGE, ("subscriptionType",), 7)],
    "no-objectId": [removed(PROPERTY_CHANGE, ("objectId",))],
    "objectId-float": [changed(PROPERTY_CHANGE, ("objectId",), 1.0)],
    "objectId-bool": [changed(PROPERTY_CHANGE, ("objectId",), False)],
    "objectId-empty": [changed(PROPERTY_CHANGE, ("objectId",), "")],
    "objectId-negative": [changed(PROPERTY_CHANGE, ("objectId",), -5)],
    "objectId-object": [changed(PROPERTY_CHANGE, ("objectId",), {"id": 1})],
    "objectId-too-long": [changed(PROPERTY_CHANGE, ("objectId",), "9" * 300)],
    "no-propertyName": [removed(PROPERTY_CHANGE, ("propertyName",))],
    "propertyName-empty": [changed(PROPERTY_CHANGE, ("propertyName",), "")],
    "no-propertyValue": [removed(PROPERTY_CHANGE, ("propertyValue",))],
    "propertyValue-number": [changed(PROPERTY_CHANGE, ("propertyValue",), 60000)],
    "propertyValue-object": [changed(PROPERTY_CHANGE, ("propertyValue",), {"a": 1})],
    "object-without-objectTypeId": [hubspot_item("object.creation")],
    "no-primaryObjectId": [removed(MERGE, ("primaryObjectId",))],
    "mergedObjectIds-missing": [removed(MERGE, ("mergedObjectIds",))],
    "mergedObjectIds-empty": [changed(MERGE, ("mergedObjectIds",), [])],
    "mergedObjectIds-not-list": [changed(MERGE, ("mergedObjectIds",), 2)],
    "mergedObjectIds-bad-item": [changed(MERGE, ("mergedObjectIds",), [2, None])],
    "merge-into-itself": [changed(MERGE, ("mergedObjectIds",), [1])],
    "newObjectId-bad": [changed(MERGE, ("newObjectId",), 1.5)],
    "second-item-bad": [PROPERTY_CHANGE, removed(PROPERTY_CHANGE, ("eventId",))],
    "bad-even-when-ignored": [hubspot_item("contact.associationChange", occurredAt="now")],
}


@pytest.mark.parametrize("payload", HUBSPOT_MALFORMED.values(), ids=HUBSPOT_MALFORMED.keys())
def test_hubspot_malformed(payload: Json) -> None:
    with pytest.raises(MalformedPayloadError):
        HubSpotParser().parse(encode(payload), {})


def test_hubspot_message_names_the_item() -> None:
    body = encode([PROPERTY_CHANGE, changed(PROPERTY_CHANGE, ("occurredAt",), "x")])
    with pytest.raises(MalformedPayloadError, match="item 1: occurredAt"):
        HubSpotParser().parse(body, {})


# ------------------------------------------------------------------------------------------
# Stripe


def test_stripe_updated_yields_one_update_per_previous_attribute() -> None:
    events = StripeParser().parse(encode(STRIPE_UPDATED), {})
    assert [(e.field, e.value) for e in events] == [
        ("email", "jenny.rosen@example.com"),
        ("metadata", {"plan": "pro", "region": "eu"}),  # the whole new value
        ("preferred_locales", ["en", "de"]),
    ]
    for event in events:
        assert event.kind is EventKind.UPDATE
        assert (event.system, event.object_type, event.key) == (
            "stripe",
            "customer",
            "cus_NffrFeUfNV2Hib",
        )
        assert event.event_id == "evt_1NG8Du2eZvKYlo2CUI79vXWy"
        assert event.occurred_at == datetime(2023, 6, 6, 22, 19, 30, tzinfo=UTC)
        assert event.change_source == "req_6YPQdIbVXGUZqz"
    assert [e.dedupe_key for e in events] == [
        "evt_1NG8Du2eZvKYlo2CUI79vXWy:email",
        "evt_1NG8Du2eZvKYlo2CUI79vXWy:metadata",
        "evt_1NG8Du2eZvKYlo2CUI79vXWy:preferred_locales",
    ]


def test_stripe_redelivery_gives_identical_events() -> None:
    parser = StripeParser()
    assert parser.parse(encode(STRIPE_UPDATED), {}) == parser.parse(encode(STRIPE_UPDATED), {})


def test_stripe_attribute_missing_from_the_object_is_none() -> None:
    event = stripe_event(previous={"discount": {"id": "di_1"}})
    (update,) = StripeParser().parse(encode(event), {})
    assert (update.field, update.value) == ("discount", None)


def test_stripe_empty_previous_attributes() -> None:
    assert StripeParser().parse(encode(stripe_event(previous={})), {}) == []


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [("customer.created", EventKind.CREATE), ("customer.deleted", EventKind.DELETE)],
)
def test_stripe_record_level_events(event_type: str, kind: EventKind) -> None:
    (event,) = StripeParser().parse(encode(stripe_event(event_type)), {})
    assert event.kind is kind
    assert (event.object_type, event.key, event.field, event.value) == (
        "customer",
        "cus_NffrFeUfNV2Hib",
        None,
        None,
    )
    assert event.dedupe_key == event.event_id == "evt_1NG8Du2eZvKYlo2CUI79vXWy"


def test_stripe_object_type_comes_from_the_object() -> None:
    subscription = {"id": "sub_1MowQVLkdIwHu7ix", "object": "subscription", "status": "active"}
    event = stripe_event("customer.subscription.updated", subscription, {"status": "trialing"})
    (update,) = StripeParser().parse(encode(event), {})
    assert (update.object_type, update.key, update.field, update.value) == (
        "subscription",
        "sub_1MowQVLkdIwHu7ix",
        "status",
        "active",
    )


@pytest.mark.parametrize(
    "event_type", ["invoice.paid", "charge.succeeded", "payment_intent.payment_failed"]
)
def test_stripe_other_types_yield_nothing(event_type: str) -> None:
    invoice = {"id": "in_1", "object": "invoice"}
    assert StripeParser().parse(encode(stripe_event(event_type, invoice)), {}) == []


@pytest.mark.parametrize(
    ("request_value", "expected"),
    [
        ({"id": None, "idempotency_key": None}, None),  # Stripe made the change itself
        ("req_legacy", "req_legacy"),  # API versions before 2017-05-25
        (None, None),
        (42, None),
    ],
)
def test_stripe_change_source(request_value: Json, expected: str | None) -> None:
    event = changed(STRIPE_UPDATED, ("request",), request_value)
    assert {e.change_source for e in StripeParser().parse(encode(event), {})} == {expected}


STRIPE_MALFORMED: dict[str, Json] = {
    "array": [STRIPE_UPDATED],
    "not-an-event": changed(STRIPE_UPDATED, ("object",), "customer"),
    "no-object": removed(STRIPE_UPDATED, ("object",)),
    "no-id": removed(STRIPE_UPDATED, ("id",)),
    "id-number-negative": changed(STRIPE_UPDATED, ("id",), -1),
    "no-type": removed(STRIPE_UPDATED, ("type",)),
    "type-no-dot": changed(STRIPE_UPDATED, ("type",), "updated"),
    "type-list": changed(STRIPE_UPDATED, ("type",), ["customer.updated"]),
    "no-created": removed(STRIPE_UPDATED, ("created",)),
    "created-string": changed(STRIPE_UPDATED, ("created",), "1686089970"),
    "created-float": changed(STRIPE_UPDATED, ("created",), 1686089970.5),
    "created-huge": changed(STRIPE_UPDATED, ("created",), 10**12),
    "no-data": removed(STRIPE_UPDATED, ("data",)),
    "data-list": changed(STRIPE_UPDATED, ("data",), []),
    "no-data-object": removed(STRIPE_UPDATED, ("data", "object")),
    "data-object-string": changed(STRIPE_UPDATED, ("data", "object"), "cus_1"),
    "no-object-id": removed(STRIPE_UPDATED, ("data", "object", "id")),
    "object-id-empty": changed(STRIPE_UPDATED, ("data", "object", "id"), ""),
    "no-object-type": removed(STRIPE_UPDATED, ("data", "object", "object")),
    "no-previous-attributes": removed(STRIPE_UPDATED, ("data", "previous_attributes")),
    "previous-attributes-list": changed(STRIPE_UPDATED, ("data", "previous_attributes"), ["email"]),
    "previous-attributes-empty-key": changed(
        STRIPE_UPDATED, ("data", "previous_attributes"), {"": 1}
    ),
    "value-too-deep": changed(STRIPE_UPDATED, ("data", "object", "metadata"), nested(40)),
    "bad-even-when-ignored": changed(stripe_event("invoice.paid"), ("created",), None),
}


@pytest.mark.parametrize("payload", STRIPE_MALFORMED.values(), ids=STRIPE_MALFORMED.keys())
def test_stripe_malformed(payload: Json) -> None:
    with pytest.raises(MalformedPayloadError):
        StripeParser().parse(encode(payload), {})


# ------------------------------------------------------------------------------------------
# Zendesk


def test_zendesk_status_changed() -> None:
    (event,) = ZendeskParser().parse(encode(ZENDESK_STATUS), {})
    assert event == ChangeEvent(
        system="zendesk",
        object_type="ticket",
        key="35436",
        kind=EventKind.UPDATE,
        occurred_at=datetime(2026, 1, 15, 2, 50, 15, 906323, tzinfo=UTC),
        event_id="2b24ef10-19d4-4740-93cf-8f98ec4776c0",
        field="status",
        value="OPEN",  # kept as Zendesk sends it
        dedupe_key="2b24ef10-19d4-4740-93cf-8f98ec4776c0",
        change_source="web_form",
    )


@pytest.mark.parametrize(
    ("event_type", "current", "field"),
    [
        ("ticket.priority_changed", "URGENT", "priority"),
        ("ticket.subject_changed", "Printer still on fire", "subject"),
        ("ticket.description_changed", "Smoke too.", "description"),
        ("ticket.type_changed", "PROBLEM", "type"),
        ("ticket.agent_assignment_changed", "235325", "assignee_id"),
        ("ticket.group_assignment_changed", "98739", "group_id"),
        ("ticket.organization_changed", None, "organization_id"),
        ("ticket.requester_changed", "20978393", "requester_id"),
        ("ticket.submitter_changed", "76873", "submitter_id"),
        ("ticket.brand_changed", "124", "brand_id"),
        ("ticket.form_changed", "6876544", "ticket_form_id"),
        ("ticket.external_id_changed", "TEST1235", "external_id"),
        ("ticket.custom_status_changed", "2", "custom_status_id"),
        ("ticket.task_due_at_changed", "2026-02-01T00:00:00Z", "due_at"),
        ("ticket.problem_link_changed", "35000", "problem_id"),
        ("user.active_changed", False, "active"),
        ("user.name_changed", "Ada Lovelace", "name"),
        ("organization.name_changed", "Analytical Engines Ltd", "name"),
    ],
)
def test_zendesk_field_changes(event_type: str, current: Json, field: str) -> None:
    body = zendesk_event(event_type, {"current": current, "previous": "x"})
    (event,) = ZendeskParser().parse(encode(body), {})
    assert event.kind is EventKind.UPDATE
    assert (event.object_type, event.field, event.value) == (
        event_type.split(".")[0],
        field,
        current,
    )


def test_zendesk_tags_changed_reports_the_whole_list() -> None:
    body = zendesk_event("ticket.tags_changed", {"tags_added": ["printer"], "tags_removed": []})
    (event,) = ZendeskParser().parse(encode(body), {})
    assert (event.field, event.value) == ("tags", ["enterprise", "printer"])


def test_zendesk_custom_field_changed() -> None:
    change = {
        "current": {"value": "gold", "id": None, "relationship_target": None},
        "previous": {"value": "silver"},
        "custom_field": {"id": "360012345678", "title": "Tier", "type": "tagger"},
    }
    (event,) = ZendeskParser().parse(
        encode(zendesk_event("ticket.custom_field_changed", change)), {}
    )
    assert (event.field, event.value) == ("custom_fields.360012345678", "gold")


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("ticket.created", EventKind.CREATE),
        ("ticket.undeleted", EventKind.CREATE),
        ("ticket.soft_deleted", EventKind.DELETE),
        ("ticket.permanently_deleted", EventKind.DELETE),
        ("user.created", EventKind.CREATE),
        ("user.deleted", EventKind.DELETE),
        ("organization.deleted", EventKind.DELETE),
    ],
)
def test_zendesk_record_level_events(event_type: str, kind: EventKind) -> None:
    body = zendesk_event(event_type, {"current": {"status": "Open"}})
    (event,) = ZendeskParser().parse(encode(body), {})
    assert (event.kind, event.key, event.field, event.value) == (kind, "35436", None, None)


def test_zendesk_merged() -> None:
    body = zendesk_event("ticket.merged", {"target_ticket_id": 35000})
    (event,) = ZendeskParser().parse(encode(body), {})
    assert (event.kind, event.key, event.merged_keys) == (EventKind.MERGE, "35000", ("35436",))


@pytest.mark.parametrize(
    ("event_type", "event"),
    [
        ("ticket.comment_added", {"comment": {"id": "1", "body": "hi", "is_public": True}}),
        ("ticket.followers_changed", {"users_added": ["1"], "users_removed": []}),
        ("ticket.email_ccs_changed", {"users_added": [], "users_removed": ["2"]}),
        ("ticket.marked_as_spam", {}),
        ("ticket.merged", {}),  # the target is not named
        ("article.published", {}),
        ("agent.state_changed", {"previous": "online"}),
        ("unknown", {}),
        ("", {}),
    ],
)
def test_zendesk_unsupported_types_yield_nothing(event_type: str, event: Json) -> None:
    assert ZendeskParser().parse(encode(zendesk_event(event_type, event)), {}) == []


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        ("2099-07-04T05:33:18Z", datetime(2099, 7, 4, 5, 33, 18, tzinfo=UTC)),
        ("2026-01-15T04:50:15+02:00", datetime(2026, 1, 15, 2, 50, 15, tzinfo=UTC)),
        ("2026-01-15T02:50:15.5-00:30", datetime(2026, 1, 15, 3, 20, 15, 500000, tzinfo=UTC)),
    ],
)
def test_zendesk_time_is_utc(time: str, expected: datetime) -> None:
    (event,) = ZendeskParser().parse(encode(zendesk_event(time=time)), {})
    assert event.occurred_at == expected
    assert event.occurred_at.tzinfo is UTC


def test_zendesk_integer_ids_and_missing_via() -> None:
    detail = removed(changed(ZENDESK_TICKET, ("id",), 35436), ("via",))
    (event,) = ZendeskParser().parse(encode(zendesk_event(detail=detail)), {})
    assert (event.key, event.change_source) == ("35436", None)


ZENDESK_MALFORMED: dict[str, Json] = {
    "array": [ZENDESK_STATUS],
    "no-type": removed(ZENDESK_STATUS, ("type",)),
    "trigger-style-type": changed(ZENDESK_STATUS, ("type",), "ticket.status_changed"),
    "no-id": removed(ZENDESK_STATUS, ("id",)),
    "id-empty": changed(ZENDESK_STATUS, ("id",), ""),
    "no-time": removed(ZENDESK_STATUS, ("time",)),
    "time-number": changed(ZENDESK_STATUS, ("time",), 1700000000),
    "time-garbage": changed(ZENDESK_STATUS, ("time",), "yesterday at noon"),
    "time-naive": changed(ZENDESK_STATUS, ("time",), "2026-01-15T02:50:15"),
    "time-date-only": changed(ZENDESK_STATUS, ("time",), "2026-01-15"),
    "time-out-of-range": changed(ZENDESK_STATUS, ("time",), "0001-01-01T00:00:00+01:00"),
    "time-too-long": changed(ZENDESK_STATUS, ("time",), "2026-01-15T02:50:15" + "0" * 100 + "Z"),
    "no-detail": removed(ZENDESK_STATUS, ("detail",)),
    "detail-string": changed(ZENDESK_STATUS, ("detail",), "35436"),
    "no-detail-id": removed(ZENDESK_STATUS, ("detail", "id")),
    "detail-id-bool": changed(ZENDESK_STATUS, ("detail", "id"), True),
    "no-event": removed(ZENDESK_STATUS, ("event",)),
    "event-list": changed(ZENDESK_STATUS, ("event",), ["OPEN"]),
    "no-current": removed(ZENDESK_STATUS, ("event", "current")),
    "current-too-deep": changed(ZENDESK_STATUS, ("event", "current"), nested(33)),
    "tags-not-list": zendesk_event(
        "ticket.tags_changed", {}, changed(ZENDESK_TICKET, ("tags",), "a b")
    ),
    "tags-not-strings": zendesk_event(
        "ticket.tags_changed", {}, changed(ZENDESK_TICKET, ("tags",), [1])
    ),
    "custom-field-missing": zendesk_event("ticket.custom_field_changed", {"current": {"value": 1}}),
    "custom-field-no-current": zendesk_event(
        "ticket.custom_field_changed", {"custom_field": {"id": "1"}}
    ),
    "merge-target-bad": zendesk_event("ticket.merged", {"target_ticket_id": 1.5}),
    "merge-into-itself": zendesk_event("ticket.merged", {"target_ticket_id": "35436"}),
    "bad-even-when-ignored": changed(zendesk_event("ticket.comment_added"), ("time",), None),
}


@pytest.mark.parametrize("payload", ZENDESK_MALFORMED.values(), ids=ZENDESK_MALFORMED.keys())
def test_zendesk_malformed(payload: Json) -> None:
    with pytest.raises(MalformedPayloadError):
        ZendeskParser().parse(encode(payload), {})


# ------------------------------------------------------------------------------------------
# Generic JSON (Standard Webhooks senders)


def test_generic_update() -> None:
    events = GenericJsonParser(system="crm").parse(encode(GENERIC_UPDATE), SW_HEADERS)
    assert events == [
        ChangeEvent(
            system="crm",
            object_type="contact",
            key="c_1042",
            kind=EventKind.UPDATE,
            occurred_at=datetime(2026, 1, 31, 12, 0, 0, 250000, tzinfo=UTC),
            event_id=WEBHOOK_ID,
            field=field,
            value=value,
            dedupe_key=f"{WEBHOOK_ID}:{field}",
        )
        for field, value in [("email", "ada@example.com"), ("phone", None)]
    ]


def test_generic_created_then_field_values() -> None:
    body = generic_change("contact.created", changes={"email": "ada@example.com"}, record_id=7)
    create, update = GenericJsonParser(system="crm").parse(encode(body), SW_HEADERS)
    assert (create.kind, create.key, create.dedupe_key) == (EventKind.CREATE, "7", WEBHOOK_ID)
    assert (update.kind, update.field, update.dedupe_key) == (
        EventKind.UPDATE,
        "email",
        f"{WEBHOOK_ID}:email",
    )


def test_generic_deleted_ignores_changes() -> None:
    body = generic_change("contact.deleted", deleted=True)
    (event,) = GenericJsonParser(system="crm").parse(encode(body), SW_HEADERS)
    assert (event.kind, event.field, event.dedupe_key) == (EventKind.DELETE, None, WEBHOOK_ID)


def test_generic_optional_parts() -> None:
    body = removed(
        removed(generic_change("contact.created"), ("data", "changes")), ("data", "deleted")
    )
    (event,) = GenericJsonParser(system="crm").parse(encode(body), SW_HEADERS)
    assert event.kind is EventKind.CREATE
    body = removed(GENERIC_UPDATE, ("data", "changes"))
    assert GenericJsonParser(system="crm").parse(encode(body), SW_HEADERS) == []


def test_generic_array_keys_include_the_index() -> None:
    body = [
        generic_change(record_id="a", changes={"email": "a@x.io"}),
        generic_change(record_id="b", changes={"email": "b@x.io"}),
        generic_change(record_id="c", deleted=True),
    ]
    events = GenericJsonParser(system="crm").parse(encode(body), SW_HEADERS)
    assert [(e.key, e.dedupe_key) for e in events] == [
        ("a", f"{WEBHOOK_ID}:0:email"),
        ("b", f"{WEBHOOK_ID}:1:email"),
        ("c", f"{WEBHOOK_ID}:2"),
    ]
    assert {e.event_id for e in events} == {WEBHOOK_ID}
    assert GenericJsonParser(system="crm").parse(b"[]", SW_HEADERS) == []


def test_generic_retry_gives_the_same_keys() -> None:
    parser = GenericJsonParser(system="crm")
    body = encode([GENERIC_UPDATE, generic_change("contact.created", record_id=9)])
    assert parser.parse(body, SW_HEADERS) == parser.parse(body, {"Webhook-Id": WEBHOOK_ID})


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"webhook-id": ""},
        {"webhook-id": "   "},
        {"webhook-id": "x" * 257},
        {"svix-id": WEBHOOK_ID},
        {"webhook-id": 5},
    ],
)
def test_generic_needs_a_webhook_id(headers: dict[str, Any]) -> None:
    with pytest.raises(MalformedPayloadError, match="webhook-id"):
        GenericJsonParser(system="crm").parse(encode(GENERIC_UPDATE), headers)


GENERIC_MALFORMED: dict[str, Json] = {
    "string": "contact.updated",
    "array-of-strings": ["contact.updated"],
    "no-type": removed(GENERIC_UPDATE, ("type",)),
    "type-empty": changed(GENERIC_UPDATE, ("type",), ""),
    "no-timestamp": removed(GENERIC_UPDATE, ("timestamp",)),
    "timestamp-unix": changed(GENERIC_UPDATE, ("timestamp",), 1769860800),
    "timestamp-unix-string": changed(GENERIC_UPDATE, ("timestamp",), "1769860800"),
    "timestamp-naive": changed(GENERIC_UPDATE, ("timestamp",), "2026-01-31T12:00:00"),
    "timestamp-bad-month": changed(GENERIC_UPDATE, ("timestamp",), "2026-13-31T12:00:00Z"),
    "no-data": removed(GENERIC_UPDATE, ("data",)),
    "data-list": changed(GENERIC_UPDATE, ("data",), [1]),
    "no-id": removed(GENERIC_UPDATE, ("data", "id")),
    "id-float": changed(GENERIC_UPDATE, ("data", "id"), 3.0),
    "id-null": changed(GENERIC_UPDATE, ("data", "id"), None),
    "no-object-type": removed(GENERIC_UPDATE, ("data", "object_type")),
    "object-type-number": changed(GENERIC_UPDATE, ("data", "object_type"), 1),
    "changes-list": changed(GENERIC_UPDATE, ("data", "changes"), [["email", "x"]]),
    "changes-null": changed(GENERIC_UPDATE, ("data", "changes"), None),
    "changes-empty-field": changed(GENERIC_UPDATE, ("data", "changes"), {"": 1}),
    "changes-too-deep": changed(GENERIC_UPDATE, ("data", "changes"), {"x": nested(33)}),
    "deleted-string": changed(GENERIC_UPDATE, ("data", "deleted"), "false"),
    "deleted-int": changed(GENERIC_UPDATE, ("data", "deleted"), 0),
    "second-item-bad": [GENERIC_UPDATE, removed(GENERIC_UPDATE, ("timestamp",))],
}


@pytest.mark.parametrize("payload", GENERIC_MALFORMED.values(), ids=GENERIC_MALFORMED.keys())
def test_generic_malformed(payload: Json) -> None:
    with pytest.raises(MalformedPayloadError):
        GenericJsonParser(system="crm").parse(encode(payload), SW_HEADERS)


def test_generic_value_at_the_depth_limit_is_accepted() -> None:
    body = changed(GENERIC_UPDATE, ("data", "changes"), {"x": nested(31)})  # 32 levels
    (event,) = GenericJsonParser(system="crm").parse(encode(body), SW_HEADERS)
    assert event.value == nested(31)


# ------------------------------------------------------------------------------------------
# Every parser: bodies that are not JSON, and fuzzing

PARSERS: dict[str, tuple[PayloadParser, Json, dict[str, str]]] = {
    "hubspot": (HubSpotParser(), HUBSPOT_BATCH, {}),
    "stripe": (StripeParser(), STRIPE_UPDATED, {}),
    "zendesk": (ZendeskParser(), ZENDESK_STATUS, {}),
    "generic": (GenericJsonParser(system="crm"), GENERIC_UPDATE, SW_HEADERS),
    "generic-array": (
        GenericJsonParser(system="crm"),
        [
            GENERIC_UPDATE,
            generic_change("contact.created", record_id=2),
            generic_change(deleted=True),
        ],
        SW_HEADERS,
    ),
}
each_parser = pytest.mark.parametrize(
    ("parser", "sample", "headers"), PARSERS.values(), ids=PARSERS.keys()
)

NOT_JSON: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b" \n\t",
    "text": b"hello",
    "truncated": b'[{"eventId": 1',
    "trailing-data": b"[] []",
    "single-quotes": b"{'a': 1}",
    "invalid-utf8": b'{"type": "\xff\xfe"}',
    "latin1": '{"type": "café"}'.encode("latin-1"),
    "utf16": '{"type": "x"}'.encode("utf-16"),
    "utf8-bom": b"\xef\xbb\xbf[]",
    "nan": b'{"a": NaN}',
    "infinity": b"[Infinity]",
    "minus-infinity": b"[-Infinity]",
    "float-overflow": b"[1e400]",
    "int-too-long": b"[" + b"9" * 5000 + b"]",
    "deep-arrays": b"[" * 100_000 + b"]" * 100_000,
    "deep-objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "lone-surrogate": b'{"type": "\\ud800"}',
    "lone-low-surrogate": b'["\\uDC00x"]',
    "surrogate-key": b'{"\\ud83d": 1}',
}


@each_parser
@pytest.mark.parametrize("body", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_not_json(
    parser: PayloadParser, sample: Json, headers: dict[str, str], body: bytes
) -> None:
    with pytest.raises(MalformedPayloadError):
        parser.parse(body, headers)


@each_parser
@pytest.mark.parametrize("payload", [None, True, 0, 1.5, "text", {}, [[]], [1, 2]])
def test_wrong_top_level_shape(
    parser: PayloadParser, sample: Json, headers: dict[str, str], payload: Json
) -> None:
    with pytest.raises(MalformedPayloadError):
        parser.parse(encode(payload), headers)


@each_parser
def test_samples_parse_and_accept_other_byte_types(
    parser: PayloadParser, sample: Json, headers: dict[str, str]
) -> None:
    body = encode(sample)
    events = parser.parse(body, headers)
    assert events
    assert parser.parse(bytearray(body), headers) == events  # type: ignore[arg-type]
    assert parser.parse(memoryview(body), headers) == events  # type: ignore[arg-type]
    check_events(events)


def test_surrogate_pairs_are_fine() -> None:
    body = changed(GENERIC_UPDATE, ("data", "changes"), {"name": "\U0001f600 Ada"})
    raw = json.dumps(body).encode()  # ensure_ascii: the emoji is sent as a surrogate pair
    assert b"\\ud83d\\ude00" in raw
    (event,) = GenericJsonParser(system="crm").parse(raw, SW_HEADERS)
    assert event.value == "\U0001f600 Ada"


def test_body_that_is_not_bytes() -> None:
    with pytest.raises(MalformedPayloadError):
        StripeParser().parse("{}", {})  # type: ignore[arg-type]


def check_events(events: object) -> None:
    """What every successful parse promises."""
    assert isinstance(events, list)
    for event in events:
        assert isinstance(event, ChangeEvent)
        assert event.occurred_at.tzinfo is not None
        assert event.occurred_at.utcoffset() == timedelta(0)
        assert isinstance(event.key, str)
        assert event.key
        assert isinstance(event.event_id, str)
        assert event.event_id
        assert isinstance(event.dedupe_key, str)
        assert event.dedupe_key
        assert isinstance(event.object_type, str)
        assert event.object_type
        if event.kind is EventKind.UPDATE:
            assert isinstance(event.field, str)
            assert event.field
        if event.kind is EventKind.MERGE:
            assert event.merged_keys
            assert event.key not in event.merged_keys
        json.dumps(event.value, ensure_ascii=False).encode("utf-8")  # storable


def parse_or_reject(parser: PayloadParser, body: bytes, headers: dict[str, str]) -> None:
    try:
        events = parser.parse(body, headers)
    except MalformedPayloadError:
        return
    check_events(events)
    assert parser.parse(body, headers) == events  # deterministic: redelivery is recognized


FUZZ = settings(suppress_health_check=[HealthCheck.too_slow])

NAMES = st.sampled_from(
    [
        "eventId", "subscriptionId", "portalId", "occurredAt", "subscriptionType", "objectId",
        "propertyName", "propertyValue", "primaryObjectId", "mergedObjectIds", "newObjectId",
        "objectTypeId", "id", "object", "type", "created", "data", "previous_attributes",
        "time", "detail", "event", "current", "tags", "custom_field", "target_ticket_id",
        "timestamp", "object_type", "changes", "deleted", "request", "via", "channel",
    ]
)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "deal.propertyChange", "contact.merge", "object.creation", "customer.updated",
            "zen:event-type:ticket.status_changed", "zen:event-type:ticket.merged",
            "contact.created", "2026-01-31T12:00:00Z", "event", "0-3", T_MS,
        ]
    )
)  # fmt: skip
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(NAMES | st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=25,
)


@each_parser
@FUZZ
@given(body=st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(
    parser: PayloadParser, sample: Json, headers: dict[str, str], body: bytes
) -> None:
    parse_or_reject(parser, body, headers)


@each_parser
@FUZZ
@given(value=JSON_VALUES)
def test_fuzz_arbitrary_json(
    parser: PayloadParser, sample: Json, headers: dict[str, str], value: Json
) -> None:
    parse_or_reject(parser, json.dumps(value).encode(), headers)


def paths(value: Json, prefix: Path = ()) -> Iterator[Path]:
    yield prefix
    items: Any = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for step, child in items:
        yield from paths(child, (*prefix, step))


@each_parser
@FUZZ
@given(data=st.data())
def test_fuzz_mutated_samples(
    parser: PayloadParser, sample: Json, headers: dict[str, str], data: st.DataObject
) -> None:
    # Near-valid payloads reach every check: change or delete a few parts of a good sample.
    payload = copy.deepcopy(sample)
    for _ in range(data.draw(st.integers(1, 3))):
        candidates = list(paths(payload))[1:]
        if not candidates:
            break
        path = data.draw(st.sampled_from(candidates))
        if isinstance(path[-1], str) and data.draw(st.booleans()):
            payload = removed(payload, path)
        else:
            payload = changed(payload, path, data.draw(JSON_VALUES))
    parse_or_reject(parser, json.dumps(payload).encode(), headers)


@FUZZ
@given(
    items=st.lists(
        st.fixed_dictionaries(
            {
                "eventId": st.integers(0, 5),
                "occurredAt": st.integers(0, 2),
                "objectId": st.integers(0, 3),
                "propertyName": st.sampled_from(["email", "phone"]),
                "propertyValue": st.none() | st.sampled_from(["", "a", "b"]),
            }
        ),
        max_size=20,
    ),
    attempt=st.integers(0, 10),
)
def test_fuzz_hubspot_dedupe_keys(items: list[dict[str, Json]], attempt: int) -> None:
    # Two notifications share a dedupe key exactly when they differ at most in attemptNumber.
    batch = [hubspot_item("contact.propertyChange", **item) for item in items]
    parser = HubSpotParser()
    events = parser.parse(encode(batch), {})
    for item in batch:
        item["attemptNumber"] = attempt
    assert [e.dedupe_key for e in parser.parse(encode(batch), {})] == [e.dedupe_key for e in events]
    distinct = {json.dumps(sorted(item.items())) for item in items}
    assert len({e.dedupe_key for e in events}) == len(distinct)


# ------------------------------------------------------------------------------------------
# Configuration and the registry


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A private copy of the registry, so that registrations do not leak between tests."""
    fresh = dict(parsers._REGISTRY)
    monkeypatch.setattr(parsers, "_REGISTRY", fresh)
    return fresh


def test_every_parser_is_a_payload_parser() -> None:
    for parser, _, _ in PARSERS.values():
        assert isinstance(parser, PayloadParser)


@pytest.mark.parametrize(
    ("name", "cls", "system"),
    [
        ("hubspot", HubSpotParser, "hubspot"),
        ("HubSpot", HubSpotParser, "hubspot"),
        ("stripe", StripeParser, "stripe"),
        (" STRIPE ", StripeParser, "stripe"),
        ("zendesk", ZendeskParser, "zendesk"),
        ("generic", GenericJsonParser, "generic"),
    ],
)
def test_built_in_parsers(name: str, cls: type, system: str) -> None:
    parser = parser_for(name)
    assert type(parser) is cls
    assert parser.system == system  # type: ignore[attr-defined]


def test_parser_for_a_named_system() -> None:
    assert parser_for("hubspot", system="hubspot-eu") == HubSpotParser(system="hubspot-eu")
    assert parser_for("generic", system="billing") == GenericJsonParser(system="billing")


class LineParser:
    """A user's parser: one line per change, ``key field value``."""

    def __init__(self, system: str) -> None:
        self.system = system

    def parse(self, body: bytes, headers: Mapping[str, str]) -> list[ChangeEvent]:
        events = []
        for number, line in enumerate(body.decode().splitlines()):
            key, field, value = line.split(" ", 2)
            events.append(
                ChangeEvent(
                    system=self.system,
                    object_type="item",
                    key=key,
                    kind=EventKind.UPDATE,
                    occurred_at=T_AT,
                    event_id=f"{headers['x-id']}:{number}",
                    field=field,
                    value=value,
                )
            )
        return events


def test_register_and_use_a_parser(registry: dict[str, Any]) -> None:
    register_parser("Lines", lambda *, system: LineParser(system))
    parser = parser_for("LINES", system="warehouse")
    (event,) = parser.parse(b"sku-1 colour deep blue", {"x-id": "d1"})
    assert (event.system, event.key, event.field, event.value) == (
        "warehouse",
        "sku-1",
        "colour",
        "deep blue",
    )
    assert isinstance(parser_for("lines"), LineParser)


def test_duplicate_registration(registry: dict[str, Any]) -> None:
    register_parser("lines", lambda *, system: LineParser(system))
    with pytest.raises(ValueError, match="already registered"):
        register_parser("LINES", lambda *, system: LineParser("other"))
    with pytest.raises(ConfigurationError):
        register_parser("hubspot", lambda *, system: LineParser(system))
    register_parser("Lines", lambda *, system: LineParser("replaced"), replace=True)
    assert parser_for("lines").system == "replaced"  # type: ignore[attr-defined]
    register_parser("hubspot", lambda *, system: HubSpotParser(system="crm"), replace=True)
    assert parser_for("hubspot") == HubSpotParser(system="crm")


def test_unknown_parser(registry: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="known: generic, hubspot, stripe, zendesk"):
        parser_for("salesforce")


@pytest.mark.parametrize("name", ["", "   ", None, 7])
def test_bad_names(registry: dict[str, Any], name: Any) -> None:
    with pytest.raises(ConfigurationError):
        register_parser(name, HubSpotParser)
    with pytest.raises(ConfigurationError):
        parser_for(name)


def test_bad_factories(registry: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="callable"):
        register_parser("nope", "HubSpotParser")  # type: ignore[arg-type]
    register_parser("broken", lambda *, system: object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="did not return a parser"):
        parser_for("broken")


@pytest.mark.parametrize(
    "make",
    [
        lambda: HubSpotParser(system=""),
        lambda: HubSpotParser(system=None),  # type: ignore[arg-type]
        lambda: StripeParser(system=""),
        lambda: ZendeskParser(system=3),  # type: ignore[arg-type]
        lambda: GenericJsonParser(system=""),
        lambda: HubSpotParser(object_types={"deal": ""}),
        lambda: HubSpotParser(object_types={"deal": 3}),  # type: ignore[dict-item]
        lambda: HubSpotParser(object_types=["deal"]),  # type: ignore[arg-type]
    ],
)
def test_configuration_is_checked(make: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError):
        make()


def test_generic_parser_needs_a_system() -> None:
    with pytest.raises(TypeError):
        GenericJsonParser()  # type: ignore[call-arg]


def test_parsers_are_frozen_and_hashable() -> None:
    parser = HubSpotParser(object_types={"deal": "deals"})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        parser.system = "other"  # type: ignore[misc]
    assert hash(parser) == hash(HubSpotParser(object_types={"deal": "deals"}))
    assert parser == HubSpotParser(object_types={"deal": "deals"})
    assert parser != HubSpotParser()
    assert {StripeParser(), StripeParser()} == {StripeParser()}
