"""The dashboard page in a real headless Chromium, served inside the queue's pages.

A real reconciler works a queue for a few hours of a seven-day window (``test_queue.World``),
the fast loop's counters and a few decisions are added, and :class:`syncrecon.web.QueueApp`
serves ``/dashboard``. Chromium checks what an operator would: a way back to the queue, the
oldest waiting item as a link to its page, the per-cycle chart's time axis fitted to the
cycles (not a week with everything in one corner), no console error or CSP violation, and at
400 px no table wider than the screen, no text under 12 px and no chart text under 10 px.
Screenshots at 1,400 and 400 px go to ``.artifacts/screenshots/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from serving import CHART_TEXT_SIZES, LAYOUT_PROBLEMS, Watch, launch_chromium, screenshot, serve
from syncrecon.storage import Storage
from syncrecon.testing import ManualClock
from syncrecon.web import QueueApp
from test_browser_queue import busy_queue
from test_dashboard import events
from test_queue import World


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as chromium:
        yield chromium


@pytest.fixture
def world(sqlite_storage: Storage, clock: ManualClock) -> World:
    world = busy_queue(World(sqlite_storage, clock))
    now = world.clock.now()
    events(world.storage, now - timedelta(hours=2), "crm", "crm->erp", "applied", 40)
    events(world.storage, now - timedelta(hours=2), "crm", "crm->erp", "duplicate", 3)
    events(world.storage, now - timedelta(hours=1), "erp", "erp->crm", "applied", 25)
    events(world.storage, now - timedelta(hours=1), "erp", "erp->crm", "echo", 9)
    events(world.storage, now - timedelta(hours=1), "erp", "erp->crm", "rejected", 2, "Sig")
    amounts = world.queue.list(category="deal_value")
    world.clock.advance(timedelta(minutes=40))
    world.queue.resolve(amounts[0].id or 0, take="left", by="ada")
    world.queue.dismiss(amounts[1].id or 0, "a test deal", by="ada")
    world.clock.advance(timedelta(minutes=5))
    return world


def test_the_dashboard_page(world: World, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    watch = Watch(page)
    with serve(QueueApp(world.queue)) as url:
        page.goto(url + "/dashboard")
        assert page.locator("h1").inner_text() == "syncrecon dashboard"
        reconciliation = page.locator("p:has-text('new queue items this week')").inner_text()
        assert "settled automatically" in reconciliation
        assert "sent to an operator" in reconciliation
        assert "wait for an operator now" in reconciliation

        # The per-cycle chart spans the cycles, a couple of hours, not the whole week.
        bars = page.evaluate(
            """() => {
              const chart = document.querySelectorAll("svg.chart")[1];
              const xs = [...chart.querySelectorAll("rect.bar")].slice(0, -1)  // the legend's
                .map((r) => r.x.baseVal.value + r.width.baseVal.value / 2);
              return [Math.min(...xs), Math.max(...xs), xs.length];
            }"""
        )
        low, high, count = bars
        assert count == 8  # the world's cycles
        assert high - low > 0.8 * (596 - 44)
        screenshot(page, "dashboard")

        page.set_viewport_size({"width": 400, "height": 800})
        assert page.evaluate(LAYOUT_PROBLEMS, 12) == []
        sizes = page.evaluate(CHART_TEXT_SIZES)
        assert sizes
        assert min(sizes) >= 10
        screenshot(page, "dashboard")
        page.set_viewport_size({"width": 1400, "height": 900})

        # From the dashboard to the oldest waiting item, and back to the queue.
        oldest = world.queue.list()[-1]
        page.click(f"p:has-text('Oldest open item') >> a:text-is('#{oldest.id}')")
        assert page.locator("h1").inner_text() == f"Item #{oldest.id}"
        page.go_back()
        page.click("text=Waiting for an operator")
        assert page.locator("h1").inner_text() == "Operator queue"
        assert "status=escalated" in page.url
        page.go_back()
        page.click("text=← Operator queue")
        assert page.locator("h1").inner_text() == "Operator queue"
        watch.assert_clean()
    context.close()
