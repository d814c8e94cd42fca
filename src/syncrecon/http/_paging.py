"""Pagination, batch chunking and per-record write results: the pieces every connector needs.

The paginators are small frozen values that say where a page's cursor goes in the request
and where the next one is in the answer; syncrecon's ``list_records`` is one page per call, so
they map a cursor string to request parameters and an answer to the next cursor.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import attrs

from .._models import Change, WriteResult

__all__ = [
    "CursorPaging",
    "NextUrlPaging",
    "OffsetPaging",
    "WriteResults",
    "chunked",
    "dig",
]

T = TypeVar("T")


def dig(body: Any, path: Sequence[str]) -> Any:
    """``body[path[0]][path[1]]...``, or ``None`` where a step is missing."""
    for step in path:
        if not isinstance(body, Mapping):
            return None
        body = body.get(step)
    return body


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size`` (a provider's batch cap)."""
    if size < 1:
        raise ValueError("size must be at least 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]


@attrs.frozen
class CursorPaging:
    """An opaque cursor from the answer, sent back as a query parameter (HubSpot's ``after``)."""

    param: str = "after"
    path: tuple[str, ...] = ("paging", "next", "after")

    def params(self, cursor: str | None) -> dict[str, str]:
        return {} if cursor is None else {self.param: cursor}

    def next_cursor(self, body: Any) -> str | None:
        value = dig(body, self.path)
        return str(value) if value not in (None, "") else None


@attrs.frozen
class NextUrlPaging:
    """The answer names the next page's URL (Salesforce's ``nextRecordsUrl``); the cursor is
    that URL, requested as it is."""

    path: tuple[str, ...] = ("next",)
    done_path: tuple[str, ...] | None = None

    def next_cursor(self, body: Any) -> str | None:
        if self.done_path is not None and dig(body, self.done_path) is True:
            return None
        value = dig(body, self.path)
        return str(value) if value else None


@attrs.frozen
class OffsetPaging:
    """``limit`` and ``offset`` parameters; a short page is the last one."""

    page_size: int = 100
    limit_param: str = "limit"
    offset_param: str = "offset"

    def params(self, cursor: str | None) -> dict[str, int]:
        return {self.limit_param: self.page_size, self.offset_param: int(cursor or 0)}

    def next_cursor(self, cursor: str | None, count: int) -> str | None:
        if count < self.page_size:
            return None
        return str(int(cursor or 0) + count)


class WriteResults:
    """Collects per-record outcomes of a batch write and hands them back in change order.

    A provider answers a batch in its own shape (HubSpot's 207 with errors by id or trace id,
    Salesforce's list in input order, an archive with no body at all); the connector reports
    each outcome here by the change it belongs to, and :meth:`done` returns one
    :class:`~syncrecon.WriteResult` per change. A change the answer said nothing about gets
    ``missing`` (by default a retryable failure: the outcome is unknown).
    """

    def __init__(self, changes: Sequence[Change]) -> None:
        self._changes = list(changes)
        self._results: dict[int, WriteResult] = {}

    def ok(
        self, index: int, *, key: str | None = None, modified_at: datetime | None = None
    ) -> None:
        change = self._changes[index]
        self._results[index] = WriteResult.success(change, key, modified_at=modified_at)

    def fail(self, index: int, error: str, *, retryable: bool = False) -> None:
        change = self._changes[index]
        self._results[index] = WriteResult.failure(change, error, retryable=retryable)

    def pending(self) -> list[int]:
        """The indexes of changes with no outcome yet."""
        return [i for i in range(len(self._changes)) if i not in self._results]

    def done(
        self, missing: str = "the answer has no result for this record", retryable: bool = True
    ) -> list[WriteResult]:
        for index in self.pending():
            self.fail(index, missing, retryable=retryable)
        return [self._results[i] for i in range(len(self._changes))]
