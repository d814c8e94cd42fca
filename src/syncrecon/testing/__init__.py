"""Helpers for testing your own syncs: simulated systems and an injectable clock.

>>> from syncrecon.testing import ManualClock, SimulatedSystem
>>> clock = ManualClock()
>>> crm = SimulatedSystem("crm", clock=clock)
>>> key = crm.create({"email": "ada@example.com", "stage": "lead"})
>>> crm.get(key).fields["stage"]
'lead'

A :class:`SimulatedSystem` is a real :class:`~syncrecon.Connector`: it paginates, stamps
modification times from the clock (per field, when asked), counts API calls, logs every write
and injects faults (failed calls, rate limits, rejected records, truncated listings).
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import attrs

from .._clock import Clock, utc
from .._exceptions import PermanentError, RateLimitedError, TransientError
from .._models import Capabilities, Change, ChangeOp, FieldInfo, Page, Record, WriteResult
from ._hubspot import HubSpotEmulator, HubSpotOption, HubSpotProperty, HubSpotRequest
from ._salesforce import (
    SalesforceEmulator,
    SalesforceField,
    SalesforceRequest,
    default_salesforce_objects,
    make_jwt_assertion,
    make_test_key_pair,
)

__all__ = [
    "Delivery",
    "FlakyNetwork",
    "GeneratedSystem",
    "HubSpotEmulator",
    "HubSpotOption",
    "HubSpotProperty",
    "HubSpotRequest",
    "ManualClock",
    "SalesforceEmulator",
    "SalesforceField",
    "SalesforceRequest",
    "SimulatedSystem",
    "WebhookEmitter",
    "WebhookMessage",
    "WriteLogEntry",
    "default_salesforce_objects",
    "make_jwt_assertion",
    "make_test_key_pair",
]

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Run a connector method under the system's lock: the shards of a sharded cycle may call
    one system from several threads at once."""

    @functools.wraps(method)
    def call(self: SimulatedSystem, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast("_F", call)


@functools.lru_cache(maxsize=256)
def _bounds(partition: str) -> tuple[int | None, int | None]:
    """``"lo:hi"`` (either side may be empty: open) as numbers."""
    lo, _, hi = partition.partition(":")
    return (int(lo) if lo else None, int(hi) if hi else None)


def _in_range(number: int | None, partition: str) -> bool:
    lo, hi = _bounds(partition)
    if number is None:  # a key without a number: the open-ended last range holds it
        return hi is None
    return (lo is None or number >= lo) and (hi is None or number < hi)


class ManualClock:
    """A clock that moves only when told to (or by ``tick`` on every reading)."""

    def __init__(self, start: datetime = EPOCH, *, tick: timedelta = timedelta(0)) -> None:
        self._now = utc(start)
        self.tick = tick

    def now(self) -> datetime:
        current = self._now
        self._now += self.tick
        return current

    def advance(self, delta: timedelta | float) -> datetime:
        """Move the clock forward by ``delta`` (seconds, or a timedelta) and return the time."""
        self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        return self._now

    def set(self, when: datetime) -> None:
        """Set the time."""
        self._now = utc(when)

    def __repr__(self) -> str:
        return f"ManualClock({self._now.isoformat()})"


@attrs.frozen(kw_only=True)
class WriteLogEntry:
    """One write a simulated system accepted: when, what, and the values it replaced."""

    at: datetime
    op: ChangeOp
    key: str
    fields: Mapping[str, Any]
    replaced: Mapping[str, Any]
    replaced_modified_at: Mapping[str, datetime | None]


class _Faults:
    def __init__(self) -> None:
        self.call_failures: dict[str, list[Exception]] = {}
        self.rejected: dict[str, str] = {}
        self.truncate_after: int | None = None
        self.hooks: dict[str, list[Callable[[Any], None]]] = {}
        self.lost_responses: dict[str, int] = {}
        self.hidden_from_listing: set[str] = set()


class SimulatedSystem:
    """An in-memory system behind the connector protocol.

    ``page_size`` and the batch limits shape the API like a real provider's;
    ``field_timestamps=True`` keeps per-field modification times (like HubSpot's property
    history); ``incremental=True`` honours ``since`` in listings. Records' keys are
    ``f"{key_prefix}{n}"``.

    Creates: ``idempotent_creates=True`` behaves like Stripe's ``Idempotency-Key`` (a create
    repeated with the same :attr:`~syncrecon.Change.idempotency_key` returns the first record);
    ``finds_created=True`` keeps each create's key in an external id that
    :meth:`find_created` looks up (like a Salesforce external id field).
    ``lose_response_next()`` applies a call and then fails it as a read timeout would.
    """

    def __init__(
        self,
        name: str,
        *,
        clock: Clock,
        page_size: int = 100,
        max_read_batch: int = 100,
        max_write_batch: int = 100,
        incremental: bool = False,
        field_timestamps: bool = False,
        key_prefix: str | None = None,
        fields: Sequence[FieldInfo] = (),
        idempotent_creates: bool = False,
        finds_created: bool = False,
    ) -> None:
        self.name = name
        self.clock = clock
        self.capabilities = Capabilities(
            page_size=page_size,
            max_read_batch=max_read_batch,
            max_write_batch=max_write_batch,
            incremental=incremental,
            field_timestamps=field_timestamps,
            describes_fields=bool(fields),
            idempotent_creates=idempotent_creates,
            finds_created=finds_created,
        )
        self._created_by: dict[str, str] = {}  # idempotency key -> record key
        self.key_prefix = key_prefix if key_prefix is not None else f"{name[:2]}-"
        self._records: dict[str, Record] = {}
        self._order: list[str] | None = None
        self._ids = itertools.count(1)
        self._fields = list(fields)
        self.calls: dict[str, int] = {}
        self.write_log: list[WriteLogEntry] = []
        self.faults = _Faults()
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"SimulatedSystem({self.name!r}, {len(self)} records)"

    def __len__(self) -> int:
        return len(self._records)

    # -- the test's hands on the system ------------------------------------------------------

    def _stamp(self, old: Record | None, fields: Mapping[str, Any]) -> Record:
        now = self.clock.now()
        merged = dict(old.fields) if old is not None else {}
        merged.update(fields)
        times: dict[str, datetime] | None = None
        if self.capabilities.field_timestamps:
            times = dict(old.field_modified_at or {}) if old is not None else {}
            for name, value in fields.items():
                if old is None or old.fields.get(name) != value:
                    times[name] = now
        key = old.key if old is not None else self._new_key()
        return Record(key=key, fields=merged, modified_at=now, field_modified_at=times)

    def _new_key(self) -> str:
        return f"{self.key_prefix}{next(self._ids)}"

    def create(self, fields: Mapping[str, Any]) -> str:
        """Create a record as a user would; return its key."""
        record = self._stamp(None, fields)
        self._records[record.key] = record
        self._order = None
        return record.key

    def edit(self, key: str, **fields: Any) -> None:
        """Change fields of a record as a user would (bumps its modification time)."""
        self._records[key] = self._stamp(self._records[key], fields)

    def edit_unstamped(self, key: str, **fields: Any) -> None:
        """Change fields of a record without moving its modification time, as a system that
        does not bump it on every change would (a full sweep finds such a change)."""
        old = self._records[key]
        record = self._stamp(old, fields)
        self._records[key] = attrs.evolve(
            record, modified_at=old.modified_at, field_modified_at=old.field_modified_at
        )

    def delete(self, key: str) -> None:
        """Delete a record as a user would."""
        del self._records[key]
        self._order = None

    def get(self, key: str) -> Record:
        """The stored record (raises ``KeyError``)."""
        return self._records[key]

    def records(self) -> dict[str, Record]:
        """All records by key."""
        return dict(self._records)

    # -- fault injection ---------------------------------------------------------------------

    def fail_next(self, method: str, *errors: Exception) -> None:
        """Make the next calls of ``method`` raise these errors, in order."""
        self.faults.call_failures.setdefault(method, []).extend(errors)

    def rate_limit_next(self, method: str, times: int = 1, retry_after: float = 1.0) -> None:
        """Make the next ``times`` calls of ``method`` answer 429 with ``Retry-After``."""
        self.fail_next(
            method,
            *(
                RateLimitedError("429", retry_after=retry_after, system=self.name)
                for _ in range(times)
            ),
        )

    def reject(self, key: str, error: str = "rejected by validation rule") -> None:
        """Make writes to ``key`` fail (per record, the rest of the batch succeeds)."""
        self.faults.rejected[key] = error

    def truncate_listing(self, after: int | None) -> None:
        """End every listing after ``after`` records (a partial fetch); ``None`` undoes it."""
        self.faults.truncate_after = after

    def lose_response_next(self, method: str, times: int = 1) -> None:
        """Apply the next ``times`` calls of ``method``, then fail each with a read timeout
        (:class:`~syncrecon.TransientError`): the answer is lost, the effect is not."""
        self.faults.lost_responses[method] = self.faults.lost_responses.get(method, 0) + times

    def hide_from_listing(self, *keys: str) -> None:
        """Leave these records out of listings (a search index that has not caught up)."""
        self.faults.hidden_from_listing.update(keys)

    def _lose(self, method: str) -> None:
        if self.faults.lost_responses.get(method):
            self.faults.lost_responses[method] -= 1
            raise TransientError(
                f"{self.name}: read timeout (the call was applied)", system=self.name
            )

    @_locked
    def find_created(self, idempotency_keys: Sequence[str]) -> dict[str, Record]:
        """The records created with these idempotency keys (an external id lookup)."""
        self._enter("find_created", list(idempotency_keys))
        out = {}
        for key in idempotency_keys:
            record_key = self._created_by.get(key)
            if record_key is not None and record_key in self._records:
                out[key] = self._records[record_key]
        return out

    def on_call(self, method: str, hook: Callable[[Any], None]) -> None:
        """Run ``hook(argument)`` at the start of each call of ``method`` (before it reads)."""
        self.faults.hooks.setdefault(method, []).append(hook)

    def _enter(self, method: str, argument: Any = None) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        for hook in self.faults.hooks.get(method, []):
            hook(argument)
        pending = self.faults.call_failures.get(method)
        if pending:
            raise pending.pop(0)

    @property
    def total_calls(self) -> int:
        """API calls received, all methods."""
        return sum(self.calls.values())

    # -- the connector protocol --------------------------------------------------------------

    def _ordered(self) -> list[str]:
        if self._order is None:
            self._order = sorted(self._records, key=_natural_order)
        return self._order

    def _listing(self, since: datetime | None) -> Iterator[Record]:
        for key in self._ordered():
            record = self._records.get(key)
            if record is None or key in self.faults.hidden_from_listing:
                continue
            if since is not None and record.modified_at is not None and record.modified_at < since:
                continue
            yield record

    @_locked
    def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        self._enter("list_records", cursor)
        if not self.capabilities.incremental:
            since = None
        start = int(cursor) if cursor else 0
        size = self.capabilities.page_size
        listing = list(self._listing(since))
        limit = self.faults.truncate_after
        if limit is not None:
            listing = listing[:limit]
        chunk = listing[start : start + size]
        more = start + size < len(listing)
        return Page(records=chunk, next_cursor=str(start + size) if more else None)

    @_locked
    def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        self._enter("read_records", list(keys))
        if len(keys) > self.capabilities.max_read_batch:
            raise PermanentError(f"batch of {len(keys)} over the read limit", system=self.name)
        return [self._records[k] for k in keys if k in self._records]

    @_locked
    def write_records(self, changes: Sequence[Change]) -> Sequence[WriteResult]:
        self._enter("write_records", list(changes))
        if len(changes) > self.capabilities.max_write_batch:
            raise PermanentError(f"batch of {len(changes)} over the write limit", system=self.name)
        results = []
        for change in changes:
            key = change.key
            if key is not None and key in self.faults.rejected:
                results.append(WriteResult.failure(change, self.faults.rejected[key]))
                continue
            old = self._records.get(key) if key is not None else None
            if change.op is not ChangeOp.CREATE and old is None:
                results.append(WriteResult.failure(change, "no such record"))
                continue
            earlier = (
                self._created_by.get(change.idempotency_key)
                if change.op is ChangeOp.CREATE and change.idempotency_key
                else None
            )
            if earlier is not None and self.capabilities.idempotent_creates:
                results.append(WriteResult.success(change, earlier))  # the first answer again
                continue
            if change.op is ChangeOp.DELETE:
                assert key is not None
                assert old is not None
                self._log(change.op, key, {}, old)
                del self._records[key]
                self._order = None
                results.append(WriteResult.success(change))
                continue
            record = self._stamp(old, change.fields)
            if old is None:
                self._records[record.key] = record
                self._order = None
                if change.idempotency_key:
                    self._created_by[change.idempotency_key] = record.key
            else:
                self._records[record.key] = record
            self._log(change.op, record.key, change.fields, old)
            results.append(WriteResult.success(change, record.key, modified_at=record.modified_at))
        self._lose("write_records")
        return results

    def _log(self, op: ChangeOp, key: str, fields: Mapping[str, Any], old: Record | None) -> None:
        names = list(fields) if op is not ChangeOp.DELETE else list(old.fields if old else {})
        self.write_log.append(
            WriteLogEntry(
                at=self.clock.now(),
                op=op,
                key=key,
                fields=dict(fields),
                replaced={n: old.fields.get(n) for n in names} if old else {},
                replaced_modified_at={n: old.modified(n)[0] for n in names} if old else {},
            )
        )

    # -- partitions (sharded cycles) -----------------------------------------------------------

    def _number(self, key: str) -> int | None:
        """The number in a key of this system's form (``f"{key_prefix}{n}"``), else ``None``."""
        if not key.startswith(self.key_prefix):
            return None
        tail = key[len(self.key_prefix) :]
        return int(tail) if tail.isdigit() else None

    @_locked
    def partitions(self, count: int) -> Sequence[str]:
        """Id ranges (``"lo:hi"``, the first and last open-ended) with about as many records
        each, like Salesforce's PK chunking: see :class:`~syncrecon.PartitionedConnector`."""
        self._enter("partitions", count)
        numbers = sorted(n for n in map(self._number, self._records) if n is not None)
        cuts = sorted(
            {numbers[len(numbers) * i // count] for i in range(1, count)} if numbers else set()
        )
        cuts = [c for c in cuts if c > numbers[0]]
        edges: list[int | None] = [None, *cuts, None]
        return [
            f"{'' if lo is None else lo}:{'' if hi is None else hi}"
            for lo, hi in itertools.pairwise(edges)
        ]

    def partition_of(self, key: str, partitions: Sequence[str]) -> int:
        """The index of the partition (of ``partitions``) that holds ``key``."""
        number = self._number(key)
        for i, partition in enumerate(partitions):
            if _in_range(number, partition):
                return i
        return len(partitions) - 1

    @_locked
    def list_partition(self, partition: str, *, since: datetime | None, cursor: str | None) -> Page:
        """One page of the records of one id range (see :meth:`list_records`)."""
        self._enter("list_partition", partition)
        if not self.capabilities.incremental:
            since = None
        start = int(cursor) if cursor else 0
        size = self.capabilities.page_size
        listing = [r for r in self._listing(since) if _in_range(self._number(r.key), partition)]
        chunk = listing[start : start + size]
        more = start + size < len(listing)
        return Page(records=chunk, next_cursor=str(start + size) if more else None)

    @_locked
    def describe_fields(self) -> Sequence[FieldInfo]:
        self._enter("describe_fields")
        return list(self._fields)

    def set_fields(self, fields: Sequence[FieldInfo]) -> None:
        """Change the field descriptions (a schema change made by the system's admin)."""
        self._fields = list(fields)
        self.capabilities = attrs.evolve(self.capabilities, describes_fields=bool(fields))


def _natural_order(key: str) -> tuple[str, int, str]:
    head = key.rstrip("0123456789")
    tail = key[len(head) :]
    return (head, int(tail) if tail else -1, key)


class GeneratedSystem(SimulatedSystem):
    """A large simulated system whose records are generated on demand.

    Record ``i`` (``0 <= i < count``) is ``make(i)`` until it is written, edited or deleted;
    only those records are stored. Used by the benchmark, where a million records per side
    must not cost the simulator a million stored records.
    """

    def __init__(
        self,
        name: str,
        *,
        count: int,
        make: Callable[[int], Mapping[str, Any]],
        clock: Clock,
        modified_at: datetime = EPOCH,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, clock=clock, **kwargs)
        self.count = count
        self.make = make
        self.generated_at = utc(modified_at)
        self._deleted: set[str] = set()

    def __len__(self) -> int:
        return (
            self.count
            - len(self._deleted)
            + sum(1 for k in self._records if self._index(k) is None)
        )

    def _index(self, key: str) -> int | None:
        if not key.startswith(self.key_prefix):
            return None
        tail = key[len(self.key_prefix) :]
        if not tail.isdigit() or (tail.startswith("0") and tail != "0"):
            return None
        i = int(tail)
        return i if i < self.count else None

    def _new_key(self) -> str:
        return f"{self.key_prefix}new-{next(self._ids)}"

    def key_of(self, i: int) -> str:
        """The key of generated record ``i``."""
        return f"{self.key_prefix}{i}"

    def _number(self, key: str) -> int | None:
        return self._index(key)

    @_locked
    def partitions(self, count: int) -> Sequence[str]:
        """Ranges of the generated records' numbers, the last open-ended (it also holds the
        records created since)."""
        self._enter("partitions", count)
        cuts = sorted({self.count * i // count for i in range(1, count)} - {0})
        edges: list[int | None] = [None, *cuts, None]
        return [
            f"{'' if lo is None else lo}:{'' if hi is None else hi}"
            for lo, hi in itertools.pairwise(edges)
        ]

    @_locked
    def list_partition(self, partition: str, *, since: datetime | None, cursor: str | None) -> Page:
        # The cursor is a position, as in list_records, within the partition's range.
        self._enter("list_partition", partition)
        if not self.capabilities.incremental:
            since = None
        lo, hi = _bounds(partition)
        first = lo or 0
        position = int(cursor) if cursor else first
        if self._order is None:
            self._order = sorted(
                (k for k in self._records if self._index(k) is None), key=_natural_order
            )
        extra = self._order if hi is None else []
        stop = self.count if hi is None else min(hi, self.count)
        end = stop + len(extra)
        out: list[Record] = []
        while position < end and len(out) < self.capabilities.page_size:
            if position < stop:
                record = self._generated(self.key_of(position))
            else:
                record = self._records[extra[position - stop]]
            position += 1
            if record is None:
                continue
            if since is not None and record.modified_at is not None and record.modified_at < since:
                continue
            out.append(record)
        return Page(records=out, next_cursor=str(position) if position < end else None)

    def _generated(self, key: str) -> Record | None:
        if key in self._deleted:
            return None
        stored = self._records.get(key)
        if stored is not None:
            return stored
        i = self._index(key)
        if i is None:
            return None
        return Record(key=key, fields=self.make(i), modified_at=self.generated_at)

    def get(self, key: str) -> Record:
        record = self._generated(key)
        if record is None:
            raise KeyError(key)
        return record

    def edit(self, key: str, **fields: Any) -> None:
        self._records[key] = self._stamp(self.get(key), fields)

    def delete(self, key: str) -> None:
        self._records.pop(key, None)
        self._order = None
        if self._index(key) is not None:
            self._deleted.add(key)

    @_locked
    def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        # The cursor is a position: generated records first, then created ones by key.
        self._enter("list_records", cursor)
        if not self.capabilities.incremental:
            since = None
        position = int(cursor) if cursor else 0
        # Created records, by key: cached until a record is created or deleted (``_order`` is
        # reset then), as re-sorting every stored record on every page made a listing
        # quadratic in the records edited.
        if self._order is None:
            self._order = sorted(
                (k for k in self._records if self._index(k) is None), key=_natural_order
            )
        extra = self._order
        end = self.count + len(extra)
        if self.faults.truncate_after is not None:
            end = min(end, self.faults.truncate_after)
        out: list[Record] = []
        while position < end and len(out) < self.capabilities.page_size:
            if position < self.count:
                record = self._generated(self.key_of(position))
            else:
                record = self._records[extra[position - self.count]]
            position += 1
            if record is None:
                continue
            if since is not None and record.modified_at is not None and record.modified_at < since:
                continue
            out.append(record)
        return Page(records=out, next_cursor=str(position) if position < end else None)

    @_locked
    def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        self._enter("read_records", list(keys))
        found = (self._generated(k) for k in keys)
        return [r for r in found if r is not None]

    @_locked
    def write_records(self, changes: Sequence[Change]) -> Sequence[WriteResult]:
        # Materialize generated records being written, then reuse the stored-record logic.
        for change in changes:
            if change.key is not None and change.key not in self._records:
                record = self._generated(change.key)
                if record is not None:
                    self._records[change.key] = record
        results = super().write_records(changes)
        for change, result in zip(changes, results, strict=True):
            if change.op is ChangeOp.DELETE and result.ok and change.key is not None:
                self._deleted.add(change.key)
        return results


# --------------------------------------------------------------------------------------------
# Simulated webhooks: a provider that reports changes, and a network that loses, delays,
# reorders and repeats its deliveries.

from typing import TYPE_CHECKING  # noqa: E402 (the helpers below are appended to the module)

if TYPE_CHECKING:
    import random

    from ..webhooks import WebhookRequest


def _json_value(value: Any) -> Any:
    """What a provider's JSON carries for a value JSON has no type for (dates: ISO 8601)."""
    from datetime import date

    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@attrs.frozen(kw_only=True)
class WebhookMessage:
    """One webhook message a simulated provider sends: one change of one record.

    ``id`` is the ``webhook-id`` (kept when the message is delivered again); ``occurred_at``
    is when the change happened in the system; ``changes`` maps the changed fields to their new
    values; ``from_write`` is true when the change was a write through the connector's API
    (syncrecon's own write: real providers report those too).
    """

    id: str
    system: str
    key: str
    occurred_at: datetime
    changes: Mapping[str, Any] = attrs.field(factory=dict)
    deleted: bool = False
    created: bool = False
    from_write: bool = False
    body: bytes = attrs.field(default=b"", repr=False)


class WebhookEmitter:
    """Turns a :class:`SimulatedSystem`'s changes into signed webhook requests.

    The requests have the generic JSON shape of
    :class:`~syncrecon.webhooks.GenericJsonParser` (``{"type", "timestamp", "data": {"id",
    "object_type", "changes", "deleted"}}``) and Standard Webhooks v1 signatures
    (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) with ``secret``
    (``whsec_`` + base64), checked by :class:`~syncrecon.webhooks.StandardWebhooksVerifier`.

    :meth:`edit` changes a record as a user would and returns the message that reports it;
    :meth:`writes` returns the messages for the writes made through the connector since the
    last call (syncrecon's own writes, which real providers report too); :meth:`request` signs
    a message at its delivery time, so a late or repeated delivery still passes the verifier's
    timestamp tolerance and keeps its ``webhook-id``.
    """

    def __init__(
        self,
        system: SimulatedSystem,
        *,
        secret: str,
        url: str | None = None,
        object_type: str = "record",
        clock: Clock | None = None,
    ) -> None:
        import base64

        self.system = system
        self.url = url or f"https://app.example.com/webhooks/{system.name}"
        self.object_type = object_type
        self.clock: Clock = clock or system.clock
        self._key = base64.b64decode(secret.removeprefix("whsec_"))
        self._ids = itertools.count(1)
        self._seen = len(system.write_log)

    def __repr__(self) -> str:
        return f"WebhookEmitter({self.system.name!r}, url={self.url!r})"

    def message(
        self,
        key: str,
        changes: Mapping[str, Any],
        *,
        at: datetime,
        deleted: bool = False,
        created: bool = False,
        from_write: bool = False,
    ) -> WebhookMessage:
        """A message reporting ``changes`` to record ``key`` at ``at``."""
        import json

        msg_id = f"msg_{self.system.name}_{next(self._ids)}"
        when = utc(at)
        kind = "created" if created else "deleted" if deleted else "updated"
        payload = {
            "type": f"{self.object_type}.{kind}",
            "timestamp": when.isoformat(),
            "data": {
                "id": key,
                "object_type": self.object_type,
                "changes": dict(changes),
                "deleted": deleted,
            },
        }
        body = json.dumps(payload, default=_json_value, separators=(",", ":")).encode()
        return WebhookMessage(
            id=msg_id,
            system=self.system.name,
            key=key,
            occurred_at=when,
            changes=dict(changes),
            deleted=deleted,
            created=created,
            from_write=from_write,
            body=body,
        )

    def edit(self, key: str, **fields: Any) -> WebhookMessage:
        """Change fields of a record as a user would; return the message that reports it."""
        self.system.edit(key, **fields)
        record = self.system.get(key)
        at = record.modified_at
        assert at is not None
        return self.message(key, fields, at=at)

    def writes(self) -> list[WebhookMessage]:
        """Messages for the connector writes since the last call (fields that changed only)."""
        log = self.system.write_log
        out: list[WebhookMessage] = []
        for entry in log[self._seen :]:
            if entry.op is ChangeOp.DELETE:
                out.append(self.message(entry.key, {}, at=entry.at, deleted=True, from_write=True))
                continue
            changed = {
                name: value
                for name, value in entry.fields.items()
                if name not in entry.replaced or entry.replaced[name] != value
            }
            if entry.op is ChangeOp.CREATE:
                out.append(
                    self.message(entry.key, changed, at=entry.at, created=True, from_write=True)
                )
            elif changed:
                out.append(self.message(entry.key, changed, at=entry.at, from_write=True))
        self._seen = len(log)
        return out

    def request(self, message: WebhookMessage, *, at: datetime | None = None) -> WebhookRequest:
        """The signed :class:`~syncrecon.webhooks.WebhookRequest` delivering ``message``.

        It is signed at ``at`` (default: the clock's time), the moment it is sent.
        """
        import base64
        import hashlib
        import hmac

        from ..webhooks import WebhookRequest

        stamp = str(int(utc(at or self.clock.now()).timestamp()))
        signed = f"{message.id}.{stamp}.".encode() + message.body
        mac = hmac.new(self._key, signed, hashlib.sha256).digest()
        return WebhookRequest(
            method="POST",
            url=self.url,
            headers={
                "content-type": "application/json",
                "webhook-id": message.id,
                "webhook-timestamp": stamp,
                "webhook-signature": "v1," + base64.b64encode(mac).decode(),
            },
            body=message.body,
        )


@attrs.frozen(kw_only=True)
class Delivery:
    """One scheduled delivery of a message: when, by which emitter, and which attempt."""

    at: datetime
    emitter: WebhookEmitter
    message: WebhookMessage
    attempt: int = 1
    delayed: bool = False

    def request(self) -> WebhookRequest:
        """The signed request, signed now (see :meth:`WebhookEmitter.request`)."""
        return self.emitter.request(self.message)


class FlakyNetwork:
    """Delivers webhook messages the way the internet does: late, out of order, twice or never.

    Each message sent is lost with probability ``loss`` (never delivered), else delivered after
    a ``latency`` (seconds, uniform between the two bounds); with probability ``reorder`` it is
    held back a further ``reorder_delay`` (so it arrives after messages about later changes),
    and with probability ``duplicate`` it is delivered a second time, ``duplicate_delay`` after
    the first (a provider retrying after a lost acknowledgement). Every choice comes from
    ``rng``: the same seed gives the same deliveries. ``stats`` counts what happened.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        loss: float = 0.05,
        reorder: float = 0.2,
        duplicate: float = 0.1,
        latency: tuple[float, float] = (0.05, 2.0),
        reorder_delay: tuple[float, float] = (5.0, 600.0),
        duplicate_delay: tuple[float, float] = (1.0, 3600.0),
    ) -> None:
        self.rng = rng
        self.loss = loss
        self.reorder = reorder
        self.duplicate = duplicate
        self.latency = latency
        self.reorder_delay = reorder_delay
        self.duplicate_delay = duplicate_delay
        self._queue: list[tuple[datetime, int, Delivery]] = []
        self._seq = itertools.count()
        self.stats: dict[str, int] = {
            "sent": 0,
            "lost": 0,
            "delayed": 0,
            "duplicated": 0,
            "delivered": 0,
        }

    def __len__(self) -> int:
        return len(self._queue)

    def send(self, emitter: WebhookEmitter, message: WebhookMessage, now: datetime) -> None:
        """Hand ``message`` to the network at ``now``."""
        import heapq

        self.stats["sent"] += 1
        if self.rng.random() < self.loss:
            self.stats["lost"] += 1
            return
        delay = self.rng.uniform(*self.latency)
        delayed = self.rng.random() < self.reorder
        if delayed:
            self.stats["delayed"] += 1
            delay += self.rng.uniform(*self.reorder_delay)
        first = utc(now) + timedelta(seconds=delay)
        entries = [Delivery(at=first, emitter=emitter, message=message, delayed=delayed)]
        if self.rng.random() < self.duplicate:
            self.stats["duplicated"] += 1
            again = first + timedelta(seconds=self.rng.uniform(*self.duplicate_delay))
            entries.append(Delivery(at=again, emitter=emitter, message=message, attempt=2))
        for entry in entries:
            heapq.heappush(self._queue, (entry.at, next(self._seq), entry))

    def next_at(self) -> datetime | None:
        """When the next delivery is due, or ``None`` when nothing is in flight."""
        return self._queue[0][0] if self._queue else None

    def due(self, now: datetime) -> list[Delivery]:
        """Take the deliveries due at ``now``, in delivery order."""
        import heapq

        out: list[Delivery] = []
        while self._queue and self._queue[0][0] <= now:
            out.append(heapq.heappop(self._queue)[2])
        self.stats["delivered"] += len(out)
        return out
