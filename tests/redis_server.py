"""A real Redis server for the tests that need a broker (Celery), started and stopped by them.

``redis_server`` (session scope) starts Debian's ``redis-server`` (``/usr/bin/redis-server``, or
``$SYNCRECON_REDIS_SERVER``) on a free loopback port, in a temporary directory, with nothing
persisted (``--save '' --appendonly no``), and stops it when the session ends. ``redis_url``
(function scope) is its URL after emptying it (``FLUSHALL``), so no test sees another's
messages or results.

Without ``redis-server`` (or the ``redis`` client) the tests that ask for it skip, with a
reason that says so loudly; when ``CI`` is set they fail instead, as the PostgreSQL and browser
tests do: CI has the server, and a skip there would hide a gap.

Use it from a test module by importing the fixtures::

    from redis_server import redis_server, redis_url  # noqa: F401 (pytest fixtures)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SKIP = "Redis NOT TESTED"
START_TIMEOUT = 15.0


def _no_redis(reason: str) -> None:
    """Skip the test, loudly; under CI, fail it."""
    message = f"{REDIS_SKIP}: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so a Redis server is required")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` process on ``127.0.0.1:port``; :meth:`stop` ends it."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.directory = directory
        self.log = directory / "redis.log"
        self.port = _free_port()
        command = [
            executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.log),
            "--daemonize",
            "no",
        ]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=directory
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def wait_ready(self) -> bool:
        """Wait (up to ``START_TIMEOUT``) until it answers PING; False if it exited first."""
        import redis

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with (
                contextlib.suppress(redis.exceptions.ConnectionError),
                redis.Redis.from_url(self.url, socket_timeout=1) as client,
            ):
                if client.ping():
                    return True
            time.sleep(0.02)  # polling for readiness, not ordering
        return False

    def flush(self) -> None:
        import redis

        with redis.Redis.from_url(self.url) as client:
            client.flushall()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_text(self) -> str:
        return self.log.read_text("utf-8", "replace") if self.log.exists() else ""


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis server for the session (see the module's docstring)."""
    executable = os.environ.get("SYNCRECON_REDIS_SERVER") or shutil.which("redis-server")
    if executable is None and Path("/usr/bin/redis-server").exists():
        executable = "/usr/bin/redis-server"
    if executable is None:
        _no_redis("redis-server is not installed (apt-get install redis-server)")
    assert executable is not None
    if not os.access(executable, os.X_OK):
        _no_redis(f"{executable} (SYNCRECON_REDIS_SERVER) is not an executable file")
    try:
        import redis  # noqa: F401
    except ImportError:
        _no_redis('the redis client is not installed (pip install "syncrecon[celery]")')
    with tempfile.TemporaryDirectory(prefix="syncrecon-redis-") as directory:
        server = None
        for _ in range(3):  # the free port may be taken between finding it and binding it
            server = RedisServer(executable, Path(directory))
            if server.wait_ready():
                break
            log = server.log_text()
            server.stop()
            server = None
        if server is None:
            pytest.fail(f"redis-server did not start:\n{log}")
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis server, emptied for this test."""
    redis_server.flush()
    return redis_server.url
