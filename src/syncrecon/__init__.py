"""syncrecon: keep records in two SaaS systems in agreement, and prove it.

The public API lives here. The hosting pieces (``WebhookHandler``, ``Worker``, ``OperatorQueue``,
the schedulers and the storage backends, ``PostgresStorage`` with the ``postgres`` extra) are
exported here too but load when first used, so ``import syncrecon`` stays light; test helpers
come from ``syncrecon.testing``.
"""

import importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from ._clock import Clock, SystemClock
from ._connector import AsyncConnector, Connector, PartitionedConnector, RetrySettings
from ._exceptions import (
    AppLoadError,
    AuthenticationError,
    ConfigurationError,
    ConnectorBugError,
    ConnectorError,
    CycleHaltedError,
    InvalidRecordError,
    ItemClosedError,
    ItemNotFoundError,
    LeaseHeldError,
    LeaseLostError,
    MalformedPayloadError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    PermanentError,
    QueueError,
    RateLimitedError,
    SchemaVersionError,
    SignatureError,
    StorageError,
    SyncReconError,
    TimestampError,
    TransientError,
    UnknownSourceError,
    WebhookError,
)
from ._models import Capabilities, Change, ChangeOp, FieldInfo, Page, Record, Side, WriteResult
from ._policy import (
    MISSING,
    Decision,
    Escalate,
    FieldPolicy,
    FieldState,
    Merge,
    OneSided,
    Outcome,
    Recency,
    SourceOfTruth,
    decide,
    escalate,
    merge,
    one_sided,
    recency,
    source_of_truth,
)
from ._reconciler import CycleReport, Reconciler
from ._retention import Retention
from ._sync import (
    Direction,
    FieldMap,
    NaturalKey,
    SyncDefinition,
    Transform,
    normalize_email,
    value_map,
)
from ._version import __version__
from .storage import Discrepancy, Status, Storage

if _TYPE_CHECKING:
    from .queue import OperatorQueue
    from .scheduling import IntervalScheduler, Scheduler
    from .storage.memory import MemoryStorage
    from .storage.postgres import PostgresStorage as PostgresStorage  # needs the extra
    from .storage.sqlite import SQLiteStorage
    from .webhooks import WebhookHandler, WebhookSource
    from .worker import Worker

# The hosting pieces load when first asked for, so ``import syncrecon`` stays light (no web,
# queue, worker or storage backend modules until a program uses them).
_LAZY = {
    "IntervalScheduler": ".scheduling",
    "MemoryStorage": ".storage.memory",
    "OperatorQueue": ".queue",
    "PostgresStorage": ".storage.postgres",
    "SQLiteStorage": ".storage.sqlite",
    "Scheduler": ".scheduling",
    "WebhookHandler": ".webhooks",
    "WebhookSource": ".webhooks",
    "Worker": ".worker",
}


def __getattr__(name: str) -> _Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


_OPTIONAL = frozenset({"PostgresStorage"})
"""Lazy names that need an extra: importable by name, left out of ``__all__`` and ``dir()`` so
that ``from syncrecon import *``, ``inspect.getmembers`` and pydoc work without the extra."""


def __dir__() -> list[str]:
    return sorted([*globals(), *(name for name in _LAZY if name not in _OPTIONAL)])


__all__ = [
    "MISSING",
    "AppLoadError",
    "AsyncConnector",
    "AuthenticationError",
    "Capabilities",
    "Change",
    "ChangeOp",
    "Clock",
    "ConfigurationError",
    "Connector",
    "ConnectorBugError",
    "ConnectorError",
    "CycleHaltedError",
    "CycleReport",
    "Decision",
    "Direction",
    "Discrepancy",
    "Escalate",
    "FieldInfo",
    "FieldMap",
    "FieldPolicy",
    "FieldState",
    "IntervalScheduler",
    "InvalidRecordError",
    "ItemClosedError",
    "ItemNotFoundError",
    "LeaseHeldError",
    "LeaseLostError",
    "MalformedPayloadError",
    "MemoryStorage",
    "Merge",
    "MethodNotAllowedError",
    "NaturalKey",
    "OneSided",
    "OperatorQueue",
    "Outcome",
    "Page",
    "PartitionedConnector",
    "PayloadTooLargeError",
    "PermanentError",
    "QueueError",
    "RateLimitedError",
    "Recency",
    "Reconciler",
    "Record",
    "Retention",
    "RetrySettings",
    "SQLiteStorage",
    "Scheduler",
    "SchemaVersionError",
    "Side",
    "SignatureError",
    "SourceOfTruth",
    "Status",
    "Storage",
    "StorageError",
    "SyncDefinition",
    "SyncReconError",
    "SystemClock",
    "TimestampError",
    "Transform",
    "TransientError",
    "UnknownSourceError",
    "WebhookError",
    "WebhookHandler",
    "WebhookSource",
    "Worker",
    "WriteResult",
    "__version__",
    "decide",
    "escalate",
    "merge",
    "normalize_email",
    "one_sided",
    "recency",
    "source_of_truth",
    "value_map",
]
