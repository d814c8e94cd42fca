"""Creates are idempotent across retries and crashes ("Correct at the edges", section 5).

A create the server applied but whose answer was lost (a read timeout) used to be created again
by the whole-method retry: 3 creates became 6 rows, then 3 ``possible_duplicate`` escalations.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from syncrecon import (
    Change,
    FieldMap,
    NaturalKey,
    PermanentError,
    Reconciler,
    RetrySettings,
    Side,
    SyncDefinition,
    WriteResult,
    recency,
)
from syncrecon.storage import Storage
from syncrecon.testing import ManualClock, SimulatedSystem

KINDS = {
    "plain": {},  # neither: no retry of a create in the cycle, the next sweep links it
    "idempotent": {"idempotent_creates": True},  # Stripe's Idempotency-Key
    "finds_created": {"finds_created": True},  # an external id holding the key
}


def _setup(
    storage: Storage, clock: ManualClock, right: SimulatedSystem, n: int = 3
) -> tuple[SimulatedSystem, Reconciler]:
    left = SimulatedSystem("crm", clock=clock, key_prefix="l")
    for i in range(n):
        left.create({"email": f"p{i}@x.com", "notes": f"n{i}"})
    sync = SyncDefinition(
        name="deals",
        left=left,
        right=right,
        fields=[FieldMap(left="notes", right="notes", policy=recency())],
        natural_key=NaturalKey(left="email", right="email"),
        create_on=["right"],
    )
    rec = Reconciler(sync, storage, clock=clock, retry=RetrySettings(sleep=lambda s: None))
    return left, rec


def _one_record_each(storage: Storage, right: SimulatedSystem, n: int) -> None:
    emails = sorted(r.fields["email"] for r in right.records().values())
    assert emails == [f"p{i}@x.com" for i in range(n)]  # exactly one record per create
    assert storage.count_links("deals") == n
    assert storage.list_items(sync="deals", category="possible_duplicate") == []
    left_keys = [link.left_key for batch in storage.iter_links("deals") for link in batch]
    assert storage.get_intents("deals", Side.RIGHT, left_keys) == {}  # every intent settled


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("lost", [1, 3, 10])
def test_a_create_whose_answer_is_lost_makes_one_record(
    storage: Storage, clock: ManualClock, kind: str, lost: int
) -> None:
    right = SimulatedSystem("billing", clock=clock, key_prefix="r", **KINDS[kind])
    _, rec = _setup(storage, clock, right)
    right.lose_response_next("write_records", lost)
    rec.run_cycle()
    clock.advance(60)
    rec.run_cycle()  # the next full sweep settles whatever was left ambiguous
    _one_record_each(storage, right, 3)
    clock.advance(60)
    assert rec.run_cycle().total_writes == 0


def test_each_create_carries_a_stable_idempotency_key(storage: Storage, clock: ManualClock) -> None:
    right = SimulatedSystem("billing", clock=clock, key_prefix="r", idempotent_creates=True)
    seen: list[list[str | None]] = []
    right.on_call(
        "write_records", lambda changes: seen.append([c.idempotency_key for c in changes])
    )
    _, rec = _setup(storage, clock, right)
    right.lose_response_next("write_records", 2)
    rec.run_cycle()
    assert len(seen) == 3  # two lost answers, then the answer
    assert seen[0] == seen[1] == seen[2]
    assert all(seen[0])
    assert len(set(seen[0])) == 3
    _one_record_each(storage, right, 3)


class _Killed(BaseException):
    """A SIGKILL stand-in: nothing after it runs, no ``except Exception`` catches it."""


class KilledAfterCreate(SimulatedSystem):
    """Applies one create batch, then the process 'dies' before syncrecon hears the answer."""

    kill_next = False

    def write_records(self, changes: Sequence[Change]) -> Sequence[WriteResult]:
        results = super().write_records(changes)
        if self.kill_next and any(c.key is None for c in changes):
            self.kill_next = False
            raise _Killed
        return results


@pytest.mark.parametrize("kind", ["idempotent", "finds_created"])
def test_a_crash_between_the_create_and_its_commit_makes_one_record(
    storage: Storage, clock: ManualClock, kind: str
) -> None:
    right = KilledAfterCreate("billing", clock=clock, key_prefix="r", **KINDS[kind])
    right.kill_next = True
    _, rec = _setup(storage, clock, right)
    with pytest.raises(_Killed):
        rec.run_cycle()
    assert storage.count_links("deals") == 0  # the links were never committed
    # The lease of the dead cycle would expire; and the target's search index has not caught
    # up, so the next sweep cannot match the new records by natural key.
    held = storage.lease_holder(rec.lease_name)
    if held is not None:
        storage.release_lease(rec.lease_name, held[0])
    right.hide_from_listing(*right.records())
    clock.advance(60)
    rec.run_cycle()
    _one_record_each(storage, right, 3)


def test_a_definite_rejection_forgets_the_intent(storage: Storage, clock: ManualClock) -> None:
    right = SimulatedSystem("billing", clock=clock, key_prefix="r", finds_created=True)
    _, rec = _setup(storage, clock, right, n=1)
    right.fail_next("write_records", PermanentError("400 bad request"))
    report = rec.run_cycle()
    assert report.write_failures == 1
    assert right.calls.get("find_created", 0) == 0
    clock.advance(60)
    rec.run_cycle()  # created now, without a lookup first: nothing can have landed
    assert right.calls.get("find_created", 0) == 0
    _one_record_each(storage, right, 1)
