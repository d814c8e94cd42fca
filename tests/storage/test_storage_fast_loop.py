"""The :class:`~syncrecon.storage.FastLoopStore` contract: inbox, field times, outbox, echoes
and record claims.

Every backend passes the same tests (the ``storage`` fixture).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import attrs
import pytest
from storage_helpers import AT, HOSTILE, LATER, SYNC, commit, echo, item, link

from syncrecon import Retention, Side, Status, StorageError
from syncrecon.storage import (
    BatchReadStore,
    Counter,
    InboxEntry,
    OutboxEntry,
    OutboxUpdate,
    Step,
    Storage,
)

CLAIM_AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
CLAIM_LEASE = timedelta(seconds=45)


def _record_event(record: str, n: int) -> InboxEntry:
    return InboxEntry(
        source="crm",
        dedupe_key=f"{record}#{n}",
        event={"n": n},
        received_at=CLAIM_AT,
        record=record,
    )


# -- the inbox and field times --------------------------------------------------------------------


def test_a_redelivered_event_is_stored_once(storage: Storage) -> None:
    first, dup = _record_event("d:left:h1", 1), _record_event("d:left:h1", 1)
    ids = storage.enqueue_events([first, dup, _record_event("d:left:h1", 2)], [], CLAIM_AT)
    assert ids[0] is not None
    assert ids[1] is None
    assert ids[2] not in (None, ids[0])
    assert storage.enqueue_events([first], [Counter(metric="m")], CLAIM_AT) == [None]
    claimed = storage.claim_events("w", limit=10, now=CLAIM_AT, lease=CLAIM_LEASE)
    assert [(e.id, e.event) for e in claimed] == [(ids[0], {"n": 1}), (ids[2], {"n": 2})]
    assert storage.counter_totals("m") == [({}, 1)]


def test_one_call_stores_many_events_in_list_order_and_the_first_of_a_key(
    storage: Storage,
) -> None:
    # A group commit hands the storage many requests' events in one list (more than one
    # statement's worth on SQLite: the repeated key is in another chunk than its first).
    entries = [_record_event(f"d:left:h{i % 7}", i) for i in range(1100)]
    again = attrs.evolve(entries[3], event={"n": "a second copy"})  # same key, other body
    ids = storage.enqueue_events([*entries, again], [], CLAIM_AT)
    assert ids[-1] is None
    stored = ids[:-1]
    assert None not in stored
    assert stored == sorted(stored)  # the list's order is the inbox's
    claimed = storage.claim_events("w", limit=10, now=CLAIM_AT, lease=CLAIM_LEASE)
    assert {e.id: e.event for e in claimed}[stored[3]] == {"n": 3}


def test_done_events_are_claimed_no_more(storage: Storage) -> None:
    (event_id,) = storage.enqueue_events([_record_event("d:left:h1", 1)], [], CLAIM_AT)
    assert event_id is not None
    (claimed,) = storage.claim_events("w", limit=10, now=CLAIM_AT, lease=CLAIM_LEASE)
    assert claimed.id == event_id
    storage.commit(Step(at=CLAIM_AT, events_done=[(event_id, "applied", None)], claim_owner="w"))
    later = CLAIM_AT + 2 * CLAIM_LEASE
    assert storage.claim_events("w2", limit=10, now=later, lease=CLAIM_LEASE) == []


def test_field_times_never_move_backwards(storage: Storage) -> None:
    t1, t2 = AT, AT + timedelta(minutes=5)
    commit(storage, field_times=[(SYNC, "L1", "notes", t2), (SYNC, "L1", "stage", t1)])
    commit(storage, field_times=[(SYNC, "L1", "notes", t1), (SYNC, "L1", "stage", t2)])
    assert storage.get_field_times(SYNC, [("L1", "notes"), ("L1", "stage"), ("L2", "notes")]) == {
        ("L1", "notes"): t2,
        ("L1", "stage"): t2,
    }
    assert storage.get_field_times("other", [("L1", "notes")]) == {}


# -- the outbox -----------------------------------------------------------------------------------


def test_an_outbox_entry_is_leased_to_one_retrier_until_settled(storage: Storage) -> None:
    entry = OutboxEntry(
        sync=SYNC,
        side=Side.RIGHT,
        key="R1",
        left_key="L1",
        right_key="R1",
        fields={"Notes": "x"},
        next_at=CLAIM_AT,
    )
    commit(storage, outbox_add=[entry])
    early = CLAIM_AT - timedelta(seconds=1)
    assert storage.claim_outbox("w", limit=10, now=early, lease=CLAIM_LEASE) == []  # not due
    (got,) = storage.claim_outbox("w", limit=10, now=CLAIM_AT, lease=CLAIM_LEASE)
    assert (got.key, dict(got.fields), got.status) == ("R1", {"Notes": "x"}, "pending")
    assert storage.claim_outbox("w2", limit=10, now=CLAIM_AT, lease=CLAIM_LEASE) == []
    assert got.id is not None
    retry = CLAIM_AT + timedelta(seconds=10)
    commit(
        storage,
        outbox_update=[OutboxUpdate(id=got.id, status="pending", attempts=1, next_at=retry)],
    )
    (again,) = storage.claim_outbox("w2", limit=10, now=retry, lease=CLAIM_LEASE)  # lease ended
    assert (again.id, again.attempts) == (got.id, 1)
    commit(
        storage, outbox_update=[OutboxUpdate(id=got.id, status="done", attempts=2, next_at=retry)]
    )
    later = retry + 2 * CLAIM_LEASE
    assert storage.claim_outbox("w3", limit=10, now=later, lease=CLAIM_LEASE) == []


# -- the echo ledger ------------------------------------------------------------------------------


def test_an_echo_matches_its_own_value_until_it_expires(storage: Storage) -> None:
    commit(storage, echoes=[echo(source_time=AT - timedelta(hours=1)), echo("R2")])
    found = storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT)
    assert found is not None
    assert storage.find_echo(SYNC, Side.RIGHT, "R2", "notes", "f1", AT) not in (None, found)
    for other in (
        (SYNC, Side.LEFT, "R1", "notes", "f1"),
        (SYNC, Side.RIGHT, "R3", "notes", "f1"),
        (SYNC, Side.RIGHT, "R1", "stage", "f1"),
        (SYNC, Side.RIGHT, "R1", "notes", "f2"),
        ("other", Side.RIGHT, "R1", "notes", "f1"),
    ):
        assert storage.find_echo(*other, AT) is None, other
    assert storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", LATER) is None


def test_echo_times_of_a_batch_of_records(storage: Storage) -> None:
    t1, t2, t3 = (AT - timedelta(minutes=m) for m in (30, 20, 10))
    commit(
        storage,
        echoes=[
            echo("R1", "notes", "a", source_time=t1),
            echo("R1", "notes", "a", source_time=t3),  # the same value again: the latest counts
            echo("R1", "notes", "a", source_time=t2),
            echo("R1", "notes", "b", source_time=t1),  # another value of the same field
            echo("R1", "stage", "c"),  # no source time: an echo, but it times nothing
            echo("R2", "notes", "d", source_time=t1, expires_at=AT),  # expired at AT
            echo("R3", "notes", "e", source_time=t2),  # not asked for
            echo("L1", "notes", "f", side=Side.LEFT, source_time=t2),
            echo("R1", "notes", "g", sync="other", source_time=t2),
        ],
    )
    found = storage.echo_times(
        SYNC, [(Side.RIGHT, "R1"), (Side.RIGHT, "R2"), (Side.LEFT, "L1"), (Side.LEFT, "R1")], AT
    )
    assert found == {
        (Side.RIGHT, "R1", "notes", "a"): t3,
        (Side.RIGHT, "R1", "notes", "b"): t1,
        (Side.LEFT, "L1", "notes", "f"): t2,
    }
    assert storage.echo_times(SYNC, [], AT) == {}
    assert storage.echo_times(SYNC, [(Side.RIGHT, "R1")], LATER) == {}  # all expired


@pytest.mark.parametrize("text", HOSTILE)
def test_echo_keys_fields_and_fingerprints_are_data(storage: Storage, text: str) -> None:
    commit(storage, echoes=[echo(text, text, text, source_time=AT)])
    assert storage.find_echo(SYNC, Side.RIGHT, text, text, text, AT) is not None
    assert storage.echo_times(SYNC, [(Side.RIGHT, text)], AT) == {
        (Side.RIGHT, text, text, text): AT
    }


def test_echo_times_of_many_records_in_one_call(storage: Storage) -> None:
    keys = [f"R{i}" for i in range(1_200)]
    commit(
        storage, echoes=[echo(k, source_time=AT - timedelta(seconds=i)) for i, k in enumerate(keys)]
    )
    found = storage.echo_times(SYNC, [(Side.RIGHT, k) for k in keys], AT)
    assert len(found) == len(keys)
    assert found[(Side.RIGHT, "R1199", "notes", "f1")] == AT - timedelta(seconds=1199)


def test_a_spent_echo_matches_no_webhook_but_keeps_its_time_until_it_expires(
    storage: Storage,
) -> None:
    commit(storage, echoes=[echo("R1", source_time=AT), echo("R1"), echo("R2", source_time=AT)])
    timed = storage.find_echo(SYNC, Side.RIGHT, "R2", "notes", "f1", AT)
    first = storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT)
    assert timed is not None
    assert first is not None
    commit(storage, drop_echoes=[timed, first])
    # One entry recognizes one webhook: R2's is spent, R1 has one left (the untimed one).
    assert storage.find_echo(SYNC, Side.RIGHT, "R2", "notes", "f1", AT) is None
    second = storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT)
    assert second not in (None, first)
    assert second is not None
    commit(storage, drop_echoes=[second])
    assert storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT) is None
    # The spent entries still time their values, until they expire.
    wanted = [(Side.RIGHT, "R1"), (Side.RIGHT, "R2")]
    assert storage.echo_times(SYNC, wanted, AT) == {
        (Side.RIGHT, "R1", "notes", "f1"): AT,
        (Side.RIGHT, "R2", "notes", "f1"): AT,
    }
    assert storage.echo_times(SYNC, wanted, LATER) == {}
    # Pruned like every entry, by expiry: the two timed ones are left (the untimed one went
    # when it was spent).
    assert dict(storage.prune(Retention(), LATER + timedelta(seconds=1)))["echoes"] == 2
    assert storage.echo_times(SYNC, wanted, AT) == {}


def test_a_failed_step_spends_no_echo(storage: Storage) -> None:
    commit(storage, echoes=[echo(source_time=AT)], links=[link("L1", "R1")])
    found = storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT)
    assert found is not None
    with pytest.raises(StorageError):
        commit(storage, drop_echoes=[found], links=[link("L2", "R1")])  # R1 is linked to L1
    assert storage.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT) == found


# -- reads of a whole batch (the optional BatchReadStore role) ------------------------------------


def _batch_reads(storage: Storage) -> BatchReadStore:
    assert isinstance(storage, BatchReadStore)  # every bundled backend has the role
    return storage


def test_find_echoes_answers_find_echo_for_a_batch_of_records(storage: Storage) -> None:
    commit(
        storage,
        echoes=[
            echo("R1", "notes", "a"),
            echo("R1", "notes", "a", source_time=AT),  # the same value again: the oldest wins
            echo("R1", "notes", "b"),
            echo("R1", "stage", "a"),
            echo("R2", "notes", "c", source_time=AT),  # spent below
            echo("R2", "notes", "d", expires_at=AT),  # expired at AT
            echo("R3", "notes", "e"),  # not asked for
            echo("R1", "notes", "f", side=Side.LEFT),
            echo("R1", "notes", "g", sync="other"),
        ],
    )
    spent = storage.find_echo(SYNC, Side.RIGHT, "R2", "notes", "c", AT)
    assert spent is not None
    commit(storage, drop_echoes=[spent])
    found = _batch_reads(storage).find_echoes(SYNC, Side.RIGHT, ["R1", "R2", "R9"], AT)
    assert set(found) == {("R1", "notes", "a"), ("R1", "notes", "b"), ("R1", "stage", "a")}
    for (key, field, fp), echo_id in found.items():
        assert storage.find_echo(SYNC, Side.RIGHT, key, field, fp, AT) == echo_id
    # Spending the oldest entry of a value leaves the next one, as find_echo does.
    commit(storage, drop_echoes=[found[("R1", "notes", "a")]])
    again = _batch_reads(storage).find_echoes(SYNC, Side.RIGHT, ["R1"], AT)
    assert again[("R1", "notes", "a")] not in (None, found[("R1", "notes", "a")])
    assert again[("R1", "notes", "a")] == storage.find_echo(
        SYNC, Side.RIGHT, "R1", "notes", "a", AT
    )
    assert _batch_reads(storage).find_echoes(SYNC, Side.LEFT, ["R1"], AT) == {
        ("R1", "notes", "f"): storage.find_echo(SYNC, Side.LEFT, "R1", "notes", "f", AT)
    }
    assert _batch_reads(storage).find_echoes(SYNC, Side.RIGHT, [], AT) == {}
    assert _batch_reads(storage).find_echoes(SYNC, Side.RIGHT, ["R1"], LATER) == {}  # expired


@pytest.mark.parametrize("text", HOSTILE)
def test_find_echoes_keys_fields_and_fingerprints_are_data(storage: Storage, text: str) -> None:
    commit(storage, echoes=[echo(text, text, text)])
    found = _batch_reads(storage).find_echoes(SYNC, Side.RIGHT, [text], AT)
    assert found == {(text, text, text): storage.find_echo(SYNC, Side.RIGHT, text, text, text, AT)}


def test_find_echoes_of_many_records_in_one_call(storage: Storage) -> None:
    keys = [f"R{i}" for i in range(1_200)]
    commit(storage, echoes=[echo(k) for k in keys])
    found = _batch_reads(storage).find_echoes(SYNC, Side.RIGHT, keys, AT)
    assert set(found) == {(k, "notes", "f1") for k in keys}
    assert len(set(found.values())) == len(keys)


def test_active_items_of_some_records(storage: Storage) -> None:
    commit(
        storage,
        new_items=[
            item("stage", "L1", "R1"),
            item("amount", "L1", "R1", status=Status.ESCALATED, category="deal_value"),
            item("stage", "L2", "R2", status=Status.ESCALATED),
            item("notes", "L2", "R2", status=Status.RESOLVED),  # closed
            item("stage", "L3", "R3"),  # not asked for
            item("*", None, "R4"),  # no left key
            item("stage", "L1", "R1", sync="other"),
        ],
    )
    every = storage.active_items(SYNC)
    found = _batch_reads(storage).active_items_of(SYNC, ["L1", "L2", "L9"])
    assert found == {k: i for k, i in every.items() if k[1] in ("L1", "L2")}
    assert sorted(found) == [
        (SYNC, "L1", "R1", "amount"),
        (SYNC, "L1", "R1", "stage"),
        (SYNC, "L2", "R2", "stage"),
    ]
    assert _batch_reads(storage).active_items_of(SYNC, []) == {}
    many = [f"L{i}" for i in range(1_200)]
    assert set(_batch_reads(storage).active_items_of(SYNC, many)) == set(found) | {
        (SYNC, "L3", "R3", "stage")
    }


@pytest.mark.parametrize("text", HOSTILE)
def test_active_items_of_keys_are_data(storage: Storage, text: str) -> None:
    commit(storage, new_items=[item(text or "f", text, "R1")])
    found = _batch_reads(storage).active_items_of(SYNC, [text])
    assert [(i.left_key or "", i.field) for i in found.values()] == [(text, text or "f")]


# -- record claims shared by cycles and fast-loop workers -----------------------------------------


def test_a_cycle_claims_only_records_no_worker_holds(storage: Storage) -> None:
    storage.enqueue_events(
        [_record_event("d:left:h1", 1), _record_event("d:left:h2", 1)], [], CLAIM_AT
    )
    held = storage.claim_events("worker", limit=1, now=CLAIM_AT, lease=CLAIM_LEASE)
    assert {e.record for e in held} == {"d:left:h1"}
    granted = storage.claim_records(
        "cycle", ["d:left:h1", "d:left:h2", "d:right:s1"], now=CLAIM_AT, lease=CLAIM_LEASE
    )
    assert granted == {"d:left:h2", "d:right:s1"}  # h1 is the worker's until it commits
    # Now the worker gets nothing of the cycle's records, and another cycle nothing at all.
    assert storage.claim_events("worker", limit=10, now=CLAIM_AT, lease=CLAIM_LEASE) == held
    assert storage.claim_records("other", ["d:left:h2"], now=CLAIM_AT, lease=CLAIM_LEASE) == set()
    # Released, the record's events go to a worker again.
    storage.release_records("cycle", ["d:left:h2", "d:right:s1"])
    later = storage.claim_events("worker2", limit=10, now=CLAIM_AT, lease=CLAIM_LEASE)
    assert {e.record for e in later} == {"d:left:h2"}


def test_a_record_claim_expires_and_is_only_released_by_its_owner(storage: Storage) -> None:
    assert storage.claim_records("a", ["r1"], now=CLAIM_AT, lease=CLAIM_LEASE) == {"r1"}
    storage.release_records("b", ["r1"])  # not b's to release
    assert storage.claim_records("b", ["r1"], now=CLAIM_AT, lease=CLAIM_LEASE) == set()
    assert storage.claim_records("a", ["r1"], now=CLAIM_AT, lease=CLAIM_LEASE) == {"r1"}  # renew
    after = CLAIM_AT + CLAIM_LEASE + timedelta(seconds=1)
    assert storage.claim_records("b", ["r1"], now=after, lease=CLAIM_LEASE) == {"r1"}
    assert storage.claim_records("a", [], now=after, lease=CLAIM_LEASE) == set()


def test_many_records_claimed_in_one_call(storage: Storage) -> None:
    records = [f"d:left:k{i}" for i in range(1_200)]
    assert storage.claim_records("c", records, now=CLAIM_AT, lease=CLAIM_LEASE) == set(records)
    storage.release_records("c", records)
    assert storage.claim_records("d", records[:3], now=CLAIM_AT, lease=CLAIM_LEASE) == set(
        records[:3]
    )
