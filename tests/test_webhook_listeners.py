"""Listeners of stored webhook events, and the in-process worker they wake.

``WebhookHandler.add_listener(fn)``: ``fn(count)`` runs after a request's new events are
committed to the inbox, never for duplicates only, and never fails a webhook. A running
``Worker`` listens to its handler, so a webhook stored in its process is drained at once, not
at the next poll. No test sleeps to order anything: queues and events do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading

import pytest

from fastloop_helpers import World
from syncrecon.storage.memory import MemoryStorage
from syncrecon.webhooks import ProcessReport
from syncrecon.worker import Worker

HOUR = 3600.0


def _notes(w: World, key: str, value: str) -> list[dict[str, object]]:
    w.right.edit(key, Notes=value)
    return [w.change(key, "Notes", value)]


def test_a_listener_is_told_how_many_new_events_were_stored() -> None:
    w = World(MemoryStorage(), inline=False)
    told: list[int] = []
    w.handler.add_listener(told.append)
    first, second = _notes(w, "s1", "one"), _notes(w, "s2", "two")
    resp = w.handler.handle(w.request("salesforce", first + second + first))  # one repeated
    assert json.loads(resp.body) == {"accepted": 2, "duplicates": 1}
    assert told == [2]
    w.handler.handle(w.request("salesforce", first))  # a redelivery: nothing new
    assert told == [2]
    w.handler.handle(w.request("zoho", first))  # refused at the door
    assert told == [2]


def test_a_listener_runs_after_the_inbox_commit() -> None:
    # What an in-process worker does when told: drain. The events are there to drain.
    w = World(MemoryStorage(), inline=False)
    drained: list[ProcessReport] = []
    w.handler.add_listener(lambda count: drained.append(w.handler.process_pending()))
    w.handler.handle(w.request("salesforce", _notes(w, "s1", "at once")))
    assert [r.outcomes for r in drained] == [{"applied": 1}]
    assert w.left.get("h1").fields["notes"] == "at once"


def test_with_inline_processing_a_listener_runs_after_it() -> None:
    w = World(MemoryStorage(), inline=True)
    seen: list[object] = []
    w.handler.add_listener(lambda count: seen.append(w.left.get("h1").fields["notes"]))
    w.handler.handle(w.request("salesforce", _notes(w, "s1", "inline")))
    assert seen == ["inline"]


def test_a_failing_listener_is_logged_and_never_fails_the_webhook(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = World(MemoryStorage(), inline=False)
    told: list[int] = []

    def broken(count: int) -> None:
        raise RuntimeError("listener bug")

    w.handler.add_listener(broken)
    w.handler.add_listener(told.append)  # the others are still told
    with caplog.at_level(logging.ERROR, logger="syncrecon.webhooks"):
        resp = w.handler.handle(w.request("salesforce", _notes(w, "s1", "kept")))
    assert resp.status == 200
    assert json.loads(resp.body) == {"accepted": 1, "duplicates": 0}
    assert told == [1]
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "listener" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError
    assert w.handler.process_pending().outcomes == {"applied": 1}  # stored all the same


def test_a_removed_listener_is_not_told_and_async_hosts_tell_too() -> None:
    w = World(MemoryStorage(), inline=False)
    told: list[int] = []
    w.handler.add_listener(told.append)

    async def main() -> None:
        await w.handler.ahandle(w.request("salesforce", _notes(w, "s1", "async")))

    asyncio.run(main())
    assert told == [1]
    w.handler.remove_listener(told.append)
    w.handler.remove_listener(told.append)  # not added (any more): ignored
    w.handler.handle(w.request("salesforce", _notes(w, "s2", "unheard")))
    assert told == [1]


def _counting(w: World) -> queue.Queue[ProcessReport]:
    rounds: queue.Queue[ProcessReport] = queue.Queue()
    drain = w.handler.process_pending

    def counted() -> ProcessReport:
        report = drain()
        rounds.put(report)
        return report

    w.handler.process_pending = counted  # type: ignore[method-assign]
    return rounds


def test_a_running_worker_drains_a_webhook_stored_in_its_process_at_once() -> None:
    w = World(MemoryStorage(), inline=False)
    worker = Worker(w.handler, poll=HOUR, retention=None)  # the next poll is an hour away
    rounds = _counting(w)
    worker.start()
    try:
        assert rounds.get(timeout=10).processed == 0  # the first round; then it sleeps
        w.handler.handle(w.request("salesforce", _notes(w, "s1", "woken")))  # no wake() call
        assert rounds.get(timeout=10).processed == 1
    finally:
        worker.stop(timeout=10)
    assert w.left.get("h1").fields["notes"] == "woken"
    assert w.handler._listeners == ()  # a stopped worker no longer listens


def test_an_async_worker_drains_a_webhook_stored_in_its_process_at_once() -> None:
    w = World(MemoryStorage(), inline=False)
    worker = Worker(w.handler, poll=HOUR, retention=None)
    rounds: asyncio.Queue[ProcessReport] = asyncio.Queue()
    drain = w.handler.aprocess_pending

    async def counted() -> ProcessReport:
        report = await drain()
        rounds.put_nowait(report)
        return report

    w.handler.aprocess_pending = counted  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.ensure_future(worker.run())
        assert (await asyncio.wait_for(rounds.get(), 10)).processed == 0
        await w.handler.ahandle(w.request("salesforce", _notes(w, "s2", "async woken")))
        assert (await asyncio.wait_for(rounds.get(), 10)).processed == 1
        worker.stop()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert w.left.get("h2").fields["notes"] == "async woken"
    assert w.handler._listeners == ()


def test_a_webhook_from_another_thread_wakes_the_worker() -> None:
    # The host's request thread stores; the worker's thread drains; nothing is polled.
    w = World(MemoryStorage(), inline=False)
    worker = Worker(w.handler, poll=HOUR, retention=None)
    rounds = _counting(w)
    answered = threading.Event()
    request = w.request("salesforce", _notes(w, "s3", "threaded"))

    def host() -> None:
        assert w.handler.handle(request).status == 200
        answered.set()

    worker.start()
    try:
        assert rounds.get(timeout=10).processed == 0
        threading.Thread(target=host).start()
        assert rounds.get(timeout=10).processed == 1
        assert answered.wait(10)
    finally:
        worker.stop(timeout=10)
    assert w.left.get("h3").fields["notes"] == "threaded"
