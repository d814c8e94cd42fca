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

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from ._clock import Clock, utc
from ._exceptions import PermanentError, RateLimitedError
from ._models import Capabilities, Change, ChangeOp, FieldInfo, Page, Record, WriteResult

__all__ = ["GeneratedSystem", "ManualClock", "SimulatedSystem", "WriteLogEntry"]

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


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


class SimulatedSystem:
    """An in-memory system behind the connector protocol.

    ``page_size`` and the batch limits shape the API like a real provider's;
    ``field_timestamps=True`` keeps per-field modification times (like HubSpot's property
    history); ``incremental=True`` honours ``since`` in listings. Records' keys are
    ``f"{key_prefix}{n}"``.
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
    ) -> None:
        self.name = name
        self.clock = clock
        self.capabilities = Capabilities(
            page_size=page_size,
            max_read_batch=max_read_batch,
            max_write_batch=max_write_batch,
            incremental=incremental,
            field_timestamps=field_timestamps,
        )
        self.key_prefix = key_prefix if key_prefix is not None else f"{name[:2]}-"
        self._records: dict[str, Record] = {}
        self._order: list[str] | None = None
        self._ids = itertools.count(1)
        self._fields = list(fields)
        self.calls: dict[str, int] = {}
        self.write_log: list[WriteLogEntry] = []
        self.faults = _Faults()

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
            if record is None:
                continue
            if since is not None and record.modified_at is not None and record.modified_at < since:
                continue
            yield record

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

    def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        self._enter("read_records", list(keys))
        if len(keys) > self.capabilities.max_read_batch:
            raise PermanentError(f"batch of {len(keys)} over the read limit", system=self.name)
        return [self._records[k] for k in keys if k in self._records]

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
            else:
                self._records[record.key] = record
            self._log(change.op, record.key, change.fields, old)
            results.append(WriteResult.success(change, record.key, modified_at=record.modified_at))
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

    def describe_fields(self) -> Sequence[FieldInfo]:
        self._enter("describe_fields")
        return list(self._fields)


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
        if self._index(key) is not None:
            self._deleted.add(key)

    def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        # The cursor is a position: generated records first, then created ones by key.
        self._enter("list_records", cursor)
        if not self.capabilities.incremental:
            since = None
        position = int(cursor) if cursor else 0
        extra = sorted((k for k in self._records if self._index(k) is None), key=_natural_order)
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

    def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        self._enter("read_records", list(keys))
        found = (self._generated(k) for k in keys)
        return [r for r in found if r is not None]

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
