"""Counting HTTP requests (what providers bill and limit), by endpoint.

syncrecon opens a :class:`RequestMeter` around every connector call; the HTTP toolkit adds one
count per request it sends (retries and token requests included) to the meter of the calling
context, so the cycle report and the dashboard count requests, not method calls, for HTTP
connectors, even when both loops share one connector from several threads.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Iterator

__all__ = ["RequestMeter", "SendState", "count_request", "metering", "sending"]


class RequestMeter:
    """Requests per endpoint label (``"POST /crm/v3/objects/deals/batch/read"``)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, endpoint: str, n: int = 1) -> None:
        with self._lock:
            self.counts[endpoint] = self.counts.get(endpoint, 0) + n

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __repr__(self) -> str:
        return f"RequestMeter(total={self.total})"


_current: contextvars.ContextVar[RequestMeter | None] = contextvars.ContextVar(
    "syncrecon_request_meter", default=None
)


@contextlib.contextmanager
def metering(meter: RequestMeter) -> Iterator[RequestMeter]:
    """Count the requests sent in this context (and the tasks it starts) into ``meter``."""
    token = _current.set(meter)
    try:
        yield meter
    finally:
        _current.reset(token)


def count_request(endpoint: str) -> None:
    """Count one request to ``endpoint`` into the meter of the current context, if any."""
    meter = _current.get()
    if meter is not None:
        meter.add(endpoint)


class SendState:
    """What happened while one request was being sent (set by the auth flow)."""

    __slots__ = ("token_request",)

    def __init__(self) -> None:
        #: A token request is on the wire (a transport failure now is the token's, not the
        #: data request's, which was not sent).
        self.token_request = False


sending: contextvars.ContextVar[SendState | None] = contextvars.ContextVar(
    "syncrecon_sending", default=None
)
