"""``python -m syncrecon demo``: two simulated CRMs drift apart and reconciliation repairs them."""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from ._connector import RetrySettings
from ._exceptions import TransientError
from ._models import Side
from ._policy import values_equal
from ._reconciler import CycleReport, Reconciler
from ._scenario import NOTES, TAGS, deal_sync, hubspot_deal, simulated_pair, to_salesforce
from .storage._base import Status
from .storage.sqlite import SQLiteStorage
from .testing import ManualClock, SimulatedSystem


def _edit_day(
    rng: random.Random,
    clock: ManualClock,
    hubspot: SimulatedSystem,
    salesforce: SimulatedSystem,
    pairs: list[tuple[str, str]],
) -> dict[str, int]:
    """A day of people editing both systems, with the drift that webhooks would have missed."""
    done: Counter[str] = Counter()
    stages = ["appointmentscheduled", "qualifiedtobuy", "contractsent", "closedwon", "closedlost"]
    picks = rng.sample(pairs, k=min(len(pairs), 900))
    for n, (h, s) in enumerate(picks):
        clock.advance(7)
        kind = n % 9
        if kind == 0:
            hubspot.edit(h, dealstage=rng.choice(stages))
            done["stage edited in HubSpot"] += 1
        elif kind == 1:
            salesforce.edit(s, StageName="Closed Lost")  # not the source of truth: reverted
            done["stage edited in Salesforce"] += 1
        elif kind == 2:
            salesforce.edit(s, Description=rng.choice(NOTES) + " (sf)")
            done["notes edited in Salesforce"] += 1
        elif kind == 3:
            hubspot.edit(h, notes=rng.choice(NOTES) + " (hs)")
            clock.advance(30)
            salesforce.edit(s, Description=rng.choice(NOTES) + " (sf, later)")
            done["notes edited on both sides"] += 1
        elif kind == 4:
            tags = list(hubspot.get(h).fields["tags"])
            hubspot.edit(h, tags=[*tags, rng.choice(TAGS)] if tags else [rng.choice(TAGS)])
            sf_tags = list(salesforce.get(s).fields["Tags__c"])
            salesforce.edit(s, Tags__c=sf_tags[1:])
            done["tags edited on both sides"] += 1
        elif kind == 5 and n % 4 == 1:
            salesforce.edit(s, Amount=salesforce.get(s).fields["Amount"] + 500)
            done["amount edited in Salesforce"] += 1
        elif kind == 6 and n % 4 == 2:
            hubspot.edit(h, closedate=hubspot.get(h).fields["closedate"] + timedelta(days=14))
            done["close date edited in HubSpot"] += 1
        elif kind == 7 and n % 10 == 7:
            hubspot.delete(h)
            done["deleted in HubSpot"] += 1
        elif kind == 8 and n % 30 == 8:
            salesforce.delete(s)
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
            if (left_key, fm.left) in escalated:
                continue
            if not values_equal(left.get(fm.left), fm.transform.to_left(right.get(fm.right))):
                bad += 1
    return bad


def run_demo(*, seed: int = 7, records: int = 3000, db: str | None = None) -> dict[str, Any]:
    """Run the demo and return its summary (what ``--json`` prints)."""
    rng = random.Random(seed)
    clock = ManualClock(tick=timedelta(milliseconds=10))
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
        reconciler = Reconciler(
            deal_sync(hubspot, salesforce),
            storage,
            clock=clock,
            retry=RetrySettings(sleep=clock.advance, rng=random.Random(seed)),
        )
        reports: list[CycleReport] = [reconciler.run_cycle()]

        clock.advance(timedelta(hours=4))
        edits = _edit_day(rng, clock, hubspot, salesforce, pairs)
        duplicate = f"buyer{records + 500}@example.com"
        hubspot.create({**hubspot_deal(records + 500, rng), "email": duplicate})
        for _ in range(2):
            salesforce.create(
                {**to_salesforce(hubspot_deal(records + 500, rng)), "Email": duplicate}
            )
        edits["duplicate candidates created"] = 1
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
        hubspot.faults.rejected.clear()  # the workflow lock is lifted
        clock.advance(timedelta(hours=4))
        reports.append(reconciler.run_cycle())
        clock.advance(timedelta(hours=4))
        reports.append(reconciler.run_cycle())
        remaining = _disagreements(reconciler, hubspot, salesforce)
        last = reports[-1]
        items = storage.list_items(sync="deals", limit=10_000_000)
        storage.close()

    auto: Counter[str] = Counter()
    for report in reports:
        auto.update(report.auto_resolved)
    escalated = Counter(i.category for i in items if i.status is Status.ESCALATED)
    open_items = [i for i in items if i.status is Status.OPEN]
    return {
        "converged": remaining == 0 and last.total_writes == 0 and not open_items,
        "disagreeing_fields": remaining,
        "discrepancies_found": len(items),
        "auto_resolved": dict(sorted(auto.items())),
        "escalated": dict(sorted(escalated.items())),
        "api_calls": sum(r.total_api_calls for r in reports),
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
    verdict = "yes" if summary["converged"] else "NO"
    lines.append(
        f"the systems agree on every non-escalated field: {verdict}"
        f" ({summary['disagreeing_fields']} disagreeing)"
    )
    if summary.get("db"):
        lines.append(f"database kept at {summary['db']}")
    return "\n".join(lines)
