"""Base classes for connectors over HTTP: the logic once, two doors.

A connector built on the toolkit writes its four methods as operations (generators that
yield :class:`httpx.Request` objects and get :class:`httpx.Response` objects back, see
:data:`~syncrecon.http.Op`):

.. code-block:: python

    class Tickets(HttpConnector):
        def list_op(self, since, cursor):
            answer = yield self.api.request("GET", "/tickets", params=self.paging.params(cursor))
            body = answer.json()
            return Page(records=[...], next_cursor=self.paging.next_cursor(body))

:class:`HttpConnector` runs them over an ``httpx.Client`` with plain methods and
:class:`AsyncHttpConnector` over an ``httpx.AsyncClient`` with ``async def`` ones; both declare
``Capabilities(retries_requests=True)``: every request is retried on its own, and syncrecon
counts requests, not calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from .._models import Capabilities, Change, FieldInfo, Page, Record, WriteResult
from ._api import HttpApi, Op

__all__ = ["AsyncHttpConnector", "HttpConnector", "HttpOperations"]


class HttpOperations:
    """The operations a connector implements (shared by its sync and async classes)."""

    name: str
    capabilities: Capabilities
    api: HttpApi

    def list_op(self, *, since: datetime | None, cursor: str | None) -> Op[Page]:
        """One page of records (see :meth:`syncrecon.Connector.list_records`)."""
        raise NotImplementedError

    def read_op(self, keys: Sequence[str]) -> Op[Sequence[Record]]:
        """The records with these keys (see :meth:`syncrecon.Connector.read_records`)."""
        raise NotImplementedError

    def write_op(self, changes: Sequence[Change]) -> Op[Sequence[WriteResult]]:
        """Apply a batch (see :meth:`syncrecon.Connector.write_records`)."""
        raise NotImplementedError

    def describe_op(self) -> Op[Sequence[FieldInfo]]:
        """The fields (see :meth:`syncrecon.Connector.describe_fields`)."""
        raise NotImplementedError

    def find_created_op(self, idempotency_keys: Sequence[str]) -> Op[Mapping[str, Record]]:
        """The records created with these idempotency keys (optional; see
        ``Capabilities.finds_created``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class HttpConnector(HttpOperations):
    """A :class:`~syncrecon.Connector` over an ``httpx.Client``: plain methods."""

    def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        return self.api.run(self.list_op(since=since, cursor=cursor))

    def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        return self.api.run(self.read_op(keys))

    def write_records(self, changes: Sequence[Change]) -> Sequence[WriteResult]:
        return self.api.run(self.write_op(changes))

    def describe_fields(self) -> Sequence[FieldInfo]:
        return self.api.run(self.describe_op())

    def find_created(self, idempotency_keys: Sequence[str]) -> Mapping[str, Record]:
        return self.api.run(self.find_created_op(idempotency_keys))


class AsyncHttpConnector(HttpOperations):
    """An :class:`~syncrecon.AsyncConnector` over an ``httpx.AsyncClient``."""

    async def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        return await self.api.arun(self.list_op(since=since, cursor=cursor))

    async def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        return await self.api.arun(self.read_op(keys))

    async def write_records(self, changes: Sequence[Change]) -> Sequence[WriteResult]:
        return await self.api.arun(self.write_op(changes))

    async def describe_fields(self) -> Sequence[FieldInfo]:
        return await self.api.arun(self.describe_op())

    async def find_created(self, idempotency_keys: Sequence[str]) -> Mapping[str, Record]:
        return await self.api.arun(self.find_created_op(idempotency_keys))
