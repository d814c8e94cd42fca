"""A worker that drains the fast loop's inbox and outbox, next to the reconciliation schedule.

Run it from the command line with the import path of your app's object, the way uvicorn and
celery take theirs::

    python -m syncrecon worker myapp.sync:worker

where ``myapp.sync.worker`` is a :class:`Worker`, a
:class:`~syncrecon.webhooks.WebhookHandler` (drained alone) or a
:class:`~syncrecon.Reconciler` (its cycles run every four hours). Or embed it: ``start()`` and
``stop()`` in a sync host, ``await worker.run()`` in an asyncio one.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio.to_thread

from ._reconciler import CycleReport, Reconciler
from .scheduling import IntervalScheduler, _sleep_unless
from .webhooks._handler import ProcessReport, WebhookHandler

__all__ = ["Worker", "load"]

log = logging.getLogger("syncrecon.worker")


class Worker:
    """Drains ``handler``'s inbox and outbox every ``poll`` seconds (when given a handler) and
    runs ``reconciler``'s cycles every ``every`` (when given a reconciler).

    After a round that processed events the next one comes ``coalesce`` seconds later (after
    ``poll`` seconds when idle): the events of a burst that arrive in between are drained
    together, and their writes to one system go out as one batch (the latest change of each
    field winning). ``coalesce`` is the fast loop's coalescing window.
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
    ) -> None:
        if handler is None and reconciler is None:
            raise ValueError("a worker needs a webhook handler, a reconciler, or both")
        self.handler = handler
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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Worker(handler={self.handler!r}, scheduler={self.scheduler!r})"

    def run_once(self) -> ProcessReport | None:
        """One round: drain the inbox and the due outbox entries, run a cycle if one is due."""
        report = None
        if self.handler is not None:
            report = self.handler.process_pending()
        if self.scheduler is not None:
            self.scheduler.run_due()
        return report

    def run_forever(self) -> None:
        """Run rounds until :meth:`stop` (blocking)."""
        while not self._stop.is_set():
            try:
                report = self.run_once()
            except Exception:
                log.exception("worker round failed; trying again")
                report = None
            idle = report is None or report.processed == 0
            self._stop.wait(self.poll if idle else self.coalesce)

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
        """Stop after the current round."""
        self._stop.set()
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
        return report

    async def run(self) -> None:
        """Check the schema, then run rounds on the calling event loop until :meth:`stop`."""
        if self.scheduler is not None:
            await anyio.to_thread.run_sync(self.check_schema)
        while not self._stop.is_set():
            try:
                report = await self.arun_once()
            except Exception:
                log.exception("worker round failed; trying again")
                report = None
            idle = report is None or report.processed == 0
            await _sleep_unless(self._stop, self.poll if idle else self.coalesce)


def load(path: str) -> Worker:
    """Import ``"package.module:attribute"`` and make a :class:`Worker` of it."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected 'package.module:attribute', got {path!r}")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if callable(target) and not isinstance(target, Worker | WebhookHandler | Reconciler):
        target = target()
    if isinstance(target, Worker):
        return target
    if isinstance(target, WebhookHandler):
        return Worker(handler=target)
    if isinstance(target, Reconciler):
        return Worker(reconciler=target)
    raise TypeError(f"{path} is not a Worker, WebhookHandler or Reconciler: {target!r}")
