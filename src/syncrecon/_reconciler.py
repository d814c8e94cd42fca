"""The slow loop: a reconciliation cycle over every linked record, field by field.

One cycle: read both systems (a full sweep, or an incremental pass since the watermark) into
a scratch file -> match records (links first, then the natural key) -> decide every mapped
field with its policy -> queue every discrepancy -> check the deletion guard -> re-read the
targets and write the fixes in batches -> update bases, links, watermarks and counters.

The engine is plain blocking code; :meth:`Reconciler.run_cycle` and
:meth:`Reconciler.arun_cycle` are its two front doors. Each step of a cycle has its own module
in :mod:`syncrecon._cycle` (``_state``, ``_read``, ``_match``, ``_decide``, ``_write``,
``_report``, and ``_run``, the driver); this module keeps the front door.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import timedelta

import anyio.to_thread

# ``name as name``: re-exported (importable from here as before the steps moved to _cycle).
from ._clock import Clock, SystemClock
from ._codec import fingerprint as fingerprint
from ._connector import Caller, RetrySettings
from ._cycle import CycleReport, _Cycle
from ._cycle import _Heartbeat as _Heartbeat
from ._cycle._match import DELETION_CATEGORY as DELETION_CATEGORY
from ._cycle._match import DUPLICATE_CATEGORY as DUPLICATE_CATEGORY
from ._cycle._match import MASS_DELETE_CATEGORY as MASS_DELETE_CATEGORY
from ._cycle._match import NO_NATURAL_KEY_CATEGORY as NO_NATURAL_KEY_CATEGORY
from ._cycle._read import INVALID_RECORD_CATEGORY as INVALID_RECORD_CATEGORY
from ._cycle._read import UNMAPPABLE_CATEGORY as UNMAPPABLE_CATEGORY
from ._cycle._state import _SIDE_INDEX as _SIDE_INDEX
from ._exceptions import ConfigurationError
from ._sync import SyncDefinition, mapping_fingerprint
from .storage._base import Storage

__all__ = ["CycleReport", "Reconciler"]


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
