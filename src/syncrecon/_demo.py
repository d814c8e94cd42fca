"""``python -m syncrecon demo``: two simulated CRMs drift apart; both loops keep them together.

People edit both systems for a simulated day. Each edit sends a signed webhook through a flaky
network (some lost, some held back behind later changes, some delivered twice) to the fast
loop, which applies what it safely can while some of its writes fail with 429s and 5xxs; then
reconciliation cycles repair the rest, from the drift no webhook reported to the conflicts the
fast loop left in the queue.
"""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ._connector import RetrySettings
from ._exceptions import TransientError
from ._models import FieldInfo, Side
from ._policy import values_equal
from ._reconciler import CycleReport, Reconciler
from ._scenario import NOTES, TAGS, deal_sync, hubspot_deal, simulated_pair, to_salesforce
from ._sync import SyncDefinition
from .storage._base import Status, Storage
from .storage.sqlite import SQLiteStorage
from .testing import FlakyNetwork, ManualClock, SimulatedSystem, WebhookEmitter, WebhookMessage
from .webhooks import GenericJsonParser, StandardWebhooksVerifier, WebhookHandler, WebhookSource

# The demo's webhook signing secret (Standard Webhooks: "whsec_" + base64 of the key).
SECRET = "whsec_ZGVtby1vbmx5OiBzeW5jcmVjb24gd2ViaG9vayBzZWNyZXQ="
WORKER_EVERY_S = 30.0  # how often the fast loop's worker drains the inbox (simulated seconds)
WRITE_FAILURE_RATE = 0.05  # share of the fast loop's write calls answered 429 or 5xx
BURST_CHANCE = 0.03  # per worker round: an outage that outlasts the retries (to the outbox)
OUTAGE_CALLS = RetrySettings().attempts


class _FastLoop:
    """The webhook side of the demo: providers, a flaky network, the handler and its worker.

    People's edits go through :meth:`edit` (and :meth:`delete`, :meth:`create`): the system
    changes and its webhook is sent. :meth:`wait` lets simulated time pass: deliveries arrive
    and the worker drains the inbox every ``WORKER_EVERY_S`` seconds, then sends the webhooks
    that the fast loop's own writes cause (real providers report API writes too).
    """

    def __init__(
        self,
        rng: random.Random,
        clock: ManualClock,
        sync: SyncDefinition,
        storage: Storage,
        retry: RetrySettings,
    ) -> None:
        self.rng = rng
        self.clock = clock
        self.systems: list[SimulatedSystem] = []
        sources = []
        self.emitters: dict[str, WebhookEmitter] = {}
        verifier = StandardWebhooksVerifier(secrets=[SECRET], clock=clock)
        for side in Side:
            system = sync.connector(side)
            assert isinstance(system, SimulatedSystem)
            self.systems.append(system)
            self.emitters[system.name] = WebhookEmitter(system, secret=SECRET, object_type="deal")
            sources.append(
                WebhookSource(
                    name=system.name,
                    sync=sync,
                    side=side,
                    verifier=verifier,
                    parser=GenericJsonParser(system=system.name),
                    object_type="deal",
                )
            )
            system.on_call("write_records", self._maybe_fail(system))
        self.handler = WebhookHandler(sources, storage, clock=clock, retry=retry)
        self.network = FlakyNetwork(rng, loss=0.05, reorder=0.2, duplicate=0.1)
        self.failing = False
        self.injected: Counter[str] = Counter()
        self.next_drain = clock.now()
        self.every = timedelta(seconds=WORKER_EVERY_S)
        self.outbox_retried = 0

    def _maybe_fail(self, system: SimulatedSystem) -> Callable[[object], None]:
        def hook(_changes: object) -> None:
            if not self.failing or self.rng.random() >= WRITE_FAILURE_RATE:
                return
            if self.rng.random() < 0.5:
                self.injected["429"] += 1
                system.rate_limit_next("write_records", retry_after=self.rng.choice([1, 5, 20]))
            else:
                self.injected["5xx"] += 1
                system.fail_next("write_records", TransientError("503 Service Unavailable"))

        return hook

    def _send(self, system: SimulatedSystem, message: WebhookMessage) -> None:
        self.network.send(self.emitters[system.name], message, self.clock.now())

    def edit(self, system: SimulatedSystem, key: str, **fields: Any) -> None:
        """A person edits a record; the system sends its webhook."""
        self._send(system, self.emitters[system.name].edit(key, **fields))

    def delete(self, system: SimulatedSystem, key: str) -> None:
        """A person deletes a record; the system sends its webhook."""
        system.delete(key)
        emitter = self.emitters[system.name]
        self._send(system, emitter.message(key, {}, at=self.clock.now(), deleted=True))

    def create(self, system: SimulatedSystem, fields: Mapping[str, Any]) -> None:
        """A person creates a record; the system sends its webhook."""
        key = system.create(fields)
        message = self.emitters[system.name].message(key, fields, at=self.clock.now(), created=True)
        self._send(system, message)

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass: deliveries arrive, the worker drains."""
        until = self.clock.now() + timedelta(seconds=seconds)
        while True:
            due = self.network.next_at()
            step = min(t for t in (due, self.next_drain, until) if t is not None)
            if step > until:
                break
            if step > self.clock.now():
                self.clock.set(step)
            for delivery in self.network.due(self.clock.now()):
                self.handler.handle(delivery.request())
            if self.clock.now() >= self.next_drain:
                self.drain()
            if step == until:
                break
        if until > self.clock.now():
            self.clock.set(until)

    def drain(self) -> None:
        """One round of the worker, then the webhooks of the writes it made."""
        if self.failing and self.rng.random() < BURST_CHANCE:
            # An outage that outlasts the retries: the next write goes to the outbox.
            system = self.rng.choice(self.systems)
            errors = [TransientError("503 Service Unavailable") for _ in range(OUTAGE_CALLS)]
            system.fail_next("write_records", *errors)
            self.injected["outage"] += 1
        report = self.handler.process_pending()
        self.outbox_retried += report.outbox_retried
        self.next_drain = self.clock.now() + self.every
        self.report_writes()

    def report_writes(self) -> None:
        """Send the webhooks the systems emit for writes made through their APIs."""
        for system in self.systems:
            for message in self.emitters[system.name].writes():
                self._send(system, message)

    def settle(self) -> None:
        """Wait until nothing is in flight, the inbox is empty and the outbox has run out."""
        quiet = 0
        self.every = timedelta(minutes=2)  # stragglers only: the worker can take its time
        while quiet < 2:
            sent = self.network.stats["sent"]
            self.wait(timedelta(minutes=30).total_seconds())
            busy = len(self.network) or self.network.stats["sent"] != sent
            quiet = 0 if busy else quiet + 1
        self.every = timedelta(seconds=WORKER_EVERY_S)

    def stop_failing(self) -> None:
        """No more injected write failures (and none left over)."""
        self.failing = False
        for system in self.systems:
            system.faults.call_failures.pop("write_records", None)


def _edit_day(
    rng: random.Random,
    fast: _FastLoop,
    hubspot: SimulatedSystem,
    salesforce: SimulatedSystem,
    pairs: list[tuple[str, str]],
) -> dict[str, int]:
    """A day of people editing both systems; every edit sends its webhook."""
    done: Counter[str] = Counter()
    stages = ["appointmentscheduled", "qualifiedtobuy", "contractsent", "closedwon", "closedlost"]
    picks = rng.sample(pairs, k=min(len(pairs), 900))
    for n, (h, s) in enumerate(picks):
        fast.wait(7)
        kind = n % 9
        if kind == 0:
            fast.edit(hubspot, h, dealstage=rng.choice(stages))
            done["stage edited in HubSpot"] += 1
        elif kind == 1:
            fast.edit(salesforce, s, StageName="Closed Lost")  # not the source of truth: reverted
            done["stage edited in Salesforce"] += 1
        elif kind == 2:
            fast.edit(salesforce, s, Description=rng.choice(NOTES) + " (sf)")
            done["notes edited in Salesforce"] += 1
        elif kind == 3:
            fast.edit(hubspot, h, notes=rng.choice(NOTES) + " (hs)")
            fast.wait(30)
            fast.edit(salesforce, s, Description=rng.choice(NOTES) + " (sf, later)")
            done["notes edited on both sides"] += 1
        elif kind == 4:
            tags = list(hubspot.get(h).fields["tags"])
            fast.edit(hubspot, h, tags=[*tags, rng.choice(TAGS)] if tags else [rng.choice(TAGS)])
            sf_tags = list(salesforce.get(s).fields["Tags__c"])
            fast.edit(salesforce, s, Tags__c=sf_tags[1:])
            done["tags edited on both sides"] += 1
        elif kind == 5 and n % 4 == 1:
            fast.edit(salesforce, s, Amount=salesforce.get(s).fields["Amount"] + 500)
            done["amount edited in Salesforce"] += 1
        elif kind == 6 and n % 4 == 2:
            fast.edit(hubspot, h, closedate=hubspot.get(h).fields["closedate"] + timedelta(days=14))
            done["close date edited in HubSpot"] += 1
        elif kind == 7 and n % 10 == 7:
            fast.delete(hubspot, h)
            done["deleted in HubSpot"] += 1
        elif kind == 8 and n % 30 == 8:
            fast.delete(salesforce, s)
            done["deleted in Salesforce"] += 1
    return dict(done)


def _disagreements(
    reconciler: Reconciler, hubspot: SimulatedSystem, salesforce: SimulatedSystem
) -> int:
    """Linked fields that differ between the systems and are not waiting for an operator."""
    sync = reconciler.sync
    storage = reconciler.storage
    escalated = {
        (i.left_key, i.field)
        for i in storage.list_items(sync=sync.name, statuses=[Status.ESCALATED], limit=1_000_000)
    }
    links = storage.get_links(sync.name, Side.LEFT, list(hubspot.records()))
    bad = 0
    for left_key, link in links.items():
        if (left_key, "*") in escalated:
            continue
        left = hubspot.get(left_key).fields
        try:
            right = salesforce.get(link.right_key).fields
        except KeyError:
            bad += 1
            continue
        for fm in sync.fields:
            if (left_key, fm.left) in escalated or (None, fm.left) in escalated:
                continue  # waiting for an operator (a quarantined field included)
            if not values_equal(left.get(fm.left), fm.transform.to_left(right.get(fm.right))):
                bad += 1
    return bad


def run_demo(*, seed: int = 7, records: int = 3000, db: str | None = None) -> dict[str, Any]:
    """Run the demo and return its summary (what ``--json`` prints)."""
    rng = random.Random(seed)
    # The simulated day ends about now, so `dashboard --db` shows it in its default window.
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    clock = ManualClock(start, tick=timedelta(milliseconds=10))
    hubspot, salesforce = simulated_pair(clock)
    pairs: list[tuple[str, str]] = []
    for i in range(records):
        deal = hubspot_deal(i, rng)
        pairs.append((hubspot.create(deal), salesforce.create(to_salesforce(deal))))
    for i in range(records, records + 40):
        hubspot.create(hubspot_deal(i, rng))
        salesforce.create(to_salesforce(hubspot_deal(i + 40, rng)))

    with tempfile.TemporaryDirectory() as tmp:
        path = db or str(Path(tmp) / "syncrecon-demo.sqlite")
        storage = SQLiteStorage(path)
        sync = deal_sync(hubspot, salesforce)
        retry = RetrySettings(sleep=clock.advance, rng=random.Random(seed))
        reconciler = Reconciler(sync, storage, clock=clock, retry=retry)
        reports: list[CycleReport] = [reconciler.run_cycle()]
        # The webhooks are registered after the initial sync: both loops run from here on.
        fast = _FastLoop(rng, clock, sync, storage, retry)

        clock.advance(timedelta(hours=4))
        fast.failing = True
        edits = _edit_day(rng, fast, hubspot, salesforce, pairs)
        duplicate = f"buyer{records + 500}@example.com"
        fast.create(hubspot, {**hubspot_deal(records + 500, rng), "email": duplicate})
        for _ in range(2):
            fast.create(
                salesforce, {**to_salesforce(hubspot_deal(records + 500, rng)), "Email": duplicate}
            )
        edits["duplicate candidates created"] = 1
        fast.settle()  # every delivery arrived (or never will); the outbox ran out
        fast.stop_failing()

        # Drift no webhook reports, and faults for the next cycle.
        salesforce.rate_limit_next("write_records", times=2, retry_after=3)
        salesforce.fail_next("list_records", TransientError("502 Bad Gateway"))
        rejected = pairs[-1][0]
        hubspot.edit(rejected, notes="will be rejected once")
        clock.advance(60)
        salesforce.edit(pairs[-1][1], Description="newer note from Salesforce")
        hubspot.reject(rejected, "VALIDATION_ERROR: notes locked by workflow")
        edits["faults injected"] = 4

        clock.advance(timedelta(hours=4))
        reports.append(reconciler.run_cycle())
        fast.report_writes()  # the providers report the cycle's writes: the fast loop's echoes
        fast.settle()
        hubspot.faults.rejected.clear()  # the workflow lock is lifted

        # A Salesforce admin turns the tags multi-select into a text field mid-run: the next
        # cycle quarantines the field and escalates it once; tag edits are held back.
        salesforce.set_fields(
            [
                FieldInfo(name="Tags__c", type="textarea") if f.name == "Tags__c" else f
                for f in salesforce.describe_fields()
            ]
        )
        edits["schema change: Tags__c became a text field"] = 1
        for n, (h, _s) in enumerate(pairs[:5]):
            clock.advance(timedelta(hours=4) if n == 0 else timedelta(seconds=30))
            if n == 0:
                reports.append(reconciler.run_cycle())
                fast.report_writes()
                fast.settle()
            fast.edit(hubspot, h, tags=["priority"])
        edits["tags edited while quarantined"] = 5
        fast.settle()
        clock.advance(timedelta(hours=4))
        reports.append(reconciler.run_cycle())
        fast.report_writes()
        fast.settle()
        remaining = _disagreements(reconciler, hubspot, salesforce)
        last = reports[-1]
        quarantined = list(last.quarantined)
        items = storage.list_items(sync="deals", limit=10_000_000)
        webhook_events: Counter[str] = Counter()
        for labels, n in storage.counter_totals("webhook_events"):
            webhook_events[labels["outcome"]] += n
        storage.close()

    auto: Counter[str] = Counter()
    for report in reports:
        auto.update(report.auto_resolved)
    escalated = Counter(i.category for i in items if i.status is Status.ESCALATED)
    open_items = [i for i in items if i.status is Status.OPEN]
    cycle_calls = sum(r.total_api_calls for r in reports)
    return {
        "converged": remaining == 0 and last.total_writes == 0 and not open_items,
        "disagreeing_fields": remaining,
        "discrepancies_found": len(items),
        "auto_resolved": dict(sorted(auto.items())),
        "escalated": dict(sorted(escalated.items())),
        "api_calls": cycle_calls,
        "webhook_events": dict(sorted(webhook_events.items())),
        "quarantined": quarantined,
        "fast_loop": {
            "webhooks_sent": fast.network.stats["sent"],
            "lost": fast.network.stats["lost"],
            "held_back": fast.network.stats["delayed"],
            "delivered_twice": fast.network.stats["duplicated"],
            "deliveries": fast.network.stats["delivered"],
            "write_failures_injected": dict(sorted(fast.injected.items())),
            "outbox_retries": fast.outbox_retried,
            "api_calls": hubspot.total_calls + salesforce.total_calls - cycle_calls,
        },
        "records": {"hubspot": len(hubspot), "salesforce": len(salesforce)},
        "edits": edits,
        "cycles": [_brief(r) for r in reports],
        "db": db,
    }


def _brief(report: CycleReport) -> dict[str, Any]:
    return {
        "mode": report.mode,
        "discrepancies_found": report.discrepancies_found,
        "auto_resolved": dict(report.auto_resolved),
        "escalated": dict(report.escalated),
        "writes": dict(report.writes),
        "write_failures": report.write_failures,
        "api_calls": dict(report.api_calls),
        "new_links": report.new_links,
    }


def render(summary: Mapping[str, Any]) -> str:
    """The demo's summary as text."""
    lines = ["syncrecon demo: HubSpot deals <-> Salesforce opportunities", ""]
    lines.append(f"records now: {summary['records']}")
    lines.append("what people did between cycles:")
    lines += [f"  {k}: {v}" for k, v in summary["edits"].items()]
    lines.append("")
    fast = summary["fast_loop"]
    lines.append(
        f"fast loop: {fast['webhooks_sent']} webhooks sent; the network lost {fast['lost']},"
        f" held back {fast['held_back']} behind later changes and delivered"
        f" {fast['delivered_twice']} twice; injected write failures"
        f" {fast['write_failures_injected']}, outbox retries {fast['outbox_retries']},"
        f" API calls {fast['api_calls']}"
    )
    lines.append(f"  webhook events by outcome: {summary['webhook_events']}")
    lines.append("")
    for n, cycle in enumerate(summary["cycles"], 1):
        lines.append(
            f"cycle {n} ({cycle['mode']}): found {cycle['discrepancies_found']},"
            f" auto-resolved {cycle['auto_resolved']}, escalated {cycle['escalated']},"
            f" writes {cycle['writes']}, failed writes {cycle['write_failures']},"
            f" API calls {cycle['api_calls']}"
        )
    lines.append("")
    lines.append(f"discrepancies found: {summary['discrepancies_found']}")
    lines.append(f"auto-resolved by rule: {summary['auto_resolved']}")
    lines.append(f"escalated to an operator by category: {summary['escalated']}")
    lines.append(f"API calls: {summary['api_calls']}")
    if summary.get("quarantined"):
        lines.append(
            f"quarantined by schema drift: {', '.join(summary['quarantined'])} (writes held back"
            " until an operator resolves its schema_drift item)"
        )
    verdict = "yes" if summary["converged"] else "NO"
    lines.append(
        f"the systems agree on every non-escalated field: {verdict}"
        f" ({summary['disagreeing_fields']} disagreeing)"
    )
    if summary.get("db"):
        lines.append(f"database kept at {summary['db']}")
    return "\n".join(lines)
