"""The Salesforce connector against the Salesforce emulator, over real httpx clients."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncrecon import (
    AuthenticationError,
    Change,
    ChangeOp,
    ConfigurationError,
    RateLimitedError,
    TransientError,
)
from syncrecon.connectors.salesforce import (
    AsyncSalesforceConnector,
    SalesforceConnector,
    client_credentials,
    decode_value,
    encode_value,
    jwt_bearer,
    soql_literal,
)
from syncrecon.http import VirtualTimer
from syncrecon.testing import ManualClock
from syncrecon.testing._salesforce import SalesforceEmulator, make_test_key_pair

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FIELDS = ["Name", "StageName", "Amount", "CloseDate", "Description", "Tags__c"]
LOGIN = "https://login.salesforce.com"
_accounts = itertools.count()


@cache
def keys() -> tuple[str, str]:
    return make_test_key_pair()


class World:
    def __init__(self, **emulator: Any) -> None:
        self.clock = ManualClock(START)
        self.emu = SalesforceEmulator(clock=self.clock, **emulator)
        self.timer = VirtualTimer(self.clock)
        self.client = httpx.Client(transport=self.emu.transport())
        private, public = keys()
        self.private = private
        self.emu.register_jwt_client("consumer-key", public, "sync@acme.test")

    def auth(self) -> Any:
        return jwt_bearer(
            consumer_key="consumer-key",
            username="sync@acme.test",
            private_key=self.private,
            clock=self.clock,
        )

    def connector(self, **kwargs: Any) -> SalesforceConnector:
        kwargs.setdefault("fields", FIELDS)
        if "access_token" not in kwargs:
            kwargs.setdefault("auth", self.auth())
        return SalesforceConnector(
            self.client, sobject="Opportunity", timer=self.timer, clock=self.clock, **kwargs
        )

    def opp(self, **fields: Any) -> str:
        base = {"Name": "Opp", "StageName": "Prospecting", "CloseDate": "2026-06-30"}
        return self.emu.add("Opportunity", {**base, **fields})

    def pages(self, conn: SalesforceConnector, since: datetime | None = None) -> Iterator[Any]:
        cursor = None
        for _ in range(10_000):
            page = conn.list_records(since=since, cursor=cursor)
            yield page
            cursor = page.next_cursor
            if cursor is None:
                return
        raise AssertionError("the listing never ended")


@pytest.fixture
def world() -> World:
    return World()


@pytest.mark.parametrize("n", [0, 1, 2000, 2001])
def test_a_full_sweep_pages_by_2000(world: World, n: int) -> None:
    ids = world.emu.bulk_add(
        "Opportunity",
        n,
        lambda i: {"Name": f"O{i}", "StageName": "Prospecting", "CloseDate": "2026-06-30"},
    )
    conn = world.connector()
    pages = list(world.pages(conn))
    assert sorted(r.key for p in pages for r in p.records) == sorted(ids)
    assert len(pages) == max(1, math.ceil(n / 2000))
    query_requests = sum(v for k, v in conn.api.requests.items() if "/query" in k)
    assert query_requests == max(1, math.ceil(n / 2000))


def test_values_come_typed_and_describe_gives_active_options(world: World) -> None:
    key = world.opp(Amount=1250.5, Tags__c="Renewal;Upsell", Description=None)
    conn = world.connector()
    (record,) = conn.read_records([key])
    assert record.fields["Amount"] == 1250.5
    assert record.fields["CloseDate"] == date(2026, 6, 30)
    assert record.fields["Tags__c"] == ["Renewal", "Upsell"]
    assert record.fields["Description"] is None
    fields = {f.name: f for f in conn.describe_fields()}
    assert fields["Tags__c"].type == "multipicklist"
    assert "Legacy" not in (fields["Tags__c"].options or ())
    assert "Perception Analysis" not in (fields["StageName"].options or ())
    assert "Closed Won" in (fields["StageName"].options or ())


def test_incremental_listing_sees_automated_changes_and_deletions(world: World) -> None:
    a, b, c = world.opp(Name="a"), world.opp(Name="b"), world.opp(Name="c")
    world.clock.advance(3600)
    since = world.clock.now()
    world.clock.advance(60)
    world.emu.edit("Opportunity", a, automated=True, Description="set by a flow")
    world.emu.delete("Opportunity", b)
    world.clock.advance(120)  # getDeleted covers whole minutes up to a minute ago
    conn = world.connector()
    records = [r for p in world.pages(conn, since) for r in p.records]
    assert {r.key for r in records if not r.deleted} == {a}
    assert [r.key for r in records if r.deleted] == [b]
    assert c not in {r.key for r in records}


def test_deletions_past_getdeleted_fall_back_to_queryall(world: World) -> None:
    a = world.opp()
    since = world.clock.now()
    world.clock.advance(timedelta(days=10))
    world.emu.delete("Opportunity", a)
    world.clock.advance(timedelta(days=10))  # since is 20 days back: beyond getDeleted
    conn = world.connector()
    records = [r for p in world.pages(conn, since) for r in p.records]
    assert conn.deletion_gap is not None
    assert [r.key for r in records if r.deleted] == [a]  # still in the recycle bin
    assert world.emu.calls["deleted"] == 0
    assert world.emu.calls["queryAll"] == 1


def test_more_than_a_page_of_deleted_rows_from_queryall_stay_deleted_and_end(world: World) -> None:
    ids = world.emu.bulk_add(
        "Opportunity",
        2500,
        lambda i: {"Name": f"O{i}", "StageName": "Prospecting", "CloseDate": "2026-06-30"},
    )
    since = world.clock.now()
    world.clock.advance(timedelta(days=5))
    for key in ids:
        world.emu.delete("Opportunity", key)
    world.clock.advance(timedelta(days=10))
    conn = world.connector()
    records = [r for p in world.pages(conn, since) for r in p.records]
    assert conn.deletion_gap is not None
    assert len(records) == 2500
    assert all(r.deleted for r in records)
    assert sorted(r.key for r in records) == sorted(ids)


def test_writes_in_input_order_with_per_record_errors(world: World) -> None:
    a, b, c = world.opp(), world.opp(), world.opp()
    conn = world.connector()
    results = conn.write_records(
        [
            Change(
                op=ChangeOp.UPDATE,
                key=a,
                fields={"StageName": "Closed Won", "Tags__c": ["Partner"]},
                ref="u1",
            ),
            Change(
                op=ChangeOp.UPDATE, key=b, fields={"StageName": "Perception Analysis"}, ref="u2"
            ),
            Change(
                op=ChangeOp.CREATE,
                fields={"Name": "New", "StageName": "Prospecting", "CloseDate": date(2026, 7, 1)},
                ref="c1",
            ),
            Change(
                op=ChangeOp.CREATE,
                fields={"Name": "No close date", "StageName": "Prospecting"},
                ref="c2",
            ),
            Change(op=ChangeOp.DELETE, key=c, ref="d1"),
        ]
    )
    by = {r.ref: r for r in results}
    assert [r.ref for r in results] == ["u1", "u2", "c1", "c2", "d1"]
    assert by["u1"].ok
    assert not by["u2"].ok
    assert "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in str(by["u2"].error)
    assert by["c1"].ok
    assert by["c1"].key is not None
    assert not by["c2"].ok
    assert "REQUIRED_FIELD_MISSING" in str(by["c2"].error)
    assert by["d1"].ok
    assert world.emu.get("Opportunity", a)["Tags__c"] == "Partner"
    assert world.emu.get("Opportunity", by["c1"].key)["CloseDate"] == "2026-07-01"


def test_a_lost_create_is_found_by_its_external_id(world: World) -> None:
    world.emu.add_field("Opportunity", "Sync_Key__c")
    conn = world.connector(external_id_field="Sync_Key__c")
    world.emu.lose_response_next(1, path_contains="composite/sobjects")
    change = Change(
        op=ChangeOp.CREATE,
        fields={"Name": "Once", "StageName": "Prospecting", "CloseDate": date(2026, 7, 1)},
        ref="c",
        idempotency_key="idem-1",
    )
    with pytest.raises(TransientError, match="may have been applied"):
        conn.write_records([change])
    found = conn.find_created(["idem-1", "idem-2"])
    assert list(found) == ["idem-1"]
    assert len(world.emu.records("Opportunity")) == 1


def test_jwt_login_and_one_renewal_on_an_expired_session(world: World) -> None:
    key = world.opp()
    conn = world.connector()
    conn.read_records([key])
    world.emu.expire_sessions()
    (record,) = conn.read_records([key])
    assert record.key == key
    token_requests = [k for k in conn.api.requests if "token" in k]
    assert token_requests == []  # token requests are counted by the auth, not the API
    assert world.emu.calls["oauth_token"] == 2


def test_a_wrong_key_is_an_authentication_error_without_the_key(world: World) -> None:
    other_private, _ = make_test_key_pair()
    auth = jwt_bearer(
        consumer_key="consumer-key",
        username="sync@acme.test",
        private_key=other_private,
        clock=world.clock,
    )
    conn = world.connector(auth=auth)
    with pytest.raises(AuthenticationError) as caught:
        conn.read_records(["006000000000001AAA"])
    text = f"{caught.value} {caught.value!r} {auth!r} {conn!r}"
    assert "BEGIN" not in text
    assert "invalid_grant" in str(caught.value)


def test_client_credentials_against_my_domain() -> None:
    world = World()
    world.emu.register_client_credentials("cid", "csecret")
    auth = client_credentials(
        my_domain_url=world.emu.instance_url,
        client_id="cid",
        client_secret="csecret",
        clock=world.clock,
    )
    key = world.opp()
    conn = world.connector(auth=auth)
    assert [r.key for r in conn.read_records([key])] == [key]
    assert "csecret" not in repr(auth)


def test_request_limit_exceeded_is_throttling_and_the_limit_header_is_followed() -> None:
    world = World(daily_api_limit=40)
    key = world.opp()
    conn = world.connector()
    conn.read_records([key])
    assert conn.api.limiter is not None
    assert conn.api.limiter.windows[0].limit == 40  # from Sforce-Limit-Info
    world.emu.fail_next(403, n=2, path_contains="composite")
    conn.read_records([key])
    assert conn.api.throttled == 2


def test_the_daily_allocation_is_never_exceeded_by_our_own_traffic() -> None:
    world = World(daily_api_limit=30)
    key = world.opp()
    conn = world.connector()
    reads = 0
    with pytest.raises(RateLimitedError, match="has no room") as caught:  # noqa: PT012
        while reads < 100:
            conn.read_records([key])
            reads += 1
    assert reads == 29  # the describe took one of the 30
    assert world.emu.api_usage == 30
    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 3600
    assert sum(1 for r in world.emu.requests if r.status == 403) == 0


def test_soql_literals_escape() -> None:
    assert soql_literal("O'Brien \\ co") == "'O\\'Brien \\\\ co'"
    assert soql_literal(None) == "null"
    assert soql_literal(True) == "true"
    assert soql_literal(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    with pytest.raises(ConfigurationError):
        SalesforceConnector(
            httpx.Client(),
            sobject="Opportunity; DROP",
            fields=["Name"],
            access_token="t",
            instance_url="https://x",
        )


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.tuples(
            st.just("date"), st.dates(min_value=date(1971, 1, 1), max_value=date(2200, 1, 1))
        ),
        st.tuples(
            st.just("datetime"),
            st.datetimes(
                min_value=datetime(1971, 1, 1),
                max_value=datetime(2200, 1, 1),
                timezones=st.just(UTC),
            ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
        ),
        st.tuples(
            st.just("multipicklist"),
            st.lists(
                st.text(alphabet="abcXYZ _-", min_size=1).filter(lambda s: ";" not in s), min_size=1
            ),
        ),
        st.tuples(
            st.just("currency"),
            st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
        ),
        st.tuples(st.just("boolean"), st.booleans()),
        st.tuples(st.just("string"), st.text()),
    )
)
def test_typed_values_round_trip(case: tuple[str, Any]) -> None:
    kind, value = case
    assert decode_value(kind, encode_value(kind, value)) == value


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_async_connector(world: World) -> None:
    ids = world.emu.bulk_add(
        "Opportunity",
        2100,
        lambda i: {"Name": f"O{i}", "StageName": "Prospecting", "CloseDate": "2026-06-30"},
    )
    async with httpx.AsyncClient(transport=world.emu.transport()) as client:
        conn = AsyncSalesforceConnector(
            client,
            sobject="Opportunity",
            fields=FIELDS,
            auth=world.auth(),
            timer=world.timer,
            clock=world.clock,
        )
        first = await conn.list_records(since=None, cursor=None)
        second = await conn.list_records(since=None, cursor=first.next_cursor)
        results = await conn.write_records(
            [Change(op=ChangeOp.UPDATE, key=ids[0], fields={"Name": "async"}, ref="r")]
        )
    assert len(first.records) + len(second.records) == 2100
    assert results[0].ok


def test_the_request_sent_again_after_a_renewed_session_is_counted(world: World) -> None:
    from syncrecon._connector import Caller, RetrySettings

    key = world.opp()
    conn = world.connector()
    conn.read_records([key])
    world.emu.expire_sessions()
    with Caller(RetrySettings(sleep=lambda _: None)) as caller:
        caller.call(conn.name, conn.read_records, [key])
    endpoint = "POST /services/data/v61.0/composite/sobjects/Opportunity"
    assert caller.requests["salesforce"][endpoint] == 2  # the 401 and the one sent again
    assert caller.requests["salesforce"]["POST /services/oauth2/token"] == 1
