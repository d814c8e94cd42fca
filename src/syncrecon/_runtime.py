"""The run loop behind both doors of the scheduler and the worker.

A loop runs rounds until it is stopped. After each round its owner says what is due next, as
pure logic: :func:`soonest` picks the job due first from the seconds until each one (read from
the owner's clocks). The loop then waits exactly that long, unless :meth:`RunLoop.stop` or
:meth:`RunLoop.wake`, called from any thread, ends the wait first. The loop is written once:
:meth:`RunLoop.begin_round` says whether to run a round, :meth:`RunLoop.why_ended` whether a
wait is over. Only the waiting differs: the sync door waits on a :class:`threading.Condition`,
the async door on an :class:`asyncio.Event` of the running loop (under another anyio backend,
in a worker thread). Nothing polls: a loop with nothing due sleeps until woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

import anyio.to_thread
import attrs

__all__ = ["Due", "RunLoop", "Woke", "soonest"]

Woke = Literal["due", "woken", "stopped"]
"""Why a wait ended: the job fell due, :meth:`RunLoop.wake`, or :meth:`RunLoop.stop`."""


@attrs.frozen
class Due:
    """What a loop waits for after a round: ``job``, due in ``seconds`` (0: now).

    ``wakeable=False`` keeps :meth:`RunLoop.wake` from ending the wait (only :meth:`RunLoop.stop`
    does): a worker's coalescing window, which gathers a burst into one drain.
    """

    job: str
    seconds: float
    wakeable: bool = True


def soonest(jobs: Mapping[str, float | None], *, wakeable: bool = True) -> Due | None:
    """The job of ``jobs`` (name: seconds until due, ``None`` when not scheduled) due first.

    Overdue jobs count as due now; of jobs due at the same time the first named wins. ``None``
    when no job is scheduled: the loop then waits until it is woken or stopped.
    """
    first: Due | None = None
    for job, seconds in jobs.items():
        if seconds is None:
            continue
        seconds = max(0.0, seconds)
        if first is None or seconds < first.seconds:
            first = Due(job, seconds, wakeable)
    return first


class RunLoop:
    """Rounds until :meth:`stop`; between two rounds, a wait for the :class:`Due` job.

    :meth:`run` (sync door, blocking) and :meth:`arun` (async door) drive the same logic. A
    stopped loop stays stopped (a round in progress finishes first) until :meth:`rearm`.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._stopped = False
        self._woken = False
        self._tasks: list[Callable[[], None]] = []  # how to wake each waiting task

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called (and :meth:`rearm` not since)."""
        return self._stopped

    # -- control (any thread) ------------------------------------------------------------------

    def stop(self) -> None:
        """End the loop: a wait ends now, a round in progress is the last one."""
        self._ring(stop=True)

    def wake(self) -> None:
        """Start the next round now: end a wakeable wait (during a round: the next one)."""
        self._ring(stop=False)

    def rearm(self) -> None:
        """Undo :meth:`stop`, so that the loop can run again."""
        with self._cond:
            self._stopped = False

    def _ring(self, *, stop: bool) -> None:
        with self._cond:
            if stop:
                self._stopped = True
            else:
                self._woken = True
            self._cond.notify_all()
            tasks = list(self._tasks)
        for wake_task in tasks:
            wake_task()

    # -- the logic both doors share ------------------------------------------------------------

    def begin_round(self) -> bool:
        """Whether to run another round (not when stopped). Wake-ups so far are spent: the
        round about to run does what they asked for."""
        with self._cond:
            self._woken = False
            return not self._stopped

    def why_ended(self, due: Due | None) -> Woke | None:
        """Why a wait for ``due`` ends now (its timer aside); ``None`` while it goes on."""
        if self._stopped:
            return "stopped"
        if self._woken and (due is None or due.wakeable):
            return "woken"
        return None

    # -- the sync door -------------------------------------------------------------------------

    def run(self, round_: Callable[[], Due | None]) -> None:
        """Run rounds in this thread until stopped; each says what is due next."""
        while self.begin_round():
            self.wait(round_())

    def wait(self, due: Due | None) -> Woke:
        """Block until ``due`` is due, or the loop is woken (if wakeable) or stopped."""
        with self._cond:
            self._cond.wait_for(lambda: self.why_ended(due) is not None, _timeout(due))
            return self.why_ended(due) or "due"

    # -- the async door ------------------------------------------------------------------------

    async def arun(self, round_: Callable[[], Awaitable[Due | None]]) -> None:
        """Run rounds on the calling event loop until stopped (or cancelled)."""
        while self.begin_round():
            await self.await_(await round_())

    async def await_(self, due: Due | None) -> Woke:
        """:meth:`wait` without blocking the event loop. Cancelling it leaves nothing behind."""
        loop = _running_asyncio_loop()
        if loop is None:
            return await self._await_in_thread(due)
        event = asyncio.Event()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            event.set()

        def wake_task() -> None:
            with contextlib.suppress(RuntimeError):  # a closed event loop: nobody waits
                loop.call_soon_threadsafe(event.set)

        with self._cond:
            why = self.why_ended(due)
            if why is not None:
                return why
            self._tasks.append(wake_task)
        timer = None if due is None else loop.call_later(due.seconds, expire)
        try:
            while True:
                await event.wait()
                event.clear()
                with self._cond:
                    why = self.why_ended(due)
                if why is not None:
                    return why
                if expired:
                    return "due"
        finally:
            if timer is not None:
                timer.cancel()
            with self._cond:
                self._tasks.remove(wake_task)

    async def _await_in_thread(self, due: Due | None) -> Woke:
        """:meth:`await_` for other anyio backends: the wait blocks a worker thread instead."""
        released = False

        def release() -> None:
            nonlocal released
            with self._cond:
                released = True
                self._cond.notify_all()

        def wait() -> Woke:
            with self._cond:
                self._cond.wait_for(
                    lambda: released or self.why_ended(due) is not None, _timeout(due)
                )
                return self.why_ended(due) or "due"

        try:
            return await anyio.to_thread.run_sync(wait, abandon_on_cancel=True)
        finally:
            release()  # a cancelled wait's thread goes back to the pool now


def _timeout(due: Due | None) -> float | None:
    """A thread's timeout for ``due`` (``threading`` refuses ones beyond ``TIMEOUT_MAX``)."""
    return None if due is None else min(due.seconds, threading.TIMEOUT_MAX)


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio event loop running this task, or ``None`` under another anyio backend."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
