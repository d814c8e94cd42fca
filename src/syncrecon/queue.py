"""The operator queue: list, show, resolve, dismiss and assign escalated discrepancies.

Reading the queue needs only the database. Resolving a field writes the chosen value through
the connectors, so it needs the sync definitions too (passed in, or named by import path on
the command line, as the worker is)::

    from syncrecon.queue import OperatorQueue

    queue = OperatorQueue(storage, [deals_sync])
    for item in queue.list(category="deal_value"):
        print(queue.show(item.id))
    queue.resolve(item_id, take="left", by="ada")

Resolving has the reconciler's safety: both records are read again first; when a side no
longer holds the value the item recorded (and not the chosen value either), nothing is
written and the item goes back to review. Otherwise the chosen value (in the left
vocabulary) is written to the sides that do not hold it yet, and one storage transaction then
moves the base, closes the item with its resolution and time, and remembers the writes in the
echo ledger so the fast loop knows their webhooks. A failed write leaves the item active, the
error in its note and the base where it was.

Errors::

    SyncReconError
    └── QueueError (ValueError)             the operation cannot be done as asked
        └── ItemClosedError                 the item is resolved or dismissed already
    ItemNotFoundError (SyncReconError, LookupError)
                                            no queue item has that id

``python -m syncrecon queue --db PATH list|show|resolve|dismiss|assign`` is the command line
(:func:`register_cli` and :func:`run_cli`).
"""

from __future__ import annotations

import argparse
import builtins
import enum
import json
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal

import anyio.to_thread
import attrs

from . import _codec
from ._app import APP_PATH_FORM, import_app
from ._clock import Clock, SystemClock, utc
from ._codec import fingerprint
from ._connector import Caller, RetrySettings, read_batch, write_batch
from ._drift import SCHEMA_DRIFT_CATEGORY
from ._exceptions import AppLoadError, ConfigurationError, LeaseHeldError, SyncReconError
from ._models import Change, ChangeOp, Record, Side
from ._policy import values_equal
from ._sync import FieldMap, SyncDefinition
from .storage._base import (
    RECORD_FIELD,
    BaseUpdate,
    Discrepancy,
    Echo,
    ItemUpdate,
    Status,
    Step,
    Storage,
)

__all__ = [
    "DEFAULT_STATUSES",
    "ItemClosedError",
    "ItemNotFoundError",
    "ItemView",
    "OperatorQueue",
    "QueueError",
    "Resolution",
    "ResolutionOutcome",
    "display_value",
    "is_record_level",
    "item_data",
    "load_syncs",
    "register_cli",
    "run_cli",
]

DEFAULT_STATUSES: Final = (Status.ESCALATED, Status.OPEN)
"""What :meth:`OperatorQueue.list` shows unless told otherwise: the active items."""

_UNSET: Final[Any] = object()
_LEASE_TTL: Final = timedelta(minutes=10)

Take = Literal["left", "right"]
StatusFilter = Status | str | Iterable[Status | str] | None


class QueueError(SyncReconError, ValueError):
    """A queue operation cannot be done as asked (the item or the arguments do not allow it)."""


class ItemClosedError(QueueError):
    """The item is closed already (resolved, auto-resolved or dismissed)."""


class ItemNotFoundError(SyncReconError, LookupError):
    """No queue item has that id."""


def is_record_level(item: Discrepancy) -> bool:
    """Whether ``item`` is about a whole record (or a whole field) rather than one value.

    Record-level items have the field ``"*"`` (a possible duplicate, a deletion, a mass
    deletion, a record without a natural key, a value that does not map) or no record keys
    (a ``schema_drift`` item names a field of the sync, not a record). They are resolved by
    acknowledging them: nothing is written.
    """
    return item.field == RECORD_FIELD or not (item.left_key or item.right_key)


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
            "value": _plain(self.value),
            "written": [s.value for s in self.written],
            "message": self.message,
        }

    def __str__(self) -> str:
        return f"item {self.item_id}: {self.outcome.value} ({self.status.value}). {self.message}"


@attrs.frozen(kw_only=True)
class ItemView:
    """One queue item as an operator sees it: both values, the base, why, and the history.

    ``history`` holds the other queue items of the same record (for a record-less item, of the
    same field), newest first. ``current_base`` is the base stored on the link now (it may have
    moved since the item was opened), or ``None`` with ``linked=False`` when the record is not
    linked (any more).
    """

    item: Discrepancy
    left_value: Any
    right_value: Any
    base_value: Any
    has_base: bool
    explanation: str
    history: tuple[Discrepancy, ...] = ()
    linked: bool = False
    current_base: Any = None

    @property
    def id(self) -> int:
        """The item's id."""
        assert self.item.id is not None
        return self.item.id

    @property
    def record_level(self) -> bool:
        """See :func:`is_record_level`."""
        return is_record_level(self.item)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary: the item's data, the current base and the history."""
        out = item_data(self.item)
        out["linked"] = self.linked
        out["current_base"] = _plain(self.current_base)
        out["history"] = [item_data(h) for h in self.history]
        return out

    def __str__(self) -> str:
        item = self.item
        lines = [
            f"item {item.id}: {item.status.value}"
            + (f" ({item.category})" if item.category else "")
            + f" in sync {item.sync!r}",
            f"  record: left {item.left_key or '-'} / right {item.right_key or '-'}",
            f"  field:  {item.field}" + (" (the whole record)" if item.field == "*" else ""),
        ]
        if not self.record_level:
            lines += [
                f"  left:   {_show(self.left_value)}",
                f"  right:  {_show(self.right_value)}",
                f"  base:   {_show(self.base_value) if self.has_base else '(never synced)'}",
            ]
        lines.append(
            f"  rule:   {item.rule or '-'}; detected {item.detected_at.isoformat()},"
            f" seen {item.times_seen} time{'s' if item.times_seen != 1 else ''}"
        )
        if item.assignee:
            lines.append(f"  assigned to: {item.assignee}")
        if item.resolved_at is not None:
            took = item.resolved_at - item.detected_at
            lines.append(f"  closed {item.resolved_at.isoformat()} (after {took})")
            if item.status is Status.RESOLVED and not self.record_level:
                lines.append(f"  resolution: {_show(item.resolution)}")
        if item.note:
            lines.append(f"  note: {item.note}")
        if self.explanation:
            lines.append("  why:")
            lines += [f"    {line}" for line in self.explanation.splitlines()]
        if self.history:
            lines.append("  history of this record:")
            for h in self.history:
                lines.append(
                    f"    #{h.id} {h.detected_at.isoformat()} {h.field} {h.status.value}"
                    + (f" ({h.category})" if h.category else "")
                    + (f" -> {_show(h.resolution)}" if h.status is Status.RESOLVED else "")
                )
        return "\n".join(lines)


def _plain(value: Any) -> Any:
    """A JSON-ready copy of a value: dates and decimals in syncrecon's tagged form."""
    return json.loads(_codec.dumps(value))


def display_value(value: Any) -> str:
    """A value as a person reads it: ``2026-08-22``, ``2026-08-22 14:30:00 UTC``, ``1250.50``,
    ``vip, eu``, ``(blank)``; text in quotes, so ``"42"`` and ``42`` stay apart.

    For reading only: ``--value`` and ``queue list --json`` keep syncrecon's tagged JSON form
    (``{"$date": "2026-08-22"}``), which round-trips exactly.
    """
    if value is None:
        return "(blank)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        moment = utc(value)
        text = moment.strftime("%Y-%m-%d %H:%M:%S")
        if moment.microsecond:
            text += f".{moment.microsecond:06d}".rstrip("0")
        return text + " UTC"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return ", ".join(display_value(v) for v in value) if value else "(none)"
    try:
        return _codec.dumps(value)
    except TypeError:
        return repr(value)


def _show(value: Any, width: int | None = None) -> str:
    text = display_value(value)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def item_data(item: Discrepancy) -> dict[str, Any]:
    """A queue item as JSON-ready data (the form ``queue list --json`` prints).

    Values are plain JSON; a ``date``, ``datetime`` or ``Decimal`` is a tagged object
    (``{"$date": "2026-01-31"}``), the form ``--value`` accepts back.
    """
    return {
        "id": item.id,
        "sync": item.sync,
        "left_key": item.left_key,
        "right_key": item.right_key,
        "field": item.field,
        "status": item.status.value,
        "category": item.category,
        "rule": item.rule,
        "left_value": _plain(item.left_value),
        "right_value": _plain(item.right_value),
        "base_value": _plain(item.base_value),
        "has_base": item.has_base,
        "resolution": _plain(item.resolution),
        "explanation": item.explanation,
        "note": item.note,
        "assignee": item.assignee,
        "times_seen": item.times_seen,
        "detected_at": item.detected_at.isoformat(),
        "updated_at": None if item.updated_at is None else item.updated_at.isoformat(),
        "resolved_at": None if item.resolved_at is None else item.resolved_at.isoformat(),
    }


def _statuses(status: StatusFilter) -> tuple[Status, ...] | None:
    if status is None:
        return None
    raw: Iterable[Status | str] = (status,) if isinstance(status, str) else status
    try:
        return tuple(Status(s) for s in raw)
    except ValueError:
        valid = ", ".join(s.value for s in Status)
        raise QueueError(f"unknown status in {status!r}; use one of {valid}") from None


def _operator_note(action: str, by: str | None, note: str | None) -> str:
    text = f"{by}: {action}" if by else action
    return f"{text} ({note})" if note else text


class OperatorQueue:
    """The operator queue over ``storage``: list, show, resolve, dismiss, assign.

    :param storage: where the queue lives (set up by the constructor).
    :param syncs: the sync definitions whose items may be resolved; resolving a field writes
        through their connectors. Listing, showing, dismissing, assigning and acknowledging a
        record-level item need none.
    :param clock: tells the time of resolutions (and the age in ``older_than``).
    :param retry: how connector calls are retried.
    :param echo_ttl: how long a value written here is remembered in the echo ledger, so the
        webhook it causes is recognized by the fast loop.
    :raises ConfigurationError: for two different sync definitions with the same name.
    """

    def __init__(
        self,
        storage: Storage,
        syncs: Iterable[SyncDefinition] = (),
        *,
        clock: Clock | None = None,
        retry: RetrySettings | None = None,
        echo_ttl: timedelta = timedelta(minutes=15),
    ) -> None:
        self.storage = storage
        self.syncs: dict[str, SyncDefinition] = {}
        for sync in syncs:
            known = self.syncs.get(sync.name)
            if known is not None and known is not sync:
                raise ConfigurationError(f"two sync definitions are named {sync.name!r}")
            self.syncs[sync.name] = sync
        self.clock: Clock = clock or SystemClock()
        self.retry = retry or RetrySettings()
        self.echo_ttl = echo_ttl
        self.owner = f"queue-{uuid.uuid4().hex[:12]}"
        self.storage.setup()

    def __repr__(self) -> str:
        return f"OperatorQueue(storage={self.storage!r}, syncs={sorted(self.syncs)})"

    # -- reading -------------------------------------------------------------------------------

    def list(
        self,
        *,
        sync: str | None = None,
        status: StatusFilter = DEFAULT_STATUSES,
        category: str | None = None,
        field: str | None = None,
        key: str | None = None,
        older_than: timedelta | None = None,
        assignee: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Discrepancy]:
        """Queue items, newest first, filtered.

        :param status: one status, several, or ``None`` for every status; by default the
            active ones (escalated and open).
        :param key: a record key on either side.
        :param older_than: only items detected at least this long ago.
        :param assignee: only items assigned to this person; ``""`` for unassigned items.
        :raises QueueError: for an unknown status or a ``limit`` below 1.
        """
        if limit < 1:
            raise QueueError(f"limit must be at least 1, got {limit}")
        statuses = _statuses(status)
        try:
            cutoff = None if older_than is None else self.clock.now() - older_than
        except OverflowError:  # older than the calendar goes: nothing is that old
            return []
        query: dict[str, Any] = {
            "sync": sync,
            "statuses": statuses,
            "category": category,
            "field": field,
            "key": key,
        }
        if cutoff is None and assignee is None:
            return self.storage.list_items(**query, limit=limit)

        def wanted(item: Discrepancy) -> bool:
            if cutoff is not None and item.detected_at > cutoff:
                return False
            return assignee is None or (item.assignee or "") == assignee

        page = max(limit, 200)
        out: builtins.list[Discrepancy] = []
        offset = 0
        while len(out) < limit:
            batch = self.storage.list_items(**query, limit=page, offset=offset)
            out += [item for item in batch if wanted(item)]
            if len(batch) < page:
                break
            offset += page
        return out[:limit]

    def _get(self, item_id: int) -> Discrepancy:
        try:
            return self.storage.get_item(item_id)
        except KeyError:
            raise ItemNotFoundError(f"no queue item has the id {item_id}") from None

    def show(self, item_id: int, *, history: int = 10) -> ItemView:
        """One item with its values, base, explanation and the record's recent history.

        :param history: how many other items of the same record to include at most.
        :raises ItemNotFoundError: when there is no such item.
        """
        item = self._get(item_id)
        found: dict[int, Discrepancy] = {}
        if item.left_key or item.right_key:
            for key, column in ((item.left_key, "left_key"), (item.right_key, "right_key")):
                if not key:
                    continue
                for other in self.storage.list_items(
                    sync=item.sync, key=key, limit=history + 1 + 50
                ):
                    if getattr(other, column) == key and other.id is not None:
                        found[other.id] = other
        else:
            for other in self.storage.list_items(
                sync=item.sync, field=item.field, limit=history + 1 + 50
            ):
                if not (other.left_key or other.right_key) and other.id is not None:
                    found[other.id] = other
        found.pop(item_id, None)
        ordered = sorted(found.values(), key=lambda d: (d.detected_at, d.id or 0), reverse=True)
        linked = False
        current_base = None
        if item.left_key:
            link = self.storage.get_links(item.sync, Side.LEFT, [item.left_key]).get(item.left_key)
            if link is not None:
                linked = True
                current_base = (
                    dict(link.base) if item.field == RECORD_FIELD else link.base.get(item.field)
                )
        return ItemView(
            item=item,
            left_value=item.left_value,
            right_value=item.right_value,
            base_value=item.base_value,
            has_base=item.has_base,
            explanation=item.explanation,
            history=tuple(ordered[:history]),
            linked=linked,
            current_base=current_base,
        )

    # -- deciding ------------------------------------------------------------------------------

    def resolve(
        self,
        item_id: int,
        *,
        take: Take | None = None,
        value: Any = _UNSET,
        by: str | None = None,
        note: str | None = None,
    ) -> Resolution:
        """Resolve an item: take the left value, the right value, or a given value.

        For a field item, give exactly one of ``take`` (``"left"`` or ``"right"``: the value
        the item recorded for that side) and ``value`` (in the left vocabulary). Both records
        are read again; when a side holds neither the value the item recorded nor the chosen
        value, nothing is written and the item goes back to review (outcome ``changed``).
        Otherwise the chosen value is written to each side that does not hold it, and the
        base, the item (resolved, with ``resolution`` and ``resolved_at``) and the echo ledger
        are updated in one transaction. A failed read or write leaves the item active with
        the error in its note (outcome ``failed``); the base moves only when every needed
        write succeeded.

        A record-level item (see :func:`is_record_level`) is acknowledged: resolved without
        a value, nothing written. Resolving a ``schema_drift`` item is how an operator lifts
        the field's quarantine once the mapping is fixed.

        ``by`` (who decided) is recorded as the item's assignee and at the start of its note;
        ``note`` is appended to the note.

        :raises ItemNotFoundError: when there is no such item.
        :raises ItemClosedError: when the item is closed already.
        :raises QueueError: for a wrong choice (none or both of ``take``/``value``, a value
            for a record-level item), when the field is quarantined by an active
            ``schema_drift`` item, or when the chosen value would have to be written to a
            side the field does not flow to, or does not map to the right vocabulary.
        :raises ConfigurationError: when the item's sync (or field) is not among ``syncs``.
        :raises LeaseHeldError: when someone else is resolving the same item right now.
        """
        with Caller(self.retry) as caller:
            return self._resolve(caller, item_id, take=take, value=value, by=by, note=note)

    def dismiss(self, item_id: int, reason: str, *, by: str | None = None) -> Discrepancy:
        """Close an item without a change (status ``dismissed``), with the reason.

        Nothing is written and no base moves: if the two systems still differ, a later cycle
        finds the difference again and decides it afresh.

        :raises ItemNotFoundError: when there is no such item.
        :raises ItemClosedError: when the item is closed already.
        :raises QueueError: when ``reason`` is blank.
        """
        if not reason or not reason.strip():
            raise QueueError("dismissing an item needs a reason")
        self._active(item_id)
        now = self.clock.now()
        self.storage.commit(
            Step(
                at=now,
                item_updates=[
                    ItemUpdate(
                        id=item_id,
                        status=Status.DISMISSED,
                        resolved_at=now,
                        note=_operator_note(f"dismissed: {reason.strip()}", by, None),
                        assignee=by or None,
                    )
                ],
            )
        )
        return self._get(item_id)

    def assign(self, item_id: int, who: str | None) -> Discrepancy:
        """Assign an active item to ``who`` (``None`` or ``""`` unassigns); the status stays.

        :raises ItemNotFoundError: when there is no such item.
        :raises ItemClosedError: when the item is closed already.
        """
        item = self._active(item_id)
        self.storage.commit(
            Step(
                at=self.clock.now(),
                item_updates=[
                    ItemUpdate(
                        id=item_id,
                        status=item.status,
                        resolution=item.resolution,
                        resolved_at=item.resolved_at,
                        assignee=(who or "").strip(),
                    )
                ],
            )
        )
        return self._get(item_id)

    # -- the async front door ------------------------------------------------------------------

    async def alist(
        self,
        *,
        sync: str | None = None,
        status: StatusFilter = DEFAULT_STATUSES,
        category: str | None = None,
        field: str | None = None,
        key: str | None = None,
        older_than: timedelta | None = None,
        assignee: str | None = None,
        limit: int = 100,
    ) -> builtins.list[Discrepancy]:
        """:meth:`list` for async hosts (storage is read in a worker thread)."""

        def work() -> builtins.list[Discrepancy]:
            return self.list(
                sync=sync,
                status=status,
                category=category,
                field=field,
                key=key,
                older_than=older_than,
                assignee=assignee,
                limit=limit,
            )

        return await anyio.to_thread.run_sync(work)

    async def ashow(self, item_id: int, *, history: int = 10) -> ItemView:
        """:meth:`show` for async hosts."""
        return await anyio.to_thread.run_sync(lambda: self.show(item_id, history=history))

    async def aresolve(
        self,
        item_id: int,
        *,
        take: Take | None = None,
        value: Any = _UNSET,
        by: str | None = None,
        note: str | None = None,
    ) -> Resolution:
        """:meth:`resolve` for async hosts: it runs in a worker thread.

        Plain ``def`` connector methods run in that thread; ``async def`` ones run on the
        calling event loop.
        """

        def work() -> Resolution:
            with Caller(self.retry, in_worker_thread=True) as caller:
                return self._resolve(caller, item_id, take=take, value=value, by=by, note=note)

        return await anyio.to_thread.run_sync(work)

    async def adismiss(self, item_id: int, reason: str, *, by: str | None = None) -> Discrepancy:
        """:meth:`dismiss` for async hosts."""
        return await anyio.to_thread.run_sync(lambda: self.dismiss(item_id, reason, by=by))

    async def aassign(self, item_id: int, who: str | None) -> Discrepancy:
        """:meth:`assign` for async hosts."""
        return await anyio.to_thread.run_sync(lambda: self.assign(item_id, who))

    # -- the engine ----------------------------------------------------------------------------

    def _active(self, item_id: int) -> Discrepancy:
        item = self._get(item_id)
        if not item.status.is_active:
            raise ItemClosedError(
                f"item {item_id} is {item.status.value} already"
                + (f" (at {item.resolved_at.isoformat()})" if item.resolved_at else "")
            )
        return item

    def _resolve(
        self,
        caller: Caller,
        item_id: int,
        *,
        take: Take | None,
        value: Any,
        by: str | None,
        note: str | None,
    ) -> Resolution:
        item = self._active(item_id)
        by = (by or "").strip() or None
        if is_record_level(item):
            if take is not None or value is not _UNSET:
                raise QueueError(
                    f"item {item_id} is about a whole record or field ({item.category or 'no'}"
                    " category): it is acknowledged without a value (no take, no value)"
                )
            return self._acknowledge(item, by, note)
        if (take is None) == (value is _UNSET):
            raise QueueError(
                "resolve a field item with exactly one of take='left'/'right' or value"
            )
        if take is not None and take not in ("left", "right"):
            raise QueueError(f"take must be 'left' or 'right', got {take!r}")
        sync = self.syncs.get(item.sync)
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
        drift = [
            d
            for d in self.storage.list_items(
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
        owner = f"{self.owner}:{uuid.uuid4().hex[:8]}"
        if not self.storage.acquire_lease(lease, owner, _LEASE_TTL, self.clock.now()):
            raise LeaseHeldError(f"item {item_id} is being resolved by someone else right now")
        try:
            # Read again under the lease: a resolution that finished meanwhile wins, and a
            # cycle may have recorded newer values on the item.
            item = self._active(item_id)
            if take is None:
                chosen, action = value, f"set the value {_show(value, 80)}"
            else:
                side = Side(take)
                chosen = item.left_value if side is Side.LEFT else item.right_value
                action = f"took the {side} value {_show(chosen, 80)}"
            return _Resolve(self, caller, sync, fm, item, chosen).run(action, by, note)
        finally:
            self.storage.release_lease(lease, owner)

    def _acknowledge(self, item: Discrepancy, by: str | None, note: str | None) -> Resolution:
        assert item.id is not None
        now = self.clock.now()
        what = "acknowledged"
        if item.category == SCHEMA_DRIFT_CATEGORY:
            what = "acknowledged: the mapping is fixed, the quarantine is lifted"
        self.storage.commit(
            Step(
                at=now,
                item_updates=[
                    ItemUpdate(
                        id=item.id,
                        status=Status.RESOLVED,
                        resolved_at=now,
                        note=_operator_note(what, by, note),
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

    def _name(self, side: Side) -> str:
        return self.fm.left if side is Side.LEFT else self.fm.right

    def _read(self, side: Side) -> Record | None:
        key = self.keys[side]
        found = read_batch(self.caller, self.sync.connector(side), [key])
        return next((r for r in found if r.key == key and not r.deleted), None)

    def _holds(self, side: Side, raw: Any, value: Any) -> bool:
        """Whether ``raw`` (a value as ``side`` stores it) is ``value`` (left vocabulary)."""
        if side is Side.LEFT:
            return values_equal(raw, value)
        try:
            if values_equal(self.fm.transform.to_left(raw), value):
                return True
        except Exception:
            pass
        try:
            return values_equal(raw, self.fm.transform.to_right(value))
        except Exception:
            return False

    def run(self, action: str, by: str | None, note: str | None) -> Resolution:
        item = self.item
        recorded = {Side.LEFT: item.left_value, Side.RIGHT: item.right_value}
        current: dict[Side, Any] = {}
        changes: builtins.list[str] = []
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
                changes.append(f"{side} is now {_show(raw, 80)} (was {_show(recorded[side], 80)})")
        if changes:
            return self._back_to_review("changed since opened: " + "; ".join(changes))

        writes: dict[Side, Any] = {}
        for side in Side:
            if self._holds(side, current[side], self.chosen):
                continue
            if not self.fm.direction.allows_write(side):
                raise QueueError(
                    f"the field {self.fm.left!r} flows {self.fm.direction.value} only: taking"
                    f" {_show(self.chosen, 80)} would write it to {side}, which it never flows"
                    " to; dismiss the item instead, or choose the value that side holds"
                )
            if side is Side.LEFT:
                writes[side] = self.chosen
            else:
                try:
                    writes[side] = self.fm.transform.to_right(self.chosen)
                except Exception as exc:
                    raise QueueError(
                        f"the value {_show(self.chosen, 80)} does not map to the right system:"
                        f" {type(exc).__name__}: {exc}"
                    ) from None

        now = self.q.clock.now()
        step = Step(at=now)
        written: builtins.list[Side] = []
        for side, raw in writes.items():
            error = self._write(side, raw)
            if error is not None:
                self._remember(step, written, writes)
                return self._failed(f"writing {side} failed: {error}", tuple(written), step)
            written.append(side)
        self._remember(step, written, writes)
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
                note=_operator_note(f"{action}, written to {where}", by, note),
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

    def _remember(self, step: Step, written: Sequence[Side], writes: Mapping[Side, Any]) -> None:
        """Echo-ledger entries for the writes that landed (their webhooks are ours)."""
        if self.q.echo_ttl <= timedelta(0):
            return
        expires = self.q.clock.now() + self.q.echo_ttl
        step.echoes.extend(
            Echo(
                sync=self.sync.name,
                side=side,
                key=self.keys[side],
                field=self._name(side),
                fingerprint=fingerprint(writes[side]),
                expires_at=expires,
            )
            for side in written
        )

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


# --------------------------------------------------------------------------------------------
# Loading sync definitions by import path, and the command line


def load_syncs(path: str) -> builtins.list[SyncDefinition]:
    """The sync definitions behind ``"package.module:attribute"`` (as the worker loads).

    The attribute may be a :class:`~syncrecon.SyncDefinition`, a
    :class:`~syncrecon.Reconciler` (its sync), a :class:`~syncrecon.webhooks.WebhookHandler`
    (its sources' syncs), a :class:`~syncrecon.worker.Worker` (both), an iterable of sync
    definitions, or a callable without arguments that returns one of those.

    The current directory is importable (as for the worker).

    :raises AppLoadError: when the path cannot be imported or names something else.
    """
    from ._reconciler import Reconciler
    from .webhooks._handler import WebhookHandler
    from .worker import Worker

    known = (SyncDefinition, Reconciler, WebhookHandler, Worker)
    target = import_app(path, keep=known)

    def from_handler(handler: WebhookHandler) -> builtins.list[SyncDefinition]:
        return [src.sync for src in handler.sources.values()]

    found: builtins.list[SyncDefinition]
    if isinstance(target, SyncDefinition):
        found = [target]
    elif isinstance(target, Reconciler):
        found = [target.sync]
    elif isinstance(target, WebhookHandler):
        found = from_handler(target)
    elif isinstance(target, Worker):
        found = from_handler(target.handler) if target.handler is not None else []
        if target.scheduler is not None:
            found.append(target.scheduler.reconciler.sync)
    elif isinstance(target, Iterable) and not isinstance(target, str | bytes | Mapping):
        found = builtins.list(target)
        if not all(isinstance(s, SyncDefinition) for s in found):
            raise AppLoadError(f"{path!r} holds something other than sync definitions")
    else:
        raise AppLoadError(
            f"{path!r} is not a SyncDefinition, Reconciler, WebhookHandler, Worker or an"
            f" iterable of sync definitions (nor a factory of one): {type(target).__name__}"
        )
    unique: dict[int, SyncDefinition] = {id(s): s for s in found}
    return builtins.list(unique.values())


def register_cli(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``queue`` command to a command line's subparsers; :func:`run_cli` runs it."""
    parser = subparsers.add_parser(
        "queue",
        help="work the operator queue: list, show, resolve, dismiss, assign",
        description="Work the operator queue of a syncrecon SQLite database.",
    )
    parser.add_argument("--db", required=True, help="the SQLite database")
    actions = parser.add_subparsers(dest="queue_action", required=True, metavar="ACTION")

    ls = actions.add_parser("list", help="list queue items (active ones by default)")
    ls.add_argument("--sync", help="only items of this sync")
    ls.add_argument(
        "--status",
        action="append",
        help="escalated, open, resolved, auto_resolved, dismissed or all (repeatable)",
    )
    ls.add_argument("--category", help="only this escalation category")
    ls.add_argument("--field", help="only this field (its left name; * for record-level)")
    ls.add_argument("--key", help="only items of the record with this key (either side)")
    ls.add_argument("--older-than-hours", type=float, help="only items at least this old")
    ls.add_argument("--assignee", help="only items assigned to this person ('' = unassigned)")
    ls.add_argument(
        "--limit", type=int, default=100, help="at most this many items (a notice says if more)"
    )
    ls.add_argument("--json", action="store_true", help="print a JSON array")

    show = actions.add_parser("show", help="show one item: values, base, why, history")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="print one JSON object")

    res = actions.add_parser("resolve", help="resolve an item (writes through the connectors)")
    res.add_argument("id", type=int)
    choice = res.add_mutually_exclusive_group()
    choice.add_argument("--take", choices=["left", "right"], help="take that side's value")
    choice.add_argument(
        "--value", help='a JSON value in the left vocabulary ({"$date": "2026-01-31"} for dates)'
    )
    res.add_argument(
        "--app",
        metavar=APP_PATH_FORM,
        help="import path of the host's sync definition(s), like the worker's"
        f" ({APP_PATH_FORM}; the current directory is importable)",
    )
    res.add_argument("--by", help="who decides (recorded on the item)")
    res.add_argument("--note", help="a note to keep with the resolution")
    res.add_argument("--json", action="store_true", help="print one JSON object")

    dis = actions.add_parser("dismiss", help="close an item without a change")
    dis.add_argument("id", type=int)
    dis.add_argument("--reason", required=True)
    dis.add_argument("--by", help="who decides (recorded on the item)")

    assign = actions.add_parser("assign", help="assign an item to someone")
    assign.add_argument("id", type=int)
    assign.add_argument("--to", required=True, help="a name; '' unassigns")
    return parser


def _table(items: Sequence[Discrepancy], now: datetime) -> str:
    if not items:
        return "no items"
    rows = [("ID", "STATUS", "CATEGORY", "SYNC", "RECORD", "FIELD", "AGE", "ASSIGNEE", "VALUES")]
    for i in items:
        age = now - i.detected_at
        hours = age.total_seconds() / 3600
        rows.append(
            (
                str(i.id),
                i.status.value,
                i.category or "-",
                i.sync,
                f"{i.left_key or '-'}/{i.right_key or '-'}",
                i.field,
                f"{hours / 24:.1f}d" if hours >= 48 else f"{hours:.1f}h",
                i.assignee or "-",
                "-"
                if is_record_level(i)
                else f"{_show(i.left_value, 24)} | {_show(i.right_value, 24)}",
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def run_cli(args: argparse.Namespace) -> int:
    """Run the ``queue`` command parsed by a parser made with :func:`register_cli`.

    Returns the exit status: 0 when the action was done, 1 when it was not (an error, or a
    resolution that left the item open: changed since opened, or a failed write), 2 when
    ``--app`` names no usable object (one line on stderr says why).
    """
    from .storage.sqlite import SQLiteStorage

    db = Path(args.db)
    if not db.is_file():
        print(f"error: no database at {args.db}", file=sys.stderr)
        return 1
    storage = SQLiteStorage(db)
    try:
        syncs: builtins.list[SyncDefinition] = []
        if getattr(args, "app", None):
            try:
                syncs = load_syncs(args.app)
            except AppLoadError as exc:
                print(f"syncrecon queue: {exc}", file=sys.stderr)
                return 2
        queue = OperatorQueue(storage, syncs)
        return _run_action(queue, args)
    except SyncReconError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        storage.close()


def _run_action(queue: OperatorQueue, args: argparse.Namespace) -> int:
    action = args.queue_action
    if action == "list":
        statuses: StatusFilter = DEFAULT_STATUSES
        if args.status:
            statuses = None if "all" in args.status else tuple(args.status)
        older = None
        if args.older_than_hours is not None:
            older = timedelta(hours=args.older_than_hours)
        items = queue.list(
            sync=args.sync,
            status=statuses,
            category=args.category,
            field=args.field,
            key=args.key,
            older_than=older,
            assignee=args.assignee,
            limit=args.limit + 1,  # one more, to know whether more match
        )
        more = len(items) > args.limit
        items = items[: args.limit]
        if args.json:
            _print_json([item_data(i) for i in items])
        else:
            print(_table(items, queue.clock.now()))
        if more:
            print(
                f"showing the first {args.limit} matching items; more match"
                " (narrow the filters, or raise --limit)",
                file=sys.stderr,
            )
        return 0
    if action == "show":
        view = queue.show(args.id)
        if args.json:
            _print_json(view.to_dict())
        else:
            print(view)
        return 0
    if action == "resolve":
        kwargs: dict[str, Any] = {}
        if args.take is not None:
            kwargs["take"] = args.take
        if args.value is not None:
            try:
                kwargs["value"] = _codec.loads(args.value)
            except ValueError as exc:
                raise QueueError(f"--value is not JSON: {exc}") from None
        result = queue.resolve(args.id, by=args.by, note=args.note, **kwargs)
        if args.json:
            _print_json(result.to_dict())
        else:
            print(result)
        return 0 if result.closed else 1
    if action == "dismiss":
        item = queue.dismiss(args.id, args.reason, by=args.by)
        print(f"item {item.id}: dismissed")
        return 0
    if action == "assign":
        item = queue.assign(args.id, args.to)
        print(
            f"item {item.id}: "
            + (f"assigned to {item.assignee}" if item.assignee else "unassigned")
        )
        return 0
    raise AssertionError(f"unknown action {action!r}")  # pragma: no cover
