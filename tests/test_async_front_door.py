"""The two front doors: ``arun_cycle()`` for async hosts, ``run_cycle()`` for sync ones.

Connectors may be plain ``def`` or ``async def``; both doors accept both, and the sync door
also works inside a running event loop (a notebook cell, a sync view in an async server).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

from syncrecon import (
    AsyncConnector,
    Change,
    Connector,
    FieldInfo,
    FieldMap,
    NaturalKey,
    Page,
    Reconciler,
    Record,
    RetrySettings,
    Storage,
    SyncDefinition,
    TransientError,
    WriteResult,
    escalate,
    merge,
    recency,
    source_of_truth,
)
from syncrecon.testing import ManualClock, SimulatedSystem


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class AsyncSystem:
    """An ``async def`` connector over a simulated system; remembers where it ran."""

    def __init__(self, system: SimulatedSystem) -> None:
        self.system = system
        self.name = system.name
        self.capabilities = system.capabilities
        self.loops: set[int] = set()
        self.threads: set[int] = set()

    async def _enter(self) -> None:
        self.loops.add(id(asyncio.get_running_loop()))
        self.threads.add(threading.get_ident())
        await anyio.sleep(0)  # a real await: yield to the loop as network I/O would

    async def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        await self._enter()
        return self.system.list_records(since=since, cursor=cursor)

    async def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        await self._enter()
        return self.system.read_records(keys)

    async def write_records(self, changes: Sequence[Change]) -> Sequence[WriteResult]:
        await self._enter()
        return self.system.write_records(changes)

    async def describe_fields(self) -> Sequence[FieldInfo]:
        await self._enter()
        return self.system.describe_fields()


def _thread_recorder(seen: set[int]) -> Callable[[Any], None]:
    def record(_: Any) -> None:
        seen.add(threading.get_ident())

    return record


class Scene:
    """A small deterministic scenario: linked records with a fix for every rule."""

    def __init__(self, storage: Storage, *, left_async: bool, right_async: bool) -> None:
        self.clock = ManualClock(tick=timedelta(milliseconds=1))
        self.storage = storage
        self.left = SimulatedSystem("crm", clock=self.clock, page_size=3, max_write_batch=2)
        self.right = SimulatedSystem("erp", clock=self.clock, page_size=4, max_write_batch=2)
        self.threads: dict[str, set[int]] = {"crm": set(), "erp": set()}
        for system in (self.left, self.right):
            for method in ("list_records", "read_records", "write_records"):
                system.on_call(method, _thread_recorder(self.threads[system.name]))
        self.left_connector: Any = AsyncSystem(self.left) if left_async else self.left
        self.right_connector: Any = AsyncSystem(self.right) if right_async else self.right
        self.keys: list[tuple[str, str]] = []
        for i in range(8):
            self.clock.advance(10)
            values = {"stage": "lead", "notes": f"n{i}", "tags": ["a"], "amount": i}
            lkey = self.left.create({"email": f"p{i}@example.com", **values})
            rkey = self.right.create({"mail": f"P{i}@example.com", **values})
            self.keys.append((lkey, rkey))
        self.clock.advance(10)
        self.left.edit(self.keys[0][0], stage="won")
        self.clock.advance(10)
        self.right.edit(self.keys[1][1], notes="newer")
        self.clock.advance(10)
        self.left.edit(self.keys[2][0], tags=["a", "b"])
        self.right.edit(self.keys[2][1], tags=["c"])
        self.right.edit(self.keys[3][1], amount=99)
        self.left.create({"email": "new@example.com", "stage": "won", "notes": "", "tags": []})
        self.sleeps: list[float] = []
        sync = SyncDefinition(
            name="doors",
            left=self.left_connector,
            right=self.right_connector,
            fields=[
                FieldMap(left="stage", right="stage", policy=source_of_truth("left")),
                FieldMap(left="notes", right="notes", policy=recency()),
                FieldMap(left="tags", right="tags", policy=merge()),
                FieldMap(left="amount", right="amount", policy=escalate("amount")),
            ],
            natural_key=NaturalKey(left="email", right="mail"),
            create_on=["right"],
        )
        self.rec = Reconciler(
            sync, storage, clock=self.clock, retry=RetrySettings(sleep=self.sleeps.append)
        )

    def check_converged(self, report: Any) -> None:
        assert report.auto_resolved == {
            "create_on": 1,
            "merge": 1,
            "recency": 1,
            "source_of_truth": 1,
        }
        assert report.escalated == {"amount": 1}
        assert report.created == {"left": 0, "right": 1}
        (_, r0), (l1, _), (l2, r2) = self.keys[:3]
        assert self.right.get(r0).fields["stage"] == "won"
        assert self.left.get(l1).fields["notes"] == "newer"
        assert self.left.get(l2).fields["tags"] == ["a", "b", "c"]
        assert self.right.get(r2).fields["tags"] == ["a", "b", "c"]
        assert len(self.right) == 9


KINDS = [
    pytest.param((False, False), id="plain"),
    pytest.param((True, True), id="async"),
    pytest.param((True, False), id="mixed"),
]


def test_the_connector_protocols_are_met() -> None:
    clock = ManualClock()
    assert isinstance(SimulatedSystem("a", clock=clock), Connector)
    assert isinstance(AsyncSystem(SimulatedSystem("a", clock=clock)), AsyncConnector)


def test_both_doors_take_the_same_arguments() -> None:
    sync_params = inspect.signature(Reconciler.run_cycle).parameters
    async_params = inspect.signature(Reconciler.arun_cycle).parameters
    assert list(sync_params) == list(async_params)
    for name, param in sync_params.items():
        assert (param.kind, param.default) == (async_params[name].kind, async_params[name].default)
    assert inspect.iscoroutinefunction(Reconciler.arun_cycle)


# -- the async door -----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kinds", KINDS)
async def test_arun_cycle_runs_with_async_and_plain_connectors(
    storage: Storage, kinds: tuple[bool, bool]
) -> None:
    scene = Scene(storage, left_async=kinds[0], right_async=kinds[1])
    loop_thread = threading.get_ident()

    report = await scene.rec.arun_cycle()

    scene.check_converged(report)
    assert (await scene.rec.arun_cycle()).total_writes == 0
    loop = id(asyncio.get_running_loop())
    for connector, system in ((scene.left_connector, "crm"), (scene.right_connector, "erp")):
        if isinstance(connector, AsyncSystem):
            # async def methods run on the host's event loop...
            assert connector.loops == {loop}
            assert connector.threads == {loop_thread}
        else:
            # ...and plain ones in a worker thread, never blocking the loop.
            assert loop_thread not in scene.threads[system]


@pytest.mark.anyio
async def test_arun_cycle_leaves_the_event_loop_free_while_a_plain_connector_works(
    storage: Storage,
) -> None:
    scene = Scene(storage, left_async=False, right_async=False)
    ticked = threading.Event()
    waited: list[bool] = []

    def waits_for_the_loop(_: Any) -> None:
        if not waited:  # the loop must make progress while this call blocks its thread
            waited.append(ticked.wait(timeout=10))

    scene.left.on_call("list_records", waits_for_the_loop)

    async def ticker() -> None:
        await anyio.sleep(0)
        ticked.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        report = await scene.rec.arun_cycle()

    assert waited == [True]
    scene.check_converged(report)


@pytest.mark.anyio
async def test_arun_cycle_retries_an_async_connector(storage: Storage) -> None:
    scene = Scene(storage, left_async=True, right_async=True)
    scene.right.fail_next("write_records", TransientError("503"))
    scene.left.rate_limit_next("list_records", retry_after=2)

    report = await scene.rec.arun_cycle()

    scene.check_converged(report)
    assert report.write_failures == 0
    assert 2.0 in scene.sleeps
    assert report.api_calls["crm"] == scene.left.total_calls
    assert report.api_calls["erp"] == scene.right.total_calls


# -- the sync door --------------------------------------------------------------------------------


@pytest.mark.parametrize("kinds", KINDS)
def test_run_cycle_runs_with_async_and_plain_connectors(
    storage: Storage, kinds: tuple[bool, bool]
) -> None:
    scene = Scene(storage, left_async=kinds[0], right_async=kinds[1])

    report = scene.rec.run_cycle()

    scene.check_converged(report)
    assert scene.rec.run_cycle().total_writes == 0


@pytest.mark.parametrize("kinds", KINDS)
def test_run_cycle_works_inside_a_running_event_loop(
    storage: Storage, kinds: tuple[bool, bool]
) -> None:
    """A notebook cell: sync code called while the kernel's event loop is running."""
    scene = Scene(storage, left_async=kinds[0], right_async=kinds[1])

    def cell() -> Any:
        return scene.rec.run_cycle()

    async def kernel() -> tuple[Any, Any]:
        host_loop = asyncio.get_running_loop()
        report = cell()
        assert asyncio.get_running_loop() is host_loop
        return report, cell()

    report, again = asyncio.run(kernel())

    scene.check_converged(report)
    assert again.total_writes == 0


# -- parity ----------------------------------------------------------------------------------------


def _numbers(report: Any) -> dict[str, Any]:
    out: dict[str, Any] = report.to_dict()
    for name in ("cycle_id", "timings", "dry_run"):
        out.pop(name)
    return out


@pytest.mark.parametrize("kinds", KINDS)
@pytest.mark.parametrize("dry_run", [False, True], ids=["real", "dry"])
def test_both_doors_report_the_same_numbers(
    memory_storage: Storage,
    sqlite_storage: Storage,
    kinds: tuple[bool, bool],
    dry_run: bool,
) -> None:
    by_sync = Scene(memory_storage, left_async=kinds[0], right_async=kinds[1])
    by_async = Scene(sqlite_storage, left_async=kinds[0], right_async=kinds[1])

    sync_reports = [by_sync.rec.run_cycle(dry_run=dry_run) for _ in range(2)]

    async def host() -> list[Any]:
        return [await by_async.rec.arun_cycle(dry_run=dry_run) for _ in range(2)]

    async_reports = anyio.run(host)

    for a, b in zip(sync_reports, async_reports, strict=True):
        assert _numbers(a) == _numbers(b)
    assert {k: r.fields for k, r in by_sync.left.records().items()} == {
        k: r.fields for k, r in by_async.left.records().items()
    }
    assert {k: r.fields for k, r in by_sync.right.records().items()} == {
        k: r.fields for k, r in by_async.right.records().items()
    }
    assert by_sync.left.calls == by_async.left.calls
    assert by_sync.right.calls == by_async.right.calls
