"""The public surface: ``__all__`` lists exactly the public names, sorted, each importable.

Like httpx's ``tests/test_exported_members.py``. ``__all__`` is kept in ruff's RUF022
("isort-style") order: SCREAMING_CASE constants, then CamelCase classes, then everything
else, each group sorted case-sensitively.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import pickle
import re
import sys
import types
from typing import Any

import pytest

import syncrecon
from syncrecon import _exceptions

PUBLIC_MODULES = [
    "syncrecon",
    "syncrecon.dashboard",
    "syncrecon.demo_app",
    "syncrecon.integrations.apscheduler",
    "syncrecon.metrics",
    "syncrecon.queue",
    "syncrecon.storage",
    "syncrecon.testing",
    "syncrecon.web",
    "syncrecon.webhooks",
    "syncrecon.worker",
]


def isort_style(name: str) -> tuple[int, str]:
    if len(name) > 1 and name.isupper():
        group = 0  # constants (MISSING)
    elif name[:1].isupper():
        group = 1  # classes
    else:
        group = 2  # functions, dunders
    return (group, name)


def test_the_sort_rule() -> None:
    assert sorted(["b", "B", "BB", "_x", "a", "Ab", "ZZ"], key=isort_style) == [
        "BB",
        "ZZ",
        "Ab",
        "B",
        "_x",
        "a",
        "b",
    ]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_is_sorted_and_unique(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = list(module.__all__)
    assert len(set(names)) == len(names)
    assert names == sorted(names, key=isort_style)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_name_in_all_exists(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_all_imports_are_exported() -> None:
    # Every public, non-module name the package binds is in __all__, and nothing else.
    public = {
        name
        for name, value in vars(syncrecon).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    # The hosting pieces load lazily (``syncrecon._LAZY``): exported before they are bound.
    lazy = set(syncrecon._LAZY) - syncrecon._OPTIONAL
    assert set(syncrecon.__all__) == (public - syncrecon._OPTIONAL) | {"__version__"} | lazy


def test_star_import_gives_the_public_api() -> None:
    namespace: dict[str, Any] = {}
    exec("from syncrecon import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(syncrecon.__all__)


def test_version() -> None:
    assert isinstance(syncrecon.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)*", syncrecon.__version__)


def _public_objects() -> list[tuple[str, Any]]:
    found = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) or inspect.isfunction(value):
                found.append((f"{module_name}.{name}", value))
    return found


@pytest.mark.parametrize(
    ("path", "obj"), _public_objects(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_public_objects_module_is_sane(path: str, obj: Any) -> None:
    # __module__ names a syncrecon module in which the object is found under its own
    # qualified name: pickle, copy, reprs, tracebacks and the API reference rely on it.
    module_name = obj.__module__
    assert module_name.split(".")[0] == "syncrecon", path
    module = sys.modules[module_name]
    found: Any = module
    for part in obj.__qualname__.split("."):
        found = getattr(found, part)
    assert found is obj, path
    assert "<locals>" not in obj.__qualname__


@pytest.mark.parametrize(
    ("path", "obj"), _public_objects(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_public_objects_are_documented(path: str, obj: Any) -> None:
    assert inspect.getdoc(obj), f"{path} has no docstring"


def test_public_names_resolve_to_the_same_object_everywhere() -> None:
    # A name exported from two public modules is one object, not two copies.
    import syncrecon.storage

    for name in set(syncrecon.__all__) & set(syncrecon.storage.__all__):
        assert getattr(syncrecon, name) is getattr(syncrecon.storage, name), name


def test_storage_backends_load_lazily_and_are_one_object_everywhere() -> None:
    import subprocess
    import sys

    from syncrecon.storage.memory import MemoryStorage
    from syncrecon.storage.sqlite import SQLiteStorage

    assert MemoryStorage.__module__ == "syncrecon.storage.memory"
    assert SQLiteStorage.__module__ == "syncrecon.storage.sqlite"
    assert syncrecon.SQLiteStorage is SQLiteStorage
    assert syncrecon.MemoryStorage is MemoryStorage
    if importlib.util.find_spec("psycopg") is not None:
        from syncrecon.storage.postgres import PostgresStorage

        assert syncrecon.PostgresStorage is PostgresStorage
    # ``import syncrecon`` alone loads no backend, no web, queue or worker module, no HTTP.
    probe = (
        "import sys, syncrecon; print(sorted(m for m in sys.modules if m.startswith("
        "('syncrecon.storage.', 'syncrecon.webhooks', 'syncrecon.queue', 'syncrecon.worker',"
        " 'syncrecon.http'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "['syncrecon.storage._base']"


# Each way a program asks for PostgresStorage, run where one of the extra's packages is hidden.
_WITHOUT_THE_EXTRA = """
import sys
sys.modules[{hidden!r}] = None  # as if the postgres extra were not installed
import syncrecon
from syncrecon import ConfigurationError
assert "PostgresStorage" not in syncrecon.__all__ and "PostgresStorage" not in dir(syncrecon)
from syncrecon import *  # noqa: F403 (works without the extra)
import inspect
inspect.getmembers(syncrecon)
{ask}
"""

_ASKS = [
    "from syncrecon.storage import PostgresStorage",
    "import syncrecon.storage.postgres",
    "syncrecon.PostgresStorage",
    "from syncrecon import PostgresStorage",
]


@pytest.mark.parametrize("hidden", ["psycopg", "psycopg_pool"])
@pytest.mark.parametrize("ask", _ASKS)
def test_postgres_storage_without_the_extra_says_what_to_install(hidden: str, ask: str) -> None:
    import subprocess

    code = _WITHOUT_THE_EXTRA.format(hidden=hidden, ask=ask)
    check = code + ("\nraise SystemExit('loaded')")
    wrapped = (
        "try:\n"
        + "".join(f"    {line}\n" for line in check.strip().splitlines())
        + "except ConfigurationError as exc:\n"
        + "    assert isinstance(exc, ImportError), type(exc).__mro__\n"  # ``except ImportError``
        + "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", wrapped], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "PostgresStorage needs the 'postgres' extra: pip install 'syncrecon[postgres]'"
    )


def test_the_storage_protocol_names_every_bundled_backend() -> None:
    # It said "PostgreSQL to follow" long after PostgresStorage shipped.
    import syncrecon.storage

    doc = inspect.getdoc(syncrecon.storage.Storage) or ""
    summary = doc.split("\n\n")[0]
    for backend in syncrecon.storage._BACKENDS:
        assert backend in summary, backend
    assert "to follow" not in doc


def test_missing_is_a_singleton_that_survives_pickling() -> None:
    assert pickle.loads(pickle.dumps(syncrecon.MISSING)) is syncrecon.MISSING
    assert repr(syncrecon.MISSING) == "MISSING"
    assert not syncrecon.MISSING


@pytest.mark.parametrize(
    "obj",
    [
        syncrecon.source_of_truth("left", unless_blank=True),
        syncrecon.recency(),
        syncrecon.merge(),
        syncrecon.escalate("amount"),
        syncrecon.one_sided(),
        syncrecon.recency() | syncrecon.escalate("notes"),
        syncrecon.Side.LEFT,
        syncrecon.Status.ESCALATED,
    ],
    ids=repr,
)
def test_public_values_pickle(obj: Any) -> None:
    assert pickle.loads(pickle.dumps(obj)) == obj


def _public_errors() -> list[tuple[str, type[BaseException]]]:
    found = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isclass(value) and issubclass(value, BaseException):
                found.append((f"{module_name}.{name}", value))
    return found


def test_errors_form_one_hierarchy() -> None:
    errors = _public_errors()
    assert len(errors) > 5
    for path, error in errors:
        assert issubclass(error, syncrecon.SyncReconError), path
        assert error.__name__.endswith("Error"), path
        # Whichever public module exports it, an error is defined in the one hierarchy.
        assert error.__module__ == "syncrecon._exceptions", path


def _documented_tree() -> dict[str, set[str]]:
    """The tree drawn in ``syncrecon._exceptions``' docstring: each error's parent and the
    built-ins it also derives from (the root's parent is ``Exception``)."""
    block = (_exceptions.__doc__ or "").split("::\n\n", 1)[1]
    tree: dict[str, set[str]] = {}
    path: list[str] = []
    for line in block.splitlines():
        match = re.match(r"    ((?:[│ ]   )*)([├└]── )?(\w+)(?: \((\w+)\))?", line)
        if match is None:
            continue
        indent, branch, name, builtin = match.groups()
        depth = len(indent) // 4 + (1 if branch else 0)
        del path[depth:]
        tree[name] = {path[-1] if path else "Exception"} | ({builtin} if builtin else set())
        path.append(name)
    return tree


def test_the_documented_error_tree_is_the_real_one() -> None:
    tree = _documented_tree()
    assert set(tree) == set(_exceptions.__all__)
    for name, bases in tree.items():
        error = getattr(_exceptions, name)
        assert {base.__name__ for base in error.__bases__} == bases, name


def test_a_held_lease_is_not_a_storage_failure() -> None:
    # Another worker holding (or having taken) a lease is coordination: ``except StorageError``
    # around a storage call must not swallow it.
    assert syncrecon.LeaseHeldError.__bases__ == (syncrecon.SyncReconError,)
    assert issubclass(syncrecon.LeaseLostError, syncrecon.LeaseHeldError)
    assert not issubclass(syncrecon.LeaseHeldError, syncrecon.StorageError)
    assert not issubclass(syncrecon.LeaseLostError, syncrecon.StorageError)


def test_the_queue_errors_are_in_the_one_hierarchy() -> None:
    import syncrecon.queue

    for name in ("QueueError", "ItemClosedError", "ItemNotFoundError"):
        assert getattr(syncrecon.queue, name) is getattr(_exceptions, name), name
    assert issubclass(syncrecon.queue.ItemClosedError, syncrecon.queue.QueueError)
    assert issubclass(syncrecon.queue.QueueError, ValueError)
    assert issubclass(syncrecon.queue.ItemNotFoundError, LookupError)
