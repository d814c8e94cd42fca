""":class:`OperatorQueue`: the front door of the queue (list, show, resolve, dismiss, assign,
and their async twins)."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import anyio.to_thread

from .._clock import Clock, SystemClock
from .._connector import Caller, RetrySettings
from .._exceptions import ConfigurationError, QueueError
from .._models import Side
from .._sync import SyncDefinition
from ..storage._base import RECORD_FIELD, Discrepancy, ItemUpdate, Status, Step, Storage
from ._items import DEFAULT_STATUSES, StatusFilter, active_item, get_item, operator_note
from ._resolve import UNSET, Resolution, Take, resolve
from ._views import ItemView


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

    def show(self, item_id: int, *, history: int = 10) -> ItemView:
        """One item with its values, base, explanation and the record's recent history.

        :param history: how many other items of the same record to include at most.
        :raises ItemNotFoundError: when there is no such item.
        """
        item = get_item(self.storage, item_id)
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
        value: Any = UNSET,
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
            return resolve(self, caller, item_id, take=take, value=value, by=by, note=note)

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
        active_item(self.storage, item_id)
        now = self.clock.now()
        self.storage.commit(
            Step(
                at=now,
                item_updates=[
                    ItemUpdate(
                        id=item_id,
                        status=Status.DISMISSED,
                        resolved_at=now,
                        note=operator_note(f"dismissed: {reason.strip()}", by, None),
                        assignee=by or None,
                    )
                ],
            )
        )
        return get_item(self.storage, item_id)

    def assign(self, item_id: int, who: str | None) -> Discrepancy:
        """Assign an active item to ``who`` (``None`` or ``""`` unassigns); the status stays.

        :raises ItemNotFoundError: when there is no such item.
        :raises ItemClosedError: when the item is closed already.
        """
        item = active_item(self.storage, item_id)
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
        return get_item(self.storage, item_id)

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
        value: Any = UNSET,
        by: str | None = None,
        note: str | None = None,
    ) -> Resolution:
        """:meth:`resolve` for async hosts: it runs in a worker thread.

        Plain ``def`` connector methods run in that thread; ``async def`` ones run on the
        calling event loop.
        """

        def work() -> Resolution:
            with Caller(self.retry, in_worker_thread=True) as caller:
                return resolve(self, caller, item_id, take=take, value=value, by=by, note=note)

        return await anyio.to_thread.run_sync(work)

    async def adismiss(self, item_id: int, reason: str, *, by: str | None = None) -> Discrepancy:
        """:meth:`dismiss` for async hosts."""
        return await anyio.to_thread.run_sync(lambda: self.dismiss(item_id, reason, by=by))

    async def aassign(self, item_id: int, who: str | None) -> Discrepancy:
        """:meth:`assign` for async hosts."""
        return await anyio.to_thread.run_sync(lambda: self.assign(item_id, who))


def _statuses(status: StatusFilter) -> tuple[Status, ...] | None:
    """``status`` as a tuple of statuses (``None``: every status)."""
    if status is None:
        return None
    raw: Iterable[Status | str] = (status,) if isinstance(status, str) else status
    try:
        return tuple(Status(s) for s in raw)
    except ValueError:
        valid = ", ".join(s.value for s in Status)
        raise QueueError(f"unknown status in {status!r}; use one of {valid}") from None
