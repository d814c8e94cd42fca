"""The storage protocol, its roles and the values it keeps.

Storage keeps what must survive a restart: the links between the two systems with the
last-synced base values, watermarks, the reconciliation queue, cycle reports, counters and
leases. Every method that changes state is one transaction: :meth:`Storage.commit` applies a
whole :class:`Step` or nothing. Record keys, field names and values are always bound as data.

:class:`Storage` is the union of one protocol per role (:class:`LeaseStore`,
:class:`LinkStore`, :class:`QueueStore`, :class:`FastLoopStore`, :class:`SchemaStore`,
:class:`MetricsStore`), each documenting the invariants of its concern; the decisions every
backend makes alike are pure functions in ``_rules``. Optional roles (:class:`ShardStore`,
:class:`BatchReadStore`) add what a storage may lack; syncrecon checks for them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal, NamedTuple, Protocol, runtime_checkable

import attrs

from .. import _codec
from .._clock import utc
from .._exceptions import LeaseLostError
from .._models import Side
from .._retention import Retention

__all__ = [
    "BaseUpdate",
    "BatchReadStore",
    "Counter",
    "CreateIntent",
    "CycleRecord",
    "Discrepancy",
    "Echo",
    "FastLoopStore",
    "FieldSchema",
    "InboxEntry",
    "ItemKey",
    "ItemOrder",
    "ItemUpdate",
    "LeaseStore",
    "Link",
    "LinkMark",
    "LinkStore",
    "MetricsStore",
    "OutboxEntry",
    "OutboxUpdate",
    "QueueStore",
    "SchemaStore",
    "SeenMark",
    "ShardPlan",
    "ShardResult",
    "ShardStore",
    "Status",
    "Step",
    "Storage",
    "SyncState",
]


def _utc(value: datetime) -> datetime:
    return utc(value)


def _opt_utc(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


@attrs.frozen(kw_only=True)
class Link:
    """One real-world record's keys in both systems, with its last-synced base values.

    ``base`` maps each synced field (its left name) to the last value both systems agreed on,
    in the left vocabulary. A field absent from ``base`` was never synced.
    """

    sync: str
    left_key: str
    right_key: str
    natural_key: str | None = None
    base: Mapping[str, Any] = attrs.field(factory=dict)
    created_at: datetime | None = attrs.field(default=None, converter=_opt_utc)

    def key(self, side: Side) -> str:
        """The record's key on ``side``."""
        return self.left_key if side is Side.LEFT else self.right_key


class LinkMark(NamedTuple):
    """What a cycle needs to know about a linked record before reading its base: its keys and
    the record's mark on one side (see :class:`SeenMark`); ``seen`` and ``digest`` are ``None``
    when the side has no valid mark (never marked, or the base moved since)."""

    left_key: str
    right_key: str
    natural_key: str | None
    seen: int | None
    digest: str | None


@attrs.frozen(kw_only=True)
class SeenMark:
    """A cycle's note that one side of a link held exactly its base.

    ``digest`` names the side's mapped values (a hash salted with the mapping, opaque to
    storage) and ``seen`` the record's modification time then (microseconds since the epoch;
    ``None`` when the system gave none). A later cycle that finds the same digest, or (between
    full sweeps) a modification time not after ``seen``, knows the record is unchanged without
    reading its base. Storage forgets a link's marks whenever its base is written, so a mark
    never outlives the base it was checked against: a mark with ``base`` (the base's canonical
    JSON text, as the cycle compared it) is applied only while the link's base is still that;
    one without (a refresh of ``seen``) only while the side's mark still has ``digest``.
    """

    sync: str
    side: Side = attrs.field(converter=Side)
    left_key: str
    seen: int | None
    digest: str
    base: str | None = None


class Status(enum.StrEnum):
    """Where a discrepancy stands in the reconciliation queue."""

    OPEN = "open"
    """Found; an automatic fix is planned or its write is pending."""
    AUTO_RESOLVED = "auto_resolved"
    """Fixed by the field's rule."""
    ESCALATED = "escalated"
    """Waiting for an operator."""
    RESOLVED = "resolved"
    """Closed by an operator's decision (or both systems converged by themselves)."""
    DISMISSED = "dismissed"
    """Closed by an operator without a change."""

    @property
    def is_active(self) -> bool:
        """Open or escalated: not closed yet."""
        return self in (Status.OPEN, Status.ESCALATED)


ItemKey = tuple[str, str, str, str]
"""(sync, left key or "", right key or "", field) that names one active queue item."""

RECORD_FIELD = "*"
"""The ``field`` of a discrepancy about a whole record (a duplicate, a deletion)."""


@attrs.frozen(kw_only=True)
class Discrepancy:
    """One item of the reconciliation queue.

    ``field`` is the field's left name, or ``"*"`` for a record-level item (a possible
    duplicate, a deletion that needs an operator). Values are in the left vocabulary.
    """

    sync: str
    field: str
    status: Status = attrs.field(converter=Status)
    detected_at: datetime = attrs.field(converter=_utc)
    left_key: str | None = None
    right_key: str | None = None
    left_value: Any = None
    right_value: Any = None
    base_value: Any = None
    has_base: bool = False
    rule: str | None = None
    category: str | None = None
    explanation: str = ""
    resolution: Any = None
    resolved_at: datetime | None = attrs.field(default=None, converter=_opt_utc)
    updated_at: datetime | None = attrs.field(default=None, converter=_opt_utc)
    cycle_id: str | None = None
    note: str | None = None
    assignee: str | None = None
    times_seen: int = 1
    id: int | None = None

    @property
    def item_key(self) -> ItemKey:
        """The key under which at most one active item exists."""
        return (self.sync, self.left_key or "", self.right_key or "", self.field)


ItemOrder = Literal["newest", "oldest"]
"""The order :meth:`QueueStore.list_items` returns items in: by ``detected_at`` (then ``id``),
newest or oldest first."""

ITEM_ORDERS: Final = ("newest", "oldest")

_SEARCH_VALUE_WIDTH: Final = 2000
"""How much of one value's display text an item's search text keeps."""


def display_text(value: Any) -> str:
    """A value as a person reads it (see :func:`syncrecon.queue.display_value`, which is this):
    what an item's search text holds of its values."""
    if value is None:
        return "(blank)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        moment = utc(value)
        text = moment.strftime("%Y-%m-%d %H:%M:%S")
        if moment.microsecond:
            text += f".{moment.microsecond:06d}".rstrip("0")
        return text + " UTC"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return ", ".join(display_text(v) for v in value) if value else "(none)"
    try:
        return _codec.dumps(value)
    except TypeError:
        return repr(value)


def _searched(value: Any) -> str:
    """:func:`display_text`, with text quoted but not escaped: a search for ``say "hi"``
    finds the value ``say "hi"`` (displayed ``"say \\"hi\\""``)."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple) and value:
        return ", ".join(_searched(v) for v in value)
    return display_text(value)


def search_needle(text: str) -> str:
    """What a search for ``text`` looks for in an item's search text (case folded; a line
    break counts as a space, as in the search text)."""
    return text.strip().replace("\n", " ").casefold()


def item_search_text(item: Discrepancy) -> str:
    """What a search of the queue matches ``item`` against, case folded: its keys, field,
    category and explanation, and (for an item about a value) the display text of its left,
    right and base values. A search is a partial match of :func:`search_needle` in it.

    The parts are separated by a line break, so a search without one never matches across
    two of them.
    """
    parts = [item.left_key or "", item.right_key or "", item.field, item.category or ""]
    parts.append(item.explanation)
    if item.field != RECORD_FIELD and (item.left_key or item.right_key):
        values = [item.left_value, item.right_value]
        if item.has_base:
            values.append(item.base_value)
        parts += [_searched(v)[:_SEARCH_VALUE_WIDTH] for v in values]
    return "\n".join(p.replace("\n", " ") for p in parts if p).casefold()


def item_matches(
    item: Discrepancy,
    *,
    sync: str | None = None,
    statuses: Sequence[Status] | None = None,
    category: str | None = None,
    field: str | None = None,
    key: str | None = None,
    assignee: str | None = None,
    unassigned: bool = False,
    search: str | None = None,
    before: tuple[datetime, int] | None = None,
    resolved_since: datetime | None = None,
) -> bool:
    """Whether ``item`` passes the filters of :meth:`QueueStore.list_items` (a backend that
    filters in Python, as the memory backend does, asks this)."""
    if sync is not None and item.sync != sync:
        return False
    if statuses and item.status not in statuses:  # a str enum: "open" is Status.OPEN
        return False
    if category is not None and item.category != category:
        return False
    if field is not None and item.field != field:
        return False
    if key is not None and key not in (item.left_key, item.right_key):
        return False
    if assignee is not None and item.assignee != assignee:
        return False
    if unassigned and item.assignee:
        return False
    if before is not None and (item.detected_at, item.id or 0) >= (utc(before[0]), before[1]):
        return False
    if resolved_since is not None and (
        item.resolved_at is None or item.resolved_at < utc(resolved_since)
    ):
        return False
    if search is not None:
        needle = search_needle(search)
        if needle and needle not in item_search_text(item):
            return False
    return True


def check_order(order: str) -> None:
    """Raise ``ValueError`` for an order other than ``"newest"`` and ``"oldest"``."""
    if order not in ITEM_ORDERS:
        raise ValueError(f"order must be 'newest' or 'oldest', got {order!r}")


@attrs.frozen(kw_only=True)
class ItemUpdate:
    """A change of status (and resolution) of an existing queue item.

    ``assignee`` sets who works on the item (``""`` clears it; ``None`` leaves it as it is).
    """

    id: int
    status: Status = attrs.field(converter=Status)
    resolution: Any = None
    resolved_at: datetime | None = attrs.field(default=None, converter=_opt_utc)
    note: str | None = None
    assignee: str | None = None


@attrs.frozen(kw_only=True)
class BaseUpdate:
    """New base values for some fields of one link; ``drop`` forgets fields' bases."""

    sync: str
    left_key: str
    values: Mapping[str, Any] = attrs.field(factory=dict)
    drop: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class CycleRecord:
    """A finished cycle's report, as stored."""

    id: str
    sync: str
    started_at: datetime = attrs.field(converter=_utc)
    finished_at: datetime = attrs.field(converter=_utc)
    mode: str
    dry_run: bool
    report: Mapping[str, Any]


@attrs.frozen(kw_only=True)
class Counter:
    """An increment of a named counter with labels, e.g. ``("auto_resolved", {"rule": ...})``."""

    metric: str
    labels: Mapping[str, str] = attrs.field(factory=dict)
    amount: int = 1


@attrs.frozen(kw_only=True)
class SyncState:
    """Per-sync progress: the watermark of each side and the last full sweep."""

    watermarks: Mapping[Side, datetime] = attrs.field(factory=dict)
    last_full_sweep: datetime | None = None


@attrs.frozen(kw_only=True)
class FieldSchema:
    """What a connector last said about one mapped field: its description and fingerprint.

    ``field`` is that side's own field name; ``info`` the description as plain data (``type``,
    ``options``, ``required``). Schema-drift detection compares the next description to it.
    """

    sync: str
    side: Side = attrs.field(converter=Side)
    field: str
    fingerprint: str
    info: Mapping[str, Any] = attrs.field(factory=dict)
    updated_at: datetime | None = attrs.field(default=None, converter=_opt_utc)


@attrs.frozen(kw_only=True)
class InboxEntry:
    """A webhook event stored before it is acknowledged (the fast loop's inbox).

    ``event`` is the normalized change event as plain data; ``(source, dedupe_key)`` is
    unique, so a redelivery is recognized. ``status`` is ``pending`` until processed, then
    ``done`` with its ``outcome``.
    """

    source: str
    dedupe_key: str
    event: Mapping[str, Any]
    received_at: datetime = attrs.field(converter=_utc)
    status: str = "pending"
    outcome: str | None = None
    note: str | None = None
    id: int | None = None
    record: str = ""
    """The record the event is about (``sync:side:key``): the unit of a claim. Every pending
    event of one record is claimed by one worker at a time; ``""`` claims the entry alone."""


@attrs.frozen(kw_only=True)
class Echo:
    """A value syncrecon writes, remembered until ``expires_at`` so its webhook is recognized.

    ``field`` is the target side's own field name and ``fingerprint`` the fingerprint of the
    value sent, in that side's vocabulary. ``source_time`` is when the edit this value copies
    happened (``None`` when unknown): while the entry lasts, a side that holds this value holds
    an edit of that time, whenever the write itself landed. The fast loop records its entries
    before it calls the connector (its base moves only in a later commit), a cycle in the commit
    that moves the base; an entry whose write then failed says nothing false (*if* the side
    holds this value, that is its edit's time).
    """

    sync: str
    side: Side = attrs.field(converter=Side)
    key: str
    field: str
    fingerprint: str
    expires_at: datetime = attrs.field(converter=_utc)
    source_time: datetime | None = attrs.field(default=None, converter=_opt_utc)


@attrs.frozen(kw_only=True)
class OutboxEntry:
    """A fast-loop write that failed and waits for another try.

    ``fields`` are the target's field names and values; ``expect`` the values the target held
    when the write was decided (a retry re-reads and gives up if they changed); ``base`` the
    base values (left vocabulary) to store once the write lands.
    """

    sync: str
    side: Side = attrs.field(converter=Side)
    key: str
    left_key: str
    right_key: str
    fields: Mapping[str, Any]
    expect: Mapping[str, Any] = attrs.field(factory=dict)
    base: Mapping[str, Any] = attrs.field(factory=dict)
    attempts: int = 0
    next_at: datetime = attrs.field(converter=_utc)
    last_error: str | None = None
    status: str = "pending"
    created_at: datetime | None = attrs.field(default=None, converter=_opt_utc)
    source_time: datetime | None = attrs.field(default=None, converter=_opt_utc)
    """When the change happened at the source (a newer change of the field supersedes it)."""
    id: int | None = None


@attrs.frozen(kw_only=True)
class OutboxUpdate:
    """A retry's result: ``status`` ``pending`` (again at ``next_at``), ``done`` or ``failed``."""

    id: int
    status: str
    attempts: int
    next_at: datetime = attrs.field(converter=_utc)
    last_error: str | None = None


@attrs.frozen(kw_only=True)
class CreateIntent:
    """A create recorded before its call: the record of ``source_key`` (on the other side) is
    being created on ``side`` with ``idempotency_key``. It is settled in the transaction that
    stores the new link (or forgotten when the system definitely refused the create); one
    still there means an earlier attempt may have landed: look it up before creating again."""

    sync: str
    side: Side = attrs.field(converter=Side)
    source_key: str
    idempotency_key: str
    created_at: datetime = attrs.field(converter=_utc)


@attrs.frozen(kw_only=True)
class ShardPlan:
    """A sharded cycle in progress: its id, how many shards, and what every shard reads.

    ``spec`` is JSON-ready data the cycle writes and reads back (its mode, the time each side
    is read from, each connector's partitions, the prelude's partial report); storage keeps it
    as it is. A plan stays until the step that stores the cycle's report drops it
    (:attr:`Step.shard_plan_done`).
    """

    cycle_id: str
    sync: str
    shards: int
    created_at: datetime = attrs.field(converter=_utc)
    spec: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ShardResult:
    """What one shard of a sharded cycle left for the step that finishes the cycle: its
    partial report and the work that needs the whole picture (JSON-ready ``body``)."""

    cycle_id: str
    shard: int
    finished_at: datetime = attrs.field(converter=_utc)
    body: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.define(kw_only=True)
class Step:
    """Everything one logical step changes, applied by :meth:`Storage.commit` in one transaction.

    ``new_items`` that name an active item (same sync, keys and field) update it instead of
    adding another, so one field never has two active items.
    """

    at: datetime
    links: list[Link] = attrs.field(factory=list)
    unlink: list[tuple[str, str]] = attrs.field(factory=list)
    bases: list[BaseUpdate] = attrs.field(factory=list)
    new_items: list[Discrepancy] = attrs.field(factory=list)
    item_updates: list[ItemUpdate] = attrs.field(factory=list)
    watermarks: list[tuple[str, Side, datetime]] = attrs.field(factory=list)
    full_sweeps: list[tuple[str, datetime]] = attrs.field(factory=list)
    cycle: CycleRecord | None = None
    marks: list[SeenMark] = attrs.field(factory=list)
    """Applied after ``links`` and ``bases`` (which forget the marks of the links they write)."""
    counters: list[Counter] = attrs.field(factory=list)
    events_done: list[tuple[int, str, str | None]] = attrs.field(factory=list)
    field_times: list[tuple[str, str, str, datetime]] = attrs.field(factory=list)
    echoes: list[Echo] = attrs.field(factory=list)
    drop_echoes: list[int] = attrs.field(factory=list)
    outbox_add: list[OutboxEntry] = attrs.field(factory=list)
    outbox_update: list[OutboxUpdate] = attrs.field(factory=list)
    schemas: list[FieldSchema] = attrs.field(factory=list)
    intents: list[CreateIntent] = attrs.field(factory=list)
    intents_settled: list[tuple[str, Side, str]] = attrs.field(factory=list)
    """``(sync, side, source key)`` of create intents that are done with."""
    claim_owner: str | None = None
    """The worker that claimed ``events_done``: commit only while it still holds their claim,
    else raise :class:`~syncrecon.LeaseLostError` and change nothing."""
    fence: tuple[str, str] | None = None
    """``(lease name, owner)``: commit only while ``owner`` still holds that lease, else raise
    :class:`~syncrecon.LeaseLostError` and change nothing (the fencing of a cycle's commits)."""
    shard_plan: ShardPlan | None = None
    """A sharded cycle's plan to store (backends with the :class:`ShardStore` role)."""
    shard_results: list[ShardResult] = attrs.field(factory=list)
    """Finished shards' results, each replacing an earlier one of the same shard."""
    shard_plan_done: str | None = None
    """The id of a sharded cycle whose plan and shard results are dropped (it is finished)."""

    def is_empty(self) -> bool:
        """Whether the step changes nothing."""
        return not (
            self.intents
            or self.intents_settled
            or self.schemas
            or self.events_done
            or self.field_times
            or self.echoes
            or self.drop_echoes
            or self.outbox_add
            or self.outbox_update
            or self.links
            or self.unlink
            or self.bases
            or self.new_items
            or self.item_updates
            or self.watermarks
            or self.full_sweeps
            or self.cycle
            or self.marks
            or self.counters
            or self.shard_plan
            or self.shard_results
            or self.shard_plan_done
        )


def lease_lost(name: str, owner: str, holder: str | None) -> LeaseLostError:
    """The error a backend raises when a commit's :attr:`Step.fence` no longer holds."""
    return LeaseLostError(
        f"the lease {name!r} is no longer held by {owner!r}"
        f" ({'released' if holder is None else 'taken by ' + repr(holder)}); nothing was committed",
        name=name,
        owner=holder,
    )


def claim_lost(owner: str, lost: int, total: int) -> LeaseLostError:
    """The error a backend raises when a commit's :attr:`Step.claim_owner` lost its events."""
    return LeaseLostError(
        f"{lost} of {total} events are no longer claimed by {owner!r} (their claim expired and"
        " another worker took them); nothing was committed",
        owner=owner,
    )


# -- the roles ----------------------------------------------------------------------------------
#
# ``Storage`` is the union of small role protocols, one per concern, so that each concern can be
# read (and implemented, and tested) alone. Every role's writes go through ``Storage.commit``:
# the roles name what a backend keeps and reads back, ``commit`` is the one way it changes. The
# decisions that more than one backend would otherwise write again (how a new item merges into
# an active one, when a lease is free, ...) are pure functions in ``syncrecon.storage._rules``.


@runtime_checkable
class LeaseStore(Protocol):
    """Named leases: what keeps two cycles of one sync apart, across threads and processes.

    Invariants:

    - at most one owner holds a name at a time; the check and the take are one atomic step;
    - a lease held until ``t`` is free at ``t`` (expiry is ``expires_at <= now``), but until
      someone else takes it, it is still its owner's: :meth:`renew_lease` succeeds and a commit
      fenced by it (:attr:`Step.fence`) goes through;
    - only the owner releases or renews a lease; releasing what one does not hold is no error;
    - a commit whose fence names a lease its owner no longer holds (released, or taken by
      another owner) raises :class:`~syncrecon.LeaseLostError` (see :func:`lease_lost`) and
      changes nothing.
    """

    def acquire_lease(self, name: str, owner: str, ttl: timedelta, now: datetime) -> bool:
        """Claim ``name`` for ``owner`` until ``now + ttl``; False if someone else holds it."""
        ...

    def release_lease(self, name: str, owner: str) -> None:
        """Give up ``name`` if ``owner`` holds it."""
        ...

    def renew_lease(self, name: str, owner: str, ttl: timedelta, now: datetime) -> bool:
        """Extend ``owner``'s lease to ``now + ttl``; False (and no change) if it was lost.

        Lost means released, or taken by another owner after it expired. A lease that expired
        but that nobody took is still ``owner``'s: the renewal succeeds.
        """
        ...

    def lease_holder(self, name: str) -> tuple[str, datetime] | None:
        """``(owner, expires_at)`` of the lease ``name``, expired or not; ``None`` if free."""
        ...


@runtime_checkable
class LinkStore(Protocol):
    """Links, their base values and marks, and each sync's progress (watermarks, sweeps).

    Invariants (written by :attr:`Step.links`, ``unlink``, ``bases``, ``marks``,
    ``watermarks`` and ``full_sweeps``):

    - within a sync a left key has at most one link and a right key belongs to at most one
      left key: a step that links a right key to a second left key raises
      :class:`~syncrecon.StorageError` and changes nothing;
    - linking a left key again replaces its right key, natural key and base (the old right key
      is free again) and keeps its ``created_at``;
    - a base update merges per field (``values`` set, then ``drop`` forgotten); a base update of
      a record that is not linked is ignored;
    - marks never outlive their base: every write of a link's base (a link, a base update, an
      unlink) forgets its marks in the same transaction; a :class:`SeenMark` with ``base`` is
      applied only while the base is still that text, one without only while the side's
      digest is still the mark's; marks apply after the step's links and bases;
    - what is read is a copy: changing a returned link changes nothing stored.
    """

    def get_links(self, sync: str, side: Side, keys: Sequence[str]) -> dict[str, Link]:
        """The links of the records with these keys on ``side``, by that key."""
        ...

    def links_by_natural_key(self, sync: str, natural_keys: Sequence[str]) -> dict[str, list[Link]]:
        """The links whose natural key is one of ``natural_keys``."""
        ...

    def iter_links(self, sync: str, *, batch: int = 1000) -> Iterator[list[Link]]:
        """Every link of ``sync``, in batches ordered by left key (memory stays bounded)."""
        ...

    def link_marks(self, sync: str, side: Side, keys: Sequence[str]) -> dict[str, LinkMark]:
        """The keys and ``side``'s mark of the links of these records on ``side``, by that key:
        what a cycle reads for every record, without decoding a base."""
        ...

    def iter_link_keys(self, sync: str, *, batch: int = 1000) -> Iterator[list[tuple[str, str]]]:
        """``(left key, right key)`` of every link of ``sync``, in batches by left key."""
        ...

    def count_links(self, sync: str) -> int:
        """How many records of ``sync`` are linked."""
        ...

    def get_sync_state(self, sync: str) -> SyncState:
        """Watermarks and the time of the last full sweep."""
        ...


@runtime_checkable
class QueueStore(Protocol):
    """The reconciliation queue: discrepancies, open and escalated until someone closes them.

    Invariants (written by :attr:`Step.new_items` and ``item_updates``):

    - at most one active (open or escalated) item per :attr:`Discrepancy.item_key`: a new item
      that names an active one updates it (same id, first ``detected_at``, its assignee, its
      note unless the new one has one, ``times_seen`` one more) instead of adding another;
    - an escalation is never lowered: a new sighting that is only ``OPEN`` leaves an escalated
      item escalated, with its rule and category (a sighting that closes it does close it);
    - an update of an item's status keeps its note and assignee unless it gives new ones
      (``assignee=""`` clears it); an update of an unknown id is ignored;
    - reopening a closed item while another item is active for its key raises
      :class:`~syncrecon.StorageError` and the step changes nothing;
    - :meth:`get_item` of an unknown id raises ``KeyError``; what is read is a copy.

    These decisions are made once, by ``syncrecon.storage._rules`` (``merge_item``,
    ``update_item``, ...); a backend only reads and writes the rows.
    """

    def active_items(self, sync: str) -> dict[ItemKey, Discrepancy]:
        """Every open or escalated item of ``sync``, by item key."""
        ...

    def get_item(self, item_id: int) -> Discrepancy:
        """One queue item. Raises ``LookupError`` (``KeyError``) when there is none."""
        ...

    def list_items(
        self,
        *,
        sync: str | None = None,
        statuses: Sequence[Status] | None = None,
        category: str | None = None,
        field: str | None = None,
        key: str | None = None,
        assignee: str | None = None,
        unassigned: bool = False,
        search: str | None = None,
        order: ItemOrder = "newest",
        limit: int = 100,
        offset: int = 0,
        before: tuple[datetime, int] | None = None,
        resolved_since: datetime | None = None,
    ) -> list[Discrepancy]:
        """Queue items, newest first (by ``detected_at``, then ``id``), filtered.

        ``statuses`` keeps items of those statuses (``None`` or empty: every status);
        ``key`` items of a record with that key on either side; ``assignee`` items assigned
        to exactly that person, ``unassigned`` items assigned to nobody. ``search`` is a
        case-insensitive partial match in ``item_search_text`` (the keys, the field,
        the category, the explanation and the values' display text); blank matches every
        item. ``order="oldest"`` returns the oldest first. ``offset`` skips that many
        matching items.

        ``before`` is a keyset cursor: only items older than that ``(detected_at, id)``, the
        last item of the previous page (paging by ``offset`` rereads every earlier page); it
        filters whatever the ``order``. ``resolved_since`` keeps only items closed at or after
        that time. Raises ``ValueError`` for an unknown ``order``.
        """
        ...

    def count_items(
        self,
        *,
        sync: str | None = None,
        statuses: Sequence[Status] | None = None,
        category: str | None = None,
        field: str | None = None,
        key: str | None = None,
        assignee: str | None = None,
        unassigned: bool = False,
        search: str | None = None,
        before: tuple[datetime, int] | None = None,
        resolved_since: datetime | None = None,
    ) -> int:
        """How many queue items :meth:`list_items` would return with these filters and no
        limit."""
        ...

    def item_facets(self, *, sync: str | None = None) -> dict[str, list[str]]:
        """The values present among the active (open or escalated) items, of ``sync`` or
        every sync: ``{"sync": [...], "category": [...], "field": [...], "assignee": [...]}``,
        each sorted, without ``None`` or ``""`` (what a queue page offers in its filters)."""
        ...


@runtime_checkable
class FastLoopStore(Protocol):
    """The fast loop's state: the webhook inbox, record claims, field times, echoes, the outbox.

    Invariants:

    - an inbox entry is stored once: ``(source, dedupe_key)`` is unique, a redelivery is
      recognized (its id is ``None``) and stores nothing;
    - claims are by record (:attr:`InboxEntry.record`), one claim space shared by
      :meth:`claim_events` (a fast-loop worker) and :meth:`claim_records` (a cycle before a
      write batch): a record with a live claim of one owner goes to no other until the claim
      ends (its events done, :meth:`release_records`, or its expiry); the check and the claim
      are one atomic step;
    - a commit with :attr:`Step.claim_owner` whose events are no longer claimed by that owner
      raises :class:`~syncrecon.LeaseLostError` (see :func:`claim_lost`) and changes nothing;
    - a field's applied source time never moves backwards (:attr:`Step.field_times`);
    - an echo entry recognizes one webhook: once spent (:attr:`Step.drop_echoes`) it never
      matches :meth:`find_echo` again; one with a source time still counts in
      :meth:`echo_times` until it expires, one without is forgotten at once;
    - an outbox entry is leased to one retrier at a time; settling it ends the lease.
    """

    def enqueue_events(
        self, entries: Sequence[InboxEntry], counters: Sequence[Counter], at: datetime
    ) -> list[int | None]:
        """Store new events and bump ``counters`` in one transaction.

        Returns each entry's id, or ``None`` for a duplicate (its ``(source, dedupe_key)`` is
        already in the inbox; nothing is stored for it).
        """
        ...

    def claim_events(
        self, owner: str, *, limit: int, now: datetime, lease: timedelta
    ) -> list[InboxEntry]:
        """Claim, for ``owner`` until ``now + lease``, every pending event of up to ``limit``
        records (oldest first) that no other worker holds a live claim on.

        A claim covers every pending event of its record (:attr:`InboxEntry.record`), so the
        events of one record are processed by one worker at a time; events that arrive for a
        claimed record wait until that claim ends (its events done, or its lease expired). A
        record claimed with :meth:`claim_records` by another owner is passed over the same way.
        On PostgreSQL the same is a ``SELECT ... FOR UPDATE SKIP LOCKED`` over the records.
        """
        ...

    def claim_records(
        self, owner: str, records: Sequence[str], *, now: datetime, lease: timedelta
    ) -> set[str]:
        """Claim ``records`` (``sync:side:key``, as :attr:`InboxEntry.record`) for ``owner``
        until ``now + lease``; return the ones granted.

        A record is granted when no other owner holds a live claim on it: neither on its
        pending events (a fast-loop worker between its claim and its commit) nor by an earlier
        call of this method. While granted, :meth:`claim_events` gives its events to no other
        owner. A reconciliation cycle claims the records of each write batch, so a cycle and a
        worker never write one record at the same time. :meth:`release_records` ends it.
        """
        ...

    def release_records(self, owner: str, records: Sequence[str]) -> None:
        """End ``owner``'s claims on ``records`` (see :meth:`claim_records`)."""
        ...

    def get_field_times(
        self, sync: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], datetime]:
        """The latest applied source time of each ``(left_key, field)`` that has one."""
        ...

    def find_echo(
        self, sync: str, side: Side, key: str, field: str, fingerprint: str, now: datetime
    ) -> int | None:
        """The id of an unexpired, unspent echo entry matching the value, if any."""
        ...

    def echo_times(
        self, sync: str, records: Sequence[tuple[Side, str]], now: datetime
    ) -> dict[tuple[Side, str, str, str], datetime]:
        """The source times of the unexpired echo entries of these ``(side, key)`` records, by
        ``(side, key, field, fingerprint)``: a side whose field holds the value with that
        fingerprint holds an edit made at that time (not at the time of syncrecon's write).

        Entries without a source time are left out; spent ones count until they expire. When
        several entries name one value, the latest time is the one. One call answers a whole
        batch of records (a cycle asks once per batch of pairs).
        """
        ...

    def claim_outbox(
        self, owner: str, *, limit: int, now: datetime, lease: timedelta
    ) -> list[OutboxEntry]:
        """Lease up to ``limit`` pending outbox entries that are due."""
        ...


@runtime_checkable
class SchemaStore(Protocol):
    """What the connectors said about their fields, and the creates under way.

    Invariants (written by :attr:`Step.schemas`, ``intents`` and ``intents_settled``):

    - one description per ``(sync, side, field)``: a new one replaces it;
    - a create intent is recorded before its call and settled in the transaction that stores
      its link; one still there means an earlier attempt may have landed.
    """

    def get_schemas(self, sync: str) -> list[FieldSchema]:
        """The stored field descriptions of ``sync`` (``step.schemas`` replaces them)."""
        ...

    def get_intents(
        self, sync: str, side: Side, source_keys: Sequence[str]
    ) -> dict[str, CreateIntent]:
        """The unsettled create intents on ``side`` for these source keys, by source key."""
        ...


@runtime_checkable
class MetricsStore(Protocol):
    """History: counters, cycle reports, and retention of everything that is done with.

    Invariants (written by :attr:`Step.counters` and ``cycle``, and by
    :meth:`FastLoopStore.enqueue_events`):

    - counters add up per metric, label set (whatever the labels' order) and hour;
    - a cycle report stored again under its id replaces the earlier one;
    - :meth:`prune` never removes pending events, pending outbox entries or active items.
    """

    def counter_totals(
        self, metric: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[tuple[Mapping[str, str], int]]:
        """Totals of ``metric`` per label set over a time window (hourly resolution).

        ``since`` counts its whole hour; ``until`` excludes the hour that starts at it.
        """
        ...

    def list_cycles(self, *, sync: str | None = None, limit: int = 100) -> list[CycleRecord]:
        """Stored cycle reports, newest first."""
        ...

    def prune(self, retention: Retention, now: datetime) -> Mapping[str, int]:
        """Remove what ``retention`` no longer keeps at ``now``; return the rows removed per kind.

        The kinds are ``inbox`` (processed events, by their receipt), ``echoes`` (by their
        expiry), ``outbox`` (settled entries, by the time they settled), ``cycles`` (by their
        start), ``counters`` (by their hour) and ``items`` (closed items, by their closing); a
        kind whose age is ``None`` is kept and not reported. Pending events and outbox entries
        and active items are never removed. Backends remove rows in bounded batches
        (``retention.batch`` per transaction), so a big prune never holds writers up for long.
        """
        ...


@runtime_checkable
class ShardStore(Protocol):
    """Sharded cycles' plans and shard results: an optional role (every bundled backend has it;
    a storage without it runs unsharded cycles only).

    Invariants (written by :attr:`Step.shard_plan`, ``shard_results`` and ``shard_plan_done``):

    - a plan stored again under its id replaces the earlier one; a shard result stored again
      for its (cycle, shard) replaces the earlier one;
    - dropping a plan drops its shard results in the same transaction.
    """

    def get_shard_plan(self, cycle_id: str) -> ShardPlan | None:
        """The plan of the sharded cycle ``cycle_id``, or ``None`` (finished, or never planned)."""
        ...

    def open_shard_plans(self, sync: str) -> list[ShardPlan]:
        """The plans of ``sync``'s sharded cycles not yet finished, oldest first."""
        ...

    def shard_results(self, cycle_id: str) -> dict[int, ShardResult]:
        """The results of the finished shards of ``cycle_id``, by shard index."""
        ...


@runtime_checkable
class BatchReadStore(Protocol):
    """Reads that answer a whole batch of records at once: an optional role (every bundled
    backend has it). The fast loop asks once per claimed batch instead of once per event; a
    storage without it is asked per event with :meth:`FastLoopStore.find_echo` and
    :meth:`QueueStore.active_items`, with the same outcomes.

    Invariants (each method agrees with the per-record read it replaces):

    - ``find_echoes(sync, side, keys, now)[(key, field, fingerprint)]`` is what
      ``find_echo(sync, side, key, field, fingerprint, now)`` returns, for every key of
      ``keys`` and every value with an unexpired, unspent entry; values without one are absent;
    - ``active_items_of(sync, left_keys)`` is the part of ``active_items(sync)`` whose items'
      left keys are among ``left_keys``.
    """

    def find_echoes(
        self, sync: str, side: Side, keys: Sequence[str], now: datetime
    ) -> dict[tuple[str, str, str], int]:
        """The oldest unexpired, unspent echo entry of each value written to the records
        ``keys`` on ``side``, by ``(key, field, fingerprint)`` (one query per chunk of keys)."""
        ...

    def active_items_of(self, sync: str, left_keys: Sequence[str]) -> dict[ItemKey, Discrepancy]:
        """The open or escalated items of ``sync`` whose left key is one of ``left_keys``, by
        item key."""
        ...


@runtime_checkable
class Storage(
    LeaseStore, LinkStore, QueueStore, FastLoopStore, SchemaStore, MetricsStore, Protocol
):
    """Where syncrecon keeps its state. Bundled backends: ``SQLiteStorage`` (the embedded
    default), ``PostgresStorage`` (many processes; the ``postgres`` extra) and
    ``MemoryStorage`` (tests, one process).

    The union of the roles :class:`LeaseStore`, :class:`LinkStore`, :class:`QueueStore`,
    :class:`FastLoopStore`, :class:`SchemaStore` and :class:`MetricsStore` (each with the
    invariants of its concern), plus :meth:`setup`, :meth:`close` and :meth:`commit`, the one
    write path of every role.

    Every method may raise :class:`~syncrecon.StorageError`; a failed :meth:`commit` changed
    nothing. A commit fenced by a lease or a claim that is no longer held raises
    :class:`~syncrecon.LeaseLostError` (not a ``StorageError``) and changes nothing either.
    Implementations are safe to call from several threads.
    """

    def setup(self) -> None:
        """Create or migrate the schema (idempotent). Raises ``SchemaVersionError``."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    def commit(self, step: Step) -> list[int]:
        """Apply ``step`` in one transaction; return the ids of ``step.new_items`` in order.

        ``events_done`` marks inbox entries processed with their outcome; ``field_times``
        keeps, per linked field, the latest source time applied (never moving backwards);
        ``echoes`` are remembered and ``drop_echoes`` (ids) spent: a spent entry never matches
        :meth:`find_echo` again (one entry recognizes one webhook); one without a source time
        is forgotten at once, one with a source time still counts in :meth:`echo_times` until
        it expires. ``outbox_add`` and ``outbox_update`` queue and settle failed fast-loop
        writes.
        """
        ...
