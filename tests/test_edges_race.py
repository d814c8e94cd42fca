"""A cycle that reads a record between a fast-loop write and that write's commit.

The last open part of the multi-worker issue, forced deterministically in one process. A
field changes on the left to ``v`` at ``t_e`` (webhook E), then to ``v2`` at ``t2``. A worker
processes E and writes ``v`` to the right at ``w > t2``; the right system stamps the field
with ``w``. Before the worker commits (the base, the order guard's time), a cycle reads both
systems: left ``v2 @ t2``, right ``v @ w``. Recency must compare the edits (``t2`` against
``t_e``), not the write: ``v2`` wins on both sides and nothing old is written back.

The fast loop records each write's echo entry (the value and the time of the edit it copies)
in its own commit before it calls the connector; the cycle looks the entries of a batch up in
one storage call and times a side that holds such a value by the edit it copies.

With copies timed honestly, the cycle's order guard (a recency decision older than a change
the fast loop applied is deferred) must not wait for a change whose value is gone from both
systems: the last two tests hold it to changes made while the cycle runs.

Every time comes from a manual clock; the interleaving is made by hooks, never by sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastloop_helpers import World
from syncrecon import CycleReport, Side
from syncrecon.storage import Step, Storage
from syncrecon.webhooks import WebhookHandler, fingerprint

SKEW_CLEAR = 10.0  # seconds between edits: well over recency's skew tolerance (5 s)


class _BeforeCommit:
    """A storage that runs ``hook`` once, right before the first commit that settles events
    (the fast loop's batch commit: after its connector writes, before its base moves)."""

    def __init__(self, inner: Storage, hook: Callable[[], None]) -> None:
        self._inner = inner
        self._hook: Callable[[], None] | None = hook

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def commit(self, step: Step) -> list[int]:
        if step.events_done and self._hook is not None:
            hook, self._hook = self._hook, None
            hook()
        return self._inner.commit(step)


def _once(action: Callable[[], None]) -> Callable[[Any], None]:
    done: list[bool] = []

    def hook(_argument: Any) -> None:
        if not done:
            done.append(True)
            action()

    return hook


class _Race:
    """One linked pair (``h1`` <-> ``s1``, notes by recency); the left's notes become ``v``
    at ``t_e``, and E, its webhook, waits in the inbox. While the worker writes ``v`` to the
    right, the user's newer edit ``v2`` lands on the left (after the worker's re-reads, so
    ``verify_source`` cannot see it), and the write itself is stamped ``SKEW_CLEAR`` s later."""

    def __init__(self, storage: Storage) -> None:
        self.w = World(storage, records=1, inline=False)
        self.clock = self.w.clock
        self.w.handler.verify_source = True
        self.clock.advance(60)
        self.w.left.edit("h1", notes="v")
        self.t_e = self.w.left.get("h1").modified_at
        assert self.t_e is not None
        self.post("hubspot", "h1", "notes", "v", self.t_e)
        self.t2: datetime | None = None
        self.w.right.on_call("write_records", _once(self._user_edits_again))
        self.cycle: CycleReport | None = None

    def post(self, source: str, key: str, field: str, value: Any, at: datetime) -> None:
        request = self.w.request(source, [self.w.change(key, field, value, at=at)])
        assert self.w.handler.handle(request).status == 200

    def _user_edits_again(self) -> None:
        self.clock.advance(SKEW_CLEAR)
        self.w.left.edit("h1", notes="v2")
        self.t2 = self.w.left.get("h1").modified_at
        self.clock.advance(SKEW_CLEAR)  # the worker's write lands well after the newer edit

    def run_cycle(self) -> None:
        self.clock.advance(1)
        self.cycle = self.w.reconciler.run_cycle()

    def notes(self) -> tuple[Any, Any]:
        return self.w.left.get("h1").fields["notes"], self.w.right.get("s1").fields["Notes"]

    def values_written_to_left(self) -> list[Any]:
        return [e.fields["notes"] for e in self.w.left.write_log if "notes" in e.fields]


def test_a_cycle_between_a_fast_loop_write_and_its_commit_keeps_the_newer_edit(
    storage: Storage,
) -> None:
    race = _Race(storage)
    race.w.handler.storage = _BeforeCommit(storage, race.run_cycle)  # type: ignore[assignment]

    report = race.w.handler.process_pending()

    assert report.outcomes == {"applied": 1}  # the worker wrote v, then committed
    assert race.t2 is not None
    assert race.w.right.get("s1").modified_at > race.t2  # the right's time is the write's
    assert race.cycle is not None
    # The cycle saw left v2 @ t2 against right v, whose edit is t_e < t2: the newer edit wins,
    # but the worker still holds the record (it has not committed): the cycle leaves it.
    assert dict(race.cycle.writes) == {"left": 0, "right": 0}, race.cycle
    assert race.cycle.skipped_changed == 1
    assert race.values_written_to_left() == []  # no stale write of v over v2
    race.clock.advance(1)
    after = race.w.reconciler.run_cycle()  # the worker has committed: the next cycle writes
    assert dict(after.writes) == {"left": 0, "right": 1}, after
    assert race.values_written_to_left() == []
    assert race.notes() == ("v2", "v2")
    race.clock.advance(1)
    assert race.w.reconciler.run_cycle().total_writes == 0  # a fixed point
    assert race.notes() == ("v2", "v2")


def test_the_fast_loop_records_a_writes_edit_time_before_the_write(storage: Storage) -> None:
    race = _Race(storage)
    seen: list[dict[Any, datetime]] = []
    race.w.right.on_call(
        "write_records",
        lambda _changes: seen.append(
            storage.echo_times("deals", [(Side.RIGHT, "s1")], race.clock.now())
        ),
    )

    race.w.handler.process_pending()

    assert seen == [{(Side.RIGHT, "s1", "Notes", fingerprint("v")): race.t_e}]


def test_an_echo_that_comes_back_before_the_commit_still_times_the_value(
    storage: Storage,
) -> None:
    """The write's own webhook reaches another worker inside the window: it is recognized as
    an echo (the entry exists before the write) and spent, yet it still tells the cycle that
    ran next the time of the edit the right's value copies."""
    race = _Race(storage)
    other = WebhookHandler(race.w.handler.sources.values(), storage, clock=race.clock)

    def echo_then_cycle() -> None:
        written = race.w.right.get("s1").modified_at
        assert written is not None
        race.post("salesforce", "s1", "Notes", "v", written)
        assert other.process_pending().outcomes == {"echo": 1}
        race.run_cycle()

    race.w.handler.storage = _BeforeCommit(storage, echo_then_cycle)  # type: ignore[assignment]
    race.w.handler.process_pending()

    assert race.cycle is not None
    assert dict(race.cycle.writes) == {"left": 0, "right": 0}, race.cycle  # the worker holds it
    assert race.values_written_to_left() == []
    race.clock.advance(1)
    assert dict(race.w.reconciler.run_cycle().writes) == {"left": 0, "right": 1}
    assert race.values_written_to_left() == []
    assert race.notes() == ("v2", "v2")


def test_a_cycles_own_writes_carry_the_edit_time_they_copy(storage: Storage) -> None:
    w = World(storage, records=1, inline=False)
    w.clock.advance(60)
    w.left.edit("h1", notes="from the left")
    edited = w.left.get("h1").modified_at
    w.clock.advance(60)

    assert dict(w.reconciler.run_cycle().writes) == {"left": 0, "right": 1}

    found = storage.echo_times("deals", [(Side.RIGHT, "s1")], w.clock.now())
    assert found == {(Side.RIGHT, "s1", "Notes", fingerprint("from the left")): edited}


def test_a_pre_recorded_entry_whose_write_failed_is_harmless(storage: Storage) -> None:
    """The write is refused after its entry was recorded: the right never holds ``v``, so
    the entry times nothing; the cycle copies the left's edit as it always did."""
    w = World(storage, records=1, inline=False)
    w.clock.advance(60)
    w.left.edit("h1", notes="v")
    edited = w.left.get("h1").modified_at
    assert edited is not None
    request = w.request("hubspot", [w.change("h1", "notes", "v", at=edited)])
    assert w.handler.handle(request).status == 200
    w.right.reject("s1")

    assert w.handler.process_pending().outcomes == {"deferred": 1}
    assert w.right.get("s1").fields["Notes"] == "n0"
    w.right.faults.rejected.clear()
    w.clock.advance(SKEW_CLEAR)
    w.right.edit("s1", Notes="newer on the right")
    w.clock.advance(SKEW_CLEAR)

    # Both changed since the base: the right's own edit (not the failed write) is newer.
    assert dict(w.reconciler.run_cycle().writes) == {"left": 1, "right": 0}
    assert w.left.get("h1").fields["notes"] == "newer on the right"


def test_an_order_time_whose_value_is_gone_does_not_hold_a_field_forever(
    storage: Storage,
) -> None:
    """The right's notes become ``r1`` (t1) and a worker copies it to the left. While it
    writes (after its re-reads), the user edits the right to ``r2`` (t2) and the left to
    ``l3`` (t3), and the copy lands over ``l3`` (a race no writer can see). ``l3``'s webhook
    then finds the left no longer holding ``l3``: stale, but the field's order time is now t3,
    newer than every value either system still holds. The next cycles must still settle the
    field (``r2``, the newest edit left, wins), not defer to t3 forever."""
    w = World(storage, records=1, inline=False)
    w.handler.verify_source = True
    w.clock.advance(60)
    w.right.edit("s1", Notes="r1")
    t1 = w.right.get("s1").modified_at
    assert t1 is not None
    request = w.request("salesforce", [w.change("s1", "Notes", "r1", at=t1)])
    assert w.handler.handle(request).status == 200
    edits: dict[str, datetime] = {}

    def users_edit_both_sides() -> None:
        for system, key, name, value in (
            (w.right, "s1", "Notes", "r2"),
            (w.left, "h1", "notes", "l3"),
        ):
            w.clock.advance(SKEW_CLEAR)
            system.edit(key, **{name: value})
            at = system.get(key).modified_at
            assert at is not None
            edits[value] = at
        w.clock.advance(SKEW_CLEAR)

    w.left.on_call("write_records", _once(users_edit_both_sides))
    assert w.handler.process_pending().outcomes == {"applied": 1}
    assert w.left.get("h1").fields["notes"] == "r1"  # over l3: the race
    request = w.request("hubspot", [w.change("h1", "notes", "l3", at=edits["l3"])])
    assert w.handler.handle(request).status == 200
    assert w.handler.process_pending().outcomes == {"stale": 1}  # the left holds r1, not l3

    w.clock.advance(1)
    first = w.reconciler.run_cycle()
    w.clock.advance(1)
    second = w.reconciler.run_cycle()

    assert (w.left.get("h1").fields["notes"], w.right.get("s1").fields["Notes"]) == ("r2", "r2")
    assert (first.total_writes, second.total_writes) == (1, 0)


def test_a_change_made_while_a_cycle_runs_defers_its_recency_decision(storage: Storage) -> None:
    """The guard the previous test must not trip forever still holds where it belongs: both
    sides changed (left ``l1`` newer than right ``r1``); the cycle lists the left, then the
    user changes the left again (``l2``) and a worker takes its webhook (a conflict: the right
    changed too) before the cycle lists the right. The cycle's ``l1`` is older than a change
    made while it ran: it is not written (even without ``verify_source``), and the next cycle
    settles ``l2``."""
    w = World(storage, records=1, inline=False)
    w.reconciler.verify_source = False
    w.clock.advance(60)
    w.right.edit("s1", Notes="r1")
    w.clock.advance(SKEW_CLEAR)
    w.left.edit("h1", notes="l1")  # both webhooks lost
    w.clock.advance(SKEW_CLEAR)

    def user_edits_the_left_again() -> None:
        w.clock.advance(1)
        w.left.edit("h1", notes="l2")
        at = w.left.get("h1").modified_at
        assert at is not None
        request = w.request("hubspot", [w.change("h1", "notes", "l2", at=at)])
        assert w.handler.handle(request).status == 200
        assert w.handler.process_pending().outcomes == {"deferred": 1}  # a conflict

    w.right.on_call("list_records", _once(user_edits_the_left_again))
    first = w.reconciler.run_cycle()
    assert (first.total_writes, first.skipped_changed) == (0, 1)
    assert [e.fields for e in w.right.write_log] == []  # l1 was never written
    w.clock.advance(1)
    assert dict(w.reconciler.run_cycle().writes) == {"left": 0, "right": 1}
    assert (w.left.get("h1").fields["notes"], w.right.get("s1").fields["Notes"]) == ("l2", "l2")
