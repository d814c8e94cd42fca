"""The HTTP toolkit every syncrecon connector for a REST API is built on.

- :class:`HttpApi`: one account over the host's ``httpx.Client`` or ``httpx.AsyncClient``:
  auth, a shared :class:`RateLimiter`, retries per request (:class:`HttpRetry`), typed errors
  and request counting by endpoint.
- :class:`HttpConnector` / :class:`AsyncHttpConnector`: write a connector's four methods once,
  as operations (:data:`Op`), and get both doors.
- Auth as ``httpx.Auth``: :class:`BearerToken`, :class:`OAuth2RefreshToken`,
  :class:`ClientCredentials`, :class:`JWTBearer` (the ``jwt`` extra); credentials live in
  :class:`Secret` and never show in a repr, a log line or an error.
- Paging and batches: :class:`CursorPaging`, :class:`NextUrlPaging`, :class:`OffsetPaging`,
  :func:`chunked`, :class:`WriteResults`.

Ready connectors: :mod:`syncrecon.connectors.hubspot`, :mod:`syncrecon.connectors.salesforce`.
"""

from ._api import HttpApi, Op
from ._auth import BearerToken, ClientCredentials, JWTBearer, OAuth2RefreshToken, Secret, TokenSet
from ._connector import AsyncHttpConnector, HttpConnector, HttpOperations
from ._limits import RateLimiter, SystemTimer, Timer, VirtualTimer, Window, shared_limiter
from ._meter import RequestMeter, metering
from ._paging import CursorPaging, NextUrlPaging, OffsetPaging, WriteResults, chunked, dig
from ._retry import (
    Classifier,
    HttpRetry,
    Verdict,
    classify,
    error_detail,
    failure,
    is_idempotent,
    parse_retry_after,
)

__all__ = [
    "AsyncHttpConnector",
    "BearerToken",
    "Classifier",
    "ClientCredentials",
    "CursorPaging",
    "HttpApi",
    "HttpConnector",
    "HttpOperations",
    "HttpRetry",
    "JWTBearer",
    "NextUrlPaging",
    "OAuth2RefreshToken",
    "OffsetPaging",
    "Op",
    "RateLimiter",
    "RequestMeter",
    "Secret",
    "SystemTimer",
    "Timer",
    "TokenSet",
    "Verdict",
    "VirtualTimer",
    "Window",
    "WriteResults",
    "chunked",
    "classify",
    "dig",
    "error_detail",
    "failure",
    "is_idempotent",
    "metering",
    "parse_retry_after",
    "shared_limiter",
]
