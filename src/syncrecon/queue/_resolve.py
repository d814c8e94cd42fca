"""Resolving an item: what a resolution reports, and the engine behind
:meth:`OperatorQueue.resolve`.

:func:`resolve` checks the choice, acknowledges a record-level item, and for a field item takes
the item's lease and hands it to :class:`_Resolve`, which reads both records again, writes the
chosen value where needed and commits the base, the item and the echo ledger in one step.
"""

from __future__ import annotations

import enum
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from .._connector import Caller, read_batch, write_batch
from .._drift import SCHEMA_DRIFT_CATEGORY
from .._exceptions import ConfigurationError, LeaseHeldError, QueueError
from .._models import Change, ChangeOp, Record, Side
from .._sync import FieldMap, SyncDefinition
from .._write_path import echo_entries, holds, record_name
from ..storage._base import BaseUpdate, Discrepancy, ItemUpdate, Status, Step
from ._items import DEFAULT_STATUSES, active_item, is_record_level, operator_note
from ._views import plain, shown

if TYPE_CHECKING:
    from ._api import OperatorQueue

Take = Literal["left", "right"]

UNSET: Final[Any] = object()
"""The default of ``value``: no value given (``None`` is a value)."""

_LEASE_TTL: Final = timedelta(minutes=10)


class ResolutionOutcome(enum.StrEnum):
    """What :meth:`OperatorQueue.resolve` did."""

    RESOLVED = "resolved"
    """The chosen value was written where needed, the base moved and the item is closed."""
    ACKNOWLEDGED = "acknowledged"
    """A record-level item was closed; nothing was written."""
    CHANGED = "changed"
    """A record changed since the item was opened: nothing was written, the item is back in
    review (escalated)."""
    FAILED = "failed"
    """A read or a write failed: the item stays active with the error in its note; the base
    did not move."""


@attrs.frozen(kw_only=True)
class Resolution:
    """The result of :meth:`OperatorQueue.resolve`.

    ``value`` is the chosen value (left vocabulary; ``None`` for a record-level item),
    ``written`` the sides written (a side that already held the value is not written),
    ``status`` the item's status afterwards and ``message`` a sentence a person can read.
    """

    item_id: int
    outcome: ResolutionOutcome = attrs.field(converter=ResolutionOutcome)
    status: Status = attrs.field(converter=Status)
    value: Any = None
    written: tuple[Side, ...] = ()
    message: str = ""

    @property
    def closed(self) -> bool:
        """Whether the item is closed now."""
        return self.outcome in (ResolutionOutcome.RESOLVED, ResolutionOutcome.ACKNOWLEDGED)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (values in the tagged form of :func:`item_data`)."""
        return {
            "item_id": self.item_id,
            "outcome": self.outcome.value,
            "status": self.status.value,
            "value": plain(self.value),
            "written": [s.value for s in self.written],
            "message": self.message,
        }

    def __str__(self) -> str:
        return f"item {self.item_id}: {self.outcome.value} ({self.status.value}). {self.message}"


def resolve(
    queue: OperatorQueue,
    caller: Caller,
    item_id: int,
    *,
    take: Take | None,
    value: Any,
    by: str | None,
    note: str | None,
) -> Resolution:
    """Resolve ``item_id`` for ``queue``, calling connectors through ``caller``; see
    :meth:`OperatorQueue.resolve` (``value`` is :data:`UNSET` when not given)."""
    item = active_item(queue.storage, item_id)
    by = (by or "").strip() or None
    if is_record_level(item):
        if take is not None or value is not UNSET:
            raise QueueError(
                f"item {item_id} is about a whole record or field ({item.category or 'no'}"
                " category): it is acknowledged without a value (no take, no value)"
            )
        return _acknowledge(queue, item, by, note)
    if (take is None) == (value is UNSET):
        raise QueueError("resolve a field item with exactly one of take='left'/'right' or value")
    if take is not None and take not in ("left", "right"):
        raise QueueError(f"take must be 'left' or 'right', got {take!r}")
    sync = queue.syncs.get(item.sync)
    if sync is None:
        raise ConfigurationError(
            f"resolving item {item_id} writes to the systems of sync {item.sync!r}, so it"
            " needs that sync definition (OperatorQueue(storage, [sync]), or --app on the"
            " command line); reading the queue needs only the database"
        )
    try:
        fm = sync.field(item.field)
    except KeyError:
        raise ConfigurationError(
            f"sync {item.sync!r} no longer maps the field {item.field!r}"
        ) from None
    if not item.left_key or not item.right_key:
        raise QueueError(f"item {item_id} names no linked pair of records")
    left_key, right_key = item.left_key, item.right_key
    drift = [
        d
        for d in queue.storage.list_items(
            sync=item.sync,
            statuses=DEFAULT_STATUSES,
            category=SCHEMA_DRIFT_CATEGORY,
            field=item.field,
        )
        if is_record_level(d)
    ]
    if drift:
        raise QueueError(
            f"the field {item.field!r} is quarantined by schema drift (item {drift[0].id}):"
            " no value is written to it until the mapping is fixed and that item resolved"
        )
    lease = f"queue-item:{item_id}"
    owner = f"{queue.owner}:{uuid.uuid4().hex[:8]}"
    if not queue.storage.acquire_lease(lease, owner, _LEASE_TTL, queue.clock.now()):
        raise LeaseHeldError(f"item {item_id} is being resolved by someone else right now")
    try:
        # Read again under the lease: a resolution that finished meanwhile wins, and a
        # cycle may have recorded newer values on the item.
        item = active_item(queue.storage, item_id)
        if take is None:
            chosen, action = value, f"set the value {shown(value, 80)}"
        else:
            side = Side(take)
            chosen = item.left_value if side is Side.LEFT else item.right_value
            action = f"took the {side} value {shown(chosen, 80)}"
        # Both records are claimed as a fast-loop worker or a cycle claims them, so no other
        # writer writes them between the re-read and this write.
        records = [
            record_name(item.sync, Side.LEFT, left_key),
            record_name(item.sync, Side.RIGHT, right_key),
        ]
        granted = queue.storage.claim_records(
            owner, records, now=queue.clock.now(), lease=_LEASE_TTL
        )
        try:
            if set(records) - granted:
                raise LeaseHeldError(
                    f"item {item_id}'s records are being written by a worker or a cycle right"
                    " now; try again in a moment",
                    name=lease,
                )
            return _Resolve(queue, caller, sync, fm, item, chosen).run(action, by, note)
        finally:
            queue.storage.release_records(owner, sorted(granted))
    finally:
        queue.storage.release_lease(lease, owner)


def _acknowledge(
    queue: OperatorQueue, item: Discrepancy, by: str | None, note: str | None
) -> Resolution:
    """Close a record-level item as resolved; nothing is written."""
    assert item.id is not None
    now = queue.clock.now()
    what = "acknowledged"
    if item.category == SCHEMA_DRIFT_CATEGORY:
        what = "acknowledged: the mapping is fixed, the quarantine is lifted"
    queue.storage.commit(
        Step(
            at=now,
            item_updates=[
                ItemUpdate(
                    id=item.id,
                    status=Status.RESOLVED,
                    resolved_at=now,
                    note=operator_note(what, by, note),
                    assignee=by,
                )
            ],
        )
    )
    return Resolution(
        item_id=item.id,
        outcome=ResolutionOutcome.ACKNOWLEDGED,
        status=Status.RESOLVED,
        message=f"{what}; nothing was written",
    )


class _Resolve:
    """One resolution of a field item. Not reused."""

    def __init__(
        self,
        queue: OperatorQueue,
        caller: Caller,
        sync: SyncDefinition,
        fm: FieldMap,
        item: Discrepancy,
        chosen: Any,
    ) -> None:
        assert item.id is not None
        assert item.left_key
        assert item.right_key
        self.q = queue
        self.caller = caller
        self.sync = sync
        self.fm = fm
        self.item = item
        self.id: int = item.id
        self.keys = {Side.LEFT: item.left_key, Side.RIGHT: item.right_key}
        self.chosen = chosen

    def run(self, action: str, by: str | None, note: str | None) -> Resolution:
        item = self.item
        recorded = {Side.LEFT: item.left_value, Side.RIGHT: item.right_value}
        current: dict[Side, Any] = {}
        changes: list[str] = []
        for side in Side:
            try:
                record = self._read(side)
            except Exception as exc:
                return self._failed(f"reading {side} failed: {type(exc).__name__}: {exc}", ())
            if record is None:
                changes.append(f"the {side} record {self.keys[side]} is gone")
                continue
            raw = record.fields.get(self._name(side))
            current[side] = raw
            if not self._holds(side, raw, recorded[side]) and not self._holds(
                side, raw, self.chosen
            ):
                changes.append(f"{side} is now {shown(raw, 80)} (was {shown(recorded[side], 80)})")
        if changes:
            return self._back_to_review("changed since opened: " + "; ".join(changes))

        writes: dict[Side, Any] = {}
        for side in Side:
            if self._holds(side, current[side], self.chosen):
                continue
            if not self.fm.direction.allows_write(side):
                raise QueueError(
                    f"the field {self.fm.left!r} flows {self.fm.direction.value} only: taking"
                    f" {shown(self.chosen, 80)} would write it to {side}, which it never flows"
                    " to; dismiss the item instead, or choose the value that side holds"
                )
            if side is Side.LEFT:
                writes[side] = self.chosen
            else:
                try:
                    writes[side] = self.fm.transform.to_right(self.chosen)
                except Exception as exc:
                    raise QueueError(
                        f"the value {shown(self.chosen, 80)} does not map to the right system:"
                        f" {type(exc).__name__}: {exc}"
                    ) from None

        now = self.q.clock.now()
        # Remembered before writing: the webhook a write causes may arrive before its answer.
        # The operator's decision is the edit the written value copies: its time is now.
        echoes = [
            entry
            for side, raw in writes.items()
            for entry in echo_entries(
                self.sync.name,
                side,
                self.keys[side],
                {self._name(side): raw},
                now=now,
                ttl=self.q.echo_ttl,
                source_times={self._name(side): now},
            )
        ]
        if echoes:
            self.q.storage.commit(Step(at=now, echoes=echoes))
        step = Step(at=now)
        written: list[Side] = []
        for side, raw in writes.items():
            error = self._write(side, raw)
            if error is not None:
                return self._failed(f"writing {side} failed: {error}", tuple(written), step)
            written.append(side)
        # The order guard learns the agreed state: a webhook of an older edit is stale.
        step.field_times.append((self.sync.name, self.keys[Side.LEFT], self.fm.left, now))
        step.bases.append(
            BaseUpdate(
                sync=self.sync.name,
                left_key=self.keys[Side.LEFT],
                values={self.fm.left: self.chosen},
            )
        )
        where = (
            " and ".join(str(s) for s in written) if written else "neither system (both held it)"
        )
        step.item_updates.append(
            ItemUpdate(
                id=self.id,
                status=Status.RESOLVED,
                resolution=self.chosen,
                resolved_at=now,
                note=operator_note(f"{action}, written to {where}", by, note),
                assignee=by,
            )
        )
        self.q.storage.commit(step)
        return Resolution(
            item_id=self.id,
            outcome=ResolutionOutcome.RESOLVED,
            status=Status.RESOLVED,
            value=self.chosen,
            written=tuple(written),
            message=f"{action}; written to {where}; the base is updated",
        )

    def _name(self, side: Side) -> str:
        return self.fm.left if side is Side.LEFT else self.fm.right

    def _read(self, side: Side) -> Record | None:
        key = self.keys[side]
        found = read_batch(self.caller, self.sync.connector(side), [key])
        return next((r for r in found if r.key == key and not r.deleted), None)

    def _holds(self, side: Side, raw: Any, value: Any) -> bool:
        """Whether ``raw`` (a value as ``side`` stores it) is ``value`` (left vocabulary)."""
        return holds(self.fm, side, raw, value)

    def _write(self, side: Side, raw: Any) -> str | None:
        change = Change(
            op=ChangeOp.UPDATE,
            key=self.keys[side],
            fields={self._name(side): raw},
            ref=f"queue-{self.id}-{side}",
        )
        try:
            (result,) = write_batch(self.caller, self.sync.connector(side), [change])
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        if not result.ok:
            kind = "retryable" if result.retryable else "rejected"
            return f"{kind}: {result.error or 'no reason given'}"
        return None

    def _back_to_review(self, why: str) -> Resolution:
        now = self.q.clock.now()
        self.q.storage.commit(
            Step(
                at=now,
                item_updates=[
                    ItemUpdate(
                        id=self.id,
                        status=Status.ESCALATED,
                        resolution=None,
                        resolved_at=None,
                        note=f"{why}; nothing was written, review the item again",
                    )
                ],
            )
        )
        return Resolution(
            item_id=self.id,
            outcome=ResolutionOutcome.CHANGED,
            status=Status.ESCALATED,
            value=self.chosen,
            message=f"{why}; nothing was written and the item is back in review",
        )

    def _failed(self, why: str, written: tuple[Side, ...], step: Step | None = None) -> Resolution:
        step = step or Step(at=self.q.clock.now())
        if written:
            why += f" (already written to {' and '.join(str(s) for s in written)})"
        step.item_updates.append(
            ItemUpdate(
                id=self.id,
                status=self.item.status,
                resolution=self.item.resolution,
                resolved_at=None,
                note=f"resolving failed, {why}; the base did not move, try again",
            )
        )
        self.q.storage.commit(step)
        return Resolution(
            item_id=self.id,
            outcome=ResolutionOutcome.FAILED,
            status=self.item.status,
            value=self.chosen,
            written=written,
            message=f"{why}; the item stays {self.item.status.value} and the base did not move",
        )
