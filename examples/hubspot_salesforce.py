"""HubSpot deals <-> Salesforce opportunities, both loops, on emulators or on your own accounts.

Run ``python examples/hubspot_salesforce.py`` (it needs the ``jwt`` extra, ``pip install
'syncrecon[jwt]'``, even on the emulators: the Salesforce emulator checks a JWT bearer
assertion signed with a test key). Without credentials it needs no network: both
APIs are syncrecon's in-process emulators, time is a ``ManualClock`` (rate-limit waits move it
instead of sleeping) and the state is SQLite in a temporary directory. It seeds 31 deals and
30 opportunities that drifted apart; the worker's first cycle links them, fixes what the rules
allow and creates the missing opportunity, through a burst of 429s; HubSpot webhooks (v3
signed; one lost, one delivered twice, one forged) go through the handler and the worker;
people edit opportunities; two incremental cycles follow. It prints a summary and exits 0
only if every field agrees on both systems, except the ones waiting for an operator.

The rules: Salesforce owns the stage; notes go to the most recent edit; tags are merged; amount
and close date are never changed automatically (an operator decides).

The loops: HubSpot posts each change of a subscribed property, and the fast loop writes it
to Salesforce within seconds. Salesforce changes come in by incremental cycles (a query on
``SystemModstamp`` and ``getDeleted``: a few requests per cycle). Salesforce can push too:
Change Data Capture and Platform Events need a long-lived subscriber (Pub/Sub API over gRPC,
or CometD) that keeps its replay id, within per-org event allocations; Outbound Messages are
SOAP posts from Flow or workflow rules to a public URL, with no signature to check. A cycle
every few minutes costs little, needs no inbound door, and is what proves the sides agree.

With your accounts (cycles only), set HUBSPOT_TOKEN (a private app's), HUBSPOT_CLIENT_SECRET,
SALESFORCE_CONSUMER_KEY, SALESFORCE_USERNAME and SALESFORCE_PRIVATE_KEY_FILE (JWT bearer), and
SALESFORCE_LOGIN_URL for a sandbox; SYNCRECON_DRY_RUN=1 reports and writes nothing. HubSpot
needs a multi-checkbox deal property ``tags``; the Opportunity needs ``Tags__c`` and two
External ID text fields, ``HubSpot_Id__c`` and ``Sync_Key__c``. Webhooks need a public
HTTPS URL: serve ``deals.handler`` as ``examples/fastapi_app.py`` does and point the app's
target URL at ``/webhooks/hubspot``.
"""

import base64
import hashlib
import hmac
import json
import os
import random
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from syncrecon import (
    Clock,
    CycleReport,
    FieldMap,
    NaturalKey,
    Reconciler,
    Side,
    Status,
    SyncDefinition,
    Transform,
    escalate,
    merge,
    recency,
    source_of_truth,
    value_map,
)
from syncrecon.connectors.hubspot import HubSpotConnector
from syncrecon.connectors.salesforce import SalesforceConnector, jwt_bearer
from syncrecon.http import HttpRetry, VirtualTimer
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import HubSpotEmulator, ManualClock, SalesforceEmulator, make_test_key_pair
from syncrecon.webhooks import WebhookHandler, WebhookRequest
from syncrecon.worker import Worker

# HubSpot's default pipeline (stage ids) and the Opportunity's StageName values.
STAGES = {
    "appointmentscheduled": "Prospecting",
    "qualifiedtobuy": "Qualification",
    "presentationscheduled": "Needs Analysis",
    "decisionmakerboughtin": "Value Proposition",
    "contractsent": "Proposal/Price Quote",
    "closedwon": "Closed Won",
    "closedlost": "Closed Lost",
}
# The tag options: HubSpot's internal values and the Tags__c picklist values.
TAGS = {"renewal": "Renewal", "upsell": "Upsell", "partner": "Partner", "enterprise": "Enterprise"}
PROPERTIES = ["hs_object_id", "dealname", "dealstage", "description", "tags", "amount", "closedate"]
FIELDS = ["HubSpot_Id__c", "Name", "StageName", "Description", "Tags__c", "Amount", "CloseDate"]


def each(mapping: Mapping[str, str]) -> Transform:
    """A value map for multi-selects: every item of the list is mapped."""
    back = {v: k for k, v in mapping.items()}
    return Transform(
        to_right=lambda items: None if items is None else [mapping[i] for i in items],
        to_left=lambda items: None if items is None else [back[i] for i in items],
        left_values=frozenset(mapping),
        right_values=frozenset(back),
    )


# HubSpot's close date is a date-time (midnight UTC when picked in the UI), Salesforce's a date.
CLOSE_DATE = Transform(
    to_right=lambda when: when and when.date(),
    to_left=lambda day: day and datetime(day.year, day.month, day.day, tzinfo=UTC),
)


def define_sync(hubspot: HubSpotConnector, salesforce: SalesforceConnector) -> SyncDefinition:
    """HubSpot deals on the left, Salesforce opportunities on the right, a rule per field."""
    return SyncDefinition(
        name="deals",
        left=hubspot,
        right=salesforce,
        fields=[
            # The match: HubSpot's deal id, kept on the opportunity in an External ID field.
            # Deal names are neither unique ("Acme - renewal" twice) nor stable (a rename
            # would break the match); the id is both. Opportunities an earlier integration or
            # an import made carry it already; those syncrecon creates get it from this
            # one-way mapping, which also puts it back if someone edits it in Salesforce.
            FieldMap(
                left="hs_object_id",
                right="HubSpot_Id__c",
                direction="left_to_right",
                transform=Transform(to_right=str, to_left=lambda text: text and int(text)),
            ),
            FieldMap(left="dealname", right="Name", policy=recency()),
            # strict: a stage the map lacks is escalated (unmappable_value), never written.
            FieldMap(
                left="dealstage",
                right="StageName",
                policy=source_of_truth("right"),
                transform=value_map(STAGES, strict=True),
            ),
            FieldMap(left="description", right="Description", policy=recency()),
            FieldMap(left="tags", right="Tags__c", policy=merge(), transform=each(TAGS)),
            FieldMap(left="amount", right="Amount", policy=escalate("amount")),
            FieldMap(
                left="closedate",
                right="CloseDate",
                policy=escalate("close_date"),
                transform=CLOSE_DATE,
            ),
        ],
        natural_key=NaturalKey(left="hs_object_id", right="HubSpot_Id__c"),
        # A deal Salesforce lacks becomes an opportunity (opportunities born in Salesforce
        # stay there). Sync_Key__c makes that create happen once, even if its answer is lost.
        create_on=["right"],
    )


@dataclass
class Deals:
    """The sync and both loops over one storage: what a service hosts."""

    hubspot: HubSpotConnector
    salesforce: SalesforceConnector
    sync: SyncDefinition
    storage: SQLiteStorage
    handler: WebhookHandler  # the fast loop's front door: POST /webhooks/hubspot
    reconciler: Reconciler  # the slow loop
    worker: Worker  # drains the inbox every second, runs a cycle every 15 minutes
    reports: list[CycleReport]  # the worker's cycles


def build(
    hubspot: HubSpotConnector,
    salesforce: SalesforceConnector,
    storage: SQLiteStorage,
    *,
    client_secret: str,
    clock: Clock | None = None,
) -> Deals:
    """Both loops; ``client_secret`` is the HubSpot app's, which signs its webhooks."""
    sync = define_sync(hubspot, salesforce)
    source = hubspot.webhook_source(sync, Side.LEFT, client_secrets=[client_secret])
    handler = WebhookHandler([source], storage, clock=clock)
    # Only full sweeps create records (an incremental pass cannot tell a deal Salesforce lacks
    # from one that did not change): hourly, a new deal reaches Salesforce within the hour.
    reconciler = Reconciler(sync, storage, clock=clock, full_sweep_every=timedelta(hours=1))
    reports: list[CycleReport] = []

    def failed(exc: BaseException) -> None:
        raise exc  # a deployed worker logs it and carries on; the example stops

    worker = Worker(
        handler, reconciler, every=timedelta(minutes=15), on_report=reports.append, on_error=failed
    )
    return Deals(hubspot, salesforce, sync, storage, handler, reconciler, worker, reports)


def run_live(env: Mapping[str, str], client: httpx.Client | None = None) -> CycleReport:
    """One cycle against your accounts (a dry run with SYNCRECON_DRY_RUN=1)."""
    with client or httpx.Client(timeout=60) as http:
        hubspot = HubSpotConnector(
            http,
            object_type="deals",
            properties=PROPERTIES,
            token=env["HUBSPOT_TOKEN"],
            field_history=True,
        )
        auth = jwt_bearer(
            consumer_key=env["SALESFORCE_CONSUMER_KEY"],
            username=env["SALESFORCE_USERNAME"],
            private_key=Path(env["SALESFORCE_PRIVATE_KEY_FILE"]).read_text(),
            login_url=env.get("SALESFORCE_LOGIN_URL", "https://login.salesforce.com"),
        )
        salesforce = SalesforceConnector(
            http, sobject="Opportunity", fields=FIELDS, auth=auth, external_id_field="Sync_Key__c"
        )
        storage = SQLiteStorage(env.get("SYNCRECON_DB", "hubspot_salesforce.sqlite"))
        deals = build(hubspot, salesforce, storage, client_secret=env["HUBSPOT_CLIENT_SECRET"])
        try:
            return deals.reconciler.run_cycle(dry_run=env.get("SYNCRECON_DRY_RUN") == "1")
        finally:
            storage.close()


LIVE = ["HUBSPOT_TOKEN", "HUBSPOT_CLIENT_SECRET", "SALESFORCE_CONSUMER_KEY"]
LIVE += ["SALESFORCE_USERNAME", "SALESFORCE_PRIVATE_KEY_FILE"]


# --------------------------------------------------------------------------------------------
# The emulated accounts: seeded records, their drift, and HubSpot's webhooks

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET = "the HubSpot app's client secret"
KEY, USER = "the connected app's consumer key", "sync@example.com"  # JWT bearer flow
URL = "https://sync.example.com/webhooks/hubspot"  # the app's target URL
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka"]
COMPANIES += ["Tyrell", "Cyberdyne", "Soylent", "Aperture", "Oscorp", "Vandelay", "Dunder"]
COMPANIES += ["Gringotts", "Monarch", "Nakatomi", "Prestige", "Massive", "Virtucon", "Gekko"]
COMPANIES += ["Bluth", "Krusty", "Duff", "Zorg", "Rekall", "Sterling", "Pied Piper", "Initrode"]
COMPANIES += ["Ollivander"]  # the newest deal: not in Salesforce yet


@dataclass
class Emulated:
    """The two emulated accounts, their clock, the sync over them and the seeded records."""

    deals: Deals
    clock: ManualClock
    hubspot: HubSpotEmulator
    salesforce: SalesforceEmulator
    clients: list[httpx.Client]
    deal_ids: list[str]  # in seeding order; the last one is not in Salesforce
    opp_ids: dict[str, str]  # the opportunity of every other deal

    def close(self) -> None:
        self.deals.storage.close()
        for client in self.clients:
            client.close()


def emulated(directory: Path) -> Emulated:
    """Both accounts emulated, seeded with 31 deals and the opportunities of 30 of them."""
    clock = ManualClock(START)
    timer = VirtualTimer(clock)  # waits (rate limits, Retry-After, backoff) move the clock
    # A token of its own: HubSpot connectors with one token share one rate limiter.
    hubspot = HubSpotEmulator(clock=clock, access_token=f"pat-na1-{uuid.uuid4()}")
    hubspot.add_property(
        "deals", "tags", type="enumeration", field_type="checkbox", options=list(TAGS)
    )
    salesforce = SalesforceEmulator(clock=clock)
    for name in ("HubSpot_Id__c", "Sync_Key__c"):
        salesforce.add_field("Opportunity", name)
    private_key, public_key = make_test_key_pair()
    salesforce.register_jwt_client(KEY, public_key, USER)
    clients = [httpx.Client(transport=e.transport()) for e in (hubspot, salesforce)]
    common: dict[str, Any] = {
        "retry": HttpRetry(rng=random.Random(7)),
        "timer": timer,
        "clock": clock,
    }
    hs_api = HubSpotConnector(
        clients[0],
        object_type="deals",
        properties=PROPERTIES,
        token=hubspot.access_token,
        field_history=True,  # per-property times for recency (pages of 50 instead of 100)
        **common,
    )
    auth = jwt_bearer(consumer_key=KEY, username=USER, private_key=private_key, clock=clock)
    sf_api = SalesforceConnector(
        clients[1],
        sobject="Opportunity",
        fields=FIELDS,
        auth=auth,
        external_id_field="Sync_Key__c",  # where each create's idempotency key goes
        **common,
    )
    storage = SQLiteStorage(directory / "deals.sqlite")
    deals = build(hs_api, sf_api, storage, client_secret=SECRET, clock=clock)
    world = Emulated(deals, clock, hubspot, salesforce, clients, [], {})
    for i, company in enumerate(COMPANIES):
        stage, tag, amount = list(STAGES)[i % 6], list(TAGS)[i % 4], 5000 + 250 * i
        close = date(2026, 4 + i % 6, 1 + i % 28)
        deal = hubspot.add(
            "deals",
            {
                "dealname": f"{company} - annual plan",
                "dealstage": stage,
                "amount": str(amount),
                "closedate": f"{close}T00:00:00Z",
                "description": "Intro call done",
                "tags": tag,
            },
        )
        world.deal_ids.append(deal)
        if company != COMPANIES[-1]:
            world.opp_ids[deal] = salesforce.add(
                "Opportunity",
                HubSpot_Id__c=deal,
                Name=f"{company} - annual plan",
                StageName=STAGES[stage],
                Amount=amount,
                CloseDate=close.isoformat(),
                Description="Intro call done",
                Tags__c=TAGS[tag],
            )
    return world


def drift(world: Emulated) -> None:
    """What people changed on both sides before the first sync (times matter: recency)."""
    hs, sf, d, opp = world.hubspot, world.salesforce, world.deal_ids, world.opp_ids
    world.clock.advance(timedelta(minutes=5))
    sf.edit("Opportunity", opp[d[0]], StageName="Closed Won")
    sf.edit("Opportunity", opp[d[1]], StageName="Closed Lost")
    sf.edit("Opportunity", opp[d[2]], Description="Legal reviews the MSA")
    hs.edit("deals", d[3], description="Wants a 3-year term")
    sf.edit("Opportunity", opp[d[4]], Tags__c="Upsell;Enterprise")  # HubSpot: renewal
    sf.edit("Opportunity", opp[d[5]], Amount=12500)  # HubSpot: 6250
    sf.edit("Opportunity", opp[d[6]], CloseDate="2026-12-31")  # HubSpot: 2026-04-07
    world.clock.advance(timedelta(minutes=5))
    hs.edit("deals", d[2], description="Legal approved the MSA")  # newer than Salesforce's
    sf.edit("Opportunity", opp[d[3]], Description="Agreed on a 2-year term")  # newer
    world.hubspot.rate_limit_next(3)  # a burst of 429s for the next cycle's first requests


def notifications(world: Emulated, since: datetime) -> list[dict[str, Any]]:
    """The ``deal.propertyChange`` notifications HubSpot sends for the changes made after
    ``since``, by people and by apps (syncrecon's own writes come back too)."""
    found = [
        (datetime.fromisoformat(change["timestamp"]), deal, name, change)
        for deal in world.deal_ids
        for name in PROPERTIES[1:]
        for change in world.hubspot.history("deals", deal, name)
    ]
    return [
        {
            "eventId": 1000 + n,
            "subscriptionId": 100 + PROPERTIES.index(name),  # one per property
            "portalId": world.hubspot.portal_id,
            "appId": world.hubspot.app_id,
            "occurredAt": int(at.timestamp() * 1000),
            "subscriptionType": "deal.propertyChange",
            "attemptNumber": 0,
            "objectId": int(deal),
            "propertyName": name,
            "propertyValue": change["value"],
            "changeSource": change["sourceType"],
        }
        for n, (at, deal, name, change) in enumerate(sorted(f for f in found if f[0] > since))
    ]


def signed(batch: list[dict[str, Any]], clock: Clock, secret: str = SECRET) -> WebhookRequest:
    """The POST HubSpot makes, signed v3: base64 HMAC-SHA256 of method, URL, body and the
    timestamp (milliseconds), keyed with the app's client secret."""
    body, stamp = json.dumps(batch).encode(), str(int(clock.now().timestamp() * 1000))
    mac = hmac.new(secret.encode(), b"POST" + URL.encode() + body + stamp.encode(), hashlib.sha256)
    headers = {
        "content-type": "application/json",
        "x-hubspot-signature-v3": base64.b64encode(mac.digest()).decode(),
        "x-hubspot-request-timestamp": stamp,
    }
    return WebhookRequest(method="POST", url=URL, headers=headers, body=body)


def disagreements(deals: Deals) -> set[tuple[str, str]]:
    """``(deal id, field)`` of every mapped field the two systems disagree on, read now."""
    links = [link for batch in deals.storage.iter_links(deals.sync.name) for link in batch]
    left = {r.key: r.fields for r in deals.hubspot.read_records([k.left_key for k in links])}
    right = {r.key: r.fields for r in deals.salesforce.read_records([k.right_key for k in links])}

    def same(a: Any, b: Any) -> bool:
        # A multi-select is a set: Salesforce keeps its picklist's order, HubSpot the written one.
        if isinstance(a, list) and isinstance(b, list):
            return sorted(a) == sorted(b)
        return bool(a == b)

    return {
        (link.left_key, fm.left)
        for link in links
        for fm in deals.sync.fields
        if not same(
            left[link.left_key][fm.left], fm.transform.to_left(right[link.right_key][fm.right])
        )
    }


def requests(deals: Deals) -> dict[str, Counter[str]]:
    """HTTP requests sent per system and endpoint (HubSpot's search has its own limiter)."""
    hubspot = Counter(deals.hubspot.api.requests) + Counter(deals.hubspot.search_api.requests)
    salesforce = Counter(deals.salesforce.api.requests)
    auth = deals.salesforce.api.auth
    salesforce["POST /services/oauth2/token"] = getattr(auth, "refreshes", 0)
    return {"hubspot": hubspot, "salesforce": salesforce}


def listed(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items() if n) or "none"


def demo(world: Emulated) -> None:
    """The story: drift, cycle 1, webhooks, Salesforce edits, cycles 2 and 3; then the checks."""
    deals, clock, hs, sf = world.deals, world.clock, world.hubspot, world.salesforce
    d, opp = world.deal_ids, world.opp_ids
    drift(world)
    before = clock.now()
    deals.worker.run_once()  # the worker's first round runs the first cycle

    # People edit deals in HubSpot, which posts each change (syncrecon's own writes too).
    clock.advance(timedelta(minutes=2))
    hs.edit("deals", d[10], description="Sent the order form")
    hs.edit("deals", d[11], tags="enterprise;partner")
    hs.edit("deals", d[12], dealstage="closedwon")  # Salesforce owns the stage: deferred
    hs.edit("deals", d[13], amount="9999")  # escalated
    hs.edit("deals", d[14], description="Asked for a discount")  # its webhook is lost
    sent = [n for n in notifications(world, before) if n["objectId"] != int(d[14])]
    answers = Counter(deals.handler.handle(signed([n], clock)).status for n in sent)
    again = {**sent[-1], "attemptNumber": 1}  # HubSpot retries a delivery
    retried = json.loads(deals.handler.handle(signed([again], clock)).body)
    forged = {**sent[-1], "propertyValue": "Free of charge"}
    answers[deals.handler.handle(signed([forged], clock, "a guess")).status] += 1
    drained = deals.worker.run_once()  # the worker applies the stored events
    assert drained is not None

    # People edit opportunities in Salesforce: the next incremental cycle brings them over.
    clock.advance(timedelta(minutes=3))
    sf.edit("Opportunity", opp[d[15]], StageName="Closed Won")
    sf.edit("Opportunity", opp[d[16]], Description="PO 4711 received")
    sf.edit("Opportunity", opp[d[17]], Tags__c="Upsell;Enterprise")
    for _ in range(2):
        clock.advance(timedelta(minutes=15))
        deals.worker.run_once()  # cycle 2, then cycle 3

    sent_requests = requests(deals)
    waiting = {
        (item.left_key, item.field): str(item.category)
        for item in deals.storage.list_items(sync=deals.sync.name, statuses=[Status.ESCALATED])
    }
    differ = disagreements(deals)
    opportunities = sf.records("Opportunity")
    print(f"HubSpot deals <-> Salesforce opportunities (emulated: {len(d)} deals)")
    for n, cycle in enumerate(deals.reports, 1):
        print(
            f"cycle {n} ({cycle.mode}): {cycle.new_links} new links;"
            f" writes: hubspot {cycle.writes['left']}, salesforce {cycle.writes['right']}"
            f" (created {cycle.created['right']}); escalated: {listed(cycle.escalated)}"
        )
    print(
        f"webhooks: {answers[200]} requests accepted, {answers[401]} forged (401), 1 lost;"
        f" a retried delivery: {listed(retried)}; the worker: {listed(drained.outcomes)}"
    )
    print(f"waiting for an operator: {listed(Counter(waiting.values()))}")
    for name, counts in sent_requests.items():
        throttled = getattr(deals, name).api.throttled  # the 429s, retried after Retry-After
        print(f"{name} HTTP requests: {counts.total()} ({throttled} throttled): {listed(counts)}")
    print(
        f"converged: {'yes' if differ == set(waiting) else 'NO'} ({len(opportunities)}"
        f" opportunities for {len(d)} deals; the {len(differ)} fields that differ are escalated)"
    )

    # The expected end state (exit status 1 otherwise).
    assert differ == set(waiting) == {(d[5], "amount"), (d[6], "closedate"), (d[13], "amount")}
    keys = sorted(str(o["HubSpot_Id__c"]) for o in opportunities.values())
    assert keys == sorted(d), "one opportunity per deal, none created twice"
    assert deals.reports[0].new_links == 30
    assert deals.reports[-1].total_writes == 0, "converged: the last cycle wrote nothing"


def main() -> None:
    if all(os.environ.get(name) for name in LIVE):
        print(run_live(os.environ))
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        world = emulated(Path(directory))
        try:
            demo(world)
        finally:
            world.close()
    print(f"took {time.perf_counter() - started:.2f} s ({world.clock.now() - START} simulated)")


if __name__ == "__main__":
    main()
