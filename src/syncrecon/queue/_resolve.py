"""Resolving an item: what a resolution reports, and the engine behind
:meth:`OperatorQueue.resolve` (and its preview).

:func:`resolve` checks the choice, acknowledges a record-level item (lifting a schema-drift
quarantine after checking the schema again), and for a field item takes the item's lease and
hands it to :class:`_Resolve`, which reads both records again, writes the chosen value where
needed and commits the base, the item and the echo ledger in one step. :func:`plan` works out
the same decisions from the values the item recorded, writing nothing.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from .._connector import Caller, describe
from .._drift import SCHEMA_DRIFT_CATEGORY, classify, merges_as_list, misfit
from .._drift import describe as describe_field
from .._exceptions import ConfigurationError, LeaseHeldError, QueueError
from .._models import Side
from .._policy import values_equal
from .._sync import FieldMap, SyncDefinition
from .._write_path import Applied, PlannedWrite, apply_writes, holds, record_name
from ..storage._base import (
    BaseUpdate,
    Counter,
    Discrepancy,
    Echo,
    FieldSchema,
    ItemUpdate,
    Status,
    Step,
)
from ._items import DEFAULT_STATUSES, active_item, is_record_level, operator_note
from ._views import plain, shown

if TYPE_CHECKING:
    from ._api import OperatorQueue

Take = Literal["left", "right"]

UNSET: Final[Any] = object()
"""The default of ``value``: no value given (``None`` is a value)."""

_LEASE_TTL: Final = timedelta(minutes=10)


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
    REFUSED = "refused"
    """Nothing was done to this item of a bulk action: it could not be done as asked (the
    message says why: closed already, a value for a record-level item, a one-way field, a
    quarantine, a missing sync definition, someone else resolving it)."""
    DISMISSED = "dismissed"
    """The item was closed without a change (a bulk dismissal)."""
    ASSIGNED = "assigned"
    """The item was assigned (or unassigned); its status is unchanged (a bulk assignment)."""


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
        """Whether the item is closed now (by this action)."""
        return self.outcome in (
            ResolutionOutcome.RESOLVED,
            ResolutionOutcome.ACKNOWLEDGED,
            ResolutionOutcome.DISMISSED,
        )

    @property
    def ok(self) -> bool:
        """Whether the action was done as asked (not ``changed``, ``failed`` or ``refused``)."""
        return self.outcome not in (
            ResolutionOutcome.CHANGED,
            ResolutionOutcome.FAILED,
            ResolutionOutcome.REFUSED,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (values in the tagged form of :func:`item_data`)."""
        return {
            "item_id": self.item_id,
            "outcome": self.outcome.value,
            "status": self.status.value,
            "value": plain(self.value),
            "written": [s.value for s in self.written],
            "message": self.message,
        }

    def __str__(self) -> str:
        return f"item {self.item_id}: {self.outcome.value} ({self.status.value}). {self.message}"


def resolve(
    queue: OperatorQueue,
    caller: Caller,
    item_id: int,
    *,
    take: Take | None,
    value: Any,
    by: str | None,
    note: str | None,
    confirm: bool = False,
) -> Resolution:
    """Resolve ``item_id`` for ``queue``, calling connectors through ``caller``; see
    :meth:`OperatorQueue.resolve` (``value`` is :data:`UNSET` when not given)."""
    item = active_item(queue.storage, item_id)
    by = (by or "").strip() or None
    if is_record_level(item):
        if take is not None or value is not UNSET:
            raise QueueError(
                f"item {item_id} is about a whole record or field ({item.category or 'no'}"
                " category): it is acknowledged without a value (no take, no value)"
            )
        if item.category == SCHEMA_DRIFT_CATEGORY:
            return _lift_quarantine(queue, caller, item, by, note, confirm=confirm)
        counters = queue._taken(caller, item, take=None, value=UNSET)
        return _acknowledge(queue, item, by, note, counters=counters)
    check_choice(take, value)
    sync, fm = _definition(queue, item)
    if not item.left_key or not item.right_key:
        raise QueueError(f"item {item_id} names no linked pair of records")
    left_key, right_key = item.left_key, item.right_key
    drift = quarantine(queue, item)
    if drift is not None:
        raise QueueError(
            f"the field {item.field!r} is quarantined by schema drift (item {drift.id}):"
            " no value is written to it until the mapping is fixed and that item resolved"
        )
    counters = queue._taken(caller, item, take=take, value=value)
    lease = f"queue-item:{item_id}"
    owner = f"{queue.owner}:{uuid.uuid4().hex[:8]}"
    if not queue.storage.acquire_lease(lease, owner, _LEASE_TTL, queue.clock.now()):
        raise LeaseHeldError(f"item {item_id} is being resolved by someone else right now")
    try:
        # Read again under the lease: a resolution that finished meanwhile wins, and a
        # cycle may have recorded newer values on the item.
        item = active_item(queue.storage, item_id)
        systems = queue.systems(item.sync)
        if take is None:
            chosen, action = value, f"set the value {shown(value, 80)}"
        else:
            side = Side(take)
            chosen = item.left_value if side is Side.LEFT else item.right_value
            action = f"took {took(systems, side)} {shown(chosen, 80)}"
        # Both records are claimed as a fast-loop worker or a cycle claims them, so no other
        # writer writes them between the re-read and this write.
        records = [
            record_name(item.sync, Side.LEFT, left_key),
            record_name(item.sync, Side.RIGHT, right_key),
        ]
        granted = queue.storage.claim_records(
            owner, records, now=queue.clock.now(), lease=_LEASE_TTL
        )
        try:
            if set(records) - granted:
                raise LeaseHeldError(
                    f"item {item_id}'s records are being written by a worker or a cycle right"
                    " now; try again in a moment",
                    name=lease,
                )
            return _Resolve(queue, caller, sync, fm, item, chosen, counters, systems).run(
                action, by, note
            )
        finally:
            queue.storage.release_records(owner, sorted(granted))
    finally:
        queue.storage.release_lease(lease, owner)


def side_name(systems: Mapping[Side, str], side: Side) -> str:
    """``side``'s system as a message names it: its name, or ``left``/``right`` when the
    queue does not know it (two systems of one name are told apart)."""
    name = systems.get(side) or str(side)
    other = systems.get(side.other) or str(side.other)
    return f"{name} ({side})" if name == other else name


def took(systems: Mapping[Side, str], side: Side) -> str:
    """``hubspot's value``, or ``the left value`` when the system's name is not known."""
    name = side_name(systems, side)
    return f"the {side} value" if name == str(side) else f"{name}'s value"


def check_choice(take: str | None, value: Any) -> None:
    """Refuse anything but exactly one of ``take`` (``"left"``/``"right"``) and ``value``."""
    if (take is None) == (value is UNSET):
        raise QueueError("resolve a field item with exactly one of take='left'/'right' or value")
    if take is not None and take not in ("left", "right"):
        raise QueueError(f"take must be 'left' or 'right', got {take!r}")


def _definition(queue: OperatorQueue, item: Discrepancy) -> tuple[SyncDefinition, FieldMap]:
    """The sync definition of ``item`` and its field's mapping (``ConfigurationError`` when
    the queue does not have them)."""
    sync = queue.syncs.get(item.sync)
    if sync is None:
        raise ConfigurationError(
            f"resolving item {item.id} writes to the systems of sync {item.sync!r}, so it"
            " needs that sync definition (OperatorQueue(storage, [sync]), or --app on the"
            " command line); reading the queue needs only the database"
        )
    try:
        fm = sync.field(item.field)
    except KeyError:
        raise ConfigurationError(
            f"sync {item.sync!r} no longer maps the field {item.field!r}"
        ) from None
    return sync, fm


def quarantine(queue: OperatorQueue, item: Discrepancy) -> Discrepancy | None:
    """The active ``schema_drift`` item that stops writes to ``item``'s field, if any."""
    drift = [
        d
        for d in queue.storage.list_items(
            sync=item.sync,
            statuses=DEFAULT_STATUSES,
            category=SCHEMA_DRIFT_CATEGORY,
            field=item.field,
        )
        if is_record_level(d)
    ]
    return drift[0] if drift else None


def planned_writes(
    fm: FieldMap,
    chosen: Any,
    held: Callable[[Side], bool],
    systems: Mapping[Side, str] | None = None,
) -> dict[Side, Any]:
    """What resolving a field of mapping ``fm`` to ``chosen`` (left vocabulary) writes: by
    side, the value as that side stores it, for each side that does not hold it (``held``).
    ``systems`` names the systems in the messages.

    :raises QueueError: when a write would go against the field's direction, or the value
        does not map to the right system.
    """
    names = systems or {}
    writes: dict[Side, Any] = {}
    for side in Side:
        if held(side):
            continue
        if not fm.direction.allows_write(side):
            raise QueueError(
                f"the field {fm.left!r} flows {fm.direction.value} only: taking"
                f" {shown(chosen, 80)} would write it to {side_name(names, side)}, which it"
                " never flows to; dismiss the item instead, or choose the value that side holds"
            )
        if side is Side.LEFT:
            writes[side] = chosen
        else:
            try:
                writes[side] = fm.transform.to_right(chosen)
            except Exception as exc:
                raise QueueError(
                    f"the value {shown(chosen, 80)} does not map to"
                    f" {side_name(names, side)}'s vocabulary: {type(exc).__name__}: {exc}"
                ) from None
    return writes


def _acknowledge(
    queue: OperatorQueue,
    item: Discrepancy,
    by: str | None,
    note: str | None,
    *,
    what: str = "acknowledged",
    counters: Sequence[Counter] = (),
    schemas: Sequence[FieldSchema] = (),
) -> Resolution:
    """Close a record-level item as resolved; nothing is written."""
    assert item.id is not None
    now = queue.clock.now()
    queue.storage.commit(
        Step(
            at=now,
            item_updates=[
                ItemUpdate(
                    id=item.id,
                    status=Status.RESOLVED,
                    resolved_at=now,
                    note=operator_note(what, by, note),
                    assignee=by,
                )
            ],
            counters=list(counters),
            schemas=list(schemas),
        )
    )
    return Resolution(
        item_id=item.id,
        outcome=ResolutionOutcome.ACKNOWLEDGED,
        status=Status.RESOLVED,
        message=f"{what}; nothing was written",
    )


# Field types of a multi-select and of a single-select (as connectors describe them; see
# ``syncrecon._drift``): a multi-select needs a mapping that carries lists, and a single
# select one that does not merge them.
_MULTI_TYPES: Final = frozenset(
    {"multi_enumeration", "multipicklist", "multi_select", "checkboxes"}
)
_SINGLE_TYPES: Final = frozenset({"enumeration", "picklist", "select", "single_select", "radio"})

_SAMPLE_LINKS: Final = 500
"""How many links' agreed values (the first, by left key) a lift checks the mapping with."""
_SAMPLE_VALUES: Final = 200
"""At most this many distinct values are checked."""


def _lift_quarantine(
    queue: OperatorQueue,
    caller: Caller,
    item: Discrepancy,
    by: str | None,
    note: str | None,
    *,
    confirm: bool,
) -> Resolution:
    """Resolve a ``schema_drift`` item: check that the field matches its mapping now (the
    connectors describe it again), then close the item and keep the descriptions checked.

    The field is checked as a cycle checks it: the schema-drift check
    (:func:`syncrecon._drift.classify`) against the description stored last, with the mapping
    the queue has now, and the value check (:func:`syncrecon._drift.misfit`) of the values the
    systems agreed on (and those the field's open items hold), as the mapping gives them to
    each side, against the field's current description. Anything either would flag keeps the
    quarantine (``QueueError``); nothing is stored then.
    """
    field = item.field
    if by is None or not confirm:
        raise QueueError(
            f"resolving item {item.id} lifts the schema-drift quarantine of the field"
            f" {field!r}, so syncrecon writes that field again: do it once the mapping (or"
            " the field) is fixed, saying who decides (by=...) and confirming it"
            " (confirm=True; --by and --confirm on the command line)"
        )
    sync = queue.syncs.get(item.sync)
    if sync is None:
        raise ConfigurationError(
            f"lifting the quarantine of {item.sync!r}.{field} checks the systems' field"
            f" descriptions first, so it needs the sync definition of {item.sync!r}"
            " (OperatorQueue(storage, [sync]), or --app on the command line)"
        )
    try:
        fm = sync.field(field)
    except KeyError:
        what = (
            "acknowledged: the field is no longer mapped, the quarantine is lifted"
            " (nothing to check)"
        )
        return _acknowledge(queue, item, by, note, what=what)
    stored = {(s.side, s.field): s.info for s in queue.storage.get_schemas(sync.name)}
    samples: list[Any] | None = None
    checked: list[str] = []
    problems: list[str] = []
    schemas: list[FieldSchema] = []
    for side in Side:
        connector = sync.connector(side)
        name = fm.left if side is Side.LEFT else fm.right
        label = f"{side} field {name!r} ({connector.name})"
        if not connector.capabilities.describes_fields:
            checked.append(f"{label}: not described by its connector")
            continue
        try:
            described = {i.name: i for i in describe(caller, connector)}
        except Exception as exc:
            raise QueueError(
                f"the schema could not be checked again: {connector.name}.describe_fields"
                f" failed ({type(exc).__name__}: {exc}); the quarantine of {field!r} stays"
            ) from None
        info = described.get(name)
        if info is None:
            problems.append(f"{label} is still missing (deleted or renamed)")
            continue
        fingerprint, data = describe_field(info)
        schemas.append(
            FieldSchema(sync=sync.name, side=side, field=name, fingerprint=fingerprint, info=data)
        )
        if samples is None:
            samples = _synced_values(queue, sync.name, fm.left)
        found: list[str] = []
        kind = str(data.get("type") or "").lower()
        lists = merges_as_list(fm)
        unfit, fitted, as_lists = _misfit(fm, side, name, data, samples, lists)
        if kind in _MULTI_TYPES and not lists and not (fitted and as_lists):
            found.append(f"{label} is a multi-select ({kind!r}), the mapping takes one value")
        elif kind in _SINGLE_TYPES and lists:
            found.append(f"{label} takes one value ({kind!r}), the mapping merges lists")
        needed = fm.transform.left_values if side is Side.LEFT else fm.transform.right_values
        options = data.get("options")
        missing = (
            []
            if needed is None or options is None
            else sorted(set(needed) - set(options), key=repr)
        )
        if missing:
            found.append(f"{label} lacks options the value map needs: {missing}")
        if unfit is not None:
            found.append(f"{label} does not take the values the mapping gives it: {unfit}")
        # The cycle's own schema-drift check, against the description stored last. Only a
        # type change can be left to flag (a missing field or option is found above): it
        # stands unless the values the systems agreed on, as the mapping now gives them to
        # this side, fit the new type.
        change = classify(fm, side, stored.get((side, name)), data)
        if change is not None and change.breaking and not found and not fitted:
            found.append(
                change.description.replace(f"{side} field {name!r}", label, 1)
                + ", and there are no synced values to check the mapping with"
            )
        problems += found
        part = f"{label}: present, type {kind or 'unknown'!r}"
        if needed is not None and options is not None:
            part += f", has the {len(needed)} options the value map needs"
        if fitted:
            part += f", takes the {_count(fitted, 'synced value')} as mapped"
        checked.append(part)
    if problems:
        raise QueueError(
            f"the field {field!r} still does not match its mapping: {'; '.join(problems)}."
            " The quarantine stays: fix the mapping (or the field), then resolve the item again"
        )
    what = "acknowledged: the mapping is fixed, the quarantine is lifted; checked " + "; ".join(
        checked
    )
    return _acknowledge(queue, item, by, note, what=what, schemas=schemas)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _synced_values(queue: OperatorQueue, sync: str, field: str) -> list[Any]:
    """Distinct non-blank values of ``field`` (left vocabulary) that a lift checks the mapping
    with: what the systems last agreed on (the bases of the first links) and what the field's
    open items hold (the values held back)."""
    values: dict[str, Any] = {}

    def add(value: Any) -> None:
        if value is not None and len(values) < _SAMPLE_VALUES:
            values.setdefault(f"{type(value).__name__}:{shown(value)}", value)

    batches = queue.storage.iter_links(sync, batch=_SAMPLE_LINKS)
    try:
        for link in next(batches, []):
            add(link.base.get(field))
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    for held in queue.storage.list_items(
        sync=sync, statuses=DEFAULT_STATUSES, field=field, limit=_SAMPLE_VALUES
    ):
        if not is_record_level(held):
            add(held.left_value)
            add(held.right_value)
    return list(values.values())


def _misfit(
    fm: FieldMap,
    side: Side,
    name: str,
    info: Mapping[str, Any],
    values: Sequence[Any],
    lists: bool,
) -> tuple[str | None, int, bool]:
    """(why the first of ``values`` that does not fit ``side``'s field does not, as the
    mapping gives it to that side and as a cycle checks a value it reads; how many fit;
    whether the mapping gave that side a list each time).

    Only the field's type is checked: a value map's options are checked on their own, and a
    value that holds an option the field no longer has is a matter of that one record.
    """
    kind = {**info, "options": None}
    fitted = 0
    as_lists = True
    for value in values:
        try:
            raw = value if side is Side.LEFT else fm.transform.to_right(value)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            return f"the synced value {shown(value, 40)} does not map to it ({why})", fitted, False
        problem = misfit(fm, name, raw, kind, expects_list=lists)
        if problem is not None:
            same = side is Side.LEFT or values_equal(raw, value)
            mapped = "" if same else f", mapped to {shown(raw, 40)}"
            return f"{problem} (the synced value {shown(value, 40)}{mapped})", fitted, False
        fitted += 1
        as_lists = as_lists and isinstance(raw, list | tuple)
    return None, fitted, as_lists


@attrs.frozen(kw_only=True)
class PlannedResolution:
    """What resolving one item would do (:meth:`OperatorQueue.preview`); nothing is written.

    ``value`` is the chosen value (left vocabulary) and ``writes`` what would be written: by
    side, the value as that side stores it (a side that holds the value already is not
    written). ``acknowledge`` says a record-level item would be closed without a value.
    ``reason`` says why the item cannot be resolved this way (then nothing would be done to
    it); it is ``None`` when it can. The preview works from the values the item recorded: a
    resolution still reads both records again first.
    """

    item_id: int
    field: str
    value: Any = None
    writes: Mapping[Side, Any] = attrs.field(factory=dict)
    acknowledge: bool = False
    reason: str | None = None
    systems: Mapping[Side, str] = attrs.field(factory=dict, eq=False, repr=False)
    """The systems' names, for the text (``left`` and ``right`` when not known)."""

    @property
    def ok(self) -> bool:
        """Whether the item can be resolved this way."""
        return self.reason is None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (values in the tagged form of :func:`item_data`)."""
        return {
            "item_id": self.item_id,
            "field": self.field,
            "value": plain(self.value),
            "writes": {str(side): plain(v) for side, v in self.writes.items()},
            "acknowledge": self.acknowledge,
            "reason": self.reason,
        }

    def __str__(self) -> str:
        head = f"item {self.item_id} ({self.field}): "
        if self.reason is not None:
            return head + f"cannot be resolved this way: {self.reason}"
        if self.acknowledge:
            return head + "acknowledge; nothing is written"
        if not self.writes:
            return head + f"set {shown(self.value, 60)}; both systems hold it, nothing is written"
        where = " and ".join(
            f"{shown(v, 60)} to {side_name(self.systems, side)}" for side, v in self.writes.items()
        )
        return head + f"set {shown(self.value, 60)}; write {where}"


def plan(
    queue: OperatorQueue, item: Discrepancy, *, take: Take | None, value: Any
) -> PlannedResolution:
    """What :func:`resolve` would do to ``item`` with this choice, from the recorded values."""
    assert item.id is not None

    def refused(reason: str) -> PlannedResolution:
        return PlannedResolution(item_id=item.id or 0, field=item.field, reason=reason)

    if not item.status.is_active:
        return refused(f"the item is {item.status.value} already")
    if is_record_level(item):
        if take is not None or value is not UNSET:
            return refused(
                f"the item is about a whole record or field ({item.category or 'no'}"
                " category): it is acknowledged without a value"
            )
        if item.category == SCHEMA_DRIFT_CATEGORY:
            return refused(
                "resolving it lifts a schema-drift quarantine: resolve it on its own, with"
                " by=... and confirm=True, once the mapping is fixed"
            )
        return PlannedResolution(item_id=item.id, field=item.field, acknowledge=True)
    if take is None and value is UNSET:
        return refused("a field item is resolved with take='left'/'right' or a value")
    try:
        _sync, fm = _definition(queue, item)
    except ConfigurationError as exc:
        return refused(str(exc))
    if not item.left_key or not item.right_key:
        return refused("the item names no linked pair of records")
    drift = quarantine(queue, item)
    if drift is not None:
        return refused(f"the field {item.field!r} is quarantined by schema drift (item {drift.id})")
    chosen = value if take is None else item.left_value if take == "left" else item.right_value
    recorded = {Side.LEFT: item.left_value, Side.RIGHT: item.right_value}
    systems = queue.systems(item.sync)
    try:
        writes = planned_writes(
            fm, chosen, lambda side: values_equal(recorded[side], chosen), systems
        )
    except QueueError as exc:
        return refused(str(exc))
    return PlannedResolution(
        item_id=item.id, field=item.field, value=chosen, writes=writes, systems=systems
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
        counters: Sequence[Counter] = (),
        systems: Mapping[Side, str] | None = None,
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
        self.counters = list(counters)
        self.systems: Mapping[Side, str] = systems or {}

    def _system(self, side: Side) -> str:
        return side_name(self.systems, side)

    def run(self, action: str, by: str | None, note: str | None) -> Resolution:
        item = self.item
        recorded = {Side.LEFT: item.left_value, Side.RIGHT: item.right_value}
        at: list[datetime] = []

        def now() -> datetime:  # read once, when first needed (as a resolution always did)
            if not at:
                at.append(self.q.clock.now())
            return at[0]

        def remember(echoes: list[Echo]) -> None:
            # Remembered before writing: the webhook a write causes may arrive before its
            # answer. The operator's decision is the edit the written value copies: its time
            # is now.
            self.q.storage.commit(Step(at=now(), echoes=echoes))

        # Both records read again: each must still hold what the item recorded, or the chosen
        # value already (then it is not written). Nothing is written unless both are as
        # recorded, and a failed write stops the other.
        outcomes = apply_writes(
            self.caller,
            self.sync,
            [self._planned(side, recorded[side]) for side in Side],
            now=now,
            echo_ttl=self.q.echo_ttl,
            remember=remember,
            all_or_nothing=True,
            stop_at_failure=True,
        )
        for o in outcomes:
            if o.kind is Applied.READ_FAILED and o.exc is not None:
                system = self._system(o.read_side or o.planned.side)
                return self._failed(f"reading {system} failed: {type(o.exc).__name__}: {o.exc}", ())
        changes: list[str] = []
        for o in outcomes:
            side = o.planned.side
            if o.kind is not Applied.CHANGED:
                continue
            if o.target_gone or o.current is None:
                changes.append(f"the {self._system(side)} record {self.keys[side]} is gone")
                continue
            raw = o.current.fields.get(self._name(side))
            changes.append(
                f"{self._system(side)} is now {shown(raw, 80)} (was {shown(recorded[side], 80)})"
            )
        if changes:
            return self._back_to_review("changed since opened: " + "; ".join(changes))
        for o in outcomes:
            if o.kind is Applied.REFUSED:
                raise QueueError(o.planned.refused)

        step = Step(at=now())
        written: list[Side] = []
        for o in outcomes:
            if o.kind is Applied.FAILED:
                side = o.planned.side
                kind = "retryable" if o.retryable else "rejected"
                return self._failed(
                    f"writing {self._system(side)} failed: {kind}: {o.error or 'no reason given'}",
                    tuple(written),
                    step,
                )
            if o.kind is Applied.WRITTEN:
                written.append(o.planned.side)
        # The order guard learns the agreed state: a webhook of an older edit is stale.
        step.field_times.append((self.sync.name, self.keys[Side.LEFT], self.fm.left, now()))
        step.bases.append(
            BaseUpdate(
                sync=self.sync.name,
                left_key=self.keys[Side.LEFT],
                values={self.fm.left: self.chosen},
            )
        )
        where = (
            " and ".join(self._system(s) for s in written)
            if written
            else "neither system (both held it)"
        )
        step.item_updates.append(
            ItemUpdate(
                id=self.id,
                status=Status.RESOLVED,
                resolution=self.chosen,
                resolved_at=now(),
                note=operator_note(f"{action}, written to {where}", by, note),
                assignee=by,
            )
        )
        step.counters.extend(self.counters)
        self.q.storage.commit(step)
        return Resolution(
            item_id=self.id,
            outcome=ResolutionOutcome.RESOLVED,
            status=Status.RESOLVED,
            value=self.chosen,
            written=tuple(written),
            message=f"{action}; written to {where}; the base is updated",
        )

    def _planned(self, side: Side, recorded: Any) -> PlannedWrite:
        """The chosen value to ``side``: fine while the side holds what the item recorded,
        not written where it holds the chosen value already; refused where the field never
        flows to ``side`` or the value does not map to it (unless it holds the value)."""
        name = self._name(side)
        value: Any = None
        refused: str | None = None
        try:
            value = planned_writes(self.fm, self.chosen, lambda s: s is not side, self.systems)[
                side
            ]
        except QueueError as exc:
            refused = str(exc)
        return PlannedWrite(
            side=side,
            key=self.keys[side],
            fields={name: value},
            held=lambda record: self._holds(side, record.fields.get(name), self.chosen),
            unchanged=lambda record: self._holds(side, record.fields.get(name), recorded),
            refused=refused,
            source_times=None,  # the operator's decision is the edit: its time is the write's
            ref=f"queue-{self.id}-{side}",
        )

    def _name(self, side: Side) -> str:
        return self.fm.left if side is Side.LEFT else self.fm.right

    def _holds(self, side: Side, raw: Any, value: Any) -> bool:
        """Whether ``raw`` (a value as ``side`` stores it) is ``value`` (left vocabulary)."""
        return holds(self.fm, side, raw, value)

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
            why += f" (already written to {' and '.join(self._system(s) for s in written)})"
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
