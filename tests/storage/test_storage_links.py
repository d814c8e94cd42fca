"""The :class:`~syncrecon.storage.LinkStore` contract: links, bases, unlinks, sync state.

Every backend passes the same tests (the ``storage`` fixture).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from storage_helpers import (
    AT,
    RICH_BASE,
    SYNC,
    busy_step,
    commit,
    link,
    prepare_for_failure,
    snapshot,
)

from syncrecon import Side, StorageError
from syncrecon.storage import BaseUpdate, Status, Storage, SyncState

# -- links ----------------------------------------------------------------------------------------


def test_links_round_trip(storage: Storage) -> None:
    lk = link("L1", "R1", natural_key="ada@example.com", base=RICH_BASE)
    commit(storage, links=[lk, link("L2", "R2")])

    by_left = storage.get_links(SYNC, Side.LEFT, ["L1", "nope"])
    assert list(by_left) == ["L1"]
    got = by_left["L1"]
    assert (got.sync, got.left_key, got.right_key) == (SYNC, "L1", "R1")
    assert got.natural_key == "ada@example.com"
    assert got.base == RICH_BASE
    for name, value in RICH_BASE.items():
        assert type(got.base[name]) is type(value), name
    assert got.created_at == AT

    by_right = storage.get_links(SYNC, Side.RIGHT, ["R1", "R2", "L1"])
    assert set(by_right) == {"R1", "R2"}
    assert by_right["R1"] == got
    assert storage.get_links(SYNC, "right", ["R2"])["R2"].left_key == "L2"  # type: ignore[arg-type]
    assert storage.get_links(SYNC, Side.LEFT, []) == {}
    assert storage.count_links(SYNC) == 2
    assert storage.count_links("other") == 0
    assert storage.get_links("other", Side.LEFT, ["L1"]) == {}


def test_many_keys_in_one_lookup(storage: Storage) -> None:
    links = [link(f"L{i}", f"R{i}", natural_key=f"n{i % 7}") for i in range(1200)]
    commit(storage, links=links)
    keys = [f"R{i}" for i in range(0, 1300, 1)]
    found = storage.get_links(SYNC, Side.RIGHT, keys)
    assert len(found) == 1200
    assert found["R1199"].left_key == "L1199"
    by_nat = storage.links_by_natural_key(SYNC, [f"n{i}" for i in range(7)])
    assert sum(len(v) for v in by_nat.values()) == 1200


def test_links_by_natural_key(storage: Storage) -> None:
    commit(
        storage,
        links=[
            link("L1", "R1", natural_key="ada@example.com"),
            link("L2", "R2", natural_key="ada@example.com"),
            link("L3", "R3", natural_key="bob@example.com"),
            link("L4", "R4"),
            link("L5", "R5", natural_key="ada@example.com", sync="other"),
        ],
    )
    found = storage.links_by_natural_key(SYNC, ["ada@example.com", "eve@example.com"])
    assert set(found) == {"ada@example.com"}
    assert sorted(lk.left_key for lk in found["ada@example.com"]) == ["L1", "L2"]
    assert storage.links_by_natural_key(SYNC, []) == {}
    assert [
        lk.left_key
        for lk in storage.links_by_natural_key("other", ["ada@example.com"])["ada@example.com"]
    ] == ["L5"]


def test_relinking_keeps_created_at_and_frees_the_old_right_key(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1", base={"a": 1})])
    later = AT + timedelta(days=1)
    commit(storage, at=later, links=[link("L1", "R9", base={"a": 2})])
    got = storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"]
    assert (got.right_key, got.base, got.created_at) == ("R9", {"a": 2}, AT)
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"]) == {}
    commit(storage, at=later, links=[link("L2", "R1")])  # R1 is free again
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"])["R1"].left_key == "L2"
    assert storage.count_links(SYNC) == 2


def test_committing_the_same_link_twice_is_fine(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1")])
    commit(storage, links=[link("L1", "R1")])
    assert storage.count_links(SYNC) == 1


def test_an_explicit_created_at_is_kept(storage: Storage) -> None:
    when = datetime(2025, 6, 1, tzinfo=UTC)
    commit(storage, links=[link("L1", "R1", created_at=when)])
    assert storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"].created_at == when


def test_the_same_right_key_in_another_sync_is_another_record(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1"), link("L2", "R1", sync="other")])
    assert storage.get_links("other", Side.RIGHT, ["R1"])["R1"].left_key == "L2"
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"])["R1"].left_key == "L1"


def test_a_right_key_links_to_one_left_key_only(storage: Storage) -> None:
    item_id = prepare_for_failure(storage)
    before = snapshot(storage)
    later = AT + timedelta(hours=2)

    with pytest.raises(StorageError):
        commit(
            storage,
            at=later,
            links=[link("L2", "R2"), link("L3", "R1")],  # R1 already belongs to L1
            **busy_step(later, item_id),
        )

    assert snapshot(storage) == before
    assert storage.get_links(SYNC, Side.LEFT, ["L2", "L3"]) == {}
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"])["R1"].left_key == "L1"
    assert storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"].base == {"a": 1, "stage": "won"}
    assert storage.get_links(SYNC, Side.LEFT, ["L7"])["L7"].right_key == "R7"
    assert storage.get_item(item_id).status is Status.OPEN
    # The storage still works after the failed step.
    commit(storage, at=later, links=[link("L2", "R2")])
    assert storage.count_links(SYNC) == 3


def test_two_left_keys_for_one_right_key_in_one_step_fail(storage: Storage) -> None:
    with pytest.raises(StorageError):
        commit(storage, links=[link("L1", "R1"), link("L2", "R1")])
    assert storage.count_links(SYNC) == 0
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"]) == {}


# -- bases ----------------------------------------------------------------------------------------


def test_base_updates_merge_per_field(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1", base={"a": 1, "b": [1], "c": "keep"})])
    commit(
        storage,
        bases=[BaseUpdate(sync=SYNC, left_key="L1", values={"b": [2, 3], "d": date(2026, 2, 2)})],
    )
    got = storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"]
    assert got.base == {"a": 1, "b": [2, 3], "c": "keep", "d": date(2026, 2, 2)}


def test_base_drop(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1", base={"a": 1, "b": 2, "c": 3})])
    commit(
        storage,
        bases=[
            BaseUpdate(sync=SYNC, left_key="L1", drop=("a", "never-synced")),
            BaseUpdate(sync=SYNC, left_key="L1", values={"b": 20, "c": 30}, drop=("c",)),
        ],
    )
    assert storage.get_links(SYNC, Side.LEFT, ["L1"])["L1"].base == {"b": 20}


def test_base_update_of_an_unlinked_record_is_ignored(storage: Storage) -> None:
    commit(storage, bases=[BaseUpdate(sync=SYNC, left_key="ghost", values={"a": 1})])
    assert storage.count_links(SYNC) == 0
    assert storage.get_links(SYNC, Side.LEFT, ["ghost"]) == {}


def test_bases_of_other_links_are_untouched(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1", base={"a": 1}), link("L2", "R2", base={"a": 1})])
    commit(storage, bases=[BaseUpdate(sync=SYNC, left_key="L1", values={"a": 2})])
    links = storage.get_links(SYNC, Side.LEFT, ["L1", "L2"])
    assert links["L1"].base == {"a": 2}
    assert links["L2"].base == {"a": 1}


# -- unlink ---------------------------------------------------------------------------------------


def test_unlink(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1", natural_key="n"), link("L2", "R2")])
    commit(storage, unlink=[(SYNC, "L1"), (SYNC, "unknown"), ("other", "L2")])
    assert storage.count_links(SYNC) == 1
    assert storage.get_links(SYNC, Side.LEFT, ["L1"]) == {}
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"]) == {}
    assert storage.links_by_natural_key(SYNC, ["n"]) == {}
    assert storage.get_links(SYNC, Side.LEFT, ["L2"])["L2"].right_key == "R2"
    commit(storage, links=[link("L3", "R1")])  # the right key is free again
    assert storage.get_links(SYNC, Side.RIGHT, ["R1"])["R1"].left_key == "L3"


def test_unlink_then_base_update_in_one_step_keeps_no_base(storage: Storage) -> None:
    commit(storage, links=[link("L1", "R1", base={"a": 1})])
    commit(
        storage,
        unlink=[(SYNC, "L1")],
        bases=[BaseUpdate(sync=SYNC, left_key="L1", values={"a": 2})],
    )
    assert storage.count_links(SYNC) == 0


# -- watermarks and sweeps ------------------------------------------------------------------------


def test_sync_state(storage: Storage) -> None:
    assert storage.get_sync_state(SYNC) == SyncState()
    t1, t2, t3 = AT, AT + timedelta(minutes=5), AT + timedelta(minutes=9)
    commit(storage, watermarks=[(SYNC, Side.LEFT, t1)])
    assert storage.get_sync_state(SYNC).watermarks == {Side.LEFT: t1}
    assert storage.get_sync_state(SYNC).last_full_sweep is None
    commit(storage, watermarks=[(SYNC, Side.RIGHT, t2)], full_sweeps=[(SYNC, t1)])
    commit(storage, watermarks=[(SYNC, "left", t3)])  # a plain string names a side too
    state = storage.get_sync_state(SYNC)
    assert state.watermarks == {Side.LEFT: t3, Side.RIGHT: t2}
    assert state.last_full_sweep == t1
    commit(storage, full_sweeps=[(SYNC, t3)])
    assert storage.get_sync_state(SYNC).last_full_sweep == t3
    assert storage.get_sync_state(SYNC).watermarks == {Side.LEFT: t3, Side.RIGHT: t2}
    assert storage.get_sync_state("other") == SyncState()


def test_sync_state_only_a_full_sweep(storage: Storage) -> None:
    commit(storage, full_sweeps=[(SYNC, AT)])
    assert storage.get_sync_state(SYNC) == SyncState(last_full_sweep=AT)


def test_watermarks_keep_microseconds_and_instants(storage: Storage) -> None:
    from datetime import timezone

    mark = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    commit(storage, watermarks=[(SYNC, Side.LEFT, mark)])
    got = storage.get_sync_state(SYNC).watermarks[Side.LEFT]
    assert got == mark
    assert got.utcoffset() == timedelta(0)
