"""The Salesforce emulator's answers against JSON Schemas written from the REST API docs.

Salesforce publishes no static OpenAPI file, so ``tests/schemas/salesforce/*.json`` are small
hand-written draft 2020-12 schemas, each naming in ``$comment`` the documentation page it
follows. Every endpoint a connector uses is called for real (through the emulator's
transport) and its body validated, error answers included; a few wrong shapes are checked to
fail, so the schemas can tell.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from syncrecon.testing import ManualClock
from syncrecon.testing._salesforce import (
    SalesforceEmulator,
    make_jwt_assertion,
    make_test_key_pair,
)

SCHEMAS = Path(__file__).parent / "schemas" / "salesforce"
INSTANCE = "https://example.my.salesforce.com"
LOGIN = "https://login.salesforce.com"
V = "/services/data/v61.0"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def load_schemas() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(SCHEMAS.glob("*.json"))}


ALL = load_schemas()
REGISTRY: Registry[Any] = Registry().with_resources(
    (schema["$id"], Resource.from_contents(schema)) for schema in ALL.values()
)


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(ALL[name], registry=REGISTRY)


@attrs.define
class World:
    sf: SalesforceEmulator
    api: httpx.Client
    clock: ManualClock
    private_pem: str
    opportunity: str
    deleted: str


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return make_test_key_pair()


@pytest.fixture
def world(clock: ManualClock, keys: tuple[str, str]) -> Iterator[World]:
    sf = SalesforceEmulator(clock=clock)
    sf.register_jwt_client("ck", keys[1], "sync@example.com")
    sf.register_client_credentials("client-id", "s3cret")
    sf.bulk_add(
        "Opportunity",
        2001,
        lambda i: {
            "Name": f"Opp {i}",
            "StageName": "Prospecting",
            "CloseDate": "2026-03-01",
            "Amount": i or None,
            "Tags__c": "Renewal;Upsell" if i % 2 else None,
            "Description": "x" if i % 3 else None,
        },
    )
    opportunity = sf.add("Opportunity", Name="Solo", StageName="Closed Won", CloseDate="2026-02-01")
    deleted = sf.add("Opportunity", Name="Gone", StageName="Closed Lost", CloseDate="2026-02-01")
    clock.advance(timedelta(minutes=3))
    sf.delete("Opportunity", deleted)
    sf.edit("Opportunity", opportunity, Amount=10)
    clock.advance(timedelta(minutes=3))
    headers = {"Authorization": f"Bearer {sf.issue_token()}"}
    with httpx.Client(transport=sf.transport(), base_url=INSTANCE, headers=headers) as api:
        yield World(sf, api, clock, keys[0], opportunity, deleted)


def query(w: World, q: str, kind: str = "query") -> httpx.Response:
    return w.api.get(f"{V}/{kind}", params={"q": q})


def first_page_next(w: World) -> httpx.Response:
    first = query(w, "SELECT Id, Name, Amount, Tags__c, SystemModstamp FROM Opportunity").json()
    return w.api.get(first["nextRecordsUrl"])


def jwt_token(w: World, audience: str = LOGIN) -> httpx.Response:
    assertion = make_jwt_assertion(
        w.private_pem,
        consumer_key="ck",
        username="sync@example.com",
        audience=audience,
        expires_at=w.clock.now() + timedelta(minutes=3),
    )
    return w.api.post(
        f"{LOGIN}/services/oauth2/token", data={"grant_type": JWT_GRANT, "assertion": assertion}
    )


def client_credentials(w: World) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_id": "client-id", "client_secret": "s3cret"}
    return w.api.post(f"{INSTANCE}/services/oauth2/token", data=form)


def collections(
    w: World, method: str, records: list[dict[str, Any]], **body: Any
) -> httpx.Response:
    return w.api.request(method, f"{V}/composite/sobjects", json={**body, "records": records})


def opp(**fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Opportunity"}, **fields}


def over_limit(w: World) -> httpx.Response:
    w.sf.fail_next(403)
    return w.api.get(f"{V}/limits")


def unavailable(w: World) -> httpx.Response:
    w.sf.fail_next(503)
    return w.api.get(f"{V}/limits")


def timed_out(w: World) -> httpx.Response:
    w.sf.query_timeout_next()
    return query(w, "SELECT Id FROM Opportunity")


def expired_session(w: World) -> httpx.Response:
    w.sf.expire_sessions()
    return w.api.get(f"{V}/limits")


Exchange = Callable[[World], httpx.Response]

CASES: list[tuple[str, Exchange, str, int]] = [
    # queries
    (
        "query, first page",
        lambda w: query(w, "SELECT Id, Name, Amount, CloseDate, IsDeleted FROM Opportunity"),
        "query-result",
        200,
    ),
    ("query, next page", first_page_next, "query-result", 200),
    (
        "queryAll",
        lambda w: query(
            w, "SELECT Id, IsDeleted FROM Opportunity WHERE Name LIKE 'Go%'", "queryAll"
        ),
        "query-result",
        200,
    ),
    ("query, COUNT()", lambda w: query(w, "SELECT COUNT() FROM Opportunity"), "query-result", 200),
    (
        "query, no rows",
        lambda w: query(w, "SELECT Id FROM Opportunity WHERE Name = 'none'"),
        "query-result",
        200,
    ),
    ("query, malformed", lambda w: query(w, "SELECT FROM"), "error-list", 400),
    ("query, unknown field", lambda w: query(w, "SELECT Nope FROM Opportunity"), "error-list", 400),
    ("query, timeout", timed_out, "error-list", 400),
    (
        "query, bad locator",
        lambda w: w.api.get(f"{V}/query/01g000000000042AAA-2000"),
        "error-list",
        400,
    ),
    # records
    (
        "sObject row",
        lambda w: w.api.get(f"{V}/sobjects/Opportunity/{w.opportunity}"),
        "sobject-record",
        200,
    ),
    (
        "sObject row, deleted",
        lambda w: w.api.get(f"{V}/sobjects/Opportunity/{w.deleted}"),
        "error-list",
        404,
    ),
    (
        "sObject create",
        lambda w: w.api.post(
            f"{V}/sobjects/Opportunity",
            json={"Name": "New", "StageName": "Prospecting", "CloseDate": "2026-04-01"},
        ),
        "save-result",
        201,
    ),
    (
        "sObject update, invalid",
        lambda w: w.api.patch(f"{V}/sobjects/Opportunity/{w.opportunity}", json={"Name": None}),
        "error-list",
        400,
    ),
    (
        "sObject, wrong method",
        lambda w: w.api.put(f"{V}/sobjects/Opportunity/{w.opportunity}", json={}),
        "error-list",
        405,
    ),
    # collections
    (
        "collections retrieve, GET",
        lambda w: w.api.get(
            f"{V}/composite/sobjects/Opportunity",
            params={"ids": f"{w.opportunity},{w.deleted},bogus", "fields": "Id,Name,Amount"},
        ),
        "collections-retrieve",
        200,
    ),
    (
        "collections retrieve, POST",
        lambda w: w.api.post(
            f"{V}/composite/sobjects/Opportunity",
            json={"ids": [w.opportunity, "006000000000999AAA"], "fields": ["Name", "Tags__c"]},
        ),
        "collections-retrieve",
        200,
    ),
    (
        "collections create",
        lambda w: collections(
            w,
            "POST",
            [opp(Name="A", StageName="Prospecting", CloseDate="2026-04-01"), opp(Name="B")],
        ),
        "save-results",
        200,
    ),
    (
        "collections update, allOrNone",
        lambda w: collections(
            w,
            "PATCH",
            [opp(id=w.opportunity, Name="C"), opp(id=w.deleted, Name="D")],
            allOrNone=True,
        ),
        "save-results",
        200,
    ),
    (
        "collections delete",
        lambda w: w.api.delete(
            f"{V}/composite/sobjects", params={"ids": f"{w.opportunity},{w.deleted},x"}
        ),
        "save-results",
        200,
    ),
    (
        "collections, too many records",
        lambda w: collections(w, "POST", [opp(Name=str(i)) for i in range(201)]),
        "error-list",
        400,
    ),
    (
        "collections, unknown field",
        lambda w: collections(w, "POST", [opp(Nope=1)]),
        "error-list",
        400,
    ),
    # metadata, replication, limits
    (
        "describe",
        lambda w: w.api.get(f"{V}/sobjects/Opportunity/describe"),
        "describe-sobject",
        200,
    ),
    (
        "describe, unknown sObject",
        lambda w: w.api.get(f"{V}/sobjects/Nothing__c/describe"),
        "error-list",
        404,
    ),
    (
        "getDeleted",
        lambda w: w.api.get(
            f"{V}/sobjects/Opportunity/deleted/",
            params={"start": "2025-12-31T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
        ),
        "get-deleted",
        200,
    ),
    (
        "getDeleted, too old",
        lambda w: w.api.get(
            f"{V}/sobjects/Opportunity/deleted/",
            params={"start": "2025-11-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
        ),
        "error-list",
        400,
    ),
    (
        "getUpdated",
        lambda w: w.api.get(
            f"{V}/sobjects/Opportunity/updated/",
            params={"start": "2025-12-31T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
        ),
        "get-updated",
        200,
    ),
    ("limits", lambda w: w.api.get(f"{V}/limits"), "limits", 200),
    ("over the daily limit", over_limit, "error-list", 403),
    ("server unavailable", unavailable, "error-list", 503),
    ("expired session", expired_session, "error-list", 401),
    # OAuth
    ("JWT bearer token", jwt_token, "oauth-token", 200),
    ("client credentials token", client_credentials, "oauth-token", 200),
    (
        "JWT bearer, wrong audience",
        lambda w: jwt_token(w, audience="https://elsewhere.example.com"),
        "oauth-error",
        400,
    ),
    (
        "client credentials on the login host",
        lambda w: w.api.post(
            f"{LOGIN}/services/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": "x", "client_secret": "y"},
        ),
        "oauth-error",
        400,
    ),
]


@pytest.mark.parametrize(
    ("exchange", "schema", "status"),
    [pytest.param(call, schema, status, id=name) for name, call, schema, status in CASES],
)
def test_response_matches_its_schema(
    world: World, exchange: Exchange, schema: str, status: int
) -> None:
    response = exchange(world)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    validator(schema).validate(response.json())
    data_call = "/services/data/" in response.request.url.path
    if data_call and status != 401:
        assert re.fullmatch(r"api-usage=\d+/\d+", response.headers["Sforce-Limit-Info"])


def test_every_schema_is_used() -> None:
    assert {schema for _, _, schema, _ in CASES} | {"sobject-record"} == set(ALL)


@pytest.mark.parametrize("name", sorted(ALL))
def test_schemas_are_valid_and_cite_their_page(name: str) -> None:
    schema = ALL[name]
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:syncrecon:salesforce:{name}"
    assert re.search(r"https://(developer|help)\.salesforce\.com/", schema["$comment"])


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ("query-result", [{"message": "x", "errorCode": "MALFORMED_QUERY"}]),
        ("query-result", {"totalSize": 3, "done": False, "records": []}),  # no nextRecordsUrl
        ("query-result", {"totalSize": 1, "done": True, "records": [{"Id": "x"}]}),  # attributes
        ("save-result", {"success": True, "errors": []}),  # success without an id
        ("save-result", {"success": False, "errors": []}),  # failure without an error
        ("save-results", [{"id": "006000000000001AAA", "success": "yes", "errors": []}]),
        ("collections-retrieve", [None, {"Name": "no attributes"}]),
        ("get-deleted", {"deletedRecords": [], "latestDateCovered": "2026-01-01T00:00:00Z"}),
        ("error-list", {"error": "invalid_grant", "error_description": "x"}),
        ("oauth-token", {"access_token": "t", "instance_url": "https://x", "id": "i"}),
        (
            "oauth-token",
            {
                "access_token": "t",
                "instance_url": "https://x",
                "token_type": "Bearer",
                "id": "https://x/id/00D000000000001EAA/005000000000001AAA",
                "refresh_token": "r",
            },
        ),
        ("limits", {"DailyApiRequests": {"Max": 5}}),
        ("describe-sobject", {"name": "X", "label": "X", "keyPrefix": "a00", "fields": []}),
    ],
)
def test_schemas_reject_wrong_shapes(schema: str, instance: Any) -> None:
    with pytest.raises(ValidationError):
        validator(schema).validate(instance)
