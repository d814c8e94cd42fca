"""The Salesforce REST API emulator: what a connector written against Salesforce's docs meets.

Every test talks HTTP through ``httpx`` (the emulator's ``MockTransport``, its ASGI front door
through ``httpx.ASGITransport``, and once uvicorn on loopback); the clock is a ManualClock, so
session expiry, the 24-hour API window and the deleted-records window run on virtual time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving import serve
from syncrecon.testing import ManualClock
from syncrecon.testing._salesforce import (
    SalesforceEmulator,
    SalesforceField,
    SalesforceRequest,
    make_jwt_assertion,
    make_test_key_pair,
)

INSTANCE = "https://example.my.salesforce.com"
LOGIN = "https://login.salesforce.com"
V = "/services/data/v61.0"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# helpers


def bind(query: str, **values: str) -> str:
    """Put literals into SOQL at ``:name`` (as Apex bind variables read)."""
    return re.sub(r":(\w+)", lambda m: values[m.group(1)], query)


def opp(i: int, **more: Any) -> dict[str, Any]:
    return {
        "Name": f"Opp {i:05d}",
        "StageName": "Prospecting",
        "CloseDate": "2026-03-01",
        "Amount": float(i),
        **more,
    }


def soql(api: httpx.Client, query: str, *, all_rows: bool = False, **headers: str) -> Any:
    response = api.get(
        f"{V}/{'queryAll' if all_rows else 'query'}", params={"q": query}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def soql_error(api: httpx.Client, query: str) -> tuple[int, dict[str, Any]]:
    response = api.get(f"{V}/query", params={"q": query})
    body = response.json()
    assert isinstance(body, list)
    assert len(body) == 1
    return response.status_code, body[0]


def every_page(api: httpx.Client, first: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    pages = [first]
    while not pages[-1]["done"]:
        response = api.get(pages[-1]["nextRecordsUrl"])
        assert response.status_code == 200, response.text
        pages.append(response.json())
    return pages


def reauth(api: httpx.Client, sf: SalesforceEmulator) -> None:
    """A new session (after the test moved the clock past the session timeout)."""
    api.headers["Authorization"] = f"Bearer {sf.issue_token()}"


def names(body: Mapping[str, Any]) -> list[str]:
    return [record["Name"] for record in body["records"]]


def save(api: httpx.Client, method: str, records: list[dict[str, Any]], **body: Any) -> Any:
    response = api.request(method, f"{V}/composite/sobjects", json={**body, "records": records})
    assert response.status_code == 200, response.text
    return response.json()


def entry(sobject: str = "Opportunity", **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": sobject}, **fields}


def codes(results: list[dict[str, Any]]) -> list[str | None]:
    return [None if r["success"] else r["errors"][0]["statusCode"] for r in results]


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return make_test_key_pair()


@pytest.fixture(scope="module")
def other_keys() -> tuple[str, str]:
    return make_test_key_pair()


@pytest.fixture
def sf(clock: ManualClock) -> SalesforceEmulator:
    return SalesforceEmulator(clock=clock)


@pytest.fixture
def api(sf: SalesforceEmulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {sf.issue_token()}"}
    with httpx.Client(transport=sf.transport(), base_url=INSTANCE, headers=headers) as client:
        yield client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------------------------------
# SOQL


@pytest.fixture
def opps(sf: SalesforceEmulator, clock: ManualClock) -> list[str]:
    ids = []
    for i, (stage, amount, tags) in enumerate(
        [
            ("Prospecting", 100.0, "Renewal"),
            ("Closed Won", 250.5, "Renewal;Upsell"),
            ("Closed Lost", None, None),
            ("Qualification", 1000.0, "Partner"),
            ("Closed Won", 50.0, "Upsell;Enterprise"),
        ]
    ):
        clock.advance(60)
        ids.append(
            sf.add(
                "Opportunity",
                Name=f"Deal {i}" if i != 3 else "O'Brien & Co",
                StageName=stage,
                Amount=amount,
                CloseDate=date(2026, 2, i + 1),
                Tags__c=tags,
            )
        )
    return ids


def test_select_returns_attributes_and_canonical_names(api: httpx.Client, opps: list[str]) -> None:
    body = soql(api, "select id, NAME, amount from opportunity where amount = 100")
    assert body == {
        "totalSize": 1,
        "done": True,
        "records": [
            {
                "attributes": {"type": "Opportunity", "url": f"{V}/sobjects/Opportunity/{opps[0]}"},
                "Id": opps[0],
                "Name": "Deal 0",
                "Amount": 100.0,
            }
        ],
    }


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("StageName = 'Closed Won'", [1, 4]),
        ("StageName = 'closed won'", [1, 4]),  # text compares without regard to case
        ("StageName != 'Closed Won'", [0, 2, 3]),
        ("Amount < 250.5", [0, 4]),
        ("Amount <= 250.5", [0, 1, 4]),
        ("Amount > 250.5", [3]),
        ("Amount >= 100", [0, 1, 3]),
        ("Amount = null", [2]),
        ("Amount != null", [0, 1, 3, 4]),
        ("Amount != 100", [1, 2, 3, 4]),  # SOQL's != keeps nulls
        ("StageName IN ('Closed Won', 'Qualification')", [1, 3, 4]),
        ("StageName NOT IN ('Closed Won', 'Qualification')", [0, 2]),
        ("Name LIKE 'deal%'", [0, 1, 2, 4]),
        ("Name LIKE 'Deal _'", [0, 1, 2, 4]),
        ("Name = 'O\\'Brien & Co'", [3]),
        ("CloseDate > 2026-02-02", [2, 3, 4]),
        ("CloseDate = 2026-02-01", [0]),
        ("CreatedDate > 2026-01-01T00:02:00Z", [2, 3, 4]),
        ("CreatedDate >= 2026-01-01T00:02:00.000+0000", [1, 2, 3, 4]),
        ("CreatedDate < 2026-01-01T01:02:00+01:00", [0]),
        ("Tags__c INCLUDES ('Upsell')", [1, 4]),
        ("Tags__c INCLUDES ('Renewal;Upsell', 'Partner')", [1, 3]),
        ("Tags__c EXCLUDES ('Upsell')", [0, 2, 3]),
        ("IsDeleted = false", [0, 1, 2, 3, 4]),
        ("StageName = 'Closed Won' AND Amount > 100", [1]),
        ("StageName = 'Closed Won' OR Amount > 500", [1, 3, 4]),
        ("(StageName = 'Closed Won' OR Amount > 500) AND Name != 'Deal 4'", [1, 3]),
        ("NOT StageName = 'Closed Won'", [0, 2, 3]),
        ("NOT (Amount > 100 OR Amount = null)", [0, 4]),
    ],
)
def test_where_conditions(
    api: httpx.Client, opps: list[str], where: str, expected: list[int]
) -> None:
    body = soql(api, bind("SELECT Id FROM Opportunity WHERE :where ORDER BY Id", where=where))
    assert [r["Id"] for r in body["records"]] == [opps[i] for i in expected]
    assert body["totalSize"] == len(expected)


def test_ids_compare_in_15_and_18_characters(api: httpx.Client, opps: list[str]) -> None:
    for literal in (opps[2], opps[2][:15]):
        body = soql(
            api, bind("SELECT Id FROM Opportunity WHERE Id >= ':id' ORDER BY Id", id=literal)
        )
        assert [r["Id"] for r in body["records"]] == opps[2:]
    count = soql(
        api,
        bind(
            "SELECT COUNT() FROM Opportunity WHERE Id >= ':a' AND Id < ':b'", a=opps[1], b=opps[4]
        ),
    )
    assert count == {"totalSize": 3, "done": True, "records": []}


def test_order_by_limit_offset(api: httpx.Client, opps: list[str]) -> None:
    body = soql(api, "SELECT Name, Amount FROM Opportunity ORDER BY Amount DESC")
    assert [r["Amount"] for r in body["records"]] == [1000.0, 250.5, 100.0, 50.0, None]
    body = soql(api, "SELECT Name FROM Opportunity ORDER BY Amount ASC NULLS LAST")
    assert names(body)[-1] == "Deal 2"
    body = soql(api, "SELECT Name FROM Opportunity ORDER BY Amount")
    assert names(body)[0] == "Deal 2"  # ascending puts nulls first
    # picklists sort in their defined order (Prospecting, Qualification, ..., Closed Won, ...)
    body = soql(api, "SELECT Name FROM Opportunity ORDER BY StageName, Name DESC LIMIT 3 OFFSET 1")
    assert names(body) == ["O'Brien & Co", "Deal 4", "Deal 1"]
    assert body["totalSize"] == 3
    assert soql(api, "SELECT COUNT() FROM Opportunity LIMIT 2")["totalSize"] == 2


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("SELECT Id Opportunity", "MALFORMED_QUERY"),
        ("SELECT Id FROM Opportunity WHERE", "MALFORMED_QUERY"),
        (
            "SELECT Id FROM Opportunity WHERE Name = 'x' OR Name = 'y' AND Amount = 1",
            "MALFORMED_QUERY",
        ),
        ("SELECT Id FROM Opportunity WHERE Name = 'unterminated", "MALFORMED_QUERY"),
        ("SELECT Id FROM Opportunity WHERE CreatedDate > 2026-01-01T00:00:00", "MALFORMED_QUERY"),
        ("SELECT Id FROM Opportunity LIMIT x", "MALFORMED_QUERY"),
        ("SELECT Id FROM Opportunity GROUP BY Name", "MALFORMED_QUERY"),
        ("SELECT COUNT() FROM Opportunity ORDER BY Name", "MALFORMED_QUERY"),
        ("SELECT Id, Name, name FROM Opportunity", "MALFORMED_QUERY"),
        ("SELECT Id FROM Nothing__c", "INVALID_TYPE"),
        ("SELECT Foo FROM Opportunity", "INVALID_FIELD"),
        ("SELECT Account.Name FROM Opportunity", "INVALID_FIELD"),
        ("SELECT Id FROM Opportunity WHERE Bogus__c = 1", "INVALID_FIELD"),
        ("SELECT Id FROM Opportunity ORDER BY Bogus__c", "INVALID_FIELD"),
        ("SELECT Id FROM Opportunity WHERE Amount = '100'", "INVALID_FIELD"),
        ("SELECT Id FROM Opportunity WHERE Name = 100", "INVALID_FIELD"),
        ("SELECT Id FROM Opportunity WHERE CloseDate > 2026-01-01T00:00:00Z", "INVALID_FIELD"),
        ("SELECT Id FROM Opportunity WHERE CreatedDate > '2026-01-01T00:00:00Z'", "INVALID_FIELD"),
        ("SELECT Id FROM Opportunity WHERE Description = 'x'", "INVALID_FIELD"),
        ("SELECT Id FROM Opportunity WHERE Id = 'not-an-id'", "INVALID_QUERY_FILTER_OPERATOR"),
        ("SELECT Id FROM Opportunity OFFSET 2001", "NUMBER_OUTSIDE_VALID_RANGE"),
    ],
)
def test_bad_queries(api: httpx.Client, query: str, code: str) -> None:
    status, error = soql_error(api, query)
    assert (status, error["errorCode"]) == (400, code), error["message"]


def test_malformed_query_message_points_at_the_token(api: httpx.Client) -> None:
    _, error = soql_error(
        api, "SELECT Id FROM Opportunity WHERE Name = 'x' OR Name = 'y' AND Amount = 1"
    )
    assert "ERROR at Row:1:Column:59" in error["message"]
    assert "unexpected token: 'AND'" in error["message"]
    response = api.get(f"{V}/query")
    assert (response.status_code, response.json()[0]["errorCode"]) == (400, "MALFORMED_QUERY")


OPERATORS: dict[str, Callable[[float | None, float], bool]] = {
    "=": lambda v, x: v is not None and v == x,
    "!=": lambda v, x: v is None or v != x,
    "<": lambda v, x: v is not None and v < x,
    "<=": lambda v, x: v is not None and v <= x,
    ">": lambda v, x: v is not None and v > x,
    ">=": lambda v, x: v is not None and v >= x,
}


@given(
    amounts=st.lists(st.one_of(st.none(), st.integers(-3, 3).map(float)), max_size=12),
    op=st.sampled_from(sorted(OPERATORS)),
    literal=st.integers(-3, 3),
    descending=st.booleans(),
)
def test_filter_and_sort_match_a_model(
    amounts: list[float | None], op: str, literal: int, descending: bool
) -> None:
    sf = SalesforceEmulator(clock=ManualClock())
    ids = [sf.add("Opportunity", opp(i, Amount=a)) for i, a in enumerate(amounts)]
    api = httpx.Client(transport=sf.transport(), base_url=INSTANCE)
    api.headers["Authorization"] = f"Bearer {sf.issue_token()}"
    direction = "DESC" if descending else "ASC"
    query = bind(
        "SELECT Id FROM Opportunity WHERE Amount :op :x ORDER BY Amount :dir, Id",
        op=op,
        x=str(literal),
        dir=direction,
    )
    got = [r["Id"] for r in soql(api, query)["records"]]
    kept = [(a, i) for i, a in zip(ids, amounts, strict=True) if OPERATORS[op](a, literal)]
    nulls = [i for a, i in kept if a is None]
    values = sorted(
        ((a, i) for a, i in kept if a is not None), key=lambda p: p[0], reverse=descending
    )
    by_value: list[str] = []
    for amount in dict.fromkeys(a for a, _ in values):  # ties broken by Id ascending
        by_value += sorted(i for a, i in values if a == amount)
    expected = by_value + nulls if descending else nulls + by_value
    assert got == expected


def test_concurrent_requests(sf: SalesforceEmulator) -> None:
    token = sf.issue_token()

    def create(n: int) -> list[str]:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(transport=sf.transport(), base_url=INSTANCE, headers=headers) as c:
            out = []
            for k in range(5):
                results = save(c, "POST", [entry(**opp(n * 100 + k * 10 + j)) for j in range(10)])
                out += [r["id"] for r in results]
            return out

    with ThreadPoolExecutor(max_workers=8) as pool:
        created = [i for batch in pool.map(create, range(8)) for i in batch]
    assert len(created) == len(set(created)) == 400
    assert set(sf.records("Opportunity")) == set(created)
    assert sf.calls["collections_create"] == 40
    assert sf.api_usage == 40


# --------------------------------------------------------------------------------------------
# pagination


@pytest.mark.parametrize(("count", "sizes"), [(0, [0]), (2000, [2000]), (2001, [2000, 1])])
def test_pages_of_2000(
    sf: SalesforceEmulator, api: httpx.Client, count: int, sizes: list[int]
) -> None:
    sf.bulk_add("Opportunity", count, opp)
    pages = every_page(api, soql(api, "SELECT Id, Name FROM Opportunity ORDER BY Name"))
    assert [len(p["records"]) for p in pages] == sizes
    assert all(p["totalSize"] == count for p in pages)
    assert [p["done"] for p in pages] == [False] * (len(sizes) - 1) + [True]
    assert all("nextRecordsUrl" not in p for p in pages if p["done"])
    got = [r["Name"] for p in pages for r in p["records"]]
    assert got == [f"Opp {i:05d}" for i in range(count)]
    if count > 2000:
        assert re.fullmatch(rf"{V}/query/01g[A-Za-z0-9]{{15}}-2000", pages[0]["nextRecordsUrl"])


@pytest.mark.parametrize(
    ("header", "size"), [("batchSize=500", 500), ("batchSize=50", 200), ("batchSize=9000", 2000)]
)
def test_batch_size_header(
    sf: SalesforceEmulator, api: httpx.Client, header: str, size: int
) -> None:
    sf.bulk_add("Opportunity", 2500, opp)
    first = soql(api, "SELECT Id FROM Opportunity", **{"Sforce-Query-Options": header})
    pages = every_page(api, first)
    assert [len(p["records"]) for p in pages[:-1]] == [size] * (len(pages) - 1)
    assert sum(len(p["records"]) for p in pages) == 2500


def test_query_locators_expire_and_must_exist(
    sf: SalesforceEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    sf.bulk_add("Opportunity", 2001, opp)
    first = soql(api, "SELECT Id FROM Opportunity")
    response = api.get(f"{V}/query/01g000000000099AAA-2000")
    assert (response.status_code, response.json()[0]["errorCode"]) == (400, "INVALID_QUERY_LOCATOR")
    clock.advance(timedelta(days=2, seconds=1))
    reauth(api, sf)
    response = api.get(first["nextRecordsUrl"])
    assert (response.status_code, response.json()[0]["errorCode"]) == (400, "INVALID_QUERY_LOCATOR")


def test_incremental_reads_with_equal_timestamps(
    sf: SalesforceEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    # Five records share one SystemModstamp: a watermark of (SystemModstamp, Id) resumes
    # exactly where a page ended, and `>` alone would skip the rest of the tie.
    ids = sf.bulk_add("Opportunity", 5, opp)
    clock.advance(1)
    later = sf.add("Opportunity", opp(9))
    q = (
        "SELECT Id, SystemModstamp FROM Opportunity WHERE SystemModstamp > :wm "
        "ORDER BY SystemModstamp, Id"
    )
    body = soql(api, bind(q, wm="2025-12-31T00:00:00Z"))
    rows = body["records"]
    assert [r["Id"] for r in rows] == [*ids, later]
    assert len({r["SystemModstamp"] for r in rows[:5]}) == 1
    wm, last = rows[2]["SystemModstamp"], rows[2]["Id"]
    resume = (
        "SELECT Id FROM Opportunity WHERE SystemModstamp > :wm OR "
        "(SystemModstamp = :wm AND Id > ':id') ORDER BY SystemModstamp, Id"
    )
    body = soql(api, bind(resume, wm=wm.replace("+0000", "Z"), id=last))
    assert [r["Id"] for r in body["records"]] == [ids[3], ids[4], later]
    assert soql(api, bind(q, wm=wm))["records"][0]["Id"] == later


def test_automated_changes_move_system_modstamp_only(
    sf: SalesforceEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    record = sf.add("Opportunity", opp(1))
    clock.advance(60)
    sf.edit("Opportunity", record, automated=True, Amount=5)
    row = soql(api, "SELECT LastModifiedDate, SystemModstamp, Amount FROM Opportunity")["records"][
        0
    ]
    assert row["LastModifiedDate"] == "2026-01-01T00:00:00.000+0000"
    assert row["SystemModstamp"] == "2026-01-01T00:01:00.000+0000"
    clock.advance(60)
    sf.edit("Opportunity", record, Name="renamed")
    row = soql(api, "SELECT LastModifiedDate, SystemModstamp FROM Opportunity")["records"][0]
    assert row["LastModifiedDate"] == row["SystemModstamp"] == "2026-01-01T00:02:00.000+0000"


def test_query_all_keeps_deleted_rows_until_purged(
    sf: SalesforceEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    keep, gone = sf.add("Opportunity", opp(1)), sf.add("Opportunity", opp(2))
    clock.advance(30)
    sf.delete("Opportunity", gone)
    q = "SELECT Id, IsDeleted, SystemModstamp FROM Opportunity ORDER BY Id"
    assert [r["Id"] for r in soql(api, q)["records"]] == [keep]
    rows = soql(api, q, all_rows=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in rows] == [(keep, False), (gone, True)]
    assert rows[1]["SystemModstamp"] == "2026-01-01T00:00:30.000+0000"
    assert soql(api, "SELECT Id FROM Opportunity WHERE IsDeleted = true")["totalSize"] == 0
    sf.undelete("Opportunity", gone)
    assert soql(api, q)["totalSize"] == 2
    sf.delete("Opportunity", gone)
    sf.purge_recycle_bin()
    assert [r["Id"] for r in soql(api, q, all_rows=True)["records"]] == [keep]


def test_query_all_locators_say_query_and_keep_deleted_rows(
    sf: SalesforceEmulator, api: httpx.Client
) -> None:
    ids = sf.bulk_add("Opportunity", 2100, opp)
    for record_id in ids[:150]:
        sf.delete("Opportunity", record_id)
    first = soql(api, "SELECT Id FROM Opportunity", all_rows=True)
    # "QueryAll More Results": the locator's URL says query, yet it goes on with the
    # queryAll's rows (deleted ones included).
    assert "/query/" in first["nextRecordsUrl"]
    assert sum(len(p["records"]) for p in every_page(api, first)) == 2100
    assert soql(api, "SELECT COUNT() FROM Opportunity")["totalSize"] == 1950


# --------------------------------------------------------------------------------------------
# sObject Collections


def test_create_returns_ids_in_input_order(sf: SalesforceEmulator, api: httpx.Client) -> None:
    results = save(
        api, "POST", [entry(**opp(i)) for i in range(3)] + [entry("Account", Name="Acme")]
    )
    assert [r["success"] for r in results] == [True] * 4
    assert all(r["errors"] == [] for r in results)
    assert [r["id"][:3] for r in results] == ["006", "006", "006", "001"]
    assert all(re.fullmatch(r"[A-Za-z0-9]{18}", r["id"]) for r in results)
    assert [sf.get("Opportunity", r["id"])["Name"] for r in results[:3]] == [
        "Opp 00000",
        "Opp 00001",
        "Opp 00002",
    ]
    assert sf.get("Opportunity", results[0]["id"])["CloseDate"] == "2026-03-01"


def test_per_record_errors_in_input_order(
    sf: SalesforceEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    ok, deleted, other = (sf.add("Opportunity", opp(i)) for i in range(3))
    sf.delete("Opportunity", deleted)
    account = sf.add("Account", Name="Acme")
    clock.advance(5)
    records = [
        entry(id=ok, StageName="Closed Won"),
        entry(id=ok, StageName="Perception Analysis"),  # inactive value, restricted picklist
        entry(Id=other, Tags__c="Renewal;Legacy"),
        entry(id=other, SystemModstamp="2026-01-01T00:00:00Z"),
        entry(Name="no id"),
        entry(id="006000000000999AAA", Name="never existed"),
        entry(id=deleted, Name="in the bin"),
        entry(id=account, Name="an account id"),
        entry(id="bogus", Name="malformed"),
        entry(id=other, Name="x" * 121),
        entry(id=other, Name=None),
        entry(id=other, Amount=1e17),
        entry(id=other, Description="fine"),
    ]
    results = save(api, "PATCH", records, allOrNone=False)
    assert codes(results) == [
        None,
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "MISSING_ARGUMENT",
        "INVALID_CROSS_REFERENCE_KEY",
        "ENTITY_IS_DELETED",
        "MALFORMED_ID",
        "MALFORMED_ID",
        "STRING_TOO_LONG",
        "REQUIRED_FIELD_MISSING",
        "NUMBER_OUTSIDE_VALID_RANGE",
        None,
    ]
    assert results[1]["errors"][0]["fields"] == ["StageName"]
    assert results[3]["errors"][0]["fields"] == ["SystemModstamp"]
    assert all("id" not in r for r in results if not r["success"])
    assert results[0]["id"] == ok
    assert sf.get("Opportunity", ok)["StageName"] == "Closed Won"
    assert sf.get("Opportunity", ok)["SystemModstamp"] == "2026-01-01T00:00:05.000+0000"
    assert sf.get("Opportunity", other)["Description"] == "fine"
    assert sf.get("Opportunity", other)["Tags__c"] is None


def test_create_checks_required_fields_and_ids(api: httpx.Client) -> None:
    results = save(
        api,
        "POST",
        [
            entry(Name="no stage or date", StageName=None),
            entry(**opp(1), Id="006000000000001AAA"),
            entry(**opp(2), CreatedDate="2026-01-01T00:00:00Z"),
            entry(Name="defaults the stage", CloseDate="2026-05-05"),
        ],
    )
    assert codes(results) == [
        "REQUIRED_FIELD_MISSING",
        "INVALID_FIELD",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        None,
    ]
    assert results[0]["errors"][0]["fields"] == ["StageName", "CloseDate"]


@pytest.mark.parametrize("op", ["POST", "PATCH"])
def test_all_or_none_rolls_everything_back(
    sf: SalesforceEmulator, api: httpx.Client, op: str
) -> None:
    existing = [sf.add("Opportunity", opp(i)) for i in range(2)]
    if op == "POST":
        records = [entry(**opp(7)), entry(Name="missing fields", StageName=None), entry(**opp(8))]
    else:
        records = [
            entry(id=existing[0], Name="changed"),
            entry(id=existing[1], StageName="Nope"),
            entry(id=existing[1], Name="changed too"),
        ]
    results = save(api, op, records, allOrNone=True)
    assert [r["success"] for r in results] == [False, False, False]
    assert codes(results)[0] == codes(results)[2] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert codes(results)[1] != "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert sorted(r["Name"] for r in sf.records("Opportunity").values()) == [
        "Opp 00000",
        "Opp 00001",
    ]


def test_delete_collection(sf: SalesforceEmulator, api: httpx.Client, clock: ManualClock) -> None:
    ids = [sf.add("Opportunity", opp(i)) for i in range(3)]
    sf.delete("Opportunity", ids[2])
    clock.advance(1)
    params = {"ids": ",".join([ids[0], "bogus", ids[2], ids[1][:15]]), "allOrNone": "false"}
    response = api.delete(f"{V}/composite/sobjects", params=params)
    results = response.json()
    assert codes(results) == [None, "MALFORMED_ID", "ENTITY_IS_DELETED", None]
    assert [r.get("id") for r in results] == [ids[0], None, None, ids[1]]
    assert sf.records("Opportunity") == {}
    assert len(sf.records("Opportunity", include_deleted=True)) == 3


def test_delete_collection_all_or_none(sf: SalesforceEmulator, api: httpx.Client) -> None:
    ids = [sf.add("Opportunity", opp(i)) for i in range(2)]
    params = {"ids": f"{ids[0]},006000000000999AAA,{ids[1]}", "allOrNone": "true"}
    results = api.delete(f"{V}/composite/sobjects", params=params).json()
    assert codes(results) == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "INVALID_CROSS_REFERENCE_KEY",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    ]
    assert set(sf.records("Opportunity")) == set(ids)


def test_collection_caps(sf: SalesforceEmulator, api: httpx.Client) -> None:
    response = api.post(
        f"{V}/composite/sobjects", json={"records": [entry(**opp(i)) for i in range(201)]}
    )
    assert (response.status_code, response.json()[0]["errorCode"]) == (400, "EXCEEDED_ID_LIMIT")
    assert sf.records("Opportunity") == {}
    assert len(save(api, "POST", [entry(**opp(i)) for i in range(200)])) == 200
    ids = list(sf.records("Opportunity"))
    response = api.delete(f"{V}/composite/sobjects", params={"ids": ",".join([*ids, ids[0]])})
    assert (response.status_code, response.json()[0]["errorCode"]) == (400, "EXCEEDED_ID_LIMIT")
    response = api.post(
        f"{V}/composite/sobjects/Opportunity", json={"ids": ids * 11, "fields": ["Id"]}
    )
    assert (response.status_code, response.json()[0]["errorCode"]) == (400, "EXCEEDED_ID_LIMIT")
    chunks = [entry("Account" if i % 2 else "Contact", Name="x", LastName="y") for i in range(11)]
    for record in chunks:
        record.pop("LastName" if record["attributes"]["type"] == "Account" else "Name")
    response = api.post(f"{V}/composite/sobjects", json={"records": chunks})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("record", "code"),
    [
        (entry(Bogus__c=1), "INVALID_FIELD"),
        (entry(CloseDate="2026-13-45"), "JSON_PARSER_ERROR"),
        (entry(CloseDate="next tuesday"), "JSON_PARSER_ERROR"),
        (entry(Amount="lots"), "JSON_PARSER_ERROR"),
        (entry(Name=["a", "list"]), "JSON_PARSER_ERROR"),
        ({"Name": "no attributes"}, "INVALID_TYPE"),
        (entry("Nothing__c", Name="x"), "INVALID_TYPE"),
    ],
)
def test_request_level_errors(
    sf: SalesforceEmulator, api: httpx.Client, record: dict[str, Any], code: str
) -> None:
    # Deserialization fails the whole request (400), before any record is saved.
    response = api.post(f"{V}/composite/sobjects", json={"records": [entry(**opp(1)), record]})
    assert (response.status_code, response.json()[0]["errorCode"]) == (400, code)
    assert sf.records("Opportunity") == {}


def test_malformed_json_body(api: httpx.Client) -> None:
    response = api.post(
        f"{V}/composite/sobjects",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert (response.status_code, response.json()[0]["errorCode"]) == (400, "JSON_PARSER_ERROR")


def test_multipicklist_values(sf: SalesforceEmulator, api: httpx.Client) -> None:
    record = sf.add("Opportunity", opp(1))
    results = save(
        api,
        "PATCH",
        [entry(id=record, Tags__c="Upsell;Partner"), entry(id=record, Tags__c="Upsell;Unknown")],
    )
    assert codes(results) == [None, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"]
    assert sf.get("Opportunity", record)["Tags__c"] == "Upsell;Partner"


def test_retrieve_collections(sf: SalesforceEmulator, api: httpx.Client) -> None:
    a, b, c = (sf.add("Opportunity", opp(i)) for i in range(3))
    sf.delete("Opportunity", c)
    account = sf.add("Account", Name="Acme")
    wanted = [b, "006000000000999AAA", a[:15], c, account, "junk"]
    by_get = api.get(
        f"{V}/composite/sobjects/Opportunity",
        params={"ids": ",".join(wanted), "fields": "Id,name,Amount"},
    )
    by_post = api.post(
        f"{V}/composite/sobjects/opportunity",
        json={"ids": wanted, "fields": ["Id", "name", "Amount"]},
    )
    for response in (by_get, by_post):
        assert response.status_code == 200
        body = response.json()
        assert [r and r["Id"] for r in body] == [b, None, a, None, None, None]
        assert body[0] == {
            "attributes": {"type": "Opportunity", "url": f"{V}/sobjects/Opportunity/{b}"},
            "Id": b,
            "Name": "Opp 00001",
            "Amount": 1.0,
        }
    response = api.get(
        f"{V}/composite/sobjects/Opportunity", params={"ids": a, "fields": "Id,Nope"}
    )
    assert (response.status_code, response.json()[0]["errorCode"]) == (400, "INVALID_FIELD")


# --------------------------------------------------------------------------------------------
# single records


def test_single_record_round_trip(
    sf: SalesforceEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    response = api.post(f"{V}/sobjects/Opportunity", json=opp(1))
    assert response.status_code == 201
    created = response.json()
    assert created == {"id": created["id"], "success": True, "errors": []}
    record_id = created["id"]
    body = api.get(f"{V}/sobjects/Opportunity/{record_id}").json()
    assert body["Name"] == "Opp 00001"
    assert body["IsDeleted"] is False
    assert body["attributes"]["type"] == "Opportunity"
    partial = api.get(
        f"{V}/sobjects/Opportunity/{record_id}", params={"fields": "Name,Amount"}
    ).json()
    assert list(partial) == ["attributes", "Id", "Name", "Amount"]
    clock.advance(10)
    response = api.patch(f"{V}/sobjects/Opportunity/{record_id}", json={"Amount": 99.999})
    assert (response.status_code, response.content) == (204, b"")
    assert sf.get("Opportunity", record_id)["Amount"] == 100.0  # currency keeps two decimals
    response = api.patch(f"{V}/sobjects/Opportunity/{record_id}", json={"StageName": "Bogus"})
    assert response.status_code == 400
    assert response.json() == [
        {
            "message": "Stage Name: bad value for restricted picklist field: Bogus",
            "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "fields": ["StageName"],
        }
    ]
    assert api.delete(f"{V}/sobjects/Opportunity/{record_id}").status_code == 204
    response = api.get(f"{V}/sobjects/Opportunity/{record_id}")
    assert (response.status_code, response.json()[0]["errorCode"]) == (404, "ENTITY_IS_DELETED")
    response = api.patch(f"{V}/sobjects/Opportunity/006000000000999AAA", json={"Name": "x"})
    assert (response.status_code, response.json()[0]["errorCode"]) == (404, "NOT_FOUND")
    response = api.post(f"{V}/sobjects/Opportunity", json={"Name": "incomplete"})
    assert (response.status_code, response.json()[0]["errorCode"]) == (
        400,
        "REQUIRED_FIELD_MISSING",
    )
    response = api.put(f"{V}/sobjects/Opportunity/{record_id}", json={})
    assert (response.status_code, response.json()[0]["errorCode"]) == (405, "METHOD_NOT_ALLOWED")
    assert api.get(f"{V}/sobjects/Nothing__c/describe").status_code == 404
    assert api.get(f"{V}/no/such/resource").status_code == 404


# --------------------------------------------------------------------------------------------
# describe


def test_describe(sf: SalesforceEmulator, api: httpx.Client) -> None:
    sf.add_field(
        "Opportunity", "Region__c", "picklist", picklist=["EMEA", "APAC"], restricted=False
    )
    sf.add_object(
        "Invoice__c", [SalesforceField(name="Total__c", type="double", precision=10, scale=3)]
    )
    body = api.get(f"{V}/sobjects/Opportunity/describe").json()
    assert (body["name"], body["keyPrefix"], body["custom"]) == ("Opportunity", "006", False)
    fields = {f["name"]: f for f in body["fields"]}
    assert {name: f["type"] for name, f in fields.items()} == {
        "Id": "id",
        "IsDeleted": "boolean",
        "CreatedDate": "datetime",
        "LastModifiedDate": "datetime",
        "SystemModstamp": "datetime",
        "Name": "string",
        "StageName": "picklist",
        "Amount": "currency",
        "CloseDate": "date",
        "Description": "textarea",
        "Tags__c": "multipicklist",
        "Region__c": "picklist",
    }
    stage = fields["StageName"]
    assert stage["restrictedPicklist"] is True
    assert (stage["nillable"], stage["createable"], stage["updateable"]) == (False, True, True)
    values = {v["value"]: (v["active"], v["defaultValue"]) for v in stage["picklistValues"]}
    assert values["Prospecting"] == (True, True)
    assert values["Perception Analysis"] == (False, False)
    assert all(v["validFor"] is None and v["label"] == v["value"] for v in stage["picklistValues"])
    assert (fields["Amount"]["precision"], fields["Amount"]["scale"]) == (18, 2)
    assert fields["Name"]["length"] == 120
    assert fields["SystemModstamp"]["updateable"] is False
    assert fields["Region__c"]["custom"] is True
    assert fields["Region__c"]["restrictedPicklist"] is False
    invoice = api.get(f"{V}/sobjects/Invoice__c/describe").json()
    assert invoice["custom"] is True
    assert invoice["keyPrefix"].startswith("a")
    total = next(f for f in invoice["fields"] if f["name"] == "Total__c")
    assert (total["precision"], total["scale"]) == (10, 3)
    names_listed = [s["name"] for s in api.get(f"{V}/sobjects").json()["sobjects"]]
    assert names_listed == ["Opportunity", "Account", "Contact", "Invoice__c"]
    invoice_id = sf.add("Invoice__c", Total__c=1.2345)
    assert invoice_id.startswith(invoice["keyPrefix"])
    assert sf.get("Invoice__c", invoice_id)["Total__c"] == 1.235  # rounded half-up


# --------------------------------------------------------------------------------------------
# getDeleted / getUpdated


def test_get_deleted_window(sf: SalesforceEmulator, api: httpx.Client, clock: ManualClock) -> None:
    ids = [sf.add("Opportunity", opp(i)) for i in range(3)]
    clock.advance(timedelta(minutes=10, seconds=30))
    sf.delete("Opportunity", ids[0])  # 00:10:30
    clock.advance(timedelta(minutes=5))
    sf.delete("Opportunity", ids[1])  # 00:15:30
    clock.advance(timedelta(minutes=5))  # now 00:20:30
    url = f"{V}/sobjects/Opportunity/deleted/"
    body = api.get(
        url, params={"start": "2026-01-01T00:00:00+00:00", "end": "2026-01-02T00:00:00+00:00"}
    ).json()
    assert body == {
        "deletedRecords": [
            {"id": ids[0], "deletedDate": "2026-01-01T00:10:30.000+0000"},
            {"id": ids[1], "deletedDate": "2026-01-01T00:15:30.000+0000"},
        ],
        "earliestDateAvailable": "2025-12-17T00:00:00.000+0000",
        "latestDateCovered": "2026-01-01T00:20:00.000+0000",
    }
    # seconds are ignored: a start of 00:15:59 is 00:15:00
    body = api.get(
        url, params={"start": "2026-01-01T00:15:59Z", "end": "2026-01-01T00:18:00Z"}
    ).json()
    assert [d["id"] for d in body["deletedRecords"]] == [ids[1]]
    assert body["latestDateCovered"] == "2026-01-01T00:18:00.000+0000"
    for start, end in [
        ("2026-01-01T00:10:00Z", "2026-01-01T00:10:30Z"),  # less than a minute
        ("2026-01-01T00:10:00Z", "2026-01-01T00:05:00Z"),  # reversed
        ("2025-12-16T23:59:00Z", "2026-01-01T00:05:00Z"),  # older than the 15 days
        ("yesterday", "2026-01-01T00:05:00Z"),
    ]:
        response = api.get(url, params={"start": start, "end": end})
        assert (response.status_code, response.json()[0]["errorCode"]) == (
            400,
            "INVALID_REPLICATION_DATE",
        )
    response = api.get(url)
    assert response.status_code == 400
    # an administrator empties the Recycle Bin: what was deleted before is no longer listed
    clock.advance(timedelta(hours=1))
    sf.delete("Opportunity", ids[2])  # 01:20:30
    sf.purge_recycle_bin("Opportunity")
    clock.advance(timedelta(hours=1))
    later = sf.add("Opportunity", opp(5))
    sf.delete("Opportunity", later)  # 02:20:30
    clock.advance(timedelta(minutes=2))
    reauth(api, sf)
    body = api.get(
        url, params={"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T03:00:00Z"}
    ).json()
    assert body["earliestDateAvailable"] == "2026-01-01T01:20:00.000+0000"
    assert [d["id"] for d in body["deletedRecords"]] == [later]


def test_deleted_records_expire_after_the_retention_window(
    sf: SalesforceEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    record = sf.add("Opportunity", opp(1))
    sf.delete("Opportunity", record)
    clock.advance(timedelta(days=16, hours=1))
    reauth(api, sf)
    assert soql(api, "SELECT Id FROM Opportunity", all_rows=True)["totalSize"] == 0
    start = "2025-12-31T12:00:00Z"
    response = api.get(
        f"{V}/sobjects/Opportunity/deleted/", params={"start": start, "end": "2026-01-17T00:00:00Z"}
    )
    assert response.json()[0]["errorCode"] == "INVALID_REPLICATION_DATE"
    body = api.get(
        f"{V}/sobjects/Opportunity/deleted/",
        params={"start": "2026-01-02T00:00:00Z", "end": "2026-01-17T00:00:00Z"},
    ).json()
    assert body["deletedRecords"] == []
    assert body["earliestDateAvailable"] == "2026-01-02T00:00:00.000+0000"


def test_get_updated(sf: SalesforceEmulator, api: httpx.Client, clock: ManualClock) -> None:
    a, b, c = (sf.add("Opportunity", opp(i)) for i in range(3))
    clock.advance(timedelta(minutes=30))
    sf.edit("Opportunity", a, automated=True)
    sf.edit("Opportunity", b, Amount=1)
    sf.delete("Opportunity", c)
    clock.advance(timedelta(minutes=3))
    body = api.get(
        f"{V}/sobjects/Opportunity/updated/",
        params={"start": "2026-01-01T00:10:00Z", "end": "2026-01-01T01:00:00Z"},
    ).json()
    assert body == {"ids": [a, b], "latestDateCovered": "2026-01-01T00:33:00.000+0000"}
    response = api.get(
        f"{V}/sobjects/Opportunity/updated/",
        params={"start": "2025-12-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"},
    )
    assert response.json()[0]["errorCode"] == "INVALID_REPLICATION_DATE"


# --------------------------------------------------------------------------------------------
# limits


def test_limit_header_and_limits_resource(sf: SalesforceEmulator, api: httpx.Client) -> None:
    first = api.get(f"{V}/query", params={"q": "SELECT Id FROM Account"})
    assert first.headers["Sforce-Limit-Info"] == "api-usage=1/100000"
    bad = api.get(f"{V}/query", params={"q": "SELECT"})
    assert bad.headers["Sforce-Limit-Info"] == "api-usage=2/100000"
    limits = api.get(f"{V}/limits")
    assert limits.json()["DailyApiRequests"] == {"Max": 100000, "Remaining": 99997}
    assert sf.api_usage == 3


def test_daily_limit_is_a_rolling_24_hours(clock: ManualClock) -> None:
    sf = SalesforceEmulator(clock=clock, daily_api_limit=3, session_timeout=timedelta(days=2))
    api = httpx.Client(transport=sf.transport(), base_url=INSTANCE)
    api.headers["Authorization"] = f"Bearer {sf.issue_token()}"
    for _ in range(2):
        assert api.get(f"{V}/limits").status_code == 200
    clock.advance(timedelta(hours=12))
    assert api.get(f"{V}/limits").status_code == 200
    refused = api.get(f"{V}/limits")
    assert refused.status_code == 403
    assert refused.json() == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=3/3"
    clock.advance(timedelta(hours=12))  # the first two fall out of the window
    assert api.get(f"{V}/limits").headers["Sforce-Limit-Info"] == "api-usage=2/3"


def test_burst_limit(clock: ManualClock) -> None:
    sf = SalesforceEmulator(clock=clock, burst_limit=2)
    api = httpx.Client(transport=sf.transport(), base_url=INSTANCE)
    api.headers["Authorization"] = f"Bearer {sf.issue_token()}"
    statuses = [api.get(f"{V}/limits").status_code for _ in range(3)]
    assert statuses == [200, 200, 403]
    clock.advance(1)
    assert api.get(f"{V}/limits").status_code == 200


# --------------------------------------------------------------------------------------------
# OAuth


def jwt_login(
    client: httpx.Client,
    private_pem: str,
    now: datetime,
    *,
    consumer_key: str = "3MVG9-consumer",
    username: str = "sync@example.com",
    audience: str = LOGIN,
    lifetime: timedelta = timedelta(minutes=3),
    host: str = LOGIN,
) -> httpx.Response:
    assertion = make_jwt_assertion(
        private_pem,
        consumer_key=consumer_key,
        username=username,
        audience=audience,
        expires_at=now + lifetime,
    )
    return client.post(
        f"{host}/services/oauth2/token", data={"grant_type": JWT_GRANT, "assertion": assertion}
    )


@pytest.fixture
def login(sf: SalesforceEmulator, keys: tuple[str, str]) -> Iterator[httpx.Client]:
    sf.register_jwt_client("3MVG9-consumer", keys[1], "sync@example.com")
    with httpx.Client(transport=sf.transport()) as client:
        yield client


def test_jwt_bearer_flow(
    sf: SalesforceEmulator, login: httpx.Client, keys: tuple[str, str], clock: ManualClock
) -> None:
    response = jwt_login(login, keys[0], clock.now())
    assert response.status_code == 200
    token = response.json()
    assert set(token) == {"access_token", "scope", "instance_url", "id", "token_type"}
    assert token["token_type"] == "Bearer"
    assert token["instance_url"] == INSTANCE
    assert token["id"].startswith(f"{LOGIN}/id/00D")
    query = login.get(
        f"{token['instance_url']}{V}/query",
        params={"q": "SELECT Id FROM Opportunity"},
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert query.status_code == 200
    # the My Domain host takes the same assertion
    assert jwt_login(login, keys[0], clock.now(), host=INSTANCE).status_code == 200


@pytest.mark.parametrize(
    ("change", "error", "description"),
    [
        ({"private": "other"}, "invalid_grant", "invalid assertion"),
        ({"lifetime": timedelta(minutes=-5)}, "invalid_grant", "expired authorization code"),
        ({"audience": "https://example.my.salesforce.com"}, "invalid_grant", "audience is invalid"),
        ({"audience": "https://test.salesforce.com"}, "invalid_grant", "audience is invalid"),
        ({"consumer_key": "unknown"}, "invalid_client_id", "client identifier invalid"),
        ({"username": "someone@else.com"}, "invalid_grant", "user hasn't approved this consumer"),
    ],
)
def test_jwt_bearer_errors(
    login: httpx.Client,
    keys: tuple[str, str],
    other_keys: tuple[str, str],
    clock: ManualClock,
    change: dict[str, Any],
    error: str,
    description: str,
) -> None:
    private = other_keys[0] if change.pop("private", None) else keys[0]
    response = jwt_login(login, private, clock.now(), **change)
    assert response.status_code == 400
    assert response.json() == {"error": error, "error_description": description}


def test_jwt_small_clock_skew_is_tolerated(
    login: httpx.Client, keys: tuple[str, str], clock: ManualClock
) -> None:
    assert (
        jwt_login(login, keys[0], clock.now(), lifetime=timedelta(seconds=-10)).status_code == 200
    )


def test_jwt_sandbox_audience(clock: ManualClock, keys: tuple[str, str]) -> None:
    sf = SalesforceEmulator(clock=clock, login_url="https://test.salesforce.com")
    sf.register_jwt_client("ck", keys[1], "sync@example.com.sandbox")
    client = httpx.Client(transport=sf.transport())
    ok = jwt_login(
        client,
        keys[0],
        clock.now(),
        consumer_key="ck",
        username="sync@example.com.sandbox",
        audience="https://test.salesforce.com",
        host="https://test.salesforce.com",
    )
    assert ok.status_code == 200
    assert ok.json()["id"].startswith("https://test.salesforce.com/id/")


def test_token_endpoint_rejects_other_grants(sf: SalesforceEmulator, login: httpx.Client) -> None:
    response = login.post(f"{LOGIN}/services/oauth2/token", data={"grant_type": "password"})
    assert response.json()["error"] == "unsupported_grant_type"
    response = login.post(
        f"{LOGIN}/services/oauth2/token", data={"grant_type": JWT_GRANT, "assertion": "x.y.z"}
    )
    assert response.json() == {"error": "invalid_grant", "error_description": "invalid assertion"}


def test_client_credentials_flow(sf: SalesforceEmulator) -> None:
    sf.register_client_credentials("client-id", "s3cret")
    client = httpx.Client(transport=sf.transport())
    form = {"grant_type": "client_credentials", "client_id": "client-id", "client_secret": "s3cret"}
    refused = client.post(f"{LOGIN}/services/oauth2/token", data=form)
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "invalid_request",
        "error_description": "request not supported on this domain",
    }
    ok = client.post(f"{INSTANCE}/services/oauth2/token", data=form)
    assert ok.status_code == 200
    body = ok.json()
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body
    assert body["instance_url"] == INSTANCE
    data = client.get(
        f"{INSTANCE}{V}/limits", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert data.status_code == 200
    wrong = client.post(f"{INSTANCE}/services/oauth2/token", data={**form, "client_secret": "nope"})
    assert wrong.json() == {
        "error": "invalid_client",
        "error_description": "invalid client credentials",
    }
    basic = client.post(
        f"{INSTANCE}/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=("client-id", "s3cret"),
    )
    assert basic.status_code == 200


def test_sessions_expire(sf: SalesforceEmulator, api: httpx.Client, clock: ManualClock) -> None:
    expired = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    anonymous = httpx.Client(transport=sf.transport(), base_url=INSTANCE)
    response = anonymous.get(f"{V}/limits")
    assert (response.status_code, response.json()) == (401, expired)
    response = anonymous.get(f"{V}/limits", headers={"Authorization": "Bearer 00Dxx!made-up"})
    assert response.status_code == 401
    assert "Sforce-Limit-Info" not in response.headers
    clock.advance(timedelta(hours=1, minutes=59))
    assert api.get(f"{V}/limits").status_code == 200  # use keeps a session alive
    clock.advance(timedelta(hours=1, minutes=59))
    assert api.get(f"{V}/limits").status_code == 200
    clock.advance(timedelta(hours=2))
    response = api.get(f"{V}/limits")
    assert (response.status_code, response.json()) == (401, expired)
    api.headers["Authorization"] = f"Bearer {sf.issue_token()}"
    assert api.get(f"{V}/limits").status_code == 200
    sf.expire_sessions()
    assert api.get(f"{V}/limits").status_code == 401
    assert sf.api_usage == 3  # refused requests are not counted


# --------------------------------------------------------------------------------------------
# faults


def test_fail_next(sf: SalesforceEmulator, api: httpx.Client) -> None:
    sf.fail_next(503, n=2, path_contains="/query")
    sf.fail_next(403)
    assert api.get(f"{V}/limits").status_code == 403  # the path filter lets /limits through
    assert api.get(f"{V}/limits").status_code == 200
    statuses = [
        api.get(f"{V}/query", params={"q": "SELECT Id FROM Account"}).status_code for _ in range(3)
    ]
    assert statuses == [503, 503, 200]
    sf.fail_next(500, body={"custom": True}, headers={"Retry-After": "1"})
    response = api.get(f"{V}/limits")
    assert (response.status_code, response.json(), response.headers["Retry-After"]) == (
        500,
        {"custom": True},
        "1",
    )
    sf.fail_next(403)
    response = api.get(f"{V}/limits")
    assert response.json() == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]


def test_injected_failures_apply_nothing(sf: SalesforceEmulator, api: httpx.Client) -> None:
    sf.fail_next(500, path_contains="composite")
    response = api.post(f"{V}/composite/sobjects", json={"records": [entry(**opp(1))]})
    assert response.status_code == 500
    assert sf.records("Opportunity") == {}


def test_lost_responses_are_applied(sf: SalesforceEmulator, api: httpx.Client) -> None:
    record = sf.add("Opportunity", opp(1))
    sf.lose_response_next(path_contains="/composite/sobjects")
    assert api.get(f"{V}/limits").status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        save(api, "PATCH", [entry(id=record, Name="applied anyway")])
    assert sf.get("Opportunity", record)["Name"] == "applied anyway"
    assert sf.requests[-1].status == 200
    # handle() answers normally: the core never loses a response
    sf.lose_response_next()
    request = httpx.Request("GET", f"{INSTANCE}{V}/limits", headers=api.headers)
    assert sf.handle(request).status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        api.get(f"{V}/limits")


def test_query_timeout_and_slow_pages(
    sf: SalesforceEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    sf.bulk_add("Opportunity", 2500, opp)
    sf.query_timeout_next()
    response = api.get(f"{V}/query", params={"q": "SELECT Id FROM Opportunity"})
    assert response.status_code == 400
    assert response.json() == [
        {"message": "Your query request was running for too long.", "errorCode": "QUERY_TIMEOUT"}
    ]
    sf.slow_pages(7.5)
    before = clock.now()
    every_page(api, soql(api, "SELECT Id FROM Opportunity"))
    assert clock.now() - before == timedelta(seconds=15)
    sf.slow_pages(0)
    every_page(api, soql(api, "SELECT Id FROM Opportunity"))
    assert clock.now() - before == timedelta(seconds=15)


def test_slow_pages_calls_the_injected_sleep(clock: ManualClock) -> None:
    slept: list[float] = []
    sf = SalesforceEmulator(clock=clock, sleep=slept.append)
    api = httpx.Client(transport=sf.transport(), base_url=INSTANCE)
    api.headers["Authorization"] = f"Bearer {sf.issue_token()}"
    sf.slow_pages(2)
    soql(api, "SELECT Id FROM Opportunity")
    assert slept == [2.0]
    assert clock.now() == T0


def test_request_log_and_counters(sf: SalesforceEmulator, api: httpx.Client) -> None:
    sf.bulk_add("Opportunity", 2001, opp)
    every_page(api, soql(api, "SELECT Id FROM Opportunity"))
    api.get(f"{V}/sobjects/Opportunity/describe")
    api.get(f"{V}/nowhere")
    assert [(r.method, r.endpoint, r.status) for r in sf.requests] == [
        ("GET", "query", 200),
        ("GET", "query_more", 200),
        ("GET", "describe", 200),
        ("GET", "unknown", 404),
    ]
    assert isinstance(sf.requests[0], SalesforceRequest)
    assert sf.requests[0].path == f"{V}/query"
    assert sf.calls == {"query": 1, "query_more": 1, "describe": 1, "unknown": 1}
    sf.reset_counters()
    assert (sf.requests, sum(sf.calls.values()), sf.api_usage) == ([], 0, 0)


# --------------------------------------------------------------------------------------------
# data helpers


def test_data_helpers(sf: SalesforceEmulator, clock: ManualClock) -> None:
    record = sf.add("Opportunity", {"Name": "Ada", "CloseDate": date(2026, 1, 2)}, Amount=3)
    assert re.fullmatch(r"006[A-Za-z0-9]{15}", record)
    got = sf.get("Opportunity", record)
    assert (got["Name"], got["CloseDate"], got["Amount"], got["IsDeleted"]) == (
        "Ada",
        "2026-01-02",
        3.0,
        False,
    )
    assert got["CreatedDate"] == "2026-01-01T00:00:00.000+0000"
    assert sf.get("opportunity", record[:15]) == got
    with pytest.raises(ValueError, match="Nope"):
        sf.add("Opportunity", Nope=1)
    with pytest.raises(ValueError, match="Amount"):
        sf.add("Opportunity", Amount="a lot")
    with pytest.raises(KeyError):
        sf.get("Opportunity", "006000000000999AAA")
    with pytest.raises(KeyError):
        sf.add("Nothing__c", Name="x")
    ids = sf.bulk_add("Account", 3, lambda i: {"Name": f"A{i}", "NumberOfEmployees": i})
    assert ids == sorted(ids)
    assert [r["Name"] for r in sf.records("Account").values()] == ["A0", "A1", "A2"]
    sf.edit("Opportunity", record, CloseDate=datetime(2026, 5, 1).date(), Description=None)
    assert sf.get("Opportunity", record)["CloseDate"] == "2026-05-01"
    sf.add_field("Opportunity", "Probability__c", "percent")
    sf.edit("Opportunity", record, Probability__c=10)
    assert sf.get("Opportunity", record)["Probability__c"] == 10.0
    assert "Opportunity: 1" in repr(sf)


def test_objects_given_to_the_constructor(clock: ManualClock) -> None:
    sf = SalesforceEmulator(
        clock=clock,
        objects={
            "Ticket__c": [
                SalesforceField(name="Subject__c", nillable=False),
                SalesforceField(name="Urgent__c", type="boolean"),
                SalesforceField(name="Seen__c", type="datetime"),
            ]
        },
    )
    record = sf.add(
        "Ticket__c", Subject__c="Help", Seen__c=datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    )
    assert sf.get("Ticket__c", record)["Urgent__c"] is False
    assert sf.get("Ticket__c", record)["Seen__c"] == "2026-01-01T12:30:00.000+0000"
    with pytest.raises(KeyError):
        sf.add("Opportunity", Name="x")
    api = httpx.Client(transport=sf.transport(), base_url=INSTANCE)
    api.headers["Authorization"] = f"Bearer {sf.issue_token()}"
    body = soql(
        api,
        "SELECT Subject__c FROM Ticket__c "
        "WHERE Urgent__c = false AND Seen__c > 2026-01-01T12:00:00Z",
    )
    assert [r["Subject__c"] for r in body["records"]] == ["Help"]
    result = save(api, "POST", [entry("Ticket__c", Subject__c="x", Urgent__c=True)])
    assert result[0]["id"].startswith(sf.get("Ticket__c", record)["Id"][:3])


def test_api_version_prefix(sf: SalesforceEmulator, api: httpx.Client) -> None:
    record = sf.add("Opportunity", opp(1))
    for version in ("v48.0", "v61.0", "v62.0"):
        body = api.get(
            f"/services/data/{version}/query", params={"q": "SELECT Id FROM Opportunity"}
        ).json()
        assert (
            body["records"][0]["attributes"]["url"]
            == f"/services/data/{version}/sobjects/Opportunity/{record}"
        )
    assert api.get("/services/data/61/query").status_code == 404
    assert api.get("/services/data").json()[0]["version"] == "61.0"


# --------------------------------------------------------------------------------------------
# front doors: AsyncClient over the transport, ASGI, uvicorn


@pytest.mark.anyio
async def test_async_client_over_the_transport(sf: SalesforceEmulator) -> None:
    sf.bulk_add("Opportunity", 2001, opp)
    headers = {"Authorization": f"Bearer {sf.issue_token()}"}
    async with httpx.AsyncClient(
        transport=sf.transport(), base_url=INSTANCE, headers=headers
    ) as client:
        first = (await client.get(f"{V}/query", params={"q": "SELECT Id FROM Opportunity"})).json()
        second = (await client.get(first["nextRecordsUrl"])).json()
        assert len(first["records"]) + len(second["records"]) == 2001
        sf.lose_response_next()
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{V}/limits")


@pytest.mark.anyio
async def test_asgi_application(
    sf: SalesforceEmulator, keys: tuple[str, str], clock: ManualClock
) -> None:
    sf.register_jwt_client("ck", keys[1], "sync@example.com")
    sf.bulk_add("Opportunity", 2001, opp)
    assertion = make_jwt_assertion(
        keys[0],
        consumer_key="ck",
        username="sync@example.com",
        expires_at=clock.now() + timedelta(minutes=3),
    )
    transport = httpx.ASGITransport(app=sf)
    async with httpx.AsyncClient(transport=transport, base_url=LOGIN) as client:
        token = await client.post(
            "/services/oauth2/token", data={"grant_type": JWT_GRANT, "assertion": assertion}
        )
        assert token.status_code == 200
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        first = await client.get(
            f"{INSTANCE}{V}/query", params={"q": "SELECT Id, Name FROM Opportunity"}
        )
        assert first.status_code == 200
        assert first.headers["content-type"] == "application/json;charset=UTF-8"
        assert first.headers["sforce-limit-info"] == "api-usage=1/100000"
        second = await client.get(f"{INSTANCE}{first.json()['nextRecordsUrl']}")
        assert second.json()["done"] is True
        created = await client.post(
            f"{INSTANCE}{V}/composite/sobjects", json={"records": [entry(**opp(1))]}
        )
        assert created.json()[0]["success"] is True
        deleted = await client.delete(
            f"{INSTANCE}{V}/sobjects/Opportunity/{created.json()[0]['id']}"
        )
        assert (deleted.status_code, deleted.content) == (204, b"")
        # a lost response needs the transport: in ASGI mode the request is simply answered
        sf.lose_response_next()
        assert (await client.get(f"{INSTANCE}{V}/limits")).status_code == 200
    await anyio.sleep(0)


def test_over_uvicorn(sf: SalesforceEmulator) -> None:
    sf.register_client_credentials("client-id", "s3cret")
    sf.bulk_add("Opportunity", 2500, opp)
    with serve(sf) as url, httpx.Client(timeout=10) as client:
        sf.instance_url = url
        form = {
            "grant_type": "client_credentials",
            "client_id": "client-id",
            "client_secret": "s3cret",
        }
        token = client.post(f"{url}/services/oauth2/token", data=form).json()
        assert token["instance_url"] == url
        client.headers["Authorization"] = f"Bearer {token['access_token']}"
        body = client.get(
            f"{url}{V}/query", params={"q": "SELECT Id FROM Opportunity ORDER BY Id"}
        ).json()
        got = len(body["records"])
        while not body["done"]:
            body = client.get(url + body["nextRecordsUrl"]).json()
            got += len(body["records"])
        assert got == 2500
        response = client.patch(
            f"{url}{V}/composite/sobjects",
            json={
                "allOrNone": False,
                "records": [entry(id=body["records"][0]["Id"], Name="over the wire")],
            },
        )
        assert response.json()[0]["success"] is True
    assert sf.calls["oauth_token"] == 1
    assert sf.calls["query_more"] == 1
