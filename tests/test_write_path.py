"""The write path every writer shares: the cycle, the fast loop and the operator queue.

The same test for the three callers: while a value is written to the target, the pair's
source record is claimed in the one claim space (no other writer can take it); once the
writer is done, the written value is in the echo ledger with the time of the edit it copies
(so its webhook is recognized and a later read is timed by that edit), the claim is
released, and the write went through the one apply path
(:func:`syncrecon._write_path.apply_writes`). That path itself is tested once, for all three:
what becomes of each planned write (held, changed, source moved on, failed, written).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fastloop_helpers import World
from syncrecon import Side, _write_path
from syncrecon._codec import fingerprint
from syncrecon._connector import Caller, RetrySettings
from syncrecon._write_path import Applied, PlannedWrite, apply_writes, record_name
from syncrecon.queue import OperatorQueue
from syncrecon.storage import Storage

CALLERS = ["cycle", "fast_loop", "queue"]


def _write_once(world: World, caller: str) -> tuple[str, str, Any]:
    """Make ``caller`` write one value to the right record ``s1``: (target field, value)."""
    if caller == "cycle":
        world.left.edit("h1", notes="from the cycle")
        world.clock.advance(60)
        report = world.reconciler.run_cycle()
        assert report.writes == {"left": 0, "right": 1}
        return "Notes", "from the cycle", None
    if caller == "fast_loop":
        world.left.edit("h1", notes="from a webhook")
        response = world.handler.handle(
            world.request("hubspot", [world.change("h1", "notes", "from a webhook")])
        )
        assert response.status == 200
        return "Notes", "from a webhook", None
    world.left.edit("h1", amount=999)  # escalate("deal_value"): an operator decides
    world.clock.advance(60)
    world.reconciler.run_cycle()
    queue = OperatorQueue(world.storage, [world.sync], clock=world.clock)
    (item,) = queue.list(field="amount")
    assert item.id is not None
    queue.resolve(item.id, take="left", by="ada")
    return "Amount", 999, None


@pytest.mark.parametrize("caller", CALLERS)
def test_every_writer_claims_writes_and_remembers_the_same_way(
    storage: Storage, caller: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(storage)
    through_the_apply_path: list[list[str | None]] = []
    write = _write_path.write_batch_or_failures

    def spy(caller_: Caller, connector: Any, changes: Any) -> Any:
        through_the_apply_path.append([c.key for c in changes])
        return write(caller_, connector, changes)

    monkeypatch.setattr(_write_path, "write_batch_or_failures", spy)
    source = record_name("deals", Side.LEFT, "h1")
    during: list[set[str]] = []

    def while_writing(_: object) -> None:
        # Another writer (a worker, a cycle) asks for the pair's source record now.
        during.append(
            storage.claim_records(
                "intruder", [source], now=world.clock.now(), lease=timedelta(seconds=30)
            )
        )

    world.right.on_call("write_records", while_writing)
    field, value, _ = _write_once(world, caller)

    assert during == [set()], "the source record was not claimed during the write"
    assert through_the_apply_path == [["s1"]], "the write did not take the one apply path"
    assert world.right.get("s1").fields[field] == value
    echoes = storage.echo_times("deals", [(Side.RIGHT, "s1")], world.clock.now())
    assert (Side.RIGHT, "s1", field, fingerprint(value)) in echoes
    assert echoes[(Side.RIGHT, "s1", field, fingerprint(value))] is not None
    # Released: the next writer gets the record.
    granted = storage.claim_records(
        "next", [source], now=world.clock.now(), lease=timedelta(seconds=30)
    )
    assert granted == {source}


def test_the_one_apply_path_re_reads_compares_remembers_and_writes(storage: Storage) -> None:
    """The engine every caller above goes through, once for all: per planned write, held,
    changed since it was read, source moved on, failed or written; the echoes of the writes
    it makes are remembered before the write call, one read and one write call per side."""
    world = World(storage)
    sync, right = world.sync, world.right
    now = world.clock.now()
    world.right.edit("s3", Notes="edited meanwhile")  # changed since it was read
    world.left.edit("h4", notes="moved on")  # the source of s4's write moved on
    right.reject("s5", "Notes is locked")  # failed
    reads_before, writes_before = (
        right.calls.get("read_records", 0),
        right.calls.get("write_records", 0),
    )
    left_reads_before = world.left.calls.get("read_records", 0)

    def planned(i: int, value: str) -> PlannedWrite:
        return PlannedWrite(
            side=Side.RIGHT,
            key=f"s{i}",
            fields={"Notes": value},
            expected={"Notes": f"n{i - 1}"},
            held=lambda record: record.fields.get("Notes") == value,
            source_times={"Notes": now},
            source_key=f"h{i}",
            source_holds=lambda record: record.fields.get("notes") == f"n{i - 1}",
            ref=f"w{i}",
        )

    plans = [
        planned(1, "n0"),  # already held
        planned(2, "new 2"),  # written
        planned(3, "new 3"),  # changed since read
        planned(4, "new 4"),  # source moved on
        planned(5, "new 5"),  # rejected
    ]
    remembered: list[tuple[int, list[tuple[str, str]]]] = []

    def remember(echoes: list[Any]) -> None:
        remembered.append(
            (right.calls.get("write_records", 0), sorted((e.key, e.field) for e in echoes))
        )

    with Caller(RetrySettings(sleep=lambda _: None)) as caller:
        outcomes = apply_writes(
            caller, sync, plans, now=lambda: now, echo_ttl=timedelta(minutes=5), remember=remember
        )

    assert [o.kind for o in outcomes] == [
        Applied.HELD,
        Applied.WRITTEN,
        Applied.CHANGED,
        Applied.SOURCE_MOVED,
        Applied.FAILED,
    ]
    assert outcomes[2].current is not None
    assert outcomes[2].current.fields["Notes"] == "edited meanwhile"  # the value now there
    assert outcomes[3].source is not None
    assert outcomes[3].source.fields["notes"] == "moved on"
    assert "Notes is locked" in str(outcomes[4].error)
    assert not outcomes[4].retryable
    # Echoes of the writes it makes only, remembered before the write call.
    assert remembered == [(writes_before, [("s2", "Notes"), ("s5", "Notes")])]
    assert right.get("s2").fields["Notes"] == "new 2"
    assert right.get("s3").fields["Notes"] == "edited meanwhile"
    assert right.get("s4").fields["Notes"] == "n3"
    # One read of the targets, one of the sources, one write.
    assert right.calls.get("read_records", 0) - reads_before == 1
    assert world.left.calls.get("read_records", 0) - left_reads_before == 1
    assert right.calls.get("write_records", 0) - writes_before == 1


def test_the_one_apply_path_writes_nothing_when_asked_all_or_nothing(storage: Storage) -> None:
    world = World(storage)
    world.right.edit("s1", Notes="edited meanwhile")
    writes_before = world.right.calls.get("write_records", 0)
    left_writes_before = world.left.calls.get("write_records", 0)
    plans = [
        PlannedWrite(side=side, key=key, fields={name: "x"}, expected={name: "n0"})
        for side, key, name in ((Side.LEFT, "h1", "notes"), (Side.RIGHT, "s1", "Notes"))
    ]
    with Caller(RetrySettings(sleep=lambda _: None)) as caller:
        outcomes = apply_writes(
            caller,
            world.sync,
            plans,
            now=world.clock.now,
            echo_ttl=timedelta(minutes=5),
            all_or_nothing=True,
        )
    assert [o.kind for o in outcomes] == [Applied.NOT_WRITTEN, Applied.CHANGED]
    assert world.left.get("h1").fields["notes"] == "n0"
    assert world.left.calls.get("write_records", 0) == left_writes_before  # not even tried
    assert world.right.calls.get("write_records", 0) == writes_before
