"""The queue's web pages over real HTTP: uvicorn on loopback in a thread, driven with httpx.

Escalations come from a real reconciler over two simulated systems (``test_queue.World``) on
a SQLite file; every form post goes through the same checks a browser's would meet (the
``Origin`` header, the form encoding), and the systems' write logs show what was written.
"""

from __future__ import annotations

import html
import re
import sys
import types
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import attrs
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from serving import serve
from syncrecon import ConfigurationError, Status
from syncrecon.queue import OperatorQueue
from syncrecon.storage import Discrepancy, Step, Storage
from syncrecon.testing import ManualClock
from syncrecon.web import QueueApp
from test_queue import World, amount_conflict

TIMEOUT = 10.0


@pytest.fixture
def world(sqlite_storage: Storage, clock: ManualClock) -> World:
    return World(sqlite_storage, clock)


@pytest.fixture
def client(world: World) -> Iterator[httpx.Client]:
    with serve(QueueApp(world.queue)) as url, httpx.Client(base_url=url, timeout=TIMEOUT) as c:
        c.headers["origin"] = url
        yield c


def hidden(page: str, name: str) -> str:
    match = re.search(rf'<input type="hidden" name="{name}" value="([^"]*)">', page)
    assert match is not None, f"no hidden {name} in the page"
    return html.unescape(match[1])


def post(client: httpx.Client, path: str, **form: str) -> httpx.Response:
    return client.post(path, data=form)


# --------------------------------------------------------------------------------------------
# Pages


def test_the_list_page_shows_the_queue_and_filters_it(world: World, client: httpx.Client) -> None:
    (lk, rk), item_id = amount_conflict(world)
    world.left.edit(lk, stage="won")
    world.cycle()
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    page = response.text
    assert f'href="/items/{item_id}"' in page
    assert "deal_value" in page
    assert (
        f'<span class="pair"><span class="sys">crm</span><span>{lk}</span>'
        f'<span class="sys">erp</span><span>{rk}</span></span>' in page
    )
    assert "2 active items, newest first." in page
    assert "<script" not in page

    only_stage = client.get("/", params={"category": "stage"}).text
    assert f'href="/items/{item_id}' not in only_stage
    assert "1 active item, newest first." in only_stage
    assert "No items match." in client.get("/", params={"status": "dismissed"}).text
    # A bad filter is said on the list page itself, with the form to fix it.
    bad = client.get("/", params={"status": "pending", "category": "stage"})
    assert bad.status_code == 400
    assert "There is no status &#x27;pending&#x27;" in bad.text
    assert '<option value="stage" selected>' in bad.text
    assert client.get("/", params={"limit": "many"}).status_code == 400
    head = client.head("/")
    assert head.status_code == 200
    assert head.content == b""


def test_the_item_page_shows_values_and_forms(world: World, client: httpx.Client) -> None:
    (_lk, _rk), item_id = amount_conflict(world)
    page = client.get(f"/items/{item_id}").text
    assert f"Item #{item_id}" in page
    assert "<code>150</code>" in page
    assert "<code>100</code>" in page
    assert "deal_value" in page
    for action in ("resolve", "dismiss", "assign"):
        assert f'action="/items/{item_id}/{action}"' in page
    assert hidden(page, "seen_left") == "150"
    assert client.get("/items/424242").status_code == 404
    assert client.get("/items/" + "9" * 40).status_code == 404
    assert post(client, "/items/424242/assign", to="x").status_code == 404
    assert client.get("/nowhere").status_code == 404
    flood = "&".join(f"p{i}=1" for i in range(60))
    assert client.get(f"/?{flood}").status_code == 400
    not_allowed = client.post(f"/items/{item_id}", data={})
    assert not_allowed.status_code == 405
    assert not_allowed.headers["allow"] == "GET, HEAD"
    assert client.get(f"/items/{item_id}/resolve").headers["allow"] == "POST"


# --------------------------------------------------------------------------------------------
# Forms


def test_resolve_by_form_writes_the_system_and_redirects(
    world: World, client: httpx.Client
) -> None:
    (lk, rk), item_id = amount_conflict(world)
    page = client.get(f"/items/{item_id}").text
    response = post(
        client,
        f"/items/{item_id}/resolve",
        take="left",
        by="ada",
        note="as signed",
        seen_left=hidden(page, "seen_left"),
        seen_right=hidden(page, "seen_right"),
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/items/{item_id}?done=resolved"
    assert world.right.get(rk).fields["Amount"] == 150
    assert [dict(e.fields) for e in world.right.write_log] == [{"Amount": 150}]
    item = world.storage.get_item(item_id)
    assert item.status is Status.RESOLVED
    assert item.assignee == "ada"
    after = client.get(response.headers["location"]).text
    assert "Resolved: the value is written" in after
    assert 'action="/items/' not in after  # a closed item has no forms
    assert world.base(lk)["amount"] == 150


def test_resolve_with_a_custom_json_value(world: World, client: httpx.Client) -> None:
    (lk, rk), item_id = amount_conflict(world)
    response = post(client, f"/items/{item_id}/resolve", take="value", value="135")
    assert response.headers["location"].endswith("done=resolved")
    assert world.left.get(lk).fields["amount"] == 135
    assert world.right.get(rk).fields["Amount"] == 135
    closed = post(client, f"/items/{item_id}/resolve", take="right")
    assert closed.status_code == 409
    assert "resolved already" in closed.text


def test_a_bad_custom_value_is_refused(world: World, client: httpx.Client) -> None:
    _keys, item_id = amount_conflict(world)
    bad = post(client, f"/items/{item_id}/resolve", take="value", value="a lot")
    assert bad.status_code == 400
    assert "The other value cannot be read: &#x27;a lot&#x27; is not a number" in bad.text
    assert post(client, f"/items/{item_id}/resolve").status_code == 400  # no choice
    assert post(client, f"/items/{item_id}/resolve", take="up").status_code == 400
    assert world.right.write_log == []


def test_a_page_older_than_the_items_values_resolves_nothing(
    world: World, client: httpx.Client
) -> None:
    (lk, _rk), item_id = amount_conflict(world)
    page = client.get(f"/items/{item_id}").text
    world.left.edit(lk, amount=160)
    world.cycle()  # the cycle records the new left value on the same item
    response = post(
        client,
        f"/items/{item_id}/resolve",
        take="left",
        seen_left=hidden(page, "seen_left"),
        seen_right=hidden(page, "seen_right"),
    )
    assert response.headers["location"] == f"/items/{item_id}?done=stale"
    assert world.right.write_log == []
    assert "changed after this page was loaded" in client.get(response.headers["location"]).text


def test_a_changed_record_sends_the_item_back_to_review(world: World, client: httpx.Client) -> None:
    (_lk, rk), item_id = amount_conflict(world)
    world.right.edit(rk, Amount=999)
    response = post(client, f"/items/{item_id}/resolve", take="left")
    assert response.headers["location"] == f"/items/{item_id}?done=changed"
    assert world.right.get(rk).fields["Amount"] == 999
    page = client.get(response.headers["location"]).text
    assert "changed since opened: erp is now 999" in page


def test_dismiss_and_assign_by_form(world: World, client: httpx.Client) -> None:
    _keys, item_id = amount_conflict(world)
    response = post(client, f"/items/{item_id}/assign", to="bea")
    assert response.headers["location"] == f"/items/{item_id}?done=assigned"
    item = world.storage.get_item(item_id)
    assert (item.assignee, item.status) == ("bea", Status.ESCALATED)
    assert 'value="bea"' in client.get(f"/items/{item_id}").text
    assert post(client, f"/items/{item_id}/dismiss", reason="").status_code == 400
    response = post(client, f"/items/{item_id}/dismiss", reason="duplicate test deal", by="bea")
    assert response.headers["location"] == f"/items/{item_id}?done=dismissed"
    item = world.storage.get_item(item_id)
    assert item.status is Status.DISMISSED
    assert item.note == "bea: dismissed: duplicate test deal"
    assert world.left.write_log == world.right.write_log == []
    assert post(client, f"/items/{item_id}/dismiss", reason="again").status_code == 409


def test_a_record_level_item_is_acknowledged_by_form(world: World, client: httpx.Client) -> None:
    world.left.create({"email": "dup@example.com"})
    world.left.create({"email": "Dup@example.com"})
    world.cycle()
    item = world.queue.list(category="possible_duplicate")[0]
    page = client.get(f"/items/{item.id}").text
    assert "Acknowledge and close" in page
    response = post(client, f"/items/{item.id}/resolve", by="cy")
    assert response.headers["location"] == f"/items/{item.id}?done=acknowledged"
    assert world.storage.get_item(item.id or 0).status is Status.RESOLVED


def test_resolving_without_the_sync_definition_says_why(world: World) -> None:
    _keys, item_id = amount_conflict(world)
    reader = OperatorQueue(world.storage, clock=world.clock)
    with serve(QueueApp(reader)) as url, httpx.Client(base_url=url) as c:
        response = c.post(
            f"/items/{item_id}/resolve", data={"take": "left"}, headers={"origin": url}
        )
        assert response.status_code == 400
        assert "needs that sync definition" in response.text
        assert c.get(f"/items/{item_id}").status_code == 200
    assert world.right.write_log == []


# --------------------------------------------------------------------------------------------
# Protection and escaping


def test_cross_origin_posts_are_refused(world: World, client: httpx.Client) -> None:
    _keys, item_id = amount_conflict(world)
    url = f"/items/{item_id}/resolve"
    refused = client.post(url, data={"take": "left"}, headers={"origin": "http://evil.example"})
    assert refused.status_code == 403
    assert "not sent from this site" in refused.text
    assert client.post(url, data={"take": "left"}, headers={"origin": "null"}).status_code == 403
    bare = httpx.post(str(client.base_url.join(url)), data={"take": "left"})
    assert bare.status_code == 403  # neither Origin nor Referer
    referred = httpx.post(
        str(client.base_url.join(url)),
        data={"take": "left"},
        headers={"referer": "http://evil.example/page"},
    )
    assert referred.status_code == 403
    assert world.right.write_log == []
    assert world.storage.get_item(item_id).status is Status.ESCALATED
    # The same site's Referer is enough when a browser sends no Origin.
    ok = httpx.post(
        str(client.base_url.join(url)),
        data={"take": "left"},
        headers={"referer": str(client.base_url.join(f"/items/{item_id}"))},
    )
    assert ok.status_code == 303


def test_trusted_origins_and_the_operator_hook(world: World) -> None:
    _keys, item_id = amount_conflict(world)
    app = QueueApp(
        world.queue,
        trusted_origins=["https://ops.example.com"],
        operator=lambda scope: "sso:dora",
    )
    with serve(app) as url, httpx.Client(base_url=url) as c:
        assert 'name="by"' not in c.get(f"/items/{item_id}").text
        response = c.post(
            f"/items/{item_id}/assign",
            data={"to": "eve", "by": "mallory"},
            headers={"origin": "https://ops.example.com"},
        )
        assert response.status_code == 303
        response = c.post(
            f"/items/{item_id}/resolve",
            data={"take": "left", "by": "mallory"},
            headers={"origin": "https://ops.example.com:443"},
        )
        assert response.status_code == 303
    item = world.storage.get_item(item_id)
    assert item.assignee == "sso:dora"
    assert item.note is not None
    assert item.note.startswith("sso:dora: took crm's value")


def test_only_url_encoded_forms_of_bounded_size(world: World) -> None:
    _keys, item_id = amount_conflict(world)
    with serve(QueueApp(world.queue, max_body_bytes=256)) as url, httpx.Client(base_url=url) as c:
        path = f"/items/{item_id}/assign"
        as_json = c.post(path, json={"to": "x"}, headers={"origin": url})
        assert as_json.status_code == 415
        big = c.post(path, data={"to": "x" * 1000}, headers={"origin": url})
        assert big.status_code == 413
    assert world.storage.get_item(item_id).assignee is None


def test_data_is_escaped_everywhere(world: World, client: httpx.Client) -> None:
    evil = "<script>alert(1)</script>"
    now = world.clock.now()
    item = Discrepancy(
        sync=f"s{evil}",
        field=f"f{evil}",
        status=Status.ESCALATED,
        detected_at=now,
        left_key=f"k{evil}",
        right_key='r"><img src=x onerror=alert(2)>',
        left_value=evil,
        right_value={"html": evil},
        has_base=True,
        base_value=evil,
        category=f"c{evil}",
        rule=evil,
        explanation=f"because {evil}",
        note=evil,
        assignee=evil,
    )
    (item_id,) = world.storage.commit(Step(at=now, new_items=[item]))
    world.storage.commit(Step(at=now, new_items=[attrs.evolve(item, field="x")]))  # history
    pages = [
        client.get("/").text,
        client.get(f"/items/{item_id}").text,
        client.get("/", params={"key": f"k{evil}", "category": evil}).text,
    ]
    for page in pages:
        assert "<script>" not in page
        assert "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[1]
    assert "k%3Cscript%3Ealert%281%29%3C%2Fscript%3E" in pages[1]  # the key's filter link


# --------------------------------------------------------------------------------------------
# The dashboard and mounting


def test_the_dashboard_page(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("syncrecon.dashboard")

    class Rendered:
        def __init__(self, storage: Storage, *, now: Any) -> None:
            self.storage = storage
            assert now == world.clock.now()

        def to_html(self) -> str:
            return "<!DOCTYPE html><title>dash</title><svg></svg>"

    fake.build_dashboard = Rendered  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "syncrecon.dashboard", fake)
    with serve(QueueApp(world.queue)) as url, httpx.Client(base_url=url) as c:
        response = c.get("/dashboard")
        assert response.status_code == 200
        assert response.text == "<!DOCTYPE html><title>dash</title><svg></svg>"
    with serve(QueueApp(world.queue, dashboard=False)) as url, httpx.Client(base_url=url) as c:
        assert c.get("/dashboard").status_code == 404
        assert 'href="/dashboard"' not in c.get("/").text
    # Without the module, the page is not found.
    monkeypatch.setitem(sys.modules, "syncrecon.dashboard", None)
    with serve(QueueApp(world.queue)) as url, httpx.Client(base_url=url) as c:
        assert c.get("/dashboard").status_code == 404


def test_mounted_under_a_prefix(world: World) -> None:
    _keys, item_id = amount_conflict(world)
    outer = Starlette(routes=[Mount("/ops/queue", app=QueueApp(world.queue))])
    with serve(outer) as url, httpx.Client(base_url=url) as c:
        listing = c.get("/ops/queue/").text
        assert f'href="/ops/queue/items/{item_id}"' in listing
        assert 'action="/ops/queue/"' in listing
        page = c.get(f"/ops/queue/items/{item_id}").text
        assert f'action="/ops/queue/items/{item_id}/resolve"' in page
        response = c.post(
            f"/ops/queue/items/{item_id}/assign", data={"to": "fin"}, headers={"origin": url}
        )
        assert response.status_code == 303
        assert response.headers["location"] == f"/ops/queue/items/{item_id}?done=assigned"
    assert world.storage.get_item(item_id).assignee == "fin"


# --------------------------------------------------------------------------------------------
# Allowed hosts (DNS rebinding)


def test_a_foreign_host_is_refused_before_routing(world: World) -> None:
    _keys, item_id = amount_conflict(world)
    with serve(QueueApp(world.queue)) as url, httpx.Client(base_url=url) as c:
        port = url.rsplit(":", 1)[1]
        evil = f"rebind.evil.example:{port}"
        # A rebinding page posts "same-origin": the Origin matches the Host it sends.
        response = c.post(
            f"/items/{item_id}/resolve",
            data={"take": "left"},
            headers={"host": evil, "origin": f"http://{evil}"},
        )
        assert response.status_code == 400
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert "host" in response.text.lower()
        assert "<" not in response.text
        for path in ("/", f"/items/{item_id}", "/dashboard", "/no/such/page"):
            refused = c.get(path, headers={"host": evil})
            assert refused.status_code == 400, path
            assert "amount" not in refused.text
        assert c.get("/", headers={"host": "rebind.evil.example"}).status_code == 400
        assert c.head("/", headers={"host": evil}).status_code == 400
        # Loopback names pass, on any port.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST.:{port}", "[::1]:1"):
            assert c.get("/", headers={"host": host}).status_code == 200, host
        for bad in ("", "localhost:x", "localhost@evil.example", "localhost, evil.example"):
            assert c.get("/", headers={"host": bad}).status_code == 400, bad
    assert world.right.write_log == []
    assert world.storage.get_item(item_id).status is Status.ESCALATED


def test_allowed_hosts_for_a_public_name(world: World) -> None:
    _keys, item_id = amount_conflict(world)
    app = QueueApp(world.queue, allowed_hosts=["ops.example.com", "Admin.Example.com:8443"])
    with serve(app) as url, httpx.Client(base_url=url) as c:
        assert c.get("/").status_code == 400  # loopback is no longer in the list
        assert c.get("/", headers={"host": "ops.example.com"}).status_code == 200
        assert c.get("/", headers={"host": "ops.example.com:8080"}).status_code == 200
        assert c.get("/", headers={"host": "admin.example.com:8443"}).status_code == 200
        assert c.get("/", headers={"host": "admin.example.com"}).status_code == 400
        assert c.get("/", headers={"host": "evil.ops.example.com"}).status_code == 400
        response = c.post(
            f"/items/{item_id}/assign",
            data={"to": "ada"},
            headers={"host": "ops.example.com", "origin": "https://ops.example.com"},
        )
        assert response.status_code == 303
    assert world.storage.get_item(item_id).assignee == "ada"
    with serve(QueueApp(world.queue, allowed_hosts=["*"])) as url, httpx.Client(base_url=url) as c:
        assert c.get("/", headers={"host": "anything.example"}).status_code == 200


@pytest.mark.parametrize(
    "hosts", ["localhost", ["https://ops.example.com"], ["ops.example.com:http"], [""]]
)
def test_allowed_hosts_are_checked_when_the_app_is_made(world: World, hosts: Any) -> None:
    with pytest.raises(ConfigurationError):
        QueueApp(world.queue, allowed_hosts=hosts)


def test_values_read_as_a_person_reads_them_and_forms_keep_the_exact_form(
    world: World, client: httpx.Client
) -> None:
    from datetime import date

    from syncrecon.storage import Discrepancy, Status, Step

    (item_id,) = world.storage.commit(
        Step(
            at=world.clock.now(),
            new_items=[
                Discrepancy(
                    sync="deals", field="amount", status=Status.ESCALATED,
                    detected_at=world.clock.now(), left_key="h9", right_key="s9",
                    left_value=date(2026, 8, 22), right_value=date(2026, 9, 1),
                    base_value=None, has_base=True,
                )
            ],
        )
    )  # fmt: skip
    page = client.get(f"/items/{item_id}").text
    assert "<code>2026-08-22</code>" in page
    assert "<code>2026-09-01</code>" in page
    assert "<code>(blank)</code>" in page  # the base
    shown = re.sub(r'<input type="hidden"[^>]*>', "", page)
    assert "$date" not in shown  # only the hidden inputs keep the tagged form
    assert "2026-08-22" in hidden(page, "seen_left")  # the exact form, for the stale check
    listing = client.get("/").text
    assert "2026-08-22" in listing


# --------------------------------------------------------------------------------------------
# An operator's way through the pages


def test_forms_carry_the_lists_filters_back(world: World, client: httpx.Client) -> None:
    _keys, item_id = amount_conflict(world)
    page = client.get(f"/items/{item_id}", params={"category": "deal_value", "limit": "25"}).text
    assert hidden(page, "return") == "category=deal_value&limit=25"
    assert 'href="/?category=deal_value&amp;limit=25"' in page  # back to the list
    response = post(client, f"/items/{item_id}/assign", to="bea", **{"return": "category=x"})
    assert response.headers["location"] == f"/items/{item_id}?done=assigned&category=x"
    # Whatever comes back is read as filters and written anew: nothing else gets through.
    sneaky = post(client, f"/items/{item_id}/assign", to="bea", **{"return": "x=\r\nSet-Cookie"})
    assert sneaky.headers["location"] == f"/items/{item_id}?done=assigned"


def test_a_schema_drift_item_is_lifted_not_dismissed(world: World, client: httpx.Client) -> None:
    now = world.clock.now()
    (drift_id,) = world.storage.commit(
        Step(
            at=now,
            new_items=[
                Discrepancy(
                    sync="deals",
                    field="amount",
                    status=Status.ESCALATED,
                    detected_at=now,
                    category="schema_drift",
                )
            ],
        )
    )
    page = client.get(f"/items/{drift_id}").text
    assert "Lift the quarantine" in page
    assert 'name="confirm"' in page
    assert 'action="/items/{drift_id}/dismiss"' not in page
    refused = post(client, f"/items/{drift_id}/dismiss", reason="noise", by="ada")
    assert refused.status_code == 400
    assert "closed by lifting its quarantine" in refused.text
    assert "<h1>Item #" in refused.text  # the item's page, not a bare error
    no_name = post(client, f"/items/{drift_id}/resolve", confirm="yes")
    assert no_name.status_code == 400
    assert "Type your name" in no_name.text
    unconfirmed = post(client, f"/items/{drift_id}/resolve", by="ada", note="fixed the map")
    assert unconfirmed.status_code == 400
    assert "Tick the box" in unconfirmed.text
    assert 'value="fixed the map"' in unconfirmed.text  # what was typed is kept
    assert world.storage.get_item(drift_id).status is Status.ESCALATED


def test_the_dashboard_links_back_to_the_queue(world: World) -> None:
    keys = world.pair(1)
    world.cycle()
    for hour in range(5):  # five hours of cycles in a seven-day window
        world.left.edit(keys[0], amount=200 + hour)
        world.clock.advance(timedelta(hours=1))
        world.cycle()
    (waiting,) = world.queue.list()
    world.clock.advance(timedelta(minutes=1))  # the window ends before now: the last cycle in
    outer = Starlette(routes=[Mount("/ops/queue", app=QueueApp(world.queue))])
    with serve(outer) as url, httpx.Client(base_url=url) as c:
        page = c.get("/ops/queue/dashboard").text
    assert '<a href="/ops/queue/">&larr; Operator queue</a>' in page
    assert f'<a href="/ops/queue/items/{waiting.id}">#{waiting.id}</a>' in page
    assert 'href="/ops/queue/?status=escalated"' in page
    assert "1 waits for an operator now (of any age)" in page
    assert "<script" not in page
    # The cycles fill the chart's time axis: the first bar at its left, the last at its right.
    cycles = re.findall(r"<svg\b.*?</svg>", page, re.S)[1]
    xs = [float(x) for x in re.findall(r'<rect class="bar" x="([\d.]+)"', cycles)]
    assert len(xs) == 6 + 1  # six cycles, and the legend's bar
    bars = xs[:-1]
    assert max(bars) - min(bars) > 0.8 * (596 - 44)


def test_the_dashboard_as_a_file_links_nowhere(world: World) -> None:
    from syncrecon.dashboard import build_dashboard

    world.pair(1)
    world.cycle()
    page = build_dashboard(world.storage, now=world.clock.now()).to_html()
    assert "<a " not in page
    assert "Operator queue" not in page


def test_bulk_forms_are_checked_like_the_others(world: World, client: httpx.Client) -> None:
    (_lk, rk), item_id = amount_conflict(world)
    evil = client.post(
        "/bulk",
        data={"action": "left", "id": str(item_id), "step": "confirm"},
        headers={"origin": "http://evil.example"},
    )
    assert evil.status_code == 403
    preview = post(client, "/bulk", action="left", id=str(item_id), scope="checked")
    assert preview.status_code == 200
    assert "Writes 150 to Amount in erp." in preview.text
    assert world.right.write_log == []  # a preview writes nothing
    assert hidden(preview.text, "step") == "confirm"
    bad = post(client, "/bulk", action="left", id="1,<script>", scope="checked")
    assert bad.status_code == 400
    assert "<h1>Operator queue</h1>" in bad.text
    assert "<script>" not in bad.text
    nothing = post(client, "/bulk", action="left", scope="checked")
    assert "Check the items to act on" in nothing.text
    done = post(client, "/bulk", action="left", id=str(item_id), step="confirm", by="ada")
    assert done.status_code == 200
    assert "1 resolved." in done.text
    assert world.right.get(rk).fields["Amount"] == 150


def test_a_custom_value_is_typed_as_a_person_writes_it(world: World, client: httpx.Client) -> None:
    (lk, rk), item_id = amount_conflict(world)
    page = client.get(f"/items/{item_id}").text
    assert 'placeholder="150"' in page  # the field's value as it would be typed
    response = post(client, f"/items/{item_id}/resolve", take="value", value="1,250")
    assert response.status_code == 303
    assert world.storage.get_item(item_id).resolution == 1250
    assert world.left.get(lk).fields["amount"] == 1250
    assert world.right.get(rk).fields["Amount"] == 1250


def test_the_item_page_marks_the_side_that_moved_from_the_last_agreed_value(
    world: World, client: httpx.Client
) -> None:
    _keys, item_id = amount_conflict(world)  # left edited to 150, right still 100, base 100
    page = client.get(f"/items/{item_id}").text
    left_cell = page.split('<td data-label="crm">')[1].split("</td>")[0]
    right_cell = page.split('<td data-label="erp">')[1].split("</td>")[0]
    assert "changed since last agreed" in left_cell
    assert "(as last agreed)" in right_cell
    shown = str(world.queue.show(item_id))
    assert "150  (changed since last agreed)" in shown
    assert "100  (as last agreed)" in shown


def test_the_why_reads_like_a_person(world: World, client: httpx.Client) -> None:
    """The explanation shows values as the page's tables do and names the systems."""
    from datetime import UTC, date, datetime

    from syncrecon import FieldState, decide, escalate

    at = datetime(2026, 11, 29, 19, 0, 41, 90000, tzinfo=UTC)
    state = FieldState(
        field="closedate",
        left=date(2026, 10, 29),
        right=date(2026, 10, 15),
        base=date(2026, 10, 15),
        left_modified_at=at + timedelta(hours=4),
        right_modified_at=at,
        left_per_field=True,
    )
    dates = Discrepancy(
        sync="deals", field="closedate", status=Status.ESCALATED, detected_at=at,
        left_key="cr-1", right_key="er-1", left_value=state.left, right_value=state.right,
        base_value=state.base, has_base=True, rule="escalate", category="contract_dates",
        explanation=decide(escalate("contract_dates"), state).explain(),
    )  # fmt: skip
    (item_id,) = world.storage.commit(Step(at=world.clock.now(), new_items=[dates]))
    page = client.get(f"/items/{item_id}").text
    why = page[page.index("<h2>Why</h2>") :]
    assert "datetime" not in why
    assert "left=" not in why
    assert "field &#x27;closedate&#x27;: crm 2026-10-29, erp 2026-10-15, last agreed" in why
    assert "last changed: crm 2026-11-29 23:00:41.09 UTC" in why


def test_lifting_a_quarantine_by_form_checks_the_schema_again(
    world: World, client: httpx.Client
) -> None:
    """The web form lifts through the same check: a field whose new type the mapping does not
    fit keeps its quarantine, and the page says why."""
    from syncrecon import FieldInfo

    world.pair(1)
    world.cycle()
    world.left.set_fields([FieldInfo(name="amount", type="number")])
    world.right.set_fields([FieldInfo(name="Amount", type="boolean")])  # was a number
    now = world.clock.now()
    (drift_id,) = world.storage.commit(
        Step(
            at=now,
            new_items=[
                Discrepancy(
                    sync="deals",
                    field="amount",
                    status=Status.ESCALATED,
                    detected_at=now,
                    rule="schema",
                    category="schema_drift",
                    explanation="right field 'Amount' changed type from 'number' to 'boolean'",
                )
            ],
        )
    )
    refused = post(client, f"/items/{drift_id}/resolve", by="ada", confirm="yes")
    assert refused.status_code == 400
    assert "<h1>Item #" in refused.text
    assert "still does not match its mapping" in refused.text
    assert "described type &#x27;boolean&#x27;" in refused.text
    item = world.storage.get_item(drift_id)
    assert (item.status, item.note) == (Status.ESCALATED, None)
    assert world.storage.get_schemas("deals") == []  # nothing stored
    assert "erp field &#x27;Amount&#x27; changed type" in refused.text  # the why, named
