"""The served front door's part of ``python -m syncrecon bench``: requests per second over HTTP.

``served_vs_bare_sqlite`` and ``served_vs_bare_postgres``: the webhook app
(:class:`~syncrecon.webhooks.asgi.WebhookApp`, a durable inbox on SQLite or PostgreSQL) served
by uvicorn (one worker, uvloop, httptools) on a loopback port, driven by ``wrk`` with
``WRK_CONNECTIONS`` connections on ``WRK_THREADS`` threads, over the requests per second of a
bare ASGI app (it reads the body and answers 200) served and driven the same way in the same
run. Each server runs in a process of its own; wrk is another one.

Every request is unique and validly signed (Standard Webhooks ``v1``): they are signed up front
into files that a Lua script hands to wrk one after the other, each wrk thread its own file.
The script counts the answers that were not 2xx and the requests it had to send a second time
(more requests than were signed: duplicates, which the webhook app answers without storing
anything). A webhook run with either, or with socket errors, reports its rates but no ratio,
with the reason; after each webhook run, the inbox must hold at least one row per 2xx answer.

The PostgreSQL part runs only with a server (``SYNCRECON_BENCH_POSTGRES_URL`` or
``SYNCRECON_TEST_POSTGRES_URL``), in a schema of its own dropped afterwards. Without wrk or
uvicorn, the figures are ``None`` with the reason. On a small machine the servers and wrk
share the cores: the settings (``served_settings``) are reported with the figures.

The servers are started as ``python -m syncrecon._bench_served bare|webhook PORT``; the
webhook server reads where to store from ``SYNCRECON_BENCH_SERVED_STORAGE`` (JSON).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WRK_THREADS = 2
WRK_CONNECTIONS = 20
SECONDS = 5.0
ROUNDS = 2
SIGNED_PER_SECOND = 25_000
"""Requests signed per second of a run: more than the webhook app answers on one worker."""

SECRET = "whsec_" + base64.b64encode(b"syncrecon-served-bench-secret-32").decode()
PATH = "/webhooks/crm"
STORAGE_VAR = "SYNCRECON_BENCH_SERVED_STORAGE"
POSTGRES_VARS = ("SYNCRECON_BENCH_POSTGRES_URL", "SYNCRECON_TEST_POSTGRES_URL")
STARTUP_TIMEOUT = 30.0

LUA = r"""
-- Rotates pre-signed requests (one file per wrk thread); counts the answers that were not
-- 2xx and the requests sent a second time, and prints both at the end.
local requests, n, i, wrapped = {}, 0, 0, false
answered, non2xx, reused = 0, 0, 0
local threads, started = {}, 0

function setup(thread)
  thread:set("tid", started)
  started = started + 1
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1] .. "." .. tid, "rb"))
  local data = f:read("*a")
  f:close()
  local pos = 1
  while pos <= #data do
    local nl = string.find(data, "\n", pos, true)
    local len = tonumber(string.sub(data, pos, nl - 1))
    n = n + 1
    requests[n] = string.sub(data, nl + 1, nl + len)
    pos = nl + len + 1
  end
end

function request()
  i = i + 1
  if i > n then
    i, wrapped = 1, true
  end
  if wrapped then
    reused = reused + 1
  end
  return requests[i]
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    answered = answered + 1
  else
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local ok, bad, again = 0, 0, 0
  for _, t in ipairs(threads) do
    ok = ok + t:get("answered")
    bad = bad + t:get("non2xx")
    again = again + t:get("reused")
  end
  io.write(string.format("syncrecon-wrk ok=%d non2xx=%d reused=%d\n", ok, bad, again))
end
"""


# --------------------------------------------------------------------------------------------
# The servers (each in a process of its own)


async def bare_app(
    scope: MutableMapping[str, Any], receive: Any, send: Any
) -> None:  # pragma: no cover - runs in the server process
    """The floor: read the body, answer 200 with a short JSON body."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = bool(message.get("more_body", False))
    body = b'{"accepted":1,"duplicates":0}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def webhook_app(storage_spec: dict[str, str]) -> Any:  # pragma: no cover - server process
    """The webhook app on the storage ``storage_spec`` names (``kind``, ``path`` or ``url``)."""
    from ._clock import SystemClock
    from ._models import Side
    from ._policy import recency
    from ._sync import FieldMap, SyncDefinition
    from .testing import SimulatedSystem
    from .webhooks import GenericJsonParser, StandardWebhooksVerifier, WebhookHandler, WebhookSource
    from .webhooks.asgi import WebhookApp

    storage: Any
    if storage_spec["kind"] == "sqlite":
        from .storage.sqlite import SQLiteStorage

        storage = SQLiteStorage(storage_spec["path"])
    else:
        from .storage.postgres import PostgresStorage

        storage = PostgresStorage(storage_spec["url"], schema=storage_spec["schema"])
    clock = SystemClock()
    sync = SyncDefinition(
        name="bench",
        left=SimulatedSystem("crm", clock=clock),
        right=SimulatedSystem("billing", clock=clock),
        fields=[FieldMap(left="notes", right="notes", policy=recency())],
    )
    source = WebhookSource(
        name="crm",
        sync=sync,
        side=Side.LEFT,
        verifier=StandardWebhooksVerifier(secrets=[SECRET], clock=clock),
        parser=GenericJsonParser(system="crm"),
    )
    return WebhookApp(WebhookHandler([source], storage, clock=clock))


def _serve(argv: list[str]) -> int:  # pragma: no cover - runs in the server process
    import uvicorn

    kind, port = argv[0], int(argv[1])
    app = bare_app if kind == "bare" else webhook_app(json.loads(os.environ[STORAGE_VAR]))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        workers=None,
        lifespan="on",
        access_log=False,
        log_level="warning",
    )
    return 0


# --------------------------------------------------------------------------------------------
# The requests


def signed_request(n: int, now: datetime, secret: str = SECRET) -> bytes:
    """The ``n``-th unique request, signed (Standard Webhooks ``v1``), as it goes on the wire."""
    body = json.dumps(
        {
            "type": "deal.updated",
            "timestamp": now.isoformat(),
            "data": {"id": f"d{n}", "object_type": "deal", "changes": {"notes": f"note {n}"}},
        },
        separators=(",", ":"),
    ).encode()
    msg_id = f"msg_{n:09d}"
    stamp = str(int(now.timestamp()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    head = (
        f"POST {PATH} HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"webhook-id: {msg_id}\r\n"
        f"webhook-timestamp: {stamp}\r\n"
        f"webhook-signature: v1,{base64.b64encode(mac).decode()}\r\n"
        "\r\n"
    )
    return head.encode() + body


def write_requests(prefix: Path, count: int, *, threads: int = WRK_THREADS) -> None:
    """``count`` unique signed requests, dealt round-robin to ``prefix.0`` .. ``prefix.N``,
    each as its length in ASCII, a newline, and the request's bytes."""
    now = datetime.now(UTC)
    files = [open(f"{prefix}.{t}", "wb") for t in range(threads)]  # noqa: SIM115
    try:
        for n in range(count):
            raw = signed_request(n, now)
            files[n % threads].write(b"%d\n%s" % (len(raw), raw))
    finally:
        for f in files:
            f.close()


# --------------------------------------------------------------------------------------------
# One run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(kind: str, storage: dict[str, str] | None = None) -> Iterator[int]:
    """A server process (``bare`` or ``webhook``) on a free loopback port; yields the port."""
    port = _free_port()
    env = dict(os.environ)
    if storage is not None:
        env[STORAGE_VAR] = json.dumps(storage)
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncrecon._bench_served", kind, str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"the {kind} server exited: {err.strip()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {kind} server did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


_RATE = re.compile(r"^Requests/sec:\s*([0-9.]+)", re.M)
_OURS = re.compile(r"^syncrecon-wrk ok=(\d+) non2xx=(\d+) reused=(\d+)", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def _wrk(wrk: str, port: int, script: Path, requests: Path, seconds: float) -> dict[str, Any]:
    """Drive the server on ``port`` for ``seconds``; its figures from wrk's report."""
    cmd = [
        wrk,
        f"-t{WRK_THREADS}",
        f"-c{WRK_CONNECTIONS}",
        f"-d{max(1, round(seconds))}s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}{PATH}",
        "--",
        str(requests),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return read_wrk_report(out.stdout)


def read_wrk_report(text: str) -> dict[str, Any]:
    """The figures of one wrk run from its report (with the Lua script's closing line)."""
    rate, ours = _RATE.search(text), _OURS.search(text)
    if rate is None or ours is None:
        raise RuntimeError(f"unreadable wrk report: {text[-500:]}")
    socket_errors = sum(int(g) for g in m.groups()) if (m := _SOCKET.search(text)) else 0
    ok, non2xx, reused = (int(g) for g in ours.groups())
    total = float(rate.group(1))
    return {
        "requests_per_s": total,
        # Only the 2xx answers count: an error is not a served request.
        "ok_per_s": total * ok / (ok + non2xx) if ok + non2xx else 0.0,
        "ok": ok,
        "non_2xx": non2xx,
        "reused": reused,
        "socket_errors": socket_errors,
    }


def judge(kind: str, bare: dict[str, Any], served: dict[str, Any], stored: int) -> dict[str, Any]:
    """The figures of one pair of runs; the ratio only when both runs were clean: no
    non-2xx answer, no socket error, no request sent twice, every 2xx answer's event stored."""
    problems = []
    for name, run in (("bare", bare), ("webhook", served)):
        if run["non_2xx"] or run["socket_errors"]:
            problems.append(
                f"the {name} run had {run['non_2xx']} non-2xx answers"
                f" and {run['socket_errors']} socket errors"
            )
    if served["reused"]:
        problems.append(f"the webhook run re-sent {served['reused']} requests (too few signed)")
    if stored < served["ok"]:
        problems.append(f"{served['ok']} requests answered 2xx but {stored} events stored")
    figures: dict[str, Any] = {
        f"served_bare_requests_per_s_{kind}": round(bare["ok_per_s"], 1),
        f"served_webhook_requests_per_s_{kind}": round(served["ok_per_s"], 1),
        f"served_webhook_non_2xx_{kind}": served["non_2xx"],
        f"served_webhook_socket_errors_{kind}": served["socket_errors"],
        f"served_webhook_events_stored_{kind}": stored,
        f"served_vs_bare_{kind}": round(served["ok_per_s"] / bare["ok_per_s"], 3)
        if bare["ok_per_s"] and not problems
        else None,
    }
    if problems:
        figures[f"served_vs_bare_{kind}_reason"] = "; ".join(problems)
    return figures


def _inbox_rows(spec: dict[str, str]) -> int:
    """How many events the webhook run left in the inbox."""
    if spec["kind"] == "sqlite":
        import sqlite3

        with contextlib.closing(sqlite3.connect(spec["path"])) as db:
            return int(db.execute("SELECT count(*) FROM inbox").fetchone()[0])
    import psycopg
    from psycopg import sql

    with psycopg.connect(spec["url"]) as conn:
        query = sql.SQL("SELECT count(*) FROM {}.inbox").format(sql.Identifier(spec["schema"]))
        row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0


def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _webhook_run(
    kind: str, wrk: str, script: Path, requests: Path, seconds: float, tmp: Path, url: str
) -> tuple[dict[str, Any], int]:
    """One webhook run on fresh ``kind`` storage: wrk's figures, and the events stored."""
    if kind == "sqlite":
        spec = {"kind": "sqlite", "path": str(tmp / f"served-{uuid.uuid4().hex[:8]}.sqlite")}
    else:
        spec = {
            "kind": "postgres",
            "url": url,
            "schema": f"syncrecon_bench_{uuid.uuid4().hex[:12]}",
        }
    try:
        with _server("webhook", spec) as port:
            served = _wrk(wrk, port, script, requests, seconds)
        return served, _inbox_rows(spec)
    finally:
        if spec["kind"] == "postgres":
            _drop_schema(spec["url"], spec["schema"])


def _pair(
    kind: str,
    wrk: str,
    script: Path,
    requests: Path,
    seconds: float,
    rounds: int,
    tmp: Path,
    url: str = "",
) -> dict[str, Any]:
    """The bare app, then the webhook app on ``kind`` storage, ``rounds`` times in turn; the
    best run of each (the one least disturbed by the rest of the machine), and the ratio."""
    bares: list[dict[str, Any]] = []
    runs: list[tuple[dict[str, Any], int]] = []
    for _ in range(rounds):
        with _server("bare") as port:
            bares.append(_wrk(wrk, port, script, requests, seconds))
        runs.append(_webhook_run(kind, wrk, script, requests, seconds, tmp, url))
    bare = max(bares, key=lambda r: float(r["ok_per_s"]))
    served, stored = max(runs, key=lambda r: float(r[0]["ok_per_s"]))
    figures = judge(kind, bare, served, stored)
    # Every run counts for the errors: a bad run is not hidden behind a good one.
    for run, run_stored in runs:
        if run is not served:
            problem = judge(kind, bare, run, run_stored).get(f"served_vs_bare_{kind}_reason")
            if problem:
                figures[f"served_vs_bare_{kind}"] = None
                figures[f"served_vs_bare_{kind}_reason"] = problem
    figures[f"served_runs_{kind}"] = {
        "bare": [round(r["ok_per_s"], 1) for r in bares],
        "webhook": [round(r["ok_per_s"], 1) for r, _ in runs],
    }
    return figures


def _postgres_url() -> str | None:
    for var in POSTGRES_VARS:
        url = os.environ.get(var, "").strip()
        if url:
            return url
    return None


def _missing(kind: str, reason: str) -> dict[str, Any]:
    return {f"served_vs_bare_{kind}": None, f"served_vs_bare_{kind}_reason": reason}


def run_served_bench(
    *,
    seconds: float = SECONDS,
    rounds: int = ROUNDS,
    wrk: str | None = None,
    postgres_url: str | None = None,
) -> dict[str, Any]:
    """``served_vs_bare_sqlite`` and ``served_vs_bare_postgres`` with their rates (see the
    module's docstring); ``None`` with a ``..._reason`` key when a part cannot run.

    ``seconds`` is each wrk run's length; each backend runs the bare app and the webhook
    app ``rounds`` times in turn and keeps the best run of each (all are reported in
    ``served_runs_<backend>``). ``wrk`` is the program (default: ``wrk`` on the ``PATH``).
    ``postgres_url`` is the server of the PostgreSQL part (default: from the environment).
    """
    import importlib.util

    wrk = wrk or shutil.which("wrk")
    settings = (
        f"wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{max(1, round(seconds))}s, a Lua script"
        " rotating unique pre-signed requests; uvicorn, 1 worker, uvloop, httptools,"
        f" on 127.0.0.1; best of {rounds} alternating runs each;"
        f" {os.cpu_count()} CPUs shared by the server and wrk"
    )
    figures: dict[str, Any] = {"served_settings": settings}
    why = None
    if wrk is None:
        why = "wrk is not installed (apt-get install wrk)"
    else:
        missing = [m for m in ("uvicorn", "uvloop", "httptools") if not importlib.util.find_spec(m)]
        if missing:
            why = f"{', '.join(missing)} not installed (pip install 'uvicorn[standard]')"
    if why is not None:
        return {**figures, **_missing("sqlite", why), **_missing("postgres", why)}
    assert wrk is not None
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        script = tmp / "rotate.lua"
        script.write_text(LUA)
        requests = tmp / "requests"
        write_requests(requests, int(SIGNED_PER_SECOND * max(1, round(seconds))))
        url = postgres_url or _postgres_url()
        for kind in ("sqlite", "postgres"):
            if kind == "postgres" and url is None:
                figures.update(
                    _missing(
                        "postgres",
                        f"no PostgreSQL server: set {POSTGRES_VARS[0]} or {POSTGRES_VARS[1]}",
                    )
                )
                continue
            try:
                figures.update(_pair(kind, wrk, script, requests, seconds, rounds, tmp, url or ""))
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                figures.update(_missing(kind, f"the run failed: {exc}"))
    return figures


if __name__ == "__main__":  # pragma: no cover - the server processes
    sys.exit(_serve(sys.argv[1:]))
