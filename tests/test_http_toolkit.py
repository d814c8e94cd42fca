"""syncrecon.http: retries per request, rate limits, auth flows, paging, metering, secrets."""

from __future__ import annotations

import email.utils
import logging
import pickle
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from syncrecon import (
    AuthenticationError,
    Capabilities,
    Change,
    ChangeOp,
    ConfigurationError,
    Page,
    PermanentError,
    RateLimitedError,
    Record,
    TransientError,
)
from syncrecon._connector import Caller, RetrySettings
from syncrecon.http import (
    AsyncHttpConnector,
    BearerToken,
    ClientCredentials,
    CursorPaging,
    HttpApi,
    HttpConnector,
    HttpRetry,
    JWTBearer,
    NextUrlPaging,
    OAuth2RefreshToken,
    OffsetPaging,
    Op,
    RateLimiter,
    Secret,
    TokenSet,
    VirtualTimer,
    Window,
    WriteResults,
    chunked,
    parse_retry_after,
    shared_limiter,
)
from syncrecon.testing import ManualClock

BASE = "https://api.example.test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Server:
    """A scripted HTTP server: answers come from a queue per path, else 200 ``{}``."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.clock = clock
        self.script: dict[str, list[Callable[[httpx.Request], httpx.Response]]] = {}
        self.seen: list[httpx.Request] = []
        self.times: list[float] = []

    def on(self, path: str, *answers: Callable[[httpx.Request], httpx.Response]) -> None:
        self.script.setdefault(path, []).extend(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if self.clock is not None:
            self.times.append(self.clock.now().timestamp())
        queue = self.script.get(request.url.path)
        if queue:
            return queue.pop(0)(request)
        return httpx.Response(200, json={})

    def paths(self) -> list[str]:
        return [
            f"{r.method} {r.url.path}{'?' + r.url.query.decode() if r.url.query else ''}"
            for r in self.seen
        ]


def answer(
    status: int, body: Any = None, headers: dict[str, str] | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    def respond(_: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    return respond


def lost(_: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("the answer never came")


def refused(_: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused")


def make_api(server: Server, clock: ManualClock | None = None, **kwargs: Any) -> HttpApi:
    clock = clock or ManualClock()
    timer = VirtualTimer(clock)
    client = httpx.Client(transport=httpx.MockTransport(server))
    kwargs.setdefault("retry", HttpRetry(attempts=4, initial=0.5, maximum=30, rng=random.Random(1)))
    return HttpApi(client, system="api", base_url=BASE, timer=timer, clock=clock, **kwargs)


# -- Retry-After -------------------------------------------------------------------------------


def test_retry_after_seconds_and_http_dates() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 1.5 ", now=now) == 1.5
    assert parse_retry_after("-3", now=now) == 0.0
    later = email.utils.format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(later, now=now) == 90.0
    earlier = email.utils.format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(earlier, now=now) == 0.0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after("", now=now) is None
    assert parse_retry_after(None, now=now) is None


# -- retries per request -------------------------------------------------------------------------


def test_a_429_on_page_two_repeats_page_two_only() -> None:
    server = Server()
    server.on("/items", answer(200, {"items": [1], "next": "p2"}))
    server.on("/items", answer(429, {"message": "slow down"}, {"Retry-After": "2"}))
    server.on("/items", answer(200, {"items": [2], "next": None}))
    api = make_api(server)
    paging = CursorPaging(param="cursor", path=("next",))

    def walk() -> Op[list[int]]:
        cursor: str | None = None
        items: list[int] = []
        while True:
            reply = yield api.request("GET", "/items", params=paging.params(cursor))
            body = reply.json()
            items += body["items"]
            cursor = paging.next_cursor(body)
            if cursor is None:
                return items

    assert api.run(walk()) == [1, 2]
    assert server.paths() == ["GET /items", "GET /items?cursor=p2", "GET /items?cursor=p2"]
    assert api.timer.slept == 2.0  # type: ignore[attr-defined]
    assert api.requests == {"GET /items": 3}
    assert api.throttled == 1


def test_server_errors_retry_idempotent_requests_with_backoff() -> None:
    server = Server()
    server.on("/r", answer(503), answer(500), answer(200, {"ok": True}))
    api = make_api(server)
    assert api.send(api.request("GET", "/r")).json() == {"ok": True}
    assert len(server.seen) == 3


def test_exhausted_retries_raise_the_typed_error() -> None:
    server = Server()
    server.on("/r", *[answer(503, {"message": "down"})] * 4)
    api = make_api(server)
    with pytest.raises(TransientError) as caught:
        api.send(api.request("GET", "/r"))
    assert caught.value.status == 503
    assert caught.value.endpoint == "GET /r"
    assert "down" in str(caught.value)
    assert len(server.seen) == 4


def test_a_create_is_not_repeated_after_an_ambiguous_failure() -> None:
    for failure in (answer(500), lost):
        server = Server()
        server.on("/create", failure, answer(201, {"id": "1"}))
        api = make_api(server)
        with pytest.raises(TransientError):
            api.send(api.request("POST", "/create", json={"name": "a"}))
        assert len(server.seen) == 1


def test_a_create_is_repeated_when_it_carries_an_idempotency_key_or_was_never_processed() -> None:
    server = Server()
    server.on("/create", answer(500), lost, answer(201, {"id": "1"}))
    api = make_api(server)
    reply = api.send(api.request("POST", "/create", headers={"Idempotency-Key": "k1"}))
    assert reply.status_code == 201
    assert len(server.seen) == 3
    # A 429 and a refused connection prove the request was not applied.
    server = Server()
    server.on("/create", answer(429), refused, answer(201, {"id": "1"}))
    api = make_api(server)
    assert api.send(api.request("POST", "/create")).status_code == 201
    assert len(server.seen) == 3


def test_marked_idempotent_posts_are_retried() -> None:
    server = Server()
    server.on("/batch/read", answer(502), answer(200, {"results": []}))
    api = make_api(server)
    api.send(api.request("POST", "/batch/read", json={}, idempotent=True))
    assert len(server.seen) == 2


def test_a_wait_longer_than_the_maximum_is_not_waited_for() -> None:
    server = Server()
    server.on("/r", answer(429, {"message": "daily"}, {"Retry-After": "3600"}))
    api = make_api(server)
    with pytest.raises(RateLimitedError) as caught:
        api.send(api.request("GET", "/r"))
    assert caught.value.retry_after == 3600.0
    assert len(server.seen) == 1
    assert api.timer.slept == 0.0  # type: ignore[attr-defined]


def test_client_errors_are_permanent_and_not_retried() -> None:
    server = Server()
    server.on("/r", answer(400, [{"message": "bad field", "errorCode": "INVALID_FIELD"}]))
    api = make_api(server)
    with pytest.raises(PermanentError) as caught:
        api.send(api.request("GET", "/r"))
    assert caught.value.code == "INVALID_FIELD"
    assert caught.value.status == 400
    assert len(server.seen) == 1
    server.on("/r", answer(401, {"message": "expired"}))
    with pytest.raises(AuthenticationError):
        api.send(api.request("GET", "/r"))


def test_an_operation_can_handle_an_error_itself() -> None:
    server = Server()
    server.on("/gone", answer(404, {"message": "not found"}))
    api = make_api(server)

    def read() -> Op[str]:
        try:
            yield api.request("GET", "/gone")
        except PermanentError as exc:
            return f"missing ({exc.status})"
        return "found"

    assert api.run(read()) == "missing (404)"


def test_the_engine_calls_an_http_connector_once_per_method() -> None:
    server = Server()
    server.on("/items", *[answer(503)] * 4)
    api = make_api(server)

    class Items(HttpConnector):
        name = "items"
        capabilities = Capabilities(retries_requests=True)

        def __init__(self) -> None:
            self.api = api

        def list_op(self, *, since: datetime | None, cursor: str | None) -> Op[Page]:
            yield self.api.request("GET", "/items")
            return Page(records=[])

    with (
        Caller(RetrySettings(attempts=5, sleep=lambda _: None)) as caller,
        pytest.raises(TransientError),
    ):
        caller.call("items", Items().list_records, since=None, cursor=None)
    assert len(server.seen) == 4  # the toolkit's 4 attempts, not 4 x 5
    assert caller.calls == {"items": 4}
    assert caller.requests == {"items": {"GET /items": 4}}


# -- the rate limiter --------------------------------------------------------------------------


def test_the_limiter_holds_two_per_second_and_earns_no_429() -> None:
    clock = ManualClock()
    limiter = RateLimiter([Window(2, 1.0)], timer=VirtualTimer(clock))
    server = Server(clock)
    sent: list[float] = []

    def strict(request: httpx.Request) -> httpx.Response:
        now = clock.now().timestamp()
        sent.append(now)
        if len([t for t in sent if t > now - 1.0]) > 2:
            return httpx.Response(429, json={"message": "too fast"})
        return httpx.Response(200, json={"page": len(sent)})

    for _ in range(10):
        server.on("/p", strict)
    api = make_api(server, clock, limiter=limiter)
    for _ in range(10):
        api.send(api.request("GET", "/p"))
    assert api.throttled == 0
    assert len(server.seen) == 10
    assert limiter.timer.slept == pytest.approx(4.0)  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=120),
    st.integers(min_value=1, max_value=12),
    st.sampled_from([0.5, 1.0, 10.0]),
)
def test_no_window_ever_holds_more_than_its_limit(
    gaps: list[float], limit: int, seconds: float
) -> None:
    clock = ManualClock()
    limiter = RateLimiter(
        [Window(limit, seconds), Window(limit * 3, seconds * 5)], timer=VirtualTimer(clock)
    )
    sent: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        limiter.acquire()
        sent.append(clock.now().timestamp())
    for window in limiter.windows:
        for i, start in enumerate(sent):
            inside = [t for t in sent[i:] if t < start + window.seconds - 1e-9]
            assert len(inside) <= window.limit


def test_the_limiter_slows_down_for_requests_other_processes_made() -> None:
    clock = ManualClock()
    limiter = RateLimiter([Window(10, 10.0)], timer=VirtualTimer(clock))
    limiter.acquire()
    # The provider says 8 of 10 are used: 7 are someone else's.
    limiter.observe(limit=10, remaining=2, seconds=10.0)
    waits = [limiter.acquire() for _ in range(3)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] > 0
    # A changed limit replaces ours.
    limiter.observe(limit=20, remaining=None, seconds=10.0)
    assert limiter.windows == (Window(20, 10.0),)


def test_one_limiter_per_account_per_process() -> None:
    first = shared_limiter("acct-test-1", lambda: RateLimiter([Window(5, 1.0)]))
    again = shared_limiter("acct-test-1", lambda: RateLimiter([Window(99, 1.0)]))
    assert first is again
    assert repr(first) == "RateLimiter(5/1s)"


# -- auth ----------------------------------------------------------------------------------------


def test_bearer_token_is_sent_and_never_shown() -> None:
    server = Server()
    api = make_api(server, auth=BearerToken("pat-na1-secret"))
    api.send(api.request("GET", "/me"))
    assert server.seen[0].headers["authorization"] == "Bearer pat-na1-secret"
    assert "secret" not in repr(api.auth)
    assert "secret" not in repr(api)


def oauth_server(
    clock: ManualClock, *, rotate: bool, expires_in: int = 1800
) -> tuple[Server, list[dict[str, str]]]:
    grants: list[dict[str, str]] = []
    current = {"access": "", "refresh": "r0"}
    server = Server(clock)

    def token(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        grants.append(form)
        if form.get("refresh_token") != current["refresh"] or form.get("client_secret") != "cs":
            return httpx.Response(
                400,
                json={"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"},
            )
        current["access"] = f"a{len(grants)}"
        body: dict[str, Any] = {
            "access_token": current["access"],
            "expires_in": expires_in,
            "token_type": "bearer",
        }
        if rotate:
            current["refresh"] = body["refresh_token"] = f"r{len(grants)}"
        return httpx.Response(200, json=body)

    def data(request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {current['access']}":
            return httpx.Response(401, json={"message": "expired"})
        return httpx.Response(200, json={"ok": True})

    for _ in range(50):
        server.on("/oauth/v1/token", token)
        server.on("/data", data)
    return server, grants


def test_oauth_refresh_by_expiry_and_rotation_persisted() -> None:
    clock = ManualClock()
    server, grants = oauth_server(clock, rotate=True)
    saved: list[TokenSet] = []
    auth = OAuth2RefreshToken(
        f"{BASE}/oauth/v1/token",
        client_id="cid",
        client_secret="cs",
        refresh_token="r0",
        on_token=saved.append,
        clock=clock,
    )
    api = make_api(server, clock, auth=auth)
    api.send(api.request("GET", "/data"))
    api.send(api.request("GET", "/data"))
    assert len(grants) == 1
    clock.advance(1800 - 30)  # inside the skew: renewed before it expires
    api.send(api.request("GET", "/data"))
    assert len(grants) == 2
    assert grants[1]["refresh_token"] == "r1"  # the rotated one
    assert [t.refresh_token.reveal() for t in saved if t.refresh_token] == ["r1", "r2"]
    assert "r2" not in repr(saved[-1])
    assert "a2" not in repr(saved[-1])
    assert api.requests == {"GET /data": 3}


def test_oauth_renews_once_on_401_then_gives_up() -> None:
    clock = ManualClock()
    server, grants = oauth_server(clock, rotate=False)
    auth = OAuth2RefreshToken(
        f"{BASE}/oauth/v1/token",
        client_id="cid",
        client_secret="cs",
        refresh_token="r0",
        access_token="revoked",
        expires_at=clock.now() + timedelta(hours=1),
        clock=clock,
    )
    api = make_api(server, clock, auth=auth)
    assert api.send(api.request("GET", "/data")).json() == {"ok": True}
    assert len(grants) == 1
    assert [r.url.path for r in server.seen] == ["/data", "/oauth/v1/token", "/data"]


def test_a_refused_refresh_is_an_authentication_error_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = ManualClock()
    server, _ = oauth_server(clock, rotate=False)
    auth = OAuth2RefreshToken(
        f"{BASE}/oauth/v1/token",
        client_id="cid",
        client_secret="cs",
        refresh_token="stolen-refresh-xyz",
        clock=clock,
    )
    api = make_api(server, clock, auth=auth)
    with pytest.raises(AuthenticationError) as caught:
        api.send(api.request("GET", "/data"))
    text = f"{caught.value} {caught.value!r} {auth!r} {caplog.text}"
    assert "BAD_REFRESH_TOKEN" in str(caught.value)
    for secret in ("stolen-refresh-xyz", "cs&", "client_secret=cs"):
        assert secret not in text


def rsa_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def test_jwt_bearer_signs_rs256_and_moves_to_the_instance() -> None:
    clock = ManualClock(datetime.now(UTC))
    private, public = rsa_pair()
    server = Server(clock)

    def token(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        claims = jwt.decode(
            form["assertion"], public, algorithms=["RS256"], audience="https://login.salesforce.com"
        )
        assert claims["iss"] == "consumer"
        assert claims["sub"] == "ada@example.com"
        return httpx.Response(
            200,
            json={
                "access_token": "00Dxx!sess",
                "instance_url": "https://acme.my.salesforce.com",
                "token_type": "Bearer",
            },
        )

    server.on("/services/oauth2/token", token, token)
    auth = JWTBearer(
        "https://login.salesforce.com/services/oauth2/token",
        issuer="consumer",
        subject="ada@example.com",
        audience="https://login.salesforce.com",
        private_key=private,
        rebase_host="instance.invalid",
        clock=clock,
    )
    client = httpx.Client(transport=httpx.MockTransport(server))
    api = HttpApi(
        client,
        system="sf",
        base_url="https://instance.invalid",
        auth=auth,
        timer=VirtualTimer(clock),
    )
    api.send(api.request("GET", "/services/data/v61.0/limits"))
    assert str(server.seen[-1].url) == "https://acme.my.salesforce.com/services/data/v61.0/limits"
    assert server.seen[-1].headers["authorization"] == "Bearer 00Dxx!sess"
    assert auth.token is not None
    assert auth.token.instance_url == "https://acme.my.salesforce.com"
    assert "BEGIN" not in repr(auth)
    assert "sess" not in repr(auth.token)


def test_client_credentials_grant() -> None:
    server = Server()
    seen: list[dict[str, str]] = []

    def token(request: httpx.Request) -> httpx.Response:
        seen.append(dict(httpx.QueryParams(request.content.decode())))
        return httpx.Response(
            200, json={"access_token": "tok", "instance_url": "https://x.my.salesforce.com"}
        )

    server.on("/services/oauth2/token", token)
    auth = ClientCredentials(
        "https://x.my.salesforce.com/services/oauth2/token", client_id="id", client_secret="shh"
    )
    api = make_api(server, auth=auth)
    api.send(api.request("GET", "/r"))
    assert seen == [{"grant_type": "client_credentials", "client_id": "id", "client_secret": "shh"}]
    assert "shh" not in repr(auth)


def test_secrets_hide_everywhere_they_could_leak() -> None:
    secret = Secret("tok-123")
    assert repr(secret) == str(secret) == "Secret('***')"
    assert f"{secret}" == "Secret('***')"
    assert secret.reveal() == "tok-123"
    assert Secret(secret) == secret
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    token = TokenSet(access_token="tok-123", refresh_token="ref-456", extra={"scope": "crm"})
    assert "tok-123" not in repr(token)
    assert "ref-456" not in repr(token)


# -- paging, chunks and results -------------------------------------------------------------------


def test_paginators() -> None:
    cursor = CursorPaging()
    assert cursor.params(None) == {}
    assert cursor.params("x") == {"after": "x"}
    assert cursor.next_cursor({"paging": {"next": {"after": "42"}}}) == "42"
    assert cursor.next_cursor({"results": []}) is None
    nxt = NextUrlPaging(path=("nextRecordsUrl",), done_path=("done",))
    assert nxt.next_cursor({"done": False, "nextRecordsUrl": "/q/01g-2000"}) == "/q/01g-2000"
    assert nxt.next_cursor({"done": True, "nextRecordsUrl": "/q/x"}) is None
    offset = OffsetPaging(page_size=2)
    assert offset.params(None) == {"limit": 2, "offset": 0}
    assert offset.next_cursor(None, 2) == "2"
    assert offset.next_cursor("2", 1) is None
    assert [list(c) for c in chunked([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    with pytest.raises(ValueError):
        list(chunked([1], 0))


def test_write_results_in_change_order_with_the_unanswered_marked() -> None:
    changes = [Change(op=ChangeOp.UPDATE, key=k, fields={"a": 1}, ref=f"r{k}") for k in "abc"]
    results = WriteResults(changes)
    results.fail(2, "bad value")
    results.ok(0, modified_at=datetime(2026, 1, 1, tzinfo=UTC))
    done = results.done()
    assert [(r.ref, r.ok, r.retryable) for r in done] == [
        ("ra", True, False),
        ("rb", False, True),
        ("rc", False, False),
    ]
    assert done[0].key == "a"


# -- the async door, metering through the engine ------------------------------------------------


class _Echo(AsyncHttpConnector):
    name = "echo"
    capabilities = Capabilities(retries_requests=True)

    def __init__(self, api: HttpApi) -> None:
        self.api = api

    def read_op(self, keys: Sequence[str]) -> Op[Sequence[Record]]:
        out = []
        for key in keys:
            reply = yield self.api.request("GET", f"/records/{key}", endpoint="GET /records/{id}")
            out.append(Record(key=key, fields=reply.json()))
        return out


def async_server() -> Callable[[httpx.Request], httpx.Response]:
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 2:
            return httpx.Response(429, headers={"Retry-After": "1"})
        return httpx.Response(200, json={"path": request.url.path})

    return handler


@pytest.mark.anyio
async def test_the_async_door_retries_and_counts() -> None:
    clock = ManualClock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(async_server())) as client:
        api = HttpApi(client, system="echo", base_url=BASE, timer=VirtualTimer(clock))
        records = await _Echo(api).read_records(["a", "b"])
    assert [r.fields["path"] for r in records] == ["/records/a", "/records/b"]
    assert api.requests == {"GET /records/{id}": 3}


def test_an_async_connector_through_the_sync_engine_counts_requests() -> None:
    clock = ManualClock()

    client = httpx.AsyncClient(transport=httpx.MockTransport(async_server()))
    api = HttpApi(client, system="echo", base_url=BASE, timer=VirtualTimer(clock))
    with Caller(RetrySettings(sleep=lambda _: None)) as caller:
        found = caller.call("echo", _Echo(api).read_records, ["a", "b"])
    anyio.run(client.aclose)
    assert len(found) == 2
    assert caller.requests == {"echo": {"GET /records/{id}": 3}}
    assert caller.calls == {"echo": 3}


def test_a_sync_api_refuses_the_async_door_and_the_reverse() -> None:
    api = make_api(Server())
    with pytest.raises(ConfigurationError, match="AsyncClient"):
        anyio.run(api.asend, api.request("GET", "/x"))
    with pytest.raises(ConfigurationError, match=r"httpx\.Client or httpx\.AsyncClient"):
        HttpApi(object(), system="x", base_url=BASE)  # type: ignore[arg-type]


def test_slow_requests_do_not_leave_the_window_early() -> None:
    """The provider counts a request when it arrives; a slow one must not free its slot in our
    books before it has arrived, or the next request lands inside the provider's window."""
    clock = ManualClock()
    arrivals: list[float] = []
    answers: list[int] = []

    def provider(request: httpx.Request) -> httpx.Response:
        n = len(arrivals)
        clock.advance(0.8 if n % 7 == 0 else 0.02)  # the uplink: some requests are slow
        now = clock.now().timestamp()
        arrivals.append(now)
        inside = sum(1 for t in arrivals if t > now - 1.0)
        status = 429 if inside > 5 else 200
        answers.append(status)
        return httpx.Response(status, json={})

    limiter = RateLimiter([Window(5, 1.0)], timer=VirtualTimer(clock))
    client = httpx.Client(transport=httpx.MockTransport(provider))
    api = HttpApi(client, system="api", base_url=BASE, limiter=limiter, timer=VirtualTimer(clock))
    for _ in range(120):
        api.send(api.request("GET", "/r"))
    assert answers.count(429) == 0
    assert len(answers) == 120
