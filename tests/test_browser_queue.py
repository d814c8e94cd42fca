"""The operator queue's pages in a real headless Chromium: an operator's clicks, end to end.

The app (:class:`syncrecon.web.QueueApp`) is served by uvicorn on loopback over a SQLite file
that a real reconciler filled from two simulated systems (``test_queue.World``: ``crm`` on the
left, ``erp`` on the right). Chromium follows links, fills and sends the forms; each test then
checks storage and the systems' write logs, that the browser reported no console error, page
error or Content-Security-Policy violation, and takes screenshots at 1,400 and 400 px (in
``.artifacts/screenshots/``). At 400 px no table may overflow the viewport and no text may be
smaller than 12 px.

Without Chromium (or Playwright) every test here skips, saying so; CI installs Chromium.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from serving import LAYOUT_PROBLEMS, Watch, launch_chromium, screenshot, serve
from syncrecon import Status
from syncrecon.queue import OperatorQueue
from syncrecon.storage import Discrepancy, Step, Storage
from syncrecon.testing import ManualClock
from syncrecon.web import QueueApp
from test_queue import World

WIDE, NARROW = 1400, 400


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
def world(sqlite_storage: Storage, clock: ManualClock) -> World:
    return busy_queue(World(sqlite_storage, clock))


@pytest.fixture
def url(world: World) -> Iterator[str]:
    with serve(QueueApp(world.queue)) as base:
        yield base


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": WIDE, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    tab.watch = Watch(tab)
    yield tab
    context.close()


def busy_queue(world: World) -> World:
    """A queue an operator might face: amounts, stages, a one-way region, a duplicate, drift."""
    keys = {i: world.pair(i, amount=100 * i) for i in range(1, 10)}
    world.cycle()
    for i in range(1, 7):  # six amount conflicts, one cycle apart
        world.left.edit(keys[i][0], amount=100 * i + 50)
        world.clock.advance(timedelta(minutes=7))
        world.cycle()
    for i in (7, 8):  # two stage conflicts: both sides changed
        world.left.edit(keys[i][0], stage="won")
        world.right.edit(keys[i][1], Stage="Closed Lost")
    world.right.edit(keys[9][1], Region="apac")  # region flows crm -> erp only
    world.left.create({"email": "dup@example.com", "amount": 1, "stage": "lead"})
    world.left.create({"email": "Dup@example.com", "amount": 1, "stage": "lead"})
    world.clock.advance(timedelta(hours=1))
    world.cycle()
    world.clear_logs()
    return world


def open_items(world: World, **filters: Any) -> list[Discrepancy]:
    return world.queue.list(**filters)


def quarantine(world: World, field: str) -> int:
    """A schema-drift item on ``field``, as the reconciler opens one: writes to it stop."""
    now = world.clock.now()
    (item_id,) = world.storage.commit(
        Step(
            at=now,
            new_items=[
                Discrepancy(
                    sync=world.sync.name,
                    field=field,
                    status=Status.ESCALATED,
                    detected_at=now,
                    rule="schema",
                    category="schema_drift",
                    explanation=f"erp: the field of {field!r} changed type (number -> text).",
                )
            ],
        )
    )
    return item_id


def check_layout(page: Any, name: str) -> None:
    """Screenshots at both widths; at 400 px nothing overflows and no text is under 12 px."""
    page.set_viewport_size({"width": WIDE, "height": 900})
    screenshot(page, name)
    page.set_viewport_size({"width": NARROW, "height": 800})
    assert page.evaluate(LAYOUT_PROBLEMS, 12) == []
    screenshot(page, name)
    page.set_viewport_size({"width": WIDE, "height": 900})


def summary(page: Any) -> str:
    """The list's count line, without its link to the bulk form."""
    return str(page.locator("p.summary").inner_text()).removesuffix(" Act on several items")


def query_of(page: Any) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)


# --------------------------------------------------------------------------------------------


def test_the_list_names_the_systems_filters_and_pages(world: World, url: str, page: Any) -> None:
    page.goto(url + "/")
    rows = page.locator("table.items tbody tr")
    assert rows.count() == len(open_items(world)) == 11
    assert summary(page) == "11 active items, newest first."
    first = rows.first.inner_text()
    assert "crm" in first
    assert "erp" in first
    assert "left" not in page.locator("table.items").inner_text()
    check_layout(page, "queue-list")

    # Filter by category with the form, as an operator does: the known ones are offered.
    categories = page.locator("select[name=category] option").all_inner_texts()
    assert categories == ["any", "deal_value", "possible_duplicate", "region", "stage"]
    page.select_option("select[name=category]", "deal_value")
    page.click("button:text('Filter')")
    assert query_of(page)["category"] == ["deal_value"]
    assert rows.count() == 6
    # Page through it, two at a time: the filter rides along, the total is said.
    page.goto(url + "/?category=deal_value&limit=2")
    assert summary(page) == "1 to 2 of 6 active items, newest first."
    page.click("text=Next page")
    assert query_of(page) == {"category": ["deal_value"], "limit": ["2"], "offset": ["2"]}
    assert summary(page) == "3 to 4 of 6 active items, newest first."
    assert "Page 2 of 3" in page.locator("nav.pages").inner_text()
    page.click("text=Previous page")
    assert "offset" not in query_of(page)
    # Oldest first, and a partial search.
    page.select_option("select[name=order]", "oldest")
    page.click("button:text('Filter')")
    ids = [int(t.strip("#")) for t in page.locator("table.items td.id a").all_inner_texts()]
    assert ids == sorted(ids)
    page.goto(url + "/")
    page.fill("input[name=search]", "er-7")
    page.click("button:text('Filter')")
    assert page.locator("table.items tbody tr").count() == 1
    assert "er-7" in page.locator("table.items").inner_text()
    page.watch.assert_clean()


def test_resolve_then_next_item_keeps_the_filters(world: World, url: str, page: Any) -> None:
    amounts = open_items(world, category="deal_value")
    first, second = amounts[0], amounts[1]
    page.goto(url + "/?category=deal_value")
    page.click(f"a:text-is('#{first.id}')")
    assert query_of(page) == {"category": ["deal_value"]}
    assert page.locator("h1").inner_text() == f"Item #{first.id}"
    values = page.locator("table.values").inner_text()
    assert "crm" in values
    assert "erp" in values
    check_layout(page, "queue-item")

    page.check("input[name=take][value=left]")
    page.fill("#resolve input[name=by]", "ada")
    page.click("#resolve button")
    assert page.locator("p.ok").inner_text().startswith("Resolved")
    assert query_of(page)["category"] == ["deal_value"]
    item = world.storage.get_item(first.id or 0)
    assert (item.status, item.assignee) == (Status.RESOLVED, "ada")
    assert [dict(e.fields) for e in world.right.write_log] == [{"Amount": item.resolution}]

    page.click("text=Next item")
    assert page.locator("h1").inner_text() == f"Item #{second.id}"
    assert query_of(page) == {"category": ["deal_value"]}
    page.click("text=Back to the list")
    assert query_of(page) == {"category": ["deal_value"]}
    assert page.locator("table.items tbody tr").count() == 5
    page.watch.assert_clean()


def test_dismiss_and_assign(world: World, url: str, page: Any) -> None:
    target = open_items(world, category="stage")[0]
    page.goto(f"{url}/items/{target.id}")
    page.fill("#assign input[name=to]", "bea")
    page.click("#assign button")
    assert page.locator("p.ok").inner_text() == "Assignment saved."
    assert world.storage.get_item(target.id or 0).assignee == "bea"
    assert page.locator("#assign input[name=to]").input_value() == "bea"

    page.fill("#dismiss input[name=reason]", "test deal, not real")
    page.fill("#dismiss input[name=by]", "bea")
    page.click("#dismiss button")
    assert page.locator("p.ok").inner_text().startswith("Dismissed")
    item = world.storage.get_item(target.id or 0)
    assert item.status is Status.DISMISSED
    assert item.note == "bea: dismissed: test deal, not real"
    assert page.locator("form").count() == 0  # a closed item has no forms
    assert world.left.write_log == world.right.write_log == []

    # The unassigned filter leaves out what was assigned.
    world.queue.assign(open_items(world, category="stage")[0].id or 0, "cy")
    page.goto(url + "/")
    page.check("input[name=unassigned]")
    page.click("button:text('Filter')")
    assert query_of(page)["unassigned"] == ["1"]
    assert page.locator("table.items tbody tr").count() == len(open_items(world)) - 1
    page.watch.assert_clean()


def test_a_form_error_is_shown_on_the_item_page_with_the_input_kept(
    world: World, url: str, page: Any
) -> None:
    target = open_items(world, category="deal_value")[0]
    page.goto(f"{url}/items/{target.id}?category=deal_value")
    page.check("input[name=take][value=value]")
    page.fill("#resolve input[name=value]", "one hundred")
    page.fill("#resolve input[name=note]", "from the signed PDF")
    page.click("#resolve button")
    error = page.locator("p.error").inner_text()
    assert error.startswith(
        "Not done: The other value cannot be read: 'one hundred' is not a number"
    )
    assert page.locator("h1").inner_text() == f"Item #{target.id}"  # not a bare error page
    assert page.locator("#resolve input[name=value]").input_value() == "one hundred"
    assert page.locator("#resolve input[name=note]").input_value() == "from the signed PDF"
    assert page.locator("input[name=take][value=value]").is_checked()
    check_layout(page, "queue-item-error")
    page.watch.assert_clean(http_errors=(400,))

    page.fill("#resolve input[name=value]", "175")
    page.click("#resolve button")
    assert page.locator("p.ok").inner_text().startswith("Resolved")
    assert world.storage.get_item(target.id or 0).resolution == 175
    page.click("text=Back to the list")
    assert query_of(page) == {"category": ["deal_value"]}
    page.watch.assert_clean()


def test_only_choices_that_can_work_are_offered(world: World, url: str, page: Any) -> None:
    (region,) = open_items(world, field="region")
    page.goto(f"{url}/items/{region.id}")
    takes = page.locator("input[name=take]")
    assert takes.count() == 1
    assert takes.first.get_attribute("value") == "left"
    assert "flows from crm to erp only" in page.locator("#resolve").inner_text()
    page.click("#resolve button")  # the only choice is chosen already
    assert page.locator("p.ok").inner_text().startswith("Resolved")
    assert [dict(e.fields) for e in world.right.write_log] == [{"Region": "emea"}]
    assert world.left.write_log == []

    duplicate = open_items(world, category="possible_duplicate")[0]
    page.goto(f"{url}/items/{duplicate.id}")
    assert page.locator("input[name=take]").count() == 0
    page.click("text=Acknowledge and close")
    assert page.locator("p.ok").inner_text().startswith("Acknowledged")
    assert world.storage.get_item(duplicate.id or 0).status is Status.RESOLVED
    page.watch.assert_clean()


def test_without_the_sync_definition_no_resolve_button(world: World, page: Any) -> None:
    target = open_items(world, category="deal_value")[0]
    reader = OperatorQueue(world.storage, clock=world.clock)
    with serve(QueueApp(reader)) as base:
        page.goto(base + "/")
        assert "left" in page.locator("table.items tbody tr").first.inner_text()
        page.goto(f"{base}/items/{target.id}")
        section = page.locator("#resolve").inner_text()
        assert "cannot resolve the item" in section
        assert "ask whoever runs syncrecon" in section
        assert page.locator("#resolve button").count() == 0
        assert page.locator("#dismiss button").count() == 1
        check_layout(page, "queue-item-no-sync")
        page.fill("#assign input[name=to]", "dora")
        page.click("#assign button")
        assert world.storage.get_item(target.id or 0).assignee == "dora"
    assert world.right.write_log == []
    page.watch.assert_clean()


def test_lifting_a_quarantine_needs_a_name_and_a_confirmation(
    world: World, url: str, page: Any
) -> None:
    drift_id = quarantine(world, "stage")
    stage = open_items(world, category="stage")[0]
    page.goto(f"{url}/items/{stage.id}")
    assert "Writes to the field “stage” are paused" in page.locator("#resolve").inner_text()
    assert page.locator("input[name=take]").count() == 0
    page.click(f"text=Open the schema-drift item #{drift_id}")
    assert page.locator("h1").inner_text() == f"Item #{drift_id}"
    check_layout(page, "queue-item-drift")

    # The browser itself asks for both; a form sent without them is refused on the page.
    assert page.locator("#resolve input[name=by]").get_attribute("required") is not None
    assert page.locator("#resolve input[name=confirm]").get_attribute("required") is not None
    page.evaluate("document.querySelector('#resolve').noValidate = true")
    page.fill("#resolve input[name=by]", "eve")
    page.click("#resolve button")
    assert "Tick the box to confirm" in page.locator("p.error").inner_text()
    assert page.locator("#resolve input[name=by]").input_value() == "eve"
    assert world.storage.get_item(drift_id).status is Status.ESCALATED
    page.watch.assert_clean(http_errors=(400,))

    page.check("#resolve input[name=confirm]")
    page.click("#resolve button")
    assert page.locator("p.ok").inner_text().startswith("Quarantine lifted")
    item = world.storage.get_item(drift_id)
    assert (item.status, item.assignee) == (Status.RESOLVED, "eve")
    page.goto(f"{url}/items/{stage.id}")
    assert page.locator("input[name=take]").count() == 3  # resolvable again
    page.watch.assert_clean()


def test_the_dashboard_inside_the_queue(world: World, url: str, page: Any) -> None:
    page.goto(url + "/")
    page.click("nav.top >> text=Dashboard")
    assert page.locator("h1").inner_text() == "syncrecon dashboard"
    oldest = page.locator("p:has-text('Oldest open item') a")
    href = oldest.get_attribute("href") or ""
    assert re.fullmatch(r"/items/\d+", href)
    oldest.click()
    assert page.locator("h1").inner_text() == "Item #" + href.rsplit("/", 1)[1]
    page.go_back()
    page.click("text=← Operator queue")
    assert page.locator("h1").inner_text() == "Operator queue"
    page.watch.assert_clean()


def test_bulk_actions_preview_then_confirm(world: World, url: str, page: Any) -> None:
    amounts = open_items(world, category="deal_value")
    page.goto(url + "/?category=deal_value")
    for item in amounts[:3]:
        page.check(f"input[name=id][value='{item.id}']")
    page.select_option("#bulk select[name=action]", "left")
    page.fill("#bulk input[name=by]", "ada")
    page.click("#bulk button")
    # The preview says what would be written, per item, and writes nothing.
    assert page.locator("h1").inner_text().startswith("Preview")
    preview = page.locator("table").inner_text()
    for item in amounts[:3]:
        assert f"#{item.id}" in preview
        assert f"Writes {item.left_value} to Amount in erp." in preview
    assert world.right.write_log == []
    check_layout(page, "queue-bulk-preview")
    assert page.locator("h1").inner_text() == "Preview: resolve, taking crm's value"
    page.click("text=Confirm: resolve 3 items")
    assert page.locator("p.ok").inner_text() == "3 resolved."
    assert sorted(dict(e.fields)["Amount"] for e in world.right.write_log) == sorted(
        i.left_value for i in amounts[:3]
    )
    for item in amounts[:3]:
        assert world.storage.get_item(item.id or 0).status is Status.RESOLVED
    page.click("text=Back to the list")
    assert query_of(page) == {"category": ["deal_value"]}
    assert page.locator("table.items tbody tr").count() == 3

    # The whole filtered set: assign every remaining amount item at once.
    page.check("#bulk input[name=scope][value=all]")
    page.select_option("#bulk select[name=action]", "assign")
    page.fill("#bulk input[name=to]", "bea")
    page.click("#bulk button")
    assert "3 items of 3 can be assigned" in page.locator("p.info").inner_text()
    page.click("#confirm button")
    assert page.locator("p.ok").inner_text() == "3 assigned."
    assert {i.assignee for i in open_items(world, category="deal_value")} == {"bea"}

    # Nothing checked: said on the list, with the choices kept.
    page.goto(url + "/")
    page.select_option("#bulk select[name=action]", "dismiss")
    page.fill("#bulk input[name=reason]", "cleanup")
    page.click("#bulk button")
    assert "Check the items to act on" in page.locator("p.error").inner_text()
    assert page.locator("#bulk input[name=reason]").input_value() == "cleanup"
    page.watch.assert_clean(http_errors=(400,))


def test_a_preview_skips_what_cannot_be_done(world: World, url: str, page: Any) -> None:
    (region,) = open_items(world, field="region")
    stage = open_items(world, category="stage")[0]
    page.goto(url + "/")
    page.check(f"input[name=id][value='{region.id}']")
    page.check(f"input[name=id][value='{stage.id}']")
    page.select_option("#bulk select[name=action]", "right")  # erp's value: not for region
    page.click("#bulk button")
    rows = page.locator("table tbody tr")
    assert "no" in rows.filter(has_text=f"#{region.id}").inner_text()
    assert "yes" in rows.filter(has_text=f"#{stage.id}").inner_text()
    page.click("#confirm button")
    assert page.locator("p.ok").inner_text() == "1 resolved."
    assert world.storage.get_item(region.id or 0).status is Status.ESCALATED
    assert world.storage.get_item(stage.id or 0).status is Status.RESOLVED
    assert world.left.write_log[-1].fields == {"stage": "lost"}
    page.watch.assert_clean()


def test_duplicates_are_shown_together_and_acknowledged_as_a_group(
    world: World, url: str, page: Any
) -> None:
    group = open_items(world, category="possible_duplicate")
    page.goto(url + "/")
    ids = [int(t.strip("#")) for t in page.locator("table.items td.id a").all_inner_texts()]
    first = ids.index(group[0].id or 0)
    assert sorted(ids[first : first + 2]) == sorted(i.id or 0 for i in group)
    assert "group dup@example.com (2 here)" in page.locator("table.items").inner_text()
    page.click(f"a:text-is('#{group[0].id}')")
    section = page.locator("#group").inner_text()
    assert "2 records share the natural key" in section
    assert f"#{group[1].id}" in section
    check_layout(page, "queue-item-group")
    page.click("#group button")
    assert page.locator("h1").inner_text() == "Preview: acknowledge"
    page.click("#confirm button")
    assert page.locator("p.ok").inner_text() == "2 acknowledged."
    assert {world.storage.get_item(i.id or 0).status for i in group} == {Status.RESOLVED}
    page.watch.assert_clean()


def test_a_suggestion_is_shown_and_chosen_but_not_applied(
    world: World, url: str, page: Any
) -> None:
    keys = world.pair(20)
    world.cycle()
    world.right.edit(keys[1], Stage="Closed Won")
    world.left.edit(keys[0], stage="WON ")  # only case and a space differ from the mapped value
    world.clock.advance(timedelta(minutes=1))
    world.cycle()
    target = [i for i in open_items(world, field="stage") if i.left_key == keys[0]]
    assert target, "the cycle opened no stage item for the case-only difference"
    item = target[0]
    page.goto(f"{url}/items/{item.id}")
    hint = page.locator("#suggestion").inner_text()
    assert "Suggested by rules" in hint
    assert "nothing is done until you decide" in hint
    assert world.storage.get_item(item.id or 0).status is Status.ESCALATED  # shown, not applied
    chosen = page.locator("input[name=take]:checked")
    assert chosen.count() == 1
    check_layout(page, "queue-item-suggestion")
    page.watch.assert_clean()


def test_a_record_links_to_its_page_in_its_system(world: World, url: str, page: Any) -> None:
    world.left.record_url = lambda key: f"https://crm.example/deals/{key}"  # type: ignore[attr-defined]
    target = open_items(world, category="deal_value")[0]
    page.goto(f"{url}/items/{target.id}")
    link = page.locator("a:text('open in crm')")
    assert link.get_attribute("href") == f"https://crm.example/deals/{target.left_key}"
    assert page.locator("a:text('open in erp')").count() == 0  # erp offers no pages
    page.watch.assert_clean()
