"""``webhook_events_per_s_postgres``: how fast 1, 2 and 4 worker processes drain one inbox.

For each worker count the bench takes a fresh PostgreSQL schema (dropped afterwards) and:

1. links ``records`` pairs of generated deals (:func:`syncrecon._scenario.generated_pair`,
   the same from the seed in every process) with one reconciliation cycle, so the events
   below find their links and bases as in production;
2. fills the inbox through the front door, in this process: ``events`` signed single-event
   requests (Standard Webhooks ``v1``, the generic JSON shape: a new ``notes`` value, two
   events per record, the later one newer) answered by
   :meth:`~syncrecon.webhooks.WebhookHandler.handle` from ``FRONT_DOOR_THREADS`` threads at
   once. Their rate is ``webhook_front_door_events_per_s_postgres``: what one web process
   accepts (no HTTP);
3. starts the worker processes, ``python -m syncrecon worker
   syncrecon._bench_postgres:bench_worker`` each; every one builds its handler, opens its
   storage and waits at a gate, so that start-up is not timed;
4. opens the gate and times until the inbox has no pending event:
   ``webhook_events_per_s_postgres[str(workers)]`` is ``events`` over that time. Every event
   must have an outcome (``applied`` for most: each write goes to the worker's in-process
   copy of the generated target, with no API latency, so the figure is syncrecon's and
   PostgreSQL's own cost per event).

``webhook_drain_over_front_door_postgres`` holds each drain rate over the front door's rate of
the same run: at 1 or more the workers keep up with one web process on this machine. The
workers run with ``poll=0.05`` and no coalescing window (a full inbox drains in one round
anyway) and the handler's defaults otherwise (``batch_size=500``, ``verify_source=False``).
All processes, the bench and the server share the machine's CPUs (``cpus`` is reported).

Without a server (``SYNCRECON_BENCH_POSTGRES_URL`` or ``SYNCRECON_TEST_POSTGRES_URL``) or
without psycopg, every figure is ``None`` and ``webhook_events_per_s_postgres_reason`` says
why.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._clock import SystemClock
from ._models import Side
from ._reconciler import Reconciler
from ._scenario import deal_sync, generated_pair
from .testing import ManualClock
from .webhooks import GenericJsonParser, StandardWebhooksVerifier, WebhookHandler, WebhookSource
from .webhooks._events import WebhookRequest

if TYPE_CHECKING:
    from .storage.postgres import PostgresStorage
    from .worker import Worker

__all__ = ["bench_worker", "run_drain_bench"]

POSTGRES_VARS = ("SYNCRECON_BENCH_POSTGRES_URL", "SYNCRECON_TEST_POSTGRES_URL")
SETTINGS_VAR = "SYNCRECON_BENCH_DRAIN"
"""How a worker process finds its run (JSON: url, schema, records, seed, folder)."""
WORKER_APP = "syncrecon._bench_postgres:bench_worker"
WORKER_COUNTS = (1, 2, 4)
EVENTS = 4000
RECORDS = 2000
FRONT_DOOR_THREADS = 8
POLL = 0.05
TIMEOUT = 120.0
SECRET = "whsec_" + base64.b64encode(b"syncrecon-drain-bench-secret-32b").decode()
SOURCE = "hubspot"
URL = f"https://app.example.com/webhooks/{SOURCE}"


def _postgres_url() -> str | None:
    for var in POSTGRES_VARS:
        url = os.environ.get(var, "").strip()
        if url:
            return url
    return None


def _handler(storage: PostgresStorage, *, records: int, seed: int) -> WebhookHandler:
    """The webhook handler of every process of a run: generated deals, HubSpot's webhooks."""
    clock = ManualClock(datetime.now(UTC))  # stamps the generated systems' own writes only
    hubspot, salesforce = generated_pair(records, seed, clock)
    return WebhookHandler(
        [
            WebhookSource(
                name=SOURCE,
                sync=deal_sync(hubspot, salesforce),
                side=Side.LEFT,
                verifier=StandardWebhooksVerifier(secrets=[SECRET]),
                parser=GenericJsonParser(system=SOURCE),
                object_type="deal",
            )
        ],
        storage,
        clock=SystemClock(),  # leases are compared across processes: the wall clock
    )


def _sign(n: int, body: bytes, now: datetime) -> WebhookRequest:
    """A Standard Webhooks ``v1`` request carrying ``body``."""
    msg_id = f"msg_{n:08d}"
    stamp = str(int(now.timestamp()))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        "content-type": "application/json",
    }
    return WebhookRequest(method="POST", url=URL, headers=headers, body=body)


def _requests(events: int, records: int, now: datetime) -> list[WebhookRequest]:
    """One request per event: event ``n`` gives record ``n % records`` a new note; a later
    event of a record is newer (a user who edits a deal twice)."""
    out = []
    for n in range(events):
        change = {
            "type": "deal.updated",
            "timestamp": (now + timedelta(microseconds=n)).isoformat(),
            "data": {
                "id": f"hs-{n % records}",
                "object_type": "deal",
                "changes": {"notes": f"bench note {n}"},
            },
        }
        out.append(_sign(n, json.dumps(change, separators=(",", ":")).encode(), now))
    return out


def bench_worker() -> Worker:  # pragma: no cover - runs in the worker processes
    """The app of ``python -m syncrecon worker syncrecon._bench_postgres:bench_worker``.

    Reads its run from ``SYNCRECON_BENCH_DRAIN``, builds the handler, says it is ready and
    waits for the gate to open, then returns the :class:`~syncrecon.worker.Worker`.
    """
    from .storage.postgres import PostgresStorage
    from .worker import Worker

    run = json.loads(os.environ[SETTINGS_VAR])
    storage = PostgresStorage(run["url"], schema=run["schema"], min_size=1, max_size=2)
    handler = _handler(storage, records=run["records"], seed=run["seed"])
    folder = Path(run["folder"])
    (folder / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + TIMEOUT
    while not (folder / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the bench never opened the gate")
        time.sleep(0.002)
    return Worker(handler=handler, poll=POLL, coalesce=0.0, retention=None)


def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextlib.contextmanager
def _workers(
    count: int, folder: Path, run: dict[str, Any]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` worker processes, stopped (SIGINT, as Ctrl-C) when the block ends."""
    env = {**os.environ, SETTINGS_VAR: json.dumps(run)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(count):
            with (folder / f"worker-{i}.out").open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "syncrecon", "worker", WORKER_APP],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=folder,
                        env=env,
                    )
                )
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _check_alive(folder: Path, procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for i, proc in enumerate(procs):
        if proc.poll() is not None:
            tail = (folder / f"worker-{i}.out").read_text("utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"worker {i} exited with {proc.returncode}:\n{tail}")


def _fill(handler: WebhookHandler, requests: Sequence[WebhookRequest]) -> float:
    """Hand every request to the front door from ``FRONT_DOOR_THREADS`` threads: seconds."""

    def answer(request: WebhookRequest) -> int:
        return handler.handle(request).status

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=FRONT_DOOR_THREADS) as pool:
        statuses = list(pool.map(answer, requests))
    seconds = time.perf_counter() - began
    refused = len(statuses) - statuses.count(200)
    if refused:
        raise RuntimeError(f"the front door refused {refused} of the bench's own requests")
    return seconds


def drain_run(
    url: str, *, workers: int, events: int = EVENTS, records: int = RECORDS, seed: int = 1
) -> dict[str, Any]:
    """One run in a fresh schema: front door events/s, drain events/s, the outcomes."""
    import psycopg
    from psycopg import sql

    from .storage.postgres import PostgresStorage

    schema = f"syncrecon_bench_{uuid.uuid4().hex[:12]}"
    storage = PostgresStorage(url, schema=schema, min_size=1, max_size=FRONT_DOOR_THREADS + 1)
    try:
        handler = _handler(storage, records=records, seed=seed)
        sync = handler.sources[SOURCE].sync
        linked = Reconciler(sync, storage, clock=SystemClock()).run_cycle()
        if linked.new_links != records:
            raise RuntimeError(f"the first cycle linked {linked.new_links} of {records} pairs")
        requests = _requests(events, records, datetime.now(UTC))
        front_s = _fill(handler, requests)
        pending = sql.SQL("SELECT count(*) FROM {}.inbox WHERE status = 'pending'").format(
            sql.Identifier(schema)
        )
        with (
            tempfile.TemporaryDirectory(prefix="syncrecon-drain-") as name,
            psycopg.connect(url, autocommit=True) as conn,
        ):
            folder = Path(name)
            run = {"url": url, "schema": schema, "records": records, "seed": seed}
            with _workers(workers, folder, {**run, "folder": name}) as procs:
                deadline = time.monotonic() + TIMEOUT
                while len(list(folder.glob("ready-*"))) < workers:
                    _check_alive(folder, procs)
                    if time.monotonic() > deadline:
                        raise RuntimeError("the workers did not start")
                    time.sleep(0.01)
                began = time.perf_counter()
                (folder / "go").touch()
                while True:
                    row = conn.execute(pending).fetchone()
                    if row is not None and row[0] == 0:
                        break
                    _check_alive(folder, procs)
                    if time.monotonic() > deadline + TIMEOUT:
                        raise RuntimeError(f"the inbox still has {row} pending events")
                    time.sleep(0.005)
                drain_s = time.perf_counter() - began
        outcomes: dict[str, int] = {}
        for labels, n in storage.counter_totals("webhook_events"):
            outcomes[labels["outcome"]] = outcomes.get(labels["outcome"], 0) + n
        if sum(outcomes.values()) != events:
            raise RuntimeError(f"{events} events sent, outcomes {outcomes}")
    finally:
        storage.close()
        _drop_schema(url, schema)
    return {
        "workers": workers,
        "front_door_events_per_s": round(events / front_s, 1),
        "drain_events_per_s": round(events / drain_s, 1),
        "drain_s": round(drain_s, 3),
        "outcomes": dict(sorted(outcomes.items())),
    }


def run_drain_bench(
    *,
    url: str | None = None,
    workers: Sequence[int] = WORKER_COUNTS,
    events: int = EVENTS,
    records: int = RECORDS,
    seed: int = 1,
) -> dict[str, Any]:
    """``webhook_events_per_s_postgres`` per worker count and the front door's rate beside it
    (see the module's docstring); ``None`` figures with a ``..._reason`` when it cannot run."""
    import importlib.util

    settings = {
        "events": events,
        "records": records,
        "front_door_threads": FRONT_DOOR_THREADS,
        "worker_poll_s": POLL,
        "api_latency_ms": 0,
        "cpus": os.cpu_count(),
    }
    url = url or _postgres_url()
    why = None
    if url is None:
        why = f"no PostgreSQL server: set {POSTGRES_VARS[0]} or {POSTGRES_VARS[1]}"
    elif importlib.util.find_spec("psycopg") is None:
        why = "psycopg is not installed (pip install 'syncrecon[postgres]')"
    if why is not None:
        return {
            "webhook_events_per_s_postgres": None,
            "webhook_events_per_s_postgres_reason": why,
            "webhook_front_door_events_per_s_postgres": None,
            "webhook_drain_over_front_door_postgres": None,
            "webhook_drain_postgres_settings": settings,
        }
    assert url is not None
    runs = [
        drain_run(url, workers=count, events=events, records=records, seed=seed)
        for count in workers
    ]
    front = statistics.median(r["front_door_events_per_s"] for r in runs)
    return {
        "webhook_events_per_s_postgres": {str(r["workers"]): r["drain_events_per_s"] for r in runs},
        "webhook_front_door_events_per_s_postgres": round(front, 1),
        "webhook_drain_over_front_door_postgres": {
            str(r["workers"]): round(r["drain_events_per_s"] / r["front_door_events_per_s"], 2)
            for r in runs
        },
        "webhook_drain_postgres_runs": runs,
        "webhook_drain_postgres_settings": settings,
    }


if __name__ == "__main__":  # pragma: no cover - a manual run
    print(json.dumps(run_drain_bench(), indent=2, sort_keys=True))
