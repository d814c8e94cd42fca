"""Multi-worker chaos on PostgreSQL: 2 web processes, 4 workers, one inbox, seeded.

tests/test_multiworker_chaos.py runs its chaos on one SQLite file, and its test process hands
each webhook to a handler in process. Here everything a deployment on several machines has is
real: syncrecon's storage is a PostgreSQL schema of the test's own (dropped afterwards), two
web processes serve the webhook handler's ASGI app with uvicorn on loopback ports and the
test process POSTs every signed webhook to one of them over HTTP; 4 worker processes drain
the one inbox (``process_pending()`` in a loop), and a "cycler" process runs reconciliation
cycles over and over (the test process runs one now and then too). The two fake SaaS systems,
the users, the network and the audit are those of the SQLite test
(tests/multiworker_helpers.py; each process finds the schema in ``DIR/storage.json``).

What reaches the two web processes (every choice from ``random.Random(seed)``):

- the SQLite test's edits and network: 5% of the webhooks lost, 20% delayed behind later
  ones, 10% delivered again later, and 10% of the edits followed 10 ms later by a second
  edit of the same field, the newer webhook first;
- the two webhooks of such a pair are POSTed **at the same time**, one to each web process
  (newer first, older right behind it, no pause): which one the inbox stores first is up to
  the two processes and PostgreSQL;
- 5% of the deliveries are POSTed twice at the same time, once to each web process (a
  provider's retry racing its first attempt).

Then the feed ends, the workers drain the inbox and stop, the cycler stops, and ONE cycle
runs. Checks (beyond those of the SQLite test's audit, which are asserted in full here):

0. **Every event stored once.** Each message's events are accepted by exactly one delivery,
   however many deliveries raced (the rest are answered as duplicates), every POST is
   answered 200, and every stored event ends with an outcome.
1. **No stale write** and 2. **no out-of-order fast-loop write**, in the target systems' write
   log (the audit of tests/test_multiworker_chaos.py).
3. No newer user edit overwritten; 4. every non-escalated linked field agrees after the one
   cycle; 5. a second cycle writes nothing.

Process interleaving is not deterministic, and it feeds back into the edits (a tag edit keeps
some of the tags the field holds now), so two runs of one seed differ in detail; only
invariants are asserted, and no sleep orders anything (the workers nap 5 ms when idle, the
feed waits for a backlog to drain, with a deadline). ``SYNCRECON_CHAOS_SEEDS=1,2,3`` runs
other seeds. 10 to 30 s on two busy cores.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from multiworker_helpers import (
    STOP_CYCLER,
    STOP_WEB,
    STOP_WORKERS,
    STORAGE_FILE,
    build_reconciler,
    setup_world,
)
from syncrecon.storage.postgres import PostgresStorage
from syncrecon.testing import WebhookMessage
from test_multiworker_chaos import _Audit, _Feed, _outcomes, _start, _stop, _summary

pytestmark = pytest.mark.postgres

SEEDS = [int(s) for s in os.environ.get("SYNCRECON_CHAOS_SEEDS", "20260301").split(",")]
WORKERS = 4
WEBS = 2
RECORDS = 200
EDITS = 1_500
CHUNK = 50  # edits between two looks at the backlog (and maybe a cycle in the test process)
TEST_CYCLE_CHANCE = 0.15  # per chunk
MAX_BACKLOG = 150  # events stored but not processed before the feed waits for the workers
RACE_SHARE = 0.05  # deliveries POSTed to both web processes at once
STARTUP_TIMEOUT = 60.0


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    """A schema name of this test's own; the schema is dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"syncrecon_test_{uuid.uuid4().hex[:16]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


class _HttpFeed(_Feed):
    """The SQLite test's users and network, delivering over HTTP to two web processes."""

    def __init__(
        self, folder: Path, seed: int, pairs: list[tuple[str, str]], storage: PostgresStorage
    ) -> None:
        super().__init__(folder, seed, pairs)
        self.storage.close()  # the SQLite storage the base class opens is not this run's
        self.storage = storage  # type: ignore[assignment]
        self.handler = None  # type: ignore[assignment]  # the web processes answer
        self.reconciler = build_reconciler(self.world, storage, who="test")
        self.route = random.Random(seed + 2)  # which web process: the edits stay the SQLite test's
        self.clients: list[httpx.Client] = []
        self.pool = ThreadPoolExecutor(max_workers=WEBS, thread_name_prefix="post")
        # message id -> [events in it, events accepted by all its deliveries]
        self.stored: dict[str, list[int]] = {}
        self.posts: Counter[str] = Counter()

    def connect(self, ports: list[int]) -> None:
        self.clients = [
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, trust_env=False)
            for port in ports
        ]

    def _post(self, message: WebhookMessage, web: int) -> tuple[str, int, int]:
        request = self.emitters.request(message)
        response = self.clients[web].post(
            f"/webhooks/{message.system}", content=request.body, headers=dict(request.headers)
        )
        assert response.status_code == 200, (response.status_code, response.text)
        body = response.json()
        return message.id, int(body["accepted"]), int(body["duplicates"])

    def _together(self, *deliveries: tuple[WebhookMessage, int]) -> None:
        """POST at the same time (the first one submitted first; nothing waits between)."""
        futures = [self.pool.submit(self._post, message, web) for message, web in deliveries]
        for future in futures:
            self._count(*future.result())

    def _count(self, message_id: str, accepted: int, duplicates: int) -> None:
        self.accepted += accepted
        self.duplicates += duplicates
        seen = self.stored.setdefault(message_id, [accepted + duplicates, 0])
        assert seen[0] == accepted + duplicates, f"{message_id}: {seen[0]} events, then not"
        seen[1] += accepted

    def deliver_until(self, until: Any) -> None:
        while (at := self.network.next_at()) is not None and at <= until:
            self.world.set_now(at)
            due = self.network.due(self.world.now())
            i = 0
            while i < len(due):
                message = due[i][0]
                web = self.route.randrange(WEBS)
                if i + 1 < len(due) and due[i + 1][2]:
                    # A reversed pair (the network hands out the newer change, then the older
                    # one): both POSTed at once, one to each web process.
                    self._together((message, web), (due[i + 1][0], 1 - web))
                    self.posts["reversed pair, at once"] += 1
                    i += 2
                    continue
                if self.route.random() < RACE_SHARE:
                    self._together((message, web), (message, 1 - web))
                    self.posts["twice at once"] += 1
                else:
                    self._count(*self._post(message, web))
                    self.posts["single"] += 1
                i += 1
        self.world.set_now(until)

    def hang_up(self) -> None:
        self.pool.shutdown()
        for client in self.clients:
            client.close()


def _ports(folder: Path, names: list[str], procs: list[Any]) -> list[int]:
    """The port each web process listens on, once it does (fail at once if one exited)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not all((folder / f"{name}.port").exists() for name in names):
        for name, proc in zip(names, procs, strict=True):
            if proc.poll() is not None:
                output = (folder / f"{name}.out").read_text("utf-8", errors="replace")
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{output[-3000:]}")
        assert time.monotonic() < deadline, "the web processes did not start listening"
        time.sleep(0.02)
    return [int((folder / f"{name}.port").read_text("utf-8")) for name in names]


@pytest.mark.parametrize("seed", SEEDS)
def test_multiworker_chaos_postgres(
    tmp_path: Path, postgres_url: str, schema: str, seed: int
) -> None:
    began = time.perf_counter()
    (tmp_path / STORAGE_FILE).write_text(
        json.dumps({"url": postgres_url, "schema": schema}), "utf-8"
    )
    storage = PostgresStorage(postgres_url, schema=schema, min_size=1, max_size=4)
    storage.setup()  # before the processes start (they would migrate it too, under a lock)
    rng = random.Random(seed)
    pairs = setup_world(tmp_path, rng, RECORDS)
    feed = _HttpFeed(tmp_path, seed, pairs, storage)
    first = feed.cycle()
    assert first.new_links == RECORDS, first
    assert first.total_writes == 0, first

    web_names = [f"web-{i}" for i in range(1, WEBS + 1)]
    names = [f"worker-{i}" for i in range(1, WORKERS + 1)]
    webs = [_start(tmp_path, "web", name) for name in web_names]
    procs = [_start(tmp_path, "worker", name) for name in names]
    cycler = _start(tmp_path, "cycler", "cycler")
    try:
        feed.connect(_ports(tmp_path, web_names, webs))
        for n in range(EDITS):
            gap = feed.rng.expovariate(1 / 0.5)
            feed.deliver_until(feed.world.now() + timedelta(seconds=gap))
            feed.edit(n)
            if n % CHUNK == CHUNK - 1:
                if feed.rng.random() < TEST_CYCLE_CHANCE:
                    feed.cycle()
                feed.wait_for_workers(MAX_BACKLOG)
        while (due := feed.network.next_at()) is not None:  # everything still in flight
            feed.deliver_until(due)
        fed_s = time.perf_counter() - began
        _stop(tmp_path, webs, STOP_WEB)
        _stop(tmp_path, procs, STOP_WORKERS)
        _stop(tmp_path, [cycler], STOP_CYCLER)
    finally:
        for proc in [*webs, *procs, cycler]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        feed.hang_up()
    try:
        summaries = [_summary(tmp_path, name) for name in [*web_names, *names, "cycler"]]
        errors = [f"{s['name']}: {e}" for s in summaries for e in s["errors"]]
        assert errors == [], errors[:10]
        fast = _outcomes(storage)  # type: ignore[arg-type]
        assert feed.processed() == feed.accepted, f"{feed.accepted} events stored: {fast}"
        twice = {m: seen for m, seen in feed.stored.items() if seen[1] != seen[0]}
        assert twice == {}, f"messages not stored exactly once ([events, accepted]): {twice}"

        report = feed.cycle()  # ONE cycle
        audit = _Audit(feed.world, storage)  # type: ignore[arg-type]
        audit.run(pairs)
        assert audit.anomalies == [], audit.anomalies[:5]
        both, wrong = audit.reversed_pairs(feed.reversed)
        second = feed.cycle()
    finally:
        storage.close()
        feed.world.close()
    cycling = summaries[-1]
    lines = {
        "edits": f"{sum(feed.edits.values())} {dict(feed.edits)}",
        "network": dict(feed.network.stats),
        "posts": dict(feed.posts),
        "events fed": f"{feed.accepted} (+{feed.duplicates} duplicate deliveries)",
        "fast-loop outcomes": fast,
        "fast-loop field writes per worker": dict(sorted(audit.by_worker.items())),
        "reversed pairs": f"{len(feed.reversed)}, both values written by the fast loop {both},"
        f" the older one last {wrong}",
        "cycles": f"cycler {cycling['cycles']} (lease held {cycling['lease_held']}), test"
        f" {feed.test_cycles} (lease held {feed.lease_held})",
        "field writes by loop": dict(audit.writes),
        "final cycle": f"found {report.discrepancies_found}, writes {dict(report.writes)},"
        f" escalated {dict(report.escalated)}",
        "second cycle writes": second.total_writes,
        "(1) stale writes": f"{len(audit.stale)} {dict(audit.stale_kinds)}",
        "(2) out-of-order fast-loop writes": len(audit.out_of_order),
        "(3) newer user edits overwritten": len(audit.overwritten),
        "(4) fields disagreeing": len(audit.disagree),
        "not counted: user edits landing after the writer's last read": len(audit.raced),
        "not counted: writes of the value a field already held": len(audit.echo_writes),
        "time": f"fed in {fed_s:.1f}s, total {time.perf_counter() - began:.1f}s,"
        f" the feed waited for the workers {feed.waits}x",
    }
    print(f"\nmulti-worker chaos on PostgreSQL seed={seed} webs={WEBS} workers={WORKERS}:")
    for what, value in lines.items():
        print(f"  {what}: {value}")
    failures = {
        "(1) stale writes": audit.stale,
        "(2) out-of-order fast-loop writes": audit.out_of_order,
        "(3) newer user edits overwritten": audit.overwritten,
        "(4) fields disagreeing after one cycle": audit.disagree,
    }
    if second.total_writes:
        failures["(5) writes by the second cycle"] = [str(dict(second.writes))]
    found = {what: cases for what, cases in failures.items() if cases}
    assert not found, f"seed={seed} postgres: " + "\n".join(
        f"{what}: {len(cases)}; first ones:\n  " + "\n  ".join(cases[:5])
        for what, cases in found.items()
    )
