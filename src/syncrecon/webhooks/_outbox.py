"""The outbox: fast-loop writes that failed for now, retried when due.

Entries are added by the coalesced writes (:mod:`._apply`) when a write still fails after
its retries. When one is due: held while its field is quarantined (schema drift, not counted
as a try); dropped when a newer change of the field was applied since; otherwise its echo
entries are recorded, the target re-read (gone: nothing to write; changed since the write was
decided: left to reconciliation) and the write made. A failure is tried again with exponential
backoff from ``outbox_backoff``; after ``outbox_attempts`` tries, or at once when the failure is
permanent, the entry becomes an open queue item and reconciliation decides again.

A connector's own bug (:class:`~syncrecon.ConnectorBugError`) is permanent: logged at ERROR
with its traceback, never retried as if it were the network.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._connector import Caller, read_batch, write_batch
from .._drift import SCHEMA_DRIFT_CATEGORY
from .._exceptions import ConnectorBugError, SyncReconError
from .._models import Change, ChangeOp, WriteResult
from .._policy import values_equal
from ..storage._base import BaseUpdate, Discrepancy, OutboxEntry, OutboxUpdate, Status, Step
from ._apply import echo_entries, record_echoes

if TYPE_CHECKING:
    from ._handler import WebhookHandler

log = logging.getLogger("syncrecon.webhooks")


def retry_due(handler: WebhookHandler, caller: Caller) -> tuple[int, int, int]:
    """Retry every due outbox entry: ``(retried, exhausted, writes)``."""
    retried = exhausted = writes = 0
    while True:
        now = handler.clock.now()
        due = handler.storage.claim_outbox(
            handler.owner, limit=handler.batch_size, now=now, lease=handler.lease
        )
        if not due:
            return retried, exhausted, writes
        for entry in due:
            retried += 1
            ok, gave_up = _retry_one(handler, caller, entry)
            writes += ok
            exhausted += gave_up


def _retry_one(handler: WebhookHandler, caller: Caller, entry: OutboxEntry) -> tuple[int, int]:
    """Retry one entry and commit what became of it: ``(written, gave up)``, each 0 or 1."""
    storage = handler.storage
    sync = handler._sync(entry.sync)
    connector = sync.connector(entry.side)
    now = handler.clock.now()
    step = Step(at=now)
    assert entry.id is not None
    quarantined = {
        i.field
        for i in storage.list_items(
            sync=entry.sync, statuses=[Status.ESCALATED], category=SCHEMA_DRIFT_CATEGORY
        )
        if not i.left_key and not i.right_key
    }
    if quarantined & set(entry.base):
        step.outbox_update.append(  # held, not spent: it goes once the quarantine lifts
            OutboxUpdate(
                id=entry.id,
                status="pending",
                attempts=entry.attempts,
                next_at=now + handler.outbox_backoff,
                last_error="held: the field is quarantined (schema drift)",
            )
        )
        storage.commit(step)
        return 0, 0
    newest = storage.get_field_times(entry.sync, [(entry.left_key, name) for name in entry.base])
    if entry.source_time is not None and any(t > entry.source_time for t in newest.values()):
        step.outbox_update.append(
            OutboxUpdate(
                id=entry.id,
                status="done",
                attempts=entry.attempts,
                next_at=now,
                last_error="superseded by a newer change of the field",
            )
        )
        storage.commit(step)
        return 0, 0
    # Before the re-read, as in a batch: the entries exist before the value can.
    times = dict.fromkeys(entry.fields, entry.source_time)
    echoes = echo_entries(handler, sync, entry.side, entry.key, entry.fields, now, times)
    record_echoes(handler, now, echoes)
    try:
        current = {r.key: r for r in read_batch(caller, connector, [entry.key])}
        record = current.get(entry.key)
        if record is None or record.deleted:
            step.outbox_update.append(
                OutboxUpdate(
                    id=entry.id,
                    status="done",
                    attempts=entry.attempts + 1,
                    next_at=now,
                    last_error="the target is gone; nothing to write",
                )
            )
            storage.commit(step)
            return 0, 0
        if any(not values_equal(record.fields.get(f), v) for f, v in entry.expect.items()):
            # Changed since the write was decided: reconciliation decides with both sides.
            step.outbox_update.append(
                OutboxUpdate(
                    id=entry.id,
                    status="failed",
                    attempts=entry.attempts + 1,
                    next_at=now,
                    last_error="the target changed; left to reconciliation",
                )
            )
            storage.commit(step)
            return 0, 0
        change = Change(op=ChangeOp.UPDATE, key=entry.key, fields=entry.fields, ref="outbox")
        result = write_batch(caller, connector, [change])[0]
    except Exception as exc:  # after retries; one entry never fails the others
        bug = isinstance(exc, ConnectorBugError)
        if bug or not isinstance(exc, SyncReconError):
            log.error(
                "%s: retrying the fast loop's write to %s %s (outbox entry %s) failed: %s; %s",
                connector.name,
                entry.side,
                entry.key,
                entry.id,
                exc,
                "a bug in the connector, not retried" if bug else "trying again later",
                exc_info=exc,
            )
        result = WriteResult(
            ref="outbox", ok=False, error=f"{type(exc).__name__}: {exc}", retryable=not bug
        )
    attempts = entry.attempts + 1
    if result.ok:
        step.outbox_update.append(
            OutboxUpdate(id=entry.id, status="done", attempts=attempts, next_at=now)
        )
        step.bases.append(BaseUpdate(sync=entry.sync, left_key=entry.left_key, values=entry.base))
        storage.commit(step)
        return 1, 0
    if attempts >= handler.outbox_attempts or not result.retryable:
        step.outbox_update.append(
            OutboxUpdate(
                id=entry.id,
                status="failed",
                attempts=attempts,
                next_at=now,
                last_error=result.error,
            )
        )
        step.new_items.extend(
            Discrepancy(
                sync=entry.sync,
                field=name,
                status=Status.OPEN,
                detected_at=now,
                left_key=entry.left_key,
                right_key=entry.right_key,
                rule="fast_loop",
                resolution=value,
                explanation=f"a fast-loop write to {entry.side} failed {attempts} times"
                f" ({result.error}); reconciliation decides again",
            )
            for name, value in entry.base.items()
        )
        storage.commit(step)
        return 0, 1
    delay = handler.outbox_backoff * (2 ** (attempts - 1))
    step.outbox_update.append(
        OutboxUpdate(
            id=entry.id,
            status="pending",
            attempts=attempts,
            next_at=now + delay,
            last_error=result.error,
        )
    )
    storage.commit(step)
    return 0, 0
