"""The :class:`~syncrecon.storage.Storage` contract across the roles: one step is one
transaction, data stays data, what is read is a copy, naive times are UTC, threads are safe.

Every backend passes the same tests (the ``storage`` fixture).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from storage_helpers import (
    AT,
    HOSTILE,
    SYNC,
    TTL,
    busy_step,
    commit,
    cycle,
    item,
    link,
    prepare_for_failure,
    snapshot,
)

from syncrecon import Side, StorageError
from syncrecon.storage import Counter, CycleRecord, Discrepancy, Link, Status, Step, Storage

# -- one step, one transaction --------------------------------------------------------------------


def test_a_step_that_fails_late_changes_nothing(storage: Storage) -> None:
    # The cycle report is the last part applied; one unstorable value in it fails the step.
    item_id = prepare_for_failure(storage)
    before = snapshot(storage)
    later = AT + timedelta(hours=2)
    parts = busy_step(later, item_id)
    parts["cycle"] = CycleRecord(
        id="c-bad",
        sync=SYNC,
        started_at=later,
        finished_at=later,
        mode="full",
        dry_run=False,
        report={"oops": object()},
    )
    with pytest.raises((TypeError, StorageError)):
        commit(storage, at=later, links=[link("L2", "R2")], **parts)
    assert snapshot(storage) == before
    assert storage.get_links(SYNC, Side.LEFT, ["L2"]) == {}


def test_an_unstorable_counter_label_changes_nothing(storage: Storage) -> None:
    before = snapshot(storage)
    with pytest.raises((TypeError, StorageError)):
        commit(
            storage,
            links=[link("L1", "R1")],
            watermarks=[(SYNC, Side.LEFT, AT)],
            counters=[Counter(metric="m", labels={"rule": object()})],  # type: ignore[dict-item]
        )
    assert snapshot(storage) == before


def test_step_is_empty() -> None:
    assert Step(at=AT).is_empty()
    assert not Step(at=AT, counters=[Counter(metric="m")]).is_empty()
    assert not Step(at=AT, unlink=[(SYNC, "L1")]).is_empty()


# -- data stays data, values are copies -----------------------------------------------------------


@pytest.mark.parametrize("text", HOSTILE, ids=repr)
def test_keys_field_names_and_values_are_data(storage: Storage, text: str) -> None:
    sync = f"sync {text}"
    left, right = f"L {text}", f"R {text}"
    base = {text: text, f"{text} list": [text, {text: text}]}
    commit(
        storage,
        links=[Link(sync=sync, left_key=left, right_key=right, natural_key=text, base=base)],
    )
    commit(
        storage,
        new_items=[
            Discrepancy(
                sync=sync,
                field=text,
                status=Status.ESCALATED,
                detected_at=AT,
                left_key=left,
                right_key=right,
                left_value=text,
                right_value=[text],
                category=text,
                rule=text,
                explanation=text,
                note=text,
            )
        ],
        watermarks=[(sync, Side.LEFT, AT)],
        counters=[Counter(metric="m", labels={text: text})],
        cycle=CycleRecord(
            id=text,
            sync=sync,
            started_at=AT,
            finished_at=AT,
            mode=text,
            dry_run=False,
            report={text: text},
        ),
    )

    got = storage.get_links(sync, Side.LEFT, [left])[left]
    assert got.right_key == right
    assert got.base == base
    assert storage.get_links(sync, Side.RIGHT, [right])[right].left_key == left
    assert storage.links_by_natural_key(sync, [text])[text][0].left_key == left
    assert storage.count_links(sync) == 1
    (found,) = storage.list_items(sync=sync, category=text, field=text, key=right)
    assert (found.field, found.left_value, found.right_value, found.note) == (
        text,
        text,
        [text],
        text,
    )
    assert list(storage.active_items(sync)) == [(sync, left, right, text)]
    assert storage.get_sync_state(sync).watermarks == {Side.LEFT: AT}
    assert storage.counter_totals("m") == [({text: text}, 1)]
    (cycle,) = storage.list_cycles(sync=sync)
    assert (cycle.id, cycle.mode, cycle.report) == (text, text, {text: text})
    # And nothing was executed: the tables are all still there and still work.
    commit(storage, links=[link("L-after", "R-after")])
    assert storage.count_links(SYNC) == 1
    assert storage.count_links(sync) == 1


def test_returned_values_are_copies(storage: Storage) -> None:
    commit(
        storage,
        links=[link("L1", "R1", natural_key="n", base={"tags": ["a"]})],
        new_items=[item(left_value=["x"], right_value={"k": "v"})],
        watermarks=[(SYNC, Side.LEFT, AT)],
        cycle=cycle("c1", AT, {"found": [1]}),
    )
    got = storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"]
    got.base["tags"].append("mutated")
    got.base["new"] = 1  # type: ignore[index]
    storage.links_by_natural_key(SYNC, ["n"])["n"][0].base["tags"].append("again")
    (found,) = storage.list_items()
    found.left_value.append("mutated")
    assert storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"].base == {"tags": ["a"]}
    storage.active_items(SYNC)[(SYNC, "L1", "R1", "stage")].right_value["k"] = "mutated"
    storage.get_sync_state(SYNC).watermarks[Side.RIGHT] = AT  # type: ignore[index]
    storage.list_cycles()[0].report["found"].append(2)
    assert storage.list_items()[0].left_value == ["x"]
    assert storage.get_item(found.id or 0).right_value == {"k": "v"}
    assert storage.get_sync_state(SYNC).watermarks == {Side.LEFT: AT}
    assert storage.list_cycles()[0].report == {"found": [1]}


# -- naive datetimes mean UTC, whatever the host's time zone --------------------------------------


@pytest.fixture
def eastern_host(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if not hasattr(time, "tzset"):
        pytest.skip("needs time.tzset")
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.usefixtures("eastern_host")
def test_naive_datetimes_are_utc(storage: Storage) -> None:
    naive = datetime(2026, 1, 5, 12, 30)
    aware = naive.replace(tzinfo=UTC)
    commit(
        storage,
        at=naive,
        watermarks=[(SYNC, Side.LEFT, naive)],
        full_sweeps=[(SYNC, naive)],
        counters=[Counter(metric="m")],
    )
    state = storage.get_sync_state(SYNC)
    assert state.watermarks[Side.LEFT] == aware
    assert state.last_full_sweep == aware
    assert storage.counter_totals("m", since=aware, until=aware + timedelta(hours=1)) == [({}, 1)]
    assert storage.counter_totals("m", since=naive, until=naive + timedelta(hours=1)) == [({}, 1)]
    assert storage.acquire_lease("l", "w1", TTL, naive)
    assert not storage.acquire_lease("l", "w2", TTL, aware + TTL - timedelta(seconds=1))
    assert storage.acquire_lease("l", "w2", TTL, aware + TTL)


# -- threads --------------------------------------------------------------------------------------


def test_safe_to_call_from_several_threads(storage: Storage) -> None:
    def work(n: int) -> None:
        for i in range(25):
            commit(
                storage,
                links=[link(f"L{n}-{i}", f"R{n}-{i}")],
                new_items=[item("f", f"L{n}-{i}", f"R{n}-{i}")],
                counters=[Counter(metric="m")],
            )
            storage.get_links(SYNC, Side.LEFT, [f"L{n}-{i}"])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert storage.count_links(SYNC) == 100
    assert len(storage.active_items(SYNC)) == 100
    assert len({i.id for i in storage.list_items(limit=1000)}) == 100
    assert storage.counter_totals("m") == [({}, 100)]
