"""What only the SQLite backend does: schema versions, migrations, WAL, reopening, error mapping."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from storage_helpers import AT, RICH_BASE, SYNC, TTL, commit, cycle, item, link

from syncrecon import SchemaVersionError, Side, StorageError
from syncrecon.storage import Counter, Status
from syncrecon.storage.sqlite import SQLiteStorage


def _user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_sqlite_records_its_schema_version(
    sqlite_storage: SQLiteStorage, sqlite_path: Path
) -> None:
    from syncrecon.storage.sqlite import _migrations

    latest = _migrations()[-1][0]
    assert latest >= 1
    assert sqlite_storage.schema_version() == latest
    assert _user_version(sqlite_path) == latest


def test_sqlite_reopening_keeps_everything(
    sqlite_storage: SQLiteStorage, sqlite_path: Path
) -> None:
    (i,) = commit(
        sqlite_storage,
        links=[link("L1", "R1", natural_key="n", base=RICH_BASE)],
        new_items=[item(status=Status.ESCALATED, category="amount")],
        watermarks=[(SYNC, Side.RIGHT, AT)],
        cycle=cycle("c1", AT, {"found": 1}),
        counters=[Counter(metric="m", amount=3)],
    )
    assert sqlite_storage.acquire_lease("l", "w1", TTL, AT)
    sqlite_storage.close()

    again = SQLiteStorage(sqlite_path)
    try:
        again.setup()
        assert again.get_links(SYNC, Side.RIGHT, ["R1"])["R1"].base == RICH_BASE
        assert again.get_item(i).category == "amount"
        assert list(again.active_items(SYNC)) == [(SYNC, "L1", "R1", "stage")]
        assert again.get_sync_state(SYNC).watermarks == {Side.RIGHT: AT}
        assert [c.id for c in again.list_cycles()] == ["c1"]
        assert again.counter_totals("m") == [({}, 3)]
        assert not again.acquire_lease("l", "w2", TTL, AT)
    finally:
        again.close()
    # The closed storage reopens its connection on next use.
    assert sqlite_storage.count_links(SYNC) == 1


def test_sqlite_two_storages_share_one_file(
    sqlite_storage: SQLiteStorage, sqlite_path: Path
) -> None:
    other = SQLiteStorage(sqlite_path)
    try:
        commit(other, links=[link("L1", "R1")])
        assert sqlite_storage.count_links(SYNC) == 1
        assert other.acquire_lease("l", "w1", TTL, AT)
        assert not sqlite_storage.acquire_lease("l", "w2", TTL, AT)
    finally:
        other.close()


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    store = SQLiteStorage(path)
    try:
        with pytest.raises(SchemaVersionError, match="999"):
            store.setup()
        with pytest.raises(SchemaVersionError):
            store.count_links(SYNC)  # every use checks, not only setup()
    finally:
        store.close()
    assert issubclass(SchemaVersionError, StorageError)
    assert _user_version(path) == 999  # and nothing was changed


def test_sqlite_uses_wal(sqlite_storage: SQLiteStorage, sqlite_path: Path) -> None:
    commit(sqlite_storage, links=[link("L1", "R1")])
    conn = sqlite3.connect(sqlite_path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_sqlite_errors_become_storage_errors(sqlite_storage: SQLiteStorage) -> None:
    commit(sqlite_storage, links=[link("L1", "R1")])
    with pytest.raises(StorageError) as caught:
        commit(sqlite_storage, links=[link("L2", "R1")])
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)


def test_sqlite_unopenable_file_is_a_storage_error(tmp_path: Path) -> None:
    store = SQLiteStorage(tmp_path / "missing-dir" / "db.sqlite")
    with pytest.raises(StorageError) as caught:
        store.setup()
    assert isinstance(caught.value.__cause__, sqlite3.Error)
    store.close()


def test_sqlite_rejects_unknown_synchronous_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SQLiteStorage(tmp_path / "x.sqlite", synchronous="sometimes")


def test_sqlite_migrates_an_echo_ledger_without_source_times(sqlite_path: Path) -> None:
    from syncrecon.storage.sqlite import _migrations, _statements

    conn = sqlite3.connect(sqlite_path)
    for version, script in _migrations():
        if version <= 8:
            for statement in _statements(script):
                conn.execute(statement)
    conn.execute(
        "INSERT INTO echoes (sync, side, key, field, fingerprint, expires_at)"
        " VALUES ('deals', 'right', 'R1', 'notes', 'f1', '2026-01-05T10:30:00.000000Z')"
    )
    conn.execute("PRAGMA user_version = 8")
    conn.commit()
    conn.close()
    store = SQLiteStorage(sqlite_path)
    try:
        store.setup()
        assert store.schema_version() >= 9
        old = store.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT)
        assert old is not None  # still an echo
        assert store.echo_times(SYNC, [(Side.RIGHT, "R1")], AT) == {}  # but it times nothing
        commit(store, drop_echoes=[old])
        assert store.find_echo(SYNC, Side.RIGHT, "R1", "notes", "f1", AT) is None
    finally:
        store.close()


@pytest.mark.parametrize("side", [Side.LEFT, Side.RIGHT])
def test_link_marks_read_a_covering_index_never_the_links_rows(
    sqlite_storage: SQLiteStorage, side: Side
) -> None:
    # A cycle reads the marks of every listed record: the lookup must not read the link's row
    # (it holds the base, every mapped value), only an index holding the marks.
    commit(sqlite_storage, links=[link(f"L{i}", f"R{i}") for i in range(50)])
    statements: list[str] = []
    with sqlite_storage._read() as db:
        db.set_trace_callback(statements.append)
        try:
            keys = [f"L{i}" if side is Side.LEFT else f"R{i}" for i in range(3)]
            assert len(sqlite_storage.link_marks(SYNC, side, keys)) == 3
        finally:
            db.set_trace_callback(None)
        query = next(s for s in statements if "FROM links" in s)
        plan = " ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {query}"))
    expected = "links_left_marks" if side is Side.LEFT else "links_right_marks"
    assert f"USING COVERING INDEX {expected}" in plan, plan
