"""A connector's own bug in the fast loop: never retried as if it were the network, never silent.

A ``TypeError`` (``AttributeError``, ``KeyError``...) out of a connector method reaches the
fast loop as :class:`~syncrecon.ConnectorBugError` (``syncrecon._connector.Caller`` wraps it,
naming the system and method). Wherever the fast loop keeps a webhook or a batch going past
such a failure, it logs it at ERROR with the traceback and leaves the write to
reconciliation as an open queue item, at once: not queued in the outbox, not retried on every
drain. A transient failure still goes to the outbox, as before.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from fastloop_helpers import World
from syncrecon import ConnectorBugError, Status, TransientError
from syncrecon.storage import Storage


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def _with_traceback(record: logging.LogRecord) -> bool:
    return record.exc_info is not None and record.exc_info[0] is ConnectorBugError


def _drained_later(w: World) -> tuple[int, int]:
    """Drain a day later, twice: (outbox entries retried, write calls made to the right)."""
    calls = w.right.calls.get("write_records", 0)
    retried = 0
    for _ in range(2):
        w.clock.advance(timedelta(days=1))
        retried += w.handler.process_pending().outbox_retried
    return retried, w.right.calls.get("write_records", 0) - calls


def test_a_write_that_raises_typeerror_is_queued_for_an_operator_and_logged(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    w = World(storage)
    w.right.fail_next("write_records", TypeError("'NoneType' object is not subscriptable"))
    w.left.edit("h1", stage="won")
    calls = w.right.calls.get("write_records", 0)
    with caplog.at_level(logging.ERROR):
        resp = w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")]))
    assert resp.status == 200  # the webhook is never failed by it
    assert w.right.calls["write_records"] - calls == 1  # not retried as a network failure
    (item,) = storage.list_items(sync="deals", statuses=[Status.OPEN])
    assert (item.field, item.rule, item.resolution) == ("stage", "fast_loop", "won")
    assert "ConnectorBugError" in item.explanation
    assert "salesforce.write_records raised TypeError" in item.explanation
    (logged,) = _errors(caplog)
    assert "salesforce.write_records failed for s1" in logged.getMessage()
    assert _with_traceback(logged)
    assert _drained_later(w) == (0, 0)  # not in the outbox: never retried
    w.reconciler.run_cycle()  # reconciliation repairs it
    assert w.right.get("s1").fields["StageName"] == "Closed Won"


def test_an_outbox_retry_that_raises_typeerror_gives_up_at_once_and_logs(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    w = World(storage)
    w.handler.retry = type(w.handler.retry)(sleep=lambda s: None, attempts=1)
    w.right.fail_next(
        "write_records", TransientError("503"), TypeError("'NoneType' object is not subscriptable")
    )
    w.left.edit("h1", stage="won")
    w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")]))
    assert storage.list_items(sync="deals", statuses=[Status.OPEN]) == []  # in the outbox
    w.clock.advance(w.handler.outbox_backoff)
    with caplog.at_level(logging.ERROR):
        report = w.handler.process_pending()
    # Before: retried (silently) on every drain until outbox_attempts ran out.
    assert (report.outbox_retried, report.outbox_exhausted, report.writes) == (1, 1, 0)
    (item,) = storage.list_items(sync="deals", statuses=[Status.OPEN])
    assert (item.field, item.rule, item.resolution) == ("stage", "fast_loop", "won")
    assert "failed 1 times (ConnectorBugError: salesforce.write_records raised TypeError" in (
        item.explanation
    )
    (logged,) = _errors(caplog)
    assert logged.name == "syncrecon.webhooks"
    assert logged.getMessage().startswith("salesforce: retrying the fast loop's write to right s1")
    assert "not retried" in logged.getMessage()
    assert _with_traceback(logged)
    assert _drained_later(w) == (0, 0)
    w.reconciler.run_cycle()
    assert w.right.get("s1").fields["StageName"] == "Closed Won"


def test_a_transient_outbox_failure_is_still_retried_quietly(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    w = World(storage)
    w.handler.retry = type(w.handler.retry)(sleep=lambda s: None, attempts=1)
    w.right.fail_next("write_records", TransientError("503"), TransientError("503"))
    w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")]))
    w.clock.advance(w.handler.outbox_backoff)
    with caplog.at_level(logging.ERROR):
        report = w.handler.process_pending()
    assert (report.outbox_retried, report.outbox_exhausted) == (1, 0)  # tried again later
    assert _errors(caplog) == []
    w.clock.advance(w.handler.outbox_backoff * 2)
    assert w.handler.process_pending().writes == 1
    assert w.right.get("s1").fields["StageName"] == "Closed Won"


def test_a_re_read_that_raises_attributeerror_is_not_retried_and_is_logged(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    w = World(storage)
    w.right.fail_next("read_records", AttributeError("'dict' object has no attribute 'key'"))
    w.left.edit("h1", stage="won")
    with caplog.at_level(logging.ERROR):
        resp = w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")]))
    assert resp.status == 200
    assert w.right.get("s1").fields["StageName"] == "Prospecting"  # nothing written blind
    (item,) = storage.list_items(sync="deals", statuses=[Status.OPEN])
    assert (item.field, item.rule, item.resolution) == ("stage", "fast_loop", "won")
    assert "re-reading salesforce" in item.explanation
    assert "salesforce.read_records raised AttributeError" in item.explanation
    (logged,) = _errors(caplog)
    assert logged.getMessage().startswith("salesforce.read_records failed with a bug")
    assert _with_traceback(logged)
    assert _drained_later(w) == (0, 0)  # before: queued in the outbox, re-read on each retry


def test_a_source_re_read_that_raises_keyerror_is_not_retried_and_is_logged(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    w = World(storage)
    w.handler.verify_source = True
    w.left.fail_next("read_records", KeyError("hs_object_id"))
    w.left.edit("h1", stage="won")
    with caplog.at_level(logging.ERROR):
        w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")]))
    (item,) = storage.list_items(sync="deals", statuses=[Status.OPEN])
    assert "re-reading hubspot before the fast loop's write to right" in item.explanation
    (logged,) = _errors(caplog)
    assert logged.getMessage().startswith("hubspot.read_records failed with a bug")
    assert _with_traceback(logged)
    assert _drained_later(w) == (0, 0)


def test_a_transient_re_read_failure_still_goes_to_the_outbox(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    w = World(storage)
    w.handler.retry = type(w.handler.retry)(sleep=lambda s: None, attempts=1)
    w.right.fail_next("read_records", TransientError("502"))
    w.left.edit("h1", stage="won")
    with caplog.at_level(logging.ERROR):
        w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")]))
    assert _errors(caplog) == []
    assert storage.list_items(sync="deals", statuses=[Status.OPEN]) == []
    w.clock.advance(w.handler.outbox_backoff)
    report = w.handler.process_pending()
    assert (report.outbox_retried, report.writes) == (1, 1)
    assert w.right.get("s1").fields["StageName"] == "Closed Won"


def test_a_parser_that_raises_something_else_is_a_400_and_an_error_log(
    storage: Storage, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = World(storage)
    request = w.request("hubspot", [w.change("h1", "stage", "won")])
    parser = w.handler.sources["hubspot"].parser

    def broken(body: bytes, headers: object) -> object:
        raise AttributeError("'list' object has no attribute 'get'")

    monkeypatch.setattr(parser, "parse", broken)
    with caplog.at_level(logging.ERROR):
        resp = w.handler.handle(request)
    assert resp.status == 400
    (logged,) = _errors(caplog)
    assert "hubspot parser raised AttributeError" in logged.getMessage()
    assert logged.exc_info is not None
    assert logged.exc_info[0] is AttributeError
