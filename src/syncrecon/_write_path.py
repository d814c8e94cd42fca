"""The steps every writer shares: the cycle, the fast loop and the operator queue.

Whoever writes a value to a system does the same things around the write, in this order:
claim the records (one claim space, :func:`record_name`), make the write known in the echo
ledger before the webhook it causes can be processed (:func:`echo_entries`; the fast loop and
the queue commit the echoes before writing, the cycle commits them with the outcome while it
still holds the records' claims, so no worker takes that webhook before they are known), skip
a side that already holds the value (:func:`holds`), write, and commit the outcome with the
base in one step. These helpers are that shared vocabulary, and :func:`apply_writes` is the
one apply path the cycle, the fast loop and the queue take for a batch of planned writes
(re-read, compare, remember the echoes when asked, write, outcomes); each writer keeps its own
planning, its own batching and its own commit of the outcomes. The outbox's retries
(:mod:`syncrecon.webhooks._outbox`) still re-read and write on their own.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from ._codec import fingerprint
from ._connector import Caller, read_batch, write_batch_or_failures
from ._models import Change, ChangeOp, Record, Side
from ._policy import values_equal
from ._sync import FieldMap, SyncDefinition
from .storage._base import Echo

__all__ = [
    "Applied",
    "PlannedWrite",
    "WriteOutcome",
    "apply_writes",
    "echo_entries",
    "holds",
    "record_name",
]


def record_name(sync: str, side: Side, key: str) -> str:
    """A record's name in the claim space shared by fast-loop workers and cycles
    (:attr:`~syncrecon.storage.InboxEntry.record`)."""
    return f"{sync}:{Side(side).value}:{key}"


def echo_entries(
    sync: str,
    side: Side,
    key: str,
    fields: Mapping[str, Any],
    *,
    now: datetime,
    ttl: timedelta,
    source_times: Mapping[str, datetime | None] | None = None,
) -> list[Echo]:
    """Echo-ledger entries for writing ``fields`` (the target's names and values) to ``key``.

    Each entry keeps the time of the edit its value copies (``source_times``, by target field),
    so a later read of the target is timed by that edit, not by the write. None when echoes
    are switched off (``ttl`` of zero).
    """
    if ttl <= timedelta(0):
        return []
    times = source_times or {}
    return [
        Echo(
            sync=sync,
            side=side,
            key=key,
            field=name,
            fingerprint=fingerprint(value),
            expires_at=now + ttl,
            source_time=times.get(name),
        )
        for name, value in fields.items()
    ]


def holds(fm: FieldMap, side: Side, raw: Any, value: Any) -> bool:
    """Whether ``raw``, a value of field ``fm`` as ``side`` stores it, already is ``value``
    (in the left vocabulary): on the right, either way through the field's transform."""
    if side is Side.LEFT:
        return values_equal(raw, value)
    try:
        if values_equal(fm.transform.to_left(raw), value):
            return True
    except Exception:  # a value the transform does not take: compare the other way
        pass
    try:
        return values_equal(raw, fm.transform.to_right(value))
    except Exception:  # nor that way: not held
        return False


# The one apply path ----------------------------------------------------------------------------


class Applied(enum.StrEnum):
    """What became of one :class:`PlannedWrite` (:attr:`WriteOutcome.kind`)."""

    WRITTEN = "written"
    """The write was made and the system accepted it."""
    HELD = "held"
    """The target already holds the value: nothing to write."""
    CHANGED = "changed"
    """The target changed (or vanished) since the write was decided: never written over."""
    SOURCE_MOVED = "source_moved"
    """The source record the value was decided from moved on (or vanished): the value is old."""
    REFUSED = "refused"
    """The write may not be made (:attr:`PlannedWrite.refused`) and the target lacks the value."""
    NOT_WRITTEN = "not_written"
    """Fine to write, but not written: another write of the batch was not (``all_or_nothing``,
    ``stop_at_failure``)."""
    FAILED = "failed"
    """The write call failed or the system refused the change (``error``, ``retryable``)."""
    READ_FAILED = "read_failed"
    """Re-reading the target (or the source, ``at_source``) failed: nothing was written."""


@attrs.frozen
class PlannedWrite:
    """One write a caller decided: ``fields`` (the target's names and values) to ``key`` of
    ``side``; with what the target must still hold (``expected``, compared with
    :func:`~syncrecon._policy.values_equal`, or the ``unchanged`` test of the re-read record),
    the times of the edits the values copy (``source_times``, for the echo ledger) and,
    to verify the source, its key and the test that it still holds what was decided from."""

    side: Side
    key: str
    fields: Mapping[str, Any] = attrs.field(factory=dict)
    op: ChangeOp = ChangeOp.UPDATE
    expected: Mapping[str, Any] = attrs.field(factory=dict)
    unchanged: Callable[[Record], bool] | None = None
    """Overrides ``expected``: whether the re-read target still is as it was when decided."""
    held: Callable[[Record], bool] | None = None
    """Whether the re-read target already holds the value (then not written); unchecked
    when ``None``."""
    refused: str | None = None
    """Why this write may not be made: fine when the target already holds the value
    (``held``), :attr:`Applied.REFUSED` otherwise."""
    source_times: Mapping[str, datetime | None] | None = attrs.field(factory=dict)
    """The time of the edit each value copies, by target field; ``None`` when the decision
    to write is that edit (an operator's): its time is the write's."""
    source_key: str | None = None
    source_holds: Callable[[Record], bool] | None = None
    """With ``source_key``: whether the re-read source still holds what the write copies."""
    ref: str = ""

    def still_expected(self, current: Record) -> bool:
        if self.unchanged is not None:
            return self.unchanged(current)
        return all(values_equal(current.fields.get(f), v) for f, v in self.expected.items())

    def echoes(self, sync: str, *, now: datetime, ttl: timedelta) -> list[Echo]:
        """The echo-ledger entries of this write (none for a delete)."""
        if self.op is ChangeOp.DELETE:
            return []
        times = self.source_times
        if times is None:
            times = dict.fromkeys(self.fields, now)
        return echo_entries(
            sync, self.side, self.key, self.fields, now=now, ttl=ttl, source_times=times
        )


@attrs.frozen
class WriteOutcome:
    """What became of one planned write; ``current`` and ``source`` are the records as
    re-read (``None`` when absent or not read)."""

    planned: PlannedWrite
    kind: Applied
    current: Record | None = None
    source: Record | None = None
    error: str | None = None
    retryable: bool = False
    exc: Exception | None = None
    """What a failed re-read raised (:attr:`Applied.READ_FAILED`)."""
    at_source: bool = False
    """Whether the failed re-read was the source's."""
    read_side: Side | None = None
    """The side whose re-read failed."""

    @property
    def target_gone(self) -> bool:
        return self.current is None or self.current.deleted

    @property
    def source_gone(self) -> bool:
        return self.source is None or self.source.deleted


def apply_writes(
    caller: Caller,
    sync: SyncDefinition,
    planned: Sequence[PlannedWrite],
    *,
    now: Callable[[], datetime],
    echo_ttl: timedelta,
    remember: Callable[[list[Echo]], None] | None = None,
    sources_first: bool = False,
    all_or_nothing: bool = False,
    stop_at_failure: bool = False,
    checked: Callable[[list[WriteOutcome]], None] | None = None,
) -> list[WriteOutcome]:
    """The one apply path of the cycle, the fast loop and the operator queue.

    For one batch (the caller sizes it to the connectors' limits), in this order:

    1. Re-read the targets, one read per side, and the sources of the writes that name one,
       in the same round (after the targets; with ``sources_first`` before them, and then
       the targets of writes whose source moved on are not read). A read that raises leaves
       the writes not yet decided :attr:`Applied.READ_FAILED` (with the exception; no further
       read is made, nothing is written).
    2. Keep, per write, the first reason not to make it: its source moved on, its target
       vanished, already holds the value (``held``), changed since the write was decided
       (never written over), or may not be written (``refused``). With ``all_or_nothing``
       one such reason (but ``held``) leaves every write unmade. ``checked`` is then told the
       writes that will not be made, before any is.
    3. ``remember`` gets the echo-ledger entries of the writes about to be made (``now`` is
       read for them then, and only then), to commit them BEFORE the call: the webhook a
       write causes is known even if it arrives before the answer.
    4. Write: one :func:`~syncrecon._connector.write_batch_or_failures` per side, a target's
       writes in one change (after a failure, no further side with ``stop_at_failure``).

    Returns one outcome per planned write, in their order; the caller commits them.
    """
    outcome: dict[int, WriteOutcome] = {}
    targets: dict[tuple[Side, str], Record] = {}
    sources: dict[tuple[Side, str], Record] = {}

    def read_failed(exc: Exception, side: Side, *, at_source: bool) -> None:
        for i, p in enumerate(planned):
            if i not in outcome:
                outcome[i] = WriteOutcome(
                    p, Applied.READ_FAILED, exc=exc, at_source=at_source, read_side=side
                )

    def read_targets() -> bool:
        wanted: dict[Side, dict[str, None]] = {}  # keys in first-planned order, once each
        for i, p in enumerate(planned):
            if i not in outcome:
                wanted.setdefault(p.side, {})[p.key] = None
        for side, keys in wanted.items():
            if not keys:
                continue
            try:
                found = read_batch(caller, sync.connector(side), list(keys))
            except Exception as exc:  # the caller says what it means
                read_failed(exc, side, at_source=False)
                return False
            targets.update(((side, r.key), r) for r in found)
        for i, p in enumerate(planned):
            if i not in outcome:
                current = targets.get((p.side, p.key))
                if current is None or current.deleted:
                    outcome[i] = WriteOutcome(p, Applied.CHANGED, current=current)
        return True

    def read_sources() -> bool:
        wanted: dict[Side, set[str]] = {}
        for p in planned:  # the sources of every write, decided or not: one round of reads
            if p.source_key is not None and p.source_holds is not None:
                wanted.setdefault(p.side.other, set()).add(p.source_key)
        for side, key_set in wanted.items():
            connector = sync.connector(side)
            keys = sorted(key_set)
            size = connector.capabilities.max_read_batch
            try:
                for start in range(0, len(keys), size):
                    found = read_batch(caller, connector, keys[start : start + size])
                    sources.update(((side, r.key), r) for r in found)
            except Exception as exc:  # the caller says what it means
                read_failed(exc, side, at_source=True)
                return False
        for i, p in enumerate(planned):
            if i in outcome or p.source_key is None or p.source_holds is None:
                continue
            source = sources.get((p.side.other, p.source_key))
            if source is None or source.deleted or not p.source_holds(source):
                outcome[i] = WriteOutcome(
                    p,
                    Applied.SOURCE_MOVED,
                    current=targets.get((p.side, p.key)),
                    source=source,
                )
        return True

    steps = (read_sources, read_targets) if sources_first else (read_targets, read_sources)
    read = all(step() for step in steps)
    if read:
        for i, p in enumerate(planned):
            if i in outcome:
                continue
            current = targets[(p.side, p.key)]
            source = sources.get((p.side.other, p.source_key or ""))
            if p.held is not None and p.held(current):
                kind = Applied.HELD
            elif not p.still_expected(current):
                kind = Applied.CHANGED
            elif p.refused is not None:
                kind = Applied.REFUSED
            else:
                continue
            outcome[i] = WriteOutcome(p, kind, current=current, source=source)
    ready = [i for i in range(len(planned)) if i not in outcome]
    if all_or_nothing and len(ready) < len(planned):
        blocking = {Applied.CHANGED, Applied.SOURCE_MOVED, Applied.REFUSED, Applied.READ_FAILED}
        if any(o.kind in blocking for o in outcome.values()):
            for i in ready:
                outcome[i] = _not_written(planned[i], targets, sources)
            ready = []
    if read and checked is not None:
        checked([outcome[i] for i in sorted(outcome)])
    if not ready:
        return [outcome[i] for i in range(len(planned))]
    if remember is not None:
        at = now()
        echoes = [e for i in ready for e in planned[i].echoes(sync.name, now=at, ttl=echo_ttl)]
        if echoes:
            remember(echoes)
    by_side: dict[Side, dict[str, list[int]]] = {}
    for i in ready:
        by_side.setdefault(planned[i].side, {}).setdefault(planned[i].key, []).append(i)
    failed = False
    for side, by_key in by_side.items():
        if failed and stop_at_failure:
            for ids in by_key.values():
                for i in ids:
                    outcome[i] = _not_written(planned[i], targets, sources)
            continue
        changes = []
        for key, ids in by_key.items():
            first = planned[ids[0]]
            fields = {name: v for i in ids for name, v in planned[i].fields.items()}
            changes.append(Change(op=first.op, key=key, fields=fields, ref=first.ref or key))
        results = write_batch_or_failures(caller, sync.connector(side), changes)
        for ids, result in zip(by_key.values(), results, strict=True):
            failed = failed or not result.ok
            for i in ids:
                p = planned[i]
                outcome[i] = WriteOutcome(
                    p,
                    Applied.WRITTEN if result.ok else Applied.FAILED,
                    current=targets.get((p.side, p.key)),
                    source=sources.get((p.side.other, p.source_key or "")),
                    error=None if result.ok else result.error,
                    retryable=result.retryable,
                )
    return [outcome[i] for i in range(len(planned))]


def _not_written(
    p: PlannedWrite,
    targets: Mapping[tuple[Side, str], Record],
    sources: Mapping[tuple[Side, str], Record],
) -> WriteOutcome:
    return WriteOutcome(
        p,
        Applied.NOT_WRITTEN,
        current=targets.get((p.side, p.key)),
        source=sources.get((p.side.other, p.source_key or "")),
    )
