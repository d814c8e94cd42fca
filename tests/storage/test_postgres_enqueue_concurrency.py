"""PostgreSQL: two connections enqueueing overlapping inbox keys at once never deadlock.

``enqueue_events`` stores a list in one ``INSERT ... ON CONFLICT DO NOTHING``, which takes the
unique index's locks in list order; two lists sharing keys in opposite orders used to wait on
each other in a circle (``deadlock detected``). The keys of a call are now locked in one
sorted pass first, so every such pair of calls waits in the same order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from syncrecon.storage import InboxEntry
from syncrecon.storage.postgres import PostgresStorage

pytestmark = pytest.mark.postgres

AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
KEYS = 1000  # the overlap: every key is in both lists
ROUNDS = 30
COPY_AFTER, COPY_OF = 50, 10  # each list repeats one key with another body: the first stays


def _entries(rnd: int, who: str, order: list[int]) -> list[InboxEntry]:
    entries = [
        InboxEntry(
            source="crm", dedupe_key=f"r{rnd}:k{i}", event={"by": who, "n": i}, received_at=AT
        )
        for i in order
    ]
    copy = InboxEntry(
        source="crm",
        dedupe_key=f"r{rnd}:k{order[COPY_OF]}",
        event={"by": who, "copy": True},
        received_at=AT,
    )
    entries.insert(COPY_AFTER, copy)
    return entries


@pytest.fixture
def two_stores(
    postgres_storage: PostgresStorage, postgres_url: str
) -> Iterator[list[PostgresStorage]]:
    """Two more storages on the fixture's schema, one connection each: two processes."""
    stores = [
        PostgresStorage(postgres_url, schema=postgres_storage.schema, min_size=1, max_size=1)
        for _ in range(2)
    ]
    for store in stores:
        store.setup()
    try:
        yield stores
    finally:
        for store in stores:
            store.close()


def test_overlapping_enqueues_in_opposite_orders_do_not_deadlock(
    two_stores: list[PostgresStorage], postgres_url: str
) -> None:
    forward = list(range(KEYS))
    plans = {"a": forward, "b": forward[::-1]}
    lists = {who: [_entries(r, who, order) for r in range(ROUNDS)] for who, order in plans.items()}
    ids: dict[str, list[list[int | None]]] = {"a": [], "b": []}
    failures: list[tuple[int, str, BaseException]] = []
    start = threading.Barrier(2, timeout=120)

    def run(who: str, store: PostgresStorage) -> None:
        for rnd in range(ROUNDS):
            start.wait()  # both statements run at the same time
            try:
                ids[who].append(store.enqueue_events(lists[who][rnd], [], AT))
            except Exception as exc:
                failures.append((rnd, who, exc))
                ids[who].append([None] * len(lists[who][rnd]))

    threads = [
        threading.Thread(target=run, args=(who, store))
        for who, store in zip(plans, two_stores, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed_rounds = sorted({rnd for rnd, _, _ in failures})
    assert failures == [], f"{len(failed_rounds)} of {ROUNDS} rounds failed: {failures[:3]}"

    schema = two_stores[0].schema
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id, dedupe_key, event FROM {}.inbox WHERE source = 'crm'").format(
                sql.Identifier(schema)
            )
        ).fetchall()
    stored = {key: (row_id, json.loads(event)) for row_id, key, event in rows}
    assert len(rows) == len(stored) == ROUNDS * KEYS  # every key exactly once

    for rnd in range(ROUNDS):
        by_key: dict[str, list[tuple[str, int]]] = {}
        for who in plans:
            got = ids[who][rnd]
            mine = [i for i in got if i is not None]
            assert mine == sorted(mine)  # the list's order is the inbox's
            assert got[COPY_AFTER] is None  # the repeated key: its first entry is the one stored
            for entry, row_id in zip(lists[who][rnd], got, strict=True):
                if row_id is not None:
                    by_key.setdefault(entry.dedupe_key, []).append((who, row_id))
        for i in range(KEYS):
            key = f"r{rnd}:k{i}"
            ((who, row_id),) = by_key[key]  # one of the two calls stored it, once
            assert stored[key] == (row_id, {"by": who, "n": i})


def test_one_key_calls_skip_the_lock_and_still_do_not_deadlock_with_lists(
    two_stores: list[PostgresStorage], postgres_url: str
) -> None:
    # A call of one key takes no advisory lock (it waits for at most one other transaction and
    # holds nothing that one could need): one-key calls racing a list over the same keys, in
    # the opposite order, neither fail nor store a key twice.
    keys, rounds = 300, 6
    failures: list[BaseException] = []
    start = threading.Barrier(2, timeout=120)

    def lists(store: PostgresStorage) -> None:
        for rnd in range(rounds):
            start.wait()
            try:
                store.enqueue_events(_entries(rnd, "a", list(range(keys))), [], AT)
            except Exception as exc:
                failures.append(exc)

    def singles(store: PostgresStorage) -> None:
        for rnd in range(rounds):
            entries = _entries(rnd, "b", list(range(keys))[::-1])
            start.wait()
            for entry in entries:
                try:
                    store.enqueue_events([entry], [], AT)
                except Exception as exc:
                    failures.append(exc)

    threads = [
        threading.Thread(target=lists, args=(two_stores[0],)),
        threading.Thread(target=singles, args=(two_stores[1],)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    with psycopg.connect(postgres_url) as conn:
        (count, distinct), *_ = conn.execute(
            sql.SQL("SELECT count(*), count(DISTINCT dedupe_key) FROM {}.inbox").format(
                sql.Identifier(two_stores[0].schema)
            )
        ).fetchall()
    assert count == distinct == keys * rounds
