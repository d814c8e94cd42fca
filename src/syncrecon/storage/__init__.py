"""Pluggable storage: the :class:`Storage` protocol and its backends.

Backends are imported by their path: ``syncrecon.storage.sqlite.SQLiteStorage`` (the
embedded default) and ``syncrecon.storage.memory.MemoryStorage``.
"""

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
    OutboxEntry,
    OutboxUpdate,
    Status,
    Step,
    Storage,
    SyncState,
)
from .memory import MemoryStorage
from .sqlite import SQLiteStorage

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
    "MemoryStorage",
    "OutboxEntry",
    "OutboxUpdate",
    "SQLiteStorage",
    "Status",
    "Step",
    "Storage",
    "SyncState",
]
