"""The :class:`~syncrecon.storage.ShardStore` contract: sharded cycles' plans and results.

Every backend passes the same tests (the ``storage`` fixture).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from storage_helpers import AT, SYNC, TTL

from syncrecon import LeaseLostError, StorageError
from syncrecon.storage import ShardPlan, ShardResult, ShardStore, Step, Storage


def plan(cycle_id: str = "c1", *, sync: str = SYNC, shards: int = 2) -> ShardPlan:
    return ShardPlan(
        cycle_id=cycle_id,
        sync=sync,
        shards=shards,
        created_at=AT,
        spec={"mode": "full", "partitions": {"left": ["a:b"], "right": []}, "n": [1, None]},
    )


def result(shard: int, cycle_id: str = "c1", **body: object) -> ShardResult:
    return ShardResult(cycle_id=cycle_id, shard=shard, finished_at=AT, body=body)


def test_every_backend_keeps_sharded_cycles(storage: Storage) -> None:
    assert isinstance(storage, ShardStore)


def test_a_plan_and_its_results_round_trip(storage: Storage) -> None:
    assert isinstance(storage, ShardStore)
    assert storage.get_shard_plan("c1") is None
    storage.commit(Step(at=AT, shard_plan=plan()))
    assert storage.get_shard_plan("c1") == plan()
    assert storage.open_shard_plans(SYNC) == [plan()]
    assert storage.open_shard_plans("other") == []
    storage.commit(Step(at=AT, shard_results=[result(1, rows=[["k", 1, None]])]))
    storage.commit(Step(at=AT, shard_results=[result(0)]))
    found = storage.shard_results("c1")
    assert list(found) == [0, 1]
    assert found[1].body == {"rows": [["k", 1, None]]}
    # Stored again: replaced.
    storage.commit(Step(at=AT + TTL, shard_results=[result(1, rows=[])]))
    assert storage.shard_results("c1")[1].body == {"rows": []}


def test_dropping_a_plan_drops_its_results(storage: Storage) -> None:
    assert isinstance(storage, ShardStore)
    storage.commit(Step(at=AT, shard_plan=plan("c1")))
    storage.commit(Step(at=AT, shard_plan=plan("c2", shards=3)))
    storage.commit(Step(at=AT, shard_results=[result(0, "c1"), result(0, "c2")]))
    storage.commit(Step(at=AT, shard_plan_done="c1"))
    assert storage.get_shard_plan("c1") is None
    assert storage.shard_results("c1") == {}
    assert [p.cycle_id for p in storage.open_shard_plans(SYNC)] == ["c2"]
    assert list(storage.shard_results("c2")) == [0]


def test_a_result_needs_its_plan(storage: Storage) -> None:
    with pytest.raises(StorageError):
        storage.commit(Step(at=AT, shard_results=[result(0, "nope")]))


def test_a_shard_result_is_fenced_by_the_shard_lease(storage: Storage) -> None:
    assert isinstance(storage, ShardStore)
    storage.commit(Step(at=AT, shard_plan=plan()))
    fence = ("cycle:deals/shard-0", "w1")
    assert storage.acquire_lease(*fence, TTL, AT)
    assert storage.acquire_lease(fence[0], "w2", TTL, AT + TTL + timedelta(seconds=1))
    with pytest.raises(LeaseLostError):
        storage.commit(Step(at=AT, shard_results=[result(0)], fence=fence))
    assert storage.shard_results("c1") == {}
