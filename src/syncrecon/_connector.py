"""The connector protocol, and how syncrecon calls connectors.

A connector is any object with a ``name``, ``capabilities`` and four methods. The methods
may be plain ``def`` or ``async def``; syncrecon accepts both, from both its sync and async
front doors. One method call is one API call: syncrecon counts them and retries the ones that
raise :class:`~syncrecon.TransientError`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

import anyio.from_thread
import attrs
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from ._exceptions import (
    ConfigurationError,
    ConnectorBugError,
    ConnectorError,
    InvalidRecordError,
    RateLimitedError,
    StorageError,
    SyncReconError,
    TransientError,
)
from ._metering import RequestMeter, metering
from ._models import Capabilities, Change, FieldInfo, Page, Record, WriteResult

__all__ = ["AsyncConnector", "Connector", "PartitionedConnector", "RetrySettings"]

T = TypeVar("T")

log = logging.getLogger("syncrecon.connector")


@runtime_checkable
class Connector(Protocol):
    """A system syncrecon reads and writes, with plain ``def`` methods.

    Implement it for your own system in a few lines; see :class:`AsyncConnector` for the same
    protocol with ``async def`` methods. Raise :class:`~syncrecon.TransientError` (or
    :class:`~syncrecon.RateLimitedError`) for failures worth retrying.

    Optional: ``find_created(idempotency_keys) -> Mapping[str, Record]``, the records this
    connector created with those :attr:`~syncrecon.Change.idempotency_key` values (kept in an
    external id or unique property); declare it with ``Capabilities(finds_created=True)``.
    """

    name: str
    capabilities: Capabilities

    def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        """One page of records, in a stable order.

        ``since`` asks only for records modified at or after that time (honour it only when
        ``capabilities.incremental`` is true; otherwise return everything). ``cursor`` is the
        ``next_cursor`` of the previous page, ``None`` for the first.
        """
        ...

    def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        """The records with these keys (at most ``capabilities.max_read_batch``).

        Keys that do not exist (or were deleted) are simply absent from the result.
        """
        ...

    def write_records(self, changes: Sequence[Change]) -> Sequence[WriteResult]:
        """Apply a batch of changes (at most ``capabilities.max_write_batch``).

        Return one :class:`WriteResult` per change, with the change's ``ref``: a rejected
        record must not fail or hide the rest of the batch.
        """
        ...

    def describe_fields(self) -> Sequence[FieldInfo]:
        """The fields of the object type: names, types and picklist options."""
        ...


@runtime_checkable
class AsyncConnector(Protocol):
    """:class:`Connector` with ``async def`` methods; the semantics are the same."""

    name: str
    capabilities: Capabilities

    async def list_records(self, *, since: datetime | None, cursor: str | None) -> Page:
        """See :meth:`Connector.list_records`."""
        ...

    async def read_records(self, keys: Sequence[str]) -> Sequence[Record]:
        """See :meth:`Connector.read_records`."""
        ...

    async def write_records(self, changes: Sequence[Change]) -> Sequence[WriteResult]:
        """See :meth:`Connector.write_records`."""
        ...

    async def describe_fields(self) -> Sequence[FieldInfo]:
        """See :meth:`Connector.describe_fields`."""
        ...


AnyConnector = Connector | AsyncConnector


@runtime_checkable
class PartitionedConnector(Protocol):
    """Optional methods of a connector that lists its records in parts, for sharded cycles
    (:meth:`Reconciler.run_cycle` with ``shards``): each shard lists one part.

    A partition is a string the connector makes up and reads back (an id range, say
    ``"1000:2000"``; Salesforce's PK chunking and HubSpot's search on ``hs_object_id`` both
    list by id range). The partitions of one call cover every record, each record in exactly
    one of them, including records created after the call (the last range is open-ended).
    ``list_partition`` and ``partitions`` may be ``async def``; ``partition_of`` is plain
    local code (no API call).

    A connector without these methods still shards: each shard lists everything and keeps the
    records whose key hashes to it. That splits syncrecon's own work, not the reading: every
    shard pays the whole listing's API calls.
    """

    def partitions(self, count: int) -> Sequence[str]:
        """At most ``count`` partitions (at least one) covering every record."""
        ...

    def list_partition(self, partition: str, *, since: datetime | None, cursor: str | None) -> Page:
        """One page of the records of ``partition``: see :meth:`Connector.list_records`."""
        ...

    def partition_of(self, key: str, partitions: Sequence[str]) -> int:
        """The index in ``partitions`` (as :meth:`partitions` returned them) of the partition
        that holds the record ``key``, whether or not it exists."""
        ...


def offers_partitions(connector: object) -> bool:
    """Whether ``connector`` lists its records by partition (see :class:`PartitionedConnector`)."""
    return all(
        callable(getattr(connector, name, None))
        for name in ("partitions", "list_partition", "partition_of")
    )


def list_partitions(caller: Caller, connector: AnyConnector, count: int) -> list[str]:
    """The connector's partitions for ``count`` shards, checked (one API call)."""
    method = getattr(connector, "partitions")  # noqa: B009 (an optional method)
    found = caller.call(connector.name, method, count)
    parts = list(found) if not isinstance(found, str | bytes) else []
    if not 1 <= len(parts) <= count or not all(isinstance(p, str) for p in parts):
        raise ConnectorBugError(
            f"{connector.name}.partitions({count}) must return 1 to {count} strings, got {found!r}",
            system=connector.name,
            method="partitions",
        )
    return parts


@attrs.frozen(kw_only=True)
class RetrySettings:
    """How connector calls are retried.

    Transient errors are retried up to ``attempts`` times in all, with exponential backoff and
    full jitter (``initial`` doubling up to ``maximum`` seconds). A
    :class:`~syncrecon.RateLimitedError` with ``retry_after`` waits exactly that long (capped at
    ``maximum``). Other errors are not retried. ``sleep`` is injectable so tests never wait.
    """

    attempts: int = 5
    initial: float = 0.5
    maximum: float = 60.0
    sleep: Callable[[float], object] = time.sleep
    rng: random.Random | None = None

    def wait(self, state: RetryCallState) -> float:
        """The seconds to wait before the next attempt (tenacity's ``wait`` hook)."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.maximum)
        if self.rng is not None:
            cap = min(self.maximum, self.initial * 2 ** (state.attempt_number - 1))
            return self.rng.uniform(0, cap)
        return float(wait_random_exponential(multiplier=self.initial, max=self.maximum)(state))


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _connector_loop() -> asyncio.AbstractEventLoop:
    """The process's event loop for async connector methods called from the sync door.

    It runs on a daemon thread for the life of the process (it never keeps it from exiting).
    """
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="syncrecon-async-connectors", daemon=True
            )
            thread.start()
            _loop = loop
        return _loop


class Caller:
    """Calls connector methods, sync or async, with retries and an API-call count.

    The reconciliation engine is plain blocking code. Under :meth:`Reconciler.arun_cycle` it
    runs in a worker thread and ``async def`` methods are sent back to the host's event loop;
    under the sync front door they run on one event loop thread the process keeps for them
    (the same loop for every call, so an ``httpx.AsyncClient`` keeps working across cycles),
    which also works inside a notebook whose loop is already running.
    """

    def __init__(self, retry: RetrySettings, *, in_worker_thread: bool = False) -> None:
        self._retry = retry
        self._in_worker_thread = in_worker_thread
        self._meter: RequestMeter | None = None
        #: Calls per system: one per method call, or, for a connector that counts its HTTP
        #: requests (``Capabilities.retries_requests``), the requests it sent.
        self.calls: dict[str, int] = {}
        #: HTTP requests per system and endpoint (connectors built on :mod:`syncrecon.http`).
        self.requests: dict[str, dict[str, int]] = {}
        #: CPU seconds (the whole process's) spent inside connector calls: what a cycle's own
        #: figures leave out to measure syncrecon rather than the systems it talks to.
        self.cpu_in_calls = 0.0

    def __enter__(self) -> Caller:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _run_async(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        meter = self._meter

        async def call() -> T:
            if meter is None:
                return await fn(*args, **kwargs)
            with metering(meter):  # the event loop's task has a context of its own
                return await fn(*args, **kwargs)

        if self._in_worker_thread:
            return anyio.from_thread.run(call)
        # The sync door runs async connector methods on one event loop per process, not one
        # per call: a host's httpx.AsyncClient keeps its pooled connections on the loop that
        # opened them, so every call of every cycle must come back to the same loop.
        future = asyncio.run_coroutine_threadsafe(call(), _connector_loop())
        result: T = future.result()
        return result

    def _once(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if inspect.iscoroutinefunction(fn):
            return self._run_async(fn, *args, **kwargs)
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            awaitable = result

            async def wrapped() -> Any:
                return await awaitable

            return self._run_async(wrapped)
        return result

    def _sleep(self, seconds: float) -> None:
        self._retry.sleep(seconds)

    def call(
        self,
        system: str,
        fn: Callable[..., Any],
        *args: Any,
        attempts: int | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``fn`` (a connector method of ``system``), retrying transient errors.

        ``attempts`` overrides the retry settings' number of tries (1: no retry, for a call
        that is not safe to repeat, such as a create without an idempotency guarantee).

        An exception that is not a :class:`~syncrecon.SyncReconError` (a ``TypeError`` in the
        connector, say) is a bug, not a network failure: it is raised at once as
        :class:`~syncrecon.ConnectorBugError` naming the system and method, never retried.
        """
        owner = getattr(fn, "__self__", None)
        caps = getattr(owner, "capabilities", None)
        counts_requests = bool(getattr(caps, "retries_requests", False))
        if counts_requests:
            attempts = 1  # the connector retries each request: never multiply its retries
        retrying = Retrying(
            stop=stop_after_attempt(attempts or self._retry.attempts),
            wait=self._retry.wait,
            retry=retry_if_exception_type(TransientError),
            sleep=self._sleep,
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                meter = RequestMeter()
                self._meter = meter
                began = time.process_time()
                try:
                    with metering(meter):
                        return self._once(fn, *args, **kwargs)
                except SyncReconError:
                    raise
                except Exception as exc:
                    method = getattr(fn, "__name__", "call")
                    raise ConnectorBugError(
                        f"{system}.{method} raised {type(exc).__name__}: {exc}"
                        " (a bug in the connector; not retried)",
                        system=system,
                        method=method,
                    ) from exc
                finally:
                    self._meter = None
                    self.cpu_in_calls += time.process_time() - began
                    self._count(system, meter, counts_requests)
        raise AssertionError("unreachable")  # pragma: no cover

    def _count(self, system: str, meter: RequestMeter, counts_requests: bool) -> None:
        if meter.counts:
            by_endpoint = self.requests.setdefault(system, {})
            for endpoint, n in meter.counts.items():
                by_endpoint[endpoint] = by_endpoint.get(endpoint, 0) + n
        n = meter.total if counts_requests else 1
        self.calls[system] = self.calls.get(system, 0) + n


def _problem(item: Any) -> str | None:
    """What is wrong with ``item`` as a record, or ``None`` when it is a valid one."""
    if not isinstance(item, Record):
        return f"expected a Record, got {type(item).__name__}"
    if not isinstance(item.key, str) or not item.key:
        return f"a Record with key {item.key!r} ({type(item.key).__name__}); keys are non-empty str"
    fields = item.fields
    # A dict (what Record makes of its fields) first: the ABC check costs more than the rest.
    if type(fields) is not dict and not isinstance(fields, Mapping):
        return f"record {item.key!r} has fields of type {type(fields).__name__}"
    return None


def checked_records(
    system: str, method: str, items: Iterable[Any], invalid: list[InvalidRecordError] | None
) -> list[Record]:
    """The valid records of ``items``; each invalid one becomes an :class:`InvalidRecordError`.

    With ``invalid=None`` the first invalid entry raises; otherwise the errors are appended to
    ``invalid`` and the rest goes on.
    """
    out: list[Record] = []
    for item in items:
        # The usual record, checked inline (this runs for every record listed or read).
        if (
            type(item) is Record
            and type(item.key) is str
            and item.key
            and type(item.fields) is dict
        ):
            out.append(item)
            continue
        problem = _problem(item)
        if problem is None:
            out.append(item)
            continue
        error = InvalidRecordError(
            f"{system}.{method} returned {problem}", system=system, item=item
        )
        if invalid is None:
            raise error
        log.warning("%s", error)
        invalid.append(error)
    return out


def list_page(
    caller: Caller,
    connector: AnyConnector,
    *,
    since: datetime | None,
    cursor: str | None,
    invalid: list[InvalidRecordError] | None = None,
) -> Page:
    """One listing call, type-checked (invalid records go to ``invalid``, see above)."""
    page = caller.call(connector.name, connector.list_records, since=since, cursor=cursor)
    if not isinstance(page, Page):
        raise InvalidRecordError(
            f"{connector.name}.list_records must return a Page, got {type(page).__name__}",
            system=connector.name,
        )
    records = checked_records(connector.name, "list_records", page.records, invalid)
    if len(records) != len(page.records):
        page = Page(records=records, next_cursor=page.next_cursor)
    return page


def list_partition_page(
    caller: Caller,
    connector: AnyConnector,
    partition: str,
    *,
    since: datetime | None,
    cursor: str | None,
    invalid: list[InvalidRecordError] | None = None,
) -> Page:
    """One listing call of one partition, type-checked like :func:`list_page`."""
    method = getattr(connector, "list_partition")  # noqa: B009 (an optional method)
    page = caller.call(connector.name, method, partition, since=since, cursor=cursor)
    if not isinstance(page, Page):
        raise InvalidRecordError(
            f"{connector.name}.list_partition must return a Page, got {type(page).__name__}",
            system=connector.name,
        )
    records = checked_records(connector.name, "list_partition", page.records, invalid)
    if len(records) != len(page.records):
        page = Page(records=records, next_cursor=page.next_cursor)
    return page


def read_batch(
    caller: Caller,
    connector: AnyConnector,
    keys: Sequence[str],
    invalid: list[InvalidRecordError] | None = None,
) -> list[Record]:
    """One batch read by key (invalid records go to ``invalid``, or raise without it)."""
    found = caller.call(connector.name, connector.read_records, list(keys))
    if found is None or isinstance(found, str | bytes | Record):
        raise InvalidRecordError(
            f"{connector.name}.read_records must return a sequence of Records,"
            f" got {type(found).__name__}",
            system=connector.name,
        )
    return checked_records(connector.name, "read_records", found, invalid)


def write_batch(
    caller: Caller,
    connector: AnyConnector,
    changes: Sequence[Change],
    *,
    attempts: int | None = None,
) -> list[WriteResult]:
    """One batch write; a missing result for a change counts as a retryable failure."""
    results = list(
        caller.call(connector.name, connector.write_records, list(changes), attempts=attempts)
    )
    by_ref = {r.ref: r for r in results}
    return [
        by_ref.get(c.ref)
        or WriteResult.failure(
            c, "the connector returned no result for this change", retryable=True
        )
        for c in changes
    ]


def find_created(
    caller: Caller, connector: AnyConnector, idempotency_keys: Sequence[str]
) -> dict[str, Record]:
    """The records ``connector`` created with these idempotency keys (``finds_created``)."""
    method = getattr(connector, "find_created", None)
    if method is None:
        raise ConfigurationError(
            f"{connector.name} declares finds_created but has no find_created() method"
        )
    found = caller.call(connector.name, method, list(idempotency_keys))
    return {
        str(k): r
        for k, r in dict(found).items()
        if k in idempotency_keys and _problem(r) is None and not r.deleted
    }


def write_batch_or_failures(
    caller: Caller, connector: AnyConnector, changes: Sequence[Change]
) -> list[WriteResult]:
    """:func:`write_batch`, with a batch that failed as a whole (after retries) turned into one
    failure per change: retryable for a transient error; otherwise permanent and logged with
    the keys it was writing (a connector's own bug with its traceback). Both loops use it."""
    try:
        return write_batch(caller, connector, changes)
    except (ConnectorError, StorageError) as exc:
        retryable = isinstance(exc, TransientError)
        if not retryable:
            log.error(
                "%s.write_records failed for %s: %s",
                connector.name,
                ", ".join(c.key or f"create {c.ref}" for c in changes[:10])
                + (" ..." if len(changes) > 10 else ""),
                exc,
                exc_info=isinstance(exc, ConnectorBugError),
            )
        return [
            WriteResult.failure(c, f"{type(exc).__name__}: {exc}", retryable=retryable)
            for c in changes
        ]


def describe(caller: Caller, connector: AnyConnector) -> list[FieldInfo]:
    """The connector's field descriptions."""
    return list(caller.call(connector.name, connector.describe_fields))
