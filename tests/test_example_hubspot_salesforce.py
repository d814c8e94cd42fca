"""``examples/hubspot_salesforce.py``, its parts driven one behaviour at a time.

``tests/test_examples.py`` runs the script as a user would (its own checks end in exit 0).
Here the example's module is imported and its sync is built on the HubSpot and Salesforce
emulators, so each claim is checked through the loop that makes it: stage from Salesforce
through the value map, the newer note, merged tags, escalated amount and close date, one
create even when its answer is lost, forged and repeated webhooks, the lost webhook repaired,
a converged sync writing nothing, and the credentials path (on emulators, never the network).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from syncrecon import Status
from syncrecon.testing import HubSpotEmulator, SalesforceEmulator, make_test_key_pair

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def ex(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The example module, imported as ``python examples/hubspot_salesforce.py`` finds it."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("hubspot_salesforce")


@pytest.fixture
def world(ex: ModuleType, tmp_path: Path) -> Iterator[Any]:
    """Both emulated accounts, seeded (31 deals, 30 opportunities), not synced yet."""
    world = ex.emulated(tmp_path)
    yield world
    world.close()


def deal(world: Any, i: int) -> dict[str, Any]:
    """The i-th seeded deal's properties, as HubSpot holds them (strings)."""
    return dict(world.hubspot.get("deals", world.deal_ids[i])["properties"])


def opp(world: Any, i: int) -> dict[str, Any]:
    """The opportunity of the i-th seeded deal, as Salesforce holds it."""
    return dict(world.salesforce.get("Opportunity", world.opp_ids[world.deal_ids[i]]))


def escalated(world: Any) -> dict[tuple[str, str], str | None]:
    items = world.deals.storage.list_items(sync="deals", statuses=[Status.ESCALATED])
    return {(item.left_key, item.field): item.category for item in items}


def cycle(world: Any, **kwargs: Any) -> Any:
    world.clock.advance(timedelta(minutes=1))
    return world.deals.reconciler.run_cycle(**kwargs)


def webhook(ex: ModuleType, world: Any, i: int, **changes: str) -> list[dict[str, Any]]:
    """Edit the i-th deal in HubSpot; return the notifications HubSpot sends for the edit."""
    since = world.clock.now()
    world.clock.advance(timedelta(seconds=30))
    world.hubspot.edit("deals", world.deal_ids[i], **changes)
    return list(ex.notifications(world, since))


def deliver(ex: ModuleType, world: Any, batch: list[dict[str, Any]], **kwargs: Any) -> Any:
    response = world.deals.handler.handle(ex.signed(batch, world.clock, **kwargs))
    return response.status, json.loads(response.body)


def patches(world: Any) -> int:
    """Update requests Salesforce answered (sObject Collections PATCH)."""
    return sum(1 for r in world.salesforce.requests if r.method == "PATCH")


# -- the whole story ------------------------------------------------------------------------------


def test_the_story_converges_and_says_so(
    ex: ModuleType, world: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    ex.demo(world)  # asserts the end state itself
    out = capsys.readouterr().out
    assert "converged: yes" in out
    assert "a retried delivery: duplicates 1" in out
    assert "hubspot HTTP requests: " in out
    assert "(3 throttled)" in out  # the burst of 429s, retried on virtual time
    modes = [r.mode for r in world.deals.reports]
    assert modes == ["full", "incremental", "incremental"]
    first, second, third = world.deals.reports
    assert first.created == {"left": 0, "right": 1}
    assert second.writes == {"left": 4, "right": 1}  # the lost webhook's change among them
    assert third.total_writes == 0


# -- the rules ------------------------------------------------------------------------------------


def test_stage_follows_salesforce_through_the_value_map(ex: ModuleType, world: Any) -> None:
    ex.drift(world)
    cycle(world)
    assert deal(world, 0)["dealstage"] == "closedwon"  # Salesforce: Closed Won
    assert deal(world, 1)["dealstage"] == "closedlost"
    # A stage changed in HubSpot is not written to Salesforce, and is put back.
    batch = webhook(ex, world, 12, dealstage="closedwon")
    assert deliver(ex, world, batch)[0] == 200
    assert world.deals.handler.process_pending().outcomes == {"deferred": 1}
    assert opp(world, 12)["StageName"] == "Prospecting"
    assert cycle(world).writes == {"left": 1, "right": 0}
    assert deal(world, 12)["dealstage"] == "appointmentscheduled"
    # A stage HubSpot's pipeline lacks is escalated, never written.
    world.salesforce.edit(
        "Opportunity", world.opp_ids[world.deal_ids[7]], StageName="Negotiation/Review"
    )
    report = cycle(world)
    assert report.escalated.get("unmappable_value") == 1
    assert deal(world, 7)["dealstage"] == "qualifiedtobuy"  # unchanged


def test_recency_keeps_the_newer_note_on_both_sides(ex: ModuleType, world: Any) -> None:
    ex.drift(world)
    cycle(world)
    # Deal 2: edited in Salesforce, then later in HubSpot; deal 3 the other way round.
    assert opp(world, 2)["Description"] == deal(world, 2)["description"] == "Legal approved the MSA"
    assert (
        deal(world, 3)["description"] == opp(world, 3)["Description"] == "Agreed on a 2-year term"
    )


def test_tags_are_merged_on_both_sides(ex: ModuleType, world: Any) -> None:
    ex.drift(world)
    cycle(world)
    # HubSpot had renewal; Salesforce had Upsell and Enterprise: the union, on both.
    assert deal(world, 4)["tags"] == "renewal;upsell;enterprise"
    assert opp(world, 4)["Tags__c"] == "Renewal;Upsell;Enterprise"
    # A tag ticked in HubSpot reaches Salesforce through the fast loop, mapped.
    deliver(ex, world, webhook(ex, world, 4, tags="renewal;upsell;enterprise;partner"))
    assert world.deals.handler.process_pending().outcomes == {"applied": 1}
    # Salesforce keeps a multi-select in its picklist's order.
    assert opp(world, 4)["Tags__c"] == "Renewal;Upsell;Partner;Enterprise"
    # One removed in Salesforce stays removed (three-way), on both sides.
    world.salesforce.edit(
        "Opportunity", world.opp_ids[world.deal_ids[4]], Tags__c="Renewal;Partner"
    )
    cycle(world)
    assert deal(world, 4)["tags"] == "renewal;partner"


def test_amount_and_close_date_are_escalated_not_written(ex: ModuleType, world: Any) -> None:
    ex.drift(world)
    d = world.deal_ids
    report = cycle(world)
    assert report.escalated == {"amount": 1, "close_date": 1}
    assert (deal(world, 5)["amount"], opp(world, 5)["Amount"]) == ("6250", 12500)
    assert deal(world, 6)["closedate"].startswith("2026-04-07")
    assert opp(world, 6)["CloseDate"] == "2026-12-31"
    assert escalated(world) == {(d[5], "amount"): "amount", (d[6], "closedate"): "close_date"}
    # A one-sided change by webhook is not written either: it waits for an operator.
    before = patches(world)
    deliver(ex, world, webhook(ex, world, 13, amount="9999"))
    assert world.deals.handler.process_pending().outcomes == {"deferred": 1}
    assert opp(world, 13)["Amount"] == 8250
    assert patches(world) == before
    assert escalated(world)[(d[13], "amount")] == "amount"
    # The next cycles leave all three alone.
    assert cycle(world).total_writes == 0
    assert opp(world, 13)["Amount"] == 8250
    assert deal(world, 5)["amount"] == "6250"


def test_the_hubspot_only_deal_is_created_once_even_if_the_answer_is_lost(
    world: Any,
) -> None:
    new = world.deal_ids[-1]
    creates_path = "/services/data/v61.0/composite/sobjects"
    # The pairs agree, so the create is the only collections request of the first cycle.
    world.salesforce.lose_response_next(1, path_contains=creates_path)
    report = cycle(world)
    assert report.created == {"left": 0, "right": 1}
    assert report.write_failures == 0
    made = [
        o for o in world.salesforce.records("Opportunity").values() if o["HubSpot_Id__c"] == new
    ]
    assert len(made) == 1
    assert made[0]["Sync_Key__c"].startswith("syncrecon-")  # its idempotency key
    assert made[0]["Name"] == "Ollivander - annual plan"
    assert made[0]["StageName"] == "Prospecting"  # appointmentscheduled, mapped
    assert made[0]["Tags__c"] == "Partner"
    assert made[0]["CloseDate"] == "2026-04-03"  # the date of HubSpot's date-time
    posts = [r for r in world.salesforce.requests if r.method == "POST" and r.path == creates_path]
    assert len(posts) == 1  # the answer was lost: found by its key, not created again
    assert world.deals.salesforce.api.requests["GET /services/data/v61.0/query"] == 2
    # Later full sweeps link it, never create it again.
    assert cycle(world, full=True).created == {"left": 0, "right": 0}
    assert len(world.salesforce.records("Opportunity")) == len(world.deal_ids)
    assert world.deals.storage.count_links("deals") == len(world.deal_ids)


def test_a_deal_made_later_reaches_salesforce_with_the_hourly_full_sweep(world: Any) -> None:
    cycle(world)
    new = world.hubspot.add(
        "deals",
        {"dealname": "Late deal", "dealstage": "closedwon", "closedate": "2026-09-30T00:00:00Z"},
    )
    assert cycle(world).created == {"left": 0, "right": 0}  # incremental: cannot create
    world.clock.advance(timedelta(hours=1))
    report = cycle(world)
    assert report.mode == "full"
    assert report.created == {"left": 0, "right": 1}
    made = [
        o for o in world.salesforce.records("Opportunity").values() if o["HubSpot_Id__c"] == new
    ]
    assert [(o["Name"], o["StageName"], o["CloseDate"]) for o in made] == [
        ("Late deal", "Closed Won", "2026-09-30")
    ]


# -- the fast loop --------------------------------------------------------------------------------


def test_a_forged_webhook_is_rejected_and_changes_nothing(ex: ModuleType, world: Any) -> None:
    cycle(world)
    batch = webhook(ex, world, 10, description="Sent the order form")
    forged = [{**batch[0], "propertyValue": "Free of charge"}]
    assert deliver(ex, world, batch, secret="a guess")[0] == 401  # wrong secret
    tampered = ex.signed(batch, world.clock)
    tampered = type(tampered)(
        method="POST", url=tampered.url, headers=tampered.headers, body=json.dumps(forged).encode()
    )
    assert world.deals.handler.handle(tampered).status == 401  # a body it did not sign
    assert world.deals.handler.process_pending().outcomes == {}
    assert opp(world, 10)["Description"] == "Intro call done"
    totals = world.deals.storage.counter_totals("webhook_events")
    rejected = sum(n for labels, n in totals if labels.get("outcome") == "rejected")
    assert rejected == 2


def test_a_duplicated_webhook_is_applied_once(ex: ModuleType, world: Any) -> None:
    cycle(world)
    batch = webhook(ex, world, 10, description="Sent the order form")
    assert deliver(ex, world, batch) == (200, {"accepted": 1, "duplicates": 0})
    retry = [{**batch[0], "attemptNumber": 1}]  # HubSpot's retry, signed again
    assert deliver(ex, world, retry) == (200, {"accepted": 0, "duplicates": 1})
    before = patches(world)
    assert world.deals.handler.process_pending().outcomes == {"applied": 1}
    assert deliver(ex, world, batch) == (200, {"accepted": 0, "duplicates": 1})  # even later
    assert world.deals.handler.process_pending().outcomes == {}
    assert patches(world) == before + 1
    assert opp(world, 10)["Description"] == "Sent the order form"


def test_syncrecons_own_writes_come_back_as_echoes(ex: ModuleType, world: Any) -> None:
    ex.drift(world)
    since = world.clock.now()
    cycle(world)  # writes four deals in HubSpot; HubSpot reports each change
    batch = ex.notifications(world, since)
    assert {n["changeSource"] for n in batch} == {"INTEGRATION"}
    assert len(batch) == 4
    deliver(ex, world, batch)
    before = patches(world)
    assert world.deals.handler.process_pending().outcomes == {"echo": 4}
    assert patches(world) == before


def test_a_lost_webhook_is_repaired_by_the_next_incremental_cycle(world: Any) -> None:
    cycle(world)
    world.clock.advance(timedelta(minutes=1))
    world.hubspot.edit("deals", world.deal_ids[14], description="Asked for a discount")
    report = cycle(world)  # no webhook came
    assert report.mode == "incremental"
    assert report.writes == {"left": 0, "right": 1}
    assert opp(world, 14)["Description"] == "Asked for a discount"


def test_a_second_cycle_writes_nothing(ex: ModuleType, world: Any) -> None:
    ex.drift(world)
    first = cycle(world)
    assert first.writes == {"left": 4, "right": 3}  # one of them the create
    again = cycle(world)
    assert again.mode == "incremental"
    assert again.total_writes == 0
    full = cycle(world, full=True)
    assert full.mode == "full"
    assert full.total_writes == 0
    assert ex.disagreements(world.deals) == set(escalated(world))


# -- the credentials path, on emulators --------------------------------------------------------


def test_with_credentials_it_runs_cycles_against_the_accounts(
    ex: ModuleType, tmp_path: Path
) -> None:
    hubspot = HubSpotEmulator(access_token="pat-na1-live-test")  # real time, as live
    hubspot.add_property(
        "deals", "tags", type="enumeration", field_type="checkbox", options=list(ex.TAGS)
    )
    salesforce = SalesforceEmulator()
    for name in ("HubSpot_Id__c", "Sync_Key__c"):
        salesforce.add_field("Opportunity", name)
    private_key, public_key = make_test_key_pair()
    salesforce.register_jwt_client("live-consumer-key", public_key, "sync@acme.test")
    key_file = tmp_path / "server.key"
    key_file.write_text(private_key)
    hubspot.add("deals", {"dealname": "Acme", "dealstage": "closedwon", "closedate": "2026-05-01"})
    env = {
        "HUBSPOT_TOKEN": "pat-na1-live-test",
        "HUBSPOT_CLIENT_SECRET": "secret",
        "SALESFORCE_CONSUMER_KEY": "live-consumer-key",
        "SALESFORCE_USERNAME": "sync@acme.test",
        "SALESFORCE_PRIVATE_KEY_FILE": str(key_file),
        "SYNCRECON_DB": str(tmp_path / "live.sqlite"),
    }
    hosts: list[str] = []

    def route(request: httpx.Request) -> httpx.Response:  # the internet, for this test
        hosts.append(request.url.host)
        emulator = hubspot if request.url.host == "api.hubapi.com" else salesforce
        return emulator.handle(request)

    def client() -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(route))

    dry = ex.run_live({**env, "SYNCRECON_DRY_RUN": "1"}, client())
    assert dry.dry_run
    assert dry.created == {"left": 0, "right": 0}
    assert salesforce.records("Opportunity") == {}
    first = ex.run_live(env, client())
    assert first.created == {"left": 0, "right": 1}
    (made,) = salesforce.records("Opportunity").values()
    assert (made["Name"], made["StageName"], made["CloseDate"]) == (
        "Acme",
        "Closed Won",
        "2026-05-01",
    )
    assert ex.run_live(env, client()).total_writes == 0
    assert set(hosts) == {"api.hubapi.com", "login.salesforce.com", "example.my.salesforce.com"}


def test_without_every_credential_it_stays_on_the_emulators(
    ex: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ex.LIVE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HUBSPOT_TOKEN", "pat-na1-not-enough")  # one is not all
    monkeypatch.setattr(ex, "run_live", lambda *a: pytest.fail("went live"))
    ex.main()
    assert "converged: yes" in capsys.readouterr().out


def test_requests_are_counted_by_endpoint_in_reports_and_the_dashboard(
    ex: ModuleType, world: Any
) -> None:
    from syncrecon.dashboard import build_dashboard

    report = cycle(world)
    assert report.api_requests["hubspot"]["GET /crm/v3/objects/deals"] >= 1
    assert any("/query" in endpoint for endpoint in report.api_requests["salesforce"])
    # api_calls counts the HTTP requests of HTTP connectors, token requests included.
    for system, by_endpoint in report.api_requests.items():
        assert report.api_calls[system] == sum(by_endpoint.values())
    assert "hubspot requests: " in str(report)
    # The fast loop counts its requests too (one PATCH of a collection for this webhook).
    deliver(ex, world, webhook(ex, world, 10, description="Sent the order form"))
    assert world.deals.handler.process_pending().outcomes == {"applied": 1}
    fast = {
        labels["endpoint"]: n
        for labels, n in world.deals.storage.counter_totals("api_requests")
        if labels.get("loop") == "fast" and labels["system"] == "salesforce"
    }
    assert fast["PATCH /services/data/v61.0/composite/sobjects"] == 1
    board = build_dashboard(world.deals.storage, now=world.clock.now())
    assert board.api_requests["hubspot"]["GET /crm/v3/objects/deals"] >= 1
    assert board.api_requests["salesforce"]["PATCH /services/data/v61.0/composite/sobjects"] >= 1
