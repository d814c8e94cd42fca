"""Real answers of the HubSpot emulator, checked against hand-written JSON Schemas.

The schemas in ``tests/schemas/hubspot/`` were written by hand (draft 2020-12) from the
components of HubSpot's published OpenAPI specs; each file's ``$comment`` names the spec file
and the components. Here every endpoint a connector uses is exercised, successes and
errors alike, and each answer is validated against the schema of its documented shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from syncrecon.testing import ManualClock
from syncrecon.testing._hubspot import HubSpotEmulator

SCHEMA_DIR = Path(__file__).parent / "schemas" / "hubspot"
SCHEMAS: dict[str, dict[str, Any]] = {
    path.name: json.loads(path.read_text()) for path in sorted(SCHEMA_DIR.glob("*.json"))
}
REGISTRY: Registry[Any] = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS.values()
)
BASE = "https://api.hubapi.com"
DEALS = "/crm/v3/objects/deals"
CONTACTS = "/crm/v3/objects/contacts"


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(
        SCHEMAS[name], registry=REGISTRY, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def check(name: str, body: Any) -> None:
    errors = sorted(validator(name).iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{name}: {list(e.absolute_path)}: {e.message}" for e in errors[:10]
    )


# -- the schemas themselves ------------------------------------------------------------------------


def test_every_expected_schema_is_there() -> None:
    assert set(SCHEMAS) == {
        "archived_object.json",
        "batch_response.json",
        "batch_response_with_errors.json",
        "batch_upsert_response.json",
        "collection_forward_paging.json",
        "error.json",
        "oauth_error.json",
        "oauth_token.json",
        "object.json",
        "object_with_associations.json",
        "properties_collection.json",
        "property.json",
        "rate_limit_error.json",
        "search_response.json",
    }


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_valid_draft_2020_12_and_cites_its_source(name: str) -> None:
    schema = SCHEMAS[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/hubspot/{name}")
    comment = schema["$comment"]
    if name == "rate_limit_error.json":
        assert "hubspot-api-python#117" in comment
    else:
        assert "HubSpot-public-api-spec-collection" in comment
        assert "PublicApiSpecs/" in comment
        assert "component" in comment
    # every reference resolves
    validator(name).is_valid({})


OBJECT = {
    "id": "1",
    "properties": {"dealname": "x", "amount": None},
    "createdAt": "2026-01-01T00:00:00.000Z",
    "updatedAt": "2026-01-01T00:00:00.000Z",
    "archived": False,
}


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("object.json", {**OBJECT, "properties": {"amount": 5}}),  # values are strings
        ("object.json", {**OBJECT, "updatedAt": "2026-01-01 00:00:00"}),
        ("object.json", {**OBJECT, "archivedAt": "2026-01-01T00:00:00.000Z"}),
        ("object.json", {**OBJECT, "extra": 1}),
        ("object.json", {k: v for k, v in OBJECT.items() if k != "archived"}),
        ("archived_object.json", OBJECT),
        ("search_response.json", {"results": []}),  # total is required
        ("collection_forward_paging.json", {"results": [], "paging": {"next": {}}}),
        ("batch_response_with_errors.json", {**{"status": "COMPLETE", "results": []}}),
        (
            "batch_response_with_errors.json",
            {
                "status": "COMPLETE",
                "results": [],
                "startedAt": "2026-01-01T00:00:00.000Z",
                "completedAt": "2026-01-01T00:00:00.000Z",
                "numErrors": 1,
                "errors": [{"status": "error", "category": "X", "message": "m"}],
            },
        ),
        ("error.json", {"message": "m", "category": "X", "correlationId": "not-a-uuid"}),
        ("rate_limit_error.json", {"status": "error", "message": "slow down"}),
        ("oauth_token.json", {"access_token": "a", "expires_in": 1}),
        ("property.json", {"name": "p", "type": "integer"}),
    ],
)
def test_schemas_reject_wrong_shapes(name: str, body: Any) -> None:
    with pytest.raises(ValidationError):
        validator(name).validate(body)


# -- real answers ----------------------------------------------------------------------------------


class World:
    """An emulator with data of every kind, and a client on it."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.emulator = HubSpotEmulator(
            clock=self.clock, search_limit_per_second=None, ten_second_limit=None
        )
        em = self.emulator
        em.add_property("deals", "external_id", has_unique_value=True)
        em.add_property(
            "deals", "flavours", type="enumeration", field_type="checkbox", options=["a", "b"]
        )
        em.add_property("deals", "happy", type="bool")
        em.add_property("deals", "day", type="date")
        em.register_object_type(
            "2-12345", "cars", properties=[{"name": "vin", "has_unique_value": True}]
        )
        self.deals = em.bulk_add(
            "deals",
            120,
            lambda i: {
                "dealname": f"d{i}",
                "amount": str(i),
                "dealstage": "closedwon",
                "external_id": f"x{i}",
                "flavours": "a;b",
                "happy": "true",
                "day": "2026-01-05",
            },
        )
        self.clock.advance(60)
        em.edit("deals", self.deals[0], amount="1000", dealname=None)
        em.archive("deals", self.deals[1])
        self.contact = em.add("contacts", {"email": "ada@example.com", "firstname": "Ada"})
        em.add("companies", {"name": "Acme", "domain": "acme.test"})
        em.add("cars", {"vin": "V1"})
        self.api = httpx.Client(
            transport=em.transport(),
            base_url=BASE,
            headers={"Authorization": f"Bearer {em.access_token}"},
        )


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    world = World()
    with world.api:
        yield world


Exchange = Callable[[World], httpx.Response]


def post(path: str, body: Any, **kwargs: Any) -> Exchange:
    return lambda w: w.api.post(path, json=body, **kwargs)


def get(path: str, **params: Any) -> Exchange:
    return lambda w: w.api.get(path, params=params)


def record_path(index: int, **params: Any) -> Exchange:
    return lambda w: w.api.get(f"{DEALS}/{w.deals[index]}", params=params)


def refresh(**overrides: str) -> Exchange:
    def exchange(w: World) -> httpx.Response:
        form = {
            "grant_type": "refresh_token",
            "client_id": w.emulator.client_id,
            "client_secret": w.emulator.client_secret,
            "refresh_token": "emulator-refresh-token",
            **overrides,
        }
        return w.api.post("/oauth/v1/token", data=form)

    return exchange


def faulted(status: int) -> Exchange:
    def exchange(w: World) -> httpx.Response:
        w.emulator.fail_next(status)
        return w.api.get(DEALS)

    return exchange


def rate_limited(policy: str, path: str = DEALS) -> Exchange:
    def exchange(w: World) -> httpx.Response:
        w.emulator.rate_limit_next(policy=policy)
        return w.api.get(path)

    return exchange


def second_page(w: World) -> httpx.Response:
    first = w.api.get(DEALS, params={"limit": 100}).json()
    return w.api.get(first["paging"]["next"]["link"])


def expired_token(w: World) -> httpx.Response:
    token = w.emulator.issue_access_token(ttl=0)
    return w.api.get(DEALS, headers={"Authorization": f"Bearer {token}"})


def real_limit(policy: str) -> Exchange:
    def exchange(w: World) -> httpx.Response:
        clock = ManualClock()
        limits: dict[str, Any] = {
            "TEN_SECONDLY_ROLLING": {"ten_second_limit": 1},
            "DAILY": {"daily_limit": 1},
            "SECONDLY": {"search_limit_per_second": 1},
        }[policy]
        emulator = HubSpotEmulator(clock=clock, **limits)
        headers = {"Authorization": f"Bearer {emulator.access_token}"}
        with httpx.Client(transport=emulator.transport(), base_url=BASE, headers=headers) as c:
            if policy == "SECONDLY":
                c.post(f"{DEALS}/search", json={})
                return c.post(f"{DEALS}/search", json={})
            c.get(DEALS)
            return c.get(DEALS)

    return exchange


def update_inputs(w: World, bad: bool) -> list[dict[str, Any]]:
    inputs: list[dict[str, Any]] = [{"id": w.deals[5], "properties": {"amount": "6"}}]
    if bad:
        inputs += [
            {"id": w.deals[6], "properties": {"dealstage": "nope"}},
            {"id": "999999", "properties": {}},
            {"id": w.deals[7], "properties": {"external_id": "x8"}},
        ]
    return inputs


EXCHANGES: dict[str, tuple[Exchange, int, str]] = {
    # listing
    "list": (get(DEALS, limit=100), 200, "collection_forward_paging.json"),
    "list last page": (second_page, 200, "collection_forward_paging.json"),
    "list all properties": (
        get(DEALS, properties="dealname,amount,flavours,happy,day,closedate,nope"),
        200,
        "collection_forward_paging.json",
    ),
    "list with history": (
        get(DEALS, limit=50, propertiesWithHistory="amount,dealname,hs_lastmodifieddate"),
        200,
        "collection_forward_paging.json",
    ),
    "list archived": (get(DEALS, archived="true"), 200, "collection_forward_paging.json"),
    "list contacts": (get(CONTACTS), 200, "collection_forward_paging.json"),
    "list companies": (get("/crm/v3/objects/0-2"), 200, "collection_forward_paging.json"),
    "list custom": (get("/crm/v3/objects/2-12345"), 200, "collection_forward_paging.json"),
    "list empty": (
        get("/crm/v3/objects/cars", archived="true"),
        200,
        "collection_forward_paging.json",
    ),
    # single objects
    "get": (record_path(0, propertiesWithHistory="amount"), 200, "object_with_associations.json"),
    "get archived": (record_path(1, archived="true"), 200, "archived_object.json"),
    "create": (post(DEALS, {"properties": {"dealname": "new"}}), 201, "object.json"),
    "update": (
        lambda w: w.api.patch(f"{DEALS}/{w.deals[3]}", json={"properties": {"amount": "3.5"}}),
        200,
        "object.json",
    ),
    # search
    "search": (
        post(
            f"{DEALS}/search",
            {
                "filterGroups": [
                    {"filters": [{"propertyName": "amount", "operator": "GTE", "value": "10"}]}
                ],
                "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
                "properties": ["amount", "dealname"],
                "limit": 200,
                "after": "0",
            },
        ),
        200,
        "search_response.json",
    ),
    "search count": (post(f"{DEALS}/search", {"limit": 0}), 200, "search_response.json"),
    "search contacts": (post(f"{CONTACTS}/search", {"query": "ada"}), 200, "search_response.json"),
    # batch
    "batch read": (
        lambda w: w.api.post(
            f"{DEALS}/batch/read",
            json={
                "inputs": [{"id": i} for i in w.deals[2:12]],
                "properties": ["amount"],
                "propertiesWithHistory": ["amount"],
            },
        ),
        200,
        "batch_response.json",
    ),
    "batch read missing": (
        lambda w: w.api.post(
            f"{DEALS}/batch/read", json={"inputs": [{"id": w.deals[2]}, {"id": "424242"}]}
        ),
        207,
        "batch_response_with_errors.json",
    ),
    "batch read archived": (
        lambda w: w.api.post(
            f"{DEALS}/batch/read",
            params={"archived": "true"},
            json={"inputs": [{"id": w.deals[1]}]},
        ),
        200,
        "batch_response.json",
    ),
    "batch read by unique property": (
        post(
            f"{CONTACTS}/batch/read", {"inputs": [{"id": "ada@example.com"}], "idProperty": "email"}
        ),
        200,
        "batch_response.json",
    ),
    "batch create": (
        post(
            f"{DEALS}/batch/create",
            {"inputs": [{"properties": {"dealname": "n1"}, "associations": []}]},
        ),
        201,
        "batch_response.json",
    ),
    "batch create with traces": (
        post(
            f"{DEALS}/batch/create",
            {
                "inputs": [
                    {"properties": {"dealname": "n2"}, "objectWriteTraceId": "t1"},
                    {"properties": {"amount": "abc"}, "objectWriteTraceId": "t2"},
                    {"properties": {"external_id": "x9"}, "objectWriteTraceId": "t3"},
                ]
            },
        ),
        207,
        "batch_response_with_errors.json",
    ),
    "batch update": (
        lambda w: w.api.post(f"{DEALS}/batch/update", json={"inputs": update_inputs(w, False)}),
        200,
        "batch_response.json",
    ),
    "batch update with errors": (
        lambda w: w.api.post(f"{DEALS}/batch/update", json={"inputs": update_inputs(w, True)}),
        207,
        "batch_response_with_errors.json",
    ),
    "batch upsert": (
        post(
            f"{DEALS}/batch/upsert",
            {
                "inputs": [
                    {"id": "x20", "idProperty": "external_id", "properties": {"amount": "1"}},
                    {"id": "y1", "idProperty": "external_id", "properties": {"dealname": "y"}},
                ]
            },
        ),
        200,
        "batch_upsert_response.json",
    ),
    "batch upsert with errors": (
        post(
            f"{DEALS}/batch/upsert",
            {
                "inputs": [
                    {"id": "y2", "idProperty": "external_id", "properties": {"happy": "maybe"}},
                    {"id": "y3", "idProperty": "external_id", "properties": {}},
                ]
            },
        ),
        207,
        "batch_upsert_response.json",
    ),
    # properties
    "properties": (get("/crm/v3/properties/deals"), 200, "properties_collection.json"),
    "properties of contacts": (get("/crm/v3/properties/0-1"), 200, "properties_collection.json"),
    "properties of a custom type": (
        get("/crm/v3/properties/cars"),
        200,
        "properties_collection.json",
    ),
    "property": (get("/crm/v3/properties/deals/dealstage"), 200, "property.json"),
    # oauth
    "oauth token": (refresh(), 200, "oauth_token.json"),
    "oauth bad refresh token": (refresh(refresh_token="nope"), 400, "oauth_error.json"),
    "oauth bad client": (refresh(client_id="nope"), 400, "oauth_error.json"),
    "oauth bad grant": (refresh(grant_type="password"), 400, "oauth_error.json"),
    # errors
    "401 missing token": (
        lambda w: w.api.get(DEALS, headers={"Authorization": ""}),
        401,
        "error.json",
    ),
    "401 expired token": (expired_token, 401, "error.json"),
    "400 list limit": (get(DEALS, limit=1000), 400, "error.json"),
    "400 bad cursor": (get(DEALS, after="???"), 400, "error.json"),
    "400 search cap": (post(f"{DEALS}/search", {"after": "10000"}), 400, "error.json"),
    "400 search filters": (
        post(
            f"{DEALS}/search",
            {
                "filterGroups": [
                    {"filters": [{"propertyName": "amount", "operator": "HAS_PROPERTY"}]}
                ]
                * 6
            },
        ),
        400,
        "error.json",
    ),
    "400 create validation": (
        post(DEALS, {"properties": {"nope": "1", "amount": "x"}}),
        400,
        "error.json",
    ),
    "409 create conflict": (post(DEALS, {"properties": {"external_id": "x50"}}), 409, "error.json"),
    "400 batch create without traces": (
        post(f"{DEALS}/batch/create", {"inputs": [{"properties": {"dealstage": "nope"}}]}),
        400,
        "error.json",
    ),
    "400 batch too large": (
        post(f"{DEALS}/batch/read", {"inputs": [{"id": str(i)} for i in range(101)]}),
        400,
        "error.json",
    ),
    "400 duplicate ids": (
        post(f"{DEALS}/batch/update", {"inputs": [{"id": "1", "properties": {}}] * 2}),
        400,
        "error.json",
    ),
    "400 invalid json": (
        lambda w: w.api.post(f"{DEALS}/search", content=b"[1, 2"),
        400,
        "error.json",
    ),
    "400 unknown type": (get("/crm/v3/objects/spaceships"), 400, "error.json"),
    "404 object": (get(f"{DEALS}/424242"), 404, "error.json"),
    "404 property": (get("/crm/v3/properties/deals/nope"), 404, "error.json"),
    "405": (lambda w: w.api.put(DEALS), 405, "error.json"),
    "500": (faulted(500), 500, "error.json"),
    "502": (faulted(502), 502, "error.json"),
    "503": (faulted(503), 503, "error.json"),
    "423": (faulted(423), 423, "error.json"),
    "477": (faulted(477), 477, "error.json"),
    # rate limits
    "429 ten secondly": (real_limit("TEN_SECONDLY_ROLLING"), 429, "rate_limit_error.json"),
    "429 daily": (real_limit("DAILY"), 429, "rate_limit_error.json"),
    "429 secondly": (real_limit("SECONDLY"), 429, "rate_limit_error.json"),
    "429 injected ten secondly": (
        rate_limited("TEN_SECONDLY_ROLLING"),
        429,
        "rate_limit_error.json",
    ),
    "429 injected daily": (rate_limited("DAILY"), 429, "rate_limit_error.json"),
    "429 injected secondly": (rate_limited("SECONDLY"), 429, "rate_limit_error.json"),
}


@pytest.mark.parametrize("case", list(EXCHANGES))
def test_answers_match_their_schemas(world: World, case: str) -> None:
    exchange, status, schema = EXCHANGES[case]
    response = exchange(world)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    check(schema, body)
    if schema == "collection_forward_paging.json":
        assert body["results"] or case == "list empty"
        for record in body["results"]:
            check("archived_object.json" if record["archived"] else "object.json", record)
    if case == "list archived":
        assert all(record["archived"] for record in body["results"])


def test_rate_limit_headers_are_integers(world: World) -> None:
    response = world.api.get(DEALS)
    for name in (
        "X-HubSpot-RateLimit-Daily",
        "X-HubSpot-RateLimit-Daily-Remaining",
        "X-HubSpot-RateLimit-Interval-Milliseconds",
        "X-HubSpot-RateLimit-Max",
        "X-HubSpot-RateLimit-Remaining",
    ):
        assert response.headers[name].isdigit(), name


def test_no_content_answers(world: World) -> None:
    archived = world.api.post(f"{DEALS}/batch/archive", json={"inputs": [{"id": world.deals[100]}]})
    deleted = world.api.delete(f"{DEALS}/{world.deals[101]}")
    for response in (archived, deleted):
        assert response.status_code == 204
        assert response.content == b""
