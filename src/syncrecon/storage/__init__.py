"""Pluggable storage: the :class:`Storage` protocol and its backends.

:class:`Storage` is the union of small role protocols, one per concern, each with the
invariants of its role: :class:`LeaseStore` (leases), :class:`LinkStore` (links, bases, marks,
watermarks), :class:`QueueStore` (the reconciliation queue), :class:`FastLoopStore` (inbox,
claims, field times, echoes, outbox), :class:`SchemaStore` (field schemas, create intents) and
:class:`MetricsStore` (counters, cycle reports, retention); :meth:`Storage.commit` is the one
write path of all of them. :class:`ShardStore` (sharded cycles' plans and shard results) and
:class:`BatchReadStore` (the fast loop's reads of a whole batch at once) are optional roles
every bundled backend has.

The backends, ``SQLiteStorage`` (the embedded default), ``PostgresStorage`` (many processes;
the ``postgres`` extra) and ``MemoryStorage``, load when first asked for
(``from syncrecon.storage import SQLiteStorage``, or by their own modules' paths).
"""

import importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._base import (
    BaseUpdate,
    BatchReadStore,
    Counter,
    CreateIntent,
    CycleRecord,
    Discrepancy,
    Echo,
    FastLoopStore,
    FieldSchema,
    InboxEntry,
    ItemUpdate,
    LeaseStore,
    Link,
    LinkMark,
    LinkStore,
    MetricsStore,
    OutboxEntry,
    OutboxUpdate,
    QueueStore,
    SchemaStore,
    SeenMark,
    ShardPlan,
    ShardResult,
    ShardStore,
    Status,
    Step,
    Storage,
    SyncState,
    claim_lost,
    lease_lost,
)

if _TYPE_CHECKING:
    from .memory import MemoryStorage
    from .postgres import PostgresStorage
    from .sqlite import SQLiteStorage

_BACKENDS = {
    "MemoryStorage": ".memory",
    "PostgresStorage": ".postgres",
    "SQLiteStorage": ".sqlite",
}


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
    "BatchReadStore",
    "Counter",
    "CreateIntent",
    "CycleRecord",
    "Discrepancy",
    "Echo",
    "FastLoopStore",
    "FieldSchema",
    "InboxEntry",
    "ItemUpdate",
    "LeaseStore",
    "Link",
    "LinkMark",
    "LinkStore",
    "MemoryStorage",
    "MetricsStore",
    "OutboxEntry",
    "OutboxUpdate",
    "PostgresStorage",
    "QueueStore",
    "SQLiteStorage",
    "SchemaStore",
    "SeenMark",
    "ShardPlan",
    "ShardResult",
    "ShardStore",
    "Status",
    "Step",
    "Storage",
    "SyncState",
    "claim_lost",
    "lease_lost",
]
