"""Group commit in the webhook front door: concurrent requests share one durable commit.

The ordering is made, never waited for: a storage wrapper (:class:`Gate`) holds the first
commit until the test has queued the requests it wants grouped, then lets it go; the test
then checks that they were written by ONE ``enqueue_events`` call, that each was answered
only after that, and with its own share of the result. Every backend runs the same tests.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from fastloop_helpers import SECRET, JsonChanges, sign
from serving import TIMEOUT, serve, wait_until
from syncrecon import FieldMap, Side, StorageError, SyncDefinition, recency
from syncrecon.storage import Storage
from syncrecon.storage._base import Counter, InboxEntry
from syncrecon.testing import ManualClock, SimulatedSystem
from syncrecon.webhooks import (
    StandardWebhooksVerifier,
    WebhookHandler,
    WebhookRequest,
    WebhookResponse,
    WebhookSource,
)
from syncrecon.webhooks._group import GroupCommitter, Ticket, share_out, take_group
from syncrecon.webhooks.asgi import WebhookApp
from syncrecon.webhooks.wsgi import WebhookWSGI

URL = "https://hooks.example.com/webhooks/crm"
GROUP = 6  # requests queued behind the first commit


# --------------------------------------------------------------------------------------------
# Scaffolding


def make_handler(storage: Storage, **options: Any) -> WebhookHandler:
    clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
    sync = SyncDefinition(
        name="deals",
        left=SimulatedSystem("crm", clock=clock),
        right=SimulatedSystem("erp", clock=clock),
        fields=[FieldMap(left="notes", right="notes", policy=recency())],
    )
    source = WebhookSource(
        name="crm",
        sync=sync,
        side=Side.LEFT,
        verifier=StandardWebhooksVerifier(secrets=[SECRET], clock=clock),
        parser=JsonChanges("crm"),
    )
    return WebhookHandler([source], storage, clock=clock, **options)


def signed(
    handler: WebhookHandler, n: int, *, event_id: str | None = None, secret: str = SECRET
) -> WebhookRequest:
    """A signed request of one event (``e<n>`` unless ``event_id`` says otherwise)."""
    now = handler.clock.now()
    item = {
        "id": event_id or f"e{n}",
        "key": f"k{n}",
        "field": "notes",
        "value": f"v{n}",
        "at": int(now.timestamp() * 1000),
    }
    body = json.dumps([item]).encode()
    headers = sign(body, f"msg_{event_id or n}", now, secret)
    return WebhookRequest(method="POST", url=URL, headers=headers, body=body)


def answer(response: WebhookResponse) -> tuple[int, dict[str, Any]]:
    return response.status, json.loads(response.body)


ACCEPTED = (200, {"accepted": 1, "duplicates": 0})
DUPLICATE = (200, {"accepted": 0, "duplicates": 1})
UNAVAILABLE = (503, {"error": "temporarily unavailable; retry"})


class Gate:
    """Wraps a storage: the first ``enqueue_events`` call that stores entries waits until the
    test opens the gate; every call is recorded (its dedupe keys, counters and thread)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []
        self.counted: list[list[Counter]] = []
        self.threads: list[int] = []
        self.entered = threading.Event()
        self.open = threading.Event()
        self.fail: Callable[[Sequence[InboxEntry]], None] | None = None
        self._held = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def enqueue_events(
        self, entries: Sequence[InboxEntry], counters: Sequence[Counter], at: datetime
    ) -> list[int | None]:
        self.calls.append([e.dedupe_key for e in entries])
        self.counted.append(list(counters))
        self.threads.append(threading.get_ident())
        if entries and not self._held:
            self._held = True
            self.entered.set()
            assert self.open.wait(TIMEOUT), "the test never opened the gate"
        if self.fail is not None:
            self.fail(entries)
        return self.inner.enqueue_events(entries, counters, at)

    @property
    def groups(self) -> list[list[str]]:
        """The calls that stored entries, each call's keys sorted."""
        return [sorted(keys) for keys in self.calls if keys]


def gated(storage: Storage, **options: Any) -> tuple[WebhookHandler, Gate]:
    handler = make_handler(storage, **options)
    gate = Gate(storage)
    handler.storage = gate
    return handler, gate


def stored_keys(storage: Storage, clock: Any) -> list[str]:
    """The dedupe keys of every event in the inbox (pending), sorted, repeats kept."""
    entries = storage.claim_events(
        "test-reader", limit=100_000, now=clock.now(), lease=timedelta(minutes=1)
    )
    return sorted(e.dedupe_key for e in entries)


def outcomes(storage: Storage) -> dict[str, int]:
    totals: dict[str, int] = {}
    for labels, n in storage.counter_totals("webhook_events"):
        totals[labels["outcome"]] = totals.get(labels["outcome"], 0) + n
    return totals


def run_sync_group(
    handler: WebhookHandler,
    gate: Gate,
    requests: list[WebhookRequest],
    handle: Callable[[WebhookRequest], WebhookResponse] | None = None,
) -> tuple[WebhookResponse, list[WebhookResponse]]:
    """The first of ``requests`` commits alone and is held in the gate; the rest queue up
    behind it (each in its own thread); then the gate opens. Their responses (each request
    answered by ``handle``, ``handler.handle`` by default)."""
    handle = handle or handler.handle
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        first = pool.submit(handle, requests[0])
        assert gate.entered.wait(TIMEOUT)
        rest: list[Future[WebhookResponse]] = [pool.submit(handle, r) for r in requests[1:]]
        wait_until(lambda: handler._committer.waiting == len(rest), "the requests to queue up")
        assert not any(f.done() for f in rest)  # nobody is answered before its commit
        gate.open.set()
        return first.result(TIMEOUT), [f.result(TIMEOUT) for f in rest]


async def await_until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    """Let the event loop run until ``condition()`` holds; fail after ``timeout`` seconds (a
    monotonic deadline, not a count of turns: a slow machine only makes it take longer)."""
    deadline = time.monotonic() + timeout
    turns = 0
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        # Give the loop's tasks their turns; once they are done, wait for other threads
        # without spinning (polling, not ordering: the condition decides, not the time).
        turns += 1
        await asyncio.sleep(0 if turns < 1000 else 0.001)


async def run_async_group(
    handler: WebhookHandler,
    gate: Gate,
    requests: list[WebhookRequest],
    ahandle: Callable[[WebhookRequest], Coroutine[Any, Any, WebhookResponse]] | None = None,
) -> tuple[WebhookResponse, list[WebhookResponse]]:
    """:func:`run_sync_group` through the async door, as tasks on one event loop."""
    ahandle = ahandle or handler.ahandle
    first = asyncio.create_task(ahandle(requests[0]))
    assert await asyncio.to_thread(gate.entered.wait, TIMEOUT)
    rest = [asyncio.create_task(ahandle(r)) for r in requests[1:]]
    await await_until(lambda: handler._committer.waiting == len(rest), "the requests to queue up")
    assert not any(t.done() for t in rest)
    gate.open.set()
    return await first, list(await asyncio.gather(*rest))


# --------------------------------------------------------------------------------------------
# The grouping, on every backend, through both doors


def test_requests_arriving_during_a_commit_share_the_next_sync_door(storage: Storage) -> None:
    handler, gate = gated(storage)
    requests = [signed(handler, n) for n in range(GROUP + 1)]
    first, rest = run_sync_group(handler, gate, requests)
    assert answer(first) == ACCEPTED
    assert [answer(r) for r in rest] == [ACCEPTED] * GROUP
    # ONE commit for the queued requests, after the first one's own.
    assert gate.groups == [["e0"], sorted(f"e{n}" for n in range(1, GROUP + 1))]
    assert stored_keys(storage, handler.clock) == sorted(f"e{n}" for n in range(GROUP + 1))


def test_requests_arriving_during_a_commit_share_the_next_async_door(storage: Storage) -> None:
    handler, gate = gated(storage)
    requests = [signed(handler, n) for n in range(GROUP + 1)]
    first, rest = asyncio.run(run_async_group(handler, gate, requests))
    assert answer(first) == ACCEPTED
    assert [answer(r) for r in rest] == [ACCEPTED] * GROUP
    assert gate.groups == [["e0"], sorted(f"e{n}" for n in range(1, GROUP + 1))]
    assert stored_keys(storage, handler.clock) == sorted(f"e{n}" for n in range(GROUP + 1))
    # The event loop's thread never touched the storage.
    assert threading.get_ident() not in gate.threads


def test_both_doors_join_one_group(storage: Storage) -> None:
    """A WSGI thread and an event loop's tasks, on one handler, share one commit."""
    handler, gate = gated(storage)
    wsgi = WebhookWSGI(handler)

    def post(req: WebhookRequest) -> str:
        environ = {
            "REQUEST_METHOD": "POST",
            "wsgi.url_scheme": "https",
            "HTTP_HOST": "hooks.example.com",
            "PATH_INFO": "/webhooks/crm",
            "CONTENT_LENGTH": str(len(req.body)),
            "wsgi.input": io.BytesIO(req.body),
            **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in req.headers.items()},
        }
        statuses: list[str] = []

        def start_response(status: str, _headers: object, _exc_info: object = None) -> Any:
            statuses.append(status)

        body = b"".join(wsgi(environ, start_response))
        return f"{statuses[0]} {body.decode()}"

    async def scenario() -> list[Any]:
        first = asyncio.create_task(handler.ahandle(signed(handler, 0)))
        assert await asyncio.to_thread(gate.entered.wait, TIMEOUT)
        with ThreadPoolExecutor(max_workers=2) as pool:
            threaded = [pool.submit(post, signed(handler, n)) for n in (1, 2)]
            tasks = [asyncio.create_task(handler.ahandle(signed(handler, n))) for n in (3, 4)]
            await await_until(lambda: handler._committer.waiting == 4, "the requests to queue up")
            gate.open.set()
            return [
                await first,
                *[f.result(TIMEOUT) for f in threaded],
                *await asyncio.gather(*tasks),
            ]

    first, wsgi_1, wsgi_2, asgi_3, asgi_4 = asyncio.run(scenario())
    assert answer(first) == answer(asgi_3) == answer(asgi_4) == ACCEPTED
    assert wsgi_1 == wsgi_2 == '200 OK {"accepted": 1, "duplicates": 0}'
    assert gate.groups == [["e0"], ["e1", "e2", "e3", "e4"]]


def test_a_lone_request_commits_at_once_in_its_own_thread(storage: Storage) -> None:
    """No timer, no hand-over: the sync door commits an idle handler's request itself."""
    handler, gate = gated(storage)
    gate.open.set()
    assert answer(handler.handle(signed(handler, 0))) == ACCEPTED
    assert gate.threads == [threading.get_ident()]
    assert answer(asyncio.run(handler.ahandle(signed(handler, 1)))) == ACCEPTED
    assert gate.groups == [["e0"], ["e1"]]


def test_a_group_is_at_most_max_group_events(storage: Storage) -> None:
    handler, gate = gated(storage, max_group_events=3)
    assert handler.max_group_events == 3
    requests = [signed(handler, n) for n in range(8)]
    first, rest = run_sync_group(handler, gate, requests)
    assert [answer(r) for r in [first, *rest]] == [ACCEPTED] * 8
    assert [len(g) for g in gate.groups] == [1, 3, 3, 1]
    assert len(stored_keys(storage, handler.clock)) == 8


def test_without_group_commit_each_request_commits_alone(storage: Storage) -> None:
    handler, gate = gated(storage, group_commit=False)
    assert not handler.group_commit
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(handler.handle, signed(handler, 0))
        assert gate.entered.wait(TIMEOUT)
        rest = [pool.submit(handler.handle, signed(handler, n)) for n in (1, 2, 3)]
        wait_until(lambda: len(gate.calls) == 4, "every request to call the storage")
        gate.open.set()
        assert [answer(f.result(TIMEOUT)) for f in [first, *rest]] == [ACCEPTED] * 4
    assert sorted(gate.groups) == [["e0"], ["e1"], ["e2"], ["e3"]]
    assert answer(asyncio.run(handler.ahandle(signed(handler, 4)))) == ACCEPTED


# --------------------------------------------------------------------------------------------
# Duplicates and bad requests inside a group


def test_the_same_webhook_twice_in_one_group_is_stored_once(storage: Storage) -> None:
    handler, gate = gated(storage)
    twice = signed(handler, 1)
    again_stored = signed(handler, 0)  # e0 is committed before the group
    requests = [signed(handler, 0), twice, signed(handler, 2), twice, again_stored]
    first, rest = run_sync_group(handler, gate, requests)
    assert answer(first) == ACCEPTED
    got = [answer(r) for r in rest]
    # One of the two deliveries of e1 stores it, the other is its duplicate.
    assert {json.dumps(got[i]) for i in (0, 2)} == {json.dumps(ACCEPTED), json.dumps(DUPLICATE)}
    assert got[1] == ACCEPTED
    assert got[3] == DUPLICATE
    assert gate.groups == [["e0"], ["e0", "e1", "e1", "e2"]]
    assert stored_keys(storage, handler.clock) == ["e0", "e1", "e2"]
    assert outcomes(storage) == {"duplicate": 2}


def test_a_bad_signature_among_good_requests_fails_alone(storage: Storage) -> None:
    handler, gate = gated(storage)
    forged = signed(handler, 3, secret="whsec_" + "QUJD" * 8)
    requests = [signed(handler, 0), signed(handler, 1), forged, signed(handler, 2)]
    first, rest = run_sync_group(handler, gate, requests)
    assert answer(first) == ACCEPTED
    assert answer(rest[0]) == answer(rest[2]) == ACCEPTED
    assert rest[1].status == 401
    assert gate.groups == [["e0"], ["e1", "e2"]]
    # The rejection is counted in the group's own commit.
    assert [c.labels["outcome"] for c in gate.counted[1]] == ["rejected"]
    assert stored_keys(storage, handler.clock) == ["e0", "e1", "e2"]
    assert outcomes(storage) == {"rejected": 1}


def test_the_async_door_tells_listeners_of_new_events_only_after_processing(
    storage: Storage,
) -> None:
    handler, gate = gated(storage, inline=True)
    gate.open.set()
    order: list[str] = []
    handler.add_listener(lambda count: order.append(f"told {count}"))
    process = handler._process

    def processed(*, in_worker_thread: bool) -> Any:
        order.append("processed")
        return process(in_worker_thread=in_worker_thread)

    handler._process = processed  # type: ignore[method-assign]
    forged = signed(handler, 2, secret="whsec_" + "QUJD" * 8)

    async def scenario() -> list[WebhookResponse]:
        return [
            await handler.ahandle(signed(handler, 1)),
            await handler.ahandle(signed(handler, 1)),  # a redelivery: nothing new
            await handler.ahandle(forged),  # refused at the door, its rejection counted
        ]

    first, again, refused = asyncio.run(scenario())
    assert answer(first) == ACCEPTED
    assert answer(again) == DUPLICATE
    assert refused.status == 401
    assert order == ["processed", "told 1"]
    assert gate.groups == [["e1"], ["e1"]]
    assert outcomes(storage)["rejected"] == 1


def test_a_bad_request_among_good_ones_fails_alone_async(storage: Storage) -> None:
    handler, gate = gated(storage)
    malformed = WebhookRequest(
        method="POST",
        url=URL,
        headers=sign(b"[{}]", "msg_bad", handler.clock.now()),
        body=b"[{}]",
    )
    requests = [signed(handler, 0), signed(handler, 1), malformed, signed(handler, 3)]
    first, rest = asyncio.run(run_async_group(handler, gate, requests))
    assert [r.status for r in [first, *rest]] == [200, 200, 400, 200]
    assert stored_keys(storage, handler.clock) == ["e0", "e1", "e3"]


# --------------------------------------------------------------------------------------------
# A failed group commit: every request in it 503, nothing of it stored


def _poison(storage: Storage, request_: pytest.FixtureRequest) -> None:
    """Make the real database refuse an inbox row keyed ``poison`` in the middle of the
    group's transaction (a trigger), so the rows before it must be rolled back."""
    from syncrecon.storage.sqlite import SQLiteStorage

    if isinstance(storage, SQLiteStorage):
        import sqlite3

        db = sqlite3.connect(storage.path)
        db.execute(
            "CREATE TRIGGER poison BEFORE INSERT ON inbox WHEN NEW.dedupe_key = 'poison'"
            " BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        )
        db.commit()
        db.close()
        return
    from syncrecon.storage.postgres import PostgresStorage

    if isinstance(storage, PostgresStorage):
        import psycopg
        from psycopg import sql

        url = request_.getfixturevalue("postgres_url")
        with psycopg.connect(url, autocommit=True) as conn:
            schema = sql.Identifier(storage.schema)
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION {}.poison() RETURNS trigger AS $$ BEGIN"
                    " IF NEW.dedupe_key = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF;"
                    " RETURN NEW; END $$ LANGUAGE plpgsql"
                ).format(schema)
            )
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER poison BEFORE INSERT ON {}.inbox"
                    " FOR EACH ROW EXECUTE FUNCTION {}.poison()"
                ).format(schema, schema)
            )
        return
    pytest.skip("the in-memory storage has no triggers (see the next test)")


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite_storage", id="sqlite"),
        pytest.param("postgres_storage", id="postgres", marks=pytest.mark.postgres),
    ],
)
@pytest.mark.parametrize("door", ["sync", "async"])
def test_a_failed_group_commit_answers_all_503_and_stores_nothing(
    backend: str, door: str, request: pytest.FixtureRequest
) -> None:
    storage: Storage = request.getfixturevalue(backend)
    _poison(storage, request)
    handler, gate = gated(storage)
    group = [
        signed(handler, 1),
        signed(handler, 2),
        signed(handler, 9, event_id="poison"),
        signed(handler, 3),
    ]
    requests = [signed(handler, 0), *group]
    if door == "sync":
        first, rest = run_sync_group(handler, gate, requests)
    else:
        first, rest = asyncio.run(run_async_group(handler, gate, requests))
    assert answer(first) == ACCEPTED
    assert [answer(r) for r in rest] == [UNAVAILABLE] * 4
    assert gate.groups == [["e0"], ["e1", "e2", "e3", "poison"]]
    assert stored_keys(storage, handler.clock) == ["e0"]  # nothing half-applied
    # The handler recovers: the next request is stored and answered.
    assert answer(handler.handle(signed(handler, 4))) == ACCEPTED


def test_a_storage_error_fails_every_request_of_the_group(storage: Storage) -> None:
    handler, gate = gated(storage)

    def refuse(entries: Sequence[InboxEntry]) -> None:
        if len(entries) > 1:
            raise StorageError("the disk is full")

    gate.fail = refuse
    requests = [signed(handler, n) for n in range(4)]
    first, rest = run_sync_group(handler, gate, requests)
    assert answer(first) == ACCEPTED
    assert [answer(r) for r in rest] == [UNAVAILABLE] * 3
    assert stored_keys(storage, handler.clock) == ["e0"]


def test_a_bug_in_the_commit_is_a_500_for_every_request_of_the_group(storage: Storage) -> None:
    """A failure that is not the storage's is retried ticket by ticket (it could be tied to
    one request's content); a bug that fails every commit fails each request alone, 500."""
    handler, gate = gated(storage)

    def bug(entries: Sequence[InboxEntry]) -> None:
        if entries and entries[0].dedupe_key != "e0":
            raise KeyError("a bug")

    gate.fail = bug
    app = WebhookApp(handler)
    requests = [signed(handler, n) for n in range(3)]

    async def post(req: WebhookRequest) -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.post(req.url, content=req.body, headers=dict(req.headers))
            return response.status_code

    async def scenario() -> list[int]:
        first = asyncio.create_task(post(requests[0]))
        assert await asyncio.to_thread(gate.entered.wait, TIMEOUT)
        rest = [asyncio.create_task(post(r)) for r in requests[1:]]
        await await_until(lambda: handler._committer.waiting == 2, "the requests to queue up")
        gate.open.set()
        return [await first, *await asyncio.gather(*rest)]

    assert asyncio.run(scenario()) == [200, 500, 500]
    # The group, then each of its requests alone (in the order they queued up).
    assert gate.groups[:2] == [["e0"], ["e1", "e2"]]
    assert sorted(gate.groups[2:]) == [["e1"], ["e2"]]
    assert stored_keys(storage, handler.clock) == ["e0"]


# --------------------------------------------------------------------------------------------
# The grouping core on its own


def _entries(n: int) -> list[InboxEntry]:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return [InboxEntry(source="s", dedupe_key=f"k{i}", event={}, received_at=at) for i in range(n)]


def test_take_group_keeps_arrival_order_within_the_event_cap() -> None:
    import collections

    tickets = [Ticket(_entries(n)) for n in (2, 1, 3, 1, 5, 1)]
    waiting = collections.deque(tickets)
    assert take_group(waiting, 4) == tickets[:2]  # 2 + 1; the 3 would make 6
    assert take_group(waiting, 4) == tickets[2:4]
    assert take_group(waiting, 4) == [tickets[4]]  # over the cap alone: still taken
    assert take_group(waiting, 4) == [tickets[5]]
    assert not waiting


def test_share_out_gives_each_ticket_its_own_ids() -> None:
    tickets = [Ticket(_entries(2)), Ticket(counters=[Counter(metric="m")]), Ticket(_entries(1))]
    share_out(tickets, [1, None, 7])
    assert [t.ids for t in tickets] == [[1, None], [], [7]]
    with pytest.raises(RuntimeError):
        share_out(tickets, [1])


def test_the_committer_thread_wakes_every_waiter_even_on_a_crash() -> None:
    """Whatever the commit raises, no waiter is left hanging, and the next group runs."""
    held = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def commit(group: Sequence[Ticket]) -> None:
        calls.append(len(group))
        if len(calls) == 1:
            held.set()
            assert release.wait(TIMEOUT)
        if len(calls) == 2:
            raise SystemExit("not even an Exception")
        for t in group:
            t.ids = [1] * len(t.entries)

    committer = GroupCommitter(commit, max_events=10)
    with pytest.raises(ValueError):
        GroupCommitter(commit, max_events=0)

    async def scenario() -> list[Ticket]:
        tickets = [Ticket(_entries(1)) for _ in range(4)]
        first = asyncio.create_task(committer.acommit(tickets[0]))
        assert await asyncio.to_thread(held.wait, TIMEOUT)
        rest = [asyncio.create_task(committer.acommit(t)) for t in tickets[1:3]]
        await await_until(lambda: committer.waiting == 2, "the tickets to queue up")
        release.set()
        await asyncio.gather(first, *rest)
        await committer.acommit(tickets[3])
        return tickets

    tickets = asyncio.run(scenario())
    assert calls == [1, 2, 1]
    assert tickets[0].ids == [1]
    assert tickets[3].ids == [1]
    assert all(isinstance(t.error, SystemExit) for t in tickets[1:3])


# --------------------------------------------------------------------------------------------
# Over real HTTP: uvicorn on loopback, 20 concurrent clients


CLIENTS = 20
PER_CLIENT = 15


def test_every_accepted_event_is_in_the_inbox_exactly_once_over_http(storage: Storage) -> None:
    handler = make_handler(storage)
    # Every client sends its own events, and a few deliveries twice (a provider retrying).
    plans = [[signed(handler, c * 1000 + i) for i in range(PER_CLIENT)] for c in range(CLIENTS)]
    for c, plan in enumerate(plans):
        plan.append(plan[c % PER_CLIENT])
    with serve(WebhookApp(handler)) as base:

        def client(plan: list[WebhookRequest]) -> list[tuple[str, int, dict[str, Any]]]:
            out = []
            with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
                for req in plan:
                    r = http.post("/webhooks/crm", content=req.body, headers=dict(req.headers))
                    out.append((json.loads(req.body)[0]["id"], r.status_code, r.json()))
            return out

        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            results = [row for rows in pool.map(client, plans) for row in rows]
    assert {status for _, status, _ in results} == {200}
    accepted = sorted(key for key, _, body in results if body["accepted"] == 1)
    duplicates = [key for key, _, body in results if body["duplicates"] == 1]
    assert len(accepted) == CLIENTS * PER_CLIENT
    assert len(duplicates) == CLIENTS
    assert accepted == sorted({key for key, _, _ in results})  # each accepted once
    assert stored_keys(storage, handler.clock) == accepted  # ... and stored exactly once
    assert outcomes(storage) == {"duplicate": CLIENTS}
