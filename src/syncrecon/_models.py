"""Immutable values that cross syncrecon's boundaries.

Records come in from connectors, changes go out to them, and decisions, discrepancies and
cycle reports come back to the caller. All are frozen, keyword-only attrs classes: build a
modified copy with :func:`attrs.evolve`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import attrs

from ._clock import utc

__all__ = [
    "Capabilities",
    "Change",
    "ChangeOp",
    "FieldInfo",
    "Page",
    "Record",
    "Side",
    "WriteResult",
]


class Side(enum.StrEnum):
    """One of the two systems of a sync. Values compare equal to ``"left"`` and ``"right"``."""

    LEFT = "left"
    RIGHT = "right"

    @property
    def other(self) -> Side:
        """The opposite side."""
        return Side.RIGHT if self is Side.LEFT else Side.LEFT

    def __str__(self) -> str:
        return self.value


def _freeze_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return {} if value is None else dict(value)


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def _freeze_times(value: Mapping[str, datetime] | None) -> Mapping[str, datetime] | None:
    if value is None:
        return None
    return {name: utc(when) for name, when in value.items()}


def _record_key(_: Any, attribute: attrs.Attribute[str], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(
            f"Record.key must be a non-empty str, got {value!r} ({type(value).__name__})"
        )


@attrs.frozen(kw_only=True)
class Record:
    """A record as one system reports it.

    ``fields`` holds the system's own field names and values (JSON-like values plus
    ``date``, ``datetime`` and ``Decimal``). ``modified_at`` is the record-level modification
    time; ``field_modified_at`` gives per-field times where the system has them (HubSpot's
    property history, for example). ``deleted`` marks a tombstone that a system reports in an
    incremental listing.

    A field absent from ``fields`` is *unknown* (the system did not say), which is not the same
    as an explicit ``None`` (blank): syncrecon never writes a blank for a field it was not given.
    """

    key: str = attrs.field(validator=_record_key)
    fields: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    modified_at: datetime | None = attrs.field(default=None, converter=_opt_utc)
    field_modified_at: Mapping[str, datetime] | None = attrs.field(
        default=None, converter=_freeze_times
    )
    deleted: bool = False

    def modified(self, field: str) -> tuple[datetime | None, bool]:
        """Return ``(time, per_field)``: the field's own time if known, else the record's."""
        if self.field_modified_at is not None and field in self.field_modified_at:
            return self.field_modified_at[field], True
        return self.modified_at, False


def _to_records(value: Iterable[Record]) -> list[Record]:
    return list(value)


@attrs.frozen(kw_only=True)
class Page:
    """One page of a listing: the records and the cursor of the next page (``None`` at the end)."""

    records: list[Record] = attrs.field(factory=list, converter=_to_records)
    next_cursor: str | None = None


class ChangeOp(enum.StrEnum):
    """What a :class:`Change` does."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@attrs.frozen(kw_only=True)
class Change:
    """A change to write to one system.

    ``key`` is the record's key for updates and deletes and ``None`` for creates. ``fields``
    holds the target system's field names and values. ``ref`` is an opaque reference that
    syncrecon uses to match a :class:`WriteResult` to its change; connectors copy it back.

    ``idempotency_key`` is set on creates: it is recorded (a *create intent*) before the call
    and stays the same across retries and crashes. A connector passes it on as the provider's
    idempotency key where one exists (Stripe's ``Idempotency-Key``) or stores it in an external
    id / unique property (Salesforce, HubSpot), so that a create whose answer was lost is never
    made twice (see :attr:`Capabilities.idempotent_creates` and ``finds_created``).
    """

    op: ChangeOp = attrs.field(converter=ChangeOp)
    key: str | None = None
    fields: Mapping[str, Any] = attrs.field(factory=dict, converter=_freeze_mapping)
    ref: str = ""
    idempotency_key: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.op is not ChangeOp.CREATE and not self.key:
            raise ValueError(f"a {self.op.value} change needs a record key")


@attrs.frozen(kw_only=True)
class WriteResult:
    """The outcome of one :class:`Change` in a batch write.

    ``ok`` tells whether the change was applied. ``key`` is the record's key (for a create,
    the key the system assigned). ``error`` describes a rejection, and ``retryable`` says
    whether trying the same change again later may succeed.
    """

    ref: str
    ok: bool
    key: str | None = None
    error: str | None = None
    retryable: bool = False
    modified_at: datetime | None = attrs.field(default=None, converter=_opt_utc)

    @classmethod
    def success(
        cls, change: Change, key: str | None = None, *, modified_at: datetime | None = None
    ) -> WriteResult:
        """A successful result for ``change`` (``key`` defaults to the change's key)."""
        return cls(ref=change.ref, ok=True, key=key or change.key, modified_at=modified_at)

    @classmethod
    def failure(cls, change: Change, error: str, *, retryable: bool = False) -> WriteResult:
        """A rejected ``change`` with a reason."""
        return cls(ref=change.ref, ok=False, key=change.key, error=error, retryable=retryable)


def _positive(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1, got {value}")


@attrs.frozen(kw_only=True)
class Capabilities:
    """What a connector can do, so that syncrecon spends as few API calls as possible.

    ``page_size`` is how many records one listing call returns; ``max_read_batch`` and
    ``max_write_batch`` bound a batch read by key and a batch write. ``incremental`` says the
    connector honours ``since`` in :meth:`Connector.list_records`; ``field_timestamps`` says
    records carry per-field modification times; ``describes_fields`` says
    :meth:`Connector.describe_fields` is worth calling (schema-drift detection uses it on every
    cycle).

    Creates: ``idempotent_creates`` says the provider de-duplicates creates by
    :attr:`Change.idempotency_key` (a repeated create returns the first record), so a create
    call may be retried after a lost answer; ``finds_created`` says the connector implements
    ``find_created(idempotency_keys)`` (the records it created with those keys, by key), so
    syncrecon looks a create up before trying it again. With neither, a create whose answer was
    lost is not retried in that cycle: the next full sweep links it by its natural key.

    ``retries_requests`` says the connector retries each HTTP request itself (every connector
    built on :mod:`syncrecon.http` does): syncrecon then calls each method once, so retries are
    never multiplied, and counts the HTTP requests the call made instead of one per call.
    """

    page_size: int = attrs.field(default=100, validator=_positive)
    max_read_batch: int = attrs.field(default=100, validator=_positive)
    max_write_batch: int = attrs.field(default=100, validator=_positive)
    incremental: bool = False
    field_timestamps: bool = False
    describes_fields: bool = True
    idempotent_creates: bool = False
    finds_created: bool = False
    retries_requests: bool = False


def _opt_tuple(value: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


@attrs.frozen(kw_only=True)
class FieldInfo:
    """A field as a connector describes it: its name, type and allowed options."""

    name: str
    type: str = "string"
    options: tuple[str, ...] | None = attrs.field(default=None, converter=_opt_tuple)
    required: bool = False
