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
from .._connector import read_batch, write_batch_or_failures
from .._exceptions import ConnectorBugError, ConnectorError, StorageError, SyncReconError
from .._models import Change, ChangeOp, Record, Side
from .._policy import MISSING, values_equal
from .._sync import FieldMap, SyncDefinition
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
            for echo in echo_entries(
                h,
                h._sync(sync_name),
                side,
                key,
                {_target_name(side, p.fm): _target_value(side, p) for p in fields.values()},
                batch.now,
                {_target_name(side, p.fm): p.event.occurred_at for p in fields.values()},
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


# One chunk: re-read, write, record ----------------------------------------------------------


def _write_chunk(batch: Batch, sync: SyncDefinition, side: Side, records: Records) -> None:
    connector = sync.connector(side)
    if batch.h.verify_source:
        records = _current_at_source(batch, sync, side, records)
        if not records:
            return
    try:
        found = {r.key: r for r in read_batch(batch.caller, connector, [k for k, _ in records])}
    except Exception as exc:  # after retries; never fails the batch
        _read_failed(batch, sync, side, records, exc, connector.name, "re-read")
        return
    changes: list[Change] = []
    sent: dict[str, list[Planned]] = {}
    for key, fields in records:
        current = found.get(key)
        if current is None or current.deleted:
            for p in fields.values():
                batch.done(p.entry, p.source, EventOutcome.DEFERRED, "the target record is gone")
            continue
        ok = []
        for p in fields.values():
            now_value = _value_held(side, p.fm, current)
            if now_value is _UNMAPPABLE or (
                p.base is not MISSING and not values_equal(now_value, p.base)
            ):
                _conflict(batch, p, None if now_value is _UNMAPPABLE else now_value)
                continue
            ok.append(p)
        if not ok:
            continue
        payload = {_target_name(side, p.fm): _target_value(side, p) for p in ok}
        changes.append(Change(op=ChangeOp.UPDATE, key=key, fields=payload, ref=key))
        sent[key] = ok
    if not changes:
        return
    # After retries: a transient failure goes to the outbox; a permanent one (a
    # connector's own bug included, logged with its traceback there) is never retried as if
    # it were the network.
    results = write_batch_or_failures(batch.caller, connector, changes)
    for change, result in zip(changes, results, strict=True):
        assert change.key is not None
        for p in sent[change.key]:
            if result.ok:
                _applied(batch, sync, side, change, p)
            elif result.retryable:
                _to_outbox(batch, sync, side, p, result.error or "write failed")
            else:
                _rejected(batch, sync, side, p, result.error or "rejected")
        if result.ok:
            batch.writes += 1


def _current_at_source(batch: Batch, sync: SyncDefinition, side: Side, records: Records) -> Records:
    """Re-read the events' source records (one batch) and keep only the events whose value
    the source still holds: an event whose source has moved on is older than the state,
    and writing it would put an old value over a newer one (the newer change's webhook
    may be late or lost; reconciliation repairs it). Invariant 1."""
    source = side.other
    connector = sync.connector(source)
    keys = sorted(
        {
            (p.left_key if source is Side.LEFT else p.right_key)
            for _, f in records
            for p in f.values()
        }
    )
    try:
        found = {r.key: r for r in read_batch(batch.caller, connector, keys)}
    except (ConnectorError, StorageError) as exc:
        _read_failed(batch, sync, side, records, exc, connector.name, "re-reading the source")
        return []
    kept: Records = []
    for key, fields in records:
        still: dict[str, Planned] = {}
        for name, p in fields.items():
            record = found.get(p.left_key if source is Side.LEFT else p.right_key)
            if record is None or record.deleted:
                batch.done(p.entry, p.source, EventOutcome.DEFERRED, "the source record is gone")
            elif not _same_reported(record.fields.get(str(p.event.field), MISSING), p.event.value):
                # The order guard moves: this change is not the field's newest.
                batch.step.field_times.append(
                    (sync.name, p.left_key, p.fm.left, p.event.occurred_at)
                )
                batch.done(
                    p.entry,
                    p.source,
                    EventOutcome.STALE,
                    "the source holds a newer value of the field",
                )
            else:
                still[name] = p
        if still:
            kept.append((key, still))
    return kept


def _read_failed(
    batch: Batch,
    sync: SyncDefinition,
    side: Side,
    records: Records,
    exc: Exception,
    system: str,
    what: str,
) -> None:
    """A re-read before the writes failed (after retries): the writes wait in the outbox. A
    connector's own bug is not retried: it is logged with its traceback and each write left
    to reconciliation as a queue item."""
    planned = [p for _, fields in records for p in fields.values()]
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


def _applied(batch: Batch, sync: SyncDefinition, side: Side, change: Change, p: Planned) -> None:
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
