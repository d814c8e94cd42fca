"""The fast loop reads once per claimed batch, not once per event, with the same outcomes.

A worker claims the pending events of many records at once. What their checks need (links,
order times, echo entries, the escalated items of their records) is read ahead for the whole
batch: a few queries, however many events the batch holds. A storage without the optional
:class:`~syncrecon.storage.BatchReadStore` role is read per event, with the same outcomes.
Events of one record in one batch still see what the earlier ones of the batch decided.
"""

from __future__ import annotations

import collections
from datetime import timedelta
from typing import Any

import pytest

from fastloop_helpers import World
from syncrecon import Side, Status
from syncrecon.storage import Storage
from syncrecon.webhooks._process import batch_reads

READS = ("get_links", "get_field_times", "find_echo", "find_echoes")
"""The three reads each event made before they were read ahead per batch (and the bulk one)."""
ONE_EACH = {"get_links": 1, "get_field_times": 1, "find_echo": 0, "find_echoes": 1}
WITHOUT_ROLE = ("find_echoes", "active_items_of")


class Counting:
    """Forwards every attribute to a storage and counts the calls, by method name.

    ``hide`` names methods the wrapped storage is made to lack (a user's own storage without
    the optional role)."""

    def __init__(self, inner: Storage, *, hide: tuple[str, ...] = ()) -> None:
        self.inner = inner
        self.hide = hide
        self.calls: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        if name in self.hide:
            raise AttributeError(name)
        value = getattr(self.inner, name)
        if not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return value(*args, **kwargs)

        return counted


def _world(storage: Storage, *, records: int, hide: tuple[str, ...] = ()) -> tuple[World, Counting]:
    counting = Counting(storage, hide=hide)
    return World(counting, records=records, inline=False), counting  # type: ignore[arg-type]


def _drain(world: World, counting: Counting, events: int, round_: int) -> dict[str, int]:
    """``events`` new notes on as many Salesforce records, drained in one batch: the storage
    calls of the drain, by method."""
    notes = {f"s{i + 1}": f"call {round_}.{i}" for i in range(events)}
    for key, value in notes.items():
        world.right.edit(key, Notes=value)
    world.handler.handle(
        world.request("salesforce", [world.change(k, "Notes", v) for k, v in notes.items()])
    )
    counting.calls.clear()
    report = world.handler.process_pending()
    assert report.outcomes == {"applied": events}
    for key, value in notes.items():
        assert world.left.get("h" + key[1:]).fields["notes"] == value
    return dict(counting.calls)


def test_the_reads_of_a_batch_do_not_grow_with_its_events(storage: Storage) -> None:
    world, counting = _world(storage, records=50)
    assert batch_reads(counting) is counting  # type: ignore[arg-type]
    one = _drain(world, counting, 1, 1)
    fifty = _drain(world, counting, 50, 2)
    assert {name: one.get(name, 0) for name in READS} == ONE_EACH
    assert {name: fifty.get(name, 0) for name in READS} == ONE_EACH
    # Only the escalated items of the batch's records are read, not every active item.
    assert (one.get("active_items", 0), one.get("active_items_of", 0)) == (0, 1)
    # Every other call is per batch too: 50 events cost the storage what 1 does.
    assert sum(fifty.values()) == sum(one.values()), (one, fifty)


def test_a_storage_without_the_optional_role_is_read_per_event(storage: Storage) -> None:
    world, counting = _world(storage, records=50, hide=WITHOUT_ROLE)
    assert batch_reads(counting) is None  # type: ignore[arg-type]
    calls = _drain(world, counting, 50, 1)
    assert {name: calls.get(name, 0) for name in READS} == {
        "get_links": 1,
        "get_field_times": 1,
        "find_echo": 50,
        "find_echoes": 0,
    }
    assert (calls.get("active_items", 0), calls.get("active_items_of", 0)) == (1, 0)


@pytest.mark.parametrize("hide", [(), WITHOUT_ROLE], ids=["batch-reads", "per-event"])
def test_events_of_one_record_in_one_batch_see_what_the_earlier_ones_decided(
    storage: Storage, hide: tuple[str, ...]
) -> None:
    world, counting = _world(storage, records=5, hide=hide)
    # Earlier batches leave state behind: an echo entry of syncrecon's write to s1, an
    # order time on h4's notes, an escalated amount of h3.
    world.left.edit("h1", stage="won")
    world.handler.handle(world.request("hubspot", [world.change("h1", "stage", "won")]))
    t_applied = world.clock.now()
    world.right.edit("s4", Notes="newest")
    world.handler.handle(
        world.request("salesforce", [world.change("s4", "Notes", "newest", at=t_applied)])
    )
    world.right.edit("s3", Amount=500)
    world.handler.handle(world.request("salesforce", [world.change("s3", "Amount", 500)]))
    assert world.handler.process_pending().outcomes == {"applied": 2, "deferred": 1}
    assert [i.field for i in storage.list_items(statuses=[Status.ESCALATED])] == ["amount"]
    echo = storage.find_echo("deals", Side.RIGHT, "s1", "StageName", _fp("Closed Won"), _now(world))
    assert echo is not None

    # One batch, several events per record.
    world.clock.advance(10)
    at = world.clock.now()
    world.right.edit("s1", Notes="later")
    world.right.edit("s2", Notes="b")
    world.right.edit("s3", Amount=600)
    batch = [
        # s1: our own write coming back twice (a redelivery under a new id): the first spends
        # the echo entry, the second finds it spent (and the value already synced); and a
        # real change of another field of the same record, applied.
        world.change("s1", "StageName", "Closed Won", at=at),
        world.change("s1", "StageName", "Closed Won", at=at + timedelta(seconds=1)),
        world.change("s1", "Notes", "later", at=at + timedelta(seconds=2)),
        # s2: two changes of one field: the older is superseded in its batch.
        world.change("s2", "Notes", "b", at=at + timedelta(seconds=4)),
        world.change("s2", "Notes", "a", at=at + timedelta(seconds=3)),
        # s3: the field waits for an operator.
        world.change("s3", "Amount", 600, at=at),
        # s4: older than the change applied in an earlier batch.
        world.change("s4", "Notes", "old", at=t_applied - timedelta(seconds=1)),
        # s99: not linked.
        world.change("s99", "Notes", "x", at=at),
    ]
    world.handler.handle(world.request("salesforce", batch))
    counting.calls.clear()
    report = world.handler.process_pending()
    assert report.outcomes == {"applied": 2, "deferred": 2, "echo": 2, "stale": 2}
    assert world.left.get("h1").fields["notes"] == "later"
    assert world.left.get("h2").fields["notes"] == "b"
    assert world.left.get("h3").fields["amount"] == 102
    assert world.left.get("h4").fields["notes"] == "newest"
    assert (
        storage.find_echo("deals", Side.RIGHT, "s1", "StageName", _fp("Closed Won"), _now(world))
        is None
    )
    if not hide:
        assert {name: counting.calls.get(name, 0) for name in READS} == ONE_EACH
    # What the batch decided is what the next one reads: a redelivered older change of s2
    # is stale now.
    world.handler.handle(
        world.request(
            "salesforce", [world.change("s2", "Notes", "a", at=at + timedelta(seconds=3))]
        )
    )
    assert world.handler.process_pending().outcomes == {"stale": 1}


def _fp(value: Any) -> str:
    from syncrecon._codec import fingerprint

    return fingerprint(value)


def _now(world: World) -> Any:
    return world.clock.now()
