"""DiffSync on the benchmark's records: the ``noop_cycle_vs_diffsync`` figure.

DiffSync (the ``diffsync`` package, in the ``bench`` extra) is the closest Python peer: two
adapters load their systems' objects into memory, a diff compares them, a sync applies the
diff. Here it runs a one-way sync (every field's source of truth on the left) over the two
generated systems at the benchmark's size, whose mapped values agree: one adapter per system
holds each record's mapped values (the right side's through the mapping's transforms, keyed by
the normalized natural key), the diff finds nothing, and the sync applies the empty diff. Its
seconds are those of loading both sides through the same connector listing the cycle uses, the
diff and the sync; it runs in a child process so its peak memory is its own.
"""

from __future__ import annotations

import gc
import sys
import time
from datetime import date
from typing import Any

from ._bench_scaling import child_main, rss_mb, run_child
from ._models import Side
from ._scenario import deal_sync, generated_pair
from ._sync import SyncDefinition
from .testing import GeneratedSystem, ManualClock

# The deal model's attributes: the scenario's mapped fields (left names).
ATTRIBUTES = ("dealstage", "notes", "tags", "amount", "closedate")


def _adapter_class() -> Any:
    """A DiffSync adapter class with one model, a deal keyed by its natural key."""
    from diffsync import Adapter, DiffSyncModel  # type: ignore[import-not-found,unused-ignore]

    class Deal(DiffSyncModel):  # type: ignore[misc,unused-ignore]
        _modelname = "deal"
        _identifiers = ("key",)
        _attributes = ATTRIBUTES

        key: str
        dealstage: str
        notes: str
        tags: list[str]
        amount: int
        closedate: date

    class Deals(Adapter):  # type: ignore[misc,unused-ignore]
        deal = Deal
        top_level = ["deal"]  # noqa: RUF012 (DiffSync's class attribute)

    return Deals


def _load(adapter: Any, system: GeneratedSystem, sync: SyncDefinition, side: Side) -> float:
    """Every record of ``system`` (the ``side`` of ``sync``) into ``adapter`` as mapped
    values; the CPU seconds spent in the system's listing calls."""
    names = {fm.left: fm.left if side is Side.LEFT else fm.right for fm in sync.fields}
    to_left = {fm.left: fm.transform.to_left for fm in sync.fields}
    assert sync.natural_key is not None
    key_field = sync.natural_key.left if side is Side.LEFT else sync.natural_key.right
    normalize = sync.natural_key.normalize
    model = adapter.deal
    listing = 0.0
    cursor: str | None = None
    while True:
        began = time.process_time()
        page = system.list_records(since=None, cursor=cursor)
        listing += time.process_time() - began
        for record in page.records:
            fields = record.fields
            if side is Side.LEFT:
                values = {name: fields[names[name]] for name in ATTRIBUTES}
            else:
                values = {name: to_left[name](fields[names[name]]) for name in ATTRIBUTES}
            adapter.add(model(key=normalize(fields[key_field]), **values))
        cursor = page.next_cursor
        if cursor is None:
            return listing


def measure_diffsync(records: int, *, seed: int = 1) -> dict[str, Any]:
    """DiffSync's load of both sides, diff and (empty) sync, in this process."""
    deals = _adapter_class()
    clock = ManualClock()
    left, right = generated_pair(records, seed, clock)
    sync = deal_sync(left, right)
    source, target = deals(name="left"), deals(name="right")
    baseline = rss_mb()
    gc.collect()  # as before syncrecon's timed cycles (syncrecon._bench._settled_heap)
    gc.freeze()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        listing = _load(source, left, sync, Side.LEFT) + _load(target, right, sync, Side.RIGHT)
        loaded = time.perf_counter()
        diff = target.diff_from(source)
        diffed = time.perf_counter()
        source.sync_to(target, diff=diff)
        synced = time.perf_counter()
        cpu = time.process_time() - cpu
    finally:
        gc.unfreeze()
    return {
        "diffsync_s": round(synced - wall, 3),
        "diffsync_load_s": round(loaded - wall, 3),
        "diffsync_diff_s": round(diffed - loaded, 3),
        "diffsync_sync_s": round(synced - diffed, 3),
        "diffsync_cpu_s": round(cpu, 3),
        "diffsync_listing_cpu_s": round(listing, 3),
        "diffsync_objects": len(source) + len(target),
        "diffsync_summary": dict(diff.summary()),
        "diffsync_baseline_rss_mb": baseline,
        "diffsync_peak_rss_mb": rss_mb(),
    }


def run_diffsync(records: int, *, seed: int = 1) -> dict[str, Any]:
    """:func:`measure_diffsync` in a child process (its peak memory its own)."""
    return run_child("syncrecon._bench_diffsync", {"records": records, "seed": seed})


if __name__ == "__main__":
    sys.exit(child_main(measure_diffsync, sys.argv[1:]))
