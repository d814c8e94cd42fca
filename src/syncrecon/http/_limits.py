"""Client-side rate limiting: rolling windows, shared by every call of a process.

Providers state their limits as *rolling windows* ("100 requests per 10 seconds"). A
:class:`RateLimiter` keeps the send times of the requests inside each window and makes a
request wait until it would not exceed any of them, so a process that goes through one limiter
never earns a 429 from its own traffic. A token bucket cannot promise that: a full bucket plus
its refill lets ``capacity + rate x window`` requests through one window.

Time comes from a :class:`Timer`, so a benchmark or a test can run the limiter on virtual
time (:class:`VirtualTimer`) and never wait.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import anyio
import attrs

from .._exceptions import ConfigurationError

__all__ = [
    "RateLimiter",
    "SystemTimer",
    "Timer",
    "VirtualTimer",
    "Window",
    "shared_limiter",
]


@runtime_checkable
class Timer(Protocol):
    """Where the HTTP toolkit gets the time and how it waits."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait, blocking."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Wait, without blocking the event loop."""
        ...


class SystemTimer:
    """The real time: :func:`time.monotonic`, :func:`time.sleep`, :func:`anyio.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await anyio.sleep(max(seconds, 0.0))

    def __repr__(self) -> str:
        return "SystemTimer()"


class VirtualTimer:
    """Virtual time: waiting moves the clock instead of the process.

    Give it a :class:`~syncrecon.testing.ManualClock` (anything with ``now()`` and
    ``advance(seconds)``) shared with an emulator, and a rate-limited run that would take an
    hour takes as long as its CPU work; :attr:`slept` is the virtual time spent waiting.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.slept = 0.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return float(self.clock.now().timestamp())

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self.slept += seconds
                self.clock.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def __repr__(self) -> str:
        return f"VirtualTimer(slept={self.slept:.3f})"


@attrs.frozen
class Window:
    """At most ``limit`` requests in any ``seconds`` long window."""

    limit: int = attrs.field(validator=attrs.validators.gt(0))
    seconds: float = attrs.field(validator=attrs.validators.gt(0))


class _Log:
    """The send times inside one window (reserved times may lie in the future)."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.limit = window.limit
        self.times: deque[float] = deque()

    def trim(self, now: float) -> None:
        edge = now - self.window.seconds
        times = self.times
        while times and times[0] <= edge:
            times.popleft()

    def earliest(self, at: float) -> float:
        """The earliest time not before ``at`` at which one more request fits."""
        if len(self.times) < self.limit:
            return at
        # The request that must leave the window before this one can go.
        leaving = self.times[len(self.times) - self.limit]
        return max(at, leaving + self.window.seconds)


class RateLimiter:
    """Rolling-window limits for one account, safe to share between threads and loops.

    ``windows`` are the limits that all hold at once (a HubSpot private app: 100 per 10 s).
    :meth:`acquire` / :meth:`aacquire` reserve the earliest slot that keeps every window and
    wait for it. :meth:`observe` takes what the provider says is left (its limit and remaining
    headers): requests made by other processes with the same account count too, so the limiter
    slows down before the provider has to say so.

    ``margin`` keeps that share of each limit unused (0.0: use all of it).
    """

    def __init__(
        self,
        windows: Iterable[Window | tuple[int, float]],
        *,
        timer: Timer | None = None,
        margin: float = 0.0,
        name: str = "",
    ) -> None:
        built = [w if isinstance(w, Window) else Window(*w) for w in windows]
        if not built:
            raise ConfigurationError("RateLimiter needs at least one Window")
        if not 0.0 <= margin < 1.0:
            raise ConfigurationError("margin must be in [0, 1)")
        self.name = name
        self.timer: Timer = timer or SystemTimer()
        self.margin = margin
        self._logs = [_Log(w) for w in built]
        for log in self._logs:
            log.limit = self._usable(w=log.window.limit)
        self._lock = threading.Lock()
        self.acquired = 0
        self.waited = 0.0

    def _usable(self, w: int) -> int:
        return max(1, math.floor(w * (1.0 - self.margin)))

    @property
    def windows(self) -> tuple[Window, ...]:
        """The windows in force (a provider's headers may have changed a limit)."""
        return tuple(log.window for log in self._logs)

    def __repr__(self) -> str:
        shown = ", ".join(f"{w.limit}/{w.seconds:g}s" for w in self.windows)
        label = f"{self.name!r}, " if self.name else ""
        return f"RateLimiter({label}{shown})"

    def reserve(self, max_wait: float | None = None) -> float:
        """Reserve the next slot and return the seconds to wait for it (0.0: go now).

        With ``max_wait``, a slot further away than that is not reserved: the seconds to it
        are returned as a negative number (a daily allocation used up is not waited for).
        """
        return self.reserve_slot(max_wait)[0]

    def reserve_slot(self, max_wait: float | None = None) -> tuple[float, float]:
        """:meth:`reserve`, also returning the slot's time (for :meth:`settle`)."""
        with self._lock:
            now = self.timer.monotonic()
            for log in self._logs:
                log.trim(now)
            at = now
            # Each window may push the time later, which may matter to an earlier window.
            for _ in range(len(self._logs) + 1):
                moved = at
                for log in self._logs:
                    moved = log.earliest(moved)
                if moved == at:
                    break
                at = moved
            wait = at - now
            if max_wait is not None and wait > max_wait:
                return -wait, at
            for log in self._logs:
                if not log.times or log.times[-1] <= at:
                    log.times.append(at)
                else:
                    bisect.insort(log.times, at)
            self.acquired += 1
            self.waited += wait
            return wait, at

    def settle(self, at: float, done: float) -> None:
        """Count the request reserved for ``at`` as sent at ``done`` instead (when its answer
        came: the latest the provider can have counted it).

        A provider counts a request when it arrives, not when we reserved its slot; a slow
        request would otherwise leave its window early in our books and the next one could
        land inside the provider's window. Done for short windows (a minute or less), where a
        request's latency matters.
        """
        if done <= at:
            return
        with self._lock:
            for log in self._logs:
                if log.window.seconds > 60:
                    continue
                times = log.times
                i = bisect.bisect_left(times, at)
                if i < len(times) and times[i] == at:
                    del times[i]
                    bisect.insort(times, done)

    def acquire(self) -> float:
        """Wait (blocking) until one more request may go; return the seconds waited."""
        wait = self.reserve()
        if wait > 0:
            self.timer.sleep(wait)
        return wait

    async def aacquire(self) -> float:
        """Wait (without blocking the loop) until one more request may go."""
        wait = self.reserve()
        if wait > 0:
            await self.timer.asleep(wait)
        return wait

    def observe(self, *, limit: int | None, remaining: int | None, seconds: float) -> None:
        """Take the provider's view of the window of ``seconds``: its limit and what is left.

        A limit different from ours replaces it. When the provider counts more requests used
        than we sent (other processes share the account), the difference is recorded as sent
        now, so our next requests wait for it.
        """
        with self._lock:
            now = self.timer.monotonic()
            for log in self._logs:
                if not math.isclose(log.window.seconds, seconds):
                    continue
                if limit is not None and limit > 0 and limit != log.window.limit:
                    log.window = Window(limit, log.window.seconds)
                    log.limit = self._usable(limit)
                if remaining is None:
                    continue
                log.trim(now)
                used = log.window.limit - max(remaining, 0)
                ours = bisect.bisect_right(log.times, now)  # the log is kept sorted
                if used > ours:
                    # When the others sent theirs is unknown: counted as sent now, the safe
                    # side (they leave our window no sooner than they leave the provider's).
                    if ours == len(log.times):
                        log.times.extend([now] * (used - ours))
                    else:  # reservations in the future stay after them
                        later = [log.times.pop() for _ in range(len(log.times) - ours)]
                        log.times.extend([now] * (used - ours))
                        log.times.extend(reversed(later))


_shared: dict[str, RateLimiter] = {}
_shared_lock = threading.Lock()


def shared_limiter(key: str, factory: Callable[[], RateLimiter]) -> RateLimiter:
    """The process-wide limiter for ``key`` (an account), made by ``factory`` the first time.

    Connectors of one account (the fast loop's and the cycle's, or two syncs over one HubSpot
    portal) get the same limiter, so together they stay inside the account's limits.
    """
    with _shared_lock:
        limiter = _shared.get(key)
        if limiter is None:
            limiter = _shared[key] = factory()
        return limiter
