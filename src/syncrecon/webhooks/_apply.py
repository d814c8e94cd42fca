"""The coalesced writes of one batch, and the outcome of each planned write.

Per target record the latest change of each field wins (older ones in the batch are stale,
superseded); the echo entries of every write are committed before the first call; then per
connector, in chunks of its batch limits: (with ``verify_source``) the sources re-read, an
event whose source has moved on dropped as stale; the targets re-read, a target that changed
since the base is a conflict left to reconciliation; one write call; each result recorded:
applied (the base and the field's order guard move), queued in the outbox (a transient failure,
after retries), or left to reconciliation as a queue item (a permanent failure).

A connector's own bug (:class:`~syncrecon.ConnectorBugError`) is never retried as if it were
the network: it is logged at ERROR with its traceback and the write is left to reconciliation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .. import _write_path
from .._exceptions import ConnectorBugError, ConnectorError, StorageError, SyncReconError
from .._models import Record, Side
from .._policy import MISSING, values_equal
from .._sync import FieldMap, SyncDefinition
from .._write_path import Applied, PlannedWrite, WriteOutcome, apply_writes
from ..storage._base import BaseUpdate, Discrepancy, Echo, OutboxEntry, Status, Step
from ._events import EventOutcome
from ._triage import Planned

if TYPE_CHECKING:
    from ._handler import WebhookHandler
    from ._process import Batch

log = logging.getLogger("syncrecon.webhooks")

Records = list[tuple[str, dict[str, Planned]]]
"""Target records of one connector: each key with its planned writes, by field (left name)."""


def write_planned(batch: Batch) -> None:
    """Coalesce the batch's planned writes, record their echoes, and write them."""
    # Coalesce: per target record, the latest change of each field wins; older ones in
    # the same batch were superseded before they were written.
    targets: dict[tuple[str, Side, str], dict[str, Planned]] = {}
    for p in batch.planned:
        target = p.source.side.other
        key = p.right_key if target is Side.RIGHT else p.left_key
        fields = targets.setdefault((p.source.sync.name, target, key), {})
        earlier = fields.get(p.fm.left)
        if earlier is not None:
            batch.done(earlier.entry, earlier.source, EventOutcome.STALE, "superseded in its batch")
        fields[p.fm.left] = p
    # Every write this batch may make is in the echo ledger before the first call: the
    # value, and the time of the edit it copies (its event's). One commit for the batch,
    # before the re-reads, so the window between a target's re-read and its write is not
    # widened; an entry whose write is then not made (a conflict, a failure) is harmless.
    h = batch.h
    record_echoes(
        h,
        batch.now,
        [
            echo
            for (sync_name, side, key), fields in targets.items()
            for p in fields.values()
            for echo in _planned_write(batch, side, key, p).echoes(
                sync_name, now=batch.now, ttl=h.echo_ttl
            )
        ],
    )
    by_connector: dict[tuple[str, Side], Records] = {}
    for (sync_name, side, key), fields in targets.items():
        by_connector.setdefault((sync_name, side), []).append((key, fields))
    for (sync_name, side), records in by_connector.items():
        sync = h._sync(sync_name)
        connector = sync.connector(side)
        size = min(connector.capabilities.max_read_batch, connector.capabilities.max_write_batch)
        for i in range(0, len(records), size):
            _write_chunk(batch, sync, side, records[i : i + size])


# The echo ledger ------------------------------------------------------------------------------


def echo_entries(
    handler: WebhookHandler,
    sync: SyncDefinition,
    side: Side,
    key: str,
    fields: Mapping[str, Any],
    now: datetime,
    source_times: Mapping[str, datetime | None],
) -> list[Echo]:
    """The echo entries of one write: per target field, the value's fingerprint and the
    time of the edit it copies (the vocabulary every writer shares)."""
    return _write_path.echo_entries(
        sync.name,
        side,
        key,
        fields,
        now=now,
        ttl=handler.echo_ttl,
        source_times=source_times,
    )


def record_echoes(handler: WebhookHandler, now: datetime, echoes: list[Echo]) -> None:
    """Commit a write's echo entries BEFORE its call (invariant 1).

    From the moment the target holds a value syncrecon wrote until the commit that moves
    the base, a cycle may read the target: the entry tells it the value's edit time (not
    the time of the write), so recency never prefers the copy of an older edit over a
    newer one; and a webhook of the write that comes back before that commit is already
    recognized as an echo. An entry whose write then fails is harmless: it only says that
    *if* the target holds this value, this is its edit's time.
    """
    if echoes:
        handler.storage.commit(Step(at=now, echoes=echoes))


# One chunk: the one apply path, and what became of each write ---------------------------------


def _write_chunk(batch: Batch, sync: SyncDefinition, side: Side, records: Records) -> None:
    """One chunk through the one apply path (:func:`~syncrecon._write_path.apply_writes`):
    (with ``verify_source``) the sources re-read first, an event whose source has moved on
    dropped as stale; the targets re-read, a target that changed since the base a conflict;
    one write call; each result recorded. The echoes are committed already, for the batch."""
    todo = [p for _, fields in records for p in fields.values()]
    outcomes = apply_writes(
        batch.caller,
        sync,
        [_planned_write(batch, side, key, p) for key, fields in records for p in fields.values()],
        now=lambda: batch.now,
        echo_ttl=batch.h.echo_ttl,
        sources_first=True,
    )
    done = list(zip(todo, outcomes, strict=True))
    failed_read = [(p, o) for p, o in done if o.kind is Applied.READ_FAILED]
    if failed_read and failed_read[0][1].at_source:
        exc = failed_read[0][1].exc
        assert exc is not None
        if not isinstance(exc, ConnectorError | StorageError):
            raise exc
        system = sync.connector(side.other).name
        _read_failed(batch, sync, side, todo, exc, system, "re-reading the source")
        return
    for p, o in done:
        if o.kind is Applied.SOURCE_MOVED:
            _source_moved(batch, sync, p, o)
    if failed_read:
        exc = failed_read[0][1].exc
        assert exc is not None
        planned = [p for p, _ in failed_read]
        _read_failed(batch, sync, side, planned, exc, sync.connector(side).name, "re-read")
        return
    for p, o in done:
        if o.kind is not Applied.CHANGED:
            continue
        if o.target_gone or o.current is None:
            batch.done(p.entry, p.source, EventOutcome.DEFERRED, "the target record is gone")
            continue
        now_value = _value_held(side, p.fm, o.current)
        _conflict(batch, p, None if now_value is _UNMAPPABLE else now_value)
    # After retries: a transient failure goes to the outbox; a permanent one (a
    # connector's own bug included, logged with its traceback there) is never retried as if
    # it were the network.
    written: set[str] = set()
    for p, o in done:
        key = o.planned.key
        if o.kind is Applied.WRITTEN:
            _applied(batch, sync, side, p)
            written.add(key)
        elif o.kind is Applied.FAILED and o.retryable:
            _to_outbox(batch, sync, side, p, o.error or "write failed")
        elif o.kind is Applied.FAILED:
            _rejected(batch, sync, side, p, o.error or "rejected")
    batch.writes += len(written)


def _planned_write(batch: Batch, side: Side, key: str, p: Planned) -> PlannedWrite:
    """A planned write of the fast loop, for the one apply path: fine while the target holds
    the base (a target that changed too, or holds a value the transform refuses, is a
    conflict); with ``verify_source``, while the source holds the value its event reported."""
    name = _target_name(side, p.fm)

    def unchanged(record: Record) -> bool:
        now_value = _value_held(side, p.fm, record)
        return now_value is not _UNMAPPABLE and (
            p.base is MISSING or values_equal(now_value, p.base)
        )

    def source_holds(record: Record) -> bool:
        return _same_reported(record.fields.get(str(p.event.field), MISSING), p.event.value)

    verify = batch.h.verify_source
    return PlannedWrite(
        side=side,
        key=key,
        fields={name: _target_value(side, p)},
        unchanged=unchanged,
        source_times={name: p.event.occurred_at},
        source_key=(p.left_key if side.other is Side.LEFT else p.right_key) if verify else None,
        source_holds=source_holds if verify else None,
        ref=key,
    )


def _source_moved(batch: Batch, sync: SyncDefinition, p: Planned, o: WriteOutcome) -> None:
    """An event whose source has moved on is older than the state, and writing it would put
    an old value over a newer one (the newer change's webhook may be late or lost;
    reconciliation repairs it). Invariant 1."""
    if o.source_gone:
        batch.done(p.entry, p.source, EventOutcome.DEFERRED, "the source record is gone")
        return
    # The order guard moves: this change is not the field's newest.
    batch.step.field_times.append((sync.name, p.left_key, p.fm.left, p.event.occurred_at))
    batch.done(
        p.entry,
        p.source,
        EventOutcome.STALE,
        "the source holds a newer value of the field",
    )


def _read_failed(
    batch: Batch,
    sync: SyncDefinition,
    side: Side,
    planned: list[Planned],
    exc: Exception,
    system: str,
    what: str,
) -> None:
    """A re-read before the writes failed (after retries): the writes wait in the outbox. A
    connector's own bug is not retried: it is logged with its traceback and each write left
    to reconciliation as a queue item."""
    if not isinstance(exc, ConnectorBugError):
        if not isinstance(exc, SyncReconError):  # syncrecon's own bug: say so, loudly
            log.error(
                "re-reading %s failed unexpectedly; queued in the outbox", system, exc_info=exc
            )
        for p in planned:
            _to_outbox(batch, sync, side, p, f"{what} failed: {exc}")
        return
    log.error(
        "%s.read_records failed with a bug before the fast loop's write to %s;"
        " %d write(s) left to reconciliation, not retried: %s",
        system,
        side,
        len(planned),
        exc,
        exc_info=exc,
    )
    error = f"{type(exc).__name__}: {exc}"
    for p in planned:
        _left_to_reconciliation(
            batch,
            sync,
            p,
            explanation=f"re-reading {system} before the fast loop's write to {side} failed"
            f" with a bug in the connector: {error}",
            note=f"{what} failed, not retried: {error}",
        )


# What became of each planned write ------------------------------------------------------------


def _applied(batch: Batch, sync: SyncDefinition, side: Side, p: Planned) -> None:
    batch.step.bases.append(
        BaseUpdate(sync=sync.name, left_key=p.left_key, values={p.fm.left: p.value})
    )
    batch.step.field_times.append((sync.name, p.left_key, p.fm.left, p.event.occurred_at))
    batch.done(p.entry, p.source, EventOutcome.APPLIED, f"{p.rule}: written to {side}")


def _conflict(batch: Batch, p: Planned, now_value: Any) -> None:
    # The event is the newest known change of the field, even if it is not written.
    batch.step.field_times.append((p.source.sync.name, p.left_key, p.fm.left, p.event.occurred_at))
    batch.step.new_items.append(
        Discrepancy(
            sync=p.source.sync.name,
            field=p.fm.left,
            status=Status.OPEN,
            detected_at=batch.now,
            left_key=p.left_key,
            right_key=p.right_key,
            left_value=p.value if p.source.side is Side.LEFT else now_value,
            right_value=now_value if p.source.side is Side.LEFT else p.value,
            base_value=None if p.base is MISSING else p.base,
            has_base=p.base is not MISSING,
            rule="fast_loop",
            explanation="both sides changed since the last sync; reconciliation decides",
        )
    )
    batch.done(p.entry, p.source, EventOutcome.DEFERRED, "the target changed too: a conflict")


def _to_outbox(batch: Batch, sync: SyncDefinition, side: Side, p: Planned, error: str) -> None:
    """A write that failed for now: the outbox retries it (:mod:`._outbox`)."""
    key = p.right_key if side is Side.RIGHT else p.left_key
    target_name = _target_name(side, p.fm)
    expect = {}
    if p.base is not MISSING:
        expect[target_name] = p.fm.transform.to_right(p.base) if side is Side.RIGHT else p.base
    batch.step.outbox_add.append(
        OutboxEntry(
            sync=sync.name,
            side=side,
            key=key,
            left_key=p.left_key,
            right_key=p.right_key,
            fields={target_name: _target_value(side, p)},
            expect=expect,
            base={p.fm.left: p.value},
            next_at=batch.now + batch.h.outbox_backoff,
            last_error=error,
            source_time=p.event.occurred_at,
        )
    )
    batch.step.field_times.append((sync.name, p.left_key, p.fm.left, p.event.occurred_at))
    batch.done(p.entry, p.source, EventOutcome.DEFERRED, f"queued in the outbox: {error}")


def _rejected(batch: Batch, sync: SyncDefinition, side: Side, p: Planned, error: str) -> None:
    _left_to_reconciliation(
        batch,
        sync,
        p,
        explanation=f"{side} rejected the fast loop's write: {error}",
        note=f"rejected by {side}: {error}",
    )


def _left_to_reconciliation(
    batch: Batch, sync: SyncDefinition, p: Planned, *, explanation: str, note: str
) -> None:
    """A write that is not made and not retried: an open queue item holds its value."""
    batch.step.new_items.append(
        Discrepancy(
            sync=sync.name,
            field=p.fm.left,
            status=Status.OPEN,
            detected_at=batch.now,
            left_key=p.left_key,
            right_key=p.right_key,
            rule="fast_loop",
            resolution=p.value,
            explanation=explanation,
        )
    )
    batch.done(p.entry, p.source, EventOutcome.DEFERRED, note)


# Values on the target's side ------------------------------------------------------------------

_UNMAPPABLE = object()


def _value_held(side: Side, fm: FieldMap, record: Record) -> Any:
    """The target's current value of the field in the left vocabulary (``_UNMAPPABLE`` when
    the transform refuses it: the write is then a conflict, left to reconciliation)."""
    if side is Side.LEFT:
        return record.fields.get(fm.left)
    try:
        return fm.transform.to_left(record.fields.get(fm.right))
    except Exception:  # a transform refusing a value is data: the conflict's item shows it
        return _UNMAPPABLE


def _target_name(side: Side, fm: FieldMap) -> str:
    """The field's own name on the ``side`` written to."""
    return fm.right if side is Side.RIGHT else fm.left


def _target_value(side: Side, p: Planned) -> Any:
    """A planned write's value in the vocabulary of the ``side`` written to."""
    return p.fm.transform.to_right(p.value) if side is Side.RIGHT else p.value


def _same_reported(current: Any, reported: Any) -> bool:
    """Whether the source's current value is the one an event reported (webhooks often carry
    numbers and booleans as text: ``"1200"`` reports ``1200``)."""
    if current is MISSING:
        return True  # the source's answer lacks the field: unknown, not a newer value
    if values_equal(current, reported):
        return True
    scalars = (str, int, float, Decimal, bool)
    if isinstance(current, scalars) and isinstance(reported, scalars):
        return str(current).strip().lower() == str(reported).strip().lower()
    return False
