"""Convergence properties of the slow loop over random record sets, rules and edits.

Hypothesis draws the rule set, the sides records may be created on, the storage backend and a
``seed``; everything else (page and batch sizes, records, values, edits, clock steps) comes
from ``random.Random(seed)``. Every assertion message starts with the call that replays the
scenario, and hypothesis prints its ``@reproduce_failure`` blob on a failure.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from syncrecon import (
    MISSING,
    FieldMap,
    NaturalKey,
    Reconciler,
    RetrySettings,
    Side,
    Status,
    SyncDefinition,
    escalate,
    merge,
    recency,
    source_of_truth,
    value_map,
)
from syncrecon.storage.memory import MemoryStorage
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import ManualClock, SimulatedSystem

SYNC = "prop"
SKEW = timedelta(seconds=5)
STEP = timedelta(seconds=10)  # by default every edit is further from the last than the skew
RULES = (
    "sot_left",
    "sot_right",
    "sot_left_unless_blank",
    "sot_right_unless_blank",
    "recency",
    "merge",
    "escalate",
)
SCALARS = (None, "a", "b", "c")
ITEMS = ("x", "y", "z", "w")
PICKLIST = value_map({"a": "Alpha", "b": "Bravo", "c": "Charlie"})
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def _policy(rule: str) -> Any:
    if rule.startswith("sot_"):
        side = rule.split("_")[1]
        return source_of_truth(side, unless_blank=rule.endswith("unless_blank"))
    if rule == "recency":
        return recency(skew=SKEW)
    if rule == "merge":
        return merge()
    return escalate("manual_review")


def _blank(value: Any) -> bool:
    return value is None or value is MISSING or value == "" or value == []


def _same(a: Any, b: Any) -> bool:
    return (_blank(a) and _blank(b)) or a == b


def _same_items(a: Any, b: Any) -> bool:
    return _same(a, b) or sorted(map(repr, _as_list(a))) == sorted(map(repr, _as_list(b)))


def _as_list(value: Any) -> list[Any]:
    return [] if _blank(value) else list(value)


def _merge3(left: Any, right: Any, base: Any) -> list[Any]:
    """The three-way, order-stable union, written independently of syncrecon's."""
    lv, rv = _as_list(left), _as_list(right)
    removed_from = None if base is MISSING else set(_as_list(base))
    out: list[Any] = []
    for item in lv + rv:
        if item in out:
            continue
        if removed_from is not None and item in removed_from and (item not in lv or item not in rv):
            continue
        out.append(item)
    return out


def _expect(rule: str, left: Any, right: Any, base: Any, lt: Any, rt: Any) -> tuple[str, Any]:
    """What the rule defines: ("agree", value), ("fix", value) or ("escalate", category)."""
    if _same(left, right):
        return ("agree", left)
    if rule.startswith("sot_"):
        winner, other = (left, right) if rule.startswith("sot_left") else (right, left)
        if rule.endswith("unless_blank") and _blank(winner):
            return ("fix", other)
        return ("fix", winner)
    if rule == "recency":
        if base is not MISSING:
            lchanged, rchanged = not _same(left, base), not _same(right, base)
            if lchanged != rchanged:
                return ("fix", left if lchanged else right)
        if lt is None or rt is None or abs(lt - rt) <= SKEW:
            return ("escalate", "unresolved_conflict")
        return ("fix", left if lt > rt else right)
    if rule == "merge":
        if _same_items(left, right):
            return ("agree", left)  # the same items in another order: a list is a set
        return ("fix", _merge3(left, right, base))
    return ("escalate", "manual_review")


class Scenario:
    """Two simulated systems with random records, a random rule set, and an oracle."""

    def __init__(
        self,
        seed: int,
        rules: Sequence[str],
        create_on: Sequence[str],
        backend: str,
        step: timedelta = STEP,
    ) -> None:
        self.seed = seed
        self.rules = tuple(rules)
        self.step = step
        self.replay = (
            f"replay: Scenario(seed={seed}, rules={self.rules!r}, create_on={tuple(create_on)!r},"
            f" backend={backend!r}, step={step!r})"
        )
        self.rng = rng = random.Random(seed)
        self.clock = ManualClock()
        self.names = [f"f{i}" for i in range(len(rules))]
        self.transforms = {
            name: PICKLIST if i == 0 and rules[0] != "merge" else None
            for i, name in enumerate(self.names)
        }

        def system(name: str) -> SimulatedSystem:
            size = rng.randint(1, 4)
            return SimulatedSystem(
                name,
                clock=self.clock,
                page_size=rng.randint(1, 5),
                max_read_batch=size,
                max_write_batch=rng.randint(1, 4),
                field_timestamps=rng.random() < 0.5,
            )

        self.left, self.right = system("lefty"), system("righty")
        fields = []
        for name, rule in zip(self.names, rules, strict=True):
            transform = self.transforms[name]
            extra: dict[str, Any] = {} if transform is None else {"transform": transform}
            fields.append(FieldMap(left=name, right=name.upper(), policy=_policy(rule), **extra))
        self.sync = SyncDefinition(
            name=SYNC,
            left=self.left,
            right=self.right,
            fields=fields,
            natural_key=NaturalKey(left="email", right="EMAIL"),
            create_on=create_on,
        )
        self.storage = MemoryStorage() if backend == "memory" else SQLiteStorage(":memory:")
        self.rec = Reconciler(
            self.sync, self.storage, clock=self.clock, retry=RetrySettings(sleep=lambda _: None)
        )
        self.create_on = set(create_on)
        self.lefts: list[str] = []  # every left key, for storage snapshots
        self.rights: list[str] = []
        self.pairs: list[tuple[str, str]] = []
        self.singles: list[tuple[str, str]] = []  # (side, key) not linked at the start

        n_pairs, n_left, n_right = rng.randint(0, 7), rng.randint(0, 2), rng.randint(0, 2)
        emails = [f"person{i}@example.com" for i in range(n_pairs + n_left + n_right)]
        for i in range(n_pairs):
            self.pairs.append((self._add("left", emails[i]), self._add("right", emails[i])))
        for i in range(n_left):
            self.singles.append(("left", self._add("left", emails[n_pairs + i])))
        for i in range(n_right):
            self.singles.append(("right", self._add("right", emails[n_pairs + n_left + i])))

    # -- building ----------------------------------------------------------------------------

    def _value(self, name: str) -> Any:
        if self.rules[self.names.index(name)] == "merge":
            if self.rng.random() < 0.15:
                return None
            return self.rng.sample(ITEMS, self.rng.randint(0, 3))
        return self.rng.choice(SCALARS)

    def _to_right(self, name: str, value: Any) -> Any:
        transform = self.transforms[name]
        return value if transform is None else transform.to_right(value)

    def _to_left(self, name: str, value: Any) -> Any:
        transform = self.transforms[name]
        return value if transform is None else transform.to_left(value)

    def _add(self, side: str, email: str) -> str:
        self.clock.advance(self.step)
        values = {name: self._value(name) for name in self.names}
        if side == "left":
            key = self.left.create({"email": email, **values})
            self.lefts.append(key)
        else:
            shown = self.rng.choice([email, email.upper(), f" {email.title()} "])
            key = self.right.create(
                {"EMAIL": shown, **{n.upper(): self._to_right(n, v) for n, v in values.items()}}
            )
            self.rights.append(key)
        return key

    def edit(self) -> None:
        """Random user edits on either side (or both) of linked records."""
        for _ in range(self.rng.randint(1, 6)):
            if not self.pairs:
                return
            lkey, rkey = self.rng.choice(self.pairs)
            name = self.rng.choice(self.names)
            where = self.rng.choice(["left", "right", "both"])
            if where in ("left", "both"):
                self.clock.advance(self.step)
                self.left.edit(lkey, **{name: self._value(name)})
            if where in ("right", "both"):
                self.clock.advance(self.step)
                self.right.edit(rkey, **{name.upper(): self._to_right(name, self._value(name))})
        self.clock.advance(self.step)

    # -- observing ---------------------------------------------------------------------------

    def _left_values(self, key: str) -> dict[str, Any]:
        record = self.left.get(key)
        return {n: record.fields.get(n) for n in self.names}

    def _right_values(self, key: str) -> dict[str, Any]:
        record = self.right.get(key)
        return {n: self._to_left(n, record.fields.get(n.upper())) for n in self.names}

    def _writes(self) -> int:
        return len(self.left.write_log) + len(self.right.write_log)

    def snapshot(self) -> dict[str, Any]:
        links = self.storage.get_links(SYNC, Side.LEFT, self.lefts)
        rlinks = self.storage.get_links(SYNC, Side.RIGHT, self.rights)
        return {
            "links": {k: (v.right_key, v.natural_key, dict(v.base)) for k, v in links.items()},
            "rlinks": sorted(rlinks),
            "count": self.storage.count_links(SYNC),
            "items": sorted(
                (i.id, i.status, i.field, i.left_key, i.right_key, i.times_seen, i.note)
                for i in self.storage.list_items(sync=SYNC, limit=100_000)
            ),
            "state": self.storage.get_sync_state(SYNC),
            "cycles": len(self.storage.list_cycles(sync=SYNC)),
        }

    def _predict(self) -> dict[str, Any]:
        """The state the policies define for this cycle, computed from what the cycle will read."""
        linked = self.storage.get_links(SYNC, Side.LEFT, [lk for lk, _ in self.pairs])
        active = self.storage.active_items(SYNC)
        fields: dict[tuple[str, str, str], tuple[str, Any, Any, Any]] = {}
        auto: dict[str, int] = {}
        escalated: dict[str, int] = {}
        found = 0
        for lkey, rkey in self.pairs:
            link = linked.get(lkey)
            base = dict(link.base) if link is not None else {}
            lrec, rrec = self.left.get(lkey), self.right.get(rkey)
            left, right = self._left_values(lkey), self._right_values(rkey)
            for name, rule in zip(self.names, self.rules, strict=True):
                kind, value = _expect(
                    rule,
                    left[name],
                    right[name],
                    base.get(name, MISSING),
                    lrec.modified(name)[0],
                    rrec.modified(name.upper())[0],
                )
                prior = active.get((SYNC, lkey, rkey, name))
                if prior is not None and prior.status is Status.ESCALATED and kind != "agree":
                    # An escalated field waits for an operator, whatever the rule says now.
                    kind, value = "escalate", prior.category
                fields[(lkey, rkey, name)] = (kind, value, left[name], right[name])
                if kind == "agree":
                    continue
                found += 1
                if kind == "fix":
                    rule_name = "source_of_truth" if rule.startswith("sot_") else rule
                    auto[rule_name] = auto.get(rule_name, 0) + 1
                else:
                    escalated[value] = escalated.get(value, 0) + 1
        creates = [
            (side, key)
            for side, key in self.singles
            if ("right" if side == "left" else "left") in self.create_on
        ]
        if creates:
            found += len(creates)
            auto["create_on"] = len(creates)
        return {
            "fields": fields,
            "auto": dict(sorted(auto.items())),
            "escalated": dict(sorted(escalated.items())),
            "found": found,
            "creates": creates,
            "new_links": sum(1 for lk, _ in self.pairs if lk not in linked),
        }

    # -- the properties ------------------------------------------------------------------------

    def cycle(self, label: str) -> None:
        ctx = f"{self.replay} [{label}]"
        prediction = self._predict()

        # A dry run writes nothing and leaves storage as it was.
        before, writes_before = self.snapshot(), self._writes()
        dry = self.rec.run_cycle(dry_run=True)
        assert self._writes() == writes_before, f"{ctx}: the dry run wrote to a system"
        assert self.snapshot() == before, f"{ctx}: the dry run changed storage"

        report = self.rec.run_cycle()

        for name in ("discrepancies_found", "auto_resolved", "escalated", "new_links"):
            assert getattr(dry, name) == getattr(report, name), f"{ctx}: dry run differs on {name}"
        assert report.write_failures == 0, f"{ctx}: {report}"
        assert report.skipped_changed == 0, f"{ctx}: {report}"
        assert report.new_links == prediction["new_links"], f"{ctx}: {report}"
        assert report.discrepancies_found == prediction["found"], f"{ctx}: {report}"
        assert dict(report.auto_resolved) == prediction["auto"], f"{ctx}: {report}"
        assert dict(report.escalated) == prediction["escalated"], f"{ctx}: {report}"

        self._check_fields(ctx, prediction)
        self._check_creates(ctx, prediction)

        # A converged sync is a fixed point: the next cycle writes nothing.
        writes_before = self._writes()
        again = self.rec.run_cycle()
        assert again.total_writes == 0, f"{ctx}: second cycle wrote: {again}"
        assert self._writes() == writes_before, f"{ctx}: second cycle wrote to a system"
        assert dict(again.auto_resolved) == {}, f"{ctx}: {again}"
        assert dict(again.escalated) == prediction["escalated"], f"{ctx}: {again}"

    def _check_fields(self, ctx: str, prediction: dict[str, Any]) -> None:
        links = self.storage.get_links(SYNC, Side.LEFT, [lk for lk, _ in self.pairs])
        active = {
            (i.left_key, i.right_key, i.field): i for i in self.storage.active_items(SYNC).values()
        }
        escalations = set()
        for (lkey, rkey, name), (kind, value, left0, right0) in prediction["fields"].items():
            where = f"{ctx}: {lkey}/{rkey} field {name} ({kind} {value!r})"
            left, right = self._left_values(lkey)[name], self._right_values(rkey)[name]
            link = links.get(lkey)
            assert link is not None, f"{where}: not linked"
            assert link.right_key == rkey, f"{where}: linked to {link.right_key}"
            if kind == "escalate":
                escalations.add((lkey, rkey, name))
                assert left == left0, f"{where}: escalated left changed to {left!r}"
                assert right == right0, f"{where}: escalated right changed to {right!r}"
                item = active.get((lkey, rkey, name))
                assert item is not None, f"{where}: no queue item"
                assert item.status is Status.ESCALATED, f"{where}: {item}"
                assert item.category == value, f"{where}: {item}"
                continue
            # A list field is a set of items: each system may keep its own order.
            same = _same_items if self.rules[self.names.index(name)] == "merge" else _same
            assert same(left, value), f"{where}: left is {left!r}"
            assert same(right, value), f"{where}: right is {right!r}"
            assert same(link.base.get(name), value), f"{where}: base is {link.base!r}"
        assert set(active) == escalations, f"{ctx}: active items {sorted(active)}"

    def _check_creates(self, ctx: str, prediction: dict[str, Any]) -> None:
        for side, key in list(self.singles):
            where = f"{ctx}: {side} single {key}"
            links = self.storage.get_links(SYNC, Side(side), [key])
            if (side, key) not in prediction["creates"]:
                assert links == {}, f"{where}: linked without a create"
                continue
            link = links.get(key)
            assert link is not None, f"{where}: not created and linked"
            lkey, rkey = link.left_key, link.right_key
            assert (lkey, rkey) == ((key, rkey) if side == "left" else (lkey, key)), where
            left, right = self._left_values(lkey), self._right_values(rkey)
            for name in self.names:
                assert _same(left[name], right[name]), f"{where}: {name} {left} != {right}"
                assert _same(link.base.get(name, MISSING), left[name]), f"{where}: base"
            email = self.left.get(lkey).fields["email"], self.right.get(rkey).fields["EMAIL"]
            assert email[0].strip().casefold() == email[1].strip().casefold(), f"{where}: {email}"
            self.singles.remove((side, key))
            self.pairs.append((lkey, rkey))
            if side == "left":
                self.rights.append(rkey)
            else:
                self.lefts.append(lkey)

    def play(self, rounds: int = 2) -> None:
        self.replay += f".play({rounds})"
        self.clock.advance(self.step)
        self.cycle("first cycle")
        for n in range(rounds):
            self.clock.advance(timedelta(minutes=1))
            self.edit()
            self.cycle(f"round {n + 1}")
        self.storage.close()


rule_sets = st.lists(st.sampled_from(RULES), min_size=3, max_size=4)
create_sides = st.sampled_from([(), ("left",), ("right",), ("left", "right")])
backends = st.sampled_from(["memory", "sqlite"])
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@SETTINGS
@given(
    seed=seeds,
    rules=rule_sets,
    create_on=create_sides,
    backend=backends,
    rounds=st.integers(1, 3),
)
def test_cycles_reach_the_policies_state_and_then_write_nothing(
    seed: int, rules: list[str], create_on: tuple[str, ...], backend: str, rounds: int
) -> None:
    Scenario(seed, rules, create_on, backend).play(rounds)


@settings(SETTINGS, max_examples=25)
@given(seed=seeds, rules=rule_sets, backend=backends)
def test_a_dry_run_on_a_fresh_sync_writes_nothing_and_stores_nothing(
    seed: int, rules: list[str], backend: str
) -> None:
    scenario = Scenario(seed, rules, ("left", "right"), backend)
    before = scenario.snapshot()

    report = scenario.rec.run_cycle(dry_run=True)

    assert scenario._writes() == 0, scenario.replay
    assert scenario.snapshot() == before, scenario.replay
    assert scenario.storage.count_links(SYNC) == 0, scenario.replay
    assert report.total_writes == 0, scenario.replay
    assert report.new_links == len(scenario.pairs), scenario.replay


@settings(SETTINGS, max_examples=60, derandomize=True, phases=[Phase.generate])
@given(
    seed=seeds,
    rules=st.lists(st.sampled_from(RULES), min_size=3, max_size=4).filter(lambda r: "recency" in r),
    create_on=create_sides,
    backend=backends,
    step=st.sampled_from([2, 3, 10]),
)
def test_escalated_fields_stay_untouched_when_edits_are_within_the_skew(
    seed: int, rules: list[str], create_on: tuple[str, ...], backend: str, step: int
) -> None:
    Scenario(seed, rules, create_on, backend, timedelta(seconds=step)).play(2)
