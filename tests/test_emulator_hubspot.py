"""The HubSpot CRM v3 emulator (``syncrecon.testing._hubspot.HubSpotEmulator``) over HTTP.

Every test drives the emulator through ``httpx`` as a connector would: through
``emulator.transport()`` (sync and async clients), ``httpx.ASGITransport`` and once through
uvicorn on 127.0.0.1. Time is a :class:`~syncrecon.testing.ManualClock`; nothing sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from serving import serve
from syncrecon.testing import ManualClock
from syncrecon.testing._hubspot import HubSpotEmulator, HubSpotRequest

BASE = "https://api.hubapi.com"
DEALS = "/crm/v3/objects/deals"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emulator(clock: ManualClock) -> HubSpotEmulator:
    return HubSpotEmulator(clock=clock)


def client_for(emulator: HubSpotEmulator, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token or emulator.access_token}"}
    return httpx.Client(transport=emulator.transport(), base_url=BASE, headers=headers)


@pytest.fixture
def api(emulator: HubSpotEmulator) -> Iterator[httpx.Client]:
    with client_for(emulator) as client:
        yield client


def list_all(api: httpx.Client, path: str = DEALS, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        query = dict(params)
        if after is not None:
            query["after"] = after
        response = api.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        out.extend(body["results"])
        after = body.get("paging", {}).get("next", {}).get("after")
        if after is None:
            return out


def search(api: httpx.Client, body: dict[str, Any], path: str = DEALS) -> httpx.Response:
    return api.post(f"{path}/search", json=body)


def flt(name: str, operator: str, value: Any = None, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"propertyName": name, "operator": operator, **more}
    if value is not None:
        out["value"] = value
    return out


def found_ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


# -- listing -------------------------------------------------------------------------------------


def test_an_empty_listing_has_no_paging(api: httpx.Client) -> None:
    body = api.get(DEALS, params={"limit": 100}).json()
    assert body == {"results": []}


@pytest.mark.parametrize(("n", "pages"), [(1, 1), (99, 1), (100, 1), (101, 2), (250, 3)])
def test_pagination_edges(emulator: HubSpotEmulator, api: httpx.Client, n: int, pages: int) -> None:
    ids = emulator.bulk_add("deals", n, lambda i: {"dealname": f"d{i}"})
    first = api.get(DEALS, params={"limit": 100}).json()
    assert len(first["results"]) == min(n, 100)
    assert ("paging" in first) == (n > 100)
    got = list_all(api, limit=100)
    assert [r["id"] for r in got] == ids  # every record once, in id order
    assert emulator.request_count("list") == 1 + pages


def test_paging_cursor_is_opaque_with_a_link(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    ids = emulator.bulk_add("deals", 3, lambda i: {"dealname": f"d{i}"})
    body = api.get(DEALS, params={"limit": 2, "properties": "dealname"}).json()
    nxt = body["paging"]["next"]
    assert nxt["after"] != ids[2]
    link = httpx.URL(nxt["link"])
    assert link.host == "api.hubapi.com"
    assert link.params["after"] == nxt["after"]
    assert link.params["properties"] == "dealname"
    again = api.get(nxt["link"]).json()
    assert [r["id"] for r in again["results"]] == [ids[2]]
    assert api.get(DEALS, params={"after": "!!not-a-cursor"}).status_code == 400


def test_the_default_page_size_is_ten(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    emulator.bulk_add("deals", 11, lambda i: {})
    assert len(api.get(DEALS).json()["results"]) == 10


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 100}, 200),
        ({"limit": 101}, 400),
        ({"limit": 0}, 400),
        ({"limit": "x"}, 400),
        ({"limit": 50, "propertiesWithHistory": "amount"}, 200),
        ({"limit": 51, "propertiesWithHistory": "amount"}, 400),
        ({"archived": "maybe"}, 400),
    ],
)
def test_list_limits(api: httpx.Client, params: dict[str, Any], status: int) -> None:
    response = api.get(DEALS, params=params)
    assert response.status_code == status
    if status == 400:
        assert response.json()["category"] == "VALIDATION_ERROR"


def test_values_on_the_wire_are_strings_or_null(
    emulator: HubSpotEmulator, api: httpx.Client
) -> None:
    deal = emulator.add(
        "deals",
        {"dealname": "Ada", "amount": 12.50, "closedate": "2026-03-01", "dealstage": "closedwon"},
    )
    record = api.get(DEALS).json()["results"][0]
    assert record["id"] == deal
    props = record["properties"]
    assert props == {
        "amount": "12.5",
        "closedate": "2026-03-01T00:00:00.000Z",
        "createdate": "2026-01-01T00:00:00.000Z",
        "dealname": "Ada",
        "dealstage": "closedwon",
        "hs_lastmodifieddate": "2026-01-01T00:00:00.000Z",
        "hs_object_id": deal,
        "pipeline": None,
    }
    assert record["createdAt"] == record["updatedAt"] == "2026-01-01T00:00:00.000Z"
    assert record["archived"] is False
    assert "archivedAt" not in record


def test_requested_properties_and_the_always_present_ones(
    emulator: HubSpotEmulator, api: httpx.Client
) -> None:
    emulator.add("deals", {"dealname": "Ada", "description": "hi"})
    emulator.add("contacts", {"email": "ada@example.com", "firstname": "Ada"})
    comma = api.get(DEALS, params={"properties": "description,nope"}).json()["results"][0]
    assert set(comma["properties"]) == {
        "description",
        "createdate",
        "hs_lastmodifieddate",
        "hs_object_id",
    }
    repeated = api.get(
        DEALS, params=[("properties", "description"), ("properties", "dealname")]
    ).json()["results"][0]
    assert repeated["properties"]["dealname"] == "Ada"
    assert repeated["properties"]["description"] == "hi"
    contact = api.get("/crm/v3/objects/contacts", params={"properties": "email"}).json()
    assert set(contact["results"][0]["properties"]) == {
        "email",
        "createdate",
        "lastmodifieddate",
        "hs_object_id",
    }
    # object types answer to their ids too
    by_id = api.get("/crm/v3/objects/0-1").json()
    assert by_id["results"][0]["properties"]["firstname"] == "Ada"


def test_archived_listing_returns_only_archived_records(
    emulator: HubSpotEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    ids = emulator.bulk_add("deals", 5, lambda i: {"dealname": f"d{i}"})
    clock.advance(60)
    emulator.archive("deals", ids[1])
    api.delete(f"{DEALS}/{ids[3]}")
    active = list_all(api)
    archived = list_all(api, archived="true")
    assert [r["id"] for r in active] == [ids[0], ids[2], ids[4]]
    assert [r["id"] for r in archived] == [ids[1], ids[3]]
    for record in archived:
        assert record["archived"] is True
        assert record["archivedAt"] == "2026-01-01T00:01:00.000Z"
        # archiving does not move the modification date
        assert record["properties"]["hs_lastmodifieddate"] == "2026-01-01T00:00:00.000Z"
    emulator.restore("deals", ids[1])
    assert [r["id"] for r in list_all(api, archived="true")] == [ids[3]]
    assert len(list_all(api)) == 4


def test_properties_with_history(
    emulator: HubSpotEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    deal = emulator.add("deals", {"amount": "1"})
    clock.advance(1)
    emulator.edit("deals", deal, amount="2")
    clock.advance(1)
    api.patch(f"{DEALS}/{deal}", json={"properties": {"amount": "3", "dealname": "x"}})
    body = api.get(DEALS, params={"propertiesWithHistory": "amount,dealname,pipeline"}).json()
    history = body["results"][0]["propertiesWithHistory"]
    assert [h["value"] for h in history["amount"]] == ["3", "2", "1"]  # newest first
    assert [h["timestamp"][-7:] for h in history["amount"]] == [
        "02.000Z",
        "01.000Z",
        "00.000Z",
    ]
    assert history["amount"][0]["sourceType"] == "INTEGRATION"
    assert history["amount"][0]["sourceId"] == str(emulator.app_id)
    assert history["amount"][1]["sourceType"] == "CRM_UI"
    assert [h["value"] for h in history["dealname"]] == ["x"]
    assert history["pipeline"] == []
    assert emulator.history("deals", deal, "amount") == history["amount"]


def test_an_unchanged_write_moves_nothing(
    emulator: HubSpotEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    deal = emulator.add("deals", {"dealname": "Ada"})
    clock.advance(5)
    response = api.post(
        f"{DEALS}/batch/update", json={"inputs": [{"id": deal, "properties": {"dealname": "Ada"}}]}
    )
    assert response.status_code == 200
    assert response.json()["results"][0]["updatedAt"] == "2026-01-01T00:00:00.000Z"
    assert emulator.edit("deals", deal, dealname="Ada") is False
    assert emulator.edit("deals", deal, dealname="Bea") is True
    assert emulator.get("deals", deal)["updatedAt"] == "2026-01-01T00:00:05.000Z"


# -- search ----------------------------------------------------------------------------------------


@pytest.fixture
def searchable(emulator: HubSpotEmulator, clock: ManualClock) -> list[str]:
    emulator.search_limit_per_second = None
    ids = []
    for i, (name, amount, stage) in enumerate(
        [
            ("Alpha deal", "10", "closedwon"),
            ("Beta deal", "20", "closedlost"),
            ("Gamma", "30", "closedwon"),
            ("delta", None, "contractsent"),
        ]
    ):
        clock.advance(60)
        ids.append(
            emulator.add(
                "deals",
                {"dealname": name, "amount": amount, "dealstage": stage, "description": f"n{i}"},
            )
        )
    return ids


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([flt("amount", "EQ", "20")], [1]),
        ([flt("amount", "NEQ", "20")], [0, 2, 3]),
        ([flt("amount", "LT", "20")], [0]),
        ([flt("amount", "LTE", "20")], [0, 1]),
        ([flt("amount", "GT", "10")], [1, 2]),
        ([flt("amount", "GTE", "10")], [0, 1, 2]),
        ([flt("amount", "BETWEEN", "15", highValue="30")], [1, 2]),
        ([flt("dealstage", "IN", values=["closedwon", "contractsent"])], [0, 2, 3]),
        ([flt("dealstage", "NOT_IN", values=["closedwon"])], [1, 3]),
        ([flt("amount", "HAS_PROPERTY")], [0, 1, 2]),
        ([flt("amount", "NOT_HAS_PROPERTY")], [3]),
        ([flt("dealname", "EQ", "GAMMA")], [2]),  # strings compare case-insensitively
        ([flt("dealname", "CONTAINS_TOKEN", "deal")], [0, 1]),
        ([flt("dealname", "CONTAINS_TOKEN", "alph*")], [0]),
        ([flt("dealstage", "EQ", "closedwon"), flt("amount", "GT", "10")], [2]),
        ([flt("createdate", "GT", "2026-01-01T00:02:00Z")], [2, 3]),
        ([flt("hs_lastmodifieddate", "LTE", str(1767225720000))], [0, 1]),  # epoch ms
        ([flt("hs_object_id", "GTE", "0")], [0, 1, 2, 3]),
    ],
)
def test_search_operators(
    api: httpx.Client, searchable: list[str], filters: list[dict[str, Any]], expected: list[int]
) -> None:
    response = search(api, {"filterGroups": [{"filters": filters}], "limit": 200})
    assert found_ids(response) == [searchable[i] for i in expected]
    assert response.json()["total"] == len(expected)


def test_search_filter_groups_are_ored(api: httpx.Client, searchable: list[str]) -> None:
    body = {
        "filterGroups": [
            {"filters": [flt("amount", "EQ", "10")]},
            {"filters": [flt("dealstage", "EQ", "contractsent")]},
        ]
    }
    assert found_ids(search(api, body)) == [searchable[0], searchable[3]]


def test_search_sorts(api: httpx.Client, searchable: list[str]) -> None:
    by_amount = {"sorts": [{"propertyName": "amount", "direction": "DESCENDING"}]}
    # records without the value come last
    assert found_ids(search(api, by_amount)) == [searchable[i] for i in (2, 1, 0, 3)]
    assert found_ids(search(api, {"sorts": ["-createdate"]})) == searchable[::-1]
    assert found_ids(search(api, {"sorts": ["amount"]})) == [searchable[i] for i in (0, 1, 2, 3)]
    assert search(api, {"sorts": ["nope"]}).status_code == 400


def test_search_pages_and_properties(api: httpx.Client, searchable: list[str]) -> None:
    first = search(api, {"limit": 3, "properties": ["description"]})
    body = first.json()
    assert body["total"] == 4
    assert body["paging"] == {"next": {"after": "3"}}
    assert set(body["results"][0]["properties"]) == {
        "description",
        "createdate",
        "hs_lastmodifieddate",
        "hs_object_id",
    }
    rest = search(api, {"limit": 3, "after": body["paging"]["next"]["after"]}).json()
    assert [r["id"] for r in rest["results"]] == [searchable[3]]
    assert "paging" not in rest
    count = search(api, {"limit": 0}).json()
    assert count == {"total": 4, "results": []}
    assert search(api, {"limit": 201}).status_code == 400
    assert search(api, {"limit": 200}).status_code == 200


def test_search_query_text(api: httpx.Client, searchable: list[str]) -> None:
    assert found_ids(search(api, {"query": "beta"})) == [searchable[1]]


def test_search_leaves_out_archived_records(
    emulator: HubSpotEmulator, api: httpx.Client, searchable: list[str]
) -> None:
    emulator.archive("deals", searchable[0])
    assert found_ids(search(api, {})) == searchable[1:]


@pytest.mark.parametrize(
    ("groups", "ok"),
    [
        ([[flt("amount", "HAS_PROPERTY")]] * 5, True),
        ([[flt("amount", "HAS_PROPERTY")]] * 6, False),  # more than 5 groups
        ([[flt("amount", "HAS_PROPERTY")] * 6], True),
        ([[flt("amount", "HAS_PROPERTY")] * 7], False),  # more than 6 in a group
        ([[flt("amount", "HAS_PROPERTY")] * 6] * 3, True),  # 18 in all
        ([[flt("amount", "HAS_PROPERTY")] * 5] * 4, False),  # 20 in all
    ],
)
def test_search_filter_caps(
    api: httpx.Client, searchable: list[str], groups: list[list[dict[str, Any]]], ok: bool
) -> None:
    response = search(api, {"filterGroups": [{"filters": g} for g in groups]})
    assert response.status_code == (200 if ok else 400)
    if not ok:
        assert response.json()["category"] == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    "bad",
    [
        flt("nope", "EQ", "1"),
        flt("amount", "ROUGHLY", "1"),
        flt("amount", "EQ", "ten"),
        flt("amount", "EQ"),
        flt("amount", "IN", "1"),
        flt("closedate", "GT", "someday"),
    ],
)
def test_search_rejects_bad_filters(
    api: httpx.Client, searchable: list[str], bad: dict[str, Any]
) -> None:
    response = search(api, {"filterGroups": [{"filters": [bad]}]})
    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR"


def test_search_stops_at_ten_thousand_results(clock: ManualClock) -> None:
    """10,050 records share one modification time: paging by timestamp alone cannot get past
    the 10,000-result cap, which answers 400; windows of hs_object_id can."""
    emulator = HubSpotEmulator(clock=clock, search_limit_per_second=None)
    ids = emulator.bulk_add("deals", 10_050, lambda i: {"dealname": f"d{i}"})
    stamp = "2026-01-01T00:00:00.000Z"
    query: dict[str, Any] = {
        "filterGroups": [{"filters": [flt("hs_lastmodifieddate", "EQ", stamp)]}],
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["hs_object_id"],
        "limit": 200,
    }
    with client_for(emulator) as api:
        seen: list[str] = []
        after: str | None = None
        while True:
            page = search(api, {**query, **({"after": after} if after else {})})
            if page.status_code != 200:
                break
            body = page.json()
            assert body["total"] == 10_050
            seen.extend(r["id"] for r in body["results"])
            after = body["paging"]["next"]["after"]
        assert len(seen) == 10_000
        assert after == "10000"
        assert page.status_code == 400
        error = page.json()
        assert error["status"] == "error"
        assert error["category"] == "VALIDATION_ERROR"
        assert "10,000" in error["message"]
        assert search(api, {**query, "after": "10001"}).status_code == 400
        # the fix: a window of ids past the last one seen
        rest = search(
            api,
            {
                **query,
                "filterGroups": [
                    {
                        "filters": [
                            flt("hs_lastmodifieddate", "EQ", stamp),
                            flt("hs_object_id", "GT", seen[-1]),
                        ]
                    }
                ],
                "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            },
        )
        assert found_ids(rest) == ids[10_000:]


def test_search_index_lag(clock: ManualClock) -> None:
    emulator = HubSpotEmulator(clock=clock, index_lag=5, search_limit_per_second=None)
    with client_for(emulator) as api:
        old = emulator.add("deals", {"dealname": "old", "amount": "1"})
        clock.advance(10)
        new = emulator.add("deals", {"dealname": "new"})
        emulator.edit("deals", old, amount="2")

        def searched() -> dict[str, str | None]:
            body = search(api, {"properties": ["amount"]}).json()
            return {r["id"]: r["properties"]["amount"] for r in body["results"]}

        assert searched() == {old: "1"}  # the new record is not indexed; the edit is not either
        # list and batch/read are immediate
        assert [r["id"] for r in list_all(api)] == [old, new]
        read = api.post(
            f"{DEALS}/batch/read", json={"inputs": [{"id": new}], "properties": ["dealname"]}
        )
        assert read.json()["results"][0]["properties"]["dealname"] == "new"
        clock.advance(4.999)
        assert searched() == {old: "1"}
        clock.advance(0.001)
        assert searched() == {old: "2", new: None}
        emulator.archive("deals", old)
        assert old in searched()  # the archive is not indexed yet either
        clock.advance(5)
        assert searched() == {new: None}
        # an old state's modification date is served with it
        emulator.edit("deals", new, amount="7")
        body = search(api, {"properties": ["amount"]}).json()
        assert body["results"][0]["updatedAt"] == "2026-01-01T00:00:10.000Z"


# -- batch -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["read", "create", "update", "upsert", "archive"])
def test_batches_take_at_most_100_inputs(
    emulator: HubSpotEmulator, api: httpx.Client, operation: str
) -> None:
    ids = emulator.bulk_add("deals", 101, lambda i: {"dealname": f"d{i}"})
    inputs = [{"id": i, "idProperty": "hs_object_id", "properties": {}} for i in ids]
    too_many = api.post(f"{DEALS}/batch/{operation}", json={"inputs": inputs})
    assert too_many.status_code == 400
    assert too_many.json()["category"] == "VALIDATION_ERROR"
    assert emulator.count("deals") == 101
    if operation != "upsert":
        assert api.post(f"{DEALS}/batch/{operation}", json={"inputs": inputs[:100]}).is_success


def test_batch_read(emulator: HubSpotEmulator, api: httpx.Client, clock: ManualClock) -> None:
    ids = emulator.bulk_add("deals", 3, lambda i: {"dealname": f"d{i}", "amount": str(i)})
    ok = api.post(
        f"{DEALS}/batch/read",
        json={"inputs": [{"id": ids[2]}, {"id": ids[0]}], "properties": ["amount"]},
    )
    assert ok.status_code == 200
    body = ok.json()
    assert body["status"] == "COMPLETE"
    assert [r["id"] for r in body["results"]] == [ids[2], ids[0]]
    assert body["results"][0]["properties"]["amount"] == "2"
    assert body["startedAt"] == body["completedAt"] == "2026-01-01T00:00:00.000Z"
    emulator.archive("deals", ids[1])
    partial = api.post(
        f"{DEALS}/batch/read",
        json={"inputs": [{"id": ids[0]}, {"id": ids[1]}, {"id": "999999"}, {"id": "x"}]},
    )
    assert partial.status_code == 207
    body = partial.json()
    assert [r["id"] for r in body["results"]] == [ids[0]]
    assert body["numErrors"] == 1
    [error] = body["errors"]
    assert error["status"] == "error"
    assert error["category"] == "OBJECT_NOT_FOUND"
    assert error["context"] == {"ids": [ids[1], "999999", "x"]}
    archived = api.post(
        f"{DEALS}/batch/read", params={"archived": "true"}, json={"inputs": [{"id": ids[1]}]}
    )
    assert archived.status_code == 200
    assert archived.json()["results"][0]["archived"] is True


def test_batch_read_by_a_unique_property(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    contact = emulator.add("contacts", {"email": "ada@example.com"})
    body = api.post(
        "/crm/v3/objects/contacts/batch/read",
        json={"inputs": [{"id": "ADA@example.com"}], "idProperty": "email", "properties": []},
    ).json()
    assert [r["id"] for r in body["results"]] == [contact]
    not_unique = api.post(
        "/crm/v3/objects/contacts/batch/read",
        json={"inputs": [{"id": "Ada"}], "idProperty": "firstname"},
    )
    assert not_unique.status_code == 400


def test_batch_create(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    response = api.post(
        f"{DEALS}/batch/create",
        json={
            "inputs": [
                {"properties": {"dealname": "a", "amount": "5"}, "associations": []},
                {"properties": {"dealname": "b"}},
            ]
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "COMPLETE"
    assert [r["properties"]["dealname"] for r in body["results"]] == ["a", "b"]
    assert body["results"][0]["properties"]["amount"] == "5"
    assert emulator.count("deals") == 2


@pytest.mark.parametrize(
    ("properties", "code"),
    [
        ({"nope": "1"}, "PROPERTY_DOESNT_EXIST"),
        ({"dealstage": "won-ish"}, "INVALID_OPTION"),
        ({"amount": "twelve"}, "INVALID_FLOAT"),
        ({"closedate": "next week"}, "INVALID_DATE"),
        ({"hs_object_id": "5"}, "READ_ONLY_VALUE"),
    ],
)
def test_batch_create_fails_whole_without_trace_ids(
    emulator: HubSpotEmulator, api: httpx.Client, properties: dict[str, str], code: str
) -> None:
    response = api.post(
        f"{DEALS}/batch/create",
        json={"inputs": [{"properties": {"dealname": "ok"}}, {"properties": properties}]},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith("Property values were not valid: [")
    assert body["errors"][0]["code"] == code
    assert emulator.count("deals") == 0  # nothing created


def test_batch_create_multi_status_with_trace_ids(
    emulator: HubSpotEmulator, api: httpx.Client
) -> None:
    response = api.post(
        f"{DEALS}/batch/create",
        json={
            "inputs": [
                {"properties": {"dealname": "ok"}, "objectWriteTraceId": "t1"},
                {"properties": {"dealstage": "nope"}, "objectWriteTraceId": "t2"},
                {"properties": {"amount": "1e3"}, "objectWriteTraceId": "t3"},
            ]
        },
    )
    assert response.status_code == 207
    body = response.json()
    assert [r["objectWriteTraceId"] for r in body["results"]] == ["t1", "t3"]
    assert body["results"][1]["properties"]["amount"] == "1000"
    assert body["numErrors"] == 1
    [error] = body["errors"]
    assert error["category"] == "VALIDATION_ERROR"
    assert error["context"] == {"objectWriteTraceId": ["t2"]}
    assert error["errors"][0]["code"] == "INVALID_OPTION"
    assert error["errors"][0]["in"] == "dealstage"
    assert emulator.count("deals") == 2


def test_unique_values_are_not_duplicated(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    emulator.add_property("deals", "external_id", has_unique_value=True)
    first = api.post(
        f"{DEALS}/batch/create",
        json={"inputs": [{"properties": {"external_id": "x1"}, "objectWriteTraceId": "a"}]},
    )
    assert first.status_code == 201
    existing = first.json()["results"][0]["id"]
    # the create is retried (its answer was lost): refused, not duplicated
    again = api.post(
        f"{DEALS}/batch/create",
        json={
            "inputs": [
                {"properties": {"external_id": "x1"}, "objectWriteTraceId": "a"},
                {"properties": {"external_id": "x2"}, "objectWriteTraceId": "b"},
                {"properties": {"external_id": "x2"}, "objectWriteTraceId": "c"},
            ]
        },
    )
    assert again.status_code == 207
    body = again.json()
    assert [r["properties"]["external_id"] for r in body["results"]] == ["x2"]
    assert [e["category"] for e in body["errors"]] == ["CONFLICT", "CONFLICT"]
    assert body["errors"][0]["context"]["objectWriteTraceId"] == ["a"]
    assert body["errors"][0]["context"]["existingId"] == [existing]
    assert emulator.count("deals") == 2
    single = api.post(DEALS, json={"properties": {"external_id": "x1"}})
    assert single.status_code == 409
    assert single.json()["category"] == "CONFLICT"
    assert single.json()["message"].endswith(f"Existing ID: {existing}")
    with pytest.raises(ValueError, match="already exists"):
        emulator.add("deals", {"external_id": "x1"})


def test_contacts_are_unique_by_email(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    contact = emulator.add("contacts", {"email": "ada@example.com"})
    response = api.post(
        "/crm/v3/objects/contacts", json={"properties": {"email": "Ada@Example.com"}}
    )
    assert response.status_code == 409
    assert response.json()["message"] == f"Contact already exists. Existing ID: {contact}"
    without_traces = api.post(
        "/crm/v3/objects/contacts/batch/create",
        json={"inputs": [{"properties": {"email": "ada@example.com"}}]},
    )
    assert without_traces.status_code == 409
    # archived contacts free their email
    emulator.archive("contacts", contact)
    assert (
        api.post(
            "/crm/v3/objects/contacts", json={"properties": {"email": "ada@example.com"}}
        ).status_code
        == 201
    )
    with pytest.raises(ValueError, match="taken"):
        emulator.restore("contacts", contact)


def test_batch_update(emulator: HubSpotEmulator, api: httpx.Client, clock: ManualClock) -> None:
    ids = emulator.bulk_add("deals", 3, lambda i: {"dealname": f"d{i}"})
    clock.advance(30)
    ok = api.post(
        f"{DEALS}/batch/update",
        json={"inputs": [{"id": ids[0], "properties": {"amount": "9", "dealname": ""}}]},
    )
    assert ok.status_code == 200
    [result] = ok.json()["results"]
    assert result["properties"]["amount"] == "9"
    assert result["properties"]["dealname"] is None  # "" clears a value
    assert result["updatedAt"] == "2026-01-01T00:00:30.000Z"
    assert result["properties"]["hs_lastmodifieddate"] == "2026-01-01T00:00:30.000Z"
    emulator.archive("deals", ids[2])
    partial = api.post(
        f"{DEALS}/batch/update",
        json={
            "inputs": [
                {"id": ids[0], "properties": {"amount": "10"}},
                {"id": ids[1], "properties": {"amount": "NaN"}},
                {"id": ids[2], "properties": {"amount": "1"}},
                {"id": "424242", "properties": {"amount": "1"}},
            ]
        },
    )
    assert partial.status_code == 207
    body = partial.json()
    assert [r["id"] for r in body["results"]] == [ids[0]]
    assert body["numErrors"] == 2
    missing, invalid = body["errors"]
    assert missing["category"] == "OBJECT_NOT_FOUND"
    assert missing["context"] == {"ids": [ids[2], "424242"]}
    assert invalid["category"] == "VALIDATION_ERROR"
    assert invalid["context"] == {"ids": [ids[1]]}
    assert emulator.get("deals", ids[1])["properties"].get("amount") is None
    duplicate = api.post(
        f"{DEALS}/batch/update",
        json={"inputs": [{"id": ids[0], "properties": {}}, {"id": ids[0], "properties": {}}]},
    )
    assert duplicate.status_code == 400


def test_batch_upsert(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    contact = emulator.add("contacts", {"email": "ada@example.com", "firstname": "A"})
    response = api.post(
        "/crm/v3/objects/contacts/batch/upsert",
        json={
            "inputs": [
                {
                    "id": "ada@example.com",
                    "idProperty": "email",
                    "properties": {"firstname": "Ada"},
                },
                {
                    "id": "bea@example.com",
                    "idProperty": "email",
                    "properties": {"firstname": "Bea"},
                },
            ]
        },
    )
    assert response.status_code == 200
    first, second = response.json()["results"]
    assert (first["id"], first["new"], first["properties"]["firstname"]) == (contact, False, "Ada")
    assert second["new"] is True
    assert second["properties"]["email"] == "bea@example.com"
    assert emulator.count("contacts") == 2
    bad = api.post(
        "/crm/v3/objects/contacts/batch/upsert",
        json={
            "inputs": [
                {"id": "cy@example.com", "idProperty": "email", "properties": {"nope": "1"}},
                {"id": "dee@example.com", "idProperty": "email", "properties": {}},
            ]
        },
    )
    assert bad.status_code == 207
    assert bad.json()["errors"][0]["context"] == {"ids": ["cy@example.com"]}
    assert [r["new"] for r in bad.json()["results"]] == [True]
    not_unique = api.post(
        "/crm/v3/objects/contacts/batch/upsert",
        json={"inputs": [{"id": "x", "idProperty": "firstname", "properties": {}}]},
    )
    assert not_unique.status_code == 400


def test_batch_archive_answers_204_without_a_body(
    emulator: HubSpotEmulator, api: httpx.Client
) -> None:
    ids = emulator.bulk_add("deals", 3, lambda i: {})
    response = api.post(f"{DEALS}/batch/archive", json={"inputs": [{"id": ids[0]}, {"id": "777"}]})
    assert response.status_code == 204
    assert response.content == b""
    assert emulator.get("deals", ids[0])["archived"] is True
    assert emulator.count("deals") == 2


# -- single objects ----------------------------------------------------------------------------


def test_single_object_endpoints(
    emulator: HubSpotEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    created = api.post(DEALS, json={"properties": {"dealname": "Ada", "amount": "3"}})
    assert created.status_code == 201
    deal = created.json()["id"]
    got = api.get(f"{DEALS}/{deal}", params={"properties": "amount"}).json()
    assert got["properties"]["amount"] == "3"
    clock.advance(1)
    patched = api.patch(f"{DEALS}/{deal}", json={"properties": {"amount": "4"}})
    assert patched.status_code == 200
    assert patched.json()["properties"]["amount"] == "4"
    assert patched.json()["updatedAt"] == "2026-01-01T00:00:01.000Z"
    bad = api.patch(f"{DEALS}/{deal}", json={"properties": {"amount": "four"}})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["code"] == "INVALID_FLOAT"
    assert api.delete(f"{DEALS}/{deal}").status_code == 204
    missing = api.get(f"{DEALS}/{deal}")
    assert missing.status_code == 404
    assert missing.json()["category"] == "OBJECT_NOT_FOUND"
    assert api.get(f"{DEALS}/{deal}", params={"archived": "true"}).json()["archived"] is True
    assert api.patch(f"{DEALS}/{deal}", json={"properties": {}}).status_code == 404
    assert api.delete(f"{DEALS}/{deal}").status_code == 204
    contact = emulator.add("contacts", {"email": "ada@example.com"})
    by_email = api.get(
        "/crm/v3/objects/contacts/ada@example.com", params={"idProperty": "email"}
    ).json()
    assert by_email["id"] == contact


def test_unknown_types_paths_and_methods(api: httpx.Client) -> None:
    unknown = api.get("/crm/v3/objects/spaceships")
    assert unknown.status_code == 400
    assert unknown.json()["message"] == "Unable to infer object type from: spaceships"
    assert api.get("/crm/v4/whatever").status_code == 404
    assert api.put(f"{DEALS}/1").status_code == 405
    assert api.post(f"{DEALS}/search", content=b"{not json").status_code == 400


# -- properties and custom objects -------------------------------------------------------------


def test_properties_api(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    body = api.get("/crm/v3/properties/deals").json()
    by_name = {p["name"]: p for p in body["results"]}
    assert {
        "dealname",
        "amount",
        "closedate",
        "dealstage",
        "pipeline",
        "description",
        "hs_object_id",
        "hs_lastmodifieddate",
        "createdate",
    } <= set(by_name)
    assert (by_name["amount"]["type"], by_name["amount"]["fieldType"]) == ("number", "number")
    assert by_name["closedate"]["type"] == "datetime"
    stage = by_name["dealstage"]
    assert stage["type"] == "enumeration"
    assert {"label": "Closed Won", "value": "closedwon", "hidden": False, "displayOrder": 5} in (
        stage["options"]
    )
    assert by_name["hs_object_id"]["modificationMetadata"]["readOnlyValue"] is True
    emulator.add_property(
        "deals",
        "flavours",
        type="enumeration",
        field_type="checkbox",
        options=["chocolate", "strawberry", {"label": "Mint", "value": "mint", "hidden": True}],
    )
    flavours = api.get("/crm/v3/properties/0-3/flavours").json()
    assert flavours["fieldType"] == "checkbox"
    assert [o["value"] for o in flavours["options"]] == ["chocolate", "strawberry", "mint"]
    assert flavours["options"][2]["hidden"] is True
    deal = api.post(DEALS, json={"properties": {"flavours": "mint;chocolate"}}).json()["id"]
    record = api.get(f"{DEALS}/{deal}", params={"properties": "flavours"}).json()
    assert record["properties"]["flavours"] == "mint;chocolate"
    bad = api.post(DEALS, json={"properties": {"flavours": "mint;vanilla"}})
    assert bad.json()["errors"][0]["code"] == "INVALID_OPTION"
    hits = search(api, {"filterGroups": [{"filters": [flt("flavours", "EQ", "chocolate")]}]})
    assert found_ids(hits) == [deal]
    assert api.get("/crm/v3/properties/deals/nope").status_code == 404


@pytest.mark.parametrize(
    ("kind", "raw", "stored"),
    [
        ("bool", "TRUE", "true"),
        ("bool", False, "false"),
        ("number", 7, "7"),
        ("number", "-0.50", "-0.5"),
        ("date", "2026-02-03", "2026-02-03"),
        ("date", "1770076800000", "2026-02-03"),
        ("datetime", "1770076800123", "2026-02-03T00:00:00.123Z"),
        ("datetime", "2026-02-03T01:00:00+01:00", "2026-02-03T00:00:00.000Z"),
        ("phone_number", "+1 555", "+1 555"),
    ],
)
def test_value_normalisation(emulator: HubSpotEmulator, kind: str, raw: Any, stored: str) -> None:
    emulator.add_property("deals", "p", type=kind)
    deal = emulator.add("deals", {"p": raw})
    assert emulator.get("deals", deal)["properties"]["p"] == stored


@pytest.mark.parametrize(
    ("kind", "raw"), [("bool", "yes"), ("date", "2026-02-03T10:00:00Z"), ("number", "inf")]
)
def test_invalid_values(emulator: HubSpotEmulator, kind: str, raw: str) -> None:
    emulator.add_property("deals", "p", type=kind)
    with pytest.raises(ValueError, match="Property values were not valid"):
        emulator.add("deals", {"p": raw})


def test_custom_object_types(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    emulator.register_object_type(
        "2-12345",
        "cars",
        properties=[
            {"name": "vin", "has_unique_value": True, "label": "VIN"},
            {"name": "make", "type": "enumeration", "options": ["audi", "bmw"]},
        ],
        primary_display_property="vin",
    )
    for ref in ("2-12345", "cars", f"p{emulator.portal_id}_cars"):
        assert api.get(f"/crm/v3/objects/{ref}").status_code == 200
    upsert = api.post(
        "/crm/v3/objects/2-12345/batch/upsert",
        json={"inputs": [{"id": "V1", "idProperty": "vin", "properties": {"make": "bmw"}}]},
    )
    assert upsert.status_code == 200
    car = upsert.json()["results"][0]
    assert car["new"] is True
    listed = api.get("/crm/v3/objects/cars").json()["results"][0]
    assert listed["properties"]["vin"] == "V1"
    assert set(listed["properties"]) == {"vin", "hs_object_id", "createdate", "hs_lastmodifieddate"}
    props = api.get("/crm/v3/properties/2-12345").json()["results"]
    vin = next(p for p in props if p["name"] == "vin")
    assert vin["hasUniqueValue"] is True
    assert vin["groupName"] == "cars_information"
    with pytest.raises(ValueError, match="already registered"):
        emulator.register_object_type("2-12345", "cars")


# -- auth ------------------------------------------------------------------------------------------


def test_missing_or_wrong_tokens_get_401(emulator: HubSpotEmulator) -> None:
    with httpx.Client(transport=emulator.transport(), base_url=BASE) as anonymous:
        response = anonymous.get(DEALS)
        assert response.status_code == 401
        body = response.json()
        assert body["status"] == "error"
        assert body["category"] == "INVALID_AUTHENTICATION"
        assert "X-HubSpot-RateLimit-Remaining" not in response.headers
        wrong = anonymous.get(DEALS, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        basic = anonymous.get(DEALS, headers={"Authorization": "Basic abc"})
        assert basic.status_code == 401
    assert emulator.request_count(status=401) == 3


def refresh(
    emulator: HubSpotEmulator, refresh_token: str | None = None, **overrides: str
) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "client_id": emulator.client_id,
        "client_secret": emulator.client_secret,
        "refresh_token": refresh_token or emulator.refresh_token or "",
        **overrides,
    }
    with httpx.Client(transport=emulator.transport(), base_url=BASE) as client:
        return client.post("/oauth/v1/token", data=form)


def test_oauth_refresh_and_expiry(clock: ManualClock) -> None:
    emulator = HubSpotEmulator(clock=clock, access_token_ttl=1800)
    response = refresh(emulator)
    assert response.status_code == 200
    token = response.json()
    assert token["expires_in"] == 1800
    assert token["token_type"] == "bearer"
    assert token["refresh_token"] == "emulator-refresh-token"  # not rotated by default
    with client_for(emulator, token["access_token"]) as api:
        ok = api.get(DEALS)
        assert ok.status_code == 200
        # OAuth apps have no daily limit headers
        assert "X-HubSpot-RateLimit-Daily" not in ok.headers
        assert ok.headers["X-HubSpot-RateLimit-Max"] == "110"  # a public app's limit
        assert ok.headers["X-HubSpot-RateLimit-Remaining"] == "109"
        clock.advance(1799)
        assert api.get(DEALS).status_code == 200
        clock.advance(61)
        expired = api.get(DEALS)
        assert expired.status_code == 401
        assert expired.json()["category"] == "EXPIRED_AUTHENTICATION"
        assert "expired 60 second(s) ago" in expired.json()["message"]
    again = refresh(emulator)
    assert again.status_code == 200
    assert again.json()["access_token"] != token["access_token"]


def test_oauth_refresh_token_rotation(clock: ManualClock) -> None:
    emulator = HubSpotEmulator(clock=clock, rotate_refresh_tokens=True)
    first = refresh(emulator, "emulator-refresh-token").json()
    assert first["refresh_token"] != "emulator-refresh-token"
    assert emulator.refresh_token == first["refresh_token"]
    old = refresh(emulator, "emulator-refresh-token")
    assert old.status_code == 400
    assert old.json()["status"] == "BAD_REFRESH_TOKEN"
    assert old.json()["error"] == "invalid_grant"
    second = refresh(emulator, first["refresh_token"])
    assert second.status_code == 200
    assert refresh(emulator, first["refresh_token"]).status_code == 400
    emulator.revoke_refresh_tokens()
    assert refresh(emulator, second.json()["refresh_token"]).status_code == 400


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"client_id": "other"}, "BAD_CLIENT_ID"),
        ({"client_secret": "other"}, "BAD_CLIENT_SECRET"),
        ({"grant_type": "authorization_code"}, "BAD_GRANT_TYPE"),
        ({"refresh_token": "forged"}, "BAD_REFRESH_TOKEN"),
    ],
)
def test_oauth_refusals(emulator: HubSpotEmulator, overrides: dict[str, str], status: str) -> None:
    response = refresh(emulator, **overrides)
    assert response.status_code == 400
    assert response.json()["status"] == status
    assert emulator.request_count("oauth/token") == 1


def test_token_requests_do_not_count_against_the_rate_limit(clock: ManualClock) -> None:
    emulator = HubSpotEmulator(clock=clock, ten_second_limit=1)
    for _ in range(3):
        assert refresh(emulator).status_code == 200
    with client_for(emulator) as api:
        assert api.get(DEALS).status_code == 200


# -- rate limits -----------------------------------------------------------------------------------


def test_ten_secondly_rolling_limit(clock: ManualClock) -> None:
    emulator = HubSpotEmulator(clock=clock, ten_second_limit=3, daily_limit=1000)
    with client_for(emulator) as api:
        remaining = []
        for _ in range(3):
            response = api.get(DEALS)
            assert response.status_code == 200
            assert response.headers["X-HubSpot-RateLimit-Max"] == "3"
            assert response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
            assert response.headers["X-HubSpot-RateLimit-Daily"] == "1000"
            remaining.append(response.headers["X-HubSpot-RateLimit-Remaining"])
        assert remaining == ["2", "1", "0"]
        clock.advance(9.999)
        limited = api.get(DEALS)
        assert limited.status_code == 429
        body = limited.json()
        assert list(body) == [
            "status",
            "message",
            "errorType",
            "correlationId",
            "policyName",
            "groupName",
        ]
        assert body["status"] == "error"
        assert body["message"] == "You have reached your ten_secondly_rolling limit."
        assert body["errorType"] == "RATE_LIMIT"
        assert body["policyName"] == "TEN_SECONDLY_ROLLING"
        assert body["groupName"] == (
            f"publicapi:private_app-api-calls-ten-secondly:{emulator.app_id}:{emulator.portal_id}"
        )
        assert limited.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        assert limited.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "997"
        clock.advance(0.001)  # the first request leaves the window
        assert api.get(DEALS).status_code == 200


def test_the_limit_is_per_app_not_per_token(clock: ManualClock) -> None:
    emulator = HubSpotEmulator(clock=clock, ten_second_limit=2, oauth_ten_second_limit=2)
    first, second = emulator.issue_access_token(), emulator.issue_access_token()
    with client_for(emulator, first) as a, client_for(emulator, second) as b:
        assert a.get(DEALS).status_code == 200
        assert b.get(DEALS).status_code == 200
        limited = a.get(DEALS)
        assert limited.status_code == 429
        assert limited.json()["groupName"].startswith("publicapi:oauth_app-api-calls-ten-secondly:")
        assert "X-HubSpot-RateLimit-Daily" not in limited.headers
    with client_for(emulator) as private:  # the private app has its own window
        assert private.get(DEALS).status_code == 200


def test_daily_limit_resets_at_midnight(clock: ManualClock) -> None:
    clock.set(datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC))
    emulator = HubSpotEmulator(clock=clock, daily_limit=2)
    with client_for(emulator) as api:
        assert api.get(DEALS).headers["X-HubSpot-RateLimit-Daily-Remaining"] == "1"
        assert api.post(f"{DEALS}/search", json={}).status_code == 200  # search counts too
        limited = api.get(DEALS)
        assert limited.status_code == 429
        assert limited.json()["policyName"] == "DAILY"
        assert limited.json()["message"] == "You have reached your daily limit."
        clock.advance(1)
        again = api.get(DEALS)
        assert again.status_code == 200
        assert again.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "1"


def test_search_has_its_own_secondly_limit(clock: ManualClock) -> None:
    emulator = HubSpotEmulator(clock=clock, ten_second_limit=100)
    with client_for(emulator) as api:
        for _ in range(5):
            response = api.post(f"{DEALS}/search", json={})
            assert response.status_code == 200
            assert not [h for h in response.headers if h.lower().startswith("x-hubspot")]
        limited = api.post(f"{DEALS}/search", json={})
        assert limited.status_code == 429
        assert limited.json()["policyName"] == "SECONDLY"
        assert limited.json()["message"] == "You have reached your secondly limit."
        assert not [h for h in limited.headers if h.lower().startswith("x-hubspot")]
        # searches do not use the ten-second window
        assert api.get(DEALS).headers["X-HubSpot-RateLimit-Remaining"] == "99"
        clock.advance(1)
        assert api.post(f"{DEALS}/search", json={}).status_code == 200


# -- faults ----------------------------------------------------------------------------------------


def test_rate_limit_next(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    emulator.rate_limit_next(2)
    emulator.rate_limit_next(1, policy="DAILY", path_contains="/batch/")
    statuses = [api.get(DEALS).status_code for _ in range(3)]
    assert statuses == [429, 429, 200]
    daily = api.post(f"{DEALS}/batch/read", json={"inputs": []})
    assert daily.status_code == 429
    assert daily.json()["policyName"] == "DAILY"
    assert api.post(f"{DEALS}/batch/read", json={"inputs": []}).status_code == 200
    emulator.rate_limit_next(policy="SECONDLY")
    secondly = api.post(f"{DEALS}/search", json={})
    assert secondly.json()["policyName"] == "SECONDLY"
    with pytest.raises(ValueError):
        emulator.rate_limit_next(policy="HOURLY")


@pytest.mark.parametrize(
    ("status", "retry_after", "category"),
    [
        (500, None, "INTERNAL_ERROR"),
        (502, None, "INTERNAL_ERROR"),
        (503, None, "INTERNAL_ERROR"),
        (504, None, "INTERNAL_ERROR"),
        (423, None, "LOCKED"),
        (477, "60", "MIGRATION_IN_PROGRESS"),
    ],
)
def test_fail_next(
    emulator: HubSpotEmulator,
    api: httpx.Client,
    status: int,
    retry_after: str | None,
    category: str,
) -> None:
    emulator.fail_next(status, n=2, path_contains="/batch/create")
    assert api.get(DEALS).status_code == 200  # not matched
    for _ in range(2):
        response = api.post(
            f"{DEALS}/batch/create", json={"inputs": [{"properties": {"dealname": "x"}}]}
        )
        assert response.status_code == status
        assert response.headers.get("Retry-After") == retry_after
        assert response.json()["category"] == category
    if status == 423:
        assert "2 seconds" in response.json()["message"]
    assert emulator.count("deals") == 0  # failed requests are not applied
    assert (
        api.post(
            f"{DEALS}/batch/create", json={"inputs": [{"properties": {"dealname": "x"}}]}
        ).status_code
        == 201
    )


def test_fail_next_with_a_retry_after(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    emulator.fail_next(477, retry_after=3600)
    assert api.get(DEALS).headers["Retry-After"] == "3600"
    emulator.fail_next(503, retry_after=1.5)
    assert api.get(DEALS).headers["Retry-After"] == "1.5"


def test_slow_pages_advances_the_clock(
    emulator: HubSpotEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    emulator.bulk_add("deals", 3, lambda i: {})
    emulator.slow_pages(2.5)
    api.get(DEALS)
    api.post(f"{DEALS}/search", json={})
    api.post(f"{DEALS}/batch/read", json={"inputs": []})  # not a page
    assert clock.now() == datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    emulator.slow_pages(0)
    api.get(DEALS)
    assert clock.now() == datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)


def test_slow_pages_calls_an_injected_sleep(clock: ManualClock) -> None:
    slept: list[float] = []
    emulator = HubSpotEmulator(clock=clock, sleep=slept.append)
    emulator.slow_pages(1.25)
    with client_for(emulator) as api:
        api.get(DEALS)
        api.get(DEALS)
    assert slept == [1.25, 1.25]
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)


def test_lose_response_applies_the_request(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    emulator.lose_response_next(path_contains="/batch/create")
    api.get(DEALS)  # not matched
    with pytest.raises(httpx.ReadTimeout):
        api.post(f"{DEALS}/batch/create", json={"inputs": [{"properties": {"dealname": "lost"}}]})
    [record] = emulator.records("deals")
    assert record["properties"]["dealname"] == "lost"
    last = emulator.requests[-1]
    assert (last.operation, last.status, last.lost) == ("batch/create", 201, True)
    assert len(list_all(api)) == 1


def test_clear_faults(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    emulator.fail_next(500, n=5)
    emulator.lose_response_next(5)
    emulator.slow_pages(3)
    emulator.clear_faults()
    assert api.get(DEALS).status_code == 200


def test_correlation_ids_are_seeded(clock: ManualClock) -> None:
    def ids(seed: int) -> list[str]:
        emulator = HubSpotEmulator(clock=ManualClock(), seed=seed)
        emulator.fail_next(500, n=3)
        with client_for(emulator) as api:
            return [api.get(DEALS).json()["correlationId"] for _ in range(3)]

    assert ids(1) == ids(1)
    assert ids(1) != ids(2)


# -- the request log -------------------------------------------------------------------------------


def test_request_log(emulator: HubSpotEmulator, api: httpx.Client) -> None:
    emulator.bulk_add("deals", 150, lambda i: {})
    list_all(api, limit=100)
    api.post(f"{DEALS}/batch/read", json={"inputs": [{"id": "1001"}]})
    api.get("/crm/v3/properties/deals")
    assert emulator.requests[0] == HubSpotRequest(
        method="GET",
        path=DEALS,
        query="limit=100",
        status=200,
        operation="list",
        object_type="0-3",
    )
    assert emulator.calls == {"list": 2, "batch/read": 1, "properties": 1}
    assert emulator.request_count("list") == 2
    assert emulator.request_count(method="post") == 1
    assert emulator.request_count(path_contains="/properties/") == 1
    assert emulator.request_count(status=200) == 4


# -- front doors -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_client_through_the_mock_transport(emulator: HubSpotEmulator) -> None:
    emulator.bulk_add("deals", 120, lambda i: {"dealname": f"d{i}"})
    headers = {"Authorization": f"Bearer {emulator.access_token}"}
    async with httpx.AsyncClient(
        transport=emulator.transport(), base_url=BASE, headers=headers
    ) as api:
        first = (await api.get(DEALS, params={"limit": 100})).json()
        after = first["paging"]["next"]["after"]
        second = (await api.get(DEALS, params={"limit": 100, "after": after})).json()
        assert len(first["results"]) + len(second["results"]) == 120
        emulator.lose_response_next()
        with pytest.raises(httpx.ReadTimeout):
            await api.post(DEALS, json={"properties": {"dealname": "x"}})
    assert emulator.count("deals") == 121


@pytest.mark.anyio
async def test_asgi_app_through_asgi_transport(emulator: HubSpotEmulator) -> None:
    deal = emulator.add("deals", {"dealname": "Ada"})
    headers = {"Authorization": f"Bearer {emulator.access_token}"}
    transport = httpx.ASGITransport(app=emulator)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers) as api:
        listed = await api.get(DEALS, params={"limit": 1, "properties": "dealname"})
        assert listed.status_code == 200
        assert listed.json()["results"][0]["properties"]["dealname"] == "Ada"
        assert listed.headers["X-HubSpot-RateLimit-Remaining"] == "99"
        patched = await api.patch(f"{DEALS}/{deal}", json={"properties": {"amount": "5"}})
        assert patched.json()["properties"]["amount"] == "5"
        archived = await api.post(f"{DEALS}/batch/archive", json={"inputs": [{"id": deal}]})
        assert archived.status_code == 204
        token = await api.post(
            "/oauth/v1/token",
            data={
                "grant_type": "refresh_token",
                "client_id": emulator.client_id,
                "client_secret": emulator.client_secret,
                "refresh_token": "emulator-refresh-token",
            },
        )
        assert token.status_code == 200
        emulator.bulk_add("deals", 3, lambda i: {})
        page = (await api.get(DEALS, params={"limit": 2})).json()
        # the paging link points where the request went
        assert page["paging"]["next"]["link"].startswith(f"{BASE}{DEALS}?")
        # ASGITransport re-raises what the app raises: a lost response is a read timeout
        emulator.lose_response_next()
        with pytest.raises(httpx.ReadTimeout):
            await api.post(DEALS, json={"properties": {"dealname": "lost"}})
    assert emulator.count("deals") == 4


@pytest.mark.anyio
async def test_asgi_lifespan(emulator: HubSpotEmulator) -> None:
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await emulator({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


TIMEOUT = 10.0


def test_served_by_uvicorn(clock: ManualClock) -> None:
    emulator = HubSpotEmulator(clock=clock)
    ids = emulator.bulk_add("deals", 150, lambda i: {"dealname": f"d{i}"})
    with serve(emulator) as url:
        headers = {"Authorization": f"Bearer {emulator.access_token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT) as api:
            first = api.get(DEALS, params={"limit": 100}).json()
            link = first["paging"]["next"]["link"]
            assert link.startswith(f"{url}{DEALS}?")
            second = api.get(link).json()
            assert [r["id"] for r in first["results"] + second["results"]] == ids
            found = api.post(
                f"{DEALS}/search",
                json={"filterGroups": [{"filters": [flt("dealname", "EQ", "d7")]}]},
            )
            assert found_ids(found) == [ids[7]]
            assert api.get(DEALS, headers={"Authorization": ""}).status_code == 401


def test_threads_share_one_emulator(clock: ManualClock) -> None:
    emulator = HubSpotEmulator(clock=clock, ten_second_limit=None)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with client_for(emulator) as api:
                for i in range(25):
                    response = api.post(
                        f"{DEALS}/batch/create",
                        json={"inputs": [{"properties": {"dealname": f"{n}-{i}"}}]},
                    )
                    assert response.status_code == 201
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert not errors
    assert emulator.count("deals") == 100
    assert len({r["id"] for r in emulator.records("deals")}) == 100
    assert emulator.request_count("batch/create") == 100


# -- helpers -------------------------------------------------------------------------------------


def test_data_helpers(emulator: HubSpotEmulator, clock: ManualClock) -> None:
    deal = emulator.add("deals", {"dealname": "Ada"})
    clock.advance(timedelta(minutes=1))
    emulator.edit("deals", deal, amount="5", dealname=None)
    record = emulator.get("deals", deal)
    assert record["properties"]["amount"] == "5"
    assert "dealname" not in record["properties"]
    assert record["properties"]["hs_lastmodifieddate"] == "2026-01-01T00:01:00.000Z"
    assert record["updatedAt"] == "2026-01-01T00:01:00.000Z"
    emulator.archive("deals", deal)
    assert emulator.records("deals") == []
    assert [r["id"] for r in emulator.records("deals", archived=True)] == [deal]
    assert len(emulator.records("deals", archived=None)) == 1
    clock.advance(60)
    emulator.restore("deals", deal)
    assert emulator.get("deals", deal)["updatedAt"] == "2026-01-01T00:02:00.000Z"
    with pytest.raises(KeyError):
        emulator.get("deals", "1")
    with pytest.raises(KeyError):
        emulator.add("spaceships", {})
    with pytest.raises(ValueError, match="does not exist"):
        emulator.edit("deals", deal, nope="1")
    with pytest.raises(ValueError, match="property type"):
        emulator.add_property("deals", "x", type="integer")
    names = [p.name for p in emulator.properties("contacts")]
    assert {"email", "firstname", "lastname", "lastmodifieddate"} <= set(names)
    assert "HubSpotEmulator(deals=1" in repr(emulator)


def test_bulk_add_is_fast_for_100k_records(clock: ManualClock) -> None:
    emulator = HubSpotEmulator(clock=clock, ten_second_limit=None)
    started = time.perf_counter()
    ids = emulator.bulk_add("deals", 100_000, lambda i: {"dealname": f"d{i}", "amount": str(i)})
    assert time.perf_counter() - started < 10
    assert len(ids) == 100_000
    with client_for(emulator) as api:
        last = api.get(DEALS, params={"limit": 100, "after": HubSpotEmulator._cursor(int(ids[-5]))})
        assert [r["id"] for r in last.json()["results"]] == ids[-5:]
