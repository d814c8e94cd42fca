"""What an HTTP answer means, and how often and how long to retry it.

:func:`classify` turns one answer into a :class:`Verdict`: fine, worth retrying (after how
long), or not. Providers add their own signals in front of it (HubSpot's 423 and 477,
Salesforce's 403 ``REQUEST_LIMIT_EXCEEDED``); :class:`HttpRetry` says how many attempts and how
long the waits are. Pure functions of the answer: easy to test, and shared by the sync and the
async door.
"""

from __future__ import annotations

import email.utils
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import httpx

from .._exceptions import (
    AuthenticationError,
    ConnectorError,
    PermanentError,
    RateLimitedError,
    TransientError,
)

__all__ = [
    "Classifier",
    "HttpRetry",
    "Verdict",
    "classify",
    "error_detail",
    "failure",
    "is_idempotent",
    "parse_retry_after",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
ENDPOINT = "syncrecon.endpoint"
IDEMPOTENT = "syncrecon.idempotent"


@attrs.frozen(kw_only=True)
class HttpRetry:
    """How each HTTP request is retried.

    ``attempts`` tries in all, waiting ``initial`` seconds doubling up to ``maximum`` with full
    jitter between them, or what the provider asked (``Retry-After``). A provider asking for a
    longer wait than ``maximum`` (HubSpot's daily limit, say) is not retried: the error goes up
    at once with its ``retry_after``, and syncrecon's outbox or next cycle takes it from there.
    ``rng`` makes the jitter reproducible. ``max_limiter_wait`` is the longest a request
    waits for the rate limiter's next slot; a slot further away (a daily allocation used up)
    is a :class:`~syncrecon.RateLimitedError` with its ``retry_after`` instead.
    """

    attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    initial: float = 0.5
    maximum: float = 60.0
    rng: random.Random | None = None
    max_limiter_wait: float = 120.0

    def backoff(self, attempt: int) -> float:
        """The jittered wait after failed attempt number ``attempt`` (1-based)."""
        cap = min(self.maximum, self.initial * 2 ** (attempt - 1))
        return (self.rng or random).uniform(0, cap)


@attrs.frozen(kw_only=True)
class Verdict:
    """What one answer means: ``error`` is ``None`` for a usable answer.

    ``retry`` says whether sending the same request again can help; ``wait`` is the least
    time to wait first when the provider said (``Retry-After``). ``safe`` marks answers that
    prove the request was not processed (throttling), so even a create may be repeated.
    """

    error: ConnectorError | None = None
    retry: bool = False
    wait: float | None = None
    safe: bool = False


OK = Verdict()

Classifier = Callable[[httpx.Request, httpx.Response], "Verdict | None"]


def endpoint_of(request: httpx.Request) -> str:
    """The endpoint label of a request (set by :meth:`HttpApi.request`)."""
    label = request.extensions.get(ENDPOINT)
    if isinstance(label, str):
        return label
    return f"{request.method} {request.url.path}"


def is_idempotent(request: httpx.Request) -> bool:
    """Whether sending ``request`` twice does no more than sending it once.

    GET, PUT, DELETE and friends are; a POST or PATCH is when its builder said so (a batch
    read, an update that sets values) or when it carries an ``Idempotency-Key`` header.
    """
    marked = request.extensions.get(IDEMPOTENT)
    if isinstance(marked, bool):
        return marked
    if "idempotency-key" in request.headers:
        return True
    return request.method.upper() in IDEMPOTENT_METHODS


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if seconds == seconds else None  # NaN is no answer
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max((when - current).total_seconds(), 0.0)


def body_json(response: httpx.Response) -> Any:
    """The answer's JSON body, or ``None`` when it has none or it is not JSON."""
    try:
        return json.loads(response.content) if response.content else None
    except (ValueError, UnicodeDecodeError):
        return None


def error_detail(body: Any) -> tuple[str | None, str]:
    """The provider's error code and message from a JSON error body, in the common shapes.

    ``{"message", "category"|"errorType"|"errorCode"|"error"|"status"}``, OAuth's ``{"error",
    "error_description"}``, Salesforce's ``[{"message", "errorCode"}]``, Stripe's
    ``{"error": {"code", "message"}}``. The message is cut to 300 characters.
    """
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if not isinstance(body, dict):
        return None, ""
    nested = body.get("error")
    if isinstance(nested, dict):
        body = nested
    code = next(
        (
            str(body[k])
            for k in ("errorCode", "category", "errorType", "code", "error", "type", "status")
            if isinstance(body.get(k), str | int) and body.get(k) not in ("", "error")
        ),
        None,
    )
    message = next(
        (str(body[k]) for k in ("message", "error_description", "description") if body.get(k)),
        "",
    )
    return code, message[:300]


def failure(
    system: str,
    request: httpx.Request,
    response: httpx.Response,
    kind: type[ConnectorError],
    *,
    retry_after: float | None = None,
    code: str | None = None,
    message: str | None = None,
) -> ConnectorError:
    """A typed error naming the system, endpoint, status and the provider's words.

    Never the request's headers or body: credentials and record data stay out of messages.
    """
    found_code, found_message = error_detail(body_json(response))
    code = code or found_code
    message = message if message is not None else found_message
    endpoint = endpoint_of(request)
    text = f"{system}: {endpoint} answered {response.status_code}"
    if code:
        text += f" {code}"
    if message:
        text += f": {message}"
    kwargs: dict[str, Any] = {
        "system": system,
        "status": response.status_code,
        "endpoint": endpoint,
        "code": code,
    }
    if issubclass(kind, RateLimitedError):
        return kind(text, retry_after=retry_after, **kwargs)
    return kind(text, **kwargs)


def classify(
    system: str, request: httpx.Request, response: httpx.Response, *, now: datetime | None = None
) -> Verdict:
    """The default meaning of an answer, for any provider.

    2xx and 3xx: fine. 429: rate limited, retried after ``Retry-After``. 408 and 5xx:
    transient, retried (only if the request is idempotent, see :func:`is_idempotent`). 401:
    :class:`~syncrecon.AuthenticationError`. Other 4xx: :class:`~syncrecon.PermanentError`.
    """
    status = response.status_code
    if status < 400:
        return OK
    wait = parse_retry_after(response.headers.get("retry-after"), now=now)
    if status == 429:
        return Verdict(
            error=failure(system, request, response, RateLimitedError, retry_after=wait),
            retry=True,
            wait=wait,
            safe=True,
        )
    if status == 408 or status >= 500:
        return Verdict(
            error=failure(system, request, response, TransientError), retry=True, wait=wait
        )
    if status == 401:
        return Verdict(error=failure(system, request, response, AuthenticationError))
    return Verdict(error=failure(system, request, response, PermanentError))
