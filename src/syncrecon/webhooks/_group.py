"""Group commit: requests that arrive while the inbox is being written share the next write.

A webhook is answered 2xx only once its events are durable, and a durable commit costs the
same for one event as for fifty. So the front door does not commit each request on its own:
each request is verified and parsed on its own (a bad request fails alone, before it joins
anything), then hands its inbox entries to a :class:`GroupCommitter` as a :class:`Ticket` and
waits. One commit runs at a time; the tickets that arrive meanwhile form the next group (up to
``max_events`` events), written in one transaction when the commit in flight returns. Every
ticket of a group is woken with its own part of the result (an id per event, ``None`` for a
duplicate) or with the error that failed the whole group: nothing of a failed group is stored.
Only a storage failure fails a whole group; a group failed by anything else (something tied to
one request's content that its checks let through) is committed again ticket by ticket, so
that the other requests of the group are not failed with it.

Nobody waits for a timer. A request that finds no commit in flight starts one at once, so a
lone request costs what it did before grouping.

Who commits:

- a thread that calls :meth:`GroupCommitter.commit` (the sync door: WSGI under threads) and
  finds no commit in flight commits its own group in its own thread; if more tickets arrived
  meanwhile, it hands them to the committer thread and returns;
- the committer thread (started on demand, gone after ``IDLE_EXIT`` seconds without work)
  commits groups for as long as tickets keep arriving. The async door
  (:meth:`GroupCommitter.acommit`) always hands its ticket to it, so that no storage call
  ever blocks the event loop, and awaits a future the committer resolves from its thread
  (one ``call_soon_threadsafe`` per event loop and group).

The grouping itself (who waits, which tickets form a group, how the result is shared out) is
in this module once, for both doors; what a group's commit does is the ``commit`` callable's
business (:func:`syncrecon.webhooks._intake.commit_group`). Private to syncrecon.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .._exceptions import StorageError
from ..storage._base import Counter, InboxEntry

log = logging.getLogger("syncrecon.webhooks")

IDLE_EXIT = 5.0
"""Seconds the committer thread waits for work before it ends (it restarts on demand)."""


class Ticket:
    """One request's share of a group commit: what it stores, and, once committed, how it went.

    ``entries`` are the request's new inbox entries (already unique within the request),
    ``counters`` what it bumps (a rejected request's counter, without entries). After the
    commit, ``ids`` holds an id per entry (``None`` for a duplicate), or ``error`` the
    exception that failed the group. ``source`` and ``repeats`` (deliveries that repeated
    another inside the same request) are the caller's, for the duplicate counter.
    """

    __slots__ = (
        "_event",
        "_future",
        "_loop",
        "counters",
        "entries",
        "error",
        "ids",
        "repeats",
        "source",
    )

    def __init__(
        self,
        entries: Sequence[InboxEntry] = (),
        counters: Sequence[Counter] = (),
        *,
        source: Any = None,
        repeats: int = 0,
    ) -> None:
        self.entries = entries
        self.counters = counters
        self.source = source
        self.repeats = repeats
        self.ids: list[int | None] | None = None
        self.error: BaseException | None = None
        self._event: threading.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[None] | None = None

    @property
    def empty(self) -> bool:
        """Nothing to store and nothing to count: no commit needed."""
        return not self.entries and not self.counters

    def __repr__(self) -> str:
        return f"Ticket(entries={len(self.entries)}, counters={len(self.counters)})"


def take_group(waiting: collections.deque[Ticket], max_events: int) -> list[Ticket]:
    """Take the next group from the front of ``waiting``: at least one ticket, then as many
    as fit within ``max_events`` events, in arrival order."""
    group = [waiting.popleft()]
    events = len(group[0].entries)
    while waiting and events + len(waiting[0].entries) <= max_events:
        ticket = waiting.popleft()
        events += len(ticket.entries)
        group.append(ticket)
    return group


class StoredGroupError(RuntimeError):
    """The group's events were stored, but its result cannot be shared out (a storage that
    returned the wrong number of ids): the whole group fails, it is never committed again."""


def share_out(group: Sequence[Ticket], ids: Sequence[int | None]) -> None:
    """Give each ticket its own slice of the group's ids, in the order of its entries."""
    expected = sum(len(t.entries) for t in group)
    if len(ids) != expected:
        raise StoredGroupError(f"the inbox returned {len(ids)} ids for {expected} entries")
    at = 0
    for ticket in group:
        ticket.ids = list(ids[at : at + len(ticket.entries)])
        at += len(ticket.entries)


class GroupCommitter:
    """Commits tickets in groups, one group at a time (see the module's docstring).

    ``commit`` writes a group in one transaction: it sets every ticket's ``ids``, or raises
    having stored nothing. A :class:`~syncrecon.StorageError` (the storage failed, whatever
    it was given) is every ticket's ``error``; any other exception of a group of several
    tickets is taken as tied to one ticket's content, and the tickets are committed again
    one by one, each with its own result. It runs in the committing thread, never on an
    event loop.
    """

    def __init__(
        self, commit: Callable[[Sequence[Ticket]], None], *, max_events: int = 500
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        self._commit = commit
        self.max_events = max_events
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._waiting: collections.deque[Ticket] = collections.deque()
        self._busy = False  # a commit is in flight, or the committer thread is taking over
        self._handed_over = False  # the committer thread owns the queue
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"GroupCommitter(max_events={self.max_events})"

    @property
    def waiting(self) -> int:
        """How many tickets wait for the next group (the commit in flight not counted)."""
        with self._lock:
            return len(self._waiting)

    # -- the two doors -----------------------------------------------------------------------

    def commit(self, ticket: Ticket) -> None:
        """Commit ``ticket`` with whatever else is waiting; return once it is committed or
        failed (its ``ids`` or ``error`` is set). Blocks the calling thread."""
        event = ticket._event = threading.Event()
        with self._lock:
            self._waiting.append(ticket)
            lead = not self._busy
            if lead:
                self._busy = True
                group = take_group(self._waiting, self.max_events)
        if lead:
            try:
                self._run(group, leader=True)
            finally:
                with self._lock:
                    if self._waiting:
                        self._hand_over()
                    else:
                        self._busy = False
        event.wait()

    async def acommit(self, ticket: Ticket) -> None:
        """:meth:`commit` for the event loop: the committer thread writes, the loop waits."""
        loop = ticket._loop = asyncio.get_running_loop()
        future = ticket._future = loop.create_future()
        with self._lock:
            self._waiting.append(ticket)
            if not self._busy:
                self._busy = True
                self._hand_over()
        await future

    # -- committing ----------------------------------------------------------------------------

    def _hand_over(self) -> None:
        """Let the committer thread take the queue (the lock is held)."""
        self._handed_over = True
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._committer, name="syncrecon-group-commit", daemon=True
            )
            self._thread.start()
        else:
            self._work.notify()

    def _committer(self) -> None:
        """The committer thread: commit groups while there are tickets, then wait for more."""
        me = threading.current_thread()
        while True:
            with self._lock:
                while not self._handed_over:
                    if not self._work.wait(IDLE_EXIT) and not self._handed_over:
                        if self._thread is me:
                            self._thread = None
                        return
                if not self._waiting:  # all taken: idle again
                    self._handed_over = False
                    self._busy = False
                    continue
                group = take_group(self._waiting, self.max_events)
            self._run(group)

    def _run(self, group: list[Ticket], *, leader: bool = False) -> None:
        """Commit one group and wake its tickets. Raises only what is not an ``Exception``
        (``KeyboardInterrupt``) in a request's own thread, once every ticket has its error.

        A group of several tickets failed by anything but a storage failure (a failure tied
        to one request's content, which would fail any group holding it) is committed again
        ticket by ticket: only the tickets whose own commit fails get an error. A group that
        was stored but whose ids cannot be shared out (:class:`StoredGroupError`) fails whole:
        committing it again would answer every request as a duplicate."""
        stop: BaseException | None = None
        try:
            self._commit(group)
        except BaseException as exc:
            if (
                len(group) > 1
                and isinstance(exc, Exception)
                and not isinstance(exc, StorageError | StoredGroupError)
            ):
                log.warning(
                    "a group commit of %d requests failed (%s); committing them one by one",
                    len(group),
                    type(exc).__name__,
                )
                stop = self._commit_each(group)
            else:
                _fail(group, exc)
                stop = exc
        for ticket in group:
            if ticket.ids is None and ticket.error is None:
                ticket.error = RuntimeError("the group commit gave this request no result")
        _wake(group)
        if leader and stop is not None and not isinstance(stop, Exception):
            raise stop

    def _commit_each(self, group: Sequence[Ticket]) -> BaseException | None:
        """Commit each ticket of a failed group alone, in order; a ticket whose commit fails
        gets its error (nothing of it is stored: each commit is a transaction of its own).
        Returns what is not an ``Exception``, if one stopped it (the rest get it as error)."""
        for at, ticket in enumerate(group):
            ticket.ids = None
            ticket.error = None
            try:
                self._commit([ticket])
            except Exception as exc:
                _fail([ticket], exc)
            except BaseException as exc:
                _fail(group[at:], exc)
                return exc
        return None


def _fail(tickets: Sequence[Ticket], error: BaseException) -> None:
    """Give each ticket ``error`` and no ids (whatever a failed commit had set)."""
    for ticket in tickets:
        ticket.ids = None
        ticket.error = error


def _wake(group: Sequence[Ticket]) -> None:
    """Wake every ticket of a committed group: threads by their event, each event loop once."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for ticket in group:
        if ticket._event is not None:
            ticket._event.set()
        elif ticket._loop is not None and ticket._future is not None:
            by_loop.setdefault(ticket._loop, []).append(ticket._future)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, futures)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.debug("an event loop closed before its webhook requests were answered")


def _resolve(futures: Sequence[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():  # a cancelled request no longer waits
            future.set_result(None)
