"""The cycle's state, which every step extends: what the steps share, and its bookkeeping.

Owns the cycle's attributes (:class:`_CycleState`), its lease (taken, renewed by
:class:`_Heartbeat`, fencing every commit), commits, new and closed queue items, phase
timings, the tally the report is built from (:class:`_Tally`), and the helpers shared by
every step.

The cycle's steps, in the order it runs them, each a class extending the one before (a later step
calls an earlier one, never the reverse): ``_state`` -> ``_read`` -> ``_match`` -> ``_decide`` ->
``_write`` -> ``_report`` -> ``_run`` (:class:`_Cycle`, the driver).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter as TallyCounter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from .._clock import ts
from .._connector import Caller
from .._drift import merges_as_list
from .._exceptions import InvalidRecordError, LeaseHeldError, LeaseLostError
from .._models import Side
from ..storage._base import RECORD_FIELD, Discrepancy, ItemKey, ItemUpdate, Status, Step

if TYPE_CHECKING:
    from .._reconciler import Reconciler


log = logging.getLogger("syncrecon.reconciler")


_SIDE_INDEX = {Side.LEFT: 0, Side.RIGHT: 1}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_MICROSECOND = timedelta(microseconds=1)


def _micros(value: datetime) -> int:
    """An aware time as whole microseconds since the epoch (what a mark keeps)."""
    return (value - _EPOCH) // _MICROSECOND


def _iso(value: datetime | None) -> str | None:
    return None if value is None else ts(value)


@attrs.define
class _Tally:
    found: int = 0
    new_links: int = 0
    write_failures: int = 0
    skipped: int = 0
    auto: TallyCounter[str] = attrs.field(factory=TallyCounter)
    escalated: TallyCounter[str] = attrs.field(factory=TallyCounter)
    writes: TallyCounter[str] = attrs.field(factory=TallyCounter)
    created: TallyCounter[str] = attrs.field(factory=TallyCounter)
    deleted: TallyCounter[str] = attrs.field(factory=TallyCounter)
    missed: TallyCounter[str] = attrs.field(factory=TallyCounter)
    invalid: TallyCounter[str] = attrs.field(factory=TallyCounter)
    read_failures: TallyCounter[str] = attrs.field(factory=TallyCounter)
    partial: TallyCounter[str] = attrs.field(factory=TallyCounter)
    unchanged: TallyCounter[str] = attrs.field(factory=TallyCounter)
    unknown_fields: int = 0
    timings: dict[str, float] = attrs.field(factory=dict)


class _Heartbeat:
    """Renews a cycle's lease every third of its ttl while the cycle runs (a daemon thread).

    A renewal that finds the lease lost (taken by another worker after it expired) records a
    :class:`LeaseLostError`; the cycle raises it at its next batch, and every commit it tries
    meanwhile is refused by the storage's fence.
    """

    def __init__(self, cycle: _CycleState) -> None:
        self.cycle = cycle
        self.interval = max(cycle.rec.lease_ttl.total_seconds() / 3, 0.01)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"syncrecon-lease-{cycle.id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        cycle = self.cycle
        name, owner = cycle.lease, cycle.owner
        while not self._stop.wait(self.interval):
            try:
                ok = cycle.storage.renew_lease(name, owner, cycle.rec.lease_ttl, cycle.clock.now())
            except Exception:  # a storage hiccup: the next beat tries again
                log.warning("renewing the lease %s failed", name, exc_info=True)
                continue
            if not ok:
                held = cycle.storage.lease_holder(name)
                cycle.lost = LeaseLostError(
                    f"the lease of the cycle of {cycle.sync.name!r} was lost"
                    + (f" to {held[0]}" if held else "")
                    + "; the cycle stops and commits nothing more",
                    name=name,
                    owner=held[0] if held else None,
                    until=held[1] if held else None,
                )
                log.error("%s", cycle.lost)
                return


class _CycleState:
    """One cycle's state. Not reused."""

    def __init__(
        self, rec: Reconciler, caller: Caller, *, dry_run: bool, full: bool | None
    ) -> None:
        self.rec = rec
        self.sync = rec.sync
        self.storage = rec.storage
        self.clock = rec.clock
        self.caller = caller
        self.dry_run = dry_run
        self.force_full = full
        self._fields = rec.sync.fields
        self.id = uuid.uuid4().hex[:16]
        self.t = _Tally()
        self.active: dict[ItemKey, Discrepancy] = {}
        self.by_link: dict[tuple[str, str], list[Discrepancy]] = {}
        self.marks: dict[Side, datetime | None] = {Side.LEFT: None, Side.RIGHT: None}
        self.fence: tuple[str, str] | None = None
        self.applied: dict[tuple[str, str], datetime] = {}
        self.started: datetime | None = None
        # The batch's echo entries with a source time: (side, key, field, fingerprint) -> time.
        self.echoed: dict[tuple[Side, str, str, str], datetime] = {}
        self.echoed_fields: set[tuple[Side, str, str]] = set()
        self.invalid_seen: set[tuple[Side, str]] = set()
        self.lost: LeaseLostError | None = None
        self.incremental = False
        self.held: list[tuple[int, str]] = []
        self.quarantined: frozenset[str] = frozenset()
        self.side_step = Step(at=rec.clock.now())
        self.field_info: dict[Side, dict[str, Mapping[str, Any]]] = {}
        self._lists = {fm.left: merges_as_list(fm) for fm in self._fields}
        self._names: dict[Side, frozenset[str]] = {
            Side.LEFT: frozenset(fm.left for fm in self._fields),
            Side.RIGHT: frozenset(fm.right for fm in self._fields),
        }
        # Keys of listed records that lacked a mapped field: re-read by key once.
        self.partial: dict[Side, list[str]] = {Side.LEFT: [], Side.RIGHT: []}
        self.listing = False
        self.invalid: dict[Side, list[InvalidRecordError]] = {Side.LEFT: [], Side.RIGHT: []}
        # Unchanged records (see SeenMark): staged light, without their base, unless they have
        # active queue items (``forced``) or are the counterpart of a changed left record.
        self.trust_times = False
        self.forced: dict[Side, set[str]] = {Side.LEFT: set(), Side.RIGHT: set()}
        self.want_full: set[str] = set()  # right keys whose left record was staged changed
        self.all_full = False  # want_full grew past its bound: stage every right record in full
        nk = rec.sync.natural_key
        self._nk_unmapped = nk is not None and nk.left not in self._names[Side.LEFT]
        # One owner per cycle: two cycles of one Reconciler (two threads) exclude each other.
        self.owner = f"{rec.owner}:{self.id}"
        self.lease = rec.lease_name

    def _acquire(self, now: datetime) -> None:
        """Take this cycle's lease (fencing every commit by it), or raise LeaseHeldError."""
        name = self.lease
        if not self.storage.acquire_lease(name, self.owner, self.rec.lease_ttl, now):
            held = self.storage.lease_holder(name)
            message = f"a cycle of sync {self.sync.name!r} is already running"
            if name != self.rec.lease_name:
                message = f"{name} is already being worked on"
            if held is None:
                raise LeaseHeldError(message, name=name)
            raise LeaseHeldError(
                f"{message}: {held[0]} holds the lease until {held[1].isoformat()}",
                name=name,
                owner=held[0],
                until=held[1],
            )
        self.fence = (name, self.owner)

    def _renew_lease(self) -> None:
        """Between batches: stop at once if the heartbeat found the lease lost."""
        if self.lost is not None:
            raise self.lost

    def _load_active(self) -> None:
        """The sync's active queue items, by key and by link; their records are read in full."""
        self.active = self.storage.active_items(self.sync.name)
        for item in self.active.values():
            self.by_link.setdefault((item.left_key or "", item.right_key or ""), []).append(item)
            for side in Side:
                key = item.left_key if side is Side.LEFT else item.right_key
                if key:
                    self.forced[side].add(key)

    def _phase(self, name: str, began: float) -> None:
        self.t.timings[name] = round(self.t.timings.get(name, 0.0) + time.process_time() - began, 6)

    def _commit(self, step: Step) -> list[int]:
        if self.dry_run or step.is_empty():
            return [0] * len(step.new_items)
        step.fence = self.fence
        return self.storage.commit(step)

    def _item(self, **kwargs: Any) -> Discrepancy:
        return Discrepancy(
            sync=self.sync.name, detected_at=self.clock.now(), cycle_id=self.id, **kwargs
        )

    def _escalation(
        self,
        *,
        category: str,
        rule: str,
        explanation: str,
        field: str = RECORD_FIELD,
        left_key: str | None = None,
        right_key: str | None = None,
    ) -> Discrepancy:
        """A new escalated item (a record-level one by default), counted in the report."""
        self.t.found += 1
        self.t.escalated[category] += 1
        return self._item(
            left_key=left_key,
            right_key=right_key,
            field=field,
            status=Status.ESCALATED,
            rule=rule,
            category=category,
            explanation=explanation,
        )

    def _close_record_item(self, step: Step, key: ItemKey, category: str, note: str) -> None:
        """Resolve an active record-level item of ``category`` whose cause went away."""
        prior = self.active.get(key)
        if prior is None or prior.category != category or prior.id is None:
            return
        step.item_updates.append(
            ItemUpdate(id=prior.id, status=Status.RESOLVED, resolved_at=self.clock.now(), note=note)
        )

    def _settle_link(self, step: Step, left_key: str, right_key: str, note: str) -> None:
        """Close every active item of a link whose records no longer exist."""
        closing = {u.id for u in step.item_updates}
        for prior in self.by_link.get((left_key, right_key), []):
            if prior.id is None or prior.id in closing:
                continue
            status = Status.AUTO_RESOLVED if prior.status is Status.OPEN else Status.RESOLVED
            if status is Status.AUTO_RESOLVED and prior.rule:
                self.t.auto[prior.rule] += 1
            step.item_updates.append(
                ItemUpdate(id=prior.id, status=status, resolved_at=self.clock.now(), note=note)
            )
