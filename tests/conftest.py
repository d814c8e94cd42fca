"""Shared fixtures for syncrecon's test suite.

Fixtures
--------
``storage``
    A ready (``setup()`` done) :class:`~syncrecon.Storage`, parametrized over every backend
    (APScheduler's ``datastore`` fixture is the model): each test that asks for it runs once
    per backend, with the backend's id in the test id (``test_x[memory]``, ``test_x[sqlite]``).
    Write storage contract tests against it (they live in ``tests/storage/``, one module per
    role) and nothing backend-specific; a backend-only test asks for ``memory_storage`` or
    ``sqlite_storage`` instead.
``memory_storage`` / ``sqlite_storage`` / ``postgres_storage``
    One backend each. ``sqlite_storage`` lives in a real file (``sqlite_path``) in the test's
    ``tmp_path``, so WAL and reopening behave as in production.
``postgres_storage``
    The PostgreSQL backend in a schema of its own that is dropped after the test
    (``postgres_url`` and the storage's ``schema`` let a test open a second storage on it).
    The server is the one ``SYNCRECON_TEST_POSTGRES_URL`` names, else a private one the
    session starts from the machine's server binaries (``syncrecon._local_postgres``).
    Neither: its tests skip, loudly; with ``CI`` set they fail instead (``.ci/run`` installs
    the binaries). ``make test-postgres`` installs them when missing and runs only these.
``sqlite_path``
    The file ``sqlite_storage`` uses: open a second ``SQLiteStorage`` on it to test reopening
    or sharing the file between two storage objects.
``clock``
    A :class:`syncrecon.testing.ManualClock` at 2026-01-01T00:00:00Z that moves only when a
    test moves it (``clock.advance(seconds)``). Never sleep in a test: advance the clock.

Hypothesis
----------
The ``ci`` profile (loaded by default) is derandomized: every run of ``make test`` tries the
same examples, so a red run is always reproducible and a green one is not luck. Exploring is
a separate, deliberate step: ``HYPOTHESIS_PROFILE=explore`` draws new random examples on every
run (2,000 per test) and prints the ``@reproduce_failure`` blob and the seed of a failure;
``pytest --hypothesis-seed=N`` replays it. Turn what it finds into an ``@example`` or a unit
test. ``HYPOTHESIS_PROFILE=dev`` runs fewer examples for quick local runs.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

from syncrecon.storage import Storage
from syncrecon.storage.memory import MemoryStorage
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import ManualClock

if TYPE_CHECKING:
    from syncrecon.storage.postgres import PostgresStorage

settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("dev", max_examples=25, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=2000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at 2026-01-01T00:00:00Z; it moves only when the test moves it."""
    return ManualClock()


@pytest.fixture
def memory_storage() -> Iterator[MemoryStorage]:
    """The in-memory backend, set up."""
    store = MemoryStorage()
    store.setup()
    yield store
    store.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """Where ``sqlite_storage`` keeps its database file."""
    return tmp_path / "syncrecon.sqlite"


@pytest.fixture
def sqlite_storage(sqlite_path: Path) -> Iterator[SQLiteStorage]:
    """The SQLite backend on a real file (WAL mode), set up."""
    store = SQLiteStorage(sqlite_path)
    store.setup()
    yield store
    store.close()


POSTGRES_URL_VAR = "SYNCRECON_TEST_POSTGRES_URL"
POSTGRES_SKIP = "PostgreSQL NOT TESTED"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The PostgreSQL server of the tests.

    ``SYNCRECON_TEST_POSTGRES_URL`` when set (probed once); else a private server this session
    starts from the machine's server binaries and stops at the end (``syncrecon._local_postgres``).
    Neither: the test skips with a loud reason, or fails when ``CI`` is set (a CI run without
    its server must not pass by skipping). Every failure says why in one line, at once.
    """
    from syncrecon._local_postgres import ServerUnavailable, find_bindir, private_server, probe

    def unavailable(why: str) -> None:
        reason = f"{POSTGRES_SKIP}: {why}"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so a PostgreSQL server is required")
        pytest.skip(reason)

    url = os.environ.get(POSTGRES_URL_VAR, "").strip()
    if url:
        try:
            probe(url)
        except ServerUnavailable as exc:
            unavailable(f"{POSTGRES_URL_VAR}: {exc}")
        yield url
        return
    bindir = find_bindir()
    if bindir is None:
        unavailable(
            f"no PostgreSQL server binaries (install Debian's postgresql: .ci/postgres)"
            f" and {POSTGRES_URL_VAR} is not set"
        )
        return
    with contextlib.ExitStack() as stack:
        try:
            started = stack.enter_context(private_server(bindir))
        except ServerUnavailable as exc:
            unavailable(f"could not start a private server from {bindir}: {exc}")
            return
        yield started


def drop_schema(url: str, schema: str) -> None:
    """Drop a test's schema and everything in it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def postgres_storage(postgres_url: str) -> Iterator[PostgresStorage]:
    """The PostgreSQL backend in a fresh schema of its own (dropped after the test), set up."""
    from syncrecon.storage.postgres import PostgresStorage

    schema = f"syncrecon_test_{uuid.uuid4().hex[:16]}"
    store = PostgresStorage(postgres_url, schema=schema, max_size=4)
    try:
        store.setup()
        yield store
    finally:
        store.close()
        drop_schema(postgres_url, schema)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say it out loud when the tests of a real server did not run."""
    loud = {
        POSTGRES_SKIP: f"PostgreSQL tests SKIPPED: set {POSTGRES_URL_VAR}"
        " or run make test-postgres",
        "Redis NOT TESTED": "Redis/Celery tests SKIPPED: install Debian's redis-server",
    }
    for marker, message in loud.items():
        skipped = [
            r for r in terminalreporter.stats.get("skipped", []) if marker in str(r.longrepr)
        ]
        if skipped:
            terminalreporter.write_sep("!", f"{len(skipped)} {message}", red=True)


@pytest.fixture(
    params=[
        pytest.param("memory_storage", id="memory"),
        pytest.param("sqlite_storage", id="sqlite"),
        # Needs a server: the marker lets a run select (-m postgres) or deselect it.
        pytest.param("postgres_storage", id="postgres", marks=pytest.mark.postgres),
    ]
)
def storage(request: pytest.FixtureRequest) -> Storage:
    """Every storage backend in turn, set up and empty: the fixture of the contract tests."""
    store: Storage = request.getfixturevalue(request.param)
    return store
