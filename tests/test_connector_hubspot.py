"""The HubSpot connector against the HubSpot emulator, over real httpx clients."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncrecon import (
    AuthenticationError,
    Change,
    ChangeOp,
    FieldInfo,
    RateLimitedError,
    TransientError,
)
from syncrecon.connectors.hubspot import (
    AsyncHubSpotConnector,
    HubSpotConnector,
    decode_value,
    encode_value,
)
from syncrecon.http import OAuth2RefreshToken, VirtualTimer
from syncrecon.testing import ManualClock
from syncrecon.testing._hubspot import HubSpotEmulator

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PROPS = ["dealname", "dealstage", "amount", "closedate", "description", "tags"]
_tokens = itertools.count()


class World:
    def __init__(self, **emulator: Any) -> None:
        self.clock = ManualClock(START)
        self.token = f"pat-test-{next(_tokens)}"
        emulator.setdefault("seed", 7)
        self.emu = HubSpotEmulator(clock=self.clock, access_token=self.token, **emulator)
        self.emu.add_property(
            "deals",
            "tags",
            type="enumeration",
            field_type="checkbox",
            options=["vip", "renewal", "new"],
        )
        self.timer = VirtualTimer(self.clock)
        self.client = httpx.Client(transport=self.emu.transport())
        self.sent: list[tuple[datetime, str, int]] = []

    def logged(self) -> httpx.Client:
        """A client whose requests are logged with the (virtual) time they reached HubSpot."""
        inner = self.emu.transport()

        def handle(request: httpx.Request) -> httpx.Response:
            response = inner.handle_request(request)
            self.sent.append((self.clock.now(), request.url.path, response.status_code))
            return response

        self.client = httpx.Client(transport=httpx.MockTransport(handle))
        return self.client

    def connector(self, **kwargs: Any) -> HubSpotConnector:
        kwargs.setdefault("properties", PROPS)
        kwargs.setdefault("token", self.token)
        return HubSpotConnector(
            self.client, object_type="deals", timer=self.timer, clock=self.clock, **kwargs
        )

    def deal(self, **props: Any) -> str:
        base = {"dealname": "Deal", "dealstage": "qualifiedtobuy", "amount": "100"}
        return self.emu.add("deals", {**base, **props})

    def all_pages(self, conn: HubSpotConnector, since: datetime | None = None) -> Iterator[Any]:
        cursor = None
        for _ in range(100_000):
            page = conn.list_records(since=since, cursor=cursor)
            yield page
            cursor = page.next_cursor
            if cursor is None:
                return
        raise AssertionError("the listing never ended")


@pytest.fixture
def world() -> World:
    return World()


# -- reading --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 100, 101, 250])
def test_a_full_sweep_pages_by_100(world: World, n: int) -> None:
    ids = world.emu.bulk_add("deals", n, lambda i: {"dealname": f"D{i}", "amount": str(i)})
    conn = world.connector()
    pages = list(world.all_pages(conn))
    keys = [r.key for p in pages for r in p.records]
    assert sorted(keys) == sorted(ids)
    assert len(pages) == max(1, math.ceil(n / 100))
    lists = world.emu.request_count("list")
    assert lists == max(1, math.ceil(n / 100))


def test_values_come_typed(world: World) -> None:
    key = world.deal(
        amount="1250.50", closedate="2026-04-30T00:00:00.000Z", tags="vip;renewal", description=""
    )
    conn = world.connector()
    (record,) = conn.read_records([key])
    assert record.fields["amount"] == 1250.5
    assert record.fields["closedate"] == datetime(2026, 4, 30, tzinfo=UTC)
    assert record.fields["tags"] == ["vip", "renewal"]
    assert record.fields["description"] is None
    assert record.fields["dealstage"] == "qualifiedtobuy"
    assert record.modified_at == START


def test_describe_gives_types_and_options(world: World) -> None:
    fields = {f.name: f for f in world.connector().describe_fields()}
    assert fields["tags"] == FieldInfo(
        name="tags", type="multi_enumeration", options=("vip", "renewal", "new")
    )
    assert fields["amount"].type == "number"
    assert fields["closedate"].type == "datetime"
    assert "closedwon" in (fields["dealstage"].options or ())


def test_read_by_key_skips_missing_and_archived(world: World) -> None:
    a, b = world.deal(), world.deal()
    world.emu.archive("deals", b)
    found = world.connector().read_records([a, b, "999999"])
    assert [r.key for r in found] == [a]


def test_incremental_listing_finds_changes_and_archivals(world: World) -> None:
    old = [world.deal(dealname=f"old{i}") for i in range(3)]
    world.clock.advance(3600)
    since = world.clock.now()
    world.clock.advance(60)
    world.emu.edit("deals", old[0], dealname="edited")
    new = world.deal(dealname="new")
    world.emu.archive("deals", old[1])
    conn = world.connector(lookback=timedelta(seconds=30))
    records = [r for p in world.all_pages(conn, since) for r in p.records]
    live = {r.key: r for r in records if not r.deleted}
    assert set(live) == {old[0], new}
    assert live[old[0]].fields["dealname"] == "edited"
    assert [r.key for r in records if r.deleted] == [old[1]]


def test_ten_thousand_equal_timestamps_never_loop(world: World) -> None:
    n = 10_450
    ids = world.emu.bulk_add("deals", n, lambda i: {"dealname": f"D{i}"})  # one timestamp
    world.clock.advance(10)
    conn = world.connector()
    records = [r for p in world.all_pages(conn, START) for r in p.records]
    assert sorted(r.key for r in records) == sorted(ids)
    assert len(records) == n  # each exactly once
    searches = world.emu.request_count("search")
    assert searches == math.ceil(n / 200) + (1 if n % 200 == 0 else 0)
    assert world.emu.request_count(status=400) == 0


def test_search_lag_is_caught_by_the_lookback(world: World) -> None:
    emu_world = World(index_lag=20.0)
    since = emu_world.clock.now()
    key = emu_world.deal(dealname="fresh")
    conn = emu_world.connector(lookback=timedelta(seconds=60))
    first = [r.key for p in emu_world.all_pages(conn, since) for r in p.records]
    assert key not in first  # not indexed yet
    emu_world.clock.advance(30)
    later_since = emu_world.clock.now() - timedelta(seconds=10)  # the next cycle's watermark
    second = [r.key for p in emu_world.all_pages(conn, later_since) for r in p.records]
    assert key in second


def test_field_history_halves_the_page_and_gives_field_times(world: World) -> None:
    key = world.deal(dealname="a")
    world.clock.advance(120)
    world.emu.edit("deals", key, dealname="b")
    world.emu.bulk_add("deals", 60, lambda i: {"dealname": f"x{i}"})
    conn = world.connector(field_history=True)
    assert conn.capabilities.page_size == 50
    pages = list(world.all_pages(conn))
    assert len(pages) == 2
    record = next(r for p in pages for r in p.records if r.key == key)
    assert record.field_modified_at is not None
    assert record.field_modified_at["dealname"] == START + timedelta(seconds=120)


# -- writing ---------------------------------------------------------------------------------------


def test_writes_update_create_archive_with_per_record_results(world: World) -> None:
    a, b, c = world.deal(), world.deal(), world.deal()
    conn = world.connector()
    conn.describe_fields()
    changes = [
        Change(
            op=ChangeOp.UPDATE, key=a, fields={"dealstage": "closedwon", "tags": ["vip"]}, ref="u1"
        ),
        Change(op=ChangeOp.UPDATE, key=b, fields={"dealstage": "no-such-stage"}, ref="u2"),
        Change(op=ChangeOp.CREATE, fields={"dealname": "New", "amount": 10}, ref="c1"),
        Change(op=ChangeOp.CREATE, fields={"dealname": "Bad", "amount": "lots"}, ref="c2"),
        Change(op=ChangeOp.DELETE, key=c, ref="d1"),
    ]
    results = {r.ref: r for r in conn.write_records(changes)}
    assert results["u1"].ok
    assert not results["u2"].ok
    assert not results["u2"].retryable
    assert results["c1"].ok
    assert results["c1"].key is not None
    assert not results["c2"].ok
    assert results["d1"].ok
    assert world.emu.get("deals", a)["properties"]["dealstage"] == "closedwon"
    assert world.emu.get("deals", a)["properties"]["tags"] == "vip"
    assert world.emu.get("deals", results["c1"].key)["properties"]["amount"] == "10"
    assert world.emu.get("deals", c)["archived"] is True
    assert world.emu.get("deals", b)["properties"]["dealstage"] == "qualifiedtobuy"


def test_a_whole_batch_refused_is_split_until_the_bad_record_is_alone(world: World) -> None:
    keys = [world.deal() for _ in range(8)]
    conn = world.connector()
    changes = [
        Change(op=ChangeOp.UPDATE, key=k, fields={"dealname": f"n{i}"}, ref=k)
        for i, k in enumerate(keys)
    ]
    changes[5] = Change(
        op=ChangeOp.UPDATE, key=keys[5], fields={"no_such_property": "x"}, ref=keys[5]
    )
    results = conn.write_records(changes)
    assert [r.ok for r in results] == [True] * 5 + [False] + [True] * 2
    assert world.emu.get("deals", keys[7])["properties"]["dealname"] == "n7"


def test_a_lost_create_is_found_by_its_idempotency_property(world: World) -> None:
    world.emu.add_property("deals", "syncrecon_key", has_unique_value=True)
    conn = world.connector(idempotency_property="syncrecon_key")
    assert conn.capabilities.finds_created
    world.emu.lose_response_next(1, path_contains="batch/create")
    change = Change(
        op=ChangeOp.CREATE, fields={"dealname": "Once"}, ref="c", idempotency_key="idem-1"
    )
    with pytest.raises(TransientError, match="may have been applied"):
        conn.write_records([change])  # the answer was lost; a create is not sent again
    assert world.emu.request_count("batch/create") == 1
    found = conn.find_created(["idem-1", "idem-2"])
    assert list(found) == ["idem-1"]
    assert found["idem-1"].fields["dealname"] == "Once"
    assert len(world.emu.records("deals")) == 1


# -- limits, errors and auth -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_seeded_burst_never_exceeds_any_window(world: World, seed: int) -> None:
    rng = random.Random(seed)
    ids = world.emu.bulk_add("deals", 300, lambda i: {"dealname": f"D{i}"})
    world.logged()
    conn = world.connector()
    since = world.clock.now()
    for _ in range(260):
        roll = rng.random()
        if roll < 0.4:
            conn.read_records(rng.sample(ids, rng.randint(1, 100)))
        elif roll < 0.6:
            key = rng.choice(ids)
            conn.write_records(
                [
                    Change(
                        op=ChangeOp.UPDATE,
                        key=key,
                        fields={"dealname": f"x{rng.random()}"},
                        ref=key,
                    )
                ]
            )
        elif roll < 0.8:
            conn.list_records(since=since, cursor=None)  # a search page
        else:
            conn.list_records(since=None, cursor=None)  # a list page
        if rng.random() < 0.1:
            world.clock.advance(rng.uniform(0, 0.5))  # a little work between some calls
    assert world.emu.request_count(status=429) == 0
    general = [at for at, path, _ in world.sent if not path.endswith("/search")]
    search = [at for at, path, _ in world.sent if path.endswith("/search")]
    assert len(search) > 20
    for times, limit, seconds in ((general, 100, 10), (search, 5, 1)):
        for i, start in enumerate(times):
            assert sum(1 for t in times[i:] if t < start + timedelta(seconds=seconds)) <= limit
    assert world.timer.slept > 0


def test_429_423_477_and_5xx_are_retried_per_request(world: World) -> None:
    key = world.deal()
    conn = world.connector()
    world.emu.rate_limit_next(1, path_contains="batch/read")
    world.emu.fail_next(423, path_contains="batch/read")
    world.emu.fail_next(477, path_contains="batch/read", retry_after=3)
    world.emu.fail_next(502, path_contains="batch/read")
    (record,) = conn.read_records([key])
    assert record.key == key
    assert conn.api.requests["POST /crm/v3/objects/deals/batch/read"] == 5
    assert world.timer.slept >= 2 + 3


def test_the_daily_limit_is_not_retried(world: World) -> None:
    key = world.deal()
    conn = world.connector()
    world.emu.rate_limit_next(1, policy="DAILY", path_contains="batch/read")
    with pytest.raises(RateLimitedError) as caught:
        conn.read_records([key])
    assert caught.value.code == "DAILY"
    assert world.emu.request_count("batch/read") == 1


def test_a_bad_token_is_an_authentication_error_that_hides_it(world: World) -> None:
    conn = world.connector(token="pat-wrong-secret-value")
    with pytest.raises(AuthenticationError) as caught:
        conn.read_records(["1"])
    assert "pat-wrong-secret-value" not in f"{caught.value} {caught.value!r} {conn!r} {conn.api!r}"
    assert caught.value.status == 401


def test_oauth_refresh_with_rotation_against_the_emulator() -> None:
    world = World(rotate_refresh_tokens=True, access_token_ttl=600)
    saved: list[str] = []
    auth = OAuth2RefreshToken(
        "https://api.hubapi.com/oauth/v1/token",
        client_id=world.emu.client_id,
        client_secret=world.emu.client_secret,
        refresh_token=str(world.emu.refresh_token),
        on_token=lambda t: saved.append(t.refresh_token.reveal() if t.refresh_token else ""),
        clock=world.clock,
    )
    key = world.deal()
    conn = HubSpotConnector(
        world.client,
        object_type="deals",
        properties=PROPS,
        auth=auth,
        timer=world.timer,
        clock=world.clock,
    )
    conn.read_records([key])
    world.clock.advance(590)  # inside the minute before expiry
    conn.read_records([key])
    world.clock.advance(700)
    conn.read_records([key])
    assert len(saved) == 3
    assert len(set(saved)) == 3  # rotated each time, and each new one was used
    assert world.emu.request_count(status=401) == 0


# -- conversions and the async door ----------------------------------------------------------------


def round_trip(kind: str, value: Any) -> Any:
    return decode_value(kind, encode_value(kind, value))


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.tuples(st.just("number"), st.integers(min_value=-(10**15), max_value=10**15)),
        st.tuples(
            st.just("number"),
            st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
        ),
        st.tuples(st.just("bool"), st.booleans()),
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
        st.tuples(st.just("enumeration"), st.text(alphabet="abcxyz_-0123", min_size=1)),
        st.tuples(
            st.just("multi_enumeration"),
            st.lists(st.text(alphabet="abcxyz_-0123", min_size=1), min_size=1),
        ),
        st.tuples(st.just("string"), st.text(min_size=1)),
    )
)
def test_typed_values_round_trip(case: tuple[str, Any]) -> None:
    kind, value = case
    assert round_trip(kind, value) == value


def test_none_clears_and_empty_reads_as_none() -> None:
    assert encode_value("number", None) == ""
    assert decode_value("string", "") is None
    assert decode_value("number", "not a number") == "not a number"  # kept: flagged later


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_async_connector_does_the_same(world: World) -> None:
    ids = world.emu.bulk_add("deals", 130, lambda i: {"dealname": f"D{i}"})
    async with httpx.AsyncClient(transport=world.emu.transport()) as client:
        conn = AsyncHubSpotConnector(
            client,
            object_type="deals",
            properties=PROPS,
            token=world.token,
            timer=world.timer,
            clock=world.clock,
        )
        first = await conn.list_records(since=None, cursor=None)
        second = await conn.list_records(since=None, cursor=first.next_cursor)
        results = await conn.write_records(
            [Change(op=ChangeOp.UPDATE, key=ids[0], fields={"dealname": "async"}, ref="r")]
        )
    assert len(first.records) + len(second.records) == 130
    assert second.next_cursor is None
    assert results[0].ok
    await anyio.sleep(0)


def oauth_connector(world: World, saved: list[Any] | None = None) -> HubSpotConnector:
    auth = OAuth2RefreshToken(
        "https://api.hubapi.com/oauth/v1/token",
        client_id=world.emu.client_id,
        client_secret=world.emu.client_secret,
        refresh_token=str(world.emu.refresh_token),
        on_token=(saved.append if saved is not None else None),
        clock=world.clock,
    )
    return HubSpotConnector(
        world.client,
        object_type="deals",
        properties=PROPS,
        auth=auth,
        timer=world.timer,
        clock=world.clock,
    )


def test_a_token_endpoint_that_is_down_is_retried_and_the_request_then_sent() -> None:
    world = World()
    key = world.deal()
    conn = oauth_connector(world)
    world.emu.fail_next(503, path_contains="/oauth/v1/token")
    (record,) = conn.read_records([key])
    assert record.key == key
    assert world.emu.request_count("oauth/token") == 2
    world.clock.advance(3600)  # the access token expired: a new one is needed
    world.emu.lose_response_next(1, path_contains="/oauth/v1/token")  # its answer is lost
    conn.read_records([key])
    assert world.emu.request_count("oauth/token") == 4
    assert world.emu.request_count("batch/read") == 2  # each read sent once


def test_refused_credentials_fail_a_write_as_a_whole_with_one_token_request() -> None:
    world = World()
    keys = [world.deal() for _ in range(40)]
    conn = oauth_connector(world)
    world.emu.revoke_refresh_tokens()
    changes = [Change(op=ChangeOp.UPDATE, key=k, fields={"dealname": "x"}, ref=k) for k in keys]
    with pytest.raises(AuthenticationError, match="BAD_REFRESH_TOKEN"):
        conn.write_records(changes)
    assert world.emu.request_count("oauth/token") == 1
    assert world.emu.request_count("batch/update") == 0


def test_webhook_values_are_typed_in_a_process_that_never_listed(world: World) -> None:
    from syncrecon import FieldMap, SyncDefinition, merge, recency
    from syncrecon.testing import SimulatedSystem

    conn = world.connector()  # fresh: has read nothing yet
    other = SimulatedSystem("other", clock=world.clock)
    sync = SyncDefinition(
        name="s",
        left=conn,
        right=other,
        fields=[
            FieldMap(left="tags", right="tags", policy=merge()),
            FieldMap(left="amount", right="amount", policy=recency()),
        ],
    )
    source = conn.webhook_source(sync, "left", client_secrets=["secret"])
    body = json.dumps(
        [
            {
                "eventId": i,
                "subscriptionId": 1,
                "portalId": 1,
                "occurredAt": 1,
                "subscriptionType": "deal.propertyChange",
                "objectId": 1001,
                "propertyName": name,
                "propertyValue": value,
                "attemptNumber": 0,
            }
            for i, (name, value) in enumerate([("tags", "vip;renewal"), ("amount", "1200")])
        ]
    ).encode()
    events = source.parser.parse(body, {})
    assert [e.value for e in events] == [["vip", "renewal"], 1200]


def test_an_async_client_over_real_sockets_serves_call_after_call_from_the_sync_door() -> None:
    """A host's AsyncClient keeps pooled connections on the loop that opened them: every
    sync-door call (each cycle, each resolve) must come back to that same loop."""
    import asyncio

    from serving import serve
    from syncrecon._connector import Caller, RetrySettings, _connector_loop

    world = World()
    ids = world.emu.bulk_add("deals", 30, lambda i: {"dealname": f"D{i}"})
    client = httpx.AsyncClient(timeout=10)
    with serve(world.emu) as url:
        try:
            conn = AsyncHubSpotConnector(
                client,
                object_type="deals",
                properties=PROPS,
                token=world.token,
                base_url=url,
                timer=world.timer,
                clock=world.clock,
            )
            for _ in range(3):  # three "cycles", each with its own Caller
                with Caller(RetrySettings(sleep=lambda _: None)) as caller:
                    page = caller.call(conn.name, conn.list_records, since=None, cursor=None)
                assert sorted(r.key for r in page.records) == sorted(ids)
        finally:
            asyncio.run_coroutine_threadsafe(client.aclose(), _connector_loop()).result()


def test_the_archived_scan_runs_once_per_interval_and_misses_nothing(world: World) -> None:
    keys = [world.deal(dealname=f"d{i}") for i in range(5)]
    conn = world.connector(archived_every=timedelta(hours=1), lookback=timedelta(seconds=30))

    def incremental(since: datetime) -> list[Any]:
        return [r for p in world.all_pages(conn, since) for r in p.records]

    world.clock.advance(60)
    first = incremental(world.clock.now() - timedelta(seconds=30))
    scans = world.emu.calls["list"]
    assert scans == 1  # the first pass scans the archived records
    world.emu.archive("deals", keys[0])  # archived between two scans
    world.clock.advance(600)
    second = incremental(world.clock.now() - timedelta(seconds=60))
    assert world.emu.calls["list"] == scans  # not due: no archived listing this pass
    assert not any(r.deleted for r in second)
    world.clock.advance(3600)
    third = incremental(world.clock.now() - timedelta(seconds=60))
    assert world.emu.calls["list"] == scans + 1  # due: one page of archived records
    assert [r.key for r in third if r.deleted] == [keys[0]]  # reached back to the last scan
    assert not any(r.deleted for r in first)
