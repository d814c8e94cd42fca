"""A worker process for the crash-safety tests: one step of a deterministic scenario.

    python tests/crash_worker.py DIR STEP --seed N --at ISO-TIME [--kill SPEC]

``DIR`` holds the scenario's files: ``sync.sqlite`` (syncrecon's storage), ``systems.json``
(the two simulated systems' records: the "remote" state, rewritten after every write the
systems accept, so it survives a SIGKILL exactly as a real SaaS system would) and
``scratch/`` (the cycles' scratch files). ``STEP`` is one of:

``setup``  build both systems from the seed (records linked by email, some drift)
``drift``  apply seeded user edits: updates on either side, conflicts, list edits,
           deletions on both sides and new records
``cycle``  run one reconciliation cycle and print its report as JSON

Every step rebuilds the same systems and sync definition from the seed and the saved
records, with a manual clock set to ``--at``. ``--kill`` makes the process SIGKILL itself:

``after:METHOD:SYSTEM:N``   after the N-th ``METHOD`` call on ``SYSTEM`` returned
``before:METHOD:SYSTEM:N``  at the start of that call, before the system did anything
``commit:N``                inside the N-th storage commit, right before SQLite's COMMIT
``commit:final``            inside the commit that stores the cycle's report (the last one)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from syncrecon import (
    Change,
    FieldMap,
    NaturalKey,
    Page,
    Reconciler,
    Record,
    RetrySettings,
    SyncDefinition,
    WriteResult,
    escalate,
    merge,
    recency,
    source_of_truth,
    value_map,
)
from syncrecon.storage import Step
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import ManualClock, SimulatedSystem

SYNC = "crash"
LEFT, RIGHT = "hubspot", "salesforce"
STAGES = value_map({"lead": "Lead", "won": "Closed Won", "lost": "Closed Lost"})
TAGS = ("vip", "renewal", "churn-risk", "partner", "trial")
PAIRS = 16
STEP = timedelta(seconds=10)  # between user edits: more than the recency skew


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class Killer:
    """Decides when the process kills itself."""

    def __init__(self, spec: str) -> None:
        self.spec = spec.split(":")
        self.calls: dict[tuple[str, str], int] = {}
        self.commits = 0

    def _match(self, when: str, system: str, method: str, count: int) -> bool:
        return self.spec[0] == when and self.spec[1:] == [method, system, str(count)]

    def before(self, system: str, method: str) -> None:
        count = self.calls.get((system, method), 0) + 1
        if self._match("before", system, method, count):
            die()

    def after(self, system: str, method: str) -> None:
        count = self.calls[(system, method)] = self.calls.get((system, method), 0) + 1
        if self._match("after", system, method, count):
            die()

    def in_commit(self, step: Step) -> bool:
        self.commits += 1
        if self.spec[0] != "commit":
            return False
        if self.spec[1] == "final":
            return step.cycle is not None
        return int(self.spec[1]) == self.commits


class DurableSystem(SimulatedSystem):
    """A simulated system whose records are saved to disk after every accepted write."""

    def __init__(self, name: str, world: World, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.world = world
        self.next_id = 0
        self._forced_key: str | None = None
        self.on_call("list_records", lambda _: world.killer.before(name, "list_records"))
        self.on_call("read_records", lambda _: world.killer.before(name, "read_records"))
        self.on_call("write_records", lambda _: world.killer.before(name, "write_records"))

    def _new_key(self) -> str:
        if self._forced_key is not None:
            key, self._forced_key = self._forced_key, None
            return key
        self.next_id += 1
        return f"{self.key_prefix}{self.next_id}"

    def restore(self, key: str, fields: Mapping[str, Any], modified_at: datetime) -> None:
        """Put back a saved record with its key and modification time."""
        self._forced_key = key
        self.world.clock.set(modified_at)
        self.create(fields)

    def dump(self) -> dict[str, Any]:
        return {
            "next_id": self.next_id,
            "records": [
                {
                    "key": r.key,
                    "fields": dict(r.fields),
                    "modified_at": r.modified_at.isoformat() if r.modified_at else None,
                }
                for r in self.records().values()
            ],
        }

    def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        page = super().list_records(since=since, cursor=cursor)
        self.world.killer.after(self.name, "list_records")
        return page

    def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        found = super().read_records(keys)
        self.world.killer.after(self.name, "read_records")
        return found

    def write_records(self, changes: Sequence[Change]) -> Sequence[WriteResult]:
        results = super().write_records(changes)
        self.world.save()  # the remote system keeps what it accepted, whatever happens next
        self.world.killer.after(self.name, "write_records")
        return results


class KillingStorage(SQLiteStorage):
    """SQLite storage that can die in the middle of a commit, before SQLite's COMMIT."""

    def __init__(self, path: Path, killer: Killer) -> None:
        super().__init__(path)
        self.killer = killer

    def commit(self, step: Step) -> list[int]:
        if self.killer.in_commit(step):
            # The statements of this step run; the process dies as COMMIT starts.
            self._db.set_trace_callback(lambda sql: die() if sql.strip() == "COMMIT" else None)
        return super().commit(step)


class World:
    """The scenario's systems, sync and reconciler, rebuilt identically from the seed."""

    def __init__(self, folder: Path, seed: int, at: datetime, kill: str) -> None:
        self.folder = folder
        self.seed = seed
        self.killer = Killer(kill)
        self.clock = ManualClock(at)
        caps = {"page_size": 5, "max_read_batch": 3, "max_write_batch": 3}
        self.left = DurableSystem(LEFT, self, clock=self.clock, **caps)
        self.right = DurableSystem(RIGHT, self, clock=self.clock, **caps)
        self.sync = SyncDefinition(
            name=SYNC,
            left=self.left,
            right=self.right,
            fields=[
                FieldMap(
                    left="stage",
                    right="Stage",
                    policy=source_of_truth("left"),
                    transform=STAGES,
                ),
                FieldMap(left="notes", right="Notes", policy=recency()),
                FieldMap(left="tags", right="Tags", policy=merge()),
                FieldMap(left="amount", right="Amount", policy=escalate("amount")),
            ],
            natural_key=NaturalKey(left="email", right="Email"),
            create_on=["right"],
            delete_from="left",
        )
        if self.state_path.exists():
            saved = json.loads(self.state_path.read_text("utf-8"))
            for system in (self.left, self.right):
                data = saved[system.name]
                for r in data["records"]:
                    system.restore(r["key"], r["fields"], datetime.fromisoformat(r["modified_at"]))
                system.next_id = data["next_id"]
        self.clock.set(at)

    @property
    def state_path(self) -> Path:
        return self.folder / "systems.json"

    def save(self) -> None:
        data = {s.name: s.dump() for s in (self.left, self.right)}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, sort_keys=True), "utf-8")
        os.replace(tmp, self.state_path)

    def _tick(self) -> None:
        self.clock.advance(STEP)

    def setup(self) -> None:
        rng = random.Random(self.seed)
        for i in range(PAIRS):
            values = {
                "stage": rng.choice(["lead", "won", "lost"]),
                "notes": f"note {i}",
                "tags": rng.sample(TAGS, rng.randint(0, 3)),
                "amount": rng.choice([100, 250, 400]),
            }
            self._tick()
            self.left.create({"email": f"person{i}@example.com", **values})
            self._tick()
            right = dict(values)
            if rng.random() < 0.3:
                right["notes"] = f"other note {i}"  # the right record is newer: it wins
            self.right.create(
                {
                    "Email": f"Person{i}@Example.com",
                    "Stage": STAGES.to_right(right["stage"]),
                    "Notes": right["notes"],
                    "Tags": right["tags"],
                    "Amount": right["amount"],
                }
            )
        self.save()

    def drift(self) -> None:
        rng = random.Random(self.seed * 7919 + 1)
        lefts = sorted(self.left.records())
        rights = {r.fields["Email"].lower(): k for k, r in self.right.records().items()}
        pairs = [(k, rights[self.left.get(k).fields["email"]]) for k in lefts]
        rng.shuffle(pairs)
        chosen = iter(pairs)
        for _ in range(4):  # the source of truth changes
            lkey, _ = next(chosen)
            self._tick()
            self.left.edit(lkey, stage=rng.choice(["lead", "won", "lost"]))
        for _ in range(2):  # the other side changes a source-of-truth field: reverted
            _, rkey = next(chosen)
            self._tick()
            self.right.edit(rkey, Stage="Closed Lost")
        for _ in range(3):  # recency: both sides change, the later wins
            lkey, rkey = next(chosen)
            first, second = rng.sample([("l", lkey), ("r", rkey)], 2)
            for side, key in (first, second):
                self._tick()
                if side == "l":
                    self.left.edit(key, notes=f"left note {rng.random():.6f}")
                else:
                    self.right.edit(key, Notes=f"right note {rng.random():.6f}")
        for _ in range(3):  # merge: one side adds, the other removes
            lkey, rkey = next(chosen)
            self._tick()
            tags = list(self.left.get(lkey).fields["tags"])
            self.left.edit(lkey, tags=[*tags, "late-add"])
            self._tick()
            self.right.edit(rkey, Tags=tags[1:])
        lkey, rkey = next(chosen)  # an escalated field
        self._tick()
        self.right.edit(rkey, Amount=999)
        for _ in range(2):  # deletions that propagate (2 of 16: under the guard)
            lkey, _ = next(chosen)
            self._tick()
            self.left.delete(lkey)
        _, rkey = next(chosen)  # a deletion on the other side: escalated
        self._tick()
        self.right.delete(rkey)
        for i in range(3):  # new records, created on the right
            self._tick()
            self.left.create(
                {
                    "email": f"new{i}@example.com",
                    "stage": "lead",
                    "notes": f"new {i}",
                    "tags": ["trial"],
                    "amount": 50,
                }
            )
        self.save()

    def cycle(self) -> dict[str, Any]:
        scratch = self.folder / "scratch"
        scratch.mkdir(exist_ok=True)
        storage = KillingStorage(self.folder / "sync.sqlite", self.killer)
        rec = Reconciler(
            self.sync,
            storage,
            clock=self.clock,
            retry=RetrySettings(sleep=lambda _: None),
            max_delete_fraction=0.25,
            scratch_dir=str(scratch),
        )
        report = rec.run_cycle()
        storage.close()
        return report.to_dict()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("step", choices=["setup", "drift", "cycle"])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--at", type=datetime.fromisoformat, required=True)
    parser.add_argument("--kill", default="none")
    args = parser.parse_args(argv)
    world = World(args.folder, args.seed, args.at, args.kill)
    if args.step == "setup":
        world.setup()
    elif args.step == "drift":
        world.drift()
    else:
        print(json.dumps(world.cycle(), sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
