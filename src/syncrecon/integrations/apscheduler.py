"""syncrecon's two loops as APScheduler 3 jobs, for hosts that already run APScheduler.

:func:`add_reconcile_job` schedules a :class:`~syncrecon.Reconciler`'s cycles (on an interval
or a crontab line), :func:`add_drain_job` a :class:`~syncrecon.webhooks.WebhookHandler`'s
drain of its inbox and outbox: ordinary APScheduler jobs, so the host's own scheduler, its
executors and its event listeners run them, and no syncrecon thread is started. Both work with
``BackgroundScheduler`` (and the other thread-based schedulers) and with ``AsyncIOScheduler``,
where the jobs are coroutines that use the async doors (:meth:`~syncrecon.Reconciler.arun_cycle`,
:meth:`~syncrecon.webhooks.WebhookHandler.aprocess_pending`), so ``async def`` connectors run on
the scheduler's event loop.

Each job runs at most one instance at a time (``max_instances=1``) and runs once when several
runs were missed (``coalesce=True``). Its id is stable (``syncrecon:reconcile:<sync name>``,
``syncrecon:drain``), and adding it again replaces it (``replace_existing=True``), so a host
may add the jobs at every start-up. A cycle skipped because another worker holds the sync's
lease (:class:`~syncrecon.LeaseHeldError`) is logged at INFO and the run ends normally; any
other error is logged with its traceback and raised again, so APScheduler's ``EVENT_JOB_ERROR``
listeners see it.

The jobs hold the reconciler or the handler itself: keep them in a memory job store (the
default), not a persistent one.

Needs ``pip install "syncrecon[apscheduler]"`` (APScheduler >= 3.10, < 4); importing this
module without it raises :class:`ImportError` saying so.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

try:
    from apscheduler.jobstores.base import JobLookupError
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger
except ImportError as exc:  # tested with apscheduler hidden in sys.modules
    raise ImportError(
        "syncrecon.integrations.apscheduler needs APScheduler 3 (>=3.10,<4):"
        ' pip install "syncrecon[apscheduler]"'
    ) from exc

from .._exceptions import LeaseHeldError

if TYPE_CHECKING:
    from apscheduler.job import Job

    from .._reconciler import CycleReport, Reconciler
    from ..webhooks._handler import ProcessReport, WebhookHandler

__all__ = [
    "DEFAULT_DRAIN_JOB_ID",
    "acycle_job",
    "add_drain_job",
    "add_reconcile_job",
    "adrain_job",
    "cycle_job",
    "drain_job",
    "reconcile_job_id",
]

log = logging.getLogger("syncrecon.integrations.apscheduler")

DEFAULT_DRAIN_JOB_ID = "syncrecon:drain"
"""The id :func:`add_drain_job` gives its job unless told another."""

_R = TypeVar("_R")


def reconcile_job_id(reconciler: Reconciler) -> str:
    """The id :func:`add_reconcile_job` gives the job of ``reconciler``'s sync by default."""
    return f"syncrecon:reconcile:{reconciler.sync.name}"


# -- the job functions -------------------------------------------------------------------------


def _done(report: _R, on_report: Callable[[_R], object] | None) -> _R:
    if on_report is not None:
        on_report(report)
    return report


def _skipped(what: object, exc: LeaseHeldError) -> None:
    log.info("%s skipped: another worker holds the lease (%s)", what, exc)


def cycle_job(
    reconciler: Reconciler, on_report: Callable[[CycleReport], object] | None = None
) -> CycleReport | None:
    """What the reconcile job runs (thread-based schedulers): one cycle.

    Returns its report (after passing it to ``on_report``), or None when the cycle was skipped
    because another worker holds the lease. Other errors are logged and raised.
    """
    try:
        report = reconciler.run_cycle()
    except LeaseHeldError as exc:
        _skipped(f"cycle of {reconciler!r}", exc)
        return None
    except Exception:
        log.exception("cycle of %r failed", reconciler)
        raise
    return _done(report, on_report)


async def acycle_job(
    reconciler: Reconciler, on_report: Callable[[CycleReport], object] | None = None
) -> CycleReport | None:
    """:func:`cycle_job` for ``AsyncIOScheduler``, through
    :meth:`~syncrecon.Reconciler.arun_cycle`."""
    try:
        report = await reconciler.arun_cycle()
    except LeaseHeldError as exc:
        _skipped(f"cycle of {reconciler!r}", exc)
        return None
    except Exception:
        log.exception("cycle of %r failed", reconciler)
        raise
    return _done(report, on_report)


def drain_job(
    handler: WebhookHandler, on_report: Callable[[ProcessReport], object] | None = None
) -> ProcessReport | None:
    """What the drain job runs (thread-based schedulers): one
    :meth:`~syncrecon.webhooks.WebhookHandler.process_pending`, which drains the inbox and
    retries the outbox entries that are due.

    Returns its report (after passing it to ``on_report``); errors are logged and raised.
    """
    try:
        report = handler.process_pending()
    except LeaseHeldError as exc:
        _skipped(f"drain of {handler!r}", exc)
        return None
    except Exception:
        log.exception("drain of %r failed", handler)
        raise
    return _done(report, on_report)


async def adrain_job(
    handler: WebhookHandler, on_report: Callable[[ProcessReport], object] | None = None
) -> ProcessReport | None:
    """:func:`drain_job` for ``AsyncIOScheduler``, through
    :meth:`~syncrecon.webhooks.WebhookHandler.aprocess_pending`."""
    try:
        report = await handler.aprocess_pending()
    except LeaseHeldError as exc:
        _skipped(f"drain of {handler!r}", exc)
        return None
    except Exception:
        log.exception("drain of %r failed", handler)
        raise
    return _done(report, on_report)


# -- adding them -------------------------------------------------------------------------------


def _is_async(scheduler: BaseScheduler) -> bool:
    return isinstance(scheduler, AsyncIOScheduler)


def _interval(scheduler: BaseScheduler, every: timedelta) -> IntervalTrigger:
    if every <= timedelta(0):
        raise ValueError(f"the interval must be positive, got {every!r}")
    return IntervalTrigger(seconds=every.total_seconds(), timezone=scheduler.timezone)


def _add(
    scheduler: BaseScheduler,
    func: Callable[..., Any],
    trigger: IntervalTrigger | CronTrigger,
    args: tuple[Any, ...],
    job_id: str,
    name: str,
    job_kwargs: dict[str, Any],
) -> Job:
    options: dict[str, Any] = {
        "max_instances": 1,
        "coalesce": True,
        "replace_existing": True,
        "name": name,
        **job_kwargs,
    }
    if options["replace_existing"] and scheduler.state == STATE_STOPPED:
        # Before start() APScheduler only queues jobs: drop a queued one with this id, so
        # adding twice before starting leaves one job, as it does after.
        with contextlib.suppress(JobLookupError):
            scheduler.remove_job(job_id, options.get("jobstore"))
    job: Job = scheduler.add_job(func, trigger, args=args, id=job_id, **options)
    return job


def add_reconcile_job(
    scheduler: BaseScheduler,
    reconciler: Reconciler,
    *,
    every: timedelta | None = None,
    cron: str | None = None,
    job_id: str | None = None,
    on_report: Callable[[CycleReport], object] | None = None,
    **job_kwargs: Any,
) -> Job:
    """Schedule ``reconciler``'s cycles on ``scheduler``; return the job.

    Give ``every`` (an interval: the first run one interval after the job is added) or ``cron``
    (a crontab line such as ``"17 */4 * * *"``, in the scheduler's time zone), not both; with
    neither, a cycle runs every four hours. ``on_report`` receives each
    :class:`~syncrecon.CycleReport` (the job's return value is the report too, as
    ``EVENT_JOB_EXECUTED`` events' ``retval``).

    The job's id is ``job_id``, by default :func:`reconcile_job_id` (``"syncrecon:reconcile:"``
    and the sync's name): adding the job again replaces it. ``job_kwargs`` go to
    ``scheduler.add_job`` and override the defaults (``max_instances=1``, ``coalesce=True``,
    ``replace_existing=True``); ``next_run_time=datetime.now(timezone.utc)``, say, runs the
    first cycle at once. On an ``AsyncIOScheduler`` the job is :func:`acycle_job`, elsewhere
    :func:`cycle_job`.

    :raises ValueError: for both ``every`` and ``cron``, or an interval that is not positive
        (a bad crontab line raises APScheduler's ``ValueError``).
    """
    if every is not None and cron is not None:
        raise ValueError("give every= or cron=, not both")
    trigger: IntervalTrigger | CronTrigger
    if cron is not None:
        trigger = CronTrigger.from_crontab(cron, timezone=scheduler.timezone)
    else:
        trigger = _interval(scheduler, every if every is not None else timedelta(hours=4))
    func = acycle_job if _is_async(scheduler) else cycle_job
    return _add(
        scheduler,
        func,
        trigger,
        (reconciler, on_report),
        job_id or reconcile_job_id(reconciler),
        f"syncrecon reconcile {reconciler.sync.name}",
        job_kwargs,
    )


def add_drain_job(
    scheduler: BaseScheduler,
    handler: WebhookHandler,
    *,
    every: timedelta = timedelta(seconds=5),
    job_id: str | None = None,
    on_report: Callable[[ProcessReport], object] | None = None,
    **job_kwargs: Any,
) -> Job:
    """Schedule ``handler``'s drain on ``scheduler`` every ``every``; return the job.

    Each run drains the inbox and retries the outbox entries that are due, once
    (:meth:`~syncrecon.webhooks.WebhookHandler.process_pending`); ``on_report`` receives each
    :class:`~syncrecon.webhooks.ProcessReport`. Needed when the handler stores events without
    processing them (``inline=False``), and to retry the outbox in any case.

    The job's id is ``job_id``, by default :data:`DEFAULT_DRAIN_JOB_ID`: give each handler its
    own when a scheduler drains several. ``job_kwargs`` are as for :func:`add_reconcile_job`.
    On an ``AsyncIOScheduler`` the job is :func:`adrain_job`, elsewhere :func:`drain_job`.

    Unlike :class:`~syncrecon.worker.Worker`, this does not prune old rows: call
    ``Worker(handler).prune()`` from a job of your own (daily, say) if the storage should not
    grow.

    :raises ValueError: for an interval that is not positive.
    """
    func = adrain_job if _is_async(scheduler) else drain_job
    return _add(
        scheduler,
        func,
        _interval(scheduler, every),
        (handler, on_report),
        job_id or DEFAULT_DRAIN_JOB_ID,
        "syncrecon drain",
        job_kwargs,
    )
