"""Authentication as :class:`httpx.Auth`: bearer tokens, OAuth 2 flows, JWT bearer.

Each class works with both ``httpx.Client`` and ``httpx.AsyncClient`` (one flow, written once
as httpx's auth generator) and keeps its secrets in :class:`Secret`, which never shows its
value in a ``repr``, a log line or an exception. Token requests are counted as API requests
(endpoint ``"POST <token path>"``) in the calling context's meter.

Refreshing is serialised per auth object, across threads, tasks and both doors: two callers
that find the token expired make one token request, which matters where a provider rotates
refresh tokens. A token endpoint that is down (5xx, 429, a dropped connection) is a
:class:`~syncrecon.TransientError`: the data request was not sent, so it is retried.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from datetime import datetime, timedelta
from typing import Any

import anyio
import attrs
import httpx
from typing_extensions import override

from .._clock import Clock, SystemClock
from .._exceptions import (
    AuthenticationError,
    ConfigurationError,
    RateLimitedError,
    TransientError,
)
from ._meter import count_request, sending
from ._retry import body_json, endpoint_of, error_detail

__all__ = [
    "BearerToken",
    "ClientCredentials",
    "JWTBearer",
    "OAuth2RefreshToken",
    "Secret",
    "TokenSet",
]


class Secret:
    """A credential. Its ``repr`` and ``str`` are ``'***'``; :meth:`reveal` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        self._value = value.reveal() if isinstance(value, Secret) else str(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not pickled (it would leave the process in the clear)")


def _secret(value: str | Secret | None) -> Secret | None:
    return None if value is None else Secret(value)


@attrs.frozen(kw_only=True)
class TokenSet:
    """What a token endpoint answered: the access token and what came with it.

    Hand it to ``on_token`` hooks to persist a rotated refresh token; ``extra`` holds the
    answer's other fields (``instance_url``, ``scope``...) without any token in them.
    """

    access_token: Secret = attrs.field(converter=Secret)
    refresh_token: Secret | None = attrs.field(default=None, converter=_secret)
    expires_at: datetime | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def instance_url(self) -> str | None:
        """The API host the token is for, where the provider names one (Salesforce)."""
        value = self.extra.get("instance_url")
        return value if isinstance(value, str) else None

    def expired(self, now: datetime, skew: timedelta) -> bool:
        return self.expires_at is not None and now + skew >= self.expires_at


class BearerToken(httpx.Auth):
    """A fixed token sent as ``Authorization: Bearer <token>`` (a HubSpot private app)."""

    def __init__(self, token: str | Secret) -> None:
        self._token = Secret(token)

    @override
    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.reveal()}"
        yield request

    def __repr__(self) -> str:
        return "BearerToken(token=***)"


_LOCK = object()
_UNLOCK = object()
_TOKEN_SECRETS = frozenset({"access_token", "refresh_token", "id_token", "signature"})


class _TokenAuth(httpx.Auth):
    """An access token from a token endpoint, fetched when missing or about to expire.

    On a 401 the token is renewed once and the request sent again (a stale session). With
    ``rebase_host`` set, requests to that host go to the token's ``instance_url`` instead
    (Salesforce names the API host only in the token answer).
    """

    requires_response_body = True

    def __init__(
        self,
        token_url: str,
        *,
        clock: Clock | None = None,
        skew: timedelta = timedelta(seconds=60),
        on_token: Callable[[TokenSet], object] | None = None,
        rebase_host: str | None = None,
        token: TokenSet | None = None,
    ) -> None:
        self.token_url = token_url
        self.clock: Clock = clock or SystemClock()
        self.skew = skew
        self.on_token = on_token
        self.rebase_host = rebase_host
        self.token: TokenSet | None = token
        self._lock = threading.Lock()
        self.refreshes = 0
        self._endpoint = f"POST {httpx.URL(token_url).path}"

    # -- what subclasses say -----------------------------------------------------------

    def _grant(self) -> dict[str, str]:
        """The form fields of the token request."""
        raise NotImplementedError

    def _accept(self, body: Mapping[str, Any]) -> TokenSet:
        now = self.clock.now()
        expires_in = body.get("expires_in")
        expires_at = (
            now + timedelta(seconds=float(expires_in))
            if isinstance(expires_in, int | float | str) and str(expires_in).strip()
            else None
        )
        refresh = body.get("refresh_token")
        return TokenSet(
            access_token=str(body["access_token"]),
            refresh_token=refresh if isinstance(refresh, str) else self._kept_refresh(),
            expires_at=expires_at,
            extra={k: v for k, v in body.items() if k not in _TOKEN_SECRETS},
        )

    def _kept_refresh(self) -> Secret | None:
        return None

    # -- the flow ------------------------------------------------------------------------

    def _token_request(self) -> httpx.Request:
        return httpx.Request(
            "POST",
            self.token_url,
            data=self._grant(),
            headers={"Accept": "application/json"},
        )

    def _take(self, response: httpx.Response) -> None:
        count_request(self._endpoint)
        body = body_json(response)
        status = response.status_code
        if status in (408, 429) or status >= 500:
            code, message = error_detail(body)
            # The token endpoint is down or busy: the data request was never sent.
            kind = RateLimitedError if status == 429 else TransientError
            raise kind(
                f"{self._endpoint} answered {status}{' ' + code if code else ''}"
                f"{': ' + message if message else ''} (the request was not sent)",
                status=status,
                endpoint=self._endpoint,
                code=code,
            )
        if status >= 400 or not isinstance(body, dict) or not body.get("access_token"):
            code, message = error_detail(body)
            raise AuthenticationError(
                f"{self._endpoint} refused the {type(self).__name__} grant"
                f" ({response.status_code}{' ' + code if code else ''}"
                f"{': ' + message if message else ''})",
                status=response.status_code,
                endpoint=self._endpoint,
                code=code,
            )
        self.token = self._accept(body)
        self.refreshes += 1
        if self.on_token is not None:
            self.on_token(self.token)

    def _stale(self, used: TokenSet | None) -> bool:
        token = self.token
        return token is None or token is used or token.expired(self.clock.now(), self.skew)

    def _sign(self, request: httpx.Request) -> TokenSet:
        token = self.token
        assert token is not None
        request.headers["Authorization"] = f"Bearer {token.access_token.reveal()}"
        base = token.instance_url
        if self.rebase_host and base and request.url.host == self.rebase_host:
            target = httpx.URL(base)
            request.url = request.url.copy_with(
                scheme=target.scheme, host=target.host, port=target.port
            )
            request.headers["Host"] = target.netloc.decode("ascii")
        return token

    def _fetch(self) -> Generator[object, httpx.Response | None, httpx.Response]:
        """Send the token request, marked so a transport failure is not blamed on the data
        request (which was not sent)."""
        state = sending.get()
        if state is not None:
            state.token_request = True
        answer = yield self._token_request()
        if state is not None:
            state.token_request = False
        assert answer is not None
        return answer

    def _steps(self, request: httpx.Request) -> Generator[object, httpx.Response | None, None]:
        """The flow, once for both doors: yields requests, and _LOCK/_UNLOCK marks."""
        yield _LOCK
        if self.token is None or self.token.expired(self.clock.now(), self.skew):
            answer = yield from self._fetch()
            self._take(answer)
        used = self._sign(request)
        yield _UNLOCK
        response = yield request
        if response is None or response.status_code != 401:
            return
        # A stale session: renew once (unless another request renewed it meanwhile).
        yield _LOCK
        if self.token is used:
            answer = yield from self._fetch()
            self._take(answer)
        self._sign(request)
        yield _UNLOCK
        count_request(endpoint_of(request))  # the same request sent again: counted again
        yield request

    @override
    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        steps = self._steps(request)
        held = False
        try:
            step = next(steps)
            while True:
                if step is _LOCK:
                    self._lock.acquire()
                    held = True
                    step = next(steps)
                elif step is _UNLOCK:
                    self._lock.release()
                    held = False
                    step = next(steps)
                else:
                    assert isinstance(step, httpx.Request)
                    response = yield step
                    response.read()
                    step = steps.send(response)
        except StopIteration:
            return
        finally:
            if held:
                self._lock.release()

    @override
    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        lock = self._lock  # the same lock as the sync door: one refresh, whichever door
        steps = self._steps(request)
        held = False
        try:
            step = next(steps)
            while True:
                if step is _LOCK:
                    while not lock.acquire(blocking=False):
                        await anyio.sleep(0.005)  # held by a thread or task mid-refresh
                    held = True
                    step = next(steps)
                elif step is _UNLOCK:
                    lock.release()
                    held = False
                    step = next(steps)
                else:
                    assert isinstance(step, httpx.Request)
                    response = yield step
                    await response.aread()
                    step = steps.send(response)
        except StopIteration:
            return
        finally:
            if held:
                lock.release()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(token_url={self.token_url!r})"


class OAuth2RefreshToken(_TokenAuth):
    """OAuth 2 with a refresh token (HubSpot public apps, most OAuth providers).

    The access token is renewed before it expires (by ``expires_in``, less ``skew``) and once
    on a 401. A provider that rotates refresh tokens sends a new one with each access token:
    ``on_token`` gets every new :class:`TokenSet`, so the host can persist it (the old refresh
    token may stop working as soon as the new one is issued).
    """

    def __init__(
        self,
        token_url: str,
        *,
        client_id: str,
        client_secret: str | Secret,
        refresh_token: str | Secret,
        access_token: str | Secret | None = None,
        expires_at: datetime | None = None,
        on_token: Callable[[TokenSet], object] | None = None,
        clock: Clock | None = None,
        skew: timedelta = timedelta(seconds=60),
    ) -> None:
        token = (
            TokenSet(access_token=access_token, refresh_token=refresh_token, expires_at=expires_at)
            if access_token is not None
            else None
        )
        super().__init__(token_url, clock=clock, skew=skew, on_token=on_token, token=token)
        self.client_id = client_id
        self._client_secret = Secret(client_secret)
        self._refresh_token = Secret(refresh_token)

    @override
    def _grant(self) -> dict[str, str]:
        refresh = self.token.refresh_token if self.token is not None else None
        return {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self._client_secret.reveal(),
            "refresh_token": (refresh or self._refresh_token).reveal(),
        }

    @override
    def _kept_refresh(self) -> Secret | None:
        # A provider that does not rotate sends no new refresh token: the old one stays.
        if self.token is not None and self.token.refresh_token is not None:
            return self.token.refresh_token
        return self._refresh_token


class ClientCredentials(_TokenAuth):
    """OAuth 2 client credentials (Salesforce's client credentials flow, server-to-server).

    ``rebase_host``: see the JWT bearer flow; with Salesforce the token endpoint must be the
    org's My Domain host, and the answer's ``instance_url`` is where the API calls go.
    """

    def __init__(
        self,
        token_url: str,
        *,
        client_id: str,
        client_secret: str | Secret,
        scope: str | None = None,
        on_token: Callable[[TokenSet], object] | None = None,
        rebase_host: str | None = None,
        clock: Clock | None = None,
        skew: timedelta = timedelta(seconds=60),
    ) -> None:
        super().__init__(
            token_url, clock=clock, skew=skew, on_token=on_token, rebase_host=rebase_host
        )
        self.client_id = client_id
        self._client_secret = Secret(client_secret)
        self.scope = scope

    @override
    def _grant(self) -> dict[str, str]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._client_secret.reveal(),
        }
        if self.scope:
            form["scope"] = self.scope
        return form


JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class JWTBearer(_TokenAuth):
    """The OAuth 2 JWT bearer flow (RFC 7523), as Salesforce does it.

    Each token request carries a fresh assertion signed with RS256 by ``private_key`` (PEM):
    claims ``iss`` (the consumer key), ``sub`` (the username), ``aud`` (the login URL) and
    ``exp`` (now + ``lifetime``). The answer has no refresh token: a new assertion is signed
    when the session expires or a request answers 401 (Salesforce's ``INVALID_SESSION_ID``).
    Salesforce's answer has no ``expires_in`` either; ``session_lifetime`` is how long a
    token is used before a new one is asked for (``None``: until a 401).

    Needs the ``jwt`` extra (PyJWT with cryptography): ``pip install 'syncrecon[jwt]'``.
    """

    def __init__(
        self,
        token_url: str,
        *,
        issuer: str,
        subject: str,
        audience: str,
        private_key: str | bytes | Secret,
        lifetime: timedelta = timedelta(minutes=3),
        session_lifetime: timedelta | None = None,
        on_token: Callable[[TokenSet], object] | None = None,
        rebase_host: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        try:
            import jwt  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "JWTBearer needs PyJWT with cryptography: pip install 'syncrecon[jwt]'"
            ) from exc
        super().__init__(token_url, clock=clock, on_token=on_token, rebase_host=rebase_host)
        self.issuer = issuer
        self.subject = subject
        self.audience = audience
        key = private_key.decode() if isinstance(private_key, bytes) else private_key
        self._key = Secret(key)
        self.lifetime = lifetime
        self.session_lifetime = session_lifetime

    def assertion(self) -> str:
        """A freshly signed assertion (RS256)."""
        import jwt

        now = self.clock.now()
        claims = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.audience,
            "exp": int((now + self.lifetime).timestamp()),
        }
        return str(jwt.encode(claims, self._key.reveal(), algorithm="RS256"))

    @override
    def _grant(self) -> dict[str, str]:
        return {"grant_type": JWT_BEARER_GRANT, "assertion": self.assertion()}

    @override
    def _accept(self, body: Mapping[str, Any]) -> TokenSet:
        token = super()._accept(body)
        if token.expires_at is None and self.session_lifetime is not None:
            token = attrs.evolve(token, expires_at=self.clock.now() + self.session_lifetime)
        return token
