"""syncrecon's two loops as Celery tasks, for hosts that already run Celery workers and beat.

:func:`register_tasks` adds three tasks to the host's Celery app: ``syncrecon.cycle`` runs one
reconciliation cycle of a sync named in its arguments, ``syncrecon.drain`` drains the webhook
inbox and retries the outbox entries that are due, ``syncrecon.prune`` removes old rows
(:class:`~syncrecon.Retention`). :func:`cycle_schedule`, :func:`drain_schedule` and
:func:`prune_schedule` return entries for ``app.conf.beat_schedule``::

    app = Celery("myapp", broker="redis://localhost:6379/0", backend="redis://localhost:6379/1")
    register_tasks(app, "myapp.sync:build")
    app.conf.beat_schedule = {
        **cycle_schedule("customers", every=timedelta(hours=4)),
        **drain_schedule(every=timedelta(seconds=5)),
        **prune_schedule(),
    }

Messages carry names, never objects: a task's arguments are a sync's name and flags, in JSON.
The objects (reconcilers, a webhook handler, their storage) are built in each worker process
the first time one of its tasks runs, from what ``register_tasks`` was given: best an import
path (``"pkg.mod:attr"``, as ``celery -A`` takes one) of a function without arguments that
builds them, so that every process, a forked pool child included, opens its own storage
connections and gets its own lease owner. Beat and the web processes that only send tasks
never build them.

Each task's result is a JSON-ready dict with a ``status``: ``"done"`` with the report (the
:class:`~syncrecon.CycleReport` as :meth:`~syncrecon.CycleReport.to_dict`), or ``"skipped"``
when another worker holds the lease (:class:`~syncrecon.LeaseHeldError`, logged at INFO): a
skip is a success, never retried. A :class:`~syncrecon.StorageError` (the database was
unreachable, say) makes a cycle retry, ``storage_retries`` times with a growing delay, through
Celery's own retry; any other error fails the task and Celery logs it. One cycle of a sync runs
at a time, however many workers take the task: the storage's lease sees to it, not Celery.

The tasks are ``acks_late``: a message is acknowledged once its task ends, so a worker that
dies mid-task leaves it to be delivered again (with Redis, after the broker's
``visibility_timeout``). That is safe: the inbox is durable in storage and claimed per record,
so a repeated drain finds nothing left or finishes what the dead one began, and a repeated
cycle either finds the sync converged (a fixed point) or completes the interrupted one.

Needs ``pip install "syncrecon[celery]"`` (Celery >= 5.3 with Redis); importing this module
without Celery raises :class:`ImportError` saying so.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, Final

import attrs

try:
    from celery import Celery, Task
    from celery.schedules import crontab
except ImportError as exc:  # tested with celery hidden in sys.modules
    raise ImportError(
        'syncrecon.integrations.celery needs Celery (>=5.3): pip install "syncrecon[celery]"'
    ) from exc

from .._app import import_app
from .._clock import Clock
from .._exceptions import ConfigurationError, LeaseHeldError, SchemaVersionError, StorageError
from .._reconciler import CycleReport, Reconciler
from .._retention import Retention
from ..storage._base import Storage
from ..webhooks._handler import ProcessReport, WebhookHandler
from ..worker import Worker

__all__ = [
    "DEFAULT_NAMESPACE",
    "DONE",
    "PLANNED",
    "SKIPPED",
    "SyncTasks",
    "cycle_schedule",
    "drain_schedule",
    "prune_schedule",
    "register_tasks",
    "task_name",
]

log = logging.getLogger("syncrecon.integrations.celery")

DEFAULT_NAMESPACE: Final = "syncrecon"
"""The prefix of the tasks' names (``syncrecon.cycle``) and of the beat entries' names."""

DONE: Final = "done"
"""A task result's ``status`` when the work ran."""

SKIPPED: Final = "skipped"
"""A task result's ``status`` when another worker holds the lease."""

PLANNED: Final = "planned"
"""A sharded cycle task's ``status``: the cycle is planned and its shard tasks are sent."""

Target = str | Callable[[], Any] | Worker | Reconciler | WebhookHandler | Iterable[Any]
"""What :func:`register_tasks` loads its objects from (see there)."""

_KNOWN = (Worker, Reconciler, WebhookHandler)
_KINDS = ("cycle", "shard", "drain", "prune")


def task_name(kind: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The name of a syncrecon task: ``task_name("cycle") == "syncrecon.cycle"``.

    ``kind`` is ``"cycle"``, ``"shard"``, ``"drain"`` or ``"prune"``. A process that only
    sends tasks (a web app) uses it with ``app.send_task``, without importing the objects.
    """
    if kind not in _KINDS:
        raise ValueError(f"no syncrecon task of kind {kind!r} ({', '.join(_KINDS)})")
    return f"{namespace}.{kind}"


# -- the objects, built once per process -------------------------------------------------------


@attrs.frozen
class _Objects:
    reconcilers: Mapping[str, Reconciler]
    handlers: tuple[WebhookHandler, ...]

    def shares_with(self, other: _Objects) -> bool:
        """Whether some reconciler or handler is the very same object in both."""
        mine = {id(o) for o in (*self.handlers, *self.reconcilers.values())}
        return any(id(o) in mine for o in (*other.handlers, *other.reconcilers.values()))

    @property
    def storages(self) -> list[Storage]:
        found: list[Storage] = []
        owned = [h.storage for h in self.handlers] + [r.storage for r in self.reconcilers.values()]
        for storage in owned:
            if not any(storage is s for s in found):
                found.append(storage)
        return found

    @property
    def clock(self) -> Clock:
        owner = self.handlers[0] if self.handlers else next(iter(self.reconcilers.values()))
        return owner.clock


def _collect(found: object, where: str) -> _Objects:
    reconcilers: dict[str, Reconciler] = {}
    handlers: list[WebhookHandler] = []

    def add(item: object) -> None:
        if isinstance(item, Worker):
            if item.handler is not None:
                add(item.handler)
            if item.scheduler is not None:
                add(item.scheduler.reconciler)
        elif isinstance(item, Reconciler):
            other = reconcilers.setdefault(item.sync.name, item)
            if other is not item:
                raise ConfigurationError(f"{where}: two reconcilers of sync {item.sync.name!r}")
        elif isinstance(item, WebhookHandler):
            if not any(item is h for h in handlers):
                handlers.append(item)
        else:
            raise ConfigurationError(
                f"{where}: expected a Worker, Reconciler or WebhookHandler (or an iterable of"
                f" them), got {type(item).__name__}"
            )

    if isinstance(found, _KNOWN):
        add(found)
    elif isinstance(found, Iterable) and not isinstance(found, str | bytes | Mapping):
        for item in found:
            add(item)
    else:
        add(found)
    if not reconcilers and not handlers:
        raise ConfigurationError(f"{where}: no Reconciler or WebhookHandler in it")
    return _Objects(reconcilers=reconcilers, handlers=tuple(handlers))


class _Loader:
    """Builds the objects from the target the first time a task runs in a process."""

    def __init__(self, target: Target) -> None:
        if isinstance(target, str):
            module, colon, attribute = target.partition(":")
            if not (colon and module.strip() and attribute.strip()):
                raise ConfigurationError(
                    f"cannot load {target!r}: expected 'package.module:attribute'"
                    " (like myapp.sync:build)"
                )
        self._target = target
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._loaded: tuple[int, _Objects] | None = None

    def __repr__(self) -> str:
        target = self._target
        shown = target if isinstance(target, str) else type(target).__name__
        return f"<syncrecon objects from {shown!r}>"

    def get(self) -> _Objects:
        pid = os.getpid()
        with self._lock:
            if self._loaded is not None and self._loaded[0] == pid:
                return self._loaded[1]
            objects = self._load(pid)
            if self._loaded is not None and objects.shares_with(self._loaded[1]):
                # A path that names objects made when its module was imported, before the fork.
                self._warn_forked(self._loaded[0], pid)
            self._loaded = (pid, objects)
            return objects

    def _warn_forked(self, made_in: int, used_in: int) -> None:
        log.warning(
            "syncrecon objects made in process %d are used in process %d (a forked pool"
            " child): their storage connections and lease owner are shared. Give"
            " register_tasks an import path of a function that builds them instead, or"
            " run the worker with --pool=solo or --pool=threads",
            made_in,
            used_in,
        )

    def _load(self, pid: int) -> _Objects:
        target = self._target
        if isinstance(target, str):
            return _collect(import_app(target, keep=_KNOWN), repr(target))
        if callable(target) and not isinstance(target, _KNOWN):
            return _collect(target(), f"{getattr(target, '__qualname__', target)!r}()")
        if pid != self._pid:
            self._warn_forked(self._pid, pid)
            self._pid = pid
        return _collect(target, "register_tasks")


# -- the tasks' bodies ------------------------------------------------------------------------


def _skipped(what: str, exc: LeaseHeldError) -> dict[str, Any]:
    log.info("%s skipped: another worker holds the lease (%s)", what, exc)
    return {
        "status": SKIPPED,
        "reason": str(exc),
        "lease": exc.name,
        "holder": exc.owner,
        "until": exc.until.isoformat() if exc.until is not None else None,
    }


def _plain(value: Any) -> Any:
    """``value`` as the JSON serializer gives it back (tuples as lists), so a result is the
    same whether it comes from ``apply()`` or through the result backend."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _process_dict(report: ProcessReport) -> dict[str, Any]:
    return {
        "outcomes": dict(report.outcomes),
        "processed": report.processed,
        "writes": report.writes,
        "outbox_retried": report.outbox_retried,
        "outbox_exhausted": report.outbox_exhausted,
    }


def _reconciler(objects: _Objects, sync: str | None) -> Reconciler:
    if sync is None:
        if len(objects.reconcilers) == 1:
            return next(iter(objects.reconcilers.values()))
        raise ConfigurationError(
            f"name the sync to reconcile: one of {sorted(objects.reconcilers)}"
        )
    try:
        return objects.reconcilers[sync]
    except KeyError:
        raise ConfigurationError(
            f"no reconciler of sync {sync!r}; known: {sorted(objects.reconcilers)}"
        ) from None


def _retry(task: Any, retry_delay: timedelta, what: str, exc: StorageError) -> BaseException:
    """Celery's retry of ``task`` for a storage error (to raise); a schema error is raised."""
    if isinstance(exc, SchemaVersionError):
        raise exc
    retries: int = task.request.retries
    limit: int | None = task.max_retries  # None: no limit
    countdown = retry_delay.total_seconds() * 2**retries
    if limit is None or retries < limit:
        log.warning(
            "%s: storage error, retry %d of %s in %.0f s: %s",
            what,
            retries + 1,
            "unlimited" if limit is None else limit,
            countdown,
            exc,
        )
    # Past max_retries, Celery's retry raises ``exc`` itself: the task fails.
    result: BaseException = task.retry(exc=exc, countdown=countdown)
    return result


def _run_cycle(
    loader: _Loader,
    task: Any,
    retry_delay: timedelta,
    sync: str | None,
    dry_run: bool,
    full: bool | None,
    shards: int | None,
    send_shard: Callable[[str, str, int], object],
) -> dict[str, Any]:
    reconciler = _reconciler(loader.get(), sync)
    name = reconciler.sync.name
    try:
        if shards is not None:
            return _plan_shards(reconciler, shards, dry_run, full, send_shard)
        report: CycleReport = reconciler.run_cycle(dry_run=dry_run, full=full)
    except LeaseHeldError as exc:
        return {"sync": name, **_skipped(f"cycle of {reconciler!r}", exc)}
    except StorageError as exc:
        raise _retry(task, retry_delay, f"cycle of {reconciler!r}", exc) from exc
    return {"status": DONE, "sync": name, "report": _plain(report.to_dict())}


def _plan_shards(
    reconciler: Reconciler,
    shards: int,
    dry_run: bool,
    full: bool | None,
    send_shard: Callable[[str, str, int], object],
) -> dict[str, Any]:
    """Plan a sharded cycle (or take up this sync's unfinished one) and send a shard task
    for each of its shards; the worker that completes the last one finishes the cycle."""
    if dry_run:
        raise ConfigurationError("a dry run is not sharded: send it without shards")
    cycle_id = reconciler.plan_sharded_cycle(shards, full=full)
    plan = getattr(reconciler.storage, "get_shard_plan", None)
    count = shards if plan is None else plan(cycle_id).shards
    name = reconciler.sync.name
    sent = [send_shard(name, cycle_id, shard) for shard in range(count)]
    return {
        "status": PLANNED,
        "sync": name,
        "cycle_id": cycle_id,
        "shards": count,
        "shard_tasks": [getattr(result, "id", None) for result in sent],
    }


def _run_shard(
    loader: _Loader,
    task: Any,
    retry_delay: timedelta,
    sync: str,
    cycle_id: str,
    shard: int,
) -> dict[str, Any]:
    reconciler = _reconciler(loader.get(), sync)
    what = f"shard {shard} of cycle {cycle_id} of {reconciler!r}"
    try:
        report = reconciler.run_shard(cycle_id, shard)
    except LeaseHeldError as exc:
        return {"sync": sync, "cycle_id": cycle_id, "shard": shard, **_skipped(what, exc)}
    except StorageError as exc:
        raise _retry(task, retry_delay, what, exc) from exc
    return {
        "status": DONE,
        "sync": sync,
        "cycle_id": cycle_id,
        "shard": shard,
        # The report of the whole cycle, from the worker that finished it; None from the others.
        "report": None if report is None else _plain(report.to_dict()),
    }


def _run_drain(loader: _Loader) -> dict[str, Any]:
    objects = loader.get()
    if not objects.handlers:
        raise ConfigurationError("no WebhookHandler was given to register_tasks: nothing to drain")
    reports: list[ProcessReport] = []
    for handler in objects.handlers:
        try:
            reports.append(handler.process_pending())
        except LeaseHeldError as exc:
            return _skipped(f"drain of {handler!r}", exc)
    outcomes: dict[str, int] = {}
    for report in reports:
        for outcome, count in report.outcomes.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
    total = ProcessReport(
        outcomes=dict(sorted(outcomes.items())),
        writes=sum(r.writes for r in reports),
        outbox_retried=sum(r.outbox_retried for r in reports),
        outbox_exhausted=sum(r.outbox_exhausted for r in reports),
    )
    return {"status": DONE, "report": _process_dict(total)}


def _run_prune(loader: _Loader, retention: Retention) -> dict[str, Any]:
    objects = loader.get()
    now = objects.clock.now()
    removed: dict[str, int] = {}
    for storage in objects.storages:
        for kind, count in storage.prune(retention, now).items():
            removed[kind] = removed.get(kind, 0) + count
    if any(removed.values()):
        log.info("pruned %s", ", ".join(f"{n} {kind}" for kind, n in sorted(removed.items()) if n))
    return {"status": DONE, "removed": removed}


# -- registering them -------------------------------------------------------------------------


@attrs.frozen
class SyncTasks:
    """The tasks :func:`register_tasks` added, as Celery ``Task`` objects.

    ``cycle.delay("customers")`` runs a cycle of that sync on a worker, ``drain.delay()`` drains
    the inbox, ``prune.delay()`` prunes; each returns Celery's ``AsyncResult``.
    """

    cycle: Task
    shard: Task
    drain: Task
    prune: Task
    namespace: str = DEFAULT_NAMESPACE


def register_tasks(
    app: Celery,
    target: Target,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    retention: Retention = Retention(),  # noqa: B008 (frozen, so one shared default is safe)
    storage_retries: int = 3,
    retry_delay: timedelta = timedelta(seconds=30),
    cycle_options: Mapping[str, Any] | None = None,
    drain_options: Mapping[str, Any] | None = None,
    prune_options: Mapping[str, Any] | None = None,
) -> SyncTasks:
    """Add syncrecon's tasks to the Celery ``app``; return them.

    ``target`` gives the objects the tasks run: an import path ``"pkg.mod:attr"`` (looked up
    from the current directory first, as ``celery -A`` does), or a function without arguments;
    either naming or returning a :class:`~syncrecon.worker.Worker`, a
    :class:`~syncrecon.Reconciler`, a :class:`~syncrecon.webhooks.WebhookHandler`, or an
    iterable of them (one reconciler per sync; a worker contributes its handler and its
    reconciler). It is loaded (a function called) once per worker process, when the first task
    runs there, so build the storage inside the function: a process forked from one that
    already opened connections must not share them. The objects themselves are accepted too,
    for ``--pool=solo`` or ``--pool=threads`` workers (a forked pool child that uses them
    logs a warning).

    The tasks are named ``f"{namespace}.cycle"``, ``".shard"``, ``".drain"`` and ``".prune"``
    (:func:`task_name`); give another ``namespace`` to register a second set on the same app.

    - ``cycle(sync=None, *, dry_run=False, full=None)`` runs one cycle of the reconciler of the
      sync named ``sync`` (it may be left out when there is one reconciler) and returns
      ``{"status": "done", "sync": ..., "report": _plain(report.to_dict())}``, or
      ``{"status": "skipped", "sync": ..., "reason": ..., "lease": ..., "holder": ...,
      "until": ...}`` when another cycle of that sync holds the lease. A
      :class:`~syncrecon.StorageError` other than :class:`~syncrecon.SchemaVersionError` is
      retried ``storage_retries`` times, ``retry_delay`` later, doubling each time.
    - ``cycle(sync, shards=n)`` plans a sharded cycle instead
      (:meth:`~syncrecon.Reconciler.plan_sharded_cycle`, or takes up the sync's unfinished
      one), sends one ``shard`` task per shard and returns ``{"status": "planned", "sync": ...,
      "cycle_id": ..., "shards": ..., "shard_tasks": [task ids]}`` at once; the shards run on
      whichever workers take them, each under its own lease, and the worker that completes the
      last one finishes the cycle.
    - ``shard(sync, cycle_id, shard)`` runs one shard
      (:meth:`~syncrecon.Reconciler.run_shard`) and returns ``{"status": "done", "sync": ...,
      "cycle_id": ..., "shard": ..., "report": ...}``: the report of the whole cycle from the
      worker that finished it, ``None`` from the others; ``"skipped"`` when another worker
      holds the shard. Storage errors are retried as for ``cycle``; ``cycle_options`` apply.
    - ``drain()`` runs :meth:`~syncrecon.webhooks.WebhookHandler.process_pending` of every
      handler and returns ``{"status": "done", "report": {"outcomes": ..., "processed": ...,
      "writes": ..., "outbox_retried": ..., "outbox_exhausted": ...}}``. Errors are not retried:
      the events stay in the inbox for the next drain.
    - ``prune()`` applies ``retention`` to every storage and returns
      ``{"status": "done", "removed": {kind: rows}}``.

    Every task uses the JSON serializer (whatever the app's default) and ``acks_late``; the
    ``*_options`` go to ``app.task`` and override those defaults (``soft_time_limit``,
    ``time_limit``, ``rate_limit``, ...; route them with the ``task_routes`` setting).

    :raises ValueError: for a negative ``storage_retries`` or a ``retry_delay`` that is not
        positive.
    """
    if storage_retries < 0:
        raise ValueError(f"storage_retries must not be negative, got {storage_retries}")
    if retry_delay <= timedelta(0):
        raise ValueError(f"retry_delay must be positive, got {retry_delay!r}")
    loader = _Loader(target)
    defaults: dict[str, Any] = {
        "serializer": "json",
        "acks_late": True,
        # Not shared: Celery would otherwise add these tasks to every app made in the process.
        "shared": False,
    }

    def cycle(
        task: Any,
        sync: str | None = None,
        *,
        dry_run: bool = False,
        full: bool | None = None,
        shards: int | None = None,
    ) -> dict[str, Any]:
        """Run one reconciliation cycle of ``sync``, or plan it in ``shards`` shard tasks
        (see ``register_tasks``)."""

        def send_shard(name: str, cycle_id: str, shard: int) -> object:
            return tasks.shard.apply_async(args=[name, cycle_id, shard])

        return _run_cycle(loader, task, retry_delay, sync, dry_run, full, shards, send_shard)

    def shard(task: Any, sync: str, cycle_id: str, shard: int) -> dict[str, Any]:
        """Run one shard of a sharded cycle (see ``register_tasks``)."""
        return _run_shard(loader, task, retry_delay, sync, cycle_id, shard)

    def drain() -> dict[str, Any]:
        """Drain the webhook inbox and the due outbox entries once (see ``register_tasks``)."""
        return _run_drain(loader)

    def prune() -> dict[str, Any]:
        """Remove old rows from the storage (see ``register_tasks``)."""
        return _run_prune(loader, retention)

    def add(
        func: Callable[..., Any], kind: str, own: Mapping[str, Any] | None, **more: Any
    ) -> Task:
        options = {**defaults, **more, "name": task_name(kind, namespace), **(own or {})}
        return app.task(**options)(func)

    tasks = SyncTasks(
        cycle=add(cycle, "cycle", cycle_options, bind=True, max_retries=storage_retries),
        shard=add(shard, "shard", cycle_options, bind=True, max_retries=storage_retries),
        drain=add(drain, "drain", drain_options),
        prune=add(prune, "prune", prune_options),
        namespace=namespace,
    )
    return tasks


# -- beat ---------------------------------------------------------------------------------------


def _positive(name: str, value: timedelta) -> None:
    if value <= timedelta(0):
        raise ValueError(f"{name} must be positive, got {value!r}")


def _crontab(line: str) -> Any:
    fields = line.split()
    if len(fields) != 5:
        raise ValueError(
            f"a crontab line has five fields (minute hour day month weekday), got {line!r}"
        )
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    return crontab(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month_of_year,
        day_of_week=day_of_week,
    )


def _entry(
    kind: str,
    namespace: str,
    schedule: object,
    args: list[Any],
    expires: timedelta | None,
    label: str,
    kwargs: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    entry: dict[str, Any] = {"task": task_name(kind, namespace), "schedule": schedule}
    if args:
        entry["args"] = args
    if kwargs:
        entry["kwargs"] = dict(kwargs)
    if expires is not None:
        _positive("expires", expires)
        entry["options"] = {"expires": expires.total_seconds()}
    return {f"{namespace}:{label}": entry}


def cycle_schedule(
    sync: str,
    *,
    every: timedelta | None = None,
    cron: str | None = None,
    expires: timedelta | None = None,
    shards: int | None = None,
    namespace: str = DEFAULT_NAMESPACE,
) -> dict[str, dict[str, Any]]:
    """A ``beat_schedule`` entry that runs a cycle of ``sync``, as a one-entry dict to merge.

    With ``shards``, the cycle is sharded: the ``cycle`` task plans it and sends a ``shard``
    task per shard (see :func:`register_tasks`).

    Give ``every`` (an interval) or ``cron`` (a crontab line such as ``"17 */4 * * *"``, in
    the app's ``timezone``), not both; with neither, a cycle runs every four hours. The entry
    is named ``"syncrecon:cycle:<sync>"``.

    ``expires`` is how long a message beat sent stays worth running; by default the interval
    (no expiry for a crontab line). Celery discards a message older than that, so a backlog
    of cycles built up while no worker ran is not run one after another when one comes back.

    :raises ValueError: for both ``every`` and ``cron``, an interval or expiry that is not
        positive, or a crontab line without five fields (or one Celery refuses).
    """
    if every is not None and cron is not None:
        raise ValueError("give every= or cron=, not both")
    schedule: object
    if cron is not None:
        schedule = _crontab(cron)
    else:
        schedule = every if every is not None else timedelta(hours=4)
        _positive("the interval", schedule)
        expires = expires if expires is not None else schedule
    if shards is not None and shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    kwargs = None if shards is None else {"shards": shards}
    return _entry("cycle", namespace, schedule, [sync], expires, f"cycle:{sync}", kwargs)


def drain_schedule(
    *,
    every: timedelta = timedelta(seconds=5),
    expires: timedelta | None = None,
    namespace: str = DEFAULT_NAMESPACE,
) -> dict[str, dict[str, Any]]:
    """A ``beat_schedule`` entry that drains the inbox and the outbox every ``every``.

    The fast loop's delay is then up to ``every``, unless the web process also sends the task
    when it stores events (see the how-to). The message expires after ``expires`` (by default
    ``every``): drains missed while no worker ran are not run one after another. The entry
    is named ``"syncrecon:drain"``.

    :raises ValueError: for an interval or expiry that is not positive.
    """
    _positive("the interval", every)
    return _entry("drain", namespace, every, [], every if expires is None else expires, "drain")


def prune_schedule(
    *,
    every: timedelta = timedelta(hours=1),
    expires: timedelta | None = None,
    namespace: str = DEFAULT_NAMESPACE,
) -> dict[str, dict[str, Any]]:
    """A ``beat_schedule`` entry that prunes old rows every ``every`` (hourly), named
    ``"syncrecon:prune"``; it expires as :func:`drain_schedule`'s does.

    :raises ValueError: for an interval or expiry that is not positive.
    """
    _positive("the interval", every)
    return _entry("prune", namespace, every, [], every if expires is None else expires, "prune")
