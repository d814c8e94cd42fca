"""The fast loop end to end: verify, store, de-duplicate, order, suppress echoes, write."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastloop_helpers import World, sign
from syncrecon import RateLimitedError, Side, Status, TransientError
from syncrecon.storage import Storage
from syncrecon.storage.memory import MemoryStorage
from syncrecon.webhooks import WebhookRequest


def _outcomes(world: World) -> dict[str, int]:
    totals: dict[str, int] = {}
    for labels, n in world.storage.counter_totals("webhook_events"):
        totals[labels["outcome"]] = totals.get(labels["outcome"], 0) + n
    return totals


def test_a_change_on_the_source_of_truth_is_written_within_the_request(storage: Storage) -> None:
    w = World(storage)
    w.left.edit("h1", stage="won")
    resp = w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")]))
    assert resp.status == 200
    assert json.loads(resp.body) == {"accepted": 1, "duplicates": 0}
    assert w.right.get("s1").fields["StageName"] == "Closed Won"
    link = storage.get_links("deals", Side.LEFT, ["h1"])
    assert link["h1"].base["stage"] == "won"
    assert _outcomes(w) == {"applied": 1}
    assert w.reconciler.run_cycle().total_writes == 0


def test_deferred_mode_acknowledges_first_and_a_worker_applies(storage: Storage) -> None:
    w = World(storage, inline=False)
    w.right.edit("s2", Notes="call back")
    resp = w.handler.handle(w.request("salesforce", [w.change("s2", "Notes", "call back")]))
    assert resp.status == 200
    assert w.left.get("h2").fields["notes"] == "n1"  # not yet
    report = w.handler.process_pending()
    assert report.outcomes == {"applied": 1}
    assert w.left.get("h2").fields["notes"] == "call back"
    assert w.handler.process_pending().processed == 0


def test_a_redelivery_is_acknowledged_and_not_applied_twice(storage: Storage) -> None:
    w = World(storage)
    w.left.edit("h1", stage="won")
    item = w.change("h1", "stage", "won", event_id="evt_same")
    assert w.handler.handle(w.request("hubspot", [item])).status == 200
    writes = len(w.right.write_log)
    resp = w.handler.handle(w.request("hubspot", [item]))
    assert json.loads(resp.body) == {"accepted": 0, "duplicates": 1}
    assert len(w.right.write_log) == writes
    assert _outcomes(w) == {"applied": 1, "duplicate": 1}


def test_an_older_event_arriving_late_is_stale(storage: Storage) -> None:
    w = World(storage)
    early = w.clock.now()
    w.clock.advance(10)
    w.handler.handle(w.request("salesforce", [w.change("s3", "Notes", "newer")]))
    resp = w.handler.handle(w.request("salesforce", [w.change("s3", "Notes", "older", at=early)]))
    assert resp.status == 200
    assert w.left.get("h3").fields["notes"] == "newer"
    assert _outcomes(w) == {"applied": 1, "stale": 1}


def test_the_webhook_of_our_own_write_is_an_echo(storage: Storage) -> None:
    w = World(storage)
    w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")]))
    writes = len(w.left.write_log)
    # Salesforce now reports the change syncrecon just made.
    w.handler.handle(w.request("salesforce", [w.change("s1", "StageName", "Closed Won")]))
    assert len(w.left.write_log) == writes
    assert _outcomes(w) == {"applied": 1, "echo": 1}


def test_reconciliation_writes_are_recognized_as_echoes_too(storage: Storage) -> None:
    w = World(storage)
    w.left.edit("h2", stage="won")
    assert w.reconciler.run_cycle().writes == {"left": 0, "right": 1}
    w.handler.handle(w.request("salesforce", [w.change("s2", "StageName", "Closed Won")]))
    assert _outcomes(w) == {"echo": 1}


def test_a_change_on_the_other_side_of_a_source_of_truth_field_is_queued(storage: Storage) -> None:
    w = World(storage)
    w.right.edit("s1", StageName="Closed Lost")
    w.handler.handle(w.request("salesforce", [w.change("s1", "StageName", "Closed Lost")]))
    assert w.left.get("h1").fields["stage"] == "open"
    (item,) = storage.list_items(sync="deals", statuses=[Status.OPEN])
    assert (item.field, item.rule) == ("stage", "source_of_truth")
    assert _outcomes(w) == {"deferred": 1}
    report = w.reconciler.run_cycle()  # the slow loop puts the source of truth back
    assert report.auto_resolved == {"source_of_truth": 1}
    assert w.right.get("s1").fields["StageName"] == "Prospecting"


def test_an_escalated_field_is_never_written_by_the_fast_loop(storage: Storage) -> None:
    w = World(storage)
    w.handler.handle(w.request("hubspot", [w.change("h1", "amount", 999)]))
    assert w.right.get("s1").fields["Amount"] == 100
    (item,) = storage.list_items(sync="deals", statuses=[Status.ESCALATED])
    assert item.category == "deal_value"


def test_merge_fields_propagate_three_way(storage: Storage) -> None:
    w = World(storage)
    w.handler.handle(w.request("salesforce", [w.change("s1", "Tags", ["a", "vip"])]))
    assert w.left.get("h1").fields["tags"] == ["a", "vip"]


def test_a_late_update_for_a_deleted_record_does_not_resurrect_it(storage: Storage) -> None:
    w = World(storage, records=20)  # one deletion in 20 stays under the mass-delete guard
    w.left.delete("h4")
    w.reconciler.run_cycle()  # the deletion propagates from the source of truth
    assert "s4" not in w.right.records()
    w.handler.handle(w.request("hubspot", [w.change("h4", "notes", "late")]))
    assert "s4" not in w.right.records()
    assert "h4" not in w.left.records()
    assert _outcomes(w) == {"deferred": 1}


def test_a_burst_for_one_record_is_coalesced_into_one_write(storage: Storage) -> None:
    w = World(storage, inline=False)
    items = []
    for n in range(5):
        w.clock.advance(1)
        items.append(w.change("s1", "Notes", f"v{n}"))
    w.handler.handle(w.request("salesforce", items))
    w.handler.handle(w.request("salesforce", [w.change("s1", "Tags", ["a", "b"])]))
    calls = w.left.calls.get("write_records", 0)
    report = w.handler.process_pending()
    assert w.left.calls["write_records"] == calls + 1
    assert w.left.get("h1").fields["notes"] == "v4"
    assert w.left.get("h1").fields["tags"] == ["a", "b"]
    assert report.outcomes == {"applied": 2, "stale": 4}


def test_a_conflict_found_by_the_re_read_is_left_to_reconciliation(storage: Storage) -> None:
    w = World(storage, inline=False)
    w.handler.handle(w.request("salesforce", [w.change("s1", "Notes", "from sf")]))
    w.clock.advance(30)
    w.left.edit("h1", notes="from hs, later")  # its webhook was lost
    w.handler.process_pending()
    assert w.left.get("h1").fields["notes"] == "from hs, later"  # never overwritten
    assert _outcomes(w) == {"deferred": 1}
    w.reconciler.run_cycle()
    assert w.right.get("s1").fields["Notes"] == "from hs, later"  # recency, by the slow loop


def test_transient_failures_and_rate_limits_are_retried(storage: Storage) -> None:
    w = World(storage)
    sleeps: list[float] = []
    w.handler.retry = type(w.handler.retry)(sleep=sleeps.append)
    w.right.rate_limit_next("write_records", times=1, retry_after=7)
    w.right.fail_next("write_records", TransientError("502"))
    w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")]))
    assert w.right.get("s1").fields["StageName"] == "Closed Won"
    assert sleeps[0] == 7
    assert len(sleeps) == 2


def test_a_write_that_keeps_failing_goes_to_the_outbox_then_lands(storage: Storage) -> None:
    w = World(storage)
    w.handler.retry = type(w.handler.retry)(sleep=lambda s: None, attempts=2)
    w.right.fail_next("write_records", *(TransientError("503") for _ in range(2)))
    w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")]))
    assert w.right.get("s1").fields["StageName"] == "Prospecting"
    assert _outcomes(w) == {"deferred": 1}
    assert w.handler.process_pending().outbox_retried == 0  # not due yet
    w.clock.advance(w.handler.outbox_backoff)
    report = w.handler.process_pending()
    assert (report.outbox_retried, report.writes) == (1, 1)
    assert w.right.get("s1").fields["StageName"] == "Closed Won"
    assert (
        storage.get_links("deals", __import__("syncrecon").Side.LEFT, ["h1"])["h1"].base["stage"]
        == "won"
    )


def test_an_outbox_entry_that_runs_out_of_tries_becomes_a_queue_item(storage: Storage) -> None:
    w = World(storage)
    w.handler.retry = type(w.handler.retry)(sleep=lambda s: None, attempts=1)
    w.handler.outbox_attempts = 2
    w.right.fail_next("write_records", *(RateLimitedError("429") for _ in range(3)))
    w.left.edit("h1", stage="won")
    w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")]))
    for _ in range(2):
        w.clock.advance(timedelta(hours=1))
        w.handler.process_pending()
    (item,) = storage.list_items(sync="deals", statuses=[Status.OPEN])
    assert item.rule == "fast_loop"
    assert "failed 2 times" in item.explanation
    w.reconciler.run_cycle()  # and reconciliation repairs it
    assert w.right.get("s1").fields["StageName"] == "Closed Won"
    assert storage.list_items(sync="deals", statuses=[Status.OPEN]) == []


@pytest.mark.parametrize(
    ("mutate", "status"),
    [
        (
            lambda r: r.__class__(
                method="POST",
                url=r.url,
                headers={**r.headers, "webhook-signature": "v1,AAAA"},
                body=r.body,
            ),
            401,
        ),
        (
            lambda r: r.__class__(
                method="POST",
                url=r.url,
                headers={k: v for k, v in r.headers.items() if k != "webhook-signature"},
                body=r.body,
            ),
            401,
        ),
        (
            lambda r: r.__class__(
                method="POST", url=r.url.replace("hubspot", "zoho"), headers=r.headers, body=r.body
            ),
            404,
        ),
        (lambda r: r.__class__(method="GET", url=r.url, headers=r.headers, body=r.body), 405),
    ],
    ids=["bad-signature", "missing-signature", "unknown-source", "wrong-method"],
)
def test_bad_requests_get_the_right_4xx_and_change_nothing(mutate, status) -> None:  # type: ignore[no-untyped-def]
    w = World(MemoryStorage())
    request = mutate(w.request("hubspot", [w.change("h1", "stage", "won")]))
    resp = w.handler.handle(request)
    assert resp.status == status
    assert w.right.get("s1").fields["StageName"] == "Prospecting"
    assert w.handler.process_pending().processed == 0


def test_stale_and_future_timestamps_are_401(storage: Storage) -> None:
    w = World(storage)
    for when in (w.clock.now() - timedelta(minutes=6), w.clock.now() + timedelta(minutes=6)):
        resp = w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")], when=when))
        assert resp.status == 401
    assert _outcomes(w) == {"rejected": 2}


def test_malformed_json_is_400_and_an_oversized_body_413(storage: Storage) -> None:
    w = World(storage)
    body = b"{not json"
    bad = WebhookRequest(
        method="POST",
        url="https://x/webhooks/hubspot",
        headers=sign(body, "m1", w.clock.now()),
        body=body,
    )
    assert w.handler.handle(bad).status == 400
    w.handler.max_body_bytes = 10
    assert w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "won")])).status == 413
    assert w.handler.reject_too_large("POST", "https://x/webhooks/hubspot").status == 413
    rejected = {
        labels["reason"]: n
        for labels, n in storage.counter_totals("webhook_events")
        if labels["outcome"] == "rejected"
    }
    assert rejected == {"MalformedPayloadError": 1, "PayloadTooLargeError": 2}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "x-junk"]),
        st.text(max_size=40),
    ),
    body=st.binary(max_size=300),
    method=st.sampled_from(["POST", "GET", "PUT", "post"]),
    source=st.sampled_from(["hubspot", "salesforce", "nope", ""]),
)
def test_the_handler_never_raises_or_answers_5xx_for_client_input(
    headers: dict[str, str], body: bytes, method: str, source: str
) -> None:
    w = _FUZZ_WORLD
    request = WebhookRequest(
        method=method, url=f"https://x/webhooks/{source}", headers=headers, body=body
    )
    assert 400 <= w.handler.handle(request).status < 500


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=300))
def test_validly_signed_garbage_is_a_400_never_a_500(body: bytes) -> None:
    w = _FUZZ_WORLD
    request = WebhookRequest(
        method="POST",
        url="https://x/webhooks/hubspot",
        headers=sign(body, "fuzz", w.clock.now()),
        body=body,
    )
    assert w.handler.handle(request).status in (200, 400)


_FUZZ_WORLD = World(MemoryStorage())


# -- found in review ---------------------------------------------------------------------------


def test_the_fast_loop_leaves_a_field_waiting_for_an_operator_alone(storage: Storage) -> None:
    w = World(storage)
    # Both sides change notes within the skew: reconciliation escalates the conflict.
    w.left.edit("h1", notes="left")
    w.right.edit("s1", Notes="right")
    assert w.reconciler.run_cycle().escalated == {"unresolved_conflict": 1}
    w.right.edit("s1", Notes="n0")  # someone puts Salesforce back
    w.clock.advance(60)
    w.left.edit("h1", notes="newer left")
    w.handler.handle(w.request("hubspot", [w.change("h1", "notes", "newer left")]))
    assert w.right.get("s1").fields["Notes"] == "n0"  # not written
    (item,) = storage.list_items(sync="deals", statuses=[Status.ESCALATED])
    assert item.category == "unresolved_conflict"  # and still escalated
    assert _outcomes(w) == {"deferred": 1}
    w.reconciler.run_cycle()
    assert w.right.get("s1").fields["Notes"] == "n0"  # the slow loop does not resolve it either


def test_an_escalated_item_is_never_lowered_to_open(storage: Storage) -> None:
    w = World(storage, inline=False)
    w.left.edit("h1", notes="left")
    w.right.edit("s1", Notes="right")
    w.reconciler.run_cycle()
    from syncrecon.storage import Discrepancy, Step

    storage.commit(  # what a fast-loop conflict would add for the same field
        Step(
            at=w.clock.now(),
            new_items=[
                Discrepancy(
                    sync="deals",
                    field="notes",
                    status=Status.OPEN,
                    detected_at=w.clock.now(),
                    left_key="h1",
                    right_key="s1",
                    rule="fast_loop",
                )
            ],
        )
    )
    (item,) = storage.list_items(sync="deals", statuses=[Status.ESCALATED, Status.OPEN])
    assert (item.status, item.category) == (Status.ESCALATED, "unresolved_conflict")


def test_an_outbox_entry_superseded_by_a_newer_change_is_dropped(storage: Storage) -> None:
    w = World(storage)
    w.handler.retry = type(w.handler.retry)(sleep=lambda s: None, attempts=1)
    w.right.fail_next("write_records", TransientError("503"))
    w.left.edit("h1", notes="A")
    w.handler.handle(w.request("hubspot", [w.change("h1", "notes", "A")]))  # to the outbox
    w.clock.advance(5)
    w.left.edit("h1", notes="n0")  # undone: back to the synced value
    w.handler.handle(w.request("hubspot", [w.change("h1", "notes", "n0")]))
    w.clock.advance(timedelta(hours=1))
    report = w.handler.process_pending()
    assert (report.outbox_retried, report.writes) == (1, 0)
    assert w.right.get("s1").fields["Notes"] == "n0"


def test_an_outbox_entry_waits_while_its_field_is_quarantined(storage: Storage) -> None:
    from syncrecon.storage import Discrepancy, ItemUpdate, Step

    w = World(storage)
    w.handler.retry = type(w.handler.retry)(sleep=lambda s: None, attempts=1)
    w.right.fail_next("write_records", TransientError("503"))
    w.left.edit("h1", notes="A")
    w.handler.handle(w.request("hubspot", [w.change("h1", "notes", "A")]))
    (drift_id,) = storage.commit(
        Step(
            at=w.clock.now(),
            new_items=[
                Discrepancy(
                    sync="deals",
                    field="notes",
                    status=Status.ESCALATED,
                    detected_at=w.clock.now(),
                    category="schema_drift",
                    rule="schema",
                )
            ],
        )
    )
    w.clock.advance(timedelta(hours=1))
    assert w.handler.process_pending().writes == 0
    assert w.right.get("s1").fields["Notes"] == "n0"  # held while quarantined
    storage.commit(
        Step(
            at=w.clock.now(),
            item_updates=[
                ItemUpdate(id=drift_id, status=Status.RESOLVED, resolved_at=w.clock.now())
            ],
        )
    )
    w.clock.advance(timedelta(hours=1))
    assert w.handler.process_pending().writes == 1
    assert w.right.get("s1").fields["Notes"] == "A"


@pytest.mark.parametrize("host", ["[", "a]b", "::", "%zz"])
def test_a_malformed_host_or_url_is_a_4xx(storage: Storage, host: str) -> None:
    w = World(storage)
    request = w.request("hubspot", [w.change("h1", "stage", "won")])
    bad = WebhookRequest(
        method="POST",
        url=f"http://{host}/webhooks/hubspot",
        headers=request.headers,
        body=request.body,
    )
    assert w.handler.handle(bad).status in (200, 400, 401, 404)
    assert w.handler.reject_too_large("POST", f"http://{host}/webhooks/hubspot").status == 413


def test_wrong_methods_are_counted_as_rejections(storage: Storage) -> None:
    w = World(storage)
    request = w.request("hubspot", [w.change("h1", "stage", "won")])
    get = WebhookRequest(method="GET", url=request.url, headers=request.headers, body=b"")
    assert w.handler.handle(get).status == 405
    assert _outcomes(w) == {"rejected": 1}


def test_a_late_update_arriving_before_the_deletion_propagates_does_not_resurrect(
    storage: Storage,
) -> None:
    w = World(storage, records=20, inline=False)
    before = w.clock.now()
    w.clock.advance(60)
    w.left.delete("h4")  # the source of truth deletes; its deletion webhook is lost
    w.handler.handle(w.request("salesforce", [w.change("s4", "Notes", "late", at=before)]))
    w.handler.process_pending()  # the late update: the left record is gone, nothing recreated
    assert "h4" not in w.left.records()
    w.reconciler.run_cycle()  # the deletion propagates
    assert "s4" not in w.right.records()
    assert "h4" not in w.left.records()
    w.handler.handle(w.request("salesforce", [w.change("s4", "Notes", "later still")]))
    w.handler.process_pending()
    assert "h4" not in w.left.records()
    assert "s4" not in w.right.records()
    assert w.reconciler.run_cycle().total_writes == 0


def test_a_value_that_does_not_map_to_the_target_never_fails_its_batch(storage: Storage) -> None:
    from syncrecon import FieldMap, source_of_truth, value_map

    w = World(storage, inline=False)
    strict = FieldMap(
        left="stage",
        right="StageName",
        policy=source_of_truth("left"),
        transform=value_map({"open": "Prospecting", "won": "Closed Won"}, strict=True),
    )
    object.__setattr__(w.sync, "fields", (strict, *w.sync.fields[1:]))
    w.left.edit("h1", stage="platinum")
    w.right.edit("s2", Notes="call back")
    w.handler.handle(w.request("hubspot", [w.change("h1", "stage", "platinum")]))
    w.handler.handle(w.request("salesforce", [w.change("s2", "Notes", "call back")]))
    report = w.handler.process_pending()  # does not raise
    assert report.outcomes == {"applied": 1, "deferred": 1}
    assert w.left.get("h2").fields["notes"] == "call back"  # the other record's event landed
    assert w.right.get("s1").fields["StageName"] == "Prospecting"  # nothing unmappable written
    assert w.handler.process_pending().processed == 0  # and nothing is left to fail again
