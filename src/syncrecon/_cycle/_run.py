"""The driver: :class:`_Cycle` runs the steps of one cycle in order.

The cycle's steps, in the order it runs them, each a class extending the one before (a later step
calls an earlier one, never the reverse): ``_state`` -> ``_read`` -> ``_match`` -> ``_decide`` ->
``_write`` -> ``_report`` -> ``_run`` (:class:`_Cycle`, the driver).
"""

from __future__ import annotations

import time
from datetime import datetime

from .._exceptions import CycleHaltedError, LeaseHeldError
from .._models import Side
from .._stash import Stash
from ..storage._base import RECORD_FIELD, CycleRecord, Step
from ._match import MASS_DELETE_CATEGORY
from ._report import CycleReport, _Report
from ._state import _Heartbeat


class _Cycle(_Report):
    """One reconciliation cycle: take the lease, then read, match, decide, write, report."""

    def run(self) -> CycleReport:
        """Take the lease (a heartbeat renews it), run the steps over a scratch file, let go."""
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

    def _run(self, stash: Stash, started: datetime) -> CycleReport:
        """The steps in order; each names the module that holds it."""
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
        # The schema check (_decide) first: a quarantined field is neither decided nor written.
        self.quarantined = self._check_schema()

        # 1. read (_read): list both systems into the stash, then read counterparts by key.
        began = time.process_time()
        for side in Side:
            since = None
            if incremental:
                since = state.watermarks[side] - self.rec.overlap
            self._stage_listing(stash, side, since)
        self._stage_counterparts(stash)
        self._phase("read", began)

        # 2.-4. match, guard the deletions, decide, write.
        halted = self._settle(stash, mode, incremental=incremental, write=not self.dry_run)

        # 5. report (_report), stored with the watermarks and the counters.
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

    def _settle(self, stash: Stash, mode: str, *, incremental: bool, write: bool) -> str | None:
        """Steps 2 to 4 over the staged records, for a cycle and for a sharded cycle's finish
        step alike; returns why the mass-delete guard halted the cycle, or ``None``."""
        # 2. match (_match): link by natural key, then guard the deletions.
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
            # 3. decide (_decide) every linked pair; plan the creates (_match).
            began = time.process_time()
            self._compare(stash)
            self._plan_singles(stash)
            self._phase("compare", began)
            if write:
                # 4. write (_write) what was planned.
                began = time.process_time()
                self._execute(stash)
                self._phase("write", began)
        return halted
