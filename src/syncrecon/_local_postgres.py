"""A throwaway PostgreSQL server from the machine's server binaries, or the one a URL names.

Used by the test suite and the benchmark (``python -m syncrecon bench``), never by the library
itself. :func:`private_server` runs ``initdb`` into a temporary directory and ``postgres`` on a
Unix socket in that directory only (no TCP port to collide with, no password, no TLS), and
stops and removes it when the ``with`` block ends. The binaries are Debian's (``postgresql``:
``/usr/lib/postgresql/<version>/bin``) or any ``initdb`` on the ``PATH``. As root the server
runs as the ``postgres`` user (``initdb`` refuses root).

:func:`probe` checks a URL once with a short connect timeout, so a wrong URL fails in seconds
with the driver's message instead of a pool waiting out its timeout on every use.

A server of the session's own avoids what differs between machines in a system cluster
started beforehand: its daemon, its authentication, its network. Private to syncrecon.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PROBE_TIMEOUT_S = 10
START_TIMEOUT_S = 60
INITDB_ARGS = ("--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
# A Unix socket only (no TCP port to collide with); room for the pools of many tests.
SERVER_SETTINGS = ("listen_addresses=", "max_connections=300")


class ServerUnavailable(Exception):
    """No server could be reached or started; the message says why."""


def probe(url: str, timeout: int = PROBE_TIMEOUT_S) -> None:
    """Connect once and run a query; :class:`ServerUnavailable` with the reason otherwise."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=timeout, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise ServerUnavailable(f"cannot connect to {redact(url)}: {exc}") from exc


def redact(url: str) -> str:
    """The URL without its password (it goes into test output)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


def find_bindir() -> Path | None:
    """The newest server ``bin`` directory with ``initdb`` and ``postgres``, if any."""
    candidates: list[Path] = []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        candidates += sorted(
            (p / "bin" for p in root.iterdir() if p.name.replace(".", "").isdigit()),
            key=lambda p: [int(x) for x in p.parent.name.split(".")],
            reverse=True,
        )
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    return None


@contextlib.contextmanager
def private_server(bindir: Path) -> Iterator[str]:
    """Run a throwaway server from ``bindir`` for the ``with`` block; yields its URL."""
    user: str | None = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ServerUnavailable(
                "running as root and there is no 'postgres' user to run the server as"
                " (Debian's postgresql package creates it)"
            ) from exc
        user = pw.pw_name
    base = Path(tempfile.mkdtemp(prefix="syncrecon-pg-"))
    data, log = base / "data", base / "server.log"
    if user is not None:
        pw = pwd.getpwnam(user)
        os.chown(base, pw.pw_uid, pw.pw_gid)
    port = 5432  # names the socket file only: the socket lives in our own directory
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        initdb = subprocess.run(
            [str(bindir / "initdb"), f"--pgdata={data}", "--username=postgres", *INITDB_ARGS],
            user=user,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if initdb.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {initdb.stderr.strip() or initdb.stdout}")
        with log.open("wb") as log_file:
            if user is not None:
                pw = pwd.getpwnam(user)
                os.chown(log, pw.pw_uid, pw.pw_gid)
            server = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-k", str(base), "-p", str(port)]
                + [arg for setting in SERVER_SETTINGS for arg in ("-c", setting)],
                user=user,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        url = f"postgresql://postgres@/postgres?host={base}&port={port}"
        try:
            _wait_ready(url, server, log)
            yield url
        finally:
            server.send_signal(signal.SIGINT)  # fast shutdown: a leaked pool must not hold it
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _wait_ready(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ServerUnavailable(f"postgres exited at start:\n{_tail(log)}")
        try:
            probe(url, timeout=2)
            return
        except ServerUnavailable as exc:
            last = exc
            time.sleep(0.1)  # waiting for a condition, with a deadline
    raise ServerUnavailable(f"postgres did not answer in {START_TIMEOUT_S}s: {last}\n{_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"
