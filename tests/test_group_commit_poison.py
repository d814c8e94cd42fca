"""A request whose content the storage cannot hold fails alone, never the group it joins.

Two guards, each tested on its own:

- at the door: a request with a string the inbox could not store (a lone surrogate anywhere in
  what is stored: SQLite and PostgreSQL cannot encode it; a NUL in a key, event id, dedupe key
  or field name: PostgreSQL text cannot hold it) is refused 400 before it joins any group, on
  every backend and with or without group commit. A NUL inside a field value is stored (the
  inbox keeps the event as JSON, where it is the escape ``\\u0000``) and is accepted;
- in the committer: a group whose commit fails with something else than a storage failure
  (a failure tied to one request's content) is committed again ticket by ticket, so only the
  offending request fails; a storage failure still fails the whole group (nothing is retried).

The ordering is made, never waited for: the first request is held in the storage (the
:class:`~test_group_commit.Gate`) until the others have queued up behind it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from fastloop_helpers import sign
from serving import TIMEOUT
from syncrecon import StorageError
from syncrecon.storage import Storage
from syncrecon.storage._base import InboxEntry
from syncrecon.webhooks import WebhookHandler, WebhookRequest, WebhookResponse
from syncrecon.webhooks._group import GroupCommitter, StoredGroupError, Ticket, share_out
from test_group_commit import (
    ACCEPTED,
    URL,
    answer,
    await_until,
    gated,
    outcomes,
    run_async_group,
    run_sync_group,
    signed,
    stored_keys,
)


def request_of(handler: WebhookHandler, msg_id: str, **item: Any) -> WebhookRequest:
    """A signed request of one event, ``item`` over the defaults of ``signed(handler, n)``.

    ``json.dumps`` escapes what is not ASCII: a lone surrogate travels as ``\\ud800`` and a
    NUL as ``\\u0000``, as a provider's JSON would carry them; the parser decodes them."""
    now = handler.clock.now()
    body = json.dumps(
        [
            {
                "id": msg_id,
                "key": f"k-{msg_id}",
                "field": "notes",
                "value": "v",
                "at": int(now.timestamp() * 1000),
                **item,
            }
        ]
    ).encode()
    return WebhookRequest(method="POST", url=URL, headers=sign(body, msg_id, now), body=body)


def unstorable(handler: WebhookHandler, flaw: str = "both") -> dict[str, WebhookRequest]:
    """One request per way a string can be unstorable (``flaw``: ``"surrogate"``, ``"nul"``
    or ``"both"``), by what is wrong with it."""
    surrogates = {
        "surrogate in the event id": request_of(handler, "x1", id="x1\ud800"),
        "surrogate in the key": request_of(handler, "x2", key="k\udfff"),
        "surrogate in the value": request_of(handler, "x3", value="v\ud800v"),
        "surrogate in a nested value": request_of(handler, "x4", value={"a": ["\udc00"]}),
        "surrogate in the field name": request_of(handler, "x5", field="notes\ud800"),
    }
    nuls = {
        "NUL in the event id": request_of(handler, "x6", id="x6\x00"),
        "NUL in the key": request_of(handler, "x7", key="k\x00"),
        "NUL in the field name": request_of(handler, "x8", field="no\x00tes"),
    }
    return {"surrogate": surrogates, "nul": nuls, "both": {**surrogates, **nuls}}[flaw]


# --------------------------------------------------------------------------------------------
# At the door: refused 400, alone, nothing of it stored


@pytest.mark.parametrize("flaw", ["surrogate", "nul"])
@pytest.mark.parametrize("door", ["sync", "async"])
def test_unstorable_requests_are_refused_alone_and_the_group_is_stored(
    storage: Storage, door: str, flaw: str
) -> None:
    handler, gate = gated(storage)
    bad = unstorable(handler, flaw)
    good = [signed(handler, n) for n in range(1, 5)]
    nul_value = request_of(handler, "nul-value", value="a\x00b")  # storable: kept as JSON
    group = [good[0], *bad.values(), good[1], nul_value, good[2], good[3]]
    requests = [signed(handler, 0), *group]
    if door == "sync":
        first, rest = run_sync_group(handler, gate, requests)
    else:
        first, rest = asyncio.run(run_async_group(handler, gate, requests))
    assert answer(first) == ACCEPTED
    by_request = dict(zip(map(id, group), rest, strict=True))
    for what, request in bad.items():
        status, body = answer(by_request[id(request)])
        assert status == 400, what
        assert "cannot be stored" in body["error"], what
    assert [answer(by_request[id(r)]) for r in [*good, nul_value]] == [ACCEPTED] * 5
    # The bad requests never reached the storage; the good ones shared one commit.
    assert gate.groups == [["e0"], ["e1", "e2", "e3", "e4", "nul-value"]]
    assert stored_keys(storage, handler.clock) == ["e0", "e1", "e2", "e3", "e4", "nul-value"]
    assert outcomes(storage) == {"rejected": len(bad)}
    # A NUL inside a value is data: it is stored and comes back as it was sent.
    claimed = storage.claim_events(
        "test-reader", limit=100, now=handler.clock.now(), lease=handler.lease
    )  # the owner of stored_keys' claims: given them again
    (entry,) = [e for e in claimed if e.dedupe_key == "nul-value"]
    assert entry.event["value"] == "a\x00b"


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite_storage", id="sqlite"),
        pytest.param("postgres_storage", id="postgres", marks=pytest.mark.postgres),
    ],
)
def test_without_group_commit_an_unstorable_request_is_a_400_not_a_5xx(
    backend: str, request: pytest.FixtureRequest
) -> None:
    storage: Storage = request.getfixturevalue(backend)
    handler, gate = gated(storage, group_commit=False)
    gate.open.set()
    bad = unstorable(handler)
    for what, req in bad.items():
        assert handler.handle(req).status == 400, what
        assert asyncio.run(handler.ahandle(req)).status == 400, what
    assert answer(handler.handle(signed(handler, 1))) == ACCEPTED
    assert gate.groups == [["e1"]]
    assert stored_keys(storage, handler.clock) == ["e1"]
    assert outcomes(storage) == {"rejected": 2 * len(bad)}


# --------------------------------------------------------------------------------------------
# In the committer: a group failed by one request's content is committed ticket by ticket


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite_storage", id="sqlite"),
        pytest.param("postgres_storage", id="postgres", marks=pytest.mark.postgres),
    ],
)
@pytest.mark.parametrize("door", ["sync", "async"])
def test_a_group_failed_by_one_request_commits_the_others(
    backend: str, door: str, request: pytest.FixtureRequest
) -> None:
    """A storage whose commit raises a non-storage error for any batch holding one event
    (what an encoding error of its content would be): every other request of its group is
    stored and answered 200; that one alone fails, with nothing of it stored."""
    storage: Storage = request.getfixturevalue(backend)
    handler, gate = gated(storage)

    def choke(entries: Sequence[InboxEntry]) -> None:
        if any(e.dedupe_key == "poison" for e in entries):
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    gate.fail = choke
    failures: list[BaseException] = []

    def handle(req: WebhookRequest) -> WebhookResponse:
        """``handler.handle`` as an adapter calls it: what escapes is a generic 500."""
        try:
            return handler.handle(req)
        except Exception as exc:
            failures.append(exc)
            return WebhookResponse.json(500, {"error": "internal error"})

    async def ahandle(req: WebhookRequest) -> WebhookResponse:
        try:
            return await handler.ahandle(req)
        except Exception as exc:
            failures.append(exc)
            return WebhookResponse.json(500, {"error": "internal error"})

    group = [signed(handler, 1), signed(handler, 9, event_id="poison"), signed(handler, 2)]
    requests = [signed(handler, 0), *group, signed(handler, 3)]
    if door == "sync":
        first, rest = run_sync_group(handler, gate, requests, handle)
    else:
        first, rest = asyncio.run(run_async_group(handler, gate, requests, ahandle))
    assert answer(first) == ACCEPTED
    assert [answer(r) for r in (rest[0], rest[2], rest[3])] == [ACCEPTED] * 3
    assert rest[1].status == 500  # not a storage failure: a bug (the adapter's generic 500)
    (failure,) = failures
    assert isinstance(failure.__cause__, UnicodeEncodeError)
    # The group, then each of its tickets alone (in the order they queued up).
    assert gate.groups[:2] == [["e0"], ["e1", "e2", "e3", "poison"]]
    assert sorted(gate.groups[2:]) == [["e1"], ["e2"], ["e3"], ["poison"]]
    assert stored_keys(storage, handler.clock) == ["e0", "e1", "e2", "e3"]


def test_a_storage_failure_still_fails_the_whole_group(storage: Storage) -> None:
    """A storage failure is not tied to a request: the group is not committed again."""
    handler, gate = gated(storage)

    def refuse(entries: Sequence[InboxEntry]) -> None:
        if len(entries) > 1:
            raise StorageError("the disk is full")

    gate.fail = refuse
    first, rest = run_sync_group(handler, gate, [signed(handler, n) for n in range(4)])
    assert answer(first) == ACCEPTED
    assert [r.status for r in rest] == [503] * 3
    assert gate.groups == [["e0"], ["e1", "e2", "e3"]]  # no retry one by one
    assert stored_keys(storage, handler.clock) == ["e0"]


def _ticket(key: str) -> Ticket:
    from datetime import UTC, datetime

    at = datetime(2026, 1, 1, tzinfo=UTC)
    return Ticket([InboxEntry(source="s", dedupe_key=key, event={}, received_at=at)])


def _held_first(
    store: Callable[[Sequence[Ticket], list[str]], None], tickets: Sequence[Ticket], queued: int
) -> list[list[str]]:
    """Commit ``tickets[0]`` alone and hold its commit until ``tickets[1:queued + 1]`` wait
    behind it, so they form the next group; then ``tickets[queued + 1:]`` one after another.
    ``store(group, keys)`` is the commit; returns the keys of every commit call, in order."""
    held = threading.Event()
    release = threading.Event()
    calls: list[list[str]] = []

    def commit(group: Sequence[Ticket]) -> None:
        keys = [e.dedupe_key for t in group for e in t.entries]
        calls.append(keys)
        if len(calls) == 1:
            held.set()
            assert release.wait(TIMEOUT)
        store(group, keys)

    committer = GroupCommitter(commit, max_events=10)

    async def scenario() -> None:
        first = asyncio.create_task(committer.acommit(tickets[0]))
        assert await asyncio.to_thread(held.wait, TIMEOUT)
        rest = [asyncio.create_task(committer.acommit(t)) for t in tickets[1 : queued + 1]]
        await await_until(lambda: committer.waiting == queued, "the tickets to queue up")
        assert not any(t.done() for t in rest)
        release.set()
        await asyncio.gather(first, *rest)
        for ticket in tickets[queued + 1 :]:
            await committer.acommit(ticket)

    asyncio.run(scenario())
    return calls


def test_the_committer_commits_a_failed_groups_tickets_one_by_one() -> None:
    """The committer alone: the first group is held until three tickets wait behind it; the
    commit of those three raises a ``ValueError`` for one of them, which fails alone."""
    durable: list[str] = []

    def store(group: Sequence[Ticket], keys: list[str]) -> None:
        if "bad" in keys:
            raise ValueError("cannot store this one")
        durable.extend(keys)
        for t in group:
            t.ids = [len(durable)] * len(t.entries)

    tickets = [_ticket(k) for k in ("first", "a", "bad", "b")]
    calls = _held_first(store, tickets, queued=3)
    assert calls == [["first"], ["a", "bad", "b"], ["a"], ["bad"], ["b"]]
    assert durable == ["first", "a", "b"]
    assert [t.error for t in tickets[:2]] == [None, None]
    assert isinstance(tickets[2].error, ValueError)
    assert tickets[2].ids is None
    assert tickets[3].error is None
    assert [t.ids for t in tickets] == [[1], [2], None, [3]]


def test_what_is_not_an_exception_stops_the_one_by_one_commits() -> None:
    """A ``SystemExit`` while the tickets are committed one by one is the error of that ticket
    and of every one after it (none is left hanging); the next group runs as usual."""

    def store(group: Sequence[Ticket], keys: list[str]) -> None:
        if "bad" in keys:
            raise ValueError("cannot store this one")
        if keys == ["b"]:
            raise SystemExit("not even an Exception")
        for t in group:
            t.ids = [1] * len(t.entries)

    tickets = [_ticket(k) for k in ("first", "a", "b", "bad", "c", "after")]
    calls = _held_first(store, tickets, queued=4)
    assert calls == [["first"], ["a", "b", "bad", "c"], ["a"], ["b"], ["after"]]
    assert [t.ids for t in tickets] == [[1], [1], None, None, None, [1]]
    assert tickets[1].error is None
    assert all(isinstance(t.error, SystemExit) for t in tickets[2:5])


def test_a_stored_group_whose_ids_cannot_be_shared_out_fails_whole() -> None:
    """A storage that stored the group but returned too few ids: committing the tickets again
    one by one would answer each as a duplicate, so the whole group fails, committed once."""

    def store(group: Sequence[Ticket], keys: list[str]) -> None:
        share_out(group, [1])  # one id: right for the first group, too few for the second

    tickets = [_ticket(k) for k in ("first", "a", "b")]
    calls = _held_first(store, tickets, queued=2)
    assert calls == [["first"], ["a", "b"]]  # never committed again one by one
    assert tickets[0].ids == [1]
    assert all(isinstance(t.error, StoredGroupError) for t in tickets[1:])
