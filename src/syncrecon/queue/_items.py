"""What every part of the queue shares: the active statuses, record-level items, looking an
item up, duplicate groups, and the note an operator's decision leaves on it."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import Final

from .._exceptions import ItemClosedError, ItemNotFoundError, QueueError
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


def statuses_of(status: StatusFilter) -> tuple[Status, ...] | None:
    """``status`` as a tuple of statuses (``None``: every status).

    :raises QueueError: for an unknown status.
    """
    if status is None:
        return None
    raw: Iterable[Status | str] = (status,) if isinstance(status, str) else status
    try:
        found = tuple(dict.fromkeys(Status(s) for s in raw))
    except ValueError:
        valid = ", ".join(s.value for s in Status)
        raise QueueError(f"unknown status in {status!r}; use one of {valid}") from None
    return found


DUPLICATE_CATEGORY: Final = "possible_duplicate"
"""The category of the items a cycle opens for records that share a natural key."""

_DUPLICATE = re.compile(
    r"""natural key ('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*") matches several records"""
)


def group_key(item: Discrepancy) -> str | None:
    """The duplicate group ``item`` belongs to, or ``None`` for an item of no group.

    A cycle that finds several records with one natural key opens a ``possible_duplicate``
    item for each of them; they are one group, named ``"<sync>:<natural key>"`` (the natural
    key as the cycle normalized it, e.g. a lower-case e-mail address). The name is stable: a
    later cycle that sees the same records again names the same group.
    """
    if item.category != DUPLICATE_CATEGORY:
        return None
    match = _DUPLICATE.match(item.explanation or "")
    if match is None:
        return None
    try:
        natural = ast.literal_eval(match.group(1))
    except (ValueError, SyntaxError):
        return None
    return f"{item.sync}:{natural}" if isinstance(natural, str) else None


def natural_key_of_group(group: str, sync: str) -> str:
    """The natural key part of a :func:`group_key` of ``sync``."""
    return group[len(sync) + 1 :]
