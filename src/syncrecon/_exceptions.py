"""The one error hierarchy of syncrecon.

Every error syncrecon raises on purpose derives from :class:`SyncReconError`.
Errors also derive from the built-in they mean (``ValueError``, ``LookupError``,
``RuntimeError``) so that ``except ValueError`` keeps working in host code. A lease held (or
lost) by another worker is a matter of coordination, not a storage failure: ``except
StorageError`` does not catch it. The operator queue's errors are also importable from
:mod:`syncrecon.queue`::

    SyncReconError
    ├── ConfigurationError (ValueError)       a sync definition or option is wrong
    │   └── AppLoadError                      an import path names no usable object
    ├── ConnectorError                        a connector call failed
    │   ├── TransientError                    worth retrying (5xx, timeouts, dropped connections)
    │   │   └── RateLimitedError              429 or quota; carries ``retry_after`` seconds
    │   └── PermanentError                    not worth retrying (4xx other than 429)
    │       ├── AuthenticationError           credentials refused (401, a refused token)
    │       ├── ConnectorBugError             the connector itself failed (TypeError, ...)
    │       └── InvalidRecordError            the connector returned something not a Record
    ├── StorageError                          the storage backend failed
    │   └── SchemaVersionError                the database is newer than this library
    ├── LeaseHeldError                        another worker holds the lease
    │   └── LeaseLostError                    a lease was lost: the fenced commit changed nothing
    ├── CycleHaltedError (RuntimeError)       a guard stopped a cycle before it wrote anything
    ├── QueueError (ValueError)               a queue operation cannot be done as asked
    │   └── ItemClosedError                   the item is resolved or dismissed already
    ├── ItemNotFoundError (LookupError)       no queue item has that id
    └── WebhookError                          a webhook request was rejected (has ``status_code``)
        ├── SignatureError                    bad, missing or malformed signature (401)
        ├── TimestampError                    stale or future timestamp (401)
        ├── PayloadTooLargeError              body over the configured cap (413)
        ├── MalformedPayloadError (ValueError) not JSON, or not the expected shape (400)
        ├── MethodNotAllowedError             not a POST (405)
        └── UnknownSourceError (LookupError)  no handler for that source (404)
"""

from __future__ import annotations

from datetime import datetime

__all__ = [
    "AppLoadError",
    "AuthenticationError",
    "ConfigurationError",
    "ConnectorBugError",
    "ConnectorError",
    "CycleHaltedError",
    "InvalidRecordError",
    "ItemClosedError",
    "ItemNotFoundError",
    "LeaseHeldError",
    "LeaseLostError",
    "MalformedPayloadError",
    "MethodNotAllowedError",
    "PayloadTooLargeError",
    "PermanentError",
    "QueueError",
    "RateLimitedError",
    "SchemaVersionError",
    "SignatureError",
    "StorageError",
    "SyncReconError",
    "TimestampError",
    "TransientError",
    "UnknownSourceError",
    "WebhookError",
]


class SyncReconError(Exception):
    """Base class of every error syncrecon raises on purpose."""


class ConfigurationError(SyncReconError, ValueError):
    """A sync definition, field mapping or option is invalid."""


class ConnectorError(SyncReconError):
    """A connector call failed.

    Connectors raise :class:`TransientError` (or :class:`RateLimitedError`) for failures
    that are worth retrying and :class:`PermanentError` for the rest. Any other exception
    raised by a connector is treated as permanent.
    """

    def __init__(
        self,
        message: str,
        *,
        system: str | None = None,
        status: int | None = None,
        endpoint: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.system = system
        #: The HTTP status of the answer, when the failure was one (``None`` otherwise).
        self.status = status
        #: The endpoint label of the request (``"POST /crm/v3/objects/deals/search"``).
        self.endpoint = endpoint
        #: The provider's own error code (``"REQUEST_LIMIT_EXCEEDED"``), when it sent one.
        self.code = code


class TransientError(ConnectorError):
    """A failure worth retrying: a 5xx answer, a timeout, a dropped connection."""


class RateLimitedError(TransientError):
    """The system asked us to slow down (HTTP 429 or a quota answer).

    ``retry_after`` is the number of seconds the system asked us to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        system: str | None = None,
        status: int | None = None,
        endpoint: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, system=system, status=status, endpoint=endpoint, code=code)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """A failure that retrying will not fix (a 4xx answer other than 429)."""


class AuthenticationError(PermanentError):
    """The system refused the credentials: a 401 answer, or a token request turned down.

    The message names the system and endpoint, never the credentials.
    """


class ConnectorBugError(PermanentError):
    """A connector method raised an error that is not a :class:`ConnectorError`.

    A ``TypeError`` or ``AttributeError`` out of a connector is a bug in the connector, not a
    network failure: it is logged with the system (and record, where known) and never retried.
    The original exception is the ``__cause__``.
    """

    def __init__(self, message: str, *, system: str | None = None, method: str = "") -> None:
        super().__init__(message, system=system)
        self.method = method


class InvalidRecordError(PermanentError):
    """A connector returned something that is not a valid :class:`~syncrecon.Record`.

    The cycle skips that entry (and reports and escalates it) and goes on with the rest.
    ``item`` is what the connector returned.
    """

    def __init__(self, message: str, *, system: str | None = None, item: object = None) -> None:
        super().__init__(message, system=system)
        self.item = item


class StorageError(SyncReconError):
    """The storage backend failed; the step that raised it was rolled back."""


class SchemaVersionError(StorageError):
    """The database schema is newer than this version of syncrecon understands."""


class LeaseHeldError(SyncReconError):
    """Another worker holds the lease (for example, a reconciliation cycle is running).

    Not a :class:`StorageError`: the storage worked, and another worker got there first.

    ``name`` is the lease, ``owner`` who holds it and ``until`` when it expires (unless its
    holder renews it), where known.
    """

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        owner: str | None = None,
        until: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.name = name
        self.owner = owner
        self.until = until


class LeaseLostError(LeaseHeldError):
    """A lease was lost while its work ran (it expired and another worker took it, or it was
    released): a commit fenced by it is refused and changes nothing."""


class CycleHaltedError(SyncReconError, RuntimeError):
    """A safety guard stopped a reconciliation cycle before it wrote anything.

    Raised only when the caller asks for it (``Reconciler(raise_on_halt=True)``); by
    default the halt is reported in :attr:`CycleReport.halted` and escalated.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class QueueError(SyncReconError, ValueError):
    """A queue operation cannot be done as asked (the item or the arguments do not allow it)."""


class ItemClosedError(QueueError):
    """The item is closed already (resolved, auto-resolved or dismissed)."""


class ItemNotFoundError(SyncReconError, LookupError):
    """No queue item has that id."""


class WebhookError(SyncReconError):
    """A webhook request was rejected; ``status_code`` is the HTTP answer to give."""

    status_code: int = 400


class SignatureError(WebhookError):
    """The signature is missing, malformed or does not match any active secret."""

    status_code = 401


class TimestampError(WebhookError):
    """The signed timestamp is outside the tolerance window (stale or in the future)."""

    status_code = 401


class PayloadTooLargeError(WebhookError):
    """The request body is larger than the configured cap."""

    status_code = 413


class MalformedPayloadError(WebhookError, ValueError):
    """The body is not valid JSON or not the shape the parser expects."""

    status_code = 400


class MethodNotAllowedError(WebhookError):
    """Webhooks are POSTed; any other method is refused."""

    status_code = 405


class UnknownSourceError(WebhookError, LookupError):
    """No webhook source is registered under that name."""

    status_code = 404


class AppLoadError(ConfigurationError):
    """An import path (``"package.module:attribute"``) does not name a usable object.

    The module cannot be imported, the attribute is missing, the path is malformed, or the
    object (or what its factory returns) is not of a kind the caller accepts.
    """
