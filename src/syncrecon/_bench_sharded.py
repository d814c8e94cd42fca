"""``sharded_cycle_speedup``: a steady full sweep of a large sync, one worker against several.

The setup links two generated systems of ``records`` per side in a SQLite file (one unsharded
first cycle), and a share of the records drifts. Then the same steady full sweep runs from a
copy of that file three ways: unsharded in this process; sharded with one shard; sharded with
``shards`` shards. The shards run in worker processes (threads would share the GIL), each a
warm pool worker that has built its own copy of the generated systems (they are in-memory
simulators: each process reproduces them from the seed), all sharing the one SQLite file;
the plan and finish steps run here. Each figure is the wall time from the start of the cycle
to its stored report, process start-up excluded (a real deployment's workers are running).

``sharded_cycle_speedup`` is the unsharded wall time over the ``shards``-shard wall time;
``sharded_speedup_vs_one_shard`` compares the sharded runs with each other (what the extra
workers buy, the sharding's own overhead set aside).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from ._connector import RetrySettings
from ._reconciler import Reconciler
from ._scenario import deal_sync, generated_pair
from .storage.sqlite import SQLiteStorage
from .testing import ManualClock

__all__ = ["measure_sharded_cycle"]

_worker: Reconciler | None = None


def _systems(records: int, seed: int, drift: float) -> tuple[ManualClock, Any, Any]:
    """The generated pair after the setup's drift (the same in every process)."""
    from ._bench import drift_records

    clock = ManualClock()
    left, right = generated_pair(records, seed, clock)
    clock.advance(3600)
    clock.advance(3600)  # the first cycle ran here (it writes nothing: checked by the setup)
    drift_records(random.Random(seed), clock, left, right, records, int(records * drift))
    clock.advance(3600)
    return clock, left, right


def _reconciler(records: int, seed: int, drift: float, db: str, scratch: str) -> Reconciler:
    clock, left, right = _systems(records, seed, drift)
    return Reconciler(
        deal_sync(left, right),
        SQLiteStorage(db),
        clock=clock,
        retry=RetrySettings(sleep=clock.advance),
        scratch_dir=scratch,
    )


def _init_worker(records: int, seed: int, drift: float, db: str, scratch: str) -> None:
    global _worker
    _worker = _reconciler(records, seed, drift, db, scratch)


def _warm(seconds: float) -> int:
    time.sleep(seconds)  # keeps this worker busy so that the pool starts the others
    return os.getpid()


def _run_shard(cycle_id: str, shard: int) -> None:
    assert _worker is not None
    _worker.run_shard(cycle_id, shard, finish=False)


def _sharded(
    shards: int, records: int, seed: int, drift: float, db: str, scratch: str
) -> tuple[float, dict[str, Any]]:
    rec = _reconciler(records, seed, drift, db, scratch)
    args = (records, seed, drift, db, scratch)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        shards, mp_context=context, initializer=_init_worker, initargs=args
    ) as pool:
        pids = {f.result() for f in [pool.submit(_warm, 2.0) for _ in range(shards)]}
        if len(pids) < shards:
            raise RuntimeError(f"{shards} workers were asked for, {len(pids)} started")
        began = time.perf_counter()
        report = rec.run_cycle(full=True, shards=shards, executor=pool, worker=_run_shard)
        wall = time.perf_counter() - began
    rec.storage.close()
    return wall, report.to_dict()


def measure_sharded_cycle(
    records: int = 100_000, *, shards: int = 2, seed: int = 1, drift: float = 0.01
) -> dict[str, Any]:
    """The wall times of one steady full sweep at ``records`` per side: unsharded, with one
    shard and with ``shards`` shards (in as many processes), and the speedups."""
    with tempfile.TemporaryDirectory() as tmp:
        base = str(Path(tmp) / "base.sqlite")
        clock = ManualClock()
        left, right = generated_pair(records, seed, clock)
        clock.advance(3600)
        storage = SQLiteStorage(base)
        first = Reconciler(
            deal_sync(left, right),
            storage,
            clock=clock,
            retry=RetrySettings(sleep=clock.advance),
            scratch_dir=tmp,
        ).run_cycle()
        storage.close()
        if first.total_writes:
            raise RuntimeError("the setup's first cycle wrote: the workers could not replay it")
        copies = {}
        for name in ("plain", "one", "many"):
            copies[name] = str(Path(tmp) / f"{name}.sqlite")
            shutil.copyfile(base, copies[name])

        plain = _reconciler(records, seed, drift, copies["plain"], tmp)
        began = time.perf_counter()
        expected = plain.run_cycle(full=True)
        plain_s = time.perf_counter() - began
        plain.storage.close()

        one_s, _one = _sharded(1, records, seed, drift, copies["one"], tmp)
        many_s, many = _sharded(shards, records, seed, drift, copies["many"], tmp)
    same = all(
        many[name] == expected.to_dict()[name]
        for name in ("records", "pairs_compared", "discrepancies_found", "writes", "deleted")
    )
    return {
        "sharded_cycle_speedup": round(plain_s / many_s, 3),
        "sharded_speedup_vs_one_shard": round(one_s / many_s, 3),
        "records_per_side": records,
        "shards": shards,
        "cores": os.cpu_count(),
        "unsharded_cycle_s": round(plain_s, 3),
        "sharded_1_cycle_s": round(one_s, 3),
        f"sharded_{shards}_cycle_s": round(many_s, 3),
        "same_totals": same,
        "writes": dict(expected.writes),
        "api_calls_unsharded": expected.total_api_calls,
        f"api_calls_sharded_{shards}": sum(many["api_calls"].values()),
        "drifted": int(records * drift),
    }


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(json.dumps(measure_sharded_cycle(size), indent=2))
