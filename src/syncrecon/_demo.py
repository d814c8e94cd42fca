"""``python -m syncrecon demo``: two simulated CRMs drift apart; both loops keep them together.

People edit both systems for a simulated day. Each edit sends a signed webhook through a flaky
network (some lost, some held back behind later changes, some delivered twice) to the fast
loop, which applies what it safely can while some of its writes fail with 429s and 5xxs; then
reconciliation cycles repair the rest, from the drift no webhook reported to the conflicts the
fast loop left in the queue.

The run keeps its database (``./syncrecon-demo.sqlite`` unless ``--db`` names another, replaced
on every run) and, next to it, the two systems' records, from which
:mod:`syncrecon.demo_app` rebuilds the sync: ``queue resolve --app syncrecon.demo_app:syncs``
writes to them after the demo has exited. The report (:func:`render`) has the same terms and
numbers as the dashboard of that database; ``--json`` prints the same as one object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from ._connector import RetrySettings
from ._exceptions import TransientError
from ._models import FieldInfo, Side
from ._policy import values_equal
from ._reconciler import CycleReport, Reconciler
from ._scenario import (
    NOTES,
    SALESFORCE_FIELDS,
    TAGS,
    deal_sync,
    hubspot_deal,
    simulated_pair,
    to_salesforce,
)
from ._sync import SyncDefinition
from .demo_app import DEFAULT_DB, ENV_VAR, FORMAT, save_systems, systems_path
from .queue._items import is_record_level
from .queue._views import shown
from .storage._base import RECORD_FIELD, Status, Storage
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
    tick: Callable[[int, int], None] = lambda done, total: None,
) -> dict[str, int]:
    """A day of people editing both systems; every edit sends its webhook.

    ``tick(done, total)`` is called before each of the ``total`` edits (for progress lines).
    """
    done: Counter[str] = Counter()
    stages = ["appointmentscheduled", "qualifiedtobuy", "contractsent", "closedwon", "closedlost"]
    picks = rng.sample(pairs, k=min(len(pairs), 900))
    for n, (h, s) in enumerate(picks):
        tick(n, len(picks))
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


STEPS = 6
"""The steps :func:`run_demo` reports to its :class:`Progress`."""

APP = "syncrecon.demo_app:syncs"
"""What ``queue resolve --app`` names to write to the demo's saved systems."""

WORKER_APP = "syncrecon.demo_app:worker"
"""What ``syncrecon worker`` names to run the demo's next cycle."""

_NAMES = {"hubspot": "HubSpot", "salesforce": "Salesforce"}

_OUTCOMES = {
    "applied": "written to the other system",
    "echo": "the webhook of syncrecon's own write",
    "deferred": "left to the reconciliation cycles (conflict, escalation, failed write)",
    "duplicate": "a delivery seen before",
    "stale": "older than a change already applied",
    "rejected": "refused at the door",
    "ignored": "about a field no sync maps",
}
"""What each fast-loop outcome means (:class:`~syncrecon.webhooks.EventOutcome`)."""


class Progress:
    """Progress lines on ``stream`` (the demo's stderr) for work that takes a while.

    On a terminal, one line rewritten in place (``[2/6]  1.4s  a day of ...: 450/900 edits``)
    and cleared by :meth:`close`; elsewhere one plain ``step 2/6 ...`` line per step. With
    ``stream=None`` nothing is written.
    """

    def __init__(
        self, total: int, stream: TextIO | None, *, tty: bool | None = None, every: float = 0.1
    ) -> None:
        self.total = total
        self.stream = stream
        if tty is None:
            try:
                tty = stream is not None and stream.isatty()
            except (AttributeError, ValueError):  # a closed or unusual stream
                tty = False
        self.tty = tty
        self.every = every
        self.n = 0
        self.title = ""
        self.started = time.monotonic()
        self._drawn = 0.0

    def step(self, title: str) -> None:
        """Start the next step."""
        self.n += 1
        self.title = title
        if self.stream is None:
            return
        if self.tty:
            self._draw("")
        else:
            self._write(f"step {self.n}/{self.total} {title}\n")

    def update(self, done: int, total: int, unit: str) -> None:
        """``done`` of the step's ``total`` units are done (shown on a terminal, throttled)."""
        if self.stream is None or not self.tty:
            return
        if time.monotonic() - self._drawn >= self.every:
            self._draw(f"{done}/{total} {unit}")

    def close(self) -> None:
        """Clear the terminal's progress line (the report follows on a clean line)."""
        if self.stream is not None and self.tty and self.n:
            self._write("\r\x1b[K")

    def _draw(self, detail: str) -> None:
        self._drawn = time.monotonic()
        head = f"[{self.n}/{self.total}] {self._drawn - self.started:4.1f}s  "
        tail = f": {detail}" if detail else ""
        room = max(shutil.get_terminal_size().columns - 1 - len(head) - len(tail), 10)
        title = self.title if len(self.title) <= room else self.title[: room - 1] + "…"
        self._write("\r\x1b[K" + head + title + tail)

    def _write(self, text: str) -> None:
        assert self.stream is not None
        self.stream.write(text)
        self.stream.flush()


def run_demo(
    *,
    seed: int = 7,
    records: int = 3000,
    db: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the demo and return its summary (what ``--json`` prints; :func:`render` reads it).

    With ``db`` the database is kept there and the two systems' records next to it
    (:func:`syncrecon.demo_app.systems_path`); both replace what was there, once the run is
    done. Without, the database is a temporary file, removed at the end.
    """
    if records < 1:
        raise ValueError(f"records must be at least 1, got {records}")
    progress = progress or Progress(STEPS, None)
    rng = random.Random(seed)
    # The simulated day (about 25 hours) ends a little before now, so `dashboard --db` shows it
    # in its default window and the systems' times stay in the past for what runs next.
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=27)
    clock = ManualClock(start, tick=timedelta(milliseconds=10))
    hubspot, salesforce = simulated_pair(clock)
    progress.step(f"{records} deals per system and the first cycle")
    pairs: list[tuple[str, str]] = []
    for i in range(records):
        deal = hubspot_deal(i, rng)
        pairs.append((hubspot.create(deal), salesforce.create(to_salesforce(deal))))
    only = 40
    for i in range(records, records + only):
        hubspot.create(hubspot_deal(i, rng))
        salesforce.create(to_salesforce(hubspot_deal(i + only, rng)))

    target = Path(db) if db is not None else None
    workdir = tempfile.TemporaryDirectory(
        dir=target.parent if target is not None else None, prefix=".syncrecon-demo-"
    )
    with workdir as tmp:
        path = Path(tmp) / (target.name if target is not None else DEFAULT_DB)
        storage = SQLiteStorage(path)
        sync = deal_sync(hubspot, salesforce)
        retry = RetrySettings(sleep=clock.advance, rng=random.Random(seed))
        reconciler = Reconciler(sync, storage, clock=clock, retry=retry)
        reports: list[CycleReport] = [reconciler.run_cycle()]
        # The webhooks are registered after the initial sync: both loops run from here on.
        fast = _FastLoop(rng, clock, sync, storage, retry)

        progress.step("a day of edits through the fast loop")
        clock.advance(timedelta(hours=4))
        fast.failing = True
        edits = _edit_day(
            rng, fast, hubspot, salesforce, pairs, lambda n, t: progress.update(n, t, "edits")
        )
        duplicate = f"buyer{records + 500}@example.com"
        fast.create(hubspot, {**hubspot_deal(records + 500, rng), "email": duplicate})
        for _ in range(2):
            fast.create(
                salesforce, {**to_salesforce(hubspot_deal(records + 500, rng)), "Email": duplicate}
            )
        edits["duplicate candidates created"] = 1
        fast.settle()  # every delivery arrived (or never will); the outbox ran out
        fast.stop_failing()

        progress.step("cycle 2: unreported drift and faults")
        salesforce.rate_limit_next("write_records", times=2, retry_after=3)
        salesforce.fail_next("list_records", TransientError("502 Bad Gateway"))
        # The last pair that the day left in both systems (a small run may delete the last).
        rejected, rejected_right = next(
            (h, r) for h, r in reversed(pairs) if _exists(hubspot, h) and _exists(salesforce, r)
        )
        hubspot.edit(rejected, notes="will be rejected once")
        clock.advance(60)
        salesforce.edit(rejected_right, Description="newer note from Salesforce")
        hubspot.reject(rejected, "VALIDATION_ERROR: notes locked by workflow")
        edits["faults injected"] = 4

        clock.advance(timedelta(hours=4))
        reports.append(reconciler.run_cycle())
        fast.report_writes()  # the providers report the cycle's writes: the fast loop's echoes
        fast.settle()
        hubspot.faults.rejected.clear()  # the workflow lock is lifted

        # A Salesforce admin turns the tags multi-select into a text field mid-run: the next
        # cycle quarantines the field and escalates it once; tag edits are held back.
        progress.step("cycle 3: Tags__c became a text field")
        salesforce.set_fields(
            [
                FieldInfo(name="Tags__c", type="textarea") if f.name == "Tags__c" else f
                for f in SALESFORCE_FIELDS
            ]
        )
        edits["schema change: Tags__c became a text field"] = 1
        clock.advance(timedelta(hours=4))
        reports.append(reconciler.run_cycle())
        fast.report_writes()
        fast.settle()
        tagged = [h for h, _r in pairs if _exists(hubspot, h)][:5]
        for n, h in enumerate(tagged):
            if n:
                clock.advance(timedelta(seconds=30))
            fast.edit(hubspot, h, tags=["priority"])
        edits["tags edited while quarantined"] = len(tagged)
        fast.settle()

        progress.step("cycle 4: the steady state")
        clock.advance(timedelta(hours=4))
        reports.append(reconciler.run_cycle())
        fast.report_writes()
        fast.settle()
        remaining = _disagreements(reconciler, hubspot, salesforce)

        progress.step("keeping the database and the systems")
        found = storage.list_items(sync=sync.name, limit=10_000_000)
        items = sorted(found, key=lambda i: i.id or 0)  # oldest first
        webhook_events: Counter[str] = Counter()
        for labels, n in storage.counter_totals("webhook_events"):
            webhook_events[labels["outcome"]] += n
        storage.close()

        kept: dict[str, str | None] = {"db": None, "systems_file": None}
        if target is not None:
            systems = systems_path(target)
            about = {"seed": seed, "records_per_system": records}
            save_systems(
                Path(tmp) / systems.name, hubspot, salesforce, database=target, about=about
            )
            _replace(path, target)
            os.replace(Path(tmp) / systems.name, systems)
            kept = {"db": str(target), "systems_file": str(systems)}

    return _summary(
        seed=seed,
        records=records,
        only=only,
        sync=sync,
        hubspot=hubspot,
        salesforce=salesforce,
        fast=fast,
        reports=reports,
        items=items,
        webhook_events=webhook_events,
        edits=edits,
        remaining=remaining,
        kept=kept,
    )


def _exists(system: SimulatedSystem, key: str) -> bool:
    try:
        system.get(key)
    except KeyError:
        return False
    return True


def _replace(built: Path, target: Path) -> None:
    """Move the database built at ``built`` to ``target``, over the previous run's.

    A previous database's write-ahead log must never be read as this one's: it is removed,
    or replaced by this database's own if closing left one.
    """
    for suffix in ("-wal", "-shm", "-journal"):
        own, old = Path(f"{built}{suffix}"), Path(f"{target}{suffix}")
        if own.exists():
            os.replace(own, old)
        else:
            old.unlink(missing_ok=True)
    os.replace(built, target)


_AFTER = (
    "the initial load (no webhooks yet)",
    "a day of edits, drift, faults",
    "Tags__c became a text field",
    "tag edits held by the quarantine",
)
"""What came before each cycle, as the cycles table says it."""


def _ranked(counts: Mapping[str, int]) -> dict[str, int]:
    """Largest first, then by name; zeros dropped (the dashboard's order)."""
    return {k: v for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if v}


def _rule_words(policy: Any, left: str, right: str) -> str:
    name = getattr(policy, "name", "")
    if name == "source_of_truth":
        side = getattr(policy, "side", None)
        return f"{left if side is Side.LEFT else right} always wins"
    if name == "recency":
        return "the latest edit wins"
    if name == "merge":
        return "both lists merged"
    if name == "escalate":
        return f"an operator decides ({getattr(policy, 'category', '?')})"
    return repr(policy)


def _summary(
    *,
    seed: int,
    records: int,
    only: int,
    sync: SyncDefinition,
    hubspot: SimulatedSystem,
    salesforce: SimulatedSystem,
    fast: _FastLoop,
    reports: Sequence[CycleReport],
    items: Sequence[Any],
    webhook_events: Mapping[str, int],
    edits: Mapping[str, int],
    remaining: int,
    kept: Mapping[str, str | None],
) -> dict[str, Any]:
    left, right = _NAMES[hubspot.name], _NAMES[salesforce.name]
    last = reports[-1]
    auto: Counter[str] = Counter()
    cycle_calls: Counter[str] = Counter()
    for report in reports:
        auto.update(report.auto_resolved)
        cycle_calls.update(report.api_calls)
    by_status = Counter(i.status.value for i in items)
    # As the dashboard counts number 4: the items that went to an operator, each once.
    to_operator = [
        i for i in items if i.status in (Status.ESCALATED, Status.RESOLVED, Status.DISMISSED)
    ]
    waiting = [i for i in items if i.status is Status.ESCALATED]
    fast_calls = {
        system.name: system.total_calls - cycle_calls[system.name]
        for system in (hubspot, salesforce)
    }
    # An open item of a quarantined field waits for the operator's schema_drift decision, as
    # the field's other differences do (a write that failed just before the quarantine).
    held = set(last.quarantined)
    unsettled = [i for i in items if i.status is Status.OPEN and i.field not in held]
    converged = remaining == 0 and last.total_writes == 0 and not unsettled
    summary: dict[str, Any] = {
        "seed": seed,
        "records_per_system": records,
        "converged": converged,
        "disagreeing_fields": remaining,
        "setup": {
            "left": hubspot.name,
            "right": salesforce.name,
            "linked": records,
            "only_left": only,
            "only_right": only,
            "natural_key": {"left": sync.natural_key.left, "right": sync.natural_key.right}
            if sync.natural_key
            else None,
            "fields": [
                {
                    "left": fm.left,
                    "right": fm.right,
                    "rule": getattr(fm.policy, "name", repr(fm.policy)),
                    "says": _rule_words(fm.policy, left, right),
                }
                for fm in sync.fields
            ],
            "create_on": sorted(s.value for s in sync.create_on),
            "delete_from": sync.delete_from.value if sync.delete_from else None,
        },
        "edits": dict(edits),
        "fast_loop": {
            "webhooks_sent": fast.network.stats["sent"],
            "lost": fast.network.stats["lost"],
            "held_back": fast.network.stats["delayed"],
            "delivered_twice": fast.network.stats["duplicated"],
            "deliveries": fast.network.stats["delivered"],
            "write_failures_injected": dict(sorted(fast.injected.items())),
            "outbox_retries": fast.outbox_retried,
            "events": {
                "total": sum(webhook_events.values()),
                "by_outcome": _ranked(webhook_events),
            },
        },
        "cycles": [_brief(n, r) for n, r in enumerate(reports, 1)],
        "reconciliation": {
            "cycles": len(reports),
            "cycles_by_mode": _ranked(Counter(r.mode for r in reports)),
            "discrepancies_found": sum(r.discrepancies_found for r in reports),
            "new_discrepancies": len(items),
            "created": sum(sum(r.created.values()) for r in reports),
        },
        "auto_resolved": {"total": sum(auto.values()), "by_rule": _ranked(auto)},
        "escalated": {
            "total": len(to_operator),
            "by_category": _ranked(Counter(i.category or "uncategorized" for i in to_operator)),
        },
        "queue": {
            "items": len(items),
            "by_status": _ranked(by_status),
            "queue_depth": len(waiting),
            "held_by_quarantine": sum(
                1 for i in items if i.status is Status.OPEN and i.field in held
            ),
            "examples": _examples(waiting),
        },
        "api_calls": {
            "reconciliation": {
                **dict(sorted(cycle_calls.items())),
                "total": sum(cycle_calls.values()),
            },
            "fast_loop": {**fast_calls, "total": sum(fast_calls.values())},
            "total": hubspot.total_calls + salesforce.total_calls,
        },
        "quarantined": list(last.quarantined),
        "records": {hubspot.name: len(hubspot), salesforce.name: len(salesforce)},
        **kept,
        "app": APP if kept.get("db") else None,
    }
    summary["next"] = _next_steps(summary)
    return summary


def _brief(n: int, report: CycleReport) -> dict[str, Any]:
    return {
        "cycle": n,
        "after": _AFTER[n - 1] if n <= len(_AFTER) else "",
        "mode": report.mode,
        "discrepancies_found": report.discrepancies_found,
        "auto_resolved": dict(report.auto_resolved),
        "escalated": dict(report.escalated),
        "writes": dict(report.writes),
        "created": dict(report.created),
        "deleted": dict(report.deleted),
        "write_failures": report.write_failures,
        "api_calls": dict(report.api_calls),
        "new_links": report.new_links,
    }


def _examples(waiting: Sequence[Any]) -> list[dict[str, Any]]:
    """One waiting item per category (the oldest), field items of a record first."""
    seen: dict[str, dict[str, Any]] = {}
    for item in waiting:
        category = item.category or "uncategorized"
        if category in seen:
            continue
        values = about = None
        if not is_record_level(item):
            values = f"{shown(item.left_value, 24)} | {shown(item.right_value, 24)}"
        else:
            about = "whole record" if item.field == RECORD_FIELD else "whole field"
        seen[category] = {
            "id": item.id,
            "category": category,
            "field": item.field,
            "left_key": item.left_key,
            "right_key": item.right_key,
            "values": values,
            "about": about,
        }
    return sorted(seen.values(), key=lambda e: (e["values"] is None, e["id"]))


def _next_steps(summary: Mapping[str, Any]) -> list[dict[str, str]]:
    """The commands to run next, each with what it shows (the database must be kept)."""
    db = summary.get("db")
    if not db:
        return []
    quoted = shlex.quote(db)
    default = Path(db).resolve() == Path(DEFAULT_DB).resolve()
    env = "" if default else f"{ENV_VAR}={quoted} "
    cli = "python -m syncrecon"
    steps = [
        {
            "what": "the dashboard of this run (the same numbers as this report)",
            "command": f"{cli} dashboard --db {quoted}",
        },
        {"what": "what waits for an operator", "command": f"{cli} queue --db {quoted} list"},
    ]
    field_items = [e for e in summary["queue"]["examples"] if e["values"] is not None]
    if field_items:
        first = next((e for e in field_items if e["category"] == "deal_value"), field_items[0])
        item = first["id"]
        left = _NAMES.get(summary["setup"]["left"], summary["setup"]["left"])
        right = _NAMES.get(summary["setup"]["right"], summary["setup"]["right"])
        steps += [
            {
                "what": f"item {item}: both values, the base and why it waits",
                "command": f"{cli} queue --db {quoted} show {item}",
            },
            {
                "what": f"take {left}'s {first['field']} for it: written to the saved"
                f" {right} record",
                "command": f"{env}{cli} queue --db {quoted} resolve {item} --take left --app {APP}",
            },
        ]
    steps.append(
        {
            "what": "run the next cycle over the same systems (the dashboard then shows it)",
            "command": f"{env}{cli} worker {WORKER_APP} --once",
        }
    )
    return steps


# -- the report --------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> list[str]:
    """Columns padded to their widest cell: text left-aligned, numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        bool(rows) and all(isinstance(row[i], int) or _NUMBER.match(str(row[i])) for row in rows)
        for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return (indent + "  ".join(parts)).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return [line(headers), rule, *map(line, cells)]


_NUMBER = re.compile(r"^(-?[0-9][0-9.]*%?|n/a|)$")
"""A cell that lines up as a number (right-aligned): ``12``, ``4.7%``, ``n/a`` or empty."""


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "n/a"


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def render(summary: Mapping[str, Any]) -> str:
    """The demo's summary as a report a person reads: aligned tables in five sections."""
    setup, fast, rec = summary["setup"], summary["fast_loop"], summary["reconciliation"]
    queue, calls = summary["queue"], summary["api_calls"]
    left = _NAMES.get(setup["left"], setup["left"])
    right = _NAMES.get(setup["right"], setup["right"])
    out = [
        f"syncrecon demo: {left} deals <-> {right} opportunities"
        f" (seed {summary['seed']}, {summary['records_per_system']} deals per system)",
        "",
    ]
    if summary["converged"]:
        out.append(
            "Result: the systems agree on every field not waiting for an operator"
            f" ({_plural(queue['queue_depth'], 'queue item')} wait)."
        )
    else:
        out.append(
            f"Result: NOT converged: {_plural(summary['disagreeing_fields'], 'field')} still"
            " disagree outside the queue."
        )

    out += ["", "1. What was set up"]
    key = setup["natural_key"]
    out.append(
        f"  Two simulated CRMs in memory: {left} (left) and {right} (right),"
        + (f" matched by {key['left']} / {key['right']}." if key else ".")
    )
    out.append(
        f"  {setup['linked']} deals in both, {setup['only_left']} only in {left},"
        f" {setup['only_right']} only in {right}."
    )
    out += _table(
        [f"field ({left} / {right})", "rule"],
        [[f"{f['left']} / {f['right']}", f"{f['rule']}: {f['says']}"] for f in setup["fields"]],
    )
    sides = {"left": left, "right": right}
    if setup["create_on"]:
        on = " and ".join(sides[s] for s in setup["create_on"])
        out.append(f"  A deal missing on one side is created there (create_on: {on}).")
    if setup["delete_from"]:
        source = sides[setup["delete_from"]]
        other = right if setup["delete_from"] == "left" else left
        out.append(
            f"  A deletion in {source} is made in {other} too (delete_from); one in {other} is"
            " escalated."
        )

    out += ["", "2. The fast loop: a simulated day of edits, each sent as a webhook"]
    day = {k: v for k, v in summary["edits"].items() if k not in _BETWEEN_CYCLES}
    out += _table(["what people did", "count"], [[k, v] for k, v in day.items()])
    injected = fast["write_failures_injected"]
    out.append("")
    out += _table(
        ["what went wrong on purpose", "count"],
        [
            ["webhooks sent (people's edits and syncrecon's own writes)", fast["webhooks_sent"]],
            ["  lost by the network", fast["lost"]],
            ["  held back behind later changes", fast["held_back"]],
            ["  delivered twice", fast["delivered_twice"]],
            ["write calls answered 429 (rate limited)", injected.get("429", 0)],
            ["write calls answered 5xx", injected.get("5xx", 0)],
            [
                "outages longer than the retries (write kept in the outbox)",
                injected.get("outage", 0),
            ],
            ["outbox retries", fast["outbox_retries"]],
        ],
    )
    events = fast["events"]
    out.append("")
    out.append(
        f"  Fast-loop events: {events['total']} (one per field change a delivery reported;"
        " the dashboard's number 1)"
    )
    total = events["total"]
    out += _table(
        ["outcome", "events", "share", "meaning"],
        [[o, n, _share(n, total), _OUTCOMES.get(o, "")] for o, n in events["by_outcome"].items()],
    )

    esc = summary["escalated"]
    settled = rec["new_discrepancies"] - esc["total"]
    out += ["", "3. The reconciliation cycles (the dashboard's number 2)"]
    out.append(
        f"  {_plural(rec['cycles'], 'cycle')}"
        f" ({', '.join(f'{m} {n}' for m, n in rec['cycles_by_mode'].items())}),"
        f" {_plural(rec['discrepancies_found'], 'discrepancy', 'discrepancies')} found"
        " (one that waits is counted by every cycle)"
    )
    out.append(
        f"  {_plural(rec['new_discrepancies'], 'new queue item')}: {settled} settled"
        f" automatically, {esc['total']} sent to an operator"
    )
    rows: list[list[Any]] = []
    for c in summary["cycles"]:
        rows.append(
            [
                c["cycle"],
                c["after"],
                c["discrepancies_found"],
                sum(c["auto_resolved"].values()),
                sum(c["escalated"].values()),
                sum(c["writes"].values()),
                c["write_failures"],
                sum(c["api_calls"].values()),
            ]
        )
    rows.append(
        [
            "all",
            "",
            rec["discrepancies_found"],
            summary["auto_resolved"]["total"],
            "",
            sum(r[5] for r in rows),
            sum(r[6] for r in rows),
            calls["reconciliation"]["total"],
        ]
    )
    out += _table(
        [
            "cycle",
            "after",
            "found",
            "auto-resolved",
            "for an operator",
            "writes",
            "failed",
            "API calls",
        ],
        rows,
    )
    out.append(
        "  A cycle counts every discrepancy it sees, also those still waiting for an operator;"
        " counted"
    )
    out.append(
        f"  once each, they are the {_plural(rec['new_discrepancies'], 'new queue item')}"
        + (
            f" and {_plural(rec['created'], 'record')} created (creates open no item)."
            if rec["created"]
            else "."
        )
    )
    auto = summary["auto_resolved"]
    out.append("")
    out.append(f"  Auto-resolved by rule: {auto['total']} (the dashboard's number 3)")
    out += _table(
        ["rule", "count", "share"],
        [[r, n, _share(n, auto["total"])] for r, n in auto["by_rule"].items()],
        indent="    ",
    )
    if summary["quarantined"]:
        out.append(
            f"  Quarantined by the schema change: {', '.join(summary['quarantined'])} (held back"
            " until its schema_drift item is resolved)."
        )
    verdict = "yes" if summary["disagreeing_fields"] == 0 else "NO"
    out.append(
        f"  Every field not waiting for an operator agrees: {verdict}"
        f" ({_plural(summary['disagreeing_fields'], 'field')} disagree)."
    )

    out.append("")
    out.append("  API calls (connector calls, retries included; the systems are simulated, so the")
    out.append("  dashboard's table of HTTP API requests stays empty for this demo):")
    systems = [setup["left"], setup["right"]]
    out += _table(
        ["loop", *(_NAMES.get(s, s) for s in systems), "total"],
        [
            [
                "reconciliation cycles",
                *(calls["reconciliation"].get(s, 0) for s in systems),
                calls["reconciliation"]["total"],
            ],
            [
                "fast loop",
                *(calls["fast_loop"].get(s, 0) for s in systems),
                calls["fast_loop"]["total"],
            ],
            [
                "both loops",
                *(
                    calls["reconciliation"].get(s, 0) + calls["fast_loop"].get(s, 0)
                    for s in systems
                ),
                calls["total"],
            ],
        ],
        indent="    ",
    )

    out += ["", "4. The operator queue"]
    out.append(
        f"  {_plural(queue['items'], 'queue item')}: {settled} settled automatically,"
        f" {esc['total']} sent to an operator; {queue['queue_depth']}"
        f" {'waits' if queue['queue_depth'] == 1 else 'wait'} for an operator now."
    )
    if queue["held_by_quarantine"]:
        out.append(
            f"  {_plural(queue['held_by_quarantine'], 'item')} open: a write that failed just"
            f" before the quarantine of {', '.join(summary['quarantined'])}, held back with it."
        )
    out.append(f"  Sent to an operator, by category: {esc['total']} (the dashboard's number 4)")
    out += _table(
        ["category", "items", "share"],
        [[c, n, _share(n, esc["total"])] for c, n in esc["by_category"].items()],
        indent="    ",
    )
    if queue["examples"]:
        out.append("  One of each (queue list shows them all):")
        out += _table(
            ["id", "category", "record", "field", f"{left} | {right}"],
            [
                [
                    e["id"],
                    e["category"],
                    f"{e['left_key'] or '-'} / {e['right_key'] or '-'}",
                    e["field"],
                    e["values"] or f"({e['about']})",
                ]
                for e in queue["examples"]
            ],
            indent="    ",
        )

    out += ["", "5. What to try next"]
    if summary.get("db"):
        out.append(f"  The database is kept at {Path(summary['db']).resolve()},")
        out.append(
            f"  the two systems' records next to it in {Path(summary['systems_file']).name}"
            " (the next demo run replaces both)."
        )
        for step in summary["next"]:
            out.append(f"  {step['what'][0].upper()}{step['what'][1:]}:")
            out.append(f"    {step['command']}")
    else:
        out.append("  The database was not kept: run with --db PATH to keep it.")
    return "\n".join(out)


_BETWEEN_CYCLES = (
    "faults injected",
    "schema change: Tags__c became a text field",
    "tags edited while quarantined",
)
"""Edits that came between cycles, not during the day of the fast loop."""


# -- the command line --------------------------------------------------------------------------


def _is_demo_database(db: Path) -> bool:
    """Whether ``db`` is a database an earlier demo run left (its systems file says so)."""
    try:
        data = json.loads(systems_path(db).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict) and data.get("format") == FORMAT and data.get("database") == db.name
    )


def check_database(db: Path) -> str | None:
    """Why the demo cannot keep its database at ``db`` (``None`` when it can).

    The demo replaces its database on every run, so an existing file must be one a demo left.
    """
    if db.is_dir():
        return f"{db} is a directory; --db names the database file"
    if not db.parent.is_dir():
        return f"no directory {db.parent} for the database {db}"
    if db.exists() and not _is_demo_database(db):
        return (
            f"{db} exists and is not a demo database (no {systems_path(db).name} of it next to"
            " it); the demo replaces its database on every run, so choose another --db or"
            " remove that file"
        )
    return None


def run_cli(args: argparse.Namespace) -> int:
    """Run ``syncrecon demo``: the report (or ``--json``) on stdout, progress on stderr.

    Returns 0 when the systems converged, 1 when they did not, 2 for a bad argument.
    """
    if args.records < 1:
        print(f"syncrecon demo: --records must be at least 1, got {args.records}", file=sys.stderr)
        return 2
    db = Path(args.db or DEFAULT_DB)
    problem = check_database(db)
    if problem is not None:
        print(f"syncrecon demo: {problem}", file=sys.stderr)
        return 2
    progress = Progress(STEPS, sys.stderr)
    try:
        summary = run_demo(seed=args.seed, records=args.records, db=db, progress=progress)
    finally:
        progress.close()
    print(json.dumps(summary, sort_keys=True) if args.json else render(summary))
    return 0 if summary["converged"] else 1
