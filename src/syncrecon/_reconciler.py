"""The slow loop: a reconciliation cycle over every linked record, field by field.

One cycle: read both systems (a full sweep, or an incremental pass since the watermark) into
a scratch file -> match records (links first, then the natural key) -> decide every mapped
field with its policy -> queue every discrepancy -> check the deletion guard -> re-read the
targets and write the fixes in batches -> update bases, links, watermarks and counters.

The engine is plain blocking code; :meth:`Reconciler.run_cycle` and
:meth:`Reconciler.arun_cycle` are its two front doors.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import Counter as TallyCounter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
import attrs

from . import _codec
from ._clock import Clock, SystemClock, parse_ts, ts
from ._codec import fingerprint
from ._connector import (
    AnyConnector,
    Caller,
    RetrySettings,
    describe,
    find_created,
    list_page,
    read_batch,
    write_batch,
    write_batch_or_failures,
)
from ._drift import INVALID_VALUE_CATEGORY, merges_as_list, misfit, storable_problem
from ._exceptions import (
    ConfigurationError,
    ConnectorBugError,
    ConnectorError,
    CycleHaltedError,
    InvalidRecordError,
    LeaseHeldError,
    LeaseLostError,
    PermanentError,
    RateLimitedError,
    StorageError,
    TransientError,
)
from ._models import Change, ChangeOp, FieldInfo, Page, Record, Side, WriteResult
from ._policy import MISSING, Decision, FieldState, Outcome, unchanged
from ._policy import values_equal as _same
from ._stash import PairRow, Planned, PlanRow, SeenRow, Single, StagedRow, Stash
from ._sync import FieldMap, SyncDefinition, mapping_fingerprint
from ._write_path import echo_entries, holds, record_name
from .storage._base import (
    RECORD_FIELD,
    BaseUpdate,
    Counter,
    CreateIntent,
    CycleRecord,
    Discrepancy,
    FieldSchema,
    ItemKey,
    ItemUpdate,
    Link,
    LinkMark,
    SeenMark,
    Status,
    Step,
    Storage,
)

__all__ = ["CycleReport", "Reconciler"]

log = logging.getLogger("syncrecon.reconciler")

DUPLICATE_CATEGORY = "possible_duplicate"
UNMAPPABLE_CATEGORY = "unmappable_value"
NO_NATURAL_KEY_CATEGORY = "no_natural_key"
DELETION_CATEGORY = "deletion"
INVALID_RECORD_CATEGORY = "invalid_record"
MASS_DELETE_CATEGORY = "mass_delete"
_SIDE_INDEX = {Side.LEFT: 0, Side.RIGHT: 1}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_WANT_FULL_MAX = 200_000  # right keys remembered to stage in full; past it, all of them


def _micros(value: datetime) -> int:
    """An aware time as whole microseconds since the epoch (what a mark keeps)."""
    return (value - _EPOCH) // _MICROSECOND


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
        lines = [
            f"cycle {self.cycle_id} of {self.sync!r}"
            f" ({self.mode}{', dry run' if self.dry_run else ''})",
            f"  records read: {dict(self.records)}; pairs compared: {self.pairs_compared};"
            f" new links: {self.new_links}",
            f"  discrepancies found: {self.discrepancies_found}",
            f"  auto-resolved by rule: {dict(self.auto_resolved)}",
            f"  escalated by category: {dict(self.escalated)}",
            f"  writes: {dict(self.writes)} (created {dict(self.created)},"
            f" deleted {dict(self.deleted)}); failed: {self.write_failures};"
            f" skipped (changed since read): {self.skipped_changed}",
            f"  API calls: {dict(self.api_calls)}",
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
                lines.append(f"  {what}: {dict(counts)}")
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


def _source_holds(record: Record | None, accepted: Mapping[str, list[Any]]) -> bool:
    """Whether a re-read source record still holds, for every field, one accepted value."""
    if record is None or record.deleted:
        return False
    return all(
        name in record.fields and any(_same(record.fields[name], v) for v in values)
        for name, values in accepted.items()
    )


def _source_time(decision: Decision, state: FieldState) -> datetime | None:
    """The source time of the value a decision settles on: the winning side's for a take, the
    later of the two for an agreement or a merge (``None`` when no time is known)."""
    if decision.outcome is Outcome.TAKE_LEFT:
        return state.left_modified_at
    if decision.outcome is Outcome.TAKE_RIGHT:
        return state.right_modified_at
    known = [t for t in (state.left_modified_at, state.right_modified_at) if t is not None]
    return max(known, default=None)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else ts(value)


def _copied_times(state: FieldState, left: datetime | None, right: datetime | None) -> FieldState:
    """``state`` with each side that holds a value syncrecon wrote timed by the edit that value
    copies (``left``/``right``, from the echo ledger; ``None``: the side's own time stands).

    A system stamps a written value with the time of the write, which may be later than an edit
    made on the other side after the edit the value copies; recency compares the edits."""
    if left is not None:
        state = attrs.evolve(state, left_modified_at=left, left_per_field=True)
    if right is not None:
        state = attrs.evolve(state, right_modified_at=right, right_per_field=True)
    return state


def _plan_source(holds: Mapping[str, list[Any]], times: Mapping[str, str]) -> str:
    """A planned update's ``src``: per source field, the values the source may still hold for
    the write to go ahead (``holds``); per target field, the time of the edit the written
    value copies (``times``, for its echo entry)."""
    return _codec.dumps({"holds": holds, "times": times})


def _with_mod_texts(row: PairRow) -> PairRow:
    """A staged pair with both modification times as text (a light record keeps its time as
    microseconds: formatting it is left to the few pairs that are decided)."""
    lmod, rmod, lus, rus = row.left_mod, row.right_mod, row.left_modus, row.right_modus
    if (lmod is not None or lus is None) and (rmod is not None or rus is None):
        return row
    if lmod is None and lus is not None:
        lmod = ts(_EPOCH + lus * _MICROSECOND)
    if rmod is None and rus is not None:
        rmod = ts(_EPOCH + rus * _MICROSECOND)
    return row._replace(left_mod=lmod, right_mod=rmod)


def _settled(row: PairRow, active_links: set[tuple[str, str]]) -> bool:
    """Whether a staged pair needs no decision: nothing changed anywhere (the fast path)."""
    return (
        row.left_proj == row.right_proj == (row.base or "{}")
        and (row.left_key, row.right_key) not in active_links
        and row.left_bad is None
        and row.right_bad is None
    )


class Reconciler:
    """Runs reconciliation cycles for one :class:`SyncDefinition` over a :class:`Storage`.

    ``full_sweep_every`` sets how often an incremental sync reads everything (to find
    deletions and late records); incremental passes read from the watermark minus ``overlap``.
    A cycle that would delete more than ``max_delete_fraction`` of the linked records is
    halted before it writes anything. Only one cycle per sync runs at a time, across
    processes: a lease in storage that lasts ``lease_ttl`` (45 s) and that a heartbeat renews
    every third of it while the cycle runs, so a killed cycle's successor can run within one
    ttl. Every commit of a cycle is fenced by its lease: a cycle that lost it commits nothing.
    Every value a cycle writes is remembered for ``echo_ttl`` in the echo ledger, so the fast
    loop recognizes the webhook that write causes and does not write it back. An entry also
    keeps the time of the edit its value copies: a side found holding a value either loop wrote
    is timed by that edit, not by the write, so recency never prefers an old edit's copy.

    Before writing, each batch re-reads its target records, and (``verify_source=True``, the
    default) the source records the values came from, in one more batch call: a value whose
    source moved on since it was read (a user's edit, a fast-loop write while the cycle ran) is
    not written; the next cycle decides again.
    """

    def __init__(
        self,
        sync: SyncDefinition,
        storage: Storage,
        *,
        clock: Clock | None = None,
        retry: RetrySettings | None = None,
        full_sweep_every: timedelta = timedelta(hours=24),
        overlap: timedelta = timedelta(minutes=5),
        max_delete_fraction: float = 0.1,
        lease_ttl: timedelta = timedelta(seconds=45),
        raise_on_halt: bool = False,
        scratch_dir: str | None = None,
        batch_size: int = 2000,
        echo_ttl: timedelta = timedelta(minutes=15),
        verify_source: bool = True,
    ) -> None:
        if not 0 <= max_delete_fraction <= 1:
            raise ConfigurationError("max_delete_fraction must be between 0 and 1")
        if sync.create_on and sync.natural_key is None:
            raise ConfigurationError(
                "creating records needs a natural key: it is what keeps a create that crashed"
                " before its link was stored from being made twice"
            )
        self.sync = sync
        self.storage = storage
        self.clock: Clock = clock or SystemClock()
        self.retry = retry or RetrySettings()
        self.full_sweep_every = full_sweep_every
        self.overlap = overlap
        self.max_delete_fraction = max_delete_fraction
        self.lease_ttl = lease_ttl
        self.raise_on_halt = raise_on_halt
        self.scratch_dir = scratch_dir
        self.batch_size = batch_size
        self.echo_ttl = echo_ttl
        self.verify_source = verify_source
        self.mapping_fp = mapping_fingerprint(sync)
        self.owner = f"reconciler-{uuid.uuid4().hex[:12]}"
        self.storage.setup()

    def __repr__(self) -> str:
        return f"Reconciler({self.sync.name!r}, storage={self.storage!r})"

    @property
    def lease_name(self) -> str:
        """The storage lease that keeps two cycles of this sync from running at once."""
        return f"cycle:{self.sync.name}"

    def run_cycle(
        self,
        *,
        dry_run: bool = False,
        full: bool | None = None,
        shards: int | None = None,
        executor: Executor | None = None,
        worker: Callable[[str, int], object] | None = None,
    ) -> CycleReport:
        """Run one cycle and return its report.

        ``dry_run=True`` computes the full report and writes nothing to the systems or the
        queue. ``full`` forces (True) or forbids (False) a full sweep; by default the cycle is
        incremental when both connectors support it and a full sweep ran recently.
        Raises :class:`~syncrecon.LeaseHeldError` when another cycle of this sync is running.

        ``shards=n`` runs a sharded cycle (see :meth:`plan_sharded_cycle`): plans it (or
        resumes this sync's unfinished one), runs its shards at once, finishes it, and returns
        its one report. The shards run in threads of a pool of its own, or on ``executor``;
        each shard is ``worker(cycle_id, shard)`` (default: :meth:`run_shard` of this
        reconciler with ``finish=False``). For processes, pass a ``ProcessPoolExecutor`` and a
        module-level ``worker`` that builds its own reconciler over the same storage and calls
        its :meth:`run_shard`. A shard that raised is raised here after the others finished;
        the cycle stays unfinished (no delete applied) until it is run again.
        """
        if shards is not None:
            if dry_run:
                raise ConfigurationError("a dry run is not sharded: run it with shards=None")
            from ._shards import run_sharded

            return run_sharded(self, shards, full=full, executor=executor, worker=worker)
        if executor is not None or worker is not None:
            raise ConfigurationError("executor and worker run the shards of shards=n")
        with Caller(self.retry) as caller:
            return _Cycle(self, caller, dry_run=dry_run, full=full).run()

    def plan_sharded_cycle(self, shards: int, *, full: bool | None = None) -> str:
        """Plan a sharded cycle of ``shards`` shards and return its id (or the id of this
        sync's unfinished sharded cycle: one runs at a time).

        Then any worker sharing the storage runs each shard, ``run_shard(cycle_id, i)`` for
        ``i`` in ``range(shards)`` (every one of them, even when a connector offers fewer
        partitions than shards: a shard beyond its partitions lists nothing of that system);
        the last one to finish finishes the cycle. Shard ``i`` lists partition ``i`` of each system
        (:class:`~syncrecon.PartitionedConnector`; without partitions, each shard lists
        everything and keeps the records whose key hashes to it) and writes the field updates
        of the linked pairs whose left record is in its partition. Matching, creates and
        deletes wait for every shard: the mass-delete guard counts the whole cycle's deletions.
        Needs a storage with the :class:`~syncrecon.storage.ShardStore` role (every bundled
        backend). Raises :class:`~syncrecon.LeaseHeldError` while an unsharded cycle runs.
        """
        from ._shards import plan_cycle

        return plan_cycle(self, shards, full=full).cycle_id

    def run_shard(self, cycle_id: str, shard: int, *, finish: bool = True) -> CycleReport | None:
        """Run shard ``shard`` of the sharded cycle ``cycle_id`` under its own lease
        (``cycle:<sync>/shard-<shard>``, renewed by a heartbeat and fencing its commits).

        Plain, serialisable arguments: what a task queue's task or a scheduler's job calls.
        A shard already done, or a cycle already finished, is not run again. With ``finish``
        (the default), the worker that completes the last shard then finishes the cycle and
        gets its report; otherwise (and for every other shard) the result is ``None``.
        Raises :class:`~syncrecon.LeaseHeldError` when another worker holds this shard.
        """
        from ._shards import run_shard

        return run_shard(self, cycle_id, shard, finish=finish)

    def finish_sharded_cycle(self, cycle_id: str) -> CycleReport | None:
        """Finish the sharded cycle ``cycle_id`` once every shard is done: match, guard
        deletions over the whole cycle, create and delete, store one report; return it.
        ``None`` while a shard is not done (or when the cycle is finished already)."""
        from ._shards import finish_cycle

        return finish_cycle(self, cycle_id)

    def check_schema(self) -> frozenset[str]:
        """Check the connectors' field descriptions now (at start-up, say), as every cycle does.

        A breaking change (a type change, a mapped field gone, a picklist option the value
        map needs removed) opens one ``schema_drift`` escalation per field and stops writes to
        it; a harmless one (an option added) is recorded. Returns the quarantined fields.
        """
        with Caller(self.retry) as caller:
            cycle = _Cycle(self, caller, dry_run=False, full=None)
            cycle.active = self.storage.active_items(self.sync.name)
            return cycle._check_schema()

    async def arun_cycle(
        self,
        *,
        dry_run: bool = False,
        full: bool | None = None,
        shards: int | None = None,
        executor: Executor | None = None,
        worker: Callable[[str, int], object] | None = None,
    ) -> CycleReport:
        """:meth:`run_cycle` for async hosts: the cycle runs in a worker thread.

        Plain ``def`` connector methods run in that thread; ``async def`` ones run on the
        calling event loop. A sharded cycle (``shards=n``) runs exactly as under
        :meth:`run_cycle`, from a worker thread: its shards run in threads (or on
        ``executor``), and ``async def`` connector methods on an event loop of syncrecon's.
        """
        if shards is not None:
            return await anyio.to_thread.run_sync(
                lambda: self.run_cycle(
                    dry_run=dry_run, full=full, shards=shards, executor=executor, worker=worker
                )
            )

        def work() -> CycleReport:
            with Caller(self.retry, in_worker_thread=True) as caller:
                return _Cycle(self, caller, dry_run=dry_run, full=full).run()

        return await anyio.to_thread.run_sync(work)


class _Heartbeat:
    """Renews a cycle's lease every third of its ttl while the cycle runs (a daemon thread).

    A renewal that finds the lease lost (taken by another worker after it expired) records a
    :class:`LeaseLostError`; the cycle raises it at its next batch, and every commit it tries
    meanwhile is refused by the storage's fence.
    """

    def __init__(self, cycle: _Cycle) -> None:
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


class _Cycle:
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

    # -- driver ------------------------------------------------------------------------------

    def run(self) -> CycleReport:
        started = self.clock.now()
        self.started = started
        self._acquire(started)
        beat = _Heartbeat(self)
        beat.start()
        try:
            open_plans = getattr(self.storage, "open_shard_plans", None)
            if open_plans is not None and open_plans(self.sync.name):
                raise LeaseHeldError(
                    f"a sharded cycle of sync {self.sync.name!r} is unfinished: finish it"
                    " first (run_cycle(shards=...) resumes it)",
                    name=self.lease,
                )
            with Stash(self.rec.scratch_dir) as stash:
                return self._run(stash, started)
        finally:
            beat.stop()
            self.storage.release_lease(self.lease, self.owner)

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

    def _load_active(self) -> None:
        """The sync's active queue items, by key and by link; their records are read in full."""
        self.active = self.storage.active_items(self.sync.name)
        for item in self.active.values():
            self.by_link.setdefault((item.left_key or "", item.right_key or ""), []).append(item)
            for side in Side:
                key = item.left_key if side is Side.LEFT else item.right_key
                if key:
                    self.forced[side].add(key)

    def _renew_lease(self) -> None:
        """Between batches: stop at once if the heartbeat found the lease lost."""
        if self.lost is not None:
            raise self.lost

    def _phase(self, name: str, began: float) -> None:
        self.t.timings[name] = round(self.t.timings.get(name, 0.0) + time.process_time() - began, 6)

    def _run(self, stash: Stash, started: datetime) -> CycleReport:
        state = self.storage.get_sync_state(self.sync.name)
        incremental = self._incremental(state.watermarks, state.last_full_sweep, started)
        self.incremental = incremental
        mode = "incremental" if incremental else "full"
        self._load_active()
        # Between full sweeps a record not modified since a cycle found it equal to its base is
        # taken as unchanged; a full sweep compares every record by value (a system that does
        # not move a record's modification time on every change is caught there).
        self.trust_times = (
            self.force_full is not True
            and state.last_full_sweep is not None
            and started - state.last_full_sweep < self.rec.full_sweep_every
        )
        self.quarantined = self._check_schema()

        began = time.process_time()
        for side in Side:
            since = None
            if incremental:
                since = state.watermarks[side] - self.rec.overlap
            self._stage_listing(stash, side, since)
        self._stage_counterparts(stash)
        self._phase("read", began)

        began = time.process_time()
        self._match(stash)
        self._phase("match", began)

        halted = self._guard(stash, mode)
        if halted is None and not incremental:
            step = Step(at=self.clock.now())
            self._close_record_item(
                step,
                (self.sync.name, "", "", RECORD_FIELD),
                MASS_DELETE_CATEGORY,
                "a later cycle passed the mass-delete guard",
            )
            self._commit(step)
        if halted is None:
            began = time.process_time()
            self._compare(stash)
            self._plan_singles(stash)
            self._phase("compare", began)
            if not self.dry_run:
                began = time.process_time()
                self._execute(stash)
                self._phase("write", began)

        finished = self.clock.now()
        report = self._report(mode, started, finished, halted, stash)
        if not self.dry_run:
            step = Step(at=finished)
            if halted is None:
                for side, mark in self.marks.items():
                    if mark is not None:
                        step.watermarks.append((self.sync.name, side, mark))
                if not incremental and not self.trust_times:
                    step.full_sweeps.append((self.sync.name, started))
            step.cycle = CycleRecord(
                id=self.id,
                sync=self.sync.name,
                started_at=started,
                finished_at=finished,
                mode=mode,
                dry_run=False,
                report=report.to_dict(),
            )
            step.counters.extend(self._counters(report))
            step.fence = self.fence
            self.storage.commit(step)
        if halted is not None and self.rec.raise_on_halt:
            raise CycleHaltedError(halted, reason=MASS_DELETE_CATEGORY)
        return report

    def _check_schema(self) -> frozenset[str]:
        """Compare each mapped field's description with the stored one; quarantine breaks.

        Returns the fields (left names) whose writes are stopped: those with an active
        ``schema_drift`` escalation, new or earlier. Resolving it lifts the quarantine.
        """
        from . import _drift

        described: dict[Side, dict[str, FieldInfo]] = {}
        for side in Side:
            connector = self.sync.connector(side)
            if connector.capabilities.describes_fields:
                try:
                    listed = describe(self.caller, connector)
                except Exception:  # drift detection is a check, not a reason to stop syncing
                    log.warning(
                        "%s.describe_fields failed; schema drift not checked",
                        connector.name,
                        exc_info=True,
                    )
                    continue
                if listed:
                    described[side] = {i.name: i for i in listed}
        stored = {(s.side, s.field): s for s in self.storage.get_schemas(self.sync.name)}
        for (side, name), schema in stored.items():
            self.field_info.setdefault(side, {})[name] = schema.info
        for side, by_name in described.items():
            for name, described_info in by_name.items():
                self.field_info.setdefault(side, {})[name] = _drift.describe(described_info)[1]
        step = Step(at=self.clock.now())
        breaking: dict[str, list[str]] = {}
        earlier = {
            key[3]
            for key, item in self.active.items()
            if item.category == _drift.SCHEMA_DRIFT_CATEGORY and key[1] == key[2] == ""
        }
        for fm in self._fields:
            for side, by_name in described.items():
                name = fm.left if side is Side.LEFT else fm.right
                info = by_name.get(name)
                old = stored.get((side, name))
                new = None
                if info is not None:
                    fp, new = _drift.describe(info)
                    if old is None or old.fingerprint != fp:
                        step.schemas.append(
                            FieldSchema(
                                sync=self.sync.name, side=side, field=name, fingerprint=fp, info=new
                            )
                        )
                change = _drift.classify(fm, side, None if old is None else old.info, new)
                if change is None or (change.breaking and fm.left in earlier):
                    continue  # nothing new, or already waiting for an operator
                if change.breaking:
                    breaking.setdefault(fm.left, []).append(change.description)
                step.counters.append(
                    Counter(
                        metric="schema_changes",
                        labels={"sync": self.sync.name, "breaking": str(change.breaking).lower()},
                    )
                )
        for name, what in breaking.items():
            step.new_items.append(
                self._escalation(
                    field=name,
                    rule="schema",
                    category=_drift.SCHEMA_DRIFT_CATEGORY,
                    explanation="; ".join(what)
                    + ". Writes to this field are stopped until an operator updates the mapping"
                    " and resolves this item; the next cycle then repairs what was held back.",
                )
            )
        self._commit(step)
        return frozenset(earlier | set(breaking))

    def _incremental(
        self, marks: Mapping[Side, datetime], last_full: datetime | None, now: datetime
    ) -> bool:
        if self.force_full is not None:
            if not self.force_full and not self._can_incremental(marks):
                raise ConfigurationError(
                    "an incremental cycle needs incremental connectors and a previous full sweep"
                )
            return not self.force_full
        if not self._can_incremental(marks) or last_full is None:
            return False
        return now - last_full < self.rec.full_sweep_every

    def _can_incremental(self, marks: Mapping[Side, datetime]) -> bool:
        return all(
            self.sync.connector(side).capabilities.incremental and side in marks for side in Side
        )

    # -- reading -----------------------------------------------------------------------------

    def _project(
        self, side: Side, record: Record
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        """(values in the left vocabulary by left name, raw values by the side's own names,
        problems of values that do not fit by left name).

        A field the record does not carry is unknown: it is left out, never taken as blank
        (invariant 9). A value that does not fit its field (:func:`_drift.misfit`) is left out
        too, and its problem reported: that field of that record is held and escalated.
        Raw values are kept for the right side's mapped fields (a re-read compares them) and
        for the natural key field of either side (a create copies it).
        """
        proj: dict[str, Any] = {}
        raw: dict[str, Any] = {}
        bad: dict[str, str] = {}
        values = record.fields
        infos = self.field_info.get(side, {})
        for fm in self._fields:
            name = fm.left if side is Side.LEFT else fm.right
            if name not in values:
                continue
            value = values[name]
            problem = misfit(fm, name, value, infos.get(name), expects_list=self._lists[fm.left])
            if problem is not None:
                bad[fm.left] = problem
                continue
            if side is Side.LEFT:
                proj[fm.left] = value
                continue
            mapped = fm.transform.to_left(value)
            problem = storable_problem(mapped)
            if problem is not None:
                bad[fm.left] = f"field {name!r} maps to {problem}, which cannot be stored"
                continue
            raw[fm.right] = value
            proj[fm.left] = mapped
        nk = self.sync.natural_key
        if nk is not None:
            name = nk.left if side is Side.LEFT else nk.right
            if name in values and storable_problem(values[name]) is None:
                raw[name] = values[name]
        return proj, raw, bad

    def _ftimes(self, side: Side, record: Record) -> str | None:
        times = record.field_modified_at
        if not times:
            return None
        out = {}
        for fm in self._fields:
            name = fm.left if side is Side.LEFT else fm.right
            if name in times:
                out[fm.left] = ts(times[name])
        return _codec.dumps(out) if out else None

    def _natural(self, side: Side, record: Record) -> str | None:
        nk = self.sync.natural_key
        if nk is None:
            return None
        value = record.fields.get(nk.left if side is Side.LEFT else nk.right)
        try:
            nat = nk.normalize(value)
        except Exception:  # a value the normalizer cannot read: no natural key
            log.warning(
                "%s record %r: the natural key %r does not normalize",
                self.sync.connector(side).name,
                record.key,
                type(value).__name__,
            )
            return None
        return nat if isinstance(nat, str) and nat else None

    def _rows(
        self, side: Side, records: Sequence[Record], links: Mapping[str, Link], returned: bool
    ) -> Iterable[StagedRow]:
        index = _SIDE_INDEX[side]
        names = self._names[side]
        for record in records:
            link = links.get(record.key)
            proj_text = raw_text = bad_text = None
            proj: dict[str, Any] | None = None
            if not record.deleted:
                try:
                    proj, raw, bad = self._project(side, record)
                except Exception as exc:  # one bad value must not stop the cycle
                    self._unmappable(side, record, link, exc)
                    proj = None
                else:
                    proj_text = _codec.dumps(proj)
                    raw_text = _codec.dumps(raw) if raw else None
                    bad_text = _codec.dumps(bad) if bad else None
                    if not names.issubset(record.fields):
                        if self.listing:
                            self.partial[side].append(record.key)
                        else:
                            self.t.partial[self.sync.connector(side).name] += 1
            mod = record.modified_at
            base_text = None if link is None else _codec.dumps(dict(link.base))
            same = link is not None and proj is not None and unchanged(proj, link.base)
            if same and not bad_text and names.issubset(record.fields):
                assert link is not None
                assert base_text is not None
                assert proj_text is not None
                self.side_step.marks.append(
                    SeenMark(
                        sync=self.sync.name,
                        side=side,
                        left_key=link.left_key,
                        base=base_text,
                        seen=self._seen(mod),
                        digest=self._digest(proj_text),
                    )
                )
            elif side is Side.LEFT and link is not None:
                self._want_full(link.right_key)
            yield StagedRow(
                side=index,
                key=record.key,
                link=None if link is None else link.left_key,
                other=None if link is None else link.key(side.other),
                nat=self._natural(side, record)
                if link is None
                else self._live_nat(side, record, link),
                proj=proj_text,
                raw=raw_text,
                mod=_iso(mod),
                ftimes=None if record.deleted else self._ftimes(side, record),
                base=base_text,
                deleted=int(record.deleted),
                changed=int(not same),
                bad=bad_text,
                ret=int(returned),
            )

    def _digest(self, proj_text: str) -> str:
        """A record's mapped values as its mark keeps them, salted with the mapping."""
        hashed = hashlib.blake2b(proj_text.encode(), digest_size=16).hexdigest()
        return self.rec.mapping_fp + hashed

    def _seen(self, mod: datetime | None) -> int | None:
        """What a mark keeps of a record's modification time: none for a record modified within
        ``overlap`` of this cycle's start, as a change in the same clock tick, or committed
        late, could carry the same time (the next cycle compares its digest instead)."""
        if mod is None or self.started is None or mod > self.started - self.rec.overlap:
            return None
        return _micros(mod)

    def _want_full(self, right_key: str) -> None:
        """Stage this right record in full: its left record changed, so the pair is decided."""
        if self.all_full:
            return
        self.want_full.add(right_key)
        if len(self.want_full) > _WANT_FULL_MAX:
            self.all_full = True
            self.want_full.clear()

    def _light(self, side: Side, record: Record, mark: LinkMark | None) -> SeenRow | None:
        """The light row of a linked record whose mapped values hash to its mark's digest, or
        ``None`` to stage it in full. (The loop in :meth:`_stage` takes the common case, a
        record not modified since its mark between full sweeps, before calling this.)"""
        if mark is None or record.deleted:
            return None
        key = record.key
        digest = mark.digest
        if (
            digest is None
            or not digest.startswith(self.rec.mapping_fp)
            or key in self.forced[side]
            or (side is Side.RIGHT and (self.all_full or key in self.want_full))
        ):
            return None
        mod = record.modified_at
        try:
            proj, _raw, bad = self._project(side, record)
        except Exception:  # the full path escalates it
            return None
        if bad or not self._names[side].issubset(record.fields):
            return None
        if self._digest(_codec.dumps(proj)) != digest:
            return None
        if side is Side.LEFT and self._nk_unmapped:
            nat = self._natural(side, record)
            if nat is not None and nat != mark.natural_key:
                return None
        self.t.unchanged["digest"] += 1
        refreshed = self._seen(mod)
        if refreshed is not None and refreshed != mark.seen:
            self.side_step.marks.append(
                SeenMark(
                    sync=self.sync.name,
                    side=side,
                    left_key=mark.left_key,
                    base=None,
                    seen=refreshed,
                    digest=digest,
                )
            )
        return SeenRow(
            side=_SIDE_INDEX[side],
            key=key,
            other=mark.right_key if side is Side.LEFT else mark.left_key,
            modus=None if mod is None else _micros(mod),
        )

    def _stage(
        self, stash: Stash, side: Side, records: Sequence[Record], *, returned: bool = True
    ) -> None:
        marks = self.storage.link_marks(self.sync.name, side, [r.key for r in records])
        records = self._keep(side, records, marks)
        light: list[SeenRow | tuple[int, str, str, int | None]] = []
        full: list[Record] = []
        # The hot path, inline: a linked record not modified since its mark (between full
        # sweeps) is staged light at once; everything else goes through _light or in full.
        trust = self.trust_times
        fp = self.rec.mapping_fp
        forced = self.forced[side]
        left = side is Side.LEFT
        skip_right = not left and self.all_full
        want_full = self.want_full
        index = _SIDE_INDEX[side]
        by_time = 0
        for record in records:
            key = record.key
            mark = marks.get(key)
            if (
                trust
                and mark is not None
                and mark.seen is not None
                and mark.digest is not None
                and record.modified_at is not None
                and not record.deleted
                and mark.digest.startswith(fp)
                and key not in forced
                and (left or not (skip_right or key in want_full))
            ):
                seen = (record.modified_at - _EPOCH) // _MICROSECOND
                if seen <= mark.seen:
                    by_time += 1
                    light.append((index, key, mark.right_key if left else mark.left_key, seen))
                    continue
            row = self._light(side, record, mark)
            if row is None:
                full.append(record)
            else:
                light.append(row)
        if by_time:
            self.t.unchanged["modification_time"] += by_time
        stash.put_unchanged(light)
        if full:
            linked = [r.key for r in full if r.key in marks]
            links = self.storage.get_links(self.sync.name, side, linked) if linked else {}
            stash.put(list(self._rows(side, full, links, returned)))
        if self.held:
            stash.hold(self.held)
            self.held = []
        self._commit(self.side_step)
        self.side_step = Step(at=self.clock.now())

    def _live_nat(self, side: Side, record: Record, link: Link) -> str | None:
        """The record's natural key now; a left record's change is kept on its link."""
        nat = self._natural(side, record)
        if nat is None:
            return link.natural_key
        if side is Side.LEFT and nat != link.natural_key:
            self.side_step.links.append(attrs.evolve(link, natural_key=nat))
        return nat

    def _unmappable(self, side: Side, record: Record, link: Link | None, exc: Exception) -> None:
        """Hold a record whose value the mapping cannot convert, and escalate it."""
        self.held.append((_SIDE_INDEX[side], record.key))
        left_key = record.key if side is Side.LEFT else (link.left_key if link else None)
        right_key = record.key if side is Side.RIGHT else (link.right_key if link else None)
        self.side_step.new_items.append(
            self._escalation(
                left_key=left_key,
                right_key=right_key,
                rule="field_map",
                category=UNMAPPABLE_CATEGORY,
                explanation=f"a value of this {side} record does not map:"
                f" {type(exc).__name__}: {exc}; the record is held back until it does",
            )
        )

    def _advance_mark(self, side: Side, records: Sequence[Record], listing_began: datetime) -> None:
        """Move the watermark to the newest listed change, but never past the listing's start.

        A record edited while a long listing runs may carry a time earlier than records listed
        after it; capping at the start (minus the overlap on the next read) keeps it visible.
        """
        newest = max((r.modified_at for r in records if r.modified_at is not None), default=None)
        if newest is None:
            return
        newest = min(newest, listing_began)
        mark = self.marks[side]
        if mark is None or newest > mark:
            self.marks[side] = newest

    def _stage_listing(self, stash: Stash, side: Side, since: datetime | None) -> None:
        connector = self.sync.connector(side)
        cursor: str | None = None
        pages = 0
        began = self.clock.now()
        self.listing = True
        while True:
            page = self._list_page(side, since, cursor)
            self._stage(stash, side, page.records)
            self._advance_mark(side, page.records, began)
            pages += 1
            self._renew_lease()
            if pages % 50 == 0:
                stash.checkpoint()
            if page.next_cursor is None:
                self.listing = False
                break
            if page.next_cursor == cursor:
                raise RuntimeError(f"{connector.name} returned the same cursor twice: {cursor!r}")
            cursor = page.next_cursor

    def _list_page(self, side: Side, since: datetime | None, cursor: str | None) -> Page:
        """One page of ``side``'s listing (a shard lists its partition instead)."""
        return list_page(
            self.caller,
            self.sync.connector(side),
            since=since,
            cursor=cursor,
            invalid=self.invalid[side],
        )

    def _owns(self, left_key: str) -> bool:
        """Whether this cycle decides the link of ``left_key`` (a shard: only its own)."""
        return True

    def _keep(
        self, side: Side, records: Sequence[Record], marks: Mapping[str, LinkMark]
    ) -> Sequence[Record]:
        """The records read that this cycle stages (a shard: not those of other shards)."""
        return records

    def _scan_links(self, stash: Stash) -> bool:
        """Whether a full sweep looks for links neither of whose records was staged."""
        return stash.linked_left() < self.storage.count_links(self.sync.name)

    def _stage_counterparts(self, stash: Stash) -> None:
        """Read linked records whose counterpart was not listed; stage absent ones as gone.

        A full sweep also looks for links neither of whose records was listed (both deleted,
        or a crash after a propagated delete) and reads both sides by key. Once every listed
        record's counterpart is staged, it scans the links only when fewer links are staged
        than storage holds (the scan is a third of an unchanged record's cost, and usually
        finds nothing).
        """
        if self.incremental:
            # Failed or skipped fixes wait in the queue: re-read their records by key.
            pairs = {
                (i.left_key, i.right_key)
                for i in self.active.values()
                if i.left_key is not None and i.right_key is not None and self._owns(i.left_key)
            }
            left_seen = stash.staged(0, [lk for lk, _ in pairs])
            right_seen = stash.staged(1, [rk for _, rk in pairs])
            self._read_by_key(
                stash, Side.LEFT, sorted(lk for lk, _ in pairs if lk not in left_seen)
            )
            self._read_by_key(
                stash, Side.RIGHT, sorted(rk for _, rk in pairs if rk not in right_seen)
            )
        for side in Side:
            wanted = [o for _, o in stash.missing_counterparts(_SIDE_INDEX[side])]
            self._read_by_key(stash, side.other, wanted, missed=not self.incremental)
        if not self.incremental and self._scan_links(stash):
            unseen: list[tuple[str, str]] = []
            batch = self.rec.batch_size
            for linked in self.storage.iter_link_keys(self.sync.name, batch=batch):
                linked = [pair for pair in linked if self._owns(pair[0])]
                left_seen = stash.staged(0, [left for left, _ in linked])
                right_seen = stash.staged(1, [right for _, right in linked])
                unseen += [
                    (left, right)
                    for left, right in linked
                    if left not in left_seen and right not in right_seen
                ]
            for side in Side:
                keys = [pair[_SIDE_INDEX[side]] for pair in unseen]
                self._read_by_key(stash, side, keys, missed=True)
        # Records listed without some mapped field (a partial answer): read by key once.
        for side in Side:
            self.forced[side].update(self.partial[side])  # staged in full again
            self._read_by_key(stash, side, sorted(set(self.partial[side])))
            self.partial[side].clear()
        # A right record staged light before its left record was staged changed (the left one
        # was read by key later): its pair is decided, so it is read again and staged in full.
        partners = stash.light_partners()
        self.forced[Side.RIGHT].update(partners)
        self._read_by_key(stash, Side.RIGHT, partners)
        self._escalate_invalid()
        stash.checkpoint()

    def _escalate_invalid(self) -> None:
        """One record-level escalation for each entry a connector returned that is no record."""
        step = Step(at=self.clock.now())
        for side, errors in self.invalid.items():
            for error in errors:
                item = error.item
                key = getattr(item, "key", None)
                shown = key if isinstance(key, str) and key else f"<invalid key {key!r}>"
                name = "left_key" if side is Side.LEFT else "right_key"
                prior = self.active.get(
                    (self.sync.name, *((shown, "") if side is Side.LEFT else ("", shown)), "*")
                )
                if (prior is not None and prior.category == INVALID_RECORD_CATEGORY) or (
                    side,
                    shown,
                ) in self.invalid_seen:
                    continue  # escalated once: earlier, or already in this cycle
                self.invalid_seen.add((side, shown))
                step.new_items.append(
                    self._escalation(
                        rule="connector",
                        category=INVALID_RECORD_CATEGORY,
                        explanation=f"{error}; the entry was skipped and the cycle went on"
                        " with the rest. Fix the connector, then resolve this item.",
                        **{name: shown},
                    )
                )
            if errors:
                self.t.invalid[self.sync.connector(side).name] += len(errors)
                errors.clear()
        self._commit(step)

    def _read_by_key(
        self, stash: Stash, side: Side, wanted: Sequence[str], *, missed: bool = False
    ) -> None:
        """Read records by key and stage them; a key not found is staged as gone.

        ``missed`` says a full sweep's listing should have returned these records: the ones
        found are counted as missed by the listing (a truncated or inconsistent listing).
        """
        connector = self.sync.connector(side)
        size = connector.capabilities.max_read_batch
        for i in range(0, len(wanted), size):
            keys = wanted[i : i + size]
            try:
                records = read_batch(self.caller, connector, keys, self.invalid[side])
            except PermanentError as exc:
                # Unknown is not gone: these records are not staged (so not decided) this cycle.
                log.error(
                    "%s: reading %d records by key failed; they are not compared this cycle: %s",
                    connector.name,
                    len(keys),
                    exc,
                    exc_info=isinstance(exc, ConnectorBugError),
                )
                self.t.read_failures[connector.name] += len(keys)
                continue
            found = {r.key: r for r in records if r.key in keys}
            self._stage(stash, side, list(found.values()))
            gone = [Record(key=k, deleted=True) for k in keys if k not in found]
            if gone:
                self._stage(stash, side, gone, returned=False)
            alive = sum(1 for r in found.values() if not r.deleted)
            if missed and alive:
                self.t.missed[connector.name] += alive

    # -- matching ----------------------------------------------------------------------------

    def _match(self, stash: Stash) -> None:
        """Link unlinked records by natural key; two candidates escalate, never guess."""
        if self.sync.natural_key is None:
            return
        groups: dict[str, tuple[list[str], list[str]]] = {}

        def flush() -> None:
            if not groups:
                return
            known = self.storage.links_by_natural_key(self.sync.name, list(groups))
            pending: list[tuple[str, str]] = []
            for nat, (lefts, rights) in groups.items():
                taken = known.get(nat, [])
                if len(lefts) == 1 and len(rights) == 1 and not taken:
                    pending.append((lefts[0], rights[0]))
                elif len(lefts) + len(rights) + len(taken) > 1:
                    self._duplicate(nat, lefts, rights, taken)
                    stash.hold([(0, k) for k in lefts] + [(1, k) for k in rights])
            stash.add_matches(pending)
            groups.clear()

        last: str | None = None
        for nat, side, key in stash.unlinked_by_natural_key():
            if nat is None:
                continue
            # Rows come ordered by natural key: flush only between two groups.
            if nat != last and len(groups) >= self.rec.batch_size:
                flush()
            last = nat
            lefts, rights = groups.setdefault(nat, ([], []))
            (lefts if side == 0 else rights).append(key)
        flush()
        self.t.new_links += stash.apply_matches()

    def _duplicate(self, nat: str, lefts: list[str], rights: list[str], taken: list[Link]) -> None:
        others = [f"left {k}" for k in lefts] + [f"right {k}" for k in rights]
        others += [f"linked {lk.left_key}<->{lk.right_key}" for lk in taken]
        keys = [(k, None) for k in lefts] + [(None, k) for k in rights]
        items = [
            self._escalation(
                left_key=lk,
                right_key=rk,
                rule="natural_key",
                category=DUPLICATE_CATEGORY,
                explanation=f"natural key {nat!r} matches several records: {', '.join(others)};"
                " they are not linked until an operator decides",
            )
            for lk, rk in keys
        ]
        self._commit(Step(at=self.clock.now(), new_items=items))

    # -- deciding ----------------------------------------------------------------------------

    def _guard(self, stash: Stash, mode: str) -> str | None:
        if self.sync.delete_from is None:
            return None
        gone = stash.count_deleted_pairs(_SIDE_INDEX[self.sync.delete_from])
        linked = self.storage.count_links(self.sync.name)
        if gone == 0 or gone <= self.rec.max_delete_fraction * linked:
            return None
        reason = (
            f"{gone} of {linked} linked records would be deleted"
            f" (more than {self.rec.max_delete_fraction:.0%}); nothing was written"
            f" ({mode} sweep). Check the {self.sync.delete_from} system, then resolve this item."
        )
        item = self._escalation(
            rule="mass_delete_guard",
            category=MASS_DELETE_CATEGORY,
            explanation=reason,
        )
        self._commit(Step(at=self.clock.now(), new_items=[item]))
        return reason

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

    def _close_record_item(self, step: Step, key: ItemKey, category: str, note: str) -> None:
        """Resolve an active record-level item of ``category`` whose cause went away."""
        prior = self.active.get(key)
        if prior is None or prior.category != category or prior.id is None:
            return
        step.item_updates.append(
            ItemUpdate(id=prior.id, status=Status.RESOLVED, resolved_at=self.clock.now(), note=note)
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

    def _item(self, **kwargs: Any) -> Discrepancy:
        return Discrepancy(
            sync=self.sync.name, detected_at=self.clock.now(), cycle_id=self.id, **kwargs
        )

    def _commit(self, step: Step) -> list[int]:
        if self.dry_run or step.is_empty():
            return [0] * len(step.new_items)
        step.fence = self.fence
        return self.storage.commit(step)

    def _state(
        self,
        fm: FieldMap,
        left: Mapping[str, Any],
        right: Mapping[str, Any],
        base: Any,
        times: tuple[datetime | None, datetime | None, dict[str, Any], dict[str, Any]],
    ) -> FieldState:
        lmod, rmod, lft, rft = times
        name = fm.left
        lt = lft.get(name)
        rt = rft.get(name)
        return FieldState(
            field=name,
            left=left.get(name),
            right=right.get(name),
            base=base.get(name, MISSING),
            left_modified_at=parse_ts(lt) if lt else lmod,
            right_modified_at=parse_ts(rt) if rt else rmod,
            left_per_field=lt is not None,
            right_per_field=rt is not None,
        )

    def _compare(self, stash: Stash) -> None:
        """Decide every linked pair's fields; queue discrepancies; plan the fixes."""
        active_links = {(k[1], k[2]) for k in self.active}
        stash.mark_active(active_links)
        for rows in stash.pairs(self.rec.batch_size):
            began = time.process_time()
            step = Step(at=self.clock.now())
            plans: list[Planned] = []
            plan_items: list[list[Discrepancy]] = []
            # The latest source time applied to each field (by either loop): a value read
            # before it is older than the agreed state and is never written.
            self.applied = self.storage.get_field_times(
                self.sync.name,
                [
                    (row.left_key, fm.left)
                    for row in rows
                    if not (row.left_deleted or row.right_deleted)
                    for fm in self._fields
                ],
            )
            self._load_echoes(
                [
                    row
                    for row in rows
                    if not (row.left_deleted or row.right_deleted)
                    and row.left_proj is not None
                    and row.right_proj is not None
                    and not _settled(row, active_links)
                ]
            )
            for staged in rows:
                row = _with_mod_texts(staged)
                if row.right_light:
                    # Its left record changed but the right one's own values were never read
                    # (its read by key failed): unknown, so not decided this cycle.
                    continue
                if row.left_deleted or row.right_deleted:
                    self._gone(step, plans, plan_items, row)
                    continue
                if row.left_proj is None or row.right_proj is None:
                    continue  # held back: a value does not map (escalated)
                if _settled(row, active_links):
                    continue  # the fast path: nothing changed anywhere
                self._decide_pair(step, plans, plan_items, row)
            self._phase("decide", began)
            ids = self._commit(step)
            self._plan(stash, plans, plan_items, step.new_items, ids)

    def _load_echoes(self, rows: Sequence[PairRow]) -> None:
        """The echo entries with a source time of the records about to be decided: one storage
        call per batch. A side whose field holds such an entry's value holds a value syncrecon
        wrote (or is writing: the fast loop records before it writes, and commits its base only
        after), and the entry's time is when the edit it copies happened."""
        self.echoed = (
            self.storage.echo_times(
                self.sync.name,
                [
                    (side, row.left_key if side is Side.LEFT else row.right_key)
                    for row in rows
                    for side in Side
                ],
                self.clock.now(),
            )
            if rows
            else {}
        )
        self.echoed_fields = {at[:3] for at in self.echoed}

    def _echo_time(
        self, side: Side, key: str, name: str, values: Mapping[str, Any]
    ) -> datetime | None:
        """The edit time of ``values[name]`` on ``side`` if syncrecon wrote that value there
        (its fingerprint is in the echo ledger with a source time), else ``None``."""
        if (side, key, name) not in self.echoed_fields or name not in values:
            return None
        return self.echoed.get((side, key, name, fingerprint(values[name])))

    def _plan(
        self,
        stash: Stash,
        plans: list[Planned],
        plan_items: list[list[Discrepancy]],
        committed: list[Discrepancy],
        ids: list[int],
    ) -> None:
        """Store planned writes with the queue ids of the items they resolve."""
        by_object = {id(item): item_id for item, item_id in zip(committed, ids, strict=True)}
        stash.plan(
            plan._replace(items=_codec.dumps([by_object[id(item)] for item in items]))
            for plan, items in zip(plans, plan_items, strict=True)
        )

    def _decide_pair(
        self,
        step: Step,
        plans: list[Planned],
        plan_items: list[list[Discrepancy]],
        row: PairRow,
    ) -> None:
        lkey, rkey, base_text, nat = row.left_key, row.right_key, row.base, row.nat
        lmod, rmod, lft, rft, rraw = (
            row.left_mod,
            row.right_mod,
            row.left_ftimes,
            row.right_ftimes,
            row.right_raw,
        )
        bad = {
            Side.LEFT: _codec.loads(row.left_bad) if row.left_bad else {},
            Side.RIGHT: _codec.loads(row.right_bad) if row.right_bad else {},
        }
        assert row.left_proj is not None
        assert row.right_proj is not None
        left = _codec.loads(row.left_proj)
        right = _codec.loads(row.right_proj)
        base = _codec.loads(base_text) if base_text else {}
        right_raw = _codec.loads(rraw) if rraw else {}
        is_new = base_text is None
        times = (
            parse_ts(lmod) if lmod else None,
            parse_ts(rmod) if rmod else None,
            _codec.loads(lft) if lft else {},
            _codec.loads(rft) if rft else {},
        )
        if is_new:
            step.links.append(
                Link(sync=self.sync.name, left_key=lkey, right_key=rkey, natural_key=nat)
            )
            if self.sync.create_on:
                # Matched by natural key: a create an earlier cycle may have made is found.
                step.intents_settled += [
                    (self.sync.name, Side.RIGHT, lkey),
                    (self.sync.name, Side.LEFT, rkey),
                ]
            # The records are now matched one to one: earlier duplicate doubts are settled.
            for key in (
                (self.sync.name, lkey, "", RECORD_FIELD),
                (self.sync.name, "", rkey, RECORD_FIELD),
            ):
                self._close_record_item(step, key, DUPLICATE_CATEGORY, "matched one to one")
        base_values: dict[str, Any] = {}
        writes: dict[Side, dict[str, Any]] = {Side.LEFT: {}, Side.RIGHT: {}}
        expect: dict[Side, dict[str, Any]] = {Side.LEFT: {}, Side.RIGHT: {}}
        source: dict[Side, dict[str, list[Any]]] = {Side.LEFT: {}, Side.RIGHT: {}}
        copies: dict[Side, dict[str, str]] = {Side.LEFT: {}, Side.RIGHT: {}}
        pending_base: dict[str, Any] = {}
        fixes: list[tuple[Decision, Discrepancy]] = []
        for fm in self._fields:
            if fm.left in self.quarantined:
                continue  # schema drift: no decision, no write, no base move until resolved
            if fm.left in bad[Side.LEFT] or fm.left in bad[Side.RIGHT]:
                self._invalid_value(step, lkey, rkey, fm, bad)
                continue  # held: a value that does not fit is never decided or written
            if fm.left not in left or fm.left not in right:
                self.t.unknown_fields += 1
                continue  # absent is unknown, not blank: not decided for this record
            state = _copied_times(
                self._state(fm, left, right, base, times),
                self._echo_time(Side.LEFT, lkey, fm.left, left),
                self._echo_time(Side.RIGHT, rkey, fm.right, right_raw),
            )
            decision = fm.decide(state)
            applied = self.applied.get((lkey, fm.left))
            source_time = _source_time(decision, state)
            if (
                applied is not None
                and self.started is not None
                and applied > self.started
                and decision.rule == "recency"
                and decision.outcome is not Outcome.AGREE
                and source_time is not None
                and source_time < applied
            ):
                # The newest change wins, and a change of this field newer than the winning
                # value was made after this cycle began, and applied (by the fast loop), maybe
                # after this record was read: the value read may be older than the agreed
                # state. Not decided now; the next cycle reads both sides again. A change
                # older than the cycle is not waited for: either the reads show it, or the
                # re-reads before writing catch its late commit, or its value is gone from
                # both systems (overwritten by a write it raced), and waiting for it would
                # hold the field forever. (Other rules do not go by time: a source of truth
                # wins whatever the other side's times.)
                self.t.skipped += 1
                continue
            if (
                source_time is not None
                and not decision.escalated
                and (applied is None or source_time > applied)
            ):
                # The order guard learns what this cycle settles or writes (invariant 1).
                step.field_times.append((self.sync.name, lkey, fm.left, source_time))
            key = (self.sync.name, lkey, rkey, fm.left)
            prior = self.active.get(key)
            if (
                prior is not None
                and prior.status is Status.ESCALATED
                and decision.outcome is not Outcome.AGREE
                and not decision.escalated
            ):
                # Invariant: an escalated field changes only by an operator's decision.
                decision = attrs.evolve(
                    decision,
                    outcome=Outcome.ESCALATE,
                    value=None,
                    category=prior.category,
                    reason=f"waiting for an operator since {prior.detected_at.isoformat()}"
                    f" ({prior.category}); {decision.rule} would now say: {decision.reason}",
                )
            if (
                decision.outcome in (Outcome.TAKE_LEFT, Outcome.MERGE)
                and not decision.writes_left
                and holds(fm, Side.RIGHT, right_raw.get(fm.right), decision.value)
            ):
                decision = attrs.evolve(
                    decision,
                    outcome=Outcome.AGREE,
                    reason="the right system already holds this value in its own vocabulary",
                )
            if decision.outcome is Outcome.AGREE:
                if not state.has_base or not _same(base.get(fm.left), decision.value):
                    base_values[fm.left] = decision.value
                if prior is not None:
                    closed = (
                        Status.AUTO_RESOLVED if prior.status is Status.OPEN else Status.RESOLVED
                    )
                    assert prior.id is not None
                    step.item_updates.append(
                        ItemUpdate(
                            id=prior.id,
                            status=closed,
                            resolution=decision.value,
                            resolved_at=self.clock.now(),
                            note="both systems now agree",
                        )
                    )
                    if closed is Status.AUTO_RESOLVED and prior.rule:
                        self.t.auto[prior.rule] += 1
                continue
            self.t.found += 1
            item = self._item(
                left_key=lkey,
                right_key=rkey,
                field=fm.left,
                status=Status.ESCALATED if decision.escalated else Status.OPEN,
                left_value=state.left,
                right_value=state.right,
                base_value=None if not state.has_base else state.base,
                has_base=state.has_base,
                rule=decision.rule,
                category=decision.category,
                explanation=decision.explain(),
                resolution=None if decision.escalated else decision.value,
            )
            if decision.escalated:
                assert decision.category is not None
                self.t.escalated[decision.category] += 1
                step.new_items.append(item)
                continue
            fixes.append((decision, item))
            pending_base[fm.left] = decision.value
            if decision.writes_right:
                writes[Side.RIGHT][fm.right] = fm.transform.to_right(decision.value)
                expect[Side.RIGHT][fm.right] = right_raw.get(fm.right)
                # The source (left) must still hold what was read, or what this cycle writes
                # to it too (a merge): re-read with the target before writing.
                source[Side.RIGHT][fm.left] = [state.left, decision.value]
                if source_time is not None:
                    copies[Side.RIGHT][fm.right] = ts(source_time)
            if decision.writes_left:
                writes[Side.LEFT][fm.left] = decision.value
                expect[Side.LEFT][fm.left] = state.left
                source[Side.LEFT][fm.right] = [
                    right_raw.get(fm.right),
                    fm.transform.to_right(decision.value),
                ]
                if source_time is not None:
                    copies[Side.LEFT][fm.left] = ts(source_time)
        if base_values and not is_new:
            step.bases.append(BaseUpdate(sync=self.sync.name, left_key=lkey, values=base_values))
        elif is_new:
            step.links[-1] = attrs.evolve(step.links[-1], base=base_values)
        if not fixes:
            self._mark_settled(step, row, {**base, **base_values})
            return
        items = [item for _, item in fixes]
        rules = [d.rule for d, _ in fixes]
        if self.dry_run:
            for rule in rules:
                self.t.auto[rule] += 1
            return
        step.new_items.extend(items)
        targets = [side for side in Side if writes[side]]
        shared = int(len(targets) == 2)
        for side in targets:
            mod = times[0] if side is Side.LEFT else times[1]
            plans.append(
                Planned(
                    target=_SIDE_INDEX[side],
                    op=ChangeOp.UPDATE.value,
                    left_key=lkey,
                    right_key=rkey,
                    nat=nat,
                    fields=_codec.dumps(writes[side]),
                    expect=_codec.dumps(expect[side]),
                    expect_mod=_iso(mod),
                    base=_codec.dumps(pending_base),
                    items="[]",
                    rules=_codec.dumps(rules),
                    shared=shared,
                    src=_plan_source(source[side], copies[side]),
                )
            )
            plan_items.append(items)

    def _mark_settled(self, step: Step, row: PairRow, base: Mapping[str, Any]) -> None:
        """Mark each side of a decided pair that now holds exactly its new base (so the next
        cycle finds it unchanged without reading it in full)."""
        if self.dry_run or row.left_bad or row.right_bad:
            return
        base_text = _codec.dumps(dict(base))
        for side, proj_text, mod in (
            (Side.LEFT, row.left_proj, row.left_mod),
            (Side.RIGHT, row.right_proj, row.right_mod),
        ):
            if proj_text != base_text:
                continue
            step.marks.append(
                SeenMark(
                    sync=self.sync.name,
                    side=side,
                    left_key=row.left_key,
                    base=base_text,
                    seen=self._seen(parse_ts(mod)) if mod else None,
                    digest=self._digest(proj_text),
                )
            )

    def _invalid_value(
        self, step: Step, lkey: str, rkey: str, fm: FieldMap, bad: Mapping[Side, Mapping[str, str]]
    ) -> None:
        """Escalate, once, a field of a linked record held because a value does not fit."""
        prior = self.active.get((self.sync.name, lkey, rkey, fm.left))
        if prior is not None and (
            prior.category == INVALID_VALUE_CATEGORY or prior.status is Status.ESCALATED
        ):
            return  # already waiting for an operator
        what = [
            f"{self.sync.connector(side).name} record {lkey if side is Side.LEFT else rkey!r}:"
            f" {bad[side][fm.left]}"
            for side in Side
            if fm.left in bad[side]
        ]
        step.new_items.append(
            self._escalation(
                left_key=lkey,
                right_key=rkey,
                field=fm.left,
                rule="field_check",
                category=INVALID_VALUE_CATEGORY,
                explanation="; ".join(what) + ". This field of this record is held (not decided,"
                " not written) until the value fits; every other field still syncs.",
            )
        )

    def _gone(
        self,
        step: Step,
        plans: list[Planned],
        plan_items: list[list[Discrepancy]],
        row: PairRow,
    ) -> None:
        lkey, rkey, ldel, rdel = row.left_key, row.right_key, row.left_deleted, row.right_deleted
        if ldel and rdel:
            step.unlink.append((self.sync.name, lkey))
            self._settle_link(step, lkey, rkey, "the record is deleted in both systems")
            return
        deleted = Side.LEFT if ldel else Side.RIGHT
        survivor = deleted.other
        self.t.found += 1
        if self.sync.delete_from is deleted:
            item = self._item(
                left_key=lkey,
                right_key=rkey,
                field=RECORD_FIELD,
                status=Status.OPEN,
                rule="delete_from",
                explanation=f"deleted in {deleted}, the side whose deletions propagate",
            )
            if self.dry_run:
                self.t.auto["delete_from"] += 1
                return
            step.new_items.append(item)
            plans.append(
                Planned(
                    target=_SIDE_INDEX[survivor],
                    op=ChangeOp.DELETE.value,
                    left_key=lkey,
                    right_key=rkey,
                    nat=row.nat,
                    fields="{}",
                    expect=None,
                    expect_mod=row.left_mod if survivor is Side.LEFT else row.right_mod,
                    base=row.base,
                    items="[]",
                    rules=_codec.dumps(["delete_from"]),
                    shared=0,
                    src=None,
                )
            )
            plan_items.append([item])
            return
        self.t.escalated[DELETION_CATEGORY] += 1
        step.new_items.append(
            self._item(
                left_key=lkey,
                right_key=rkey,
                field=RECORD_FIELD,
                status=Status.ESCALATED,
                rule="delete_from",
                category=DELETION_CATEGORY,
                explanation=f"deleted in {deleted}, whose deletions do not propagate"
                f" ({'no side' if self.sync.delete_from is None else self.sync.delete_from}"
                " is the source of deletions)",
            )
        )

    def _plan_singles(self, stash: Stash) -> None:
        """Plan creates for records that exist on one side only, where the sync allows it.

        Only full sweeps create: an incremental pass does not see unchanged unlinked records
        on the other side, so it could not tell a missing record from an unmatched one.
        """
        if self.incremental:
            return
        for side in Side:
            target = side.other
            if target not in self.sync.create_on:
                continue
            for batch in stash.singles(_SIDE_INDEX[side], self.rec.batch_size):
                self._plan_creates(stash, side, target, batch)

    def _plan_creates(self, stash: Stash, side: Side, target: Side, batch: list[Single]) -> None:
        nk = self.sync.natural_key
        assert nk is not None
        nk_source = nk.left if side is Side.LEFT else nk.right
        nk_target = nk.right if target is Side.RIGHT else nk.left
        rows = []
        items = []
        for key, nat, proj_text, raw_text in batch:
            if proj_text is None:
                continue  # its values do not map: held and escalated, never created
            if nat is None:
                # Without a natural key a create could not be matched back after a crash.
                items.append(
                    self._escalation(
                        left_key=key if side is Side.LEFT else None,
                        right_key=key if side is Side.RIGHT else None,
                        rule="create_on",
                        category=NO_NATURAL_KEY_CATEGORY,
                        explanation=f"this {side} record has no natural key, so it is not"
                        f" created in {target}; give it one or link it by hand",
                    )
                )
                continue
            proj = _codec.loads(proj_text)
            fields: dict[str, Any] = {}
            base: dict[str, Any] = {}
            for fm in self._fields:
                if not fm.direction.allows_write(target) or fm.left in self.quarantined:
                    continue
                if fm.left not in proj:
                    continue  # unknown (absent) or held (does not fit): never created blank
                value = proj[fm.left]
                base[fm.left] = value
                if target is Side.RIGHT:
                    fields[fm.right] = fm.transform.to_right(value)
                else:
                    fields[fm.left] = value
            raw = _codec.loads(raw_text) if raw_text else {}
            if nk_target not in fields and nk_source in raw:
                fields[nk_target] = raw[nk_source]
            self.t.found += 1
            if self.dry_run:
                self.t.auto["create_on"] += 1
                continue
            lkey, rkey = (key, None) if side is Side.LEFT else (None, key)
            rows.append(
                Planned(
                    target=_SIDE_INDEX[target],
                    op=ChangeOp.CREATE.value,
                    left_key=lkey,
                    right_key=rkey,
                    nat=nat,
                    fields=_codec.dumps(fields),
                    expect=None,
                    expect_mod=None,
                    base=_codec.dumps(base),
                    items="[]",
                    rules=_codec.dumps(["create_on"]),
                    shared=0,
                    src=None,
                )
            )
        stash.plan(rows)
        self._commit(Step(at=self.clock.now(), new_items=items))

    # -- writing -----------------------------------------------------------------------------

    def _execute(self, stash: Stash) -> None:
        stash.checkpoint()
        for side in Side:
            connector = self.sync.connector(side)
            caps = connector.capabilities
            size = min(caps.max_read_batch, caps.max_write_batch)
            index = _SIDE_INDEX[side]
            for rows in stash.planned(index, ("update", "delete"), size):
                self._write_existing(stash, side, connector, rows)
                self._renew_lease()
            for rows in stash.planned(index, ("create",), caps.max_write_batch):
                self._write_creates(side, connector, rows)
                self._renew_lease()
        self._finish_shared(stash)

    def _write_existing(
        self, stash: Stash, side: Side, connector: AnyConnector, rows: list[PlanRow]
    ) -> None:
        # Claim both records of every pair first, as a fast-loop worker claims an event's
        # record: a worker between its write and its commit holds it, and a worker gets no
        # events of a record this cycle holds. So a cycle and a worker never write one record
        # at once (a worker's late write cannot cross the cycle's, and a merge never uses a
        # base a worker is about to move). A record a worker holds is left to the next cycle.
        pair_records = {
            r.id: (
                record_name(self.sync.name, Side.LEFT, r.key(0)),
                record_name(self.sync.name, Side.RIGHT, r.key(1)),
            )
            for r in rows
        }
        wanted = sorted({record for pair in pair_records.values() for record in pair})
        granted = self.storage.claim_records(
            self.owner, wanted, now=self.clock.now(), lease=self.rec.lease_ttl
        )
        try:
            self._write_claimed(stash, side, connector, rows, pair_records, granted)
        finally:
            self.storage.release_records(self.owner, sorted(granted))

    def _write_claimed(
        self,
        stash: Stash,
        side: Side,
        connector: AnyConnector,
        rows: list[PlanRow],
        pair_records: Mapping[int, tuple[str, str]],
        granted: set[str],
    ) -> None:
        held = [r for r in rows if not set(pair_records[r.id]) <= granted]
        rows = [r for r in rows if set(pair_records[r.id]) <= granted]
        if not rows:
            step = Step(at=self.clock.now())
            self._skip(step, held)
            stash.mark_done([r.id for r in held], -1)
            self._commit(step)
            return
        keyed = {r.key(_SIDE_INDEX[side]): r for r in rows}
        current = {r.key: r for r in read_batch(self.caller, connector, list(keyed))}
        sources = self._reread_sources(side, rows)
        plan_src = {r.id: _codec.loads(r.src) for r in rows if r.src}
        changes: list[Change] = []
        skipped: list[PlanRow] = list(held)
        for key, row in keyed.items():
            op = row.op
            expect_text, expect_mod = row.expect, row.expect_mod
            now_rec = current.get(key)
            if now_rec is None or now_rec.deleted:
                skipped.append(row)
                continue
            if (
                sources is not None
                and row.id in plan_src
                and not _source_holds(
                    sources.get(row.key(_SIDE_INDEX[side.other])),
                    plan_src[row.id]["holds"],
                )
            ):
                # The source moved on after it was read (a user, or the fast loop): the value
                # decided from it is old. Never write it; the next cycle decides again.
                skipped.append(row)
                continue
            if op == ChangeOp.DELETE.value:
                mod = now_rec.modified_at
                if expect_mod and mod is not None and mod > parse_ts(expect_mod):
                    skipped.append(row)
                    continue
                changes.append(Change(op=ChangeOp.DELETE, key=key, ref=str(row.id)))
                continue
            expect = _codec.loads(expect_text) if expect_text else {}
            if any(not _same(now_rec.fields.get(f), v) for f, v in expect.items()):
                skipped.append(row)  # changed since we read it: never overwrite a newer value
                continue
            changes.append(
                Change(
                    op=ChangeOp.UPDATE, key=key, fields=_codec.loads(row.fields), ref=str(row.id)
                )
            )
        step = Step(at=self.clock.now())
        self._skip(step, skipped)
        stash.mark_done([r.id for r in skipped], -1)
        if changes:
            results = self._write(connector, changes)
            by_id = {int(c.ref): res for c, res in zip(changes, results, strict=True)}
            changes_by_id = {int(c.ref): c for c in changes}
            ok_ids = []
            for row in rows:
                res = by_id.get(row.id)
                if res is None:
                    continue
                if not res.ok:
                    self._failed(step, row, res)
                    stash.mark_done([row.id], -1)
                    continue
                ok_ids.append(row.id)
                self.t.writes[side.value] += 1
                if row.op == ChangeOp.DELETE.value:
                    self.t.deleted[side.value] += 1
                    left_key, right_key = row.pair
                    step.unlink.append((self.sync.name, left_key))
                    self._resolve(step, row)
                    self._settle_link(step, left_key, right_key, "the record was deleted")
                else:
                    copied = plan_src.get(row.id, {}).get("times", {})
                    self._remember_writes(step, side, changes_by_id[row.id], copied)
                    if not row.shared:
                        self._resolve(step, row)
            stash.mark_done(ok_ids, 1)
        self._commit(step)

    def _reread_sources(self, side: Side, rows: list[PlanRow]) -> dict[str, Record] | None:
        """The source records of the updates planned to ``side``, read again in one batch next
        to the targets (``verify_source``); ``None`` when not asked for or nothing to check."""
        if not self.rec.verify_source:
            return None
        wanted = sorted({r.key(_SIDE_INDEX[side.other]) for r in rows if r.src})
        if not wanted:
            return None
        connector = self.sync.connector(side.other)
        size = connector.capabilities.max_read_batch
        found: dict[str, Record] = {}
        for i in range(0, len(wanted), size):
            found.update(
                (r.key, r) for r in read_batch(self.caller, connector, wanted[i : i + size])
            )
        return found

    def _remember_writes(
        self, step: Step, side: Side, change: Change, copied: Mapping[str, str]
    ) -> None:
        """Echo-ledger entries, so the webhooks this write causes are recognized as ours; each
        with the time of the edit its value copies (``copied``, by target field), so that a
        later read of the target compares that edit's time, not the write's."""
        if change.key is None:
            return
        step.echoes.extend(
            echo_entries(
                self.sync.name,
                side,
                change.key,
                change.fields,
                now=self.clock.now(),
                ttl=self.rec.echo_ttl,
                source_times={name: parse_ts(at) for name, at in copied.items()},
            )
        )

    def _write(self, connector: AnyConnector, changes: list[Change]) -> list[WriteResult]:
        # A whole batch that failed leaves every item queued (retryable only if transient).
        return write_batch_or_failures(self.caller, connector, changes)

    def _resolve(self, step: Step, row: PlanRow) -> None:
        """A planned fix landed: update bases and close its queue items."""
        base = _codec.loads(row.base) if row.base else {}
        if row.op != ChangeOp.DELETE.value and base:
            step.bases.append(BaseUpdate(sync=self.sync.name, left_key=row.pair[0], values=base))
        self._close_items(step, row.items, row.rules)

    def _close_items(self, step: Step, items_text: str | None, rules_text: str | None) -> None:
        items = _codec.loads(items_text) if items_text else []
        rules = _codec.loads(rules_text) if rules_text else []
        for rule in rules:
            self.t.auto[rule] += 1
        now = self.clock.now()
        for item_id in items:
            step.item_updates.append(
                ItemUpdate(id=item_id, status=Status.AUTO_RESOLVED, resolved_at=now)
            )

    def _skip(self, step: Step, rows: list[PlanRow]) -> None:
        self.t.skipped += len(rows)
        for row in rows:
            for item_id in _codec.loads(row.items) if row.items else []:
                step.item_updates.append(
                    ItemUpdate(
                        id=item_id,
                        status=Status.OPEN,
                        note="the target changed (or vanished) after it was read; the next"
                        " cycle decides again",
                    )
                )

    def _failed(self, step: Step, row: PlanRow, res: WriteResult) -> None:
        self.t.write_failures += 1
        for item_id in _codec.loads(row.items) if row.items else []:
            step.item_updates.append(
                ItemUpdate(
                    id=item_id,
                    status=Status.OPEN,
                    note=f"write failed ({'retryable' if res.retryable else 'rejected'}):"
                    f" {res.error}",
                )
            )

    def _write_creates(self, side: Side, connector: AnyConnector, rows: list[PlanRow]) -> None:
        """Create records on ``side``, never twice (invariant 2).

        Each create is recorded with a stable idempotency key before the call (a create
        intent, committed first). A create is retried after a lost answer only where that is
        safe: the provider de-duplicates by the key (``idempotent_creates``), or the connector
        can look up what it created (``finds_created``, asked before every retry and before
        creating again what an earlier cycle may have created). Otherwise the intent stays and
        the next full sweep links the record by its natural key.
        """
        source_of = {row.id: row.key(_SIDE_INDEX[side.other]) for row in rows}
        before = self.storage.get_intents(self.sync.name, side, list(source_of.values()))
        now = self.clock.now()
        keys: dict[int, str] = {}
        fresh: list[CreateIntent] = []
        for row in rows:
            intent = before.get(source_of[row.id])
            if intent is None:
                intent = CreateIntent(
                    sync=self.sync.name,
                    side=side,
                    source_key=source_of[row.id],
                    idempotency_key=f"syncrecon-{uuid.uuid4().hex}",
                    created_at=now,
                )
                fresh.append(intent)
            keys[row.id] = intent.idempotency_key
        self._commit(Step(at=now, intents=fresh))
        by_id, ambiguous = self._create(connector, rows, keys, earlier=set(before))
        results = [by_id[row.id] for row in rows]
        step = Step(at=self.clock.now())
        for row, res in zip(rows, results, strict=True):
            if res.ok or row.id not in ambiguous:
                # Linked below, or definitely not created: the intent is done with.
                step.intents_settled.append((self.sync.name, side, source_of[row.id]))
        returned = [r.key for r in results if r.ok and r.key]
        taken = self.storage.get_links(self.sync.name, side, returned) if returned else {}
        for row, res in zip(rows, results, strict=True):
            if res.ok and res.key in taken:
                # The system answered with a record that is already linked (an upsert or a
                # de-duplication on its side): never link one record twice.
                res = WriteResult(
                    ref=res.ref,
                    ok=False,
                    key=res.key,
                    error=f"{side} returned {res.key!r}, which is already linked to another record",
                )
            if not res.ok or not res.key:
                self.t.write_failures += 1
                step.new_items.append(
                    self._item(
                        left_key=row.left_key,
                        right_key=row.right_key,
                        field=RECORD_FIELD,
                        status=Status.OPEN,
                        rule="create_on",
                        explanation=f"creating the record in {side} failed: {res.error}",
                    )
                )
                continue
            self.t.writes[side.value] += 1
            self.t.created[side.value] += 1
            self.t.auto["create_on"] += 1
            prior = self.active.get(
                (self.sync.name, row.left_key or "", row.right_key or "", RECORD_FIELD)
            )
            if prior is not None and prior.rule == "create_on" and prior.id is not None:
                step.item_updates.append(
                    ItemUpdate(
                        id=prior.id, status=Status.AUTO_RESOLVED, resolved_at=self.clock.now()
                    )
                )
            source_key = source_of[row.id]
            step.links.append(
                Link(
                    sync=self.sync.name,
                    left_key=res.key if side is Side.LEFT else source_key,
                    right_key=res.key if side is Side.RIGHT else source_key,
                    natural_key=row.nat,
                    base=_codec.loads(row.base) if row.base else {},
                )
            )
        self._commit(step)

    def _create(
        self,
        connector: AnyConnector,
        rows: list[PlanRow],
        keys: Mapping[int, str],
        *,
        earlier: set[str],
    ) -> tuple[dict[int, WriteResult], set[int]]:
        """Results of creating ``rows`` by plan id, and the ids whose outcome is unknown."""
        caps = connector.capabilities
        results: dict[int, WriteResult] = {}
        ambiguous: set[int] = set()
        todo = rows
        if earlier and caps.finds_created:
            # An earlier attempt may have landed (a lost answer, a crash): look it up first.
            to_right = connector is self.sync.right
            maybe = [
                row for row in rows if (row.left_key if to_right else row.right_key) in earlier
            ]
            found, failed = self._look_up(connector, maybe, keys)
            results.update(found)
            ambiguous |= failed
            for row_id in failed:
                results[row_id] = WriteResult(
                    ref=str(row_id), ok=False, error="looking up an earlier create failed"
                )
            todo = [row for row in rows if row.id not in results]
        tries = self.rec.retry.attempts if caps.finds_created else 1
        while todo:
            changes = [
                Change(
                    op=ChangeOp.CREATE,
                    fields=_codec.loads(row.fields),
                    ref=str(row.id),
                    idempotency_key=keys[row.id],
                )
                for row in todo
            ]
            tries -= 1
            try:
                # The provider de-duplicates by the key: the call itself may be retried.
                out = write_batch(
                    self.caller, connector, changes, attempts=None if caps.idempotent_creates else 1
                )
            except TransientError as exc:
                if tries > 0:
                    if isinstance(exc, RateLimitedError) and exc.retry_after:
                        self.rec.retry.sleep(min(exc.retry_after, self.rec.retry.maximum))
                    found, failed = self._look_up(connector, todo, keys)
                    if not failed:
                        results.update(found)
                        todo = [row for row in todo if row.id not in found]
                        continue
                error = (
                    f"the answer to the create was lost ({type(exc).__name__}: {exc}); the next"
                    " cycle links the record if it was created, or creates it with the same key"
                )
                for row in todo:
                    results[row.id] = WriteResult(
                        ref=str(row.id), ok=False, error=error, retryable=True
                    )
                    ambiguous.add(row.id)
                break
            except (ConnectorError, StorageError) as exc:
                # A refusal (4xx) created nothing; a connector's own bug may have, after the call.
                unknown = isinstance(exc, ConnectorBugError | StorageError)
                if unknown:
                    log.error("%s: creating failed: %s", connector.name, exc, exc_info=True)
                for row in todo:
                    results[row.id] = WriteResult(
                        ref=str(row.id), ok=False, error=f"{type(exc).__name__}: {exc}"
                    )
                    if unknown:
                        ambiguous.add(row.id)
                break
            results.update({int(res.ref): res for res in out})
            break
        return results, ambiguous

    def _look_up(
        self, connector: AnyConnector, rows: list[PlanRow], keys: Mapping[int, str]
    ) -> tuple[dict[int, WriteResult], set[int]]:
        """Records ``connector`` already created for ``rows`` (by idempotency key), as results;
        and the ids that could not be looked up."""
        if not rows:
            return {}, set()
        try:
            found = find_created(self.caller, connector, [keys[row.id] for row in rows])
        except (ConnectorError, StorageError) as exc:
            log.warning("%s: looking up earlier creates failed: %s", connector.name, exc)
            return {}, {row.id for row in rows}
        out = {}
        for row in rows:
            record = found.get(keys[row.id])
            if record is not None:
                out[row.id] = WriteResult(ref=str(row.id), ok=True, key=record.key)
        return out, set()

    def _finish_shared(self, stash: Stash) -> None:
        """Links written on both sides: their bases move only once both writes landed."""
        step = Step(at=self.clock.now())
        for left_key, base_text, items_text, rules_text in stash.shared_complete():
            base = _codec.loads(base_text) if base_text else {}
            step.bases.append(BaseUpdate(sync=self.sync.name, left_key=left_key, values=base))
            self._close_items(step, items_text, rules_text)
        self._commit(step)

    # -- reporting ---------------------------------------------------------------------------

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
