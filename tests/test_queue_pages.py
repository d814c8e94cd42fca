"""The operator queue's pages: ``page`` (total, offset, order, search, assignees), ``count``,
``facets``, ``list`` with the same filters, the systems' names and the records' pages.

Items come from a real reconciler over two simulated systems (``test_queue.World``), on every
storage backend.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from syncrecon import Side, Status
from syncrecon.connectors.hubspot import AsyncHubSpotConnector, HubSpotConnector
from syncrecon.connectors.salesforce import SalesforceConnector
from syncrecon.queue import Facets, ItemPage, OperatorQueue, QueueError, QueueFilter
from syncrecon.storage import Discrepancy, Step, Storage
from syncrecon.testing import ManualClock
from test_queue import World, amount_conflict


@pytest.fixture
def world(storage: Storage, clock: ManualClock) -> World:
    return World(storage, clock)


@pytest.fixture
def crowded(world: World) -> World:
    """Twelve records, each with an amount conflict an hour apart; two also a stage one."""
    keys = [world.pair(i, amount=100 + i) for i in range(12)]
    world.cycle()
    for i, (lk, _rk) in enumerate(keys):
        world.clock.advance(timedelta(hours=1))
        edits: dict[str, Any] = {"amount": 1000 + i}
        if i in (3, 7):
            edits["stage"] = "won"
        world.left.edit(lk, **edits)
        world.cycle()
    return world


def test_a_page_says_how_many_match_and_where_it_is(crowded: World) -> None:
    q = crowded.queue
    page = q.page(limit=5)
    assert isinstance(page, ItemPage)
    assert page.total == 14
    assert (page.offset, page.limit, len(page.items)) == (0, 5, 5)
    assert page.has_next
    assert not page.has_previous
    assert (page.next_offset, page.previous_offset) == (5, None)
    assert str(page) == "items 1-5 of 14"
    newest = [i.id for i in q.list(limit=100)]
    assert [i.id for i in page.items] == newest[:5]
    last = q.page(limit=5, offset=10)
    assert [i.id for i in last.items] == newest[10:]
    assert (last.has_next, last.has_previous, last.previous_offset) == (False, True, 5)
    beyond = q.page(limit=5, offset=20)
    assert (beyond.items, beyond.total, beyond.has_next) == ((), 14, False)
    data = page.to_dict()
    assert data["total"] == 14
    assert [i["id"] for i in data["items"]] == newest[:5]
    assert q.page(sync="nope").total == 0
    assert str(q.page(sync="nope")) == "no items"


def test_oldest_first(crowded: World) -> None:
    q = crowded.queue
    newest = [i.id for i in q.list(limit=100)]
    oldest = q.page(order="oldest", limit=4)
    assert [i.id for i in oldest.items] == newest[::-1][:4]
    assert [i.id for i in q.list(order="oldest", limit=100)] == newest[::-1]
    assert [i.id for i in q.list(order="oldest", limit=2, offset=2)] == newest[::-1][2:4]


def test_count_matches_the_page_total_for_every_filter(crowded: World) -> None:
    q = crowded.queue
    (first, *_) = q.list(field="amount", order="oldest")
    assert first.id is not None
    q.assign(first.id, "ada")
    for filters in (
        {},
        {"field": "stage"},
        {"category": "deal_value"},
        {"assignee": "ada"},
        {"assignee": ""},
        {"unassigned": True},
        {"search": "1003"},
        {"search": "WON"},
        {"key": first.left_key},
        {"older_than": timedelta(hours=6)},
        {"status": None},
        {"status": "resolved"},
    ):
        page = q.page(limit=100, **filters)
        assert q.count(**filters) == page.total == len(page.items), filters
    assert q.count() == 14
    assert q.count(field="stage") == 2
    assert q.count(assignee="ada") == 1
    assert q.count(unassigned=True) == q.count(assignee="") == 13
    now = crowded.clock.now()
    old = [i for i in q.list(limit=100) if now - i.detected_at >= timedelta(hours=6)]
    assert 0 < q.count(older_than=timedelta(hours=6)) == len(old) < 14
    assert q.count(older_than=timedelta(days=1e8)) == 0  # past the calendar
    assert q.page(older_than=timedelta(days=1e8)).total == 0


def test_search_is_a_partial_match_of_what_a_person_reads(crowded: World) -> None:
    q = crowded.queue
    (hit,) = q.page(search="1007").items
    assert (hit.field, hit.left_value) == ("amount", 1007)
    assert {i.field for i in q.page(search='"won"').items} == {"stage"}
    assert q.count(search="deal_VALUE") == 12  # the category
    assert q.count(search="u3@") == 0  # the natural key is no part of an item
    assert q.count(search="  ") == 14  # blank: every item
    assert q.page(search=hit.left_key).items[0].left_key == hit.left_key


def test_page_refuses_what_cannot_be_paged(world: World) -> None:
    q = world.queue
    with pytest.raises(QueueError, match="limit"):
        q.page(limit=0)
    with pytest.raises(QueueError, match="offset"):
        q.page(offset=-1)
    with pytest.raises(QueueError, match="order"):
        q.page(order="sideways")  # type: ignore[arg-type]
    with pytest.raises(QueueError, match="unknown status"):
        q.count(status="pending")
    with pytest.raises(QueueError, match="unknown status"):
        QueueFilter(status=["open", "later"])


def test_a_filter_normalizes_what_it_is_given() -> None:
    f = QueueFilter(status="escalated", search="  ")
    assert f.status == (Status.ESCALATED,)
    assert f.search is None
    assert QueueFilter().status == (Status.ESCALATED, Status.OPEN)
    assert QueueFilter(status=None).status is None
    assert hash(QueueFilter(sync="deals")) == hash(QueueFilter(sync="deals"))


def test_facets_offer_the_values_of_the_active_items(crowded: World) -> None:
    q = crowded.queue
    (first, *_) = q.list(field="stage")
    assert first.id is not None
    q.assign(first.id, "bea")
    facets = q.facets()
    assert facets == Facets(
        syncs=("deals",),
        categories=("deal_value", "stage"),
        fields=("amount", "stage"),
        assignees=("bea",),
    )
    assert facets.to_dict()["fields"] == ["amount", "stage"]
    assert q.facets(sync="other") == Facets()
    q.dismiss(first.id, "fine")
    assert q.facets().assignees == ()


def test_systems_and_record_pages(world: World) -> None:
    q = world.queue
    assert q.systems("deals") == {Side.LEFT: "crm", Side.RIGHT: "erp"}
    assert q.systems("unknown") == {Side.LEFT: "left", Side.RIGHT: "right"}
    _keys, item_id = amount_conflict(world)
    item = world.storage.get_item(item_id)
    # Simulated systems offer no record pages.
    assert q.record_url(item, Side.LEFT) is None
    world.left.record_url = lambda key: f"https://crm.example/deals/{key}"  # type: ignore[attr-defined]
    assert q.record_url(item, "left") == f"https://crm.example/deals/{item.left_key}"
    view = q.show(item_id)
    assert view.systems == {Side.LEFT: "crm", Side.RIGHT: "erp"}
    assert view.urls == {Side.LEFT: f"https://crm.example/deals/{item.left_key}"}
    assert f"open in crm: https://crm.example/deals/{item.left_key}" in str(view)
    assert view.to_dict()["urls"] == {"left": f"https://crm.example/deals/{item.left_key}"}

    def broken(key: str) -> str:
        raise RuntimeError("no")

    world.right.record_url = broken  # type: ignore[attr-defined]
    assert q.record_url(item, Side.RIGHT) is None  # a failing connector method links nothing

    async def later(key: str) -> str:
        return "x"

    world.right.record_url = later  # type: ignore[attr-defined]
    assert q.record_url(item, Side.RIGHT) is None  # record pages are plain methods
    reader = OperatorQueue(world.storage, clock=world.clock)
    assert reader.record_url(item, Side.LEFT) is None  # no sync definition
    record_level = Discrepancy(
        sync="deals", field="*", status=Status.ESCALATED, detected_at=world.clock.now(),
        left_key="cr-1",
    )  # fmt: skip
    assert q.record_url(record_level, Side.RIGHT) is None  # no record on that side


def _client() -> httpx.Client:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no request expected: {request.url}")

    return httpx.Client(transport=httpx.MockTransport(refuse))


def test_hubspot_record_pages_need_the_portal_id() -> None:
    client = _client()
    deals = HubSpotConnector(client, object_type="deals", properties=["amount"], token="t")
    assert deals.record_url("123") is None
    deals = HubSpotConnector(
        client, object_type="deals", properties=["amount"], token="t", portal_id=4242
    )
    assert deals.record_url("123") == "https://app.hubspot.com/contacts/4242/record/0-3/123"
    contacts = HubSpotConnector(
        client, object_type="contacts", properties=["email"], token="t", portal_id="4242"
    )
    assert contacts.record_url("9") == "https://app.hubspot.com/contacts/4242/record/0-1/9"
    custom = HubSpotConnector(
        client, object_type="2-12345", properties=["x"], token="t", portal_id="4242"
    )
    assert custom.record_url("a/b") == "https://app.hubspot.com/contacts/4242/record/2-12345/a%2Fb"
    named = HubSpotConnector(
        client, object_type="p_cars", properties=["x"], token="t", portal_id="4242"
    )
    assert named.record_url("1") is None  # a custom object's name: its type id is unknown
    with pytest.raises(ValueError, match="portal_id"):
        HubSpotConnector(client, object_type="deals", properties=["a"], token="t", portal_id="x")
    async_deals = AsyncHubSpotConnector(
        httpx.AsyncClient(), object_type="deals", properties=["amount"], token="t", portal_id=1
    )
    assert async_deals.record_url("5") == "https://app.hubspot.com/contacts/1/record/0-3/5"


def test_salesforce_record_pages_need_the_instance_url() -> None:
    client = _client()
    opps = SalesforceConnector(
        client,
        sobject="Opportunity",
        fields=["Amount"],
        access_token="t",
        instance_url="https://acme.my.salesforce.com/",
    )
    assert opps.record_url("006A000000abcDE") == (
        "https://acme.my.salesforce.com/lightning/r/Opportunity/006A000000abcDE/view"
    )

    class Auth(httpx.Auth):
        token: Any = None

    auth = Auth()
    pending = SalesforceConnector(client, sobject="Account", fields=["Name"], auth=auth)
    assert pending.record_url("001") is None  # the token answer names the org's URL
    from syncrecon.http import TokenSet

    auth.token = TokenSet(access_token="x", extra={"instance_url": "https://na1.salesforce.com"})
    assert pending.record_url("001") == "https://na1.salesforce.com/lightning/r/Account/001/view"


@pytest.mark.anyio
async def test_the_async_pages(crowded: World) -> None:
    q = crowded.queue
    page = await q.apage(limit=3, order="oldest")
    assert [i.id for i in page.items] == [i.id for i in q.page(limit=3, order="oldest").items]
    assert await q.acount(field="stage") == 2
    assert await q.afacets() == q.facets()
    assert [i.id for i in await q.alist(search="1005")] == [i.id for i in q.list(search="1005")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_list_keeps_its_old_arguments(world: World) -> None:
    _keys, item_id = amount_conflict(world)
    world.storage.commit(Step(at=world.clock.now()))
    assert [i.id for i in world.queue.list(status=Status.ESCALATED, limit=1)] == [item_id]
    with pytest.raises(QueueError, match="limit"):
        world.queue.list(limit=0)
