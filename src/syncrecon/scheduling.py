"""Running reconciliation cycles on a schedule.

:class:`IntervalScheduler` runs a :class:`~syncrecon.Reconciler`'s cycles every N hours, in a
background thread (sync hosts) or as a task (asyncio hosts). Never two cycles of a sync at
once: the reconciler's storage lease guards that across threads and processes, so several
workers may run a scheduler for the same sync and only one cycle runs at a time.

``Reconciler.run_cycle()`` stays directly callable, so cron, Celery beat or APScheduler can be
the scheduler instead; see the how-to guide.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from ._clock import Clock, SystemClock
from ._exceptions import LeaseHeldError
from ._reconciler import CycleReport, Reconciler
from ._runtime import Due, RunLoop

__all__ = ["IntervalScheduler", "Scheduler"]

log = logging.getLogger("syncrecon.scheduling")


class Scheduler(Protocol):
    """Something that runs cycles until stopped."""

    def start(self) -> None:
        """Begin running cycles in the background."""
        ...

    def stop(self, timeout: float | None = None) -> None:
        """Stop; a running cycle finishes first. Waits up to ``timeout`` seconds."""
        ...


class IntervalScheduler:
    """Runs a reconciler's cycle every ``every``, first at start (unless ``delay_first``).

    ``on_report`` receives each :class:`~syncrecon.CycleReport`; ``on_error`` each exception
    a cycle raised (the schedule goes on). A cycle skipped because another worker holds the
    lease is logged and retried at the next tick.

    Sync hosts call :meth:`start` and :meth:`stop` (or use it as a context manager); asyncio
    hosts ``await scheduler.run()`` in a task and cancel it or call :meth:`stop`. Both sleep
    until the next cycle is due (read from ``clock``), and :meth:`stop` ends the sleep at once.
    Tests drive :meth:`run_due` with a manual clock.
    """

    def __init__(
        self,
        reconciler: Reconciler,
        every: timedelta,
        *,
        clock: Clock | None = None,
        delay_first: bool = False,
        on_report: Callable[[CycleReport], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if every <= timedelta(0):
            raise ValueError("the interval must be positive")
        self.reconciler = reconciler
        self.every = every
        self.clock: Clock = clock or SystemClock()
        self.on_report = on_report
        self.on_error = on_error
        self.next_run: datetime = self.clock.now() + (every if delay_first else timedelta(0))
        self.cycles_run = 0
        self._loop = RunLoop()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"IntervalScheduler({self.reconciler!r}, every={self.every})"

    def seconds_until_due(self) -> float:
        """Seconds until the next cycle is due (0 when it is due now)."""
        return max(0.0, (self.next_run - self.clock.now()).total_seconds())

    def _due(self) -> Due:
        """What the loop waits for after a round: the next cycle."""
        return Due("cycle", self.seconds_until_due())

    def _claim_due(self) -> bool:
        now = self.clock.now()
        if now < self.next_run:
            return False
        self.next_run = now + self.every
        return True

    def _ran(self, report: CycleReport) -> CycleReport:
        self.cycles_run += 1
        if self.on_report is not None:
            self.on_report(report)
        return report

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, LeaseHeldError):
            log.info("cycle of %s skipped: another worker holds the lease", self.reconciler)
            return
        log.error("cycle of %s failed", self.reconciler, exc_info=exc)
        if self.on_error is not None:
            self.on_error(exc)

    def run_due(self) -> CycleReport | None:
        """Run a cycle if one is due now; return its report (None if none ran)."""
        if not self._claim_due():
            return None
        try:
            report = self.reconciler.run_cycle()
        except Exception as exc:
            self._failed(exc)
            return None
        return self._ran(report)

    async def arun_due(self) -> CycleReport | None:
        """:meth:`run_due` for async hosts (``async def`` connectors run on this loop)."""
        if not self._claim_due():
            return None
        try:
            report = await self.reconciler.arun_cycle()
        except Exception as exc:
            self._failed(exc)
            return None
        return self._ran(report)

    # -- threads -------------------------------------------------------------------------------

    def start(self) -> None:
        """Run cycles in a daemon thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the scheduler is already running")
        self._loop.rearm()
        self._thread = threading.Thread(
            target=self._loop.run,
            args=(self._round,),
            name=f"syncrecon-{self.reconciler.sync.name}",
            daemon=True,
        )
        self._thread.start()

    def _round(self) -> Due:
        self.run_due()
        return self._due()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the schedule; a cycle in progress completes first. Thread-safe; a waiting
        loop (either door) wakes at once."""
        self._loop.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> IntervalScheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- asyncio ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run cycles on the calling event loop until :meth:`stop` or cancellation.

        Each cycle runs in a worker thread (``arun_cycle``), so the loop stays responsive.
        """
        await self._loop.arun(self._around)

    async def _around(self) -> Due:
        await self.arun_due()
        return self._due()
