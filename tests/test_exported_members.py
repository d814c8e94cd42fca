"""The public surface: ``__all__`` lists exactly the public names, sorted, each importable.

Like httpx's ``tests/test_exported_members.py``. ``__all__`` is kept in ruff's RUF022
("isort-style") order: SCREAMING_CASE constants, then CamelCase classes, then everything
else, each group sorted case-sensitively.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import re
import sys
import types
from typing import Any

import pytest

import syncrecon

PUBLIC_MODULES = [
    "syncrecon",
    "syncrecon.dashboard",
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
    assert set(syncrecon.__all__) == public | {"__version__"} | set(syncrecon._LAZY)


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


def test_errors_form_one_hierarchy() -> None:
    errors = [
        getattr(syncrecon, name)
        for name in syncrecon.__all__
        if inspect.isclass(getattr(syncrecon, name))
        and issubclass(getattr(syncrecon, name), BaseException)
    ]
    assert len(errors) > 5
    for error in errors:
        assert issubclass(error, syncrecon.SyncReconError), error
        assert error.__name__.endswith("Error"), error
