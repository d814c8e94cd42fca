"""A worker that drains the fast loop's inbox and outbox, next to the reconciliation schedule.

Run it from the command line with the import path of your app's object, the way uvicorn and
celery take theirs (the current directory is importable)::

    syncrecon worker myapp.sync:worker

where ``myapp.sync.worker`` is a :class:`Worker`, a
:class:`~syncrecon.webhooks.WebhookHandler` (drained alone) or a
:class:`~syncrecon.Reconciler` (its cycles run every four hours). Or embed it: ``start()`` and
``stop()`` in a sync host, ``await worker.run()`` in an asyncio one. Between rounds it sleeps
until the next thing is due (an inbox poll, a cycle, a prune); ``stop()`` and ``wake()`` end
the sleep at once.

The worker also applies the storage's :class:`~syncrecon.Retention` every ``prune_every``
(hourly): processed webhook events, expired echoes, settled outbox entries, old cycle reports
and counters are removed so the database stops growing. A failed prune is logged and tried
again at the next one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta

import anyio.to_thread

from ._app import import_app
from ._clock import Clock
from ._exceptions import AppLoadError
from ._reconciler import CycleReport, Reconciler
from ._retention import Retention
from ._runtime import Due, RunLoop, soonest
from .scheduling import IntervalScheduler
from .storage._base import Storage
from .webhooks._handler import ProcessReport, WebhookHandler

__all__ = ["Worker", "load"]

log = logging.getLogger("syncrecon.worker")

_RETENTION = Retention()


class Worker:
    """Drains ``handler``'s inbox and outbox every ``poll`` seconds (when given a handler) and
    runs ``reconciler``'s cycles every ``every`` (when given a reconciler).

    After a round that processed events the next one comes ``coalesce`` seconds later (after
    ``poll`` seconds when idle): the events of a burst that arrive in between are drained
    together, and their writes to one system go out as one batch (the latest change of each
    field winning). ``coalesce`` is the fast loop's coalescing window.

    Every ``prune_every`` (the first time in the first round) it applies ``retention`` to the
    storage of the handler and of the reconciler, at the time of their clock (the handler's
    when it has one); ``retention=None`` never prunes. A failed prune is logged, never raised.

    Between rounds the worker sleeps until the first of these is due: the next drain (``poll``
    or ``coalesce`` seconds after the round), the next cycle, the next prune. Nothing tells it
    when another process stores an event, hence the ``poll``; in this process, :meth:`wake`
    makes an idle worker drain at once, and a running worker listens to its handler
    (:meth:`~syncrecon.webhooks.WebhookHandler.add_listener`), so every request that stores
    new events wakes it. :meth:`stop` ends the sleep at once.
    """

    def __init__(
        self,
        handler: WebhookHandler | None = None,
        reconciler: Reconciler | None = None,
        *,
        every: timedelta = timedelta(hours=4),
        poll: float = 1.0,
        coalesce: float = 0.2,
        delay_first: bool = False,
        on_report: Callable[[CycleReport], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        retention: Retention | None = _RETENTION,
        prune_every: timedelta = timedelta(hours=1),
    ) -> None:
        if handler is None and reconciler is None:
            raise ValueError("a worker needs a webhook handler, a reconciler, or both")
        if prune_every <= timedelta(0):
            raise ValueError(f"prune_every must be positive, got {prune_every!r}")
        self.handler = handler
        self.retention = retention
        self.prune_every = prune_every
        clock: Clock | None = handler.clock if handler is not None else None
        if clock is None and reconciler is not None:
            clock = reconciler.clock
        assert clock is not None
        self._clock = clock
        stores: list[Storage] = []
        for owner in (handler, reconciler):
            if owner is not None and not any(owner.storage is s for s in stores):
                stores.append(owner.storage)
        self._stores = stores
        self._next_prune: datetime | None = None
        self.scheduler = (
            IntervalScheduler(
                reconciler,
                every,
                clock=reconciler.clock,
                delay_first=delay_first,
                on_report=on_report,
                on_error=on_error,
            )
            if reconciler is not None
            else None
        )
        self.poll = poll
        self.coalesce = coalesce
        self._loop = RunLoop()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Worker(handler={self.handler!r}, scheduler={self.scheduler!r})"

    def run_once(self) -> ProcessReport | None:
        """One round: drain the inbox and the due outbox entries, run a cycle if one is due,
        and prune if a prune is due."""
        report = None
        if self.handler is not None:
            report = self.handler.process_pending()
        if self.scheduler is not None:
            self.scheduler.run_due()
        if self._prune_due():
            self._prune_logged()
        return report

    def prune(self) -> dict[str, int]:
        """Apply :attr:`retention` now; return the rows removed per kind (all storages).

        Raises what the storage raises (the scheduled prune logs it instead).
        """
        removed: dict[str, int] = {}
        if self.retention is None:
            return removed
        now = self._clock.now()
        for storage in self._stores:
            gone: Mapping[str, int] = storage.prune(self.retention, now)
            for kind, count in gone.items():
                removed[kind] = removed.get(kind, 0) + count
        return removed

    def _seconds_until_prune(self) -> float | None:
        if self.retention is None:
            return None
        if self._next_prune is None:
            return 0.0
        return (self._next_prune - self._clock.now()).total_seconds()

    def _due(self, report: ProcessReport | None) -> Due | None:
        """What to wait for after a round that drained ``report`` (the same for both doors).

        A round that processed events opens the coalescing window: :meth:`wake` does not cut it
        short.
        """
        busy = report is not None and report.processed > 0
        drain = None if self.handler is None else self.coalesce if busy else self.poll
        cycle = None if self.scheduler is None else self.scheduler.seconds_until_due()
        jobs = {"drain": drain, "cycle": cycle, "prune": self._seconds_until_prune()}
        return soonest(jobs, wakeable=not busy)

    def _failed(self) -> Due:
        log.exception("worker round failed; trying again")
        return Due("retry", self.poll)

    def _round(self) -> Due | None:
        try:
            report = self.run_once()
        except Exception:
            return self._failed()
        return self._due(report)

    async def _around(self) -> Due | None:
        try:
            report = await self.arun_once()
        except Exception:
            return self._failed()
        return self._due(report)

    def _prune_due(self) -> bool:
        if self.retention is None:
            return False
        now = self._clock.now()
        if self._next_prune is not None and now < self._next_prune:
            return False
        self._next_prune = now + self.prune_every
        return True

    def _prune_logged(self) -> None:
        try:
            removed = self.prune()
        except Exception:
            log.exception("pruning old rows failed; trying again in %s", self.prune_every)
            return
        if any(removed.values()):
            log.info(
                "pruned %s",
                ", ".join(f"{count} {kind}" for kind, count in sorted(removed.items()) if count),
            )

    def run_forever(self) -> None:
        """Run rounds until :meth:`stop` (blocking)."""
        with self._listening():
            self._loop.run(self._round)

    def wake(self) -> None:
        """Make an idle worker start a round now, rather than at its next ``poll``.

        Call it after storing events in this process (from any thread; it never blocks). A
        worker in a round starts another right after it; one in its coalescing window (after a
        round that processed events) drains when the window ends, as it would have anyway.
        """
        self._loop.wake()

    def check_schema(self) -> None:
        """Check the connectors' field descriptions now (the worker does it when it starts)."""
        if self.scheduler is None:
            return
        try:
            self.scheduler.reconciler.check_schema()
        except Exception:
            log.exception("the start-up schema check failed; the next cycle checks again")

    def start(self) -> None:
        """Check the schema, then run rounds in a daemon thread."""
        self.check_schema()
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the worker is already running")
        self._thread = threading.Thread(
            target=self.run_forever, name="syncrecon-worker", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the current round (at once when between rounds; thread-safe)."""
        self._loop.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def arun_once(self) -> ProcessReport | None:
        """:meth:`run_once` for async hosts: ``async def`` connectors run on this loop."""
        report = None
        if self.handler is not None:
            report = await self.handler.aprocess_pending()
        if self.scheduler is not None:
            await self.scheduler.arun_due()
        if self._prune_due():
            await anyio.to_thread.run_sync(self._prune_logged)
        return report

    async def run(self) -> None:
        """Check the schema, then run rounds on the calling event loop until :meth:`stop`."""
        if self.scheduler is not None:
            await anyio.to_thread.run_sync(self.check_schema)
        with self._listening():
            await self._loop.arun(self._around)

    @contextlib.contextmanager
    def _listening(self) -> Iterator[None]:
        """While rounds run, the handler's newly stored events :meth:`wake` this worker."""
        handler = self.handler
        if handler is None:
            yield
            return
        handler.add_listener(self._events_stored)
        try:
            yield
        finally:
            handler.remove_listener(self._events_stored)

    def _events_stored(self, count: int) -> None:
        self.wake()


def load(path: str) -> Worker:
    """Import ``"package.module:attribute"`` and make a :class:`Worker` of it.

    The current directory is importable (as with uvicorn and celery). The attribute may be a
    :class:`Worker`, a :class:`~syncrecon.webhooks.WebhookHandler`, a
    :class:`~syncrecon.Reconciler`, or a callable without arguments that returns one.

    :raises AppLoadError: when the path cannot be imported or names something else.
    """
    target = import_app(path, keep=(Worker, WebhookHandler, Reconciler))
    if isinstance(target, Worker):
        return target
    if isinstance(target, WebhookHandler):
        return Worker(handler=target)
    if isinstance(target, Reconciler):
        return Worker(reconciler=target)
    raise AppLoadError(
        f"{path!r} is not a Worker, WebhookHandler or Reconciler"
        f" (nor a factory of one): {type(target).__name__}"
    )
