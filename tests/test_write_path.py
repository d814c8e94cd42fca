"""The write path every writer shares: the cycle, the fast loop and the operator queue.

The same test for the three callers: while a value is written to the target, the pair's
source record is claimed in the one claim space (no other writer can take it); once the
writer is done, the written value is in the echo ledger with the time of the edit it copies
(so its webhook is recognized and a later read is timed by that edit), and the claim is
released.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from fastloop_helpers import World
from syncrecon import Side
from syncrecon._codec import fingerprint
from syncrecon._write_path import record_name
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
    storage: Storage, caller: str
) -> None:
    world = World(storage)
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
    assert world.right.get("s1").fields[field] == value
    echoes = storage.echo_times("deals", [(Side.RIGHT, "s1")], world.clock.now())
    assert (Side.RIGHT, "s1", field, fingerprint(value)) in echoes
    assert echoes[(Side.RIGHT, "s1", field, fingerprint(value))] is not None
    # Released: the next writer gets the record.
    granted = storage.claim_records(
        "next", [source], now=world.clock.now(), lease=timedelta(seconds=30)
    )
    assert granted == {source}
