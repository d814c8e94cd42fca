"""Multi-worker chaos, seeded: 2 and 4 worker processes drain one SQLite inbox.

The single-process chaos test (tests/test_chaos.py) cannot see what goes wrong when several
``syncrecon worker`` processes share one inbox. Here two fake SaaS systems live in a file
(tests/multiworker_helpers.py: per-field values, modification times and provenance, and a log
of every change either system accepted) so that every process sees them. The test process
plays the users and the network: people edit both systems, each edit's webhook (the generic
JSON shape, signed the Standard Webhooks way) is 5% lost, 20% delayed behind later ones and
10% delivered twice, and now and then a person changes the same field twice 10 ms apart and the
two webhooks reach the inbox newest first. The test process posts them to a
:class:`WebhookHandler` (deferred mode) while 2 or 4 worker processes call
``process_pending()`` in a loop on the same SQLite file, and a third kind of process (the
"cycler") runs reconciliation cycles over and over, between and during the drains; the test
process runs a cycle now and then too (a ``LeaseHeldError`` from an overlapping cycle is
retried). Then the feed ends, the workers drain the inbox and stop, the cycler stops, and ONE
cycle runs.

Checks (the log makes each one exact, because every edit's value is unique):

1. **No stale write.** No write by syncrecon replaces a value whose provenance is later than
   the value it writes (a source-of-truth field written to its non-authoritative side over a
   user's edit is exempt, by design). A user edit that lands after the writing process last
   read the record (its re-read) is not counted either: no writer can see it coming without
   a conditional write, which these APIs lack; the run prints how many there were.
   Each stale write is classified: a late webhook applied over a newer value a cycle synced
   (bug (b)), the fast loop behind another worker's newer write (bug (a)), or a cycle's.
2. **No out-of-order write.** Per linked field, the values the fast loop writes (either way)
   never go backwards in source time.
3. **No newer edit overwritten.** After the cycle, each field a user edited holds the last
   such edit's value or a value of later provenance (for a source-of-truth field, only edits
   on the authoritative side count), unless the field is escalated (or that edit was lost to
   the unpreventable race of check 1).
4. **Agreement.** After the cycle every non-escalated linked field agrees.
5. **Fixed point.** A second cycle writes nothing.

The fake systems answer each API call after a few milliseconds (real time), as real APIs do,
and the older webhook of a reversed pair arrives 10 ms after the newer one (as in the bug
report); that is pacing, never ordering. Process interleaving is not deterministic; everything
else comes from ``random.Random(seed)`` (``SYNCRECON_CHAOS_SEEDS=1,2,3`` runs other seeds), and
only invariants are asserted. About 6 s per parametrization.

At the end there are two small deterministic single-process regressions: a late webhook older
than a value the cycle already synced (bug (b)), and two workers that both re-read a target
before either writes (bug (a), forced with two handlers in threads). The third kind, a cycle
that reads a record between a fast-loop write and that write's commit, has its own in
tests/test_edges_race.py.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from multiworker_helpers import (
    FIELDS,
    LEFT,
    RIGHT,
    STOP_CYCLER,
    STOP_WORKERS,
    SYNC,
    SYNC_FILE,
    Emitters,
    FileSystem,
    Network,
    World,
    build_handler,
    build_reconciler,
    build_sync,
    canon,
    counterpart,
    from_us,
    left_field,
    left_key,
    setup_world,
    side_of,
    system_field,
)
from syncrecon import LeaseHeldError, SourceOfTruth, Status
from syncrecon.storage.sqlite import SQLiteStorage

HELPERS = Path(__file__).with_name("multiworker_helpers.py")
SEEDS = [int(s) for s in os.environ.get("SYNCRECON_CHAOS_SEEDS", "20260301").split(",")]
RECORDS = 200
EDITS = 2_000
MEAN_GAP_S = 0.5  # simulated seconds between two edits
HOT_SHARE = 0.6  # share of the edits that go to the hottest fifth of the records
PAIR_SHARE = 0.1  # edits followed 10 ms later by a second edit of the same field
CHUNK = 50  # edits between two looks at the backlog (and maybe a cycle in the test process)
TEST_CYCLE_CHANCE = 0.15  # per chunk
PAIR_GAP_S = 0.01  # real time between the two deliveries of a reversed pair
MAX_BACKLOG = 150  # events stored but not processed before the feed waits for the workers

# (system, fields) -> weight: what people edit, and where.
EDIT_MIX: list[tuple[tuple[str, tuple[str, ...]], float]] = [
    ((LEFT, ("stage",)), 18),
    ((LEFT, ("notes",)), 14),
    ((LEFT, ("tags",)), 12),
    ((LEFT, ("amount",)), 2),
    ((LEFT, ("notes", "tags")), 3),
    ((RIGHT, ("notes",)), 20),
    ((RIGHT, ("tags",)), 15),
    ((RIGHT, ("stage",)), 4),
    ((RIGHT, ("amount",)), 2),
    ((RIGHT, ("notes", "tags")), 3),
]


def _new_value(rng: random.Random, n: str, system: str, name: str, current: Any) -> Any:
    """A value no one has used before (so that a value names the edit it came from)."""
    if name == "stage":
        return f"stage-{n}" if system == LEFT else f"STAGE-R{n}"
    if name == "notes":
        return f"note {n} from {system}"
    if name == "tags":
        return [*(t for t in (current or []) if rng.random() > 0.3), f"t{n}"]
    return int(current or 0) + 100 + int(n.split("b")[0])  # amount


class _Feed:
    """The users and the network, in the test process."""

    def __init__(self, folder: Path, seed: int, pairs: list[tuple[str, str]]) -> None:
        self.rng = random.Random(seed + 1)
        self.world = World(folder)
        self.storage = SQLiteStorage(folder / SYNC_FILE)
        self.handler = build_handler(self.world, self.storage, who="test")
        self.reconciler = build_reconciler(self.world, self.storage, who="test")
        self.emitters = Emitters(self.world)
        self.network = Network(self.rng)
        self.pairs = pairs
        self.accepted = 0
        self.duplicates = 0
        self.edits: Counter[str] = Counter()
        self.reversed: list[tuple[str, str, str, str]] = []  # system, key, older, newer (canon)
        self.test_cycles = 0
        self.lease_held = 0
        self.waits = 0

    def deliver_until(self, until: Any) -> None:
        while (at := self.network.next_at()) is not None and at <= until:
            self.world.set_now(at)
            for message, _attempt, older in self.network.due(self.world.now()):
                if older:
                    # The older change of a reversed pair reaches the inbox 10 ms after the
                    # newer one, as in the bug report: real time, so that another worker may
                    # be busy with the newer one. Arrival pacing; nothing relies on it.
                    time.sleep(PAIR_GAP_S)
                response = self.handler.handle(self.emitters.request(message))
                assert response.status == 200, response.body
                body = json.loads(response.body)
                self.accepted += body["accepted"]
                self.duplicates += body["duplicates"]
        self.world.set_now(until)

    def edit(self, n: int) -> None:
        left_key_, right_key = self.rng.choice(
            self.pairs[: RECORDS // 5] if self.rng.random() < HOT_SHARE else self.pairs
        )
        ((system, names),) = self.rng.choices(
            [m for m, _ in EDIT_MIX], weights=[w for _, w in EDIT_MIX]
        )
        key = left_key_ if system == LEFT else right_key
        current = self.world.get(system, key)
        changes = {
            system_field(system, name): _new_value(
                self.rng, str(n), system, name, current.get(system_field(system, name))
            )
            for name in names
        }
        self.world.advance(0.001)
        at = self.world.put(system, key, changes, actor="user", who="user")
        message = self.emitters.message(system, key, changes, at)
        self.edits[f"{system}:{'+'.join(names)}"] += 1
        if len(names) == 1 and self.rng.random() < PAIR_SHARE:
            # The same person changes the same field again 10 ms later; the two webhooks
            # reach the inbox newest first, one right after the other.
            (field,) = changes
            again = {field: _new_value(self.rng, f"{n}b", system, names[0], changes[field])}
            self.world.advance(0.010)
            at2 = self.world.put(system, key, again, actor="user", who="user")
            newer = self.emitters.message(system, key, again, at2)
            self.network.send_reversed(message, newer, at2)
            self.edits["reversed pairs"] += 1
            self.reversed.append(
                (
                    system,
                    key,
                    canon(system, field, changes[field]),
                    canon(system, field, again[field]),
                )
            )
            return
        self.network.send(message, at)

    def processed(self) -> int:
        done = 0
        for labels, n in self.storage.counter_totals("webhook_events"):
            if labels["outcome"] not in ("duplicate", "rejected"):
                done += n
        return done

    def wait_for_workers(self, backlog: int, timeout: float = 120.0) -> None:
        """Back-pressure (never ordering): let the workers catch up with the feed."""
        deadline = time.monotonic() + timeout
        while self.accepted - self.processed() > backlog:
            assert time.monotonic() < deadline, "the workers stopped draining the inbox"
            self.waits += 1
            time.sleep(0.005)

    def cycle(self) -> Any:
        for _ in range(600):
            try:
                report = self.reconciler.run_cycle()
            except LeaseHeldError:  # the cycler's cycle is running: try again after it
                self.lease_held += 1
                time.sleep(0.02)
                continue
            self.test_cycles += 1
            return report
        raise AssertionError("the cycle lease was never free")

    def close(self) -> None:
        self.storage.close()
        self.world.close()


def _start(folder: Path, role: str, name: str) -> subprocess.Popen[bytes]:
    out = (folder / f"{name}.out").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, str(HELPERS), role, str(folder), name],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
    finally:
        out.close()


def _stop(folder: Path, procs: list[subprocess.Popen[bytes]], flag: str) -> None:
    (folder / flag).touch()
    for proc in procs:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise


def _summary(folder: Path, name: str) -> dict[str, Any]:
    path = folder / f"{name}.json"
    output = (folder / f"{name}.out").read_text("utf-8", errors="replace")
    assert path.exists(), f"{name} left no summary:\n{output[-3000:]}"
    summary: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return summary


# -- the audit ----------------------------------------------------------------------------------


def _history(log: list[Any], lk: str, lf: str, upto: int, n: int = 8) -> str:
    """The last ``n`` changes of one linked field (both systems) up to log entry ``upto``."""
    rows = [
        r
        for r in log
        if r["seq"] <= upto
        and r["actor"] != "read"
        and r["field"] != ("email" if r["system"] == LEFT else "Email")
        and left_key(r["system"], r["key"]) == lk
        and left_field(r["system"], r["field"]) == lf
    ][-n:]
    return "\n".join(
        f"      #{r['seq']} {from_us(r['at']).time()} {r['who']:>9} {r['system']}.{r['field']}"
        f" = {r['new_value']} (provenance {from_us(r['new_prov']).time()}, {r['how']})"
        f" replacing {r['old_value']} (provenance"
        f" {from_us(r['old_prov']).time() if r['old_prov'] is not None else None})"
        for r in rows
    )


class _Audit:
    def __init__(self, world: World, storage: SQLiteStorage) -> None:
        self.world = world
        self.storage = storage
        self.policies = {fm.left: fm.policy for fm in build_sync(world, actor="-", who="-").fields}
        self.log = world.log()
        self.stale: list[str] = []
        self.stale_kinds: Counter[str] = Counter()
        # user edits overwritten by a write whose writer last read the record before the edit
        # (a race no writer can prevent: the API has no conditional write); not violations
        self.raced: list[str] = []
        self.out_of_order: list[str] = []
        self.overwritten: list[str] = []
        self.disagree: list[str] = []
        self.echo_writes: list[str] = []
        self.anomalies: list[str] = []
        self.writes: Counter[str] = Counter()
        self.by_worker: Counter[str] = Counter()
        self.escalated = {
            (i.left_key, i.field)
            for i in storage.active_items(SYNC).values()
            if i.status is Status.ESCALATED
        }

    def is_escalated(self, lk: str, lf: str) -> bool:
        return (lk, lf) in self.escalated or (lk, "*") in self.escalated

    def _where(self, row: Any) -> str:
        return (
            f"#{row['seq']} {row['who']} wrote {row['system']} {row['key']}.{row['field']}"
            f" = {row['new_value']} (provenance {from_us(row['new_prov']).time()})"
            f" over {row['old_value']} (provenance {from_us(row['old_prov']).time()})"
        )

    def run(self, pairs: list[tuple[str, str]]) -> None:
        newest_fast: dict[tuple[str, str], Any] = {}
        last_edit: dict[tuple[str, str], Any] = {}
        newest_cycle: dict[tuple[str, str], int] = {}  # the newest provenance a cycle wrote
        set_by: dict[tuple[str, str, str], Any] = {}  # the log entry of each current value
        last_read: dict[tuple[str, str, str], int] = {}  # (who, system, key) -> seq
        raced_edits: set[int] = set()
        for row in self.log:
            if row["actor"] == "read":
                last_read[(row["who"], row["system"], row["key"])] = row["seq"]
                continue
            here = (row["system"], row["key"], row["field"])
            replaced = set_by.get(here)
            replaced_by = replaced["actor"] if replaced is not None else "nothing"
            if row["how"] != "same":
                set_by[here] = row
            lf = left_field(row["system"], row["field"]) if row["field"] != "Email" else "email"
            if lf == "email" or row["actor"] == "setup":
                continue
            lk = left_key(row["system"], row["key"])
            policy = self.policies[lf]
            sot = isinstance(policy, SourceOfTruth)
            if row["actor"] == "user":
                if not sot or policy.side is side_of(row["system"]):
                    last_edit[(lk, lf)] = row
                continue
            self.writes[row["actor"]] += 1
            if row["actor"] == "fast":
                self.by_worker[row["who"]] += 1
            if row["how"] == "same":
                self.echo_writes.append(self._where(row))
                continue
            if row["actor"] == "fast" and row["how"] == "merge":
                self.anomalies.append(
                    f"a fast-loop value the source never held: {self._where(row)}"
                )
            exempt = sot and policy.side is not side_of(row["system"]) and row["old_by_user"]
            read = last_read.get((row["who"], row["system"], row["key"]), 0)
            if (
                row["old_prov"] > row["new_prov"]
                and not exempt
                and replaced is not None
                and read
                and replaced["actor"] == "user"
                and replaced["seq"] > read
            ):
                raced_edits.add(replaced["seq"])
                self.raced.append(f"{self._where(row)}: the edit came after the writer's read")
            elif row["old_prov"] > row["new_prov"] and not exempt:
                if row["actor"] == "cycle":
                    kind = f"cycle over a value by {replaced_by}"
                elif newest_cycle.get((lk, lf), -1) > row["new_prov"]:
                    kind = "late webhook over a newer value a cycle synced"
                elif (before := newest_fast.get((lk, lf))) and before["new_prov"] > row["new_prov"]:
                    kind = "fast loop behind another worker's newer write"
                else:
                    kind = f"fast loop over a value by {replaced_by}"
                self.stale_kinds[kind] += 1
                text = f"[{kind}] {self._where(row)}\n{_history(self.log, lk, lf, row['seq'])}"
                if self.stale_kinds[kind] == 1:  # one example of each kind first
                    self.stale.insert(len(self.stale_kinds) - 1, text)
                else:
                    self.stale.append(text)
            if row["actor"] == "cycle":
                newest_cycle[(lk, lf)] = max(newest_cycle.get((lk, lf), -1), row["new_prov"])
            if row["actor"] == "fast":
                before = newest_fast.get((lk, lf))
                if before is not None and row["new_prov"] < before["new_prov"]:
                    self.out_of_order.append(
                        f"{self._where(row)}, after #{before['seq']} ({before['who']}) wrote"
                        f" {before['new_value']} (provenance"
                        f" {from_us(before['new_prov']).time()})\n"
                        f"{_history(self.log, lk, lf, row['seq'])}"
                    )
                if before is None or row["new_prov"] > before["new_prov"]:
                    newest_fast[(lk, lf)] = row
        now = self.world.current()
        for (lk, lf), edit in last_edit.items():
            if self.is_escalated(lk, lf) or edit["seq"] in raced_edits:
                continue
            for system in (LEFT, RIGHT):
                key = lk if system == LEFT else counterpart(LEFT, lk)
                held = now[(system, key, system_field(system, lf))]
                if held["prov"] < edit["new_prov"] and (
                    canon(system, held["field"], json.loads(held["value"])) != edit["canon"]
                ):
                    self.overwritten.append(
                        f"{system} {key}.{held['field']} holds {held['value']} (provenance"
                        f" {from_us(held['prov']).time()}), but the last edit was"
                        f" {edit['new_value']} at {from_us(edit['new_prov']).time()}\n"
                        f"{_history(self.log, lk, lf, self.log[-1]['seq'])}"
                    )
                    break
        for lk, rk in pairs:
            for lf, rf in FIELDS.items():
                if self.is_escalated(lk, lf):
                    continue
                left, right = now[(LEFT, lk, lf)], now[(RIGHT, rk, rf)]
                if canon(LEFT, lf, json.loads(left["value"])) != canon(
                    RIGHT, rf, json.loads(right["value"])
                ):
                    self.disagree.append(f"{lk}.{lf}={left['value']} vs {rk}.{rf}={right['value']}")

    def reversed_pairs(self, reversed_: list[tuple[str, str, str, str]]) -> tuple[int, int]:
        """(pairs whose two values the fast loop both wrote, of those: older one last)."""
        fast: dict[tuple[str, str, str], int] = {}  # target system, key, canon -> last seq
        for row in self.log:
            if row["actor"] == "fast":
                fast[(row["system"], row["key"], row["canon"])] = row["seq"]
        both = wrong = 0
        for system, key, older, newer in reversed_:
            target, target_key = (RIGHT if system == LEFT else LEFT), counterpart(system, key)
            a = fast.get((target, target_key, older))
            b = fast.get((target, target_key, newer))
            if a is not None and b is not None:
                both += 1
                wrong += a > b
        return both, wrong


def _outcomes(storage: SQLiteStorage) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for labels, n in storage.counter_totals("webhook_events"):
        totals[labels["outcome"]] += n
    return dict(sorted(totals.items()))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("workers", [2, 4])
def test_multiworker_chaos(tmp_path: Path, workers: int, seed: int) -> None:
    began = time.perf_counter()
    rng = random.Random(seed)
    pairs = setup_world(tmp_path, rng, RECORDS)
    feed = _Feed(tmp_path, seed, pairs)
    first = feed.cycle()
    assert first.new_links == RECORDS, first
    assert first.total_writes == 0, first

    names = [f"worker-{i}" for i in range(1, workers + 1)]
    procs = [_start(tmp_path, "worker", name) for name in names]
    cycler = _start(tmp_path, "cycler", "cycler")
    try:
        for n in range(EDITS):
            gap = feed.rng.expovariate(1 / MEAN_GAP_S)
            feed.deliver_until(feed.world.now() + timedelta(seconds=gap))
            feed.edit(n)
            if n % CHUNK == CHUNK - 1:
                if feed.rng.random() < TEST_CYCLE_CHANCE:
                    feed.cycle()
                feed.wait_for_workers(MAX_BACKLOG)
        while (due := feed.network.next_at()) is not None:  # everything still in flight
            feed.deliver_until(due)
        fed_s = time.perf_counter() - began
        _stop(tmp_path, procs, STOP_WORKERS)
        _stop(tmp_path, [cycler], STOP_CYCLER)
    finally:
        for proc in [*procs, cycler]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    summaries = [_summary(tmp_path, name) for name in [*names, "cycler"]]
    errors = [f"{s['name']}: {e}" for s in summaries for e in s["errors"]]
    assert errors == [], errors[:10]
    fast = _outcomes(feed.storage)
    assert feed.processed() == feed.accepted, f"{feed.accepted} events stored: {fast}"

    report = feed.cycle()  # ONE cycle
    audit = _Audit(feed.world, feed.storage)
    audit.run(pairs)
    assert audit.anomalies == [], audit.anomalies[:5]
    both, wrong = audit.reversed_pairs(feed.reversed)
    second = feed.cycle()
    cycling = summaries[-1]
    lines = {
        "edits": f"{sum(feed.edits.values())} {dict(feed.edits)}",
        "network": dict(feed.network.stats),
        "events fed": f"{feed.accepted} (+{feed.duplicates} duplicate deliveries)",
        "fast-loop outcomes": fast,
        "fast-loop field writes per worker": dict(sorted(audit.by_worker.items())),
        "reversed pairs": f"{len(feed.reversed)}, both values written by the fast loop {both},"
        f" the older one last {wrong}",
        "cycles": f"cycler {cycling['cycles']} (lease held {cycling['lease_held']}), test"
        f" {feed.test_cycles} (lease held {feed.lease_held})",
        "field writes by loop": dict(audit.writes),
        "final cycle": f"found {report.discrepancies_found}, writes {dict(report.writes)},"
        f" escalated {dict(report.escalated)}",
        "second cycle writes": second.total_writes,
        "(1) stale writes": f"{len(audit.stale)} {dict(audit.stale_kinds)}",
        "(2) out-of-order fast-loop writes": len(audit.out_of_order),
        "(3) newer user edits overwritten": len(audit.overwritten),
        "(4) fields disagreeing": len(audit.disagree),
        "not counted: user edits landing after the writer's last read": len(audit.raced),
        "not counted: writes of the value a field already held": len(audit.echo_writes),
        "time": f"fed in {fed_s:.1f}s, total {time.perf_counter() - began:.1f}s,"
        f" the feed waited for the workers {feed.waits}x",
    }
    print(f"\nmulti-worker chaos seed={seed} workers={workers}:")
    for what, value in lines.items():
        print(f"  {what}: {value}")
    failures = {
        "(1) stale writes": audit.stale,
        "(2) out-of-order fast-loop writes": audit.out_of_order,
        "(3) newer user edits overwritten": audit.overwritten,
        "(4) fields disagreeing after one cycle": audit.disagree,
    }
    if second.total_writes:
        failures["(5) writes by the second cycle"] = [str(dict(second.writes))]
    found = {what: cases for what, cases in failures.items() if cases}
    feed.close()
    assert not found, f"seed={seed} workers={workers}: " + "\n".join(
        f"{what}: {len(cases)}; first ones:\n  " + "\n  ".join(cases[:5])
        for what, cases in found.items()
    )


# -- deterministic regressions, one process -----------------------------------------------------


class _Quiet:
    """A world with one linked pair, no API latency, a handler and a reconciler."""

    def __init__(self, folder: Path) -> None:
        setup_world(folder, random.Random(1), 1)
        self.world = World(folder)
        self.storage = SQLiteStorage(folder / SYNC_FILE)
        self.reconciler = build_reconciler(self.world, self.storage, who="cycle", latency=None)
        self.handler = build_handler(self.world, self.storage, who="front", latency=None)
        self.emitters = Emitters(self.world)
        assert self.reconciler.run_cycle().new_links == 1

    def edit(self, system: str, key: str, **changes: Any) -> Any:
        self.world.advance(1)
        at = self.world.put(system, key, changes, actor="user", who="user")
        return self.emitters.message(system, key, changes, at)

    def post(self, message: Any) -> None:
        response = self.handler.handle(self.emitters.request(message))
        assert response.status == 200, response.body

    def close(self) -> None:
        self.storage.close()
        self.world.close()


def test_a_late_webhook_older_than_a_value_a_cycle_synced_is_stale(tmp_path: Path) -> None:
    """Bug (b): v1 at t1 (webhook delayed), v2 at t2 (webhook lost), a cycle syncs v2, then
    v1's webhook arrives, correctly signed and in tolerance. It must not overwrite v2."""
    w = _Quiet(tmp_path)
    late = w.edit(LEFT, "hs-0", notes="v1")  # its webhook is held up
    w.edit(LEFT, "hs-0", notes="v2")  # its webhook is lost
    w.world.advance(1)
    assert w.reconciler.run_cycle().total_writes == 1
    assert w.world.get(RIGHT, "sf-0")["Description"] == "v2"
    w.world.advance(1)
    w.post(late)
    report = w.handler.process_pending()
    held = w.world.get(RIGHT, "sf-0")["Description"]
    w.close()
    # Expected: stale, nothing written. Today: applied, and v1 overwrites the newer v2.
    assert (report.outcomes, held) == ({"stale": 1}, "v2")


class _Gated(FileSystem):
    """A fake system whose re-reads and writes call hooks (to interleave two workers)."""

    def __init__(self, inner: FileSystem, on_read: Any, before_write: Any, after_write: Any):
        super().__init__(inner.world, inner.name, actor=inner.actor, who=inner.who)
        self.on_read, self.before_write, self.after_write = on_read, before_write, after_write

    def read_records(self, keys: Any) -> Any:
        found = super().read_records(keys)
        self.on_read()
        return found

    def write_records(self, changes: Any) -> Any:
        self.before_write()
        results = super().write_records(changes)
        self.after_write()
        return results


class _GatedStorage:
    """Calls ``before`` and ``after`` around each commit that settles inbox events."""

    def __init__(self, inner: SQLiteStorage, before: Any, after: Any) -> None:
        self._inner, self._before, self._after = inner, before, after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def commit(self, step: Any) -> Any:
        if step.events_done:
            self._before()
        ids = self._inner.commit(step)
        if step.events_done:
            self._after()
        return ids


def test_two_workers_never_write_one_field_out_of_order(tmp_path: Path) -> None:
    """Bug (a), forced: two changes of one field 10 ms apart reach the inbox newest first;
    worker A takes the newer, worker B the older, both re-read the target before either
    writes, A writes first and commits last. The older value must not win, in the target or
    (through the next cycle) in the source."""
    w = _Quiet(tmp_path)
    older = w.edit(LEFT, "hs-0", notes="v1")
    w.world.advance(0.010)
    newer = w.edit(LEFT, "hs-0", notes="v2")
    a_reread, b_reread, a_wrote, b_committed = (threading.Event() for _ in range(4))
    wait = 5.0  # only ever waited out when a fixed worker B takes nothing

    def handler(who: str, reread: Any, before_write: Any, after_write: Any, gate: Any) -> Any:
        sync = build_sync(w.world, actor="fast", who=who, latency=None)
        right = _Gated(sync.right, reread, before_write, after_write)  # type: ignore[arg-type]
        sync = attrs.evolve(sync, right=right)
        storage = _GatedStorage(SQLiteStorage(tmp_path / SYNC_FILE), *gate)
        return build_handler(w.world, storage, who=who, sync=sync)

    def a_read() -> None:
        a_reread.set()
        b_reread.wait(wait)

    worker_a = handler(
        "worker-a", a_read, lambda: None, a_wrote.set, (lambda: b_committed.wait(wait), _nothing)
    )
    worker_b = handler(
        "worker-b", b_reread.set, lambda: a_wrote.wait(wait), _nothing, (_nothing, b_committed.set)
    )

    def run(worker: Any, *done: threading.Event) -> None:
        try:
            worker.process_pending()
        finally:
            for event in done:
                event.set()

    w.post(newer)
    thread_a = threading.Thread(target=run, args=(worker_a, a_reread, a_wrote))
    thread_a.start()
    assert a_reread.wait(wait)
    w.post(older)  # 10 ms later: A is busy with the newer change
    thread_b = threading.Thread(target=run, args=(worker_b, b_reread, b_committed))
    thread_b.start()
    thread_a.join(30)
    thread_b.join(30)
    worker_a.process_pending()  # whatever a fixed worker B left behind
    in_target = w.world.get(RIGHT, "sf-0")["Description"]
    w.world.advance(1)
    w.reconciler.run_cycle()
    after_cycle = (w.world.get(LEFT, "hs-0")["notes"], w.world.get(RIGHT, "sf-0")["Description"])
    w.close()
    # Expected: v2 everywhere. Today: B writes v1 over v2 in Salesforce, A's commit makes v2
    # the base, and the next cycle sees only Salesforce changed: it writes v1 into HubSpot,
    # over the user's newer edit.
    assert (in_target, after_cycle) == ("v2", ("v2", "v2"))


def _nothing() -> None:
    return None
