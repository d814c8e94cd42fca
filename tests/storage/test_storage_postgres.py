"""PostgreSQL-only behaviour: migrations, the host's pool, errors, many processes at once.

The storage contract itself runs on PostgreSQL through the ``storage`` fixture's ``postgres``
param (tests/conftest.py); these tests need a server too (``SYNCRECON_TEST_POSTGRES_URL``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import ConnectionPool

from syncrecon import SchemaVersionError, Side, StorageError
from syncrecon.storage import Counter as Count
from syncrecon.storage import Discrepancy, InboxEntry, ItemUpdate, Link, Status, Step
from syncrecon.storage.postgres import PostgresStorage, _migrations

pytestmark = pytest.mark.postgres

AT = datetime(2026, 1, 1, tzinfo=UTC)
SYNC = "deals"


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    """A fresh schema name, dropped after the test."""
    name = f"syncrecon_test_{uuid.uuid4().hex[:16]}"
    yield name
    drop_schema(postgres_url, name)


def test_postgres_records_its_schema_version(postgres_storage: PostgresStorage) -> None:
    assert postgres_storage.schema_version() == _migrations()[-1][0]
    postgres_storage.setup()  # idempotent
    assert postgres_storage.schema_version() == _migrations()[-1][0]


def test_postgres_refuses_a_newer_schema(postgres_url: str, schema: str) -> None:
    with PostgresStorage(postgres_url, schema=schema):
        pass
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {}.schema_version (version) VALUES (9999)").format(
                sql.Identifier(schema)
            )
        )
    store = PostgresStorage(postgres_url, schema=schema)
    with pytest.raises(SchemaVersionError, match="9999"):
        store.setup()
    store.close()


def test_postgres_setup_from_many_threads_at_once(postgres_url: str, schema: str) -> None:
    stores = [PostgresStorage(postgres_url, schema=schema, max_size=1) for _ in range(6)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def run(store: PostgresStorage) -> None:
        try:
            start.wait()
            store.setup()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert {s.schema_version() for s in stores} == {_migrations()[-1][0]}
    finally:
        for s in stores:
            s.close()


def test_postgres_uses_the_hosts_pool_and_leaves_it_open(postgres_url: str, schema: str) -> None:
    with ConnectionPool(postgres_url, min_size=1, max_size=2, open=True) as pool:
        store = PostgresStorage(pool=pool, schema=schema)
        store.setup()
        store.commit(Step(at=AT, links=[Link(sync=SYNC, left_key="l1", right_key="r1")]))
        store.close()
        assert not pool.closed
        assert PostgresStorage(pool=pool, schema=schema).count_links(SYNC) == 1


def test_postgres_needs_one_of_conninfo_and_pool(postgres_url: str) -> None:
    with pytest.raises(ValueError, match="either"):
        PostgresStorage()
    with (
        ConnectionPool(postgres_url, min_size=1, max_size=1, open=False) as pool,
        pytest.raises(ValueError, match="either"),
    ):
        PostgresStorage(postgres_url, pool=pool)


def test_postgres_keys_and_values_are_bound_never_spliced(
    postgres_storage: PostgresStorage,
) -> None:
    key = "l'); DROP TABLE links; --"
    base = {"name": 'O\'Brien \\ "quoted" %s {x}', "n": 1.5, "tags": ["a", None]}
    postgres_storage.commit(
        Step(at=AT, links=[Link(sync=SYNC, left_key=key, right_key="r%s", base=base)])
    )
    link = postgres_storage.get_links(SYNC, Side.LEFT, [key])[key]
    assert link.right_key == "r%s"
    assert dict(link.base) == base


def test_postgres_driver_errors_become_storage_errors(postgres_storage: PostgresStorage) -> None:
    # A second link to the same right key breaks the unique index: a driver error, translated.
    postgres_storage.commit(Step(at=AT, links=[Link(sync=SYNC, left_key="a", right_key="r")]))
    with pytest.raises(StorageError, match="PostgreSQL"):
        postgres_storage.commit(Step(at=AT, links=[Link(sync=SYNC, left_key="b", right_key="r")]))
    assert postgres_storage.count_links(SYNC) == 1  # the failed step changed nothing


def test_postgres_unreachable_server_is_a_storage_error() -> None:
    store = PostgresStorage(
        "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", max_size=1, timeout=1.0
    )
    with pytest.raises(StorageError):
        store.setup()
    store.close()


def test_concurrent_steps_sharing_rows_do_not_deadlock(postgres_storage: PostgresStorage) -> None:
    # Two threads commit steps that upsert the same counters and links in opposite orders:
    # the storage writes them in key order, so they wait for each other and never deadlock.
    names = ["a", "b", "c"]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(order: list[str]) -> None:
        try:
            start.wait()
            for n in range(40):
                postgres_storage.commit(
                    Step(
                        at=AT,
                        counters=[Count(metric=m) for m in order],
                        links=[
                            Link(sync=SYNC, left_key=f"l{m}", right_key=f"r{m}", base={"n": n})
                            for m in order
                        ],
                    )
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(o,)) for o in (names, names[::-1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {m: postgres_storage.counter_totals(m)[0][1] for m in names} == dict.fromkeys(names, 80)


def test_steps_settling_and_escalating_the_same_items_do_not_deadlock(
    postgres_storage: PostgresStorage,
) -> None:
    # A cycle re-sighting items (an upsert per item) and a worker or the queue updating the
    # same items by id, in opposite orders: found by the multi-worker chaos test on
    # PostgreSQL ("deadlock detected ... while updating tuple in relation items"). Every item
    # a step writes is locked by its key, all in one sorted pass, before any row is written.
    def sighting(field: str) -> Discrepancy:
        return Discrepancy(
            sync=SYNC,
            field=field,
            status=Status.ESCALATED,
            detected_at=AT,
            left_key="l1",
            right_key="r1",
            category="money",
        )

    fields = [f"f{i}" for i in range(6)]
    ids = postgres_storage.commit(Step(at=AT, new_items=[sighting(f) for f in fields]))
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def resight() -> None:
        try:
            start.wait()
            for _ in range(60):
                postgres_storage.commit(Step(at=AT, new_items=[sighting(f) for f in fields]))
        except BaseException as exc:
            errors.append(exc)

    def update() -> None:
        try:
            start.wait()
            for n in range(60):
                postgres_storage.commit(
                    Step(
                        at=AT,
                        item_updates=[
                            ItemUpdate(id=i, status=Status.ESCALATED, note=f"n{n}")
                            for i in reversed(ids)
                        ],
                    )
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=resight), threading.Thread(target=update)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {postgres_storage.get_item(i).times_seen for i in ids} == {61}


def test_two_processes_never_claim_the_same_record(
    postgres_storage: PostgresStorage, postgres_url: str, tmp_path: Path
) -> None:
    records = 60
    per_record = 4
    entries = [
        InboxEntry(
            source="hubspot",
            dedupe_key=f"e{r}-{n}",
            event={"n": n},
            received_at=AT + timedelta(seconds=n),
            record=f"deals:left:rec{r}",
        )
        for n in range(per_record)
        for r in range(records)
    ]
    ids = postgres_storage.enqueue_events(entries, [], AT)
    assert None not in ids
    worker = Path(__file__).with_name("postgres_claim_worker.py")
    outs = [tmp_path / f"w{i}.jsonl" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), postgres_url, postgres_storage.schema, f"w{i}", str(out)]
        )
        for i, out in enumerate(outs)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    claims = [json.loads(line) for out in outs for line in out.read_text().splitlines()]
    owner_of: dict[str, set[str]] = {}
    events = Counter[int]()
    for claim in claims:
        for event_id, record in claim["events"]:
            owner_of.setdefault(record, set()).add(claim["worker"])
            events[event_id] += 1
    # Every event claimed exactly once, every record by one worker only (all of a record's
    # events in one claim), and both workers did work.
    assert sorted(events) == sorted(i for i in ids if i is not None)
    assert set(events.values()) == {1}
    assert all(len(workers) == 1 for workers in owner_of.values()), owner_of
    per_claim = Counter(rec for c in claims for rec in {r for _, r in c["events"]})
    assert set(per_claim.values()) == {1}
    assert {w for ws in owner_of.values() for w in ws} == {"w0", "w1"}
