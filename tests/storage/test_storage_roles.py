"""The role protocols: every backend satisfies each of them, and ``Storage`` is their union."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from storage_helpers import SYNC

import syncrecon.storage
from syncrecon.storage import (
    FastLoopStore,
    LeaseStore,
    LinkStore,
    MetricsStore,
    QueueStore,
    SchemaStore,
    Storage,
)

ROLES: list[type[Any]] = [
    LeaseStore,
    LinkStore,
    QueueStore,
    FastLoopStore,
    SchemaStore,
    MetricsStore,
]
OWN = {"setup", "close", "commit"}
"""What ``Storage`` adds to its roles: the schema's life cycle and the one write path."""


def methods(cls: type[Any]) -> set[str]:
    """The public methods ``cls`` declares itself (not the ones it inherits)."""
    return {
        name for name, value in vars(cls).items() if inspect.isfunction(value) and name[0] != "_"
    }


def test_backends_meet_the_protocol(storage: Storage) -> None:
    assert isinstance(storage, Storage)
    storage.setup()  # idempotent
    assert storage.count_links(SYNC) == 0


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.__name__)
def test_backends_meet_each_role(storage: Storage, role: type[Any]) -> None:
    assert isinstance(storage, role)


def test_storage_is_the_union_of_the_roles() -> None:
    assert not any(issubclass(role, Storage) for role in ROLES)  # a role alone is no Storage
    assert [base for base in Storage.__bases__ if base in ROLES] == ROLES
    assert methods(Storage) == OWN
    every = {name for name in dir(Storage) if name[0] != "_"}
    assert every == OWN.union(*(methods(role) for role in ROLES))


def test_each_method_belongs_to_one_role() -> None:
    seen: dict[str, str] = {}
    for role in ROLES:
        found = methods(role)
        assert found, role.__name__
        for name in found:
            assert name not in seen, f"{name} is in {seen.get(name)} and {role.__name__}"
            seen[name] = role.__name__
    assert not OWN & set(seen)


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.__name__)
def test_a_role_is_checked_alone(role: type[Any]) -> None:
    # A class with one role's methods only satisfies that role, and not Storage: a backend
    # author can check each group of methods while the others are still missing.
    body = {name: lambda self, *a, **kw: None for name in methods(role)}
    partial = type(f"Only{role.__name__}", (), body)()
    assert isinstance(partial, role)
    assert not isinstance(partial, Storage)
    for other in ROLES:
        if other is not role:
            assert not isinstance(partial, other), other.__name__


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.__name__)
def test_roles_are_exported_and_documented(role: type[Any]) -> None:
    assert role.__name__ in syncrecon.storage.__all__
    assert getattr(syncrecon.storage, role.__name__) is role
    doc = inspect.getdoc(role) or ""
    assert "Invariants" in doc, role.__name__
    for name in methods(role):
        assert inspect.getdoc(getattr(role, name)), f"{role.__name__}.{name}"
