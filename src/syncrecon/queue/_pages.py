"""Pages of the queue: the filter a page (or a bulk action) applies, a page with its total,
and the values a page's filters offer (facets)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final, Literal

import attrs

from .._exceptions import QueueError
from ..storage._base import Discrepancy, Status
from ._items import DEFAULT_STATUSES, StatusFilter, statuses_of
from ._views import item_data

Order = Literal["newest", "oldest"]

_LAST_ID: Final = 2**63 - 1
"""The largest item id: ``before=(t, _LAST_ID)`` keeps every item detected at or before ``t``."""


def _status_converter(status: StatusFilter) -> tuple[Status, ...] | None:
    return statuses_of(status)


def _blank_to_none(text: str | None) -> str | None:
    return text if text is None or text.strip() else None


@attrs.frozen(kw_only=True)
class QueueFilter:
    """Which queue items a page shows, or a bulk action acts on.

    The same filters as :meth:`OperatorQueue.page`: ``status`` (one status, several, or
    ``None`` for every status; the active ones by default), ``sync``, ``category``, ``field``
    (the left name; ``"*"`` for record-level items), ``key`` (a record key on either side),
    ``assignee`` (exactly this person; ``""`` is the same as ``unassigned=True``),
    ``unassigned`` (assigned to nobody), ``search`` (a case-insensitive partial match in the
    keys, the field, the category, the explanation and the values as a person reads them)
    and ``older_than`` (detected at least this long ago).

    :raises QueueError: for an unknown status.
    """

    status: tuple[Status, ...] | None = attrs.field(
        default=DEFAULT_STATUSES, converter=_status_converter
    )
    sync: str | None = None
    category: str | None = None
    field: str | None = None
    key: str | None = None
    assignee: str | None = None
    unassigned: bool = False
    search: str | None = attrs.field(default=None, converter=_blank_to_none)
    older_than: timedelta | None = None

    def storage_query(self, now: datetime) -> dict[str, Any] | None:
        """The filters as :meth:`~syncrecon.storage.QueueStore.list_items` takes them, or
        ``None`` when no item can match (``older_than`` reaches before the calendar)."""
        assignee = None if self.assignee is None else self.assignee.strip()
        query: dict[str, Any] = {
            "sync": self.sync,
            "statuses": self.status,
            "category": self.category,
            "field": self.field,
            "key": self.key,
            "assignee": assignee or None,
            "unassigned": self.unassigned or assignee == "",
            "search": self.search,
        }
        if self.older_than is not None:
            try:
                query["before"] = (now - self.older_than, _LAST_ID)
            except OverflowError:  # older than the calendar goes: nothing is that old
                return None
        return query


@attrs.frozen(kw_only=True)
class ItemPage:
    """One page of the queue: its items, how many items match in all, and where it is.

    ``offset`` is how many matching items come before the page and ``limit`` its size;
    ``total`` counts every item that matches the filters (not only this page's).
    """

    items: tuple[Discrepancy, ...]
    total: int
    offset: int
    limit: int

    @property
    def has_next(self) -> bool:
        """Whether more matching items follow this page."""
        return self.offset + len(self.items) < self.total

    @property
    def has_previous(self) -> bool:
        """Whether matching items come before this page."""
        return self.offset > 0

    @property
    def next_offset(self) -> int | None:
        """The ``offset`` of the next page, or ``None`` on the last one."""
        return self.offset + self.limit if self.has_next else None

    @property
    def previous_offset(self) -> int | None:
        """The ``offset`` of the previous page, or ``None`` on the first one."""
        return max(0, self.offset - self.limit) if self.has_previous else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary: the items (as :func:`item_data`) and where the page is."""
        return {
            "items": [item_data(i) for i in self.items],
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "has_next": self.has_next,
            "has_previous": self.has_previous,
        }

    def __str__(self) -> str:
        if not self.items:
            return f"no items (of {self.total})" if self.total else "no items"
        first = self.offset + 1
        return f"items {first}-{self.offset + len(self.items)} of {self.total}"


@attrs.frozen(kw_only=True)
class Facets:
    """The values present among the active items, sorted: what a page's filters offer."""

    syncs: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    assignees: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, list[str]]:
        """A JSON-ready dictionary."""
        return {
            "syncs": list(self.syncs),
            "categories": list(self.categories),
            "fields": list(self.fields),
            "assignees": list(self.assignees),
        }


def check_page(order: str, limit: int, offset: int) -> None:
    """Raise :class:`QueueError` for an unknown order, a limit below 1 or a negative offset."""
    if order not in ("newest", "oldest"):
        raise QueueError(f"order must be 'newest' or 'oldest', got {order!r}")
    if limit < 1:
        raise QueueError(f"limit must be at least 1, got {limit}")
    if offset < 0:
        raise QueueError(f"offset must not be negative, got {offset}")
