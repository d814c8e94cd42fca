"""One HTTP API account: the host's httpx client, auth, rate limiter, retries and metering.

:class:`HttpApi` sends one request at a time through the same steps, from the sync door
(:meth:`HttpApi.send`, over an ``httpx.Client``) or the async one (:meth:`HttpApi.asend`, over an
``httpx.AsyncClient``):

1. wait for the rate limiter (one per account, shared by both loops);
2. send, with the auth's headers (tokens fetched or renewed on the way);
3. count the request, by endpoint, into the caller's meter;
4. classify the answer (the provider's signals first, then :func:`classify`) and feed the
   limiter what the provider said about its limits;
5. retry what is worth it, per request, with tenacity: a paginated read that meets a 429 on
   page 2 repeats page 2, never page 1.

Connector methods are written once, as *operations*: generators that yield the requests they
need and get the answers back (:data:`Op`). :meth:`HttpApi.run` drives one from the sync door
and :meth:`HttpApi.arun` from the async one, so a connector has one implementation of its logic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Mapping
from typing import Any, TypeAlias, TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from .._clock import Clock, SystemClock
from .._exceptions import (
    ConfigurationError,
    ConnectorError,
    PermanentError,
    RateLimitedError,
    TransientError,
)
from ._limits import RateLimiter, SystemTimer, Timer
from ._meter import SendState, count_request, sending
from ._retry import (
    ENDPOINT,
    IDEMPOTENT,
    Classifier,
    HttpRetry,
    Verdict,
    classify,
    endpoint_of,
    is_idempotent,
)

__all__ = ["HttpApi", "Op"]

T = TypeVar("T")

#: A connector operation: yields requests, receives their answers, returns its result.
Op: TypeAlias = Generator[httpx.Request, httpx.Response, T]

Observer = Callable[[httpx.Response, RateLimiter], None]

log = logging.getLogger("syncrecon.http")


_SENDER = "syncrecon.api"


def _sender(request: httpx.Request, default: HttpApi) -> HttpApi:
    """The API a request was built by (its limiter and counts), else ``default``."""
    api = request.extensions.get(_SENDER)
    return api if isinstance(api, HttpApi) else default


class _Failed(Exception):
    """One failed attempt: the typed error, and whether (and after how long) to retry."""

    def __init__(self, error: ConnectorError, retry: bool, wait: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry = retry
        self.wait = wait


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, _Failed) and exc.retry


class HttpApi:
    """One account of one HTTP API, over the host's httpx client.

    :param client: an ``httpx.Client`` (sync door) or ``httpx.AsyncClient`` (async door), made
        and closed by the host, with its own proxies, certificates and timeouts. syncrecon never
        makes a client of its own per call.
    :param system: the connector's name, used in errors and logs.
    :param base_url: where relative paths go (``"https://api.hubapi.com"``).
    :param auth: an ``httpx.Auth`` (see :class:`BearerToken` and the OAuth flows).
    :param limiter: the account's :class:`RateLimiter` (share one per account).
    :param retry: how each request is retried (:class:`HttpRetry`).
    :param classifier: the provider's own reading of an answer, asked first; ``None`` from
        it falls back to :func:`classify`.
    :param observe: feeds the limiter what an answer's headers say about the limits.
    :param timer: the time the limiter and the retries wait on (virtual in tests).
    """

    def __init__(
        self,
        client: httpx.Client | httpx.AsyncClient,
        *,
        system: str,
        base_url: str,
        auth: httpx.Auth | None = None,
        limiter: RateLimiter | None = None,
        retry: HttpRetry | None = None,
        classifier: Classifier | None = None,
        observe: Observer | None = None,
        timer: Timer | None = None,
        clock: Clock | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(client, httpx.Client | httpx.AsyncClient):
            raise ConfigurationError(
                f"{system}: client must be an httpx.Client or httpx.AsyncClient,"
                f" not {type(client).__name__}"
            )
        self.client = client
        self.system = system
        self.base_url = httpx.URL(base_url)
        self.auth = auth
        self.limiter = limiter
        self.retry = retry or HttpRetry()
        self.classifier = classifier
        self.observe = observe
        self.timer: Timer = timer or (limiter.timer if limiter is not None else SystemTimer())
        self.clock: Clock = clock or SystemClock()
        self.headers = dict(headers or {})
        #: Requests sent through this API over its life, by endpoint (retries included).
        self.requests: dict[str, int] = {}
        #: Answers that asked us to slow down (429 and the providers' own signals).
        self.throttled = 0

    @property
    def is_async(self) -> bool:
        return isinstance(self.client, httpx.AsyncClient)

    def __repr__(self) -> str:
        door = "async" if self.is_async else "sync"
        return f"HttpApi({self.system!r}, {str(self.base_url)!r}, {door})"

    # -- building requests -----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        endpoint: str | None = None,
        idempotent: bool | None = None,
    ) -> httpx.Request:
        """A request to ``path`` (relative to ``base_url``, or a full URL).

        ``endpoint`` labels it for counting (default: the method and the path); ``idempotent``
        says whether it may be repeated after an answer that leaves its effect unknown (default:
        by method, see :func:`is_idempotent`).
        """
        url = self.base_url.join(path) if not path.startswith(("http://", "https://")) else path
        merged = {**self.headers, **(headers or {})}
        request = self.client.build_request(
            method, url, params=params, json=json, data=data, headers=merged
        )
        request.extensions[ENDPOINT] = endpoint or f"{method.upper()} {httpx.URL(url).path}"
        request.extensions[_SENDER] = self  # run() sends it through the API that built it
        if idempotent is not None:
            request.extensions[IDEMPOTENT] = idempotent
        return request

    # -- one attempt -------------------------------------------------------------------------

    def _verdict(self, request: httpx.Request, response: httpx.Response) -> Verdict:
        if self.limiter is not None and self.observe is not None:
            self.observe(response, self.limiter)
        verdict = None
        if self.classifier is not None:
            verdict = self.classifier(request, response)
        if verdict is None:
            verdict = classify(self.system, request, response, now=self.clock.now())
        if verdict.error is not None and verdict.safe:
            self.throttled += 1
        return verdict

    def _counted(self, request: httpx.Request) -> None:
        label = endpoint_of(request)
        self.requests[label] = self.requests.get(label, 0) + 1
        count_request(label)

    def _transport_failure(
        self, request: httpx.Request, exc: httpx.RequestError, state: SendState
    ) -> _Failed:
        label = endpoint_of(request)
        if isinstance(exc, httpx.TooManyRedirects):
            error: ConnectorError = PermanentError(
                f"{self.system}: {label} failed: too many redirects",
                system=self.system,
                endpoint=label,
            )
            return _Failed(error, False, None)
        if state.token_request:
            error = TransientError(
                f"{self.system}: the token request before {label} failed:"
                f" {type(exc).__name__} (the request was not sent)",
                system=self.system,
                endpoint=label,
            )
            return _Failed(error, True, None)
        # A connection that never opened sent nothing: always safe to repeat. Otherwise the
        # request may have been applied: repeat it only if doing so twice is harmless.
        unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        error = TransientError(
            f"{self.system}: {label} failed: {type(exc).__name__}"
            + ("" if unsent else " (the request may have been applied)"),
            system=self.system,
            endpoint=label,
        )
        return _Failed(error, unsent or is_idempotent(request), None)

    def _judge(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        verdict = self._verdict(request, response)
        if verdict.error is None:
            return response
        retry = verdict.retry and (verdict.safe or is_idempotent(request))
        if verdict.wait is not None and verdict.wait > self.retry.maximum:
            retry = False  # not worth waiting for here (a daily limit): the error goes up
        raise _Failed(verdict.error, retry, verdict.wait)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Failed) and exc.wait is not None:
            return min(exc.wait, self.retry.maximum)
        return self.retry.backoff(state.attempt_number)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, _Failed):
            log.info(
                "%s (attempt %d, retrying in %.2fs)",
                exc.error,
                state.attempt_number,
                state.upcoming_sleep,
            )

    def _slot(self, request: httpx.Request) -> tuple[float, float]:
        """Reserve the limiter's next slot: (seconds to wait, the slot's time). A slot too far
        away is an error, not a wait."""
        if self.limiter is None:
            return 0.0, 0.0
        wait, at = self.limiter.reserve_slot(max_wait=self.retry.max_limiter_wait)
        if wait < 0:
            label = endpoint_of(request)
            error = RateLimitedError(
                f"{self.system}: {label} not sent: the rate limit ({self.limiter!r}) has no"
                f" room for {-wait:.0f}s",
                retry_after=-wait,
                system=self.system,
                endpoint=label,
            )
            raise _Failed(error, False, -wait)
        return wait, at

    def _settle(self, at: float) -> None:
        if self.limiter is not None:
            self.limiter.settle(at, self.limiter.timer.monotonic())

    def _attempt_sync(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(self.client, httpx.Client)
        wait, at = self._slot(request)
        if wait > 0 and self.limiter is not None:
            self.limiter.timer.sleep(wait)
        self._counted(request)
        state = SendState()
        token = sending.set(state)
        try:
            response = self.client.send(request, auth=self.auth or httpx.USE_CLIENT_DEFAULT)
        except httpx.RequestError as exc:
            raise self._transport_failure(request, exc, state) from exc
        except TransientError as exc:  # the auth's token endpoint: the request was not sent
            raise _Failed(exc, True, getattr(exc, "retry_after", None)) from exc
        finally:
            sending.reset(token)
            self._settle(at)
        return self._judge(request, response)

    async def _attempt_async(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(self.client, httpx.AsyncClient)
        wait, at = self._slot(request)
        if wait > 0 and self.limiter is not None:
            await self.limiter.timer.asleep(wait)
        self._counted(request)
        state = SendState()
        token = sending.set(state)
        try:
            response = await self.client.send(request, auth=self.auth or httpx.USE_CLIENT_DEFAULT)
        except httpx.RequestError as exc:
            raise self._transport_failure(request, exc, state) from exc
        except TransientError as exc:  # the auth's token endpoint: the request was not sent
            raise _Failed(exc, True, getattr(exc, "retry_after", None)) from exc
        finally:
            sending.reset(token)
            self._settle(at)
        return self._judge(request, response)

    # -- the doors ---------------------------------------------------------------------------

    def send(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` (sync door), retried per the settings; raise a typed error."""
        if self.is_async:
            raise ConfigurationError(f"{self.system}: send() needs an httpx.Client")
        retrying = Retrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            sleep=self.timer.sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            result: httpx.Response = retrying(self._attempt_sync, request)
        except _Failed as failed:
            raise failed.error from failed.__cause__
        return result

    async def asend(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` (async door); see :meth:`send`."""
        if not self.is_async:
            raise ConfigurationError(f"{self.system}: asend() needs an httpx.AsyncClient")
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            sleep=self.timer.asleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            result: httpx.Response = await retrying(self._attempt_async, request)
        except _Failed as failed:
            raise failed.error from failed.__cause__
        return result

    def run(self, op: Op[T]) -> T:
        """Drive an operation from the sync door: send each request it yields.

        A request goes through the :class:`HttpApi` that built it, so one operation can use
        APIs with different limiters (HubSpot's search has its own).
        """
        try:
            request = next(op)
            while True:
                try:
                    response = _sender(request, self).send(request)
                except ConnectorError as exc:
                    request = op.throw(exc)  # the operation may handle it (a 404, say)
                else:
                    request = op.send(response)
        except StopIteration as done:
            result: T = done.value
            return result

    async def arun(self, op: Op[T]) -> T:
        """Drive an operation from the async door."""
        try:
            request = next(op)
            while True:
                try:
                    response = await _sender(request, self).asend(request)
                except ConnectorError as exc:
                    request = op.throw(exc)
                else:
                    request = op.send(response)
        except StopIteration as done:
            result: T = done.value
            return result
