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
``memory_storage`` / ``sqlite_storage``
    One backend each. ``sqlite_storage`` lives in a real file (``sqlite_path``) in the test's
    ``tmp_path``, so WAL and reopening behave as in production.
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

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from syncrecon.storage import Storage
from syncrecon.storage.memory import MemoryStorage
from syncrecon.storage.sqlite import SQLiteStorage
from syncrecon.testing import ManualClock

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


@pytest.fixture(
    params=[
        pytest.param("memory_storage", id="memory"),
        pytest.param("sqlite_storage", id="sqlite"),
        # A backend that needs a server gets a marker so that it can be deselected, e.g.
        # pytest.param("postgres_storage", id="postgres", marks=pytest.mark.external_service),
        # with its fixture skipping when no server is configured (register the marker in
        # pyproject.toml: pytest runs with --strict-markers).
    ]
)
def storage(request: pytest.FixtureRequest) -> Storage:
    """Every storage backend in turn, set up and empty: the fixture of the contract tests."""
    store: Storage = request.getfixturevalue(request.param)
    return store
