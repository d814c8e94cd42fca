"""Sharded cycles: one cycle of a large sync split into shards that several workers run at once.

A sharded cycle has three steps, each under a lease and each fencing its commits by it:

1. **plan** (the cycle's lease ``cycle:<sync>``): check the schema, choose the mode, ask each
   connector for its partitions, and store the plan (:class:`~syncrecon.storage.ShardPlan`);
2. **shards** (one lease each, ``cycle:<sync>/shard-<i>``, any worker, any process or host
   sharing the storage): shard ``i`` lists partition ``i`` of both systems and decides and
   writes the field updates of the linked pairs whose left record is in its partition (it owns
   them: a right record whose link's left record is another shard's is left to that shard,
   which reads it by key). Everything that needs the whole picture it leaves, with its partial
   report, in its result: the records linked to nothing (matching and creating), and the pairs
   with a side gone (deletes, which wait for the mass-delete guard over the whole cycle);
3. **finish** (the cycle's lease again), once every shard has a result: stage what the shards
   left, match, run the mass-delete guard over every deletion of the cycle, decide, write the
   creates and deletes, and store one report (the shards' partial reports summed) with the
   watermarks, in the transaction that drops the plan.

A shard that fails, or whose worker dies (its lease expires), has no result: the cycle does not
finish, no delete is applied, and running the shard again (or ``run_cycle(shards=...)``, which
resumes an unfinished plan) completes it. Its field updates already written stay written; the
redone shard finds them agreed.

A connector that offers partitions (:class:`~syncrecon.PartitionedConnector`) is read once in
all; one that does not is listed whole by every shard, which keeps the records whose key hashes
to it: that splits syncrecon's work but multiplies the listing's API calls by the shards.
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ._clock import parse_ts, ts
from ._connector import (
    Caller,
    list_page,
    list_partition_page,
    list_partitions,
    offers_partitions,
)
from ._cycle import CycleReport, _Cycle, _Heartbeat
from ._cycle._match import MASS_DELETE_CATEGORY
from ._cycle._state import _SIDE_INDEX
from ._exceptions import ConfigurationError, CycleHaltedError, LeaseHeldError
from ._models import Page, Record, Side
from ._stash import Stash
from .storage._base import (
    CycleRecord,
    LinkMark,
    ShardPlan,
    ShardResult,
    ShardStore,
    Step,
)

if TYPE_CHECKING:
    from ._reconciler import Reconciler

__all__ = ["combine_reports", "shard_lease"]

log = logging.getLogger("syncrecon.shards")

_INTS = (
    "pairs_compared",
    "new_links",
    "discrepancies_found",
    "write_failures",
    "skipped_changed",
    "unknown_fields",
)
_COUNTS = (
    "records",
    "auto_resolved",
    "escalated",
    "writes",
    "created",
    "deleted",
    "api_calls",
    "listing_missed",
    "invalid_records",
    "partial_records",
    "read_failures",
    "unchanged",
)


def shard_lease(sync: str, shard: int) -> str:
    """The lease that keeps two workers off one shard of ``sync``'s sharded cycle."""
    return f"cycle:{sync}/shard-{shard}"


def combine_reports(
    parts: Sequence[Mapping[str, Any]],
    *,
    cycle_id: str,
    sync: str,
    mode: str,
    started_at: datetime,
    finished_at: datetime,
    halted: str | None = None,
) -> CycleReport:
    """One cycle's report from the partial reports of its steps (as ``to_dict`` gives them):
    counts and API calls summed, CPU timings summed over the workers."""
    out: dict[str, Any] = {name: sum(int(p.get(name, 0)) for p in parts) for name in _INTS}
    for name in _COUNTS:
        merged: dict[str, int] = {}
        for part in parts:
            for key, n in dict(part.get(name, {})).items():
                merged[key] = merged.get(key, 0) + int(n)
        out[name] = dict(sorted(merged.items()))
    timings: dict[str, float] = {}
    requests: dict[str, dict[str, int]] = {}
    quarantined: set[str] = set()
    for part in parts:
        for key, seconds in dict(part.get("timings", {})).items():
            timings[key] = round(timings.get(key, 0.0) + float(seconds), 6)
        for system, by_endpoint in dict(part.get("api_requests", {})).items():
            into = requests.setdefault(system, {})
            for endpoint, n in dict(by_endpoint).items():
                into[endpoint] = into.get(endpoint, 0) + int(n)
        quarantined.update(part.get("quarantined", ()))
    return CycleReport(
        cycle_id=cycle_id,
        sync=sync,
        mode=mode,
        dry_run=False,
        started_at=started_at,
        finished_at=finished_at,
        halted=halted,
        timings=timings,
        quarantined=tuple(sorted(quarantined)),
        api_requests={s: dict(sorted(e.items())) for s, e in sorted(requests.items())},
        **out,
    )


def _shard_store(rec: Reconciler) -> ShardStore:
    store = rec.storage
    if not isinstance(store, ShardStore):
        raise ConfigurationError(
            f"{store!r} does not keep sharded cycles (the ShardStore role): run unsharded cycles"
        )
    return store


def _spec_time(value: str | None) -> datetime | None:
    return None if value is None else parse_ts(value)


class _Planner(_Cycle):
    """The plan step: mode, schema check, partitions; stores the :class:`ShardPlan`."""

    def plan(self, shards: int) -> ShardPlan:
        store = _shard_store(self.rec)
        started = self.clock.now()
        self.started = started
        self._acquire(started)
        try:
            unfinished = store.open_shard_plans(self.sync.name)
            if unfinished:
                return unfinished[0]  # resume it: one sharded cycle of a sync at a time
            state = self.storage.get_sync_state(self.sync.name)
            incremental = self._incremental(state.watermarks, state.last_full_sweep, started)
            trust_times = (
                self.force_full is not True
                and state.last_full_sweep is not None
                and started - state.last_full_sweep < self.rec.full_sweep_every
            )
            self._load_active()
            quarantined = self._check_schema()
            parts = {}
            for side in Side:
                connector = self.sync.connector(side)
                offered = offers_partitions(connector)
                parts[side.value] = (
                    list_partitions(self.caller, connector, shards) if offered else []
                )
            mode = "incremental" if incremental else "full"
            prelude = self._report(
                mode,
                started,
                started,
                None,
                None,
                records={side.value: 0 for side in Side},
                pairs=0,
            )
            since = {
                side.value: ts(state.watermarks[side] - self.rec.overlap) if incremental else None
                for side in Side
            }
            plan = ShardPlan(
                cycle_id=self.id,
                sync=self.sync.name,
                shards=shards,
                created_at=started,
                spec={
                    "mode": mode,
                    "since": since,
                    "trust_times": trust_times,
                    "full_sweep": not incremental and not trust_times,
                    "partitions": parts,
                    "quarantined": sorted(quarantined),
                    "prelude": prelude.to_dict(),
                },
            )
            self.storage.commit(Step(at=started, shard_plan=plan, fence=self.fence))
            return plan
        finally:
            self.storage.release_lease(self.lease, self.owner)


class _PlannedCycle(_Cycle):
    """A step of a planned sharded cycle: its id, start, mode and partitions come from the plan."""

    def __init__(self, rec: Reconciler, caller: Caller, plan: ShardPlan) -> None:
        super().__init__(rec, caller, dry_run=False, full=None)
        spec = plan.spec
        self.plan = plan
        self.id = plan.cycle_id
        self.owner = f"{rec.owner}:{plan.cycle_id}:{uuid.uuid4().hex[:8]}"
        self.started = plan.created_at
        self.mode = str(spec["mode"])
        self.incremental = self.mode == "incremental"
        self.trust_times = bool(spec["trust_times"])
        self.quarantined = frozenset(spec["quarantined"])
        self.parts: dict[Side, list[str]] = {
            side: list(spec["partitions"][side.value]) for side in Side
        }
        self.since = {side: _spec_time(spec["since"][side.value]) for side in Side}

    def _bucket(self, side: Side, key: str) -> int:
        """The shard a record of ``side`` belongs to: its connector's partition, or its key's
        hash for a connector without partitions."""
        parts = self.parts[side]
        if parts:
            connector: Any = self.sync.connector(side)
            return int(connector.partition_of(key, parts))
        return zlib.crc32(key.encode()) % self.plan.shards


class _Shard(_PlannedCycle):
    """One shard: list its partitions, decide and write the field updates of the pairs it
    owns, and leave the rest (with its partial report) in its result."""

    def __init__(self, rec: Reconciler, caller: Caller, plan: ShardPlan, index: int) -> None:
        super().__init__(rec, caller, plan)
        self.index = index
        self.lease = shard_lease(self.sync.name, index)
        self.began: dict[Side, datetime] = {}
        self.foreign: list[tuple[str, str]] = []

    def run_shard(self) -> bool:
        """Run this shard; False when it has a result already or the cycle is finished."""
        store = _shard_store(self.rec)
        self._acquire(self.clock.now())
        beat = _Heartbeat(self)
        beat.start()
        try:
            if store.get_shard_plan(self.id) is None or self.index in store.shard_results(self.id):
                return False
            with Stash(self.rec.scratch_dir) as stash:
                self._run_shard(stash)
            return True
        finally:
            beat.stop()
            self.storage.release_lease(self.lease, self.owner)

    def _run_shard(self, stash: Stash) -> None:
        self._load_active()
        began = time.process_time()
        for side in Side:
            self._stage_listing(stash, side, self.since[side])
        self._stage_counterparts(stash)
        self._phase("read", began)
        records = {side.value: stash.count(_SIDE_INDEX[side]) for side in Side}
        # What this shard read of the other shards' pairs' right records (incremental): the
        # finish step need not read those again.
        claimed = stash.staged_keys(1) if self.incremental else []
        rec, seen, held = stash.take_later()
        began = time.process_time()
        self._compare(stash)
        self._phase("compare", began)
        began = time.process_time()
        self._execute(stash)
        self._phase("write", began)
        now = self.clock.now()
        assert self.started is not None
        report = self._report(self.mode, self.started, now, None, stash, records=records)
        body = {
            "report": report.to_dict(),
            "marks": {side.value: None if m is None else ts(m) for side, m in self.marks.items()},
            "began": {side.value: ts(at) for side, at in self.began.items()},
            "rec": rec,
            "seen": seen,
            "held": held,
            "foreign": self.foreign,
            "claimed": claimed,
        }
        result = ShardResult(cycle_id=self.id, shard=self.index, finished_at=now, body=body)
        self._commit(Step(at=now, shard_results=[result]))

    def _stage_listing(self, stash: Stash, side: Side, since: datetime | None) -> None:
        self.began[side] = self.clock.now()
        super()._stage_listing(stash, side, since)

    def _list_page(self, side: Side, since: datetime | None, cursor: str | None) -> Page:
        connector = self.sync.connector(side)
        parts = self.parts[side]
        if parts:
            if self.index >= len(parts):
                return Page(records=[], next_cursor=None)  # fewer partitions than shards
            return list_partition_page(
                self.caller,
                connector,
                parts[self.index],
                since=since,
                cursor=cursor,
                invalid=self.invalid[side],
            )
        # No partitions: list everything, keep this shard's share (no saving on reads).
        page = list_page(
            self.caller, connector, since=since, cursor=cursor, invalid=self.invalid[side]
        )
        mine = [r for r in page.records if self._bucket(side, r.key) == self.index]
        return Page(records=mine, next_cursor=page.next_cursor)

    def _owns(self, left_key: str) -> bool:
        return self._bucket(Side.LEFT, left_key) == self.index

    def _keep(
        self, side: Side, records: Sequence[Record], marks: Mapping[str, LinkMark]
    ) -> Sequence[Record]:
        if side is Side.LEFT:
            return records  # listed from its partition, or the counterpart of a kept record
        kept = []
        for record in records:
            mark = marks.get(record.key)
            if mark is None or self._owns(mark.left_key):
                kept.append(record)
            elif self.incremental:
                # Changed, and another shard's pair: that shard reads it only if its own left
                # record changed too; the finish step reads the pair otherwise.
                self.foreign.append((record.key, mark.left_key))
        return kept

    def _scan_links(self, stash: Stash) -> bool:
        return True  # the links of this shard's left records: counting them is the scan


class _Finish(_PlannedCycle):
    """The finish step: what needs the whole cycle, then one report."""

    def finish(self) -> CycleReport | None:
        """The cycle's report, or None when a shard has no result yet (or it is finished)."""
        store = _shard_store(self.rec)
        self._acquire(self.clock.now())
        beat = _Heartbeat(self)
        beat.start()
        try:
            if store.get_shard_plan(self.id) is None:
                return None
            results = store.shard_results(self.id)
            missing = [i for i in range(self.plan.shards) if i not in results]
            if missing:
                log.info("sharded cycle %s: shards %s are not finished", self.id, missing)
                return None
            with Stash(self.rec.scratch_dir) as stash:
                return self._finish(stash, results)
        finally:
            beat.stop()
            self.storage.release_lease(self.lease, self.owner)

    def _finish(self, stash: Stash, results: Mapping[int, ShardResult]) -> CycleReport:
        self._load_active()
        began = time.process_time()
        claimed: set[str] = set()
        foreign: dict[str, str] = {}
        for result in results.values():
            body = result.body
            stash.put([tuple(row) for row in body["rec"]])  # type: ignore[misc]
            stash.put_unchanged([tuple(row) for row in body["seen"]])
            stash.hold([(int(side), str(key)) for side, key in body["held"]])
            claimed.update(body["claimed"])
            foreign.update((str(rk), str(lk)) for rk, lk in body["foreign"])
        loaded = {side: stash.count(_SIDE_INDEX[side]) for side in Side}
        wanted = {rk: lk for rk, lk in foreign.items() if rk not in claimed}
        if wanted:
            # Changed right records of pairs whose shard did not read them: read both sides.
            self._read_by_key(stash, Side.LEFT, sorted(set(wanted.values())))
            self._read_by_key(stash, Side.RIGHT, sorted(wanted))
            for side in Side:
                self.forced[side].update(self.partial[side])
                self._read_by_key(stash, side, sorted(set(self.partial[side])))
                self.partial[side].clear()
            partners = stash.light_partners()
            self.forced[Side.RIGHT].update(partners)
            self._read_by_key(stash, Side.RIGHT, partners)
        self._escalate_invalid()
        stash.checkpoint()
        self._phase("read", began)
        records = {side.value: stash.count(_SIDE_INDEX[side]) - loaded[side] for side in Side}

        halted = self._settle(stash, self.mode, incremental=self.incremental, write=True)

        finished = self.clock.now()
        assert self.started is not None
        own = self._report(self.mode, self.started, finished, halted, stash, records=records)
        parts = [self.plan.spec["prelude"], *(r.body["report"] for r in results.values())]
        report = combine_reports(
            [*parts, own.to_dict()],
            cycle_id=self.id,
            sync=self.sync.name,
            mode=self.mode,
            started_at=self.started,
            finished_at=finished,
            halted=halted,
        )
        step = Step(at=finished, shard_plan_done=self.id)
        if halted is None:
            for side in Side:
                mark = self._combined_mark(side, results)
                if mark is not None:
                    step.watermarks.append((self.sync.name, side, mark))
            if self.plan.spec["full_sweep"]:
                step.full_sweeps.append((self.sync.name, self.started))
        step.cycle = CycleRecord(
            id=self.id,
            sync=self.sync.name,
            started_at=self.started,
            finished_at=finished,
            mode=self.mode,
            dry_run=False,
            report=report.to_dict(),
        )
        step.counters.extend(self._counters(report))
        self._commit(step)
        if halted is not None and self.rec.raise_on_halt:
            raise CycleHaltedError(halted, reason=MASS_DELETE_CATEGORY)
        return report

    @staticmethod
    def _combined_mark(side: Side, results: Mapping[int, ShardResult]) -> datetime | None:
        """The newest change any shard listed, but never past the earliest shard's listing
        start (what an unsharded cycle's watermark is: see ``_advance_mark``)."""
        marks = [r.body["marks"].get(side.value) for r in results.values()]
        starts = [r.body["began"].get(side.value) for r in results.values()]
        listed = [parse_ts(m) for m in marks if m is not None]
        if not listed:
            return None
        began = [parse_ts(s) for s in starts if s is not None]
        return min([max(listed), *began])


def plan_cycle(rec: Reconciler, shards: int, *, full: bool | None = None) -> ShardPlan:
    """Store the plan of a sharded cycle of ``rec``'s sync (or return the unfinished one)."""
    if shards < 1:
        raise ConfigurationError("a sharded cycle needs at least one shard")
    _shard_store(rec)
    with Caller(rec.retry) as caller:
        return _Planner(rec, caller, dry_run=False, full=full).plan(shards)


def _plan_of(rec: Reconciler, cycle_id: str) -> ShardPlan | None:
    return _shard_store(rec).get_shard_plan(cycle_id)


def run_shard(rec: Reconciler, cycle_id: str, shard: int, *, finish: bool) -> CycleReport | None:
    """Run one shard; with ``finish``, then finish the cycle if every shard is done."""
    plan = _plan_of(rec, cycle_id)
    if plan is None:
        log.info("sharded cycle %s is finished (or was never planned)", cycle_id)
        return None
    if not 0 <= shard < plan.shards:
        raise ConfigurationError(f"sharded cycle {cycle_id} has shards 0 to {plan.shards - 1}")
    with Caller(rec.retry) as caller:
        _Shard(rec, caller, plan, shard).run_shard()
    if not finish:
        return None
    try:
        return finish_cycle(rec, cycle_id)
    except LeaseHeldError:
        return None  # another worker is finishing it


def finish_cycle(rec: Reconciler, cycle_id: str) -> CycleReport | None:
    """Finish a sharded cycle whose shards are all done; None while some are not.

    A shard's worker that finds the finish lease held leaves the finish to its holder
    (:func:`run_shard`), so a holder that saw a shard missing reads the results again after
    releasing the lease: a result stored while it held the lease is never left unfinished.
    """
    first = True
    while True:
        plan = _plan_of(rec, cycle_id)
        if plan is None:
            return None
        try:
            with Caller(rec.retry) as caller:
                report = _Finish(rec, caller, plan).finish()
        except LeaseHeldError:
            if first:
                raise
            return None  # taken after we released it: that holder reads every result
        if report is not None:
            return report
        done = _shard_store(rec).shard_results(cycle_id)
        if any(i not in done for i in range(plan.shards)):
            return None  # a shard is still running: its worker finishes the cycle
        first = False


def stored_report(rec: Reconciler, cycle_id: str) -> CycleReport | None:
    """The stored report of a finished cycle (a worker finished it)."""
    for cycle in rec.storage.list_cycles(sync=rec.sync.name, limit=20):
        if cycle.id == cycle_id:
            report = dict(cycle.report)
            return combine_reports(
                [report],
                cycle_id=cycle.id,
                sync=cycle.sync,
                mode=cycle.mode,
                started_at=cycle.started_at,
                finished_at=cycle.finished_at,
                halted=report.get("halted"),
            )
    return None


def run_sharded(
    rec: Reconciler,
    shards: int,
    *,
    full: bool | None,
    executor: Executor | None,
    worker: Callable[[str, int], object] | None,
) -> CycleReport:
    """Plan (or resume) a sharded cycle, run its unfinished shards at once, finish it."""
    plan = plan_cycle(rec, shards, full=full)
    done = _shard_store(rec).shard_results(plan.cycle_id)
    todo = [i for i in range(plan.shards) if i not in done]

    def own(cycle_id: str, shard: int) -> object:
        return run_shard(rec, cycle_id, shard, finish=False)

    call = worker or own
    futures: list[Future[object]] = []
    if executor is None:
        with ThreadPoolExecutor(max_workers=max(len(todo), 1)) as pool:
            futures = [pool.submit(call, plan.cycle_id, i) for i in todo]
            errors = [f.exception() for f in futures]
    else:
        futures = [executor.submit(call, plan.cycle_id, i) for i in todo]
        errors = [f.exception() for f in futures]
    failed = [e for e in errors if e is not None]
    if failed:
        raise failed[0]
    report = finish_cycle(rec, plan.cycle_id)
    if report is None:
        report = stored_report(rec, plan.cycle_id)
    if report is None:
        missing = sorted(
            set(range(plan.shards)) - set(_shard_store(rec).shard_results(plan.cycle_id))
        )
        raise LeaseHeldError(
            f"sharded cycle {plan.cycle_id} of {rec.sync.name!r} is not finished: shards"
            f" {missing} have no result (another worker holds them?); run it again to finish it",
            name=rec.lease_name,
        )
    return report
