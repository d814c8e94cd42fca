"""syncrecon's loops as Celery tasks: in-process (``task.apply()``), then on a real Redis broker
with real ``celery worker`` and ``celery beat`` processes.

The real-worker tests run the app of ``tests/celery_test_app.py`` in a subprocess
(``celery -A celery_test_app worker --pool=solo``) over a SQLite file the test shares, and
wait on results through Redis with timeouts: no sleeps for ordering.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("celery")

from celery import Celery
from celery.beat import ScheduleEntry
from celery.schedules import BaseSchedule, crontab

from fastloop_helpers import World
from redis_server import redis_server, redis_url  # noqa: F401 (pytest fixtures)
from syncrecon import (
    ConfigurationError,
    FieldMap,
    NaturalKey,
    Reconciler,
    SchemaVersionError,
    StorageError,
    SyncDefinition,
    recency,
)
from syncrecon.integrations.celery import (
    DONE,
    PLANNED,
    SKIPPED,
    cycle_schedule,
    drain_schedule,
    prune_schedule,
    register_tasks,
    task_name,
)
from syncrecon.storage.memory import MemoryStorage
from syncrecon.testing import ManualClock, SimulatedSystem
from syncrecon.webhooks import WebhookRequest

LOGGER = "syncrecon.integrations.celery"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TESTS = Path(__file__).resolve().parent
TIMEOUT = 60  # seconds a result may take (a worker's start included); never a measure


def _app() -> Celery:
    app = Celery(f"test-{uuid.uuid4().hex[:8]}", set_as_current=False)
    app.conf.update(broker_url="memory://", result_backend="cache+memory://")
    return app


def _reconciler(storage: MemoryStorage | None = None) -> Reconciler:
    clock = ManualClock(NOW)
    left = SimulatedSystem("left", clock=clock)
    right = SimulatedSystem("right", clock=clock)
    left.create({"email": "a@example.com", "note": "x"})
    right.create({"email": "a@example.com", "note": "y"})
    sync = SyncDefinition(
        name="s",
        left=left,
        right=right,
        fields=[FieldMap(left="note", right="note", policy=recency())],
        natural_key=NaturalKey(left="email", right="email"),
    )
    return Reconciler(sync, storage or MemoryStorage(), clock=clock)


class FailingStorage(MemoryStorage):
    """A memory storage whose lease calls fail ``failures`` times first."""

    def __init__(self, failures: int, error: type[StorageError] = StorageError) -> None:
        super().__init__()
        self.failures = failures
        self.error = error
        self.attempts = 0

    def acquire_lease(self, *args: Any, **kwargs: Any) -> bool:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise self.error("the database is unreachable")
        result: bool = super().acquire_lease(*args, **kwargs)
        return result


# -- registering --------------------------------------------------------------------------------


def test_the_tasks_names_and_options() -> None:
    app = _app()
    tasks = register_tasks(app, _reconciler(), storage_retries=5)
    assert (tasks.cycle.name, tasks.drain.name, tasks.prune.name) == (
        "syncrecon.cycle",
        "syncrecon.drain",
        "syncrecon.prune",
    )
    assert task_name("cycle") == "syncrecon.cycle"
    assert task_name("drain", "ops") == "ops.drain"
    for task in (tasks.cycle, tasks.drain, tasks.prune):
        assert task.serializer == "json"
        assert task.acks_late is True
        assert app.tasks[task.name].name == task.name
    assert tasks.cycle.max_retries == 5
    with pytest.raises(ValueError, match="kind"):
        task_name("cycles")


def test_the_tasks_are_not_added_to_other_apps() -> None:
    register_tasks(_app(), _reconciler())
    other = _app()
    other.finalize()
    assert "syncrecon.cycle" not in other.tasks


def test_a_namespace_and_task_options_of_ones_own() -> None:
    app = _app()
    tasks = register_tasks(
        app,
        _reconciler(),
        namespace="crm",
        cycle_options={"soft_time_limit": 600, "rate_limit": "1/m"},
    )
    assert tasks.cycle.name == "crm.cycle"
    assert tasks.cycle.soft_time_limit == 600
    assert tasks.cycle.rate_limit == "1/m"
    assert tasks.drain.soft_time_limit is None


def test_bad_registrations_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"package\.module:attribute"):
        register_tasks(_app(), "no_colon_here")
    with pytest.raises(ValueError, match="negative"):
        register_tasks(_app(), _reconciler(), storage_retries=-1)
    with pytest.raises(ValueError, match="positive"):
        register_tasks(_app(), _reconciler(), retry_delay=timedelta(0))


# -- the tasks, run in this process ---------------------------------------------------------------


def test_a_cycle_task_returns_its_report_as_json() -> None:
    rec = _reconciler()
    tasks = register_tasks(_app(), rec)
    result = tasks.cycle.apply(args=["s"])
    assert result.successful()
    value = result.get()
    assert json.loads(json.dumps(value)) == value  # what the JSON result backend keeps
    assert value["status"] == DONE
    assert value["sync"] == "s"
    assert value["report"]["new_links"] == 1
    [record] = rec.storage.list_cycles(sync="s")
    assert value["report"]["cycle_id"] == record.id
    # With one reconciler the sync may be left out.
    assert tasks.cycle.apply().get()["status"] == DONE


def test_a_sharded_cycle_task_sends_a_shard_task_per_shard() -> None:
    app = _app()
    app.conf.task_always_eager = True  # the shard tasks run here, as a worker would run them
    rec = _reconciler()
    left, right = rec.sync.left, rec.sync.right
    assert isinstance(left, SimulatedSystem)
    assert isinstance(right, SimulatedSystem)
    rec.run_cycle()  # links the pair (its notes differ: an open conflict)
    rec.clock.advance(60)  # type: ignore[attr-defined]
    right.edit(next(iter(right.records())), note="x")  # settled by hand
    rec.run_cycle()  # the agreed value is the base
    rec.clock.advance(60)  # type: ignore[attr-defined]
    left.edit(next(iter(left.records())), note="changed")
    rec.clock.advance(60)  # type: ignore[attr-defined]
    tasks = register_tasks(app, rec)
    value = tasks.cycle.apply(args=["s"], kwargs={"shards": 2}).get()
    assert json.loads(json.dumps(value)) == value
    assert value["status"] == PLANNED
    assert value["shards"] == 2
    assert len(value["shard_tasks"]) == 2
    # The shards ran (eagerly) and the last one finished the cycle: one more cycle stored,
    # with the change written, and no plan left open.
    cycles = rec.storage.list_cycles(sync="s")
    assert len(cycles) == 3
    assert cycles[0].id == value["cycle_id"]
    assert cycles[0].report["writes"] == {"left": 0, "right": 1}
    assert dict(next(iter(right.records().values())).fields)["note"] == "changed"
    assert rec.storage.open_shard_plans("s") == []  # type: ignore[attr-defined]
    # A shard run again is done already: a result without a report.
    again = tasks.shard.apply(args=["s", value["cycle_id"], 0]).get()
    assert (again["status"], again["report"]) == (DONE, None)
    with pytest.raises(ConfigurationError, match="dry run"):
        tasks.cycle.apply(args=["s"], kwargs={"shards": 2, "dry_run": True}).get()


def test_a_held_lease_is_a_skip_logged_at_info_not_a_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = _reconciler()
    until = NOW + timedelta(hours=1)
    assert rec.storage.acquire_lease(rec.lease_name, "someone-else", timedelta(hours=1), NOW)
    tasks = register_tasks(_app(), rec)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = tasks.cycle.apply(args=["s"])
    assert result.state == "SUCCESS"
    value = result.get()
    assert value["status"] == SKIPPED
    assert value["sync"] == "s"
    assert value["lease"] == "cycle:s"
    assert value["holder"] == "someone-else"
    assert value["until"] == until.isoformat()
    assert rec.storage.list_cycles(sync="s") == []
    [log] = [r for r in caplog.records if r.name == LOGGER]
    assert log.levelno == logging.INFO
    assert "skipped: another worker holds the lease" in log.getMessage()


def test_a_storage_error_is_retried_with_celerys_retry(caplog: pytest.LogCaptureFixture) -> None:
    storage = FailingStorage(failures=2)
    rec = _reconciler(storage)
    tasks = register_tasks(_app(), rec, storage_retries=3)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        result = tasks.cycle.apply(args=["s"])
    assert result.get()["status"] == DONE
    assert storage.attempts == 3
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 2
    assert "storage error, retry 1 of 3 in 30 s" in messages[0]
    assert "retry 2 of 3 in 60 s" in messages[1]  # the delay doubles


def test_the_task_fails_once_the_retries_are_spent() -> None:
    storage = FailingStorage(failures=100)
    tasks = register_tasks(_app(), _reconciler(storage), storage_retries=2)
    result = tasks.cycle.apply(args=["s"])
    assert result.state == "FAILURE"
    assert isinstance(result.result, StorageError)
    assert storage.attempts == 3  # the first try and two retries


def test_a_schema_too_new_is_not_retried() -> None:
    storage = FailingStorage(failures=100, error=SchemaVersionError)
    tasks = register_tasks(_app(), _reconciler(storage))
    result = tasks.cycle.apply(args=["s"])
    assert isinstance(result.result, SchemaVersionError)
    assert storage.attempts == 1


def test_an_unknown_sync_fails_naming_the_known_ones() -> None:
    tasks = register_tasks(_app(), _reconciler())
    result = tasks.cycle.apply(args=["nope"])
    assert isinstance(result.result, ConfigurationError)
    assert "known: ['s']" in str(result.result)


def test_a_drain_task_processes_the_stored_events() -> None:
    world = World(MemoryStorage(), inline=False)
    world.right.edit("s1", Notes="hello")
    world.handler.handle(world.request("salesforce", [world.change("s1", "Notes", "hello")]))
    tasks = register_tasks(_app(), [world.reconciler, world.handler])
    value = tasks.drain.apply().get()
    assert value == {
        "status": DONE,
        "report": {
            "outcomes": {"applied": 1},
            "processed": 1,
            "writes": 1,
            "outbox_retried": 0,
            "outbox_exhausted": 0,
        },
    }
    assert world.left.get("h1").fields["notes"] == "hello"
    assert tasks.drain.apply().get()["report"]["processed"] == 0


def test_a_drain_without_a_handler_fails() -> None:
    tasks = register_tasks(_app(), _reconciler())
    assert isinstance(tasks.drain.apply().result, ConfigurationError)


def test_a_prune_task_prunes_every_storage() -> None:
    world = World(MemoryStorage(), inline=False)
    tasks = register_tasks(_app(), world.handler)
    assert tasks.prune.apply().get() == {
        "status": DONE,
        "removed": {"inbox": 0, "echoes": 0, "outbox": 0, "cycles": 0, "counters": 0},
    }


def test_a_factory_is_called_once_per_process() -> None:
    calls: list[int] = []

    def build() -> Reconciler:
        calls.append(1)
        return _reconciler()

    tasks = register_tasks(_app(), build)
    assert calls == []  # registering builds nothing: beat and web processes never do
    tasks.cycle.apply(args=["s"]).get()
    tasks.cycle.apply(args=["s"]).get()
    assert calls == [1]


def test_an_import_path_is_loaded_when_the_first_task_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNCRECON_TEST_CELERY_DB", str(tmp_path / "sync.sqlite"))
    monkeypatch.syspath_prepend(str(TESTS))
    tasks = register_tasks(_app(), "celery_test_app:build")
    value = tasks.cycle.apply(args=["customers"]).get()
    assert value["report"]["new_links"] == 2


def test_objects_used_in_a_forked_child_are_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from syncrecon.integrations import celery as integration

    tasks = register_tasks(_app(), _reconciler())
    monkeypatch.setattr(integration.os, "getpid", lambda: 1)  # as in a pool child
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert tasks.cycle.apply(args=["s"]).get()["status"] == DONE
        assert tasks.cycle.apply(args=["s"]).get()["status"] == DONE
    [warning] = [r for r in caplog.records if r.name == LOGGER]
    assert "forked pool child" in warning.getMessage()
    assert "import path of a function" in warning.getMessage()


def test_a_path_to_objects_made_before_the_fork_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from syncrecon.integrations import celery as integration

    module = ModuleType("prefork_sync")
    module.reconciler = _reconciler()  # type: ignore[attr-defined]
    module.build = _reconciler  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prefork_sync", module)
    shared = register_tasks(_app(), "prefork_sync:reconciler")
    built = register_tasks(_app(), "prefork_sync:build")
    for tasks in (shared, built):  # the parent runs a task, then forks
        tasks.cycle.apply(args=["s"]).get()
    monkeypatch.setattr(integration.os, "getpid", lambda: 1)  # the pool child
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        built.cycle.apply(args=["s"]).get()
        assert not caplog.records  # a factory builds new objects in the child
        shared.cycle.apply(args=["s"]).get()
    [warning] = [r for r in caplog.records if r.name == LOGGER]
    assert "forked pool child" in warning.getMessage()


def test_what_is_not_a_syncrecon_object_is_refused() -> None:
    tasks = register_tasks(_app(), lambda: 42)
    result = tasks.cycle.apply(args=["s"])
    assert isinstance(result.result, ConfigurationError)
    assert "got int" in str(result.result)
    two = register_tasks(_app(), [_reconciler(), _reconciler()])
    assert "two reconcilers of sync 's'" in str(two.cycle.apply(args=["s"]).result)


# -- beat schedules -----------------------------------------------------------------------------


def test_beat_entries_are_well_formed() -> None:
    app = _app()
    entries = {
        **cycle_schedule("customers", every=timedelta(hours=2)),
        **cycle_schedule("deals", cron="17 */4 * * mon-fri"),
        **drain_schedule(),
        **prune_schedule(),
    }
    assert entries["syncrecon:cycle:customers"] == {
        "task": "syncrecon.cycle",
        "schedule": timedelta(hours=2),
        "args": ["customers"],
        "options": {"expires": 7200.0},
    }
    deals = entries["syncrecon:cycle:deals"]
    assert deals["args"] == ["deals"]
    assert "options" not in deals  # no expiry for a crontab line unless asked
    cron = deals["schedule"]
    assert isinstance(cron, crontab)
    assert cron.minute == {17}
    assert cron.hour == {0, 4, 8, 12, 16, 20}
    assert cron.day_of_week == {1, 2, 3, 4, 5}
    assert entries["syncrecon:drain"] == {
        "task": "syncrecon.drain",
        "schedule": timedelta(seconds=5),
        "options": {"expires": 5.0},
    }
    assert entries["syncrecon:prune"]["schedule"] == timedelta(hours=1)
    assert cycle_schedule("x")["syncrecon:cycle:x"]["schedule"] == timedelta(hours=4)
    ns = drain_schedule(every=timedelta(seconds=30), expires=timedelta(seconds=10), namespace="o")
    assert ns == {
        "o:drain": {
            "task": "o.drain",
            "schedule": timedelta(seconds=30),
            "options": {"expires": 10.0},
        }
    }
    # Celery's beat takes every entry as it is.
    for name, entry in entries.items():
        parsed = ScheduleEntry(name=name, app=app, **entry)
        assert isinstance(parsed.schedule, BaseSchedule)
        assert parsed.is_due().next > 0


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        cycle_schedule("s", every=timedelta(hours=1), cron="0 * * * *")
    with pytest.raises(ValueError, match="positive"):
        cycle_schedule("s", every=timedelta(0))
    with pytest.raises(ValueError, match="five fields"):
        cycle_schedule("s", cron="0 * * *")
    with pytest.raises(ValueError):
        cycle_schedule("s", cron="99 * * * *")
    with pytest.raises(ValueError, match="positive"):
        drain_schedule(every=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="positive"):
        prune_schedule(expires=timedelta(0))


# -- a real broker, real workers ------------------------------------------------------------------


@contextlib.contextmanager
def celery_process(
    tmp_path: Path, env: dict[str, str], name: str, *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A celery_test_app <args>`` in a subprocess; its output in ``tmp_path``."""
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_test_app", *args],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # a warm shutdown: the task in hand finishes
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        print(f"--- {name} ---\n{log.read_text('utf-8', 'replace')}")


def outcome(result: Any, *processes: subprocess.Popen[bytes]) -> Any:
    """The task's return value, once a worker sent it; fails at once if a process exited."""
    from celery.exceptions import TimeoutError as ResultTimeout

    deadline = time.monotonic() + TIMEOUT
    while True:
        for process in processes:
            assert process.poll() is None, f"{process.args} exited with {process.returncode}"
        try:
            return result.get(timeout=1)
        except ResultTimeout:
            assert time.monotonic() < deadline, f"no result for {result!r} in {TIMEOUT} s"


def worker_args(name: str) -> list[str]:
    return [
        "worker",
        "--pool=solo",
        "--loglevel=INFO",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "-n",
        f"{name}-{uuid.uuid4().hex[:8]}@localhost",
    ]


@pytest.fixture
def celery_env(
    redis_url: str,  # noqa: F811 (a fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """The environment of the test app, in this process and its workers."""
    settings = {
        "SYNCRECON_TEST_CELERY_BROKER": redis_url,
        "SYNCRECON_TEST_CELERY_DB": str(tmp_path / "sync.sqlite"),
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    pythonpath = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, **settings, "PYTHONPATH": pythonpath}


@pytest.fixture
def test_app(celery_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """tests/celery_test_app.py, imported here to send tasks and wait on their results."""
    monkeypatch.syspath_prepend(str(TESTS))
    module = importlib.import_module("celery_test_app")
    module.app.conf.broker_url = celery_env["SYNCRECON_TEST_CELERY_BROKER"]
    module.app.conf.result_backend = celery_env["SYNCRECON_TEST_CELERY_BROKER"]
    yield module
    module.app.close()


def signed_change(key: str, **changes: Any) -> WebhookRequest:
    """A signed webhook from the test app's CRM: ``changes`` made to record ``key`` now."""
    app_module = sys.modules["celery_test_app"]
    data = {"id": key, "object_type": "customer", "changes": changes}
    when = datetime.now(UTC)
    body = json.dumps(
        {"type": "customer.updated", "timestamp": when.isoformat(), "data": data}
    ).encode()
    msg_id = f"msg_{uuid.uuid4().hex}"
    stamp = str(int(time.time()))
    secret = base64.b64decode(app_module.SECRET.removeprefix("whsec_"))
    mac = hmac.new(secret, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }
    return WebhookRequest(
        method="POST", url="http://127.0.0.1/webhooks/crm", headers=headers, body=body
    )


@contextlib.contextmanager
def front_door(test_app: ModuleType) -> Iterator[Any]:
    """The test app's webhook handler in this process, over the worker's SQLite file."""
    reconciler, handler = test_app.build()
    try:
        yield handler
    finally:
        reconciler.storage.close()


def test_a_real_worker_runs_cycles_and_drains(
    test_app: ModuleType, celery_env: dict[str, str], tmp_path: Path
) -> None:
    tasks = test_app.tasks
    with celery_process(tmp_path, celery_env, "worker", *worker_args("w")) as worker:
        first = outcome(tasks.cycle.delay("customers"), worker)
        assert first["status"] == DONE
        assert first["report"]["new_links"] == 2
        assert first["report"]["sync"] == "customers"

        with front_door(test_app) as handler:
            outcome(test_app.edit.delay("crm", "crm-1", {"name": "Ada King"}), worker)
            answer = handler.handle(signed_change("crm-1", name="Ada King"))
            assert answer.status == 200, answer.body
            drained = outcome(tasks.drain.delay(), worker)
            assert drained["report"]["outcomes"] == {"applied": 1}
            assert drained["report"]["writes"] == 1
            applied = [
                n
                for labels, n in handler.storage.counter_totals("webhook_events")
                if labels["outcome"] == "applied"
            ]
            assert applied == [1]  # counted in the shared storage

        billing = outcome(test_app.record.delay("billing", "bil-1"), worker)
        assert billing["full_name"] == "Ada King"  # the worker wrote the other system
        second = outcome(tasks.cycle.delay("customers"), worker)
        assert sum(second["report"]["writes"].values()) == 0  # converged


def test_a_real_worker_runs_a_sharded_cycle_sent_as_shard_tasks(
    test_app: ModuleType, celery_env: dict[str, str], tmp_path: Path
) -> None:
    from celery.result import AsyncResult

    tasks = test_app.tasks
    with celery_process(tmp_path, celery_env, "worker", *worker_args("w")) as worker:
        assert outcome(tasks.cycle.delay("customers"), worker)["report"]["new_links"] == 2
        outcome(test_app.edit.delay("crm", "crm-1", {"name": "Ada King"}), worker)
        planned = outcome(tasks.cycle.delay("customers", shards=2), worker)
        assert planned["status"] == PLANNED
        assert planned["shards"] == 2
        shards = [
            outcome(AsyncResult(task_id, app=test_app.app), worker)
            for task_id in planned["shard_tasks"]
        ]
        assert sorted(r["shard"] for r in shards) == [0, 1]
        assert {r["status"] for r in shards} == {DONE}
        [report] = [r["report"] for r in shards if r["report"] is not None]  # the finisher's
        assert report["cycle_id"] == planned["cycle_id"]
        assert report["writes"] == {"left": 0, "right": 1}
        billing = outcome(test_app.record.delay("billing", "bil-1"), worker)
        assert billing["full_name"] == "Ada King"


def test_a_real_worker_skips_a_cycle_whose_lease_is_held(
    test_app: ModuleType, celery_env: dict[str, str], tmp_path: Path
) -> None:
    with front_door(test_app) as handler:
        storage = handler.storage
        now = datetime.now(UTC)
        assert storage.acquire_lease("cycle:customers", "another-host", timedelta(hours=1), now)
        with celery_process(tmp_path, celery_env, "worker", *worker_args("w")) as worker:
            result = test_app.tasks.cycle.delay("customers")
            value = outcome(result, worker)
            assert result.state == "SUCCESS"
            assert result.retries == 0  # a skip is not retried
            assert value["status"] == SKIPPED
            assert value["holder"] == "another-host"
            assert storage.list_cycles(sync="customers") == []
        log = (tmp_path / "worker.log").read_text("utf-8")
        assert "skipped: another worker holds the lease" in log


def test_beat_sends_the_drain_to_a_real_worker(
    test_app: ModuleType, celery_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**celery_env, "SYNCRECON_TEST_CELERY_BEAT": "0.5"}
    beat_args = ["beat", "--loglevel=INFO", "-s", str(tmp_path / "beat-schedule")]
    with (
        celery_process(tmp_path, env, "worker", *worker_args("w")) as worker,
        front_door(test_app) as handler,
    ):
        # A cycle links the records first (sent by the test; beat only drains here).
        outcome(test_app.tasks.cycle.delay("customers"), worker)
        outcome(test_app.edit.delay("crm", "crm-2", {"name": "Alan M. Turing"}), worker)
        assert handler.handle(signed_change("crm-2", name="Alan M. Turing")).status == 200
        with celery_process(tmp_path, env, "beat", *beat_args) as beat:

            def applied() -> int:
                return sum(
                    n
                    for labels, n in handler.storage.counter_totals("webhook_events")
                    if labels["outcome"] == "applied"
                )

            deadline = time.monotonic() + TIMEOUT
            while applied() < 1:  # waiting on an outcome, with a timeout; not ordering
                assert time.monotonic() < deadline, "beat's drain never ran"
                assert worker.poll() is None
                assert beat.poll() is None
                time.sleep(0.05)
        billing = outcome(test_app.record.delay("billing", "bil-2"), worker)
        assert billing["full_name"] == "Alan M. Turing"
    assert "Sending due task syncrecon:drain (syncrecon.drain)" in (
        tmp_path / "beat.log"
    ).read_text("utf-8")


# -- the extra -----------------------------------------------------------------------------------


def test_without_celery_the_import_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(sys.modules):
        if name == "celery" or name.startswith("celery."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "celery", None)
    monkeypatch.delitem(sys.modules, "syncrecon.integrations.celery")
    with pytest.raises(ImportError, match=r'pip install "syncrecon\[celery\]"'):
        importlib.import_module("syncrecon.integrations.celery")


def test_import_syncrecon_does_not_import_celery() -> None:
    probe = (
        "import sys, syncrecon, syncrecon.integrations;"
        " print(sorted(m for m in sys.modules if m.startswith(('celery', 'kombu'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


# -- the example: FastAPI under two uvicorn workers, a Celery worker and beat, one PostgreSQL ----

EXAMPLE = TESTS.parent / "examples" / "fastapi_celery_postgres"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def example_process(
    tmp_path: Path, env: dict[str, str], name: str, *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m <args>`` in the example's directory; its output in ``tmp_path``."""
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", *args], cwd=EXAMPLE, env=env, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        print(f"--- {name} ---\n{log.read_text('utf-8', 'replace')}")


def until(condition: Any, what: str, *processes: subprocess.Popen[bytes]) -> None:
    """Wait (with a timeout) for ``condition()``; fail at once if a process exited."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        for process in processes:
            assert process.poll() is None, f"{process.args} exited with {process.returncode}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.postgres
def test_the_fastapi_celery_postgres_example(
    postgres_url: str,
    redis_url: str,  # noqa: F811 (a fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx

    from syncrecon.storage.postgres import PostgresStorage

    schema = f"syncrecon_test_{uuid.uuid4().hex[:12]}"
    settings = {
        "SYNCRECON_DATABASE_URL": postgres_url,
        "SYNCRECON_SCHEMA": schema,
        "CELERY_BROKER_URL": redis_url,
        "SYNCRECON_DRAIN_EVERY": "1",
    }
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    env = {**os.environ, **settings}
    for module in ("sync", "tasks", "web"):  # the example's modules, fresh for its settings
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    sync = importlib.import_module("sync")
    storage = PostgresStorage(postgres_url, schema=schema, max_size=2)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        sync.seed()
        with (
            example_process(
                tmp_path,
                env,
                "celery-worker",
                *("celery", "-A", "tasks", "worker", "--loglevel=INFO", "--concurrency=2"),
                *("--without-mingle", "--without-gossip", "-n", f"ex-{uuid.uuid4().hex[:6]}@h"),
            ) as worker,
            example_process(
                tmp_path,
                env,
                "celery-beat",
                *("celery", "-A", "tasks", "beat", "--loglevel=INFO"),
                *("-s", str(tmp_path / "beat-schedule")),
            ) as beat,
            example_process(
                tmp_path,
                env,
                "uvicorn",
                *("uvicorn", "web:create_app", "--factory", "--workers", "2"),
                *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            ) as web,
            httpx.Client(base_url=base, timeout=10, trust_env=False) as client,
        ):
            running = (worker, beat, web)

            def answers() -> bool:
                try:
                    return client.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            until(answers, "uvicorn to start", *running)

            def cycle() -> dict[str, Any]:
                sent = client.post("/reconcile")
                assert sent.status_code == 202, sent.text
                task_id = sent.json()["task_id"]
                seen: dict[str, Any] = {}

                def done() -> bool:
                    seen.update(client.get(f"/reconcile/{task_id}").json())
                    return seen["state"] in ("SUCCESS", "FAILURE")

                until(done, "the cycle task", *running)
                assert seen["state"] == "SUCCESS", seen
                assert seen["result"]["status"] == DONE, seen
                report: dict[str, Any] = seen["result"]["report"]
                return report

            assert cycle()["new_links"] == 2  # the first cycle links the customers

            # Webhooks from both systems, one of them delivered twice (a provider's retry).
            body, headers = sync.webhook(sync.crm, sync.CRM_SECRET, "crm-1", name="Ada King")
            deliveries = [client.post("/webhooks/crm", content=body, headers=headers) for _ in "ab"]
            assert [d.json() for d in deliveries] == [
                {"accepted": 1, "duplicates": 0},
                {"accepted": 0, "duplicates": 1},
            ]
            body, headers = sync.webhook(
                sync.billing, sync.BILLING_SECRET, "bil-2", plan="enterprise"
            )
            answer = client.post("/webhooks/billing", content=body, headers=headers)
            assert answer.json() == {"accepted": 1, "duplicates": 0}
            assert client.post("/webhooks/crm", content=body, headers=headers).status_code == 401
            until(
                lambda: (
                    sync.billing.fields("bil-1")["full_name"] == "Ada King"
                    and sync.crm.fields("crm-2")["plan"] == "enterprise"
                ),
                "the Celery worker to apply the webhooks",
                *running,
            )

            # A change whose webhook never came: the next cycle, through Celery, repairs it.
            sync.billing.edit("bil-2", full_name="Alan M. Turing")
            repair = cycle()
            assert repair["writes"] == {"left": 1, "right": 0}
            assert sync.crm.fields("crm-2")["name"] == "Alan M. Turing"
            assert sum(cycle()["writes"].values()) == 0  # converged

            # The operator pages, served by the same app.
            assert client.get("/ops/").status_code == 200
            assert client.get("/ops/dashboard").status_code == 200

        outcomes: dict[str, int] = {}
        for labels, amount in storage.counter_totals("webhook_events"):
            outcomes[labels["outcome"]] = outcomes.get(labels["outcome"], 0) + amount
        assert outcomes == {"applied": 2, "duplicate": 1, "rejected": 1}
        assert len(storage.list_cycles(sync="customers")) == 3
        assert "Sending due task syncrecon:drain" in (tmp_path / "celery-beat.log").read_text()
    finally:
        storage.close()
        import psycopg
        from psycopg import sql

        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for name in (schema, f"{schema}_demo"):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )
