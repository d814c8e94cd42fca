"""What every part of the queue shares: the active statuses, record-level items, looking an
item up, and the note an operator's decision leaves on it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from .._exceptions import ItemClosedError, ItemNotFoundError
from ..storage._base import RECORD_FIELD, Discrepancy, Status, Storage

DEFAULT_STATUSES: Final = (Status.ESCALATED, Status.OPEN)
"""What :meth:`OperatorQueue.list` shows unless told otherwise: the active items."""

StatusFilter = Status | str | Iterable[Status | str] | None


def is_record_level(item: Discrepancy) -> bool:
    """Whether ``item`` is about a whole record (or a whole field) rather than one value.

    Record-level items have the field ``"*"`` (a possible duplicate, a deletion, a mass
    deletion, a record without a natural key, a value that does not map) or no record keys
    (a ``schema_drift`` item names a field of the sync, not a record). They are resolved by
    acknowledging them: nothing is written.
    """
    return item.field == RECORD_FIELD or not (item.left_key or item.right_key)


def get_item(storage: Storage, item_id: int) -> Discrepancy:
    """The item ``item_id``; :class:`ItemNotFoundError` when there is none."""
    try:
        return storage.get_item(item_id)
    except KeyError:
        raise ItemNotFoundError(f"no queue item has the id {item_id}") from None


def active_item(storage: Storage, item_id: int) -> Discrepancy:
    """The item ``item_id`` when it is still active; :class:`ItemClosedError` when not."""
    item = get_item(storage, item_id)
    if not item.status.is_active:
        raise ItemClosedError(
            f"item {item_id} is {item.status.value} already"
            + (f" (at {item.resolved_at.isoformat()})" if item.resolved_at else "")
        )
    return item


def operator_note(action: str, by: str | None, note: str | None) -> str:
    """The note a decision leaves on an item: who did what, and why if they said."""
    text = f"{by}: {action}" if by else action
    return f"{text} ({note})" if note else text
