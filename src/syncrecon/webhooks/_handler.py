"""The fast loop: verify, store, de-duplicate, order, suppress echoes, decide and write.

:class:`WebhookHandler` answers webhook requests (framework-free: a :class:`WebhookRequest`
in, a :class:`WebhookResponse` out) and processes the events it stored:

request -> source (404) -> size (413) -> signature and timestamp (401) -> parse (400) ->
durable inbox, duplicates dropped (2xx only now) -> [deferred: a worker drains the inbox] ->
per event: mapped field? linked? older than the last applied change (stale)? our own write
coming back (echo)? equal to the base (no-op)? -> the field's policy decides, exactly as in
the slow loop -> coalesced batch writes, each target re-read first, and the echo entries of
each write (value and the time of the edit it copies) committed before its call -> outcome,
base, order time and counters in one transaction. A write that keeps failing goes to the
outbox; an outbox entry that runs out of tries becomes a queue item. Nothing is dropped.

This module is the facade; each step has a module of its own, in the order above:

- :mod:`._intake`: the front door (verify, parse, store in the inbox, answer);
- :mod:`._group`: group commit, concurrent requests sharing one durable inbox write;
- :mod:`._inbox`: how an event is stored in the inbox and read back, and its counter;
- :mod:`._process`: the inbox processor (claim a batch, triage each event, commit);
- :mod:`._triage`: the decisions about one event (pure: no I/O);
- :mod:`._apply`: the coalesced writes and the outcome of each;
- :mod:`._outbox`: the retries of writes that failed for now.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta

import anyio.to_thread
import attrs

from .._clock import Clock, SystemClock
from .._codec import fingerprint
from .._connector import Caller, RetrySettings
from .._exceptions import PayloadTooLargeError
from .._models import Side
from .._sync import SyncDefinition
from ..storage._base import Counter, Step, Storage
from ._events import PayloadParser, WebhookRequest, WebhookResponse
from ._group import GroupCommitter
from ._intake import aanswer, answer, commit_group, reject
from ._outbox import retry_due
from ._process import drain_inbox
from ._verify import Verifier

__all__ = ["ProcessReport", "WebhookHandler", "WebhookSource", "fingerprint"]

log = logging.getLogger("syncrecon.webhooks")


@attrs.frozen(kw_only=True)
class WebhookSource:
    """Where webhooks come from: a system on one side of a sync, its verifier and parser.

    ``name`` is the last segment of the URL the provider posts to (``/webhooks/hubspot``).
    Events about another ``object_type`` than the sync's are ignored (when it is given).
    """

    name: str
    sync: SyncDefinition
    side: Side = attrs.field(converter=Side)
    verifier: Verifier
    parser: PayloadParser
    object_type: str | None = None

    @property
    def system(self) -> str:
        """The name of the system the webhooks come from."""
        return self.sync.connector(self.side).name

    @property
    def direction(self) -> str:
        """``"from->to"`` system names, the dashboard's direction label."""
        return f"{self.system}->{self.sync.connector(self.side.other).name}"


@attrs.frozen(kw_only=True)
class ProcessReport:
    """What one drain of the inbox and the outbox did: outcomes counted, writes made."""

    outcomes: Mapping[str, int]
    writes: int
    outbox_retried: int
    outbox_exhausted: int

    @property
    def processed(self) -> int:
        """Events processed."""
        return sum(self.outcomes.values())


class WebhookHandler:
    """The fast loop's front door and its processor.

    ``inline=False`` (the default) stores each event and answers at once; a worker calls
    :meth:`process_pending` (or runs ``python -m syncrecon worker``) to drain the inbox.
    ``inline=True`` processes right after storing, for simple hosts. ``max_body_bytes`` caps
    a request's body. ``echo_ttl`` is how long a written value is remembered (recorded before
    the write, with the time of the edit it copies) so the webhook it causes is recognized and
    a cycle that reads it compares that edit's time, not the write's. Failed writes are
    retried from the outbox up to ``outbox_attempts`` times with exponential backoff from
    ``outbox_backoff``.

    ``verify_source=True`` re-reads the events' source records in one batch
    next to the targets' re-read, and drops as ``stale`` an event whose value the source no
    longer holds (a newer change's webhook is late or lost): one extra read call per batch,
    counted, rather than an old value written over a newer one.

    ``group_commit=True`` (the default) lets concurrent requests share one durable commit
    of the inbox: the requests that arrive while a commit is in flight are written together
    by the next one (at most ``max_group_events`` events per commit), and each is answered
    once the commit holding its events returned. A lone request commits at once (no timer,
    no added latency), a failed commit answers each of its requests 503 with nothing of it
    stored, and a bad request is refused on its own before it joins any group. With
    ``group_commit=False`` each request commits alone, in its own thread.

    Listeners (:meth:`add_listener`) are told how many new events each request stored: a
    running :class:`~syncrecon.worker.Worker` drains them at once, not at its next poll.
    """

    def __init__(
        self,
        sources: Iterable[WebhookSource],
        storage: Storage,
        *,
        clock: Clock | None = None,
        retry: RetrySettings | None = None,
        inline: bool = False,
        max_body_bytes: int = 1_000_000,
        echo_ttl: timedelta = timedelta(minutes=15),
        batch_size: int = 500,
        lease: timedelta = timedelta(minutes=2),
        outbox_attempts: int = 6,
        outbox_backoff: timedelta = timedelta(seconds=30),
        verify_source: bool = False,
        group_commit: bool = True,
        max_group_events: int = 500,
    ) -> None:
        self.sources = {s.name: s for s in sources}
        if not self.sources:
            raise ValueError("a webhook handler needs at least one source")
        self.storage = storage
        self.clock: Clock = clock or SystemClock()
        self.retry = retry or RetrySettings()
        self.inline = inline
        self.max_body_bytes = max_body_bytes
        self.echo_ttl = echo_ttl
        self.batch_size = batch_size
        self.lease = lease
        self.outbox_attempts = outbox_attempts
        self.outbox_backoff = outbox_backoff
        self.verify_source = verify_source
        self._group_commit = bool(group_commit)
        self._committer = GroupCommitter(
            lambda group: commit_group(self, group), max_events=max_group_events
        )
        self.owner = f"worker-{uuid.uuid4().hex[:12]}"
        self._listeners: tuple[Callable[[int], object], ...] = ()
        self._listeners_lock = threading.Lock()
        self.storage.setup()

    def __repr__(self) -> str:
        return f"WebhookHandler(sources={sorted(self.sources)}, storage={self.storage!r})"

    @property
    def group_commit(self) -> bool:
        """Whether concurrent requests share one durable commit of the inbox."""
        return self._group_commit

    @property
    def max_group_events(self) -> int:
        """The most events one shared commit holds (a larger request commits alone)."""
        return self._committer.max_events

    # -- the front door (._intake) -----------------------------------------------------------

    def handle(self, request: WebhookRequest, *, source: str | None = None) -> WebhookResponse:
        """Answer one webhook request. Never raises for anything the sender controls.

        ``source`` names the source; by default it is the last segment of the URL's path.
        """
        return answer(self, request, source, in_worker_thread=False)

    async def ahandle(
        self, request: WebhookRequest, *, source: str | None = None
    ) -> WebhookResponse:
        """:meth:`handle` for async hosts: the signature and the payload are checked on the
        event loop (in a thread for a body of 64 KiB or more), storage and connector work
        runs in threads; the loop is never blocked by them."""
        return await aanswer(self, request, source)

    def reject_too_large(self, method: str, url: str) -> WebhookResponse:
        """Count and answer a request whose body is over ``max_body_bytes`` (413)."""
        name = WebhookRequest(method=method, url=url).path.rstrip("/").rsplit("/", 1)[-1]
        error = PayloadTooLargeError(f"the body is over {self.max_body_bytes} bytes")
        return reject(self, self.sources.get(name), error)

    # -- listeners ---------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[int], object]) -> None:
        """Call ``listener(count)`` each time a request stores ``count`` new events (never for
        a request of duplicates only), so that a worker in this process drains at once.

        It is called once the events are committed to the inbox (with ``inline=True``, after
        the request's own processing of them), in the thread that handled the request (for
        :meth:`ahandle`, the event loop's), before the answer is sent: keep it short and
        non-blocking, as :meth:`syncrecon.worker.Worker.wake` is (a running
        :class:`~syncrecon.worker.Worker` adds its own). An exception it raises is logged and
        swallowed: a listener never fails a webhook.
        """
        with self._listeners_lock:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: Callable[[int], object]) -> None:
        """Stop calling ``listener`` (once per :meth:`add_listener`; unknown ones are ignored)."""
        with self._listeners_lock:
            listeners = list(self._listeners)
            if listener in listeners:
                listeners.remove(listener)
            self._listeners = tuple(listeners)

    def _tell_listeners(self, count: int) -> None:
        for listener in self._listeners:
            try:
                listener(count)
            except Exception:
                log.exception(
                    "a listener of stored webhook events failed (%r); the events are stored",
                    listener,
                )

    # -- processing (._process, ._outbox) ----------------------------------------------------

    def process_pending(self) -> ProcessReport:
        """Drain the inbox and retry the outbox entries that are due (sync hosts, workers)."""
        return self._process(in_worker_thread=False)

    async def aprocess_pending(self) -> ProcessReport:
        """:meth:`process_pending` for async hosts."""
        return await anyio.to_thread.run_sync(lambda: self._process(in_worker_thread=True))

    def _process(self, *, in_worker_thread: bool) -> ProcessReport:
        with Caller(self.retry, in_worker_thread=in_worker_thread) as caller:
            outcomes, writes = drain_inbox(self, caller)
            retried, exhausted, rewrites = retry_due(self, caller)
            self._count_requests(caller)
        return ProcessReport(
            outcomes=dict(sorted(outcomes.items())),
            writes=writes + rewrites,
            outbox_retried=retried,
            outbox_exhausted=exhausted,
        )

    def _count_requests(self, caller: Caller) -> None:
        """The HTTP requests this round made, by system and endpoint, for the dashboard."""
        counters = [
            Counter(
                metric="api_requests",
                labels={"system": system, "endpoint": endpoint, "loop": "fast"},
                amount=n,
            )
            for system, by_endpoint in sorted(caller.requests.items())
            for endpoint, n in sorted(by_endpoint.items())
            if n
        ]
        if counters:
            self.storage.commit(Step(at=self.clock.now(), counters=counters))

    def _sync(self, name: str) -> SyncDefinition:
        for src in self.sources.values():
            if src.sync.name == name:
                return src.sync
        raise LookupError(f"no source of this handler serves sync {name!r}")
