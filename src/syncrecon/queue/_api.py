""":class:`OperatorQueue`: the front door of the queue (pages, counts, facets, show, resolve,
dismiss, assign, their bulk forms and previews, duplicate groups, triage suggestions, and the
async twins)."""

from __future__ import annotations

import builtins
import inspect
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, Final

import anyio.to_thread
import attrs

from .._clock import Clock, SystemClock
from .._connector import Caller, RetrySettings, read_batch
from .._exceptions import (
    ConfigurationError,
    ItemClosedError,
    ItemNotFoundError,
    LeaseHeldError,
    QueueError,
    SyncReconError,
)
from .._models import Side
from .._sync import SyncDefinition
from ..storage._base import (
    RECORD_FIELD,
    Counter,
    Discrepancy,
    ItemUpdate,
    Status,
    Step,
    Storage,
)
from ._items import (
    DEFAULT_STATUSES,
    DUPLICATE_CATEGORY,
    StatusFilter,
    active_item,
    get_item,
    group_key,
    is_record_level,
    natural_key_of_group,
    operator_note,
)
from ._pages import Facets, ItemPage, Order, QueueFilter, check_page
from ._resolve import (
    UNSET,
    PlannedResolution,
    Resolution,
    ResolutionOutcome,
    Take,
    check_choice,
    plan,
    resolve,
)
from ._triage import SHOWN_METRIC, TAKEN_METRIC, RuleTriage, Suggestion, Triage, suggestion_taken
from ._views import ItemView

log = logging.getLogger("syncrecon.queue")

DEFAULT_TRIAGE: Final = RuleTriage()
"""The triage an :class:`OperatorQueue` uses unless told otherwise."""

_PAGE: Final = 500  # items read per storage call when walking every match of a filter
_BATCH: Final = 200  # items closed or assigned per storage transaction by a bulk action
_REMEMBERED: Final = 10_000  # suggestions remembered (by item) to count the ones taken


class OperatorQueue:
    """The operator queue over ``storage``: pages, show, resolve, dismiss, assign, in bulk too.

    :param storage: where the queue lives (set up by the constructor).
    :param syncs: the sync definitions whose items may be resolved; resolving a field writes
        through their connectors. Listing, showing, dismissing, assigning and acknowledging a
        record-level item need none (lifting a schema-drift quarantine does: it asks the
        connectors to describe the field again).
    :param clock: tells the time of resolutions (and the age in ``older_than``).
    :param retry: how connector calls are retried.
    :param echo_ttl: how long a value written here is remembered in the echo ledger, so the
        webhook it causes is recognized by the fast loop.
    :param triage: proposes resolutions (:class:`RuleTriage` by default; ``None``: no
        suggestions). A suggestion is only shown, never applied by itself.
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
        triage: Triage | None = DEFAULT_TRIAGE,
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
        self.triage = triage
        self.owner = f"queue-{uuid.uuid4().hex[:12]}"
        self._shown: OrderedDict[int, tuple[tuple[Any, ...], Suggestion | None]] = OrderedDict()
        self._shown_lock = threading.Lock()
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
        unassigned: bool = False,
        search: str | None = None,
        order: Order = "newest",
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Discrepancy]:
        """Queue items, newest first, filtered (:meth:`page` also counts them).

        :param status: one status, several, or ``None`` for every status; by default the
            active ones (escalated and open).
        :param key: a record key on either side.
        :param older_than: only items detected at least this long ago.
        :param assignee: only items assigned to this person; ``""`` for unassigned items.
        :param unassigned: only items assigned to nobody.
        :param search: a case-insensitive partial match in the keys, the field, the
            category, the explanation and the values as a person reads them.
        :param order: ``"newest"`` or ``"oldest"`` first (by the time detected).
        :param offset: how many matching items to skip.
        :raises QueueError: for an unknown status or order, a ``limit`` below 1 or a
            negative ``offset``.
        """
        check_page(order, limit, offset)
        query = self._query(
            QueueFilter(
                status=status,
                sync=sync,
                category=category,
                field=field,
                key=key,
                assignee=assignee,
                unassigned=unassigned,
                search=search,
                older_than=older_than,
            )
        )
        if query is None:
            return []
        return self.storage.list_items(**query, order=order, limit=limit, offset=offset)

    def page(
        self,
        *,
        status: StatusFilter = DEFAULT_STATUSES,
        sync: str | None = None,
        category: str | None = None,
        field: str | None = None,
        key: str | None = None,
        assignee: str | None = None,
        unassigned: bool = False,
        search: str | None = None,
        older_than: timedelta | None = None,
        order: Order = "newest",
        limit: int = 50,
        offset: int = 0,
    ) -> ItemPage:
        """One page of queue items and how many match in all.

        The filters are :class:`QueueFilter`'s: ``status`` (one status, several, or ``None``
        for every status; the active ones by default), ``sync``, ``category``, ``field`` (the
        left name; ``"*"`` for record-level items), ``key`` (a record key on either side),
        ``assignee`` (``""``: unassigned), ``unassigned``, ``search`` (a case-insensitive
        partial match in the keys, the field, the category, the explanation and the values'
        display text) and ``older_than``. ``order`` is ``"newest"`` or ``"oldest"`` first
        (by the time detected); ``offset`` skips that many matching items.

        :raises QueueError: for an unknown status or order, a ``limit`` below 1 or a
            negative ``offset``.
        """
        check_page(order, limit, offset)
        query = self._query(
            QueueFilter(
                status=status,
                sync=sync,
                category=category,
                field=field,
                key=key,
                assignee=assignee,
                unassigned=unassigned,
                search=search,
                older_than=older_than,
            )
        )
        if query is None:
            return ItemPage(items=(), total=0, offset=offset, limit=limit)
        total = self.storage.count_items(**query)
        items: builtins.list[Discrepancy] = []
        if offset < total:
            items = self.storage.list_items(**query, order=order, limit=limit, offset=offset)
        return ItemPage(items=tuple(items), total=total, offset=offset, limit=limit)

    def count(
        self,
        *,
        status: StatusFilter = DEFAULT_STATUSES,
        sync: str | None = None,
        category: str | None = None,
        field: str | None = None,
        key: str | None = None,
        assignee: str | None = None,
        unassigned: bool = False,
        search: str | None = None,
        older_than: timedelta | None = None,
    ) -> int:
        """How many queue items match these filters (those of :meth:`page`).

        :raises QueueError: for an unknown status.
        """
        query = self._query(
            QueueFilter(
                status=status,
                sync=sync,
                category=category,
                field=field,
                key=key,
                assignee=assignee,
                unassigned=unassigned,
                search=search,
                older_than=older_than,
            )
        )
        return 0 if query is None else self.storage.count_items(**query)

    def facets(self, *, sync: str | None = None) -> Facets:
        """The syncs, categories, fields and assignees present among the active items (of
        ``sync``, or of every sync), sorted: the choices of a page's filters."""
        found = self.storage.item_facets(sync=sync)
        return Facets(
            syncs=tuple(found.get("sync", ())),
            categories=tuple(found.get("category", ())),
            fields=tuple(found.get("field", ())),
            assignees=tuple(found.get("assignee", ())),
        )

    def show(self, item_id: int, *, history: int = 10, suggest: bool = True) -> ItemView:
        """One item with its values, base, explanation, the record's recent history, its
        duplicate group, the triage's suggestion and the systems' names and record pages.

        :param history: how many other items of the same record to include at most.
        :param suggest: ask the triage for a suggestion (counted as shown when there is one).
        :raises ItemNotFoundError: when there is no such item.
        """
        with Caller(self.retry) as caller:
            return self._show(caller, item_id, history=history, suggest=suggest)

    def group(self, item_id: int) -> tuple[Discrepancy, ...]:
        """The items of ``item_id``'s duplicate group, by id: the item and the group's other
        active items (just the item when it belongs to no group; see :func:`group_key`).

        Acknowledge them together with ``acknowledge_many(ids=[...])``, or dismiss them with
        ``dismiss_many(ids=[...], reason=...)``.

        :raises ItemNotFoundError: when there is no such item.
        """
        return tuple(self._group(get_item(self.storage, item_id)))

    def suggest(self, item_id: int) -> Suggestion | None:
        """What the triage proposes for the item, or ``None`` (counted as shown when there is
        one; never applied by itself).

        :raises ItemNotFoundError: when there is no such item.
        """
        item = get_item(self.storage, item_id)
        with Caller(self.retry) as caller:
            return self._shown_suggestion(caller, item, None)

    def systems(self, sync_name: str) -> dict[Side, str]:
        """The names of the sync's two systems (its connectors' names), by side; ``"left"``
        and ``"right"`` when the sync definition is not known."""
        sync = self.syncs.get(sync_name)
        names = {Side.LEFT: "left", Side.RIGHT: "right"}
        if sync is not None:
            for side in Side:
                name = getattr(sync.connector(side), "name", None)
                if isinstance(name, str) and name.strip():
                    names[side] = name
        return names

    def record_url(self, item: Discrepancy, side: Side | str) -> str | None:
        """The page of ``item``'s record on ``side`` in its system, or ``None``.

        A connector offers record pages with an optional method ``record_url(key: str) ->
        str | None`` (the HubSpot and Salesforce connectors have one); ``None`` when the
        sync definition is not known, the item names no record on that side, or the
        connector has no such method (or no page for it).
        """
        side = Side(side)
        sync = self.syncs.get(item.sync)
        key = item.left_key if side is Side.LEFT else item.right_key
        if sync is None or not key:
            return None
        method = getattr(sync.connector(side), "record_url", None)
        if not callable(method) or inspect.iscoroutinefunction(method):
            return None
        try:
            url = method(key)
        except Exception:
            log.warning("%s.record_url(%r) failed", sync.connector(side).name, key, exc_info=True)
            return None
        if inspect.isawaitable(url):
            getattr(url, "close", lambda: None)()
            return None
        return url if isinstance(url, str) and url else None

    # -- deciding ------------------------------------------------------------------------------

    def resolve(
        self,
        item_id: int,
        *,
        take: Take | None = None,
        value: Any = UNSET,
        by: str | None = None,
        note: str | None = None,
        confirm: bool = False,
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
        a value, nothing written. Resolving a ``schema_drift`` item lifts the field's
        quarantine, so it asks more: who decides (``by``) and ``confirm=True``; the
        connectors then describe the field again, and the quarantine stays (``QueueError``)
        unless the field matches its mapping (present on each side, a multi-select only for
        a mapping that merges lists and the reverse, every option the value map needs);
        the note says what was checked.

        ``by`` (who decided) is recorded as the item's assignee and at the start of its note;
        ``note`` is appended to the note. A resolution that is exactly what the triage
        suggested is counted (``triage_suggestions_taken``).

        :raises ItemNotFoundError: when there is no such item.
        :raises ItemClosedError: when the item is closed already.
        :raises QueueError: for a wrong choice (none or both of ``take``/``value``, a value
            for a record-level item), when the field is quarantined by an active
            ``schema_drift`` item, when the chosen value would have to be written to a
            side the field does not flow to, or does not map to the right vocabulary, or
            when a quarantine cannot be lifted (no ``by``, no ``confirm``, the field still
            does not match its mapping).
        :raises ConfigurationError: when the item's sync (or field) is not among ``syncs``.
        :raises LeaseHeldError: when someone else is resolving the same item right now.
        """
        with Caller(self.retry) as caller:
            return resolve(
                self,
                caller,
                item_id,
                take=take,
                value=value,
                by=by,
                note=note,
                confirm=confirm,
            )

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
        self._dismiss_batch([item_id], reason, by)
        return get_item(self.storage, item_id)

    def assign(self, item_id: int, who: str | None) -> Discrepancy:
        """Assign an active item to ``who`` (``None`` or ``""`` unassigns); the status stays.

        :raises ItemNotFoundError: when there is no such item.
        :raises ItemClosedError: when the item is closed already.
        """
        item = active_item(self.storage, item_id)
        self._assign_batch([item], who)
        return get_item(self.storage, item_id)

    # -- in bulk -------------------------------------------------------------------------------

    def preview(
        self,
        ids: Iterable[int] | None = None,
        *,
        filter: QueueFilter | None = None,
        take: Take | None = None,
        value: Any = UNSET,
    ) -> tuple[PlannedResolution, ...]:
        """What :meth:`resolve_many` would do with the same arguments; nothing is written.

        For each item (the given ``ids``, or every item matching ``filter``, newest first):
        the chosen value and what would be written to each side (in that side's
        vocabulary), or why it cannot be resolved this way (closed already, a record-level
        item given a value, a one-way field, a value that does not map, a schema-drift
        quarantine, a missing sync definition...). Without ``take`` or ``value`` a
        record-level item is planned as an acknowledgement. The preview uses the values the
        items recorded; the resolution itself still reads both records again.

        :raises QueueError: for both ``take`` and ``value``, an unknown ``take``, or not
            exactly one of ``ids`` and ``filter``.
        :raises ItemNotFoundError: when an id names no item (nothing else is previewed).
        """
        _check_bulk_choice(take, value)
        items = self._targets(ids, filter)
        return tuple(plan(self, item, take=take, value=value) for item in items)

    def resolve_many(
        self,
        ids: Iterable[int] | None = None,
        *,
        filter: QueueFilter | None = None,
        take: Take | None = None,
        value: Any = UNSET,
        by: str | None = None,
        note: str | None = None,
    ) -> tuple[Resolution, ...]:
        """:meth:`resolve` each item (the given ``ids``, or every item matching ``filter``,
        newest first), with the same safety per item: both records read again, nothing
        overwritten that changed since the item was opened.

        One item's failure does not stop the others: an item that cannot be resolved as
        asked (closed already, a one-way field, a quarantine, a missing sync definition,
        someone else resolving it...) has the outcome ``refused`` and its reason in the
        message, and nothing is done to it. Without ``take`` or ``value``, record-level items
        are acknowledged (field items are refused). ``schema_drift`` items are refused: lift
        a quarantine on its own, with :meth:`resolve` and ``confirm=True``.
        :meth:`preview` shows what this would do.

        :raises QueueError: for both ``take`` and ``value``, an unknown ``take``, or not
            exactly one of ``ids`` and ``filter``.
        :raises ItemNotFoundError: when an id names no item (nothing is done).
        """
        with Caller(self.retry) as caller:
            return self._resolve_many(caller, ids, filter, take, value, by, note)

    def acknowledge_many(
        self,
        ids: Iterable[int] | None = None,
        *,
        filter: QueueFilter | None = None,
        by: str | None = None,
        note: str | None = None,
    ) -> tuple[Resolution, ...]:
        """Acknowledge record-level items (a duplicate group, deletions...): close each as
        resolved, writing nothing, as :meth:`resolve` does without a value.

        An item about a value (it needs ``take`` or ``value``), a ``schema_drift`` item (see
        :meth:`resolve`) and a closed item are ``refused``; the others are acknowledged.

        :raises QueueError: for not exactly one of ``ids`` and ``filter``.
        :raises ItemNotFoundError: when an id names no item (nothing is done).
        """
        with Caller(self.retry) as caller:
            return self._acknowledge_many(caller, ids, filter, by, note)

    def dismiss_many(
        self,
        ids: Iterable[int] | None = None,
        *,
        filter: QueueFilter | None = None,
        reason: str,
        by: str | None = None,
    ) -> tuple[Resolution, ...]:
        """:meth:`dismiss` each item (the given ``ids``, or every item matching ``filter``):
        closed without a change, with the reason. A closed item is ``refused``; the others
        are ``dismissed`` (in transactions of up to 200 items).

        :raises QueueError: for a blank ``reason``, or not exactly one of ``ids`` and
            ``filter``.
        :raises ItemNotFoundError: when an id names no item (nothing is done).
        """
        if not reason or not reason.strip():
            raise QueueError("dismissing items needs a reason")
        items = self._targets(ids, filter)
        out: builtins.list[Resolution] = []
        for chunk in _chunks(items, _BATCH):
            active = [i for i in chunk if i.status.is_active]
            now = self._dismiss_batch([i.id or 0 for i in active], reason, by)
            for item in chunk:
                assert item.id is not None
                if not item.status.is_active:
                    out.append(_closed(item))
                    continue
                out.append(
                    Resolution(
                        item_id=item.id,
                        outcome=ResolutionOutcome.DISMISSED,
                        status=Status.DISMISSED,
                        message=f"dismissed at {now.isoformat()}: {reason.strip()}",
                    )
                )
        return tuple(out)

    def assign_many(
        self,
        ids: Iterable[int] | None = None,
        *,
        who: str | None,
        filter: QueueFilter | None = None,
    ) -> tuple[Resolution, ...]:
        """:meth:`assign` each item (the given ``ids``, or every item matching ``filter``) to
        ``who`` (``None`` or ``""`` unassigns). A closed item is ``refused``; the others are
        ``assigned``, their status unchanged.

        :raises QueueError: for not exactly one of ``ids`` and ``filter``.
        :raises ItemNotFoundError: when an id names no item (nothing is done).
        """
        items = self._targets(ids, filter)
        name = (who or "").strip()
        out: builtins.list[Resolution] = []
        for chunk in _chunks(items, _BATCH):
            self._assign_batch([i for i in chunk if i.status.is_active], who)
            for item in chunk:
                assert item.id is not None
                if not item.status.is_active:
                    out.append(_closed(item))
                    continue
                out.append(
                    Resolution(
                        item_id=item.id,
                        outcome=ResolutionOutcome.ASSIGNED,
                        status=item.status,
                        message=f"assigned to {name}" if name else "unassigned",
                    )
                )
        return tuple(out)

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
        unassigned: bool = False,
        search: str | None = None,
        order: Order = "newest",
        limit: int = 100,
        offset: int = 0,
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
                unassigned=unassigned,
                search=search,
                order=order,
                limit=limit,
                offset=offset,
            )

        return await anyio.to_thread.run_sync(work)

    async def apage(
        self,
        *,
        status: StatusFilter = DEFAULT_STATUSES,
        sync: str | None = None,
        category: str | None = None,
        field: str | None = None,
        key: str | None = None,
        assignee: str | None = None,
        unassigned: bool = False,
        search: str | None = None,
        older_than: timedelta | None = None,
        order: Order = "newest",
        limit: int = 50,
        offset: int = 0,
    ) -> ItemPage:
        """:meth:`page` for async hosts."""

        def work() -> ItemPage:
            return self.page(
                status=status,
                sync=sync,
                category=category,
                field=field,
                key=key,
                assignee=assignee,
                unassigned=unassigned,
                search=search,
                older_than=older_than,
                order=order,
                limit=limit,
                offset=offset,
            )

        return await anyio.to_thread.run_sync(work)

    async def acount(
        self,
        *,
        status: StatusFilter = DEFAULT_STATUSES,
        sync: str | None = None,
        category: str | None = None,
        field: str | None = None,
        key: str | None = None,
        assignee: str | None = None,
        unassigned: bool = False,
        search: str | None = None,
        older_than: timedelta | None = None,
    ) -> int:
        """:meth:`count` for async hosts."""

        def work() -> int:
            return self.count(
                status=status,
                sync=sync,
                category=category,
                field=field,
                key=key,
                assignee=assignee,
                unassigned=unassigned,
                search=search,
                older_than=older_than,
            )

        return await anyio.to_thread.run_sync(work)

    async def afacets(self, *, sync: str | None = None) -> Facets:
        """:meth:`facets` for async hosts."""
        return await anyio.to_thread.run_sync(lambda: self.facets(sync=sync))

    async def ashow(self, item_id: int, *, history: int = 10, suggest: bool = True) -> ItemView:
        """:meth:`show` for async hosts (``async def`` connector methods, which a duplicate
        group's suggestion may call, run on the calling event loop)."""

        def work() -> ItemView:
            with Caller(self.retry, in_worker_thread=True) as caller:
                return self._show(caller, item_id, history=history, suggest=suggest)

        return await anyio.to_thread.run_sync(work)

    async def agroup(self, item_id: int) -> tuple[Discrepancy, ...]:
        """:meth:`group` for async hosts."""
        return await anyio.to_thread.run_sync(lambda: self.group(item_id))

    async def asuggest(self, item_id: int) -> Suggestion | None:
        """:meth:`suggest` for async hosts."""

        def work() -> Suggestion | None:
            item = get_item(self.storage, item_id)
            with Caller(self.retry, in_worker_thread=True) as caller:
                return self._shown_suggestion(caller, item, None)

        return await anyio.to_thread.run_sync(work)

    async def aresolve(
        self,
        item_id: int,
        *,
        take: Take | None = None,
        value: Any = UNSET,
        by: str | None = None,
        note: str | None = None,
        confirm: bool = False,
    ) -> Resolution:
        """:meth:`resolve` for async hosts: it runs in a worker thread.

        Plain ``def`` connector methods run in that thread; ``async def`` ones run on the
        calling event loop.
        """

        def work() -> Resolution:
            with Caller(self.retry, in_worker_thread=True) as caller:
                return resolve(
                    self,
                    caller,
                    item_id,
                    take=take,
                    value=value,
                    by=by,
                    note=note,
                    confirm=confirm,
                )

        return await anyio.to_thread.run_sync(work)

    async def adismiss(self, item_id: int, reason: str, *, by: str | None = None) -> Discrepancy:
        """:meth:`dismiss` for async hosts."""
        return await anyio.to_thread.run_sync(lambda: self.dismiss(item_id, reason, by=by))

    async def aassign(self, item_id: int, who: str | None) -> Discrepancy:
        """:meth:`assign` for async hosts."""
        return await anyio.to_thread.run_sync(lambda: self.assign(item_id, who))

    async def apreview(
        self,
        ids: Iterable[int] | None = None,
        *,
        filter: QueueFilter | None = None,
        take: Take | None = None,
        value: Any = UNSET,
    ) -> tuple[PlannedResolution, ...]:
        """:meth:`preview` for async hosts."""
        wanted = None if ids is None else builtins.list(ids)
        return await anyio.to_thread.run_sync(
            lambda: self.preview(wanted, filter=filter, take=take, value=value)
        )

    async def aresolve_many(
        self,
        ids: Iterable[int] | None = None,
        *,
        filter: QueueFilter | None = None,
        take: Take | None = None,
        value: Any = UNSET,
        by: str | None = None,
        note: str | None = None,
    ) -> tuple[Resolution, ...]:
        """:meth:`resolve_many` for async hosts (as :meth:`aresolve`)."""
        wanted = None if ids is None else builtins.list(ids)

        def work() -> tuple[Resolution, ...]:
            with Caller(self.retry, in_worker_thread=True) as caller:
                return self._resolve_many(caller, wanted, filter, take, value, by, note)

        return await anyio.to_thread.run_sync(work)

    async def aacknowledge_many(
        self,
        ids: Iterable[int] | None = None,
        *,
        filter: QueueFilter | None = None,
        by: str | None = None,
        note: str | None = None,
    ) -> tuple[Resolution, ...]:
        """:meth:`acknowledge_many` for async hosts."""
        wanted = None if ids is None else builtins.list(ids)

        def work() -> tuple[Resolution, ...]:
            with Caller(self.retry, in_worker_thread=True) as caller:
                return self._acknowledge_many(caller, wanted, filter, by, note)

        return await anyio.to_thread.run_sync(work)

    async def adismiss_many(
        self,
        ids: Iterable[int] | None = None,
        *,
        filter: QueueFilter | None = None,
        reason: str,
        by: str | None = None,
    ) -> tuple[Resolution, ...]:
        """:meth:`dismiss_many` for async hosts."""
        wanted = None if ids is None else builtins.list(ids)
        return await anyio.to_thread.run_sync(
            lambda: self.dismiss_many(wanted, filter=filter, reason=reason, by=by)
        )

    async def aassign_many(
        self,
        ids: Iterable[int] | None = None,
        *,
        who: str | None,
        filter: QueueFilter | None = None,
    ) -> tuple[Resolution, ...]:
        """:meth:`assign_many` for async hosts."""
        wanted = None if ids is None else builtins.list(ids)
        return await anyio.to_thread.run_sync(
            lambda: self.assign_many(wanted, who=who, filter=filter)
        )

    # -- the parts -----------------------------------------------------------------------------

    def _query(self, where: QueueFilter) -> dict[str, Any] | None:
        return where.storage_query(self.clock.now())

    def _targets(
        self, ids: Iterable[int] | None, where: QueueFilter | None
    ) -> builtins.list[Discrepancy]:
        """The items a bulk action acts on: those of ``ids`` (each once, in order; every id
        must name an item), or every item matching ``where``, newest first."""
        if (ids is None) == (where is None):
            raise QueueError("give the items' ids or a filter (exactly one of the two)")
        if ids is not None:
            if isinstance(ids, str | bytes | int):
                raise QueueError(f"ids must be a list of item ids, got {ids!r}")
            found: builtins.list[Discrepancy] = []
            missing: builtins.list[int] = []
            for item_id in dict.fromkeys(int(i) for i in ids):
                try:
                    found.append(self.storage.get_item(item_id))
                except KeyError:
                    missing.append(item_id)
            if missing:
                raise ItemNotFoundError(
                    f"no queue item has the id{'s' if len(missing) > 1 else ''}"
                    f" {', '.join(str(i) for i in missing)}; nothing was done"
                )
            return found
        assert where is not None
        query = self._query(where)
        if query is None:
            return []
        out: builtins.list[Discrepancy] = []
        while True:  # keyset pages: items closed meanwhile do not shift the next page
            batch = self.storage.list_items(**query, limit=_PAGE)
            out += batch
            if len(batch) < _PAGE:
                return out
            last = batch[-1]
            assert last.id is not None
            query["before"] = (last.detected_at, last.id)

    def _refused(self, item_id: int, exc: Exception) -> Resolution:
        try:
            status = self.storage.get_item(item_id).status
        except KeyError:  # removed meanwhile (retention)
            status = Status.DISMISSED
        outcome = ResolutionOutcome.REFUSED
        if isinstance(exc, SyncReconError) and not isinstance(
            exc, QueueError | ConfigurationError | LeaseHeldError | ItemNotFoundError
        ):
            outcome = ResolutionOutcome.FAILED  # a storage error, say: not a refusal
        return Resolution(item_id=item_id, outcome=outcome, status=status, message=str(exc))

    def _each(
        self, items: Sequence[Discrepancy], act: Callable[[int], Resolution]
    ) -> tuple[Resolution, ...]:
        out: builtins.list[Resolution] = []
        for item in items:
            assert item.id is not None
            try:
                out.append(act(item.id))
            except SyncReconError as exc:
                out.append(self._refused(item.id, exc))
        return tuple(out)

    def _resolve_many(
        self,
        caller: Caller,
        ids: Iterable[int] | None,
        where: QueueFilter | None,
        take: Take | None,
        value: Any,
        by: str | None,
        note: str | None,
    ) -> tuple[Resolution, ...]:
        _check_bulk_choice(take, value)
        items = self._targets(ids, where)
        self._prime(caller, items)
        return self._each(
            items,
            lambda item_id: resolve(
                self, caller, item_id, take=take, value=value, by=by, note=note
            ),
        )

    def _acknowledge_many(
        self,
        caller: Caller,
        ids: Iterable[int] | None,
        where: QueueFilter | None,
        by: str | None,
        note: str | None,
    ) -> tuple[Resolution, ...]:
        items = self._targets(ids, where)
        self._prime(caller, items)

        def acknowledge(item_id: int) -> Resolution:
            item = active_item(self.storage, item_id)
            if not is_record_level(item):
                raise QueueError(
                    f"item {item_id} is about a value of {item.field!r}: resolve it with take"
                    " or value instead of acknowledging it"
                )
            return resolve(self, caller, item_id, take=None, value=UNSET, by=by, note=note)

        return self._each(items, acknowledge)

    def _dismiss_batch(self, ids: Sequence[int], reason: str, by: str | None) -> Any:
        now = self.clock.now()
        if ids:
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
                        for item_id in ids
                    ],
                )
            )
        return now

    def _assign_batch(self, items: Sequence[Discrepancy], who: str | None) -> None:
        if not items:
            return
        self.storage.commit(
            Step(
                at=self.clock.now(),
                item_updates=[
                    ItemUpdate(
                        id=item.id or 0,
                        status=item.status,
                        resolution=item.resolution,
                        resolved_at=item.resolved_at,
                        assignee=(who or "").strip(),
                    )
                    for item in items
                ],
            )
        )

    def _history(self, item: Discrepancy, history: int) -> builtins.list[Discrepancy]:
        """The other items of ``item``'s record (of its field, for a record-less item),
        newest first, at most ``history``."""
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
        found.pop(item.id or 0, None)
        ordered = sorted(found.values(), key=lambda d: (d.detected_at, d.id or 0), reverse=True)
        return ordered[:history]

    def _group(self, item: Discrepancy) -> builtins.list[Discrepancy]:
        """``item`` and the other active items of its duplicate group, by id."""
        group = group_key(item)
        members: dict[int, Discrepancy] = {item.id or 0: item}
        if group is not None:
            natural = natural_key_of_group(group, item.sync)
            # The explanation names the natural key as Python writes it (repr).
            query: dict[str, Any] = {
                "sync": item.sync,
                "statuses": DEFAULT_STATUSES,
                "category": DUPLICATE_CATEGORY,
                "search": repr(natural)[1:-1] or None,
            }
            while True:
                batch = self.storage.list_items(**query, limit=_PAGE)
                for other in batch:
                    if other.id is not None and group_key(other) == group:
                        members.setdefault(other.id, other)
                if len(batch) < _PAGE:
                    break
                last = batch[-1]
                assert last.id is not None
                query["before"] = (last.detected_at, last.id)
        return sorted(members.values(), key=lambda d: d.id or 0)

    def _show(self, caller: Caller, item_id: int, *, history: int, suggest: bool) -> ItemView:
        item = get_item(self.storage, item_id)
        others = self._history(item, history)
        group = group_key(item)
        members = self._group(item) if group is not None else [item]
        linked = False
        current_base = None
        if item.left_key:
            link = self.storage.get_links(item.sync, Side.LEFT, [item.left_key]).get(item.left_key)
            if link is not None:
                linked = True
                current_base = (
                    dict(link.base) if item.field == RECORD_FIELD else link.base.get(item.field)
                )
        suggestion = self._shown_suggestion(caller, item, members) if suggest else None
        urls = {side: url for side in Side if (url := self.record_url(item, side)) is not None}
        return ItemView(
            item=item,
            left_value=item.left_value,
            right_value=item.right_value,
            base_value=item.base_value,
            has_base=item.has_base,
            explanation=item.explanation,
            history=tuple(others),
            linked=linked,
            current_base=current_base,
            group=group,
            group_items=tuple(m for m in members if m.id != item.id),
            suggestion=suggestion,
            systems=self.systems(item.sync),
            urls=urls,
        )

    # -- triage --------------------------------------------------------------------------------

    def _suggestion(
        self,
        caller: Caller,
        item: Discrepancy,
        members: Sequence[Discrepancy] | None,
    ) -> Suggestion | None:
        """What the triage proposes for ``item`` (``members``: its duplicate group, when
        known already). A failing triage proposes nothing (and is logged)."""
        triage = self.triage
        if triage is None:
            return None
        if group_key(item) is not None:
            group = builtins.list(members) if members is not None else self._group(item)
            valued = self._with_record_values(caller, group)
            subject = valued.get(item.id or 0, item)
            context = [valued[m.id or 0] for m in group if m.id != item.id]
        else:
            subject, context = item, self._history(item, 10)
        try:
            found = triage.suggest(subject, context)
        except Exception:
            log.warning("%r failed to suggest for item %s", triage, item.id, exc_info=True)
            return None
        if found is not None and not isinstance(found, Suggestion):
            log.warning("%r returned %r, not a Suggestion: ignored", triage, found)
            return None
        return found

    def _remember(self, item: Discrepancy, suggestion: Suggestion | None) -> None:
        with self._shown_lock:
            self._shown[item.id or 0] = (_version(item), suggestion)
            self._shown.move_to_end(item.id or 0)
            while len(self._shown) > _REMEMBERED:
                self._shown.popitem(last=False)

    def _remembered(self, item: Discrepancy) -> tuple[bool, Suggestion | None]:
        """Whether a suggestion is remembered for this version of ``item``, and which."""
        with self._shown_lock:
            found = self._shown.get(item.id or 0)
        if found is None or found[0] != _version(item):
            return False, None
        return True, found[1]

    def _prime(self, caller: Caller, items: Sequence[Discrepancy]) -> None:
        """Before a bulk action: the suggestion for each active item as it is now, so that
        closing one item of a group does not change what was suggested for the next."""
        if self.triage is None or not getattr(self.triage, "repeatable", True):
            return
        for item in items:
            if item.status.is_active and not self._remembered(item)[0]:
                self._remember(item, self._suggestion(caller, item, None))

    def _shown_suggestion(
        self, caller: Caller, item: Discrepancy, members: Sequence[Discrepancy] | None
    ) -> Suggestion | None:
        """The suggestion for ``item``, remembered and counted as shown."""
        suggestion = self._suggestion(caller, item, members)
        self._remember(item, suggestion)
        if suggestion is not None:
            self.storage.commit(
                Step(
                    at=self.clock.now(),
                    counters=[
                        Counter(
                            metric=SHOWN_METRIC,
                            labels={"sync": item.sync, "source": suggestion.source},
                        )
                    ],
                )
            )
        return suggestion

    def _taken(
        self, caller: Caller, item: Discrepancy, *, take: str | None, value: Any
    ) -> builtins.list[Counter]:
        """The counter to commit with ``item``'s resolution when it takes the suggestion:
        the one shown for this version of the item, or (a repeatable triage) asked again."""
        if self.triage is None:
            return []
        known, suggestion = self._remembered(item)
        if not known:
            if not getattr(self.triage, "repeatable", True):
                return []  # asked only to show a suggestion: only a shown one counts
            suggestion = self._suggestion(caller, item, None)
        given = value is not UNSET
        if suggestion is None or not suggestion_taken(
            suggestion, item, take=take, value=value if given else None, given=given
        ):
            return []
        labels = {"sync": item.sync, "source": suggestion.source}
        return [Counter(metric=TAKEN_METRIC, labels=labels)]

    def _with_record_values(
        self, caller: Caller, items: Sequence[Discrepancy]
    ) -> dict[int, Discrepancy]:
        """``items`` (of one duplicate group) by id, each carrying its record's mapped values
        (left names, left vocabulary) on the side it names, when they can be read."""
        out = {i.id or 0: i for i in items}
        sync = self.syncs.get(items[0].sync) if items else None
        if sync is None:
            return out
        for side in Side:
            keys = [
                k
                for i in items
                if (k := i.left_key if side is Side.LEFT else i.right_key) is not None
            ]
            if not keys:
                continue
            connector = sync.connector(side)
            size = max(1, connector.capabilities.max_read_batch)
            records = {}
            try:
                for start in range(0, len(keys), size):
                    for record in read_batch(caller, connector, keys[start : start + size]):
                        if not record.deleted:
                            records[record.key] = record
            except Exception:
                log.warning("reading a duplicate group's records failed", exc_info=True)
                continue
            for i in items:
                key = i.left_key if side is Side.LEFT else i.right_key
                if key is None or key not in records or (side is Side.RIGHT and i.left_key):
                    continue
                values: dict[str, Any] = {}
                for fm in sync.fields:
                    name = fm.left if side is Side.LEFT else fm.right
                    if name not in records[key].fields:
                        continue
                    raw = records[key].fields[name]
                    try:
                        values[fm.left] = raw if side is Side.LEFT else fm.transform.to_left(raw)
                    except Exception:
                        continue
                if side is Side.LEFT:
                    out[i.id or 0] = attrs.evolve(i, left_value=values)
                else:
                    out[i.id or 0] = attrs.evolve(i, right_value=values)
        return out


def _check_bulk_choice(take: str | None, value: Any) -> None:
    """Refuse both ``take`` and ``value``, or an unknown ``take`` (neither is fine in bulk:
    record-level items are acknowledged, field items refused one by one)."""
    if take is not None or value is not UNSET:
        check_choice(take, value)


def _version(item: Discrepancy) -> tuple[Any, ...]:
    """What changes whenever an item's values or status may have changed."""
    return (item.updated_at, item.times_seen, item.status)


def _closed(item: Discrepancy) -> Resolution:
    assert item.id is not None
    return Resolution(
        item_id=item.id,
        outcome=ResolutionOutcome.REFUSED,
        status=item.status,
        message=str(
            ItemClosedError(
                f"item {item.id} is {item.status.value} already"
                + (f" (at {item.resolved_at.isoformat()})" if item.resolved_at else "")
            )
        ),
    )


def _chunks(items: Sequence[Discrepancy], size: int) -> Iterable[Sequence[Discrepancy]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
