"""Pluggable storage: the :class:`Storage` protocol and its backends.

The backends, ``SQLiteStorage`` (the embedded default) and ``MemoryStorage``, load when first
asked for (``from syncrecon.storage import SQLiteStorage``, or by their own modules' paths).
"""

import importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._base import (
    BaseUpdate,
    Counter,
    CreateIntent,
    CycleRecord,
    Discrepancy,
    Echo,
    FieldSchema,
    InboxEntry,
    ItemUpdate,
    Link,
    LinkMark,
    OutboxEntry,
    OutboxUpdate,
    SeenMark,
    Status,
    Step,
    Storage,
    SyncState,
    claim_lost,
    lease_lost,
)

if _TYPE_CHECKING:
    from .memory import MemoryStorage
    from .sqlite import SQLiteStorage

_BACKENDS = {"MemoryStorage": ".memory", "SQLiteStorage": ".sqlite"}


def __getattr__(name: str) -> _Any:
    # The backends load when first asked for: ``import syncrecon`` loads neither.
    module = _BACKENDS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_BACKENDS])


__all__ = [
    "BaseUpdate",
    "Counter",
    "CreateIntent",
    "CycleRecord",
    "Discrepancy",
    "Echo",
    "FieldSchema",
    "InboxEntry",
    "ItemUpdate",
    "Link",
    "LinkMark",
    "MemoryStorage",
    "OutboxEntry",
    "OutboxUpdate",
    "SQLiteStorage",
    "SeenMark",
    "Status",
    "Step",
    "Storage",
    "SyncState",
    "claim_lost",
    "lease_lost",
]
