"""Step 5, report: what one cycle found and did (:class:`CycleReport`) and its counters.

The cycle's steps, in the order it runs them, each a class extending the one before (a later step
calls an earlier one, never the reverse): ``_state`` -> ``_read`` -> ``_match`` -> ``_decide`` ->
``_write`` -> ``_report`` -> ``_run`` (:class:`_Cycle`, the driver).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from .._models import Side
from .._stash import Stash
from ..storage._base import Counter
from ._state import _SIDE_INDEX
from ._write import _Write


@attrs.frozen(kw_only=True)
class CycleReport:
    """What one reconciliation cycle found and did.

    ``discrepancies_found`` counts fields (and records) whose two sides differed.
    ``auto_resolved`` counts, per rule, the discrepancies fixed by a successful write (in a dry
    run: that would be fixed). ``escalated`` counts, per category, what went to an operator.
    ``api_calls`` counts connector calls per system, retries included; for a connector that
    counts its HTTP requests (``Capabilities.retries_requests``, every connector built on
    :mod:`syncrecon.http`) it counts those requests, what providers bill and limit.
    ``api_requests`` breaks the HTTP requests down per system by endpoint
    (``{"hubspot": {"POST /crm/v3/objects/deals/search": 3, ...}}``). ``records`` counts the
    records each system returned (listed or read by key, tombstones included).

    What the sources did wrong, per system: ``listing_missed`` counts linked records a full
    sweep's listing did not return although they exist (found by a read by key, so repaired);
    ``invalid_records`` counts entries that were not valid records (skipped and escalated as
    ``invalid_record``); ``partial_records`` counts records that still lacked a mapped field
    after one read by key; ``read_failures`` counts records whose read by key failed (not
    compared this cycle). ``unknown_fields`` counts linked fields not decided because a side did
    not return them (absent is unknown, never blank).

    ``unchanged`` counts the linked records found unchanged without reading their base, by how:
    ``modification_time`` (not modified since a cycle found them equal to their base; not used
    in a full sweep) and ``digest`` (their mapped values hash to what they were then).

    ``timings`` holds the CPU seconds of each phase (``read``, ``match``, ``compare``,
    ``decide``, ``write``), and under ``connectors`` those spent inside connector calls (the
    phases include them): a phase's own cost is its time less the connectors' share.
    """

    cycle_id: str
    sync: str
    mode: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime
    records: Mapping[str, int]
    pairs_compared: int
    new_links: int
    discrepancies_found: int
    auto_resolved: Mapping[str, int]
    escalated: Mapping[str, int]
    writes: Mapping[str, int]
    created: Mapping[str, int]
    deleted: Mapping[str, int]
    write_failures: int
    skipped_changed: int
    api_calls: Mapping[str, int]
    halted: str | None = None
    timings: Mapping[str, float] = attrs.field(factory=dict)
    quarantined: tuple[str, ...] = ()
    listing_missed: Mapping[str, int] = attrs.field(factory=dict)
    invalid_records: Mapping[str, int] = attrs.field(factory=dict)
    partial_records: Mapping[str, int] = attrs.field(factory=dict)
    unknown_fields: int = 0
    read_failures: Mapping[str, int] = attrs.field(factory=dict)
    api_requests: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)
    unchanged: Mapping[str, int] = attrs.field(factory=dict)

    @property
    def total_api_calls(self) -> int:
        """Connector calls over both systems."""
        return sum(self.api_calls.values())

    @property
    def total_writes(self) -> int:
        """Records written (updated, created or deleted) over both systems."""
        return sum(self.writes.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        out = attrs.asdict(self)
        out["started_at"] = self.started_at.isoformat()
        out["finished_at"] = self.finished_at.isoformat()
        out["api_calls_total"] = self.total_api_calls
        return out

    def __str__(self) -> str:
        return self.describe()

    def describe(self, names: Mapping[str, str] | None = None) -> str:
        """The report as a person reads it, one line per concern.

        ``names`` maps the sides (``"left"``, ``"right"``) to the systems' names, used for the
        counts kept per side (records, writes, creates, deletes): ``writes: crm 0, erp 0``.
        """
        sides = dict(names or {})

        def listed(counts: Mapping[str, int], *, by_side: bool = False) -> str:
            shown = [f"{sides.get(k, k) if by_side else k} {n}" for k, n in counts.items()]
            return ", ".join(shown) or "none"

        lines = [
            f"cycle {self.cycle_id} of {self.sync!r}"
            f" ({self.mode}{', dry run' if self.dry_run else ''})",
            f"  records read: {listed(self.records, by_side=True)};"
            f" pairs compared: {self.pairs_compared}; new links: {self.new_links}",
            f"  discrepancies found: {self.discrepancies_found}",
            f"  auto-resolved by rule: {listed(self.auto_resolved)}",
            f"  escalated by category: {listed(self.escalated)}",
            f"  writes: {listed(self.writes, by_side=True)};"
            f" created: {listed(self.created, by_side=True)};"
            f" deleted: {listed(self.deleted, by_side=True)}; failed: {self.write_failures};"
            f" skipped (changed since read): {self.skipped_changed}",
            f"  API calls: {listed(self.api_calls)}",
        ]
        for system, by_endpoint in self.api_requests.items():
            shown = ", ".join(f"{endpoint} {n}" for endpoint, n in by_endpoint.items())
            lines.append(f"  {system} requests: {shown}")
        if self.quarantined:
            lines.append(f"  quarantined (schema drift): {', '.join(self.quarantined)}")
        problems = {
            "missed by the listing": self.listing_missed,
            "invalid records": self.invalid_records,
            "records lacking mapped fields": self.partial_records,
            "failed reads": self.read_failures,
        }
        for what, counts in problems.items():
            if any(counts.values()):
                lines.append(f"  {what}: {listed(counts, by_side=True)}")
        if self.unknown_fields:
            lines.append(f"  fields not decided (not returned): {self.unknown_fields}")
        if any(self.unchanged.values()):
            shown = ", ".join(
                f"by {how.replace('_', ' ')} {n}" for how, n in self.unchanged.items()
            )
            lines.append(f"  records unchanged: {shown}")
        if self.halted:
            lines.append(f"  HALTED: {self.halted}")
        return "\n".join(lines)


class _Report(_Write):
    """Reporting: the cycle's report and the counters stored with it."""

    def _report(
        self,
        mode: str,
        started: datetime,
        finished: datetime,
        halted: str | None,
        stash: Stash | None,
        *,
        records: Mapping[str, int] | None = None,
        pairs: int | None = None,
    ) -> CycleReport:
        t = self.t
        if records is None:
            assert stash is not None
            records = {side.value: stash.count(_SIDE_INDEX[side]) for side in Side}
        if pairs is None:
            assert stash is not None
            pairs = 0 if halted else stash.count_pairs()
        return CycleReport(
            cycle_id=self.id,
            sync=self.sync.name,
            mode=mode,
            dry_run=self.dry_run,
            started_at=started,
            finished_at=finished,
            records=dict(records),
            pairs_compared=pairs,
            new_links=t.new_links,
            discrepancies_found=t.found,
            auto_resolved=dict(sorted(t.auto.items())),
            escalated=dict(sorted(t.escalated.items())),
            writes={side.value: t.writes[side.value] for side in Side},
            created={side.value: t.created[side.value] for side in Side},
            deleted={side.value: t.deleted[side.value] for side in Side},
            write_failures=t.write_failures,
            skipped_changed=t.skipped,
            api_calls={
                self.sync.connector(side).name: self.caller.calls.get(
                    self.sync.connector(side).name, 0
                )
                for side in Side
            },
            halted=halted,
            timings={**t.timings, "connectors": round(self.caller.cpu_in_calls, 6)},
            quarantined=tuple(sorted(self.quarantined)),
            listing_missed=dict(sorted(t.missed.items())),
            invalid_records=dict(sorted(t.invalid.items())),
            partial_records=dict(sorted(t.partial.items())),
            unknown_fields=t.unknown_fields,
            read_failures=dict(sorted(t.read_failures.items())),
            unchanged=dict(sorted(t.unchanged.items())),
            api_requests={
                system: dict(sorted(by_endpoint.items()))
                for system, by_endpoint in sorted(self.caller.requests.items())
            },
        )

    def _counters(self, report: CycleReport) -> list[Counter]:
        sync = self.sync.name
        out = [
            Counter(metric="cycles", labels={"sync": sync, "mode": report.mode}),
            Counter(
                metric="discrepancies", labels={"sync": sync}, amount=report.discrepancies_found
            ),
        ]
        out += [
            Counter(metric="auto_resolved", labels={"sync": sync, "rule": rule}, amount=n)
            for rule, n in report.auto_resolved.items()
        ]
        out += [
            Counter(metric="escalated", labels={"sync": sync, "category": cat}, amount=n)
            for cat, n in report.escalated.items()
        ]
        out += [
            Counter(metric="api_calls", labels={"sync": sync, "system": system}, amount=n)
            for system, n in report.api_calls.items()
        ]
        out += [
            Counter(
                metric="api_requests",
                labels={"sync": sync, "system": system, "endpoint": endpoint},
                amount=n,
            )
            for system, by_endpoint in report.api_requests.items()
            for endpoint, n in by_endpoint.items()
        ]
        return [c for c in out if c.amount]
