"""In-memory storage: for tests, notebooks and prototyping. Nothing survives the process."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

import attrs

from .. import _codec
from .._clock import utc
from .._exceptions import StorageError
from .._models import Side
from .._retention import Retention
from ._base import (
    Counter,
    CreateIntent,
    CycleRecord,
    Discrepancy,
    Echo,
    FieldSchema,
    InboxEntry,
    ItemKey,
    ItemOrder,
    Link,
    LinkMark,
    OutboxEntry,
    ShardPlan,
    ShardResult,
    Status,
    Step,
    SyncState,
    check_order,
    claim_lost,
    item_matches,
)
from ._rules import (
    check_fence,
    check_reopen,
    counter_hour,
    counter_window,
    first_sighting,
    lease_free,
    merge_base,
    merge_item,
    prune_cutoffs,
    update_item,
)

__all__ = ["MemoryStorage"]


def _copy(value: Any) -> Any:
    # Values are stored as the SQLite backend would return them, so both behave alike.
    return _codec.loads(_codec.dumps(value))


def _forget_marks(
    marks: _Overlay[tuple[str, str, Side], tuple[int | None, str]], sync: str, left_key: str
) -> None:
    for side in Side:
        marks.pop((sync, left_key, side), None)


def _out_link(link: Link) -> Link:
    # Hand out copies, as a database does: a caller's change never reaches the stored state.
    return attrs.evolve(link, base=copy.deepcopy(dict(link.base)))


def _out_item(item: Discrepancy) -> Discrepancy:
    return attrs.evolve(
        item,
        left_value=copy.deepcopy(item.left_value),
        right_value=copy.deepcopy(item.right_value),
        base_value=copy.deepcopy(item.base_value),
        resolution=copy.deepcopy(item.resolution),
    )


_GONE: Any = object()
K = TypeVar("K")
V = TypeVar("V")


class _Overlay(Generic[K, V]):
    """A transaction over a dict: reads see the changes, the dict changes only on :meth:`apply`.

    A commit works on overlays of the storage's dicts and applies them once nothing can fail
    any more: all or nothing, at the cost of what the step touches (copying every dict on every
    commit cost 10-14 ms at 100k links).
    """

    __slots__ = ("base", "changes")

    def __init__(self, base: dict[K, V]) -> None:
        self.base = base
        self.changes: dict[K, V] = {}

    def get(self, key: K, default: Any = None) -> Any:
        if key in self.changes:
            value = self.changes[key]
            return default if value is _GONE else value
        return self.base.get(key, default)

    def __getitem__(self, key: K) -> V:
        value = self.get(key, _GONE)
        if value is _GONE:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return self.get(key, _GONE) is not _GONE  # type: ignore[arg-type]

    def __setitem__(self, key: K, value: V) -> None:
        self.changes[key] = value

    def __delitem__(self, key: K) -> None:
        if key not in self:
            raise KeyError(key)
        self.changes[key] = _GONE

    def pop(self, key: K, default: Any = _GONE) -> Any:
        value = self.get(key, _GONE)
        if value is _GONE:
            if default is _GONE:
                raise KeyError(key)
            return default
        self.changes[key] = _GONE
        return value

    def apply(self) -> None:
        for key, value in self.changes.items():
            if value is _GONE:
                self.base.pop(key, None)
            else:
                self.base[key] = value


class MemoryStorage:
    """Storage in process memory, with the same semantics as the SQLite backend."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._links: dict[tuple[str, str], Link] = {}
        self._by_right: dict[tuple[str, str], str] = {}
        # (sync, left key, side) -> (seen, digest): the links' marks (see SeenMark).
        self._marks: dict[tuple[str, str, Side], tuple[int | None, str]] = {}
        self._items: dict[int, Discrepancy] = {}
        self._active: dict[ItemKey, int] = {}
        self._state: dict[str, SyncState] = {}
        self._cycles: dict[str, CycleRecord] = {}
        self._shard_plans: dict[str, ShardPlan] = {}
        self._shard_results: dict[str, dict[int, ShardResult]] = {}
        self._counters: dict[tuple[str, str, datetime], int] = {}
        self._leases: dict[str, tuple[str, datetime]] = {}
        self._next_id = 1
        # The fast loop's state; leases of claimed entries are (owner, until).
        self._inbox: dict[int, InboxEntry] = {}
        self._inbox_keys: dict[tuple[str, str], int] = {}
        self._inbox_leases: dict[int, tuple[str, datetime]] = {}
        self._record_claims: dict[str, tuple[str, datetime]] = {}
        self._field_times: dict[tuple[str, str, str], datetime] = {}
        self._echoes: dict[int, Echo] = {}
        self._spent: frozenset[int] = frozenset()  # echoes kept for their source time only
        self._outbox: dict[int, OutboxEntry] = {}
        self._outbox_leases: dict[int, datetime] = {}
        self._serial = 1
        self._schemas: dict[tuple[str, Side, str], FieldSchema] = {}
        self._intents: dict[tuple[str, Side, str], CreateIntent] = {}

    def __repr__(self) -> str:
        return "MemoryStorage()"

    def setup(self) -> None:
        """Nothing to create."""

    def close(self) -> None:
        """Nothing to release."""

    def acquire_lease(self, name: str, owner: str, ttl: timedelta, now: datetime) -> bool:
        now = utc(now)
        with self._lock:
            if not lease_free(self._leases.get(name), owner, now):
                return False
            self._leases[name] = (owner, now + ttl)
            return True

    def release_lease(self, name: str, owner: str) -> None:
        with self._lock:
            held = self._leases.get(name)
            if held is not None and held[0] == owner:
                del self._leases[name]

    def renew_lease(self, name: str, owner: str, ttl: timedelta, now: datetime) -> bool:
        with self._lock:
            held = self._leases.get(name)
            if held is None or held[0] != owner:
                return False
            self._leases[name] = (owner, utc(now) + ttl)
            return True

    def lease_holder(self, name: str) -> tuple[str, datetime] | None:
        with self._lock:
            return self._leases.get(name)

    def _check_fence(self, step: Step) -> None:
        if step.fence is not None:
            held = self._leases.get(step.fence[0])
            check_fence(step, None if held is None else held[0])

    def get_links(self, sync: str, side: Side, keys: Sequence[str]) -> dict[str, Link]:
        with self._lock:
            found = {}
            for key in keys:
                left = key if Side(side) is Side.LEFT else self._by_right.get((sync, key))
                link = self._links.get((sync, left)) if left is not None else None
                if link is not None:
                    found[key] = _out_link(link)
            return found

    def links_by_natural_key(self, sync: str, natural_keys: Sequence[str]) -> dict[str, list[Link]]:
        wanted = set(natural_keys)
        with self._lock:
            found: dict[str, list[Link]] = {}
            for (s, _), link in self._links.items():
                if s == sync and link.natural_key in wanted:
                    assert link.natural_key is not None
                    found.setdefault(link.natural_key, []).append(_out_link(link))
            return found

    def iter_links(self, sync: str, *, batch: int = 1000) -> Iterator[list[Link]]:
        with self._lock:
            keys = sorted(k for s, k in self._links if s == sync)
        for i in range(0, len(keys), batch):
            with self._lock:
                found = [self._links.get((sync, k)) for k in keys[i : i + batch]]
            links = [link for link in found if link is not None]
            if links:
                yield links

    def link_marks(self, sync: str, side: Side, keys: Sequence[str]) -> dict[str, LinkMark]:
        side = Side(side)
        with self._lock:
            found = {}
            for key in keys:
                left = key if side is Side.LEFT else self._by_right.get((sync, key))
                link = self._links.get((sync, left)) if left is not None else None
                if link is None:
                    continue
                seen, digest = self._marks.get((sync, link.left_key, side), (None, None))
                found[key] = LinkMark(link.left_key, link.right_key, link.natural_key, seen, digest)
            return found

    def iter_link_keys(self, sync: str, *, batch: int = 1000) -> Iterator[list[tuple[str, str]]]:
        for links in self.iter_links(sync, batch=batch):
            yield [(link.left_key, link.right_key) for link in links]

    def count_links(self, sync: str) -> int:
        with self._lock:
            return sum(1 for s, _ in self._links if s == sync)

    def get_sync_state(self, sync: str) -> SyncState:
        with self._lock:
            state = self._state.get(sync, SyncState())
            return attrs.evolve(state, watermarks=dict(state.watermarks))

    def active_items(self, sync: str) -> dict[ItemKey, Discrepancy]:
        with self._lock:
            return {k: _out_item(self._items[i]) for k, i in self._active.items() if k[0] == sync}

    def active_items_of(self, sync: str, left_keys: Sequence[str]) -> dict[ItemKey, Discrepancy]:
        wanted = set(left_keys)
        with self._lock:
            return {
                k: _out_item(self._items[i])
                for k, i in self._active.items()
                if k[0] == sync and k[1] in wanted
            }

    def get_item(self, item_id: int) -> Discrepancy:
        with self._lock:
            return _out_item(self._items[item_id])

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
        check_order(order)
        items = self._matching(
            sync=sync,
            statuses=statuses,
            category=category,
            field=field,
            key=key,
            assignee=assignee,
            unassigned=unassigned,
            search=search,
            before=before,
            resolved_since=resolved_since,
        )
        items.sort(key=lambda i: (i.detected_at, i.id or 0), reverse=order == "newest")
        return [_out_item(i) for i in items[offset : offset + limit]]

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
        return len(
            self._matching(
                sync=sync,
                statuses=statuses,
                category=category,
                field=field,
                key=key,
                assignee=assignee,
                unassigned=unassigned,
                search=search,
                before=before,
                resolved_since=resolved_since,
            )
        )

    def _matching(self, **filters: Any) -> list[Discrepancy]:
        """The stored items that pass ``filters`` (see ``item_matches``), not copied."""
        if filters.get("statuses"):
            filters["statuses"] = frozenset(Status(s) for s in filters["statuses"])
        with self._lock:
            return [i for i in self._items.values() if item_matches(i, **filters)]

    def item_facets(self, *, sync: str | None = None) -> dict[str, list[str]]:
        found: dict[str, set[str]] = {"sync": set(), "category": set(), "field": set()}
        found["assignee"] = set()
        with self._lock:
            for key, item_id in self._active.items():
                if sync is not None and key[0] != sync:
                    continue
                item = self._items[item_id]
                for name in found:
                    value = getattr(item, name)
                    if value:
                        found[name].add(value)
        return {name: sorted(values) for name, values in found.items()}

    def get_shard_plan(self, cycle_id: str) -> ShardPlan | None:
        with self._lock:
            plan = self._shard_plans.get(cycle_id)
        return None if plan is None else attrs.evolve(plan, spec=_copy(dict(plan.spec)))

    def open_shard_plans(self, sync: str) -> list[ShardPlan]:
        with self._lock:
            plans = [p for p in self._shard_plans.values() if p.sync == sync]
        plans.sort(key=lambda p: (p.created_at, p.cycle_id))
        return [attrs.evolve(p, spec=_copy(dict(p.spec))) for p in plans]

    def shard_results(self, cycle_id: str) -> dict[int, ShardResult]:
        with self._lock:
            found = dict(self._shard_results.get(cycle_id, {}))
        return {i: attrs.evolve(r, body=_copy(dict(r.body))) for i, r in sorted(found.items())}

    def list_cycles(self, *, sync: str | None = None, limit: int = 100) -> list[CycleRecord]:
        with self._lock:
            cycles = [c for c in self._cycles.values() if sync is None or c.sync == sync]
        cycles.sort(key=lambda c: c.started_at, reverse=True)
        return [attrs.evolve(c, report=copy.deepcopy(dict(c.report))) for c in cycles[:limit]]

    def counter_totals(
        self, metric: str, *, since: datetime | None = None, until: datetime | None = None
    ) -> list[tuple[Mapping[str, str], int]]:
        low, high = counter_window(since, until)
        totals: dict[str, int] = {}
        with self._lock:
            for (m, labels, bucket), value in self._counters.items():
                if m != metric or (low is not None and bucket < low):
                    continue
                if high is not None and bucket >= high:
                    continue
                totals[labels] = totals.get(labels, 0) + value
        return [(_codec.loads(labels), total) for labels, total in sorted(totals.items())]

    def commit(self, step: Step) -> list[int]:
        with self._lock:
            self._check_fence(step)
            # Work on copies and swap them in at the end: all or nothing, like a transaction.
            links = _Overlay(self._links)
            by_right = _Overlay(self._by_right)
            link_marks = _Overlay(self._marks)
            items = _Overlay(self._items)
            active = _Overlay(self._active)
            state = _Overlay(self._state)
            next_id = self._next_id
            ids: list[int] = []
            for link in step.links:
                key = (link.sync, link.left_key)
                owner = by_right.get((link.sync, link.right_key))
                if owner is not None and owner != link.left_key:
                    raise StorageError(f"right key {link.right_key!r} is already linked")
                old = links.get(key)
                if old is not None and old.right_key != link.right_key:
                    by_right.pop((link.sync, old.right_key), None)
                created = old.created_at if old is not None else (link.created_at or step.at)
                links[key] = attrs.evolve(link, base=_copy(dict(link.base)), created_at=created)
                by_right[(link.sync, link.right_key)] = link.left_key
                _forget_marks(link_marks, link.sync, link.left_key)
            for sync, left_key in step.unlink:
                old = links.pop((sync, left_key), None)
                if old is not None:
                    by_right.pop((sync, old.right_key), None)
                _forget_marks(link_marks, sync, left_key)
            for update in step.bases:
                linked = links.get((update.sync, update.left_key))
                if linked is None:
                    continue
                values = _copy(dict(update.values))
                base = merge_base(copy.deepcopy(dict(linked.base)), values, update.drop)
                links[(update.sync, update.left_key)] = attrs.evolve(linked, base=base)
                _forget_marks(link_marks, update.sync, update.left_key)
            for seen in step.marks:
                where = (seen.sync, seen.left_key, seen.side)
                marked = links.get((seen.sync, seen.left_key))
                if marked is None:
                    continue
                if seen.base is None:
                    held = link_marks.get(where)
                    if held is not None and held[1] == seen.digest:
                        link_marks[where] = (seen.seen, seen.digest)
                elif _codec.dumps(dict(marked.base)) == seen.base:
                    link_marks[where] = (seen.seen, seen.digest)
            for item in step.new_items:
                existing = active.get(item.item_key)
                copied = attrs.evolve(
                    item,
                    left_value=_copy(item.left_value),
                    right_value=_copy(item.right_value),
                    base_value=_copy(item.base_value),
                    resolution=_copy(item.resolution),
                )
                if existing is not None:
                    stored = merge_item(items[existing], copied, step.at)
                else:
                    stored = attrs.evolve(first_sighting(copied, step.at), id=next_id)
                    next_id += 1
                assert stored.id is not None
                items[stored.id] = stored
                if stored.status.is_active:
                    active[stored.item_key] = stored.id
                else:
                    active.pop(stored.item_key, None)
                ids.append(stored.id)
            for upd in step.item_updates:
                prior = items.get(upd.id)
                if prior is None:
                    continue
                new = update_item(
                    prior, attrs.evolve(upd, resolution=_copy(upd.resolution)), step.at
                )
                items[upd.id] = new
                holder = active.get(new.item_key)
                check_reopen(new, holder)
                if new.status.is_active:
                    active[new.item_key] = upd.id
                elif holder == upd.id:
                    del active[new.item_key]
            for sync, side, mark in step.watermarks:
                current = state.get(sync, SyncState())
                marks = dict(current.watermarks)
                marks[Side(side)] = utc(mark)
                state[sync] = attrs.evolve(current, watermarks=marks)
            for sync, when in step.full_sweeps:
                state[sync] = attrs.evolve(state.get(sync, SyncState()), last_full_sweep=utc(when))
            # Encode everything that can still fail before anything is swapped in.
            cycle = None
            if step.cycle is not None:
                cycle = attrs.evolve(step.cycle, report=_copy(dict(step.cycle.report)))
            plan = None
            if step.shard_plan is not None:
                plan = attrs.evolve(step.shard_plan, spec=_copy(dict(step.shard_plan.spec)))
            results = [attrs.evolve(r, body=_copy(dict(r.body))) for r in step.shard_results]
            for result in results:
                if result.cycle_id not in self._shard_plans and (
                    plan is None or plan.cycle_id != result.cycle_id
                ):
                    raise StorageError(f"no sharded cycle {result.cycle_id!r} is planned")
            bucket = counter_hour(step.at)
            counts = [
                ((c.metric, _codec.dumps(dict(c.labels)), bucket), c.amount) for c in step.counters
            ]
            fast, spent, serial = self._fast_loop_step(step)
            overlays: list[_Overlay[Any, Any]] = [
                links,
                by_right,
                link_marks,
                items,
                active,
                state,
                *fast,
            ]
            for overlay in overlays:
                overlay.apply()
            self._next_id = next_id
            self._spent, self._serial = spent, serial
            if cycle is not None:
                self._cycles[cycle.id] = cycle
            if plan is not None:
                self._shard_plans[plan.cycle_id] = plan
            for result in results:
                self._shard_results.setdefault(result.cycle_id, {})[result.shard] = result
            if step.shard_plan_done is not None:
                self._shard_plans.pop(step.shard_plan_done, None)
                self._shard_results.pop(step.shard_plan_done, None)
            for key3, amount in counts:
                self._counters[key3] = self._counters.get(key3, 0) + amount
            for intent in step.intents:
                self._intents[(intent.sync, Side(intent.side), intent.source_key)] = intent
            for sync_name, side, source_key in step.intents_settled:
                self._intents.pop((sync_name, Side(side), source_key), None)
            for schema in step.schemas:
                self._schemas[(schema.sync, Side(schema.side), schema.field)] = attrs.evolve(
                    schema, info=_copy(dict(schema.info)), updated_at=step.at
                )
            return ids

    def _fast_loop_step(
        self, step: Step
    ) -> tuple[tuple[_Overlay[Any, Any], ...], frozenset[int], int]:
        """The fast loop's part of ``step``, on overlays (applied by the caller)."""
        inbox, inbox_leases = _Overlay(self._inbox), _Overlay(self._inbox_leases)
        times, echoes = _Overlay(self._field_times), _Overlay(self._echoes)
        spent = set(self._spent)
        outbox, outbox_leases = _Overlay(self._outbox), _Overlay(self._outbox_leases)
        serial = self._serial
        if step.claim_owner is not None:
            lost = [
                event_id
                for event_id, _, _ in step.events_done
                if event_id not in inbox
                or inbox[event_id].status != "pending"
                or (inbox_leases.get(event_id) or ("", None))[0] != step.claim_owner
            ]
            if lost:
                raise claim_lost(step.claim_owner, len(lost), len(step.events_done))
        for event_id, outcome, note in step.events_done:
            if event_id in inbox:
                inbox[event_id] = attrs.evolve(
                    inbox[event_id], status="done", outcome=outcome, note=note
                )
                inbox_leases.pop(event_id, None)
        for sync, key, field, when in step.field_times:
            current = times.get((sync, key, field))
            times[(sync, key, field)] = utc(when) if current is None else max(current, utc(when))
        for echo in step.echoes:
            echoes[serial] = echo
            serial += 1
        for echo_id in step.drop_echoes:
            dropped = echoes.get(echo_id)
            if dropped is None:
                continue
            if dropped.source_time is None:
                del echoes[echo_id]
            else:  # spent, but its source time counts until it expires
                spent.add(echo_id)
        for entry in step.outbox_add:
            created = entry.created_at or step.at
            outbox[serial] = attrs.evolve(
                entry,
                id=serial,
                fields=_copy(dict(entry.fields)),
                expect=_copy(dict(entry.expect)),
                base=_copy(dict(entry.base)),
                created_at=created,
            )
            serial += 1
        for upd in step.outbox_update:
            if upd.id in outbox:
                outbox[upd.id] = attrs.evolve(
                    outbox[upd.id],
                    status=upd.status,
                    attempts=upd.attempts,
                    next_at=upd.next_at,
                    last_error=upd.last_error,
                )
                outbox_leases.pop(upd.id, None)
        overlays = (inbox, inbox_leases, times, echoes, outbox, outbox_leases)
        return overlays, frozenset(spent), serial

    # -- the fast loop -------------------------------------------------------------------------

    def enqueue_events(
        self, entries: Sequence[InboxEntry], counters: Sequence[Counter], at: datetime
    ) -> list[int | None]:
        with self._lock:
            ids: list[int | None] = []
            for entry in entries:
                if (entry.source, entry.dedupe_key) in self._inbox_keys:
                    ids.append(None)
                    continue
                stored = attrs.evolve(entry, id=self._serial, event=_copy(dict(entry.event)))
                self._inbox[self._serial] = stored
                self._inbox_keys[(entry.source, entry.dedupe_key)] = self._serial
                ids.append(self._serial)
                self._serial += 1
            bucket = counter_hour(at)
            for c in counters:
                key3 = (c.metric, _codec.dumps(dict(c.labels)), bucket)
                self._counters[key3] = self._counters.get(key3, 0) + c.amount
            return ids

    def claim_events(
        self, owner: str, *, limit: int, now: datetime, lease: timedelta
    ) -> list[InboxEntry]:
        now = utc(now)
        with self._lock:
            pending: dict[str, list[int]] = {}
            blocked: set[str] = set()
            for event_id in sorted(self._inbox):
                entry = self._inbox[event_id]
                if entry.status != "pending":
                    continue
                record = entry.record or f"#{event_id}"
                pending.setdefault(record, []).append(event_id)
                held = self._inbox_leases.get(event_id)
                if held is not None and held[1] >= now and held[0] != owner:
                    blocked.add(record)
                claim = self._record_claims.get(record)
                if claim is not None and claim[1] >= now and claim[0] != owner:
                    blocked.add(record)
            out = []
            for record in [r for r in pending if r not in blocked][:limit]:
                for event_id in pending[record]:
                    self._inbox_leases[event_id] = (owner, now + lease)
                    out.append(self._inbox[event_id])
            out.sort(key=lambda e: e.id or 0)
            return out

    def claim_records(
        self, owner: str, records: Sequence[str], *, now: datetime, lease: timedelta
    ) -> set[str]:
        now = utc(now)
        wanted = set(records)
        with self._lock:
            busy = {
                e.record
                for event_id, e in self._inbox.items()
                if e.status == "pending"
                and e.record in wanted
                and (held := self._inbox_leases.get(event_id)) is not None
                and held[1] >= now
                and held[0] != owner
            }
            granted = set()
            for record in wanted - busy:
                claim = self._record_claims.get(record)
                if claim is not None and claim[1] >= now and claim[0] != owner:
                    continue
                self._record_claims[record] = (owner, now + lease)
                granted.add(record)
            return granted

    def release_records(self, owner: str, records: Sequence[str]) -> None:
        with self._lock:
            for record in records:
                claim = self._record_claims.get(record)
                if claim is not None and claim[0] == owner:
                    del self._record_claims[record]

    def get_field_times(
        self, sync: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], datetime]:
        with self._lock:
            return {
                (k, f): self._field_times[(sync, k, f)]
                for k, f in keys
                if (sync, k, f) in self._field_times
            }

    def find_echo(
        self, sync: str, side: Side, key: str, field: str, fingerprint: str, now: datetime
    ) -> int | None:
        now = utc(now)
        with self._lock:
            for echo_id in sorted(self._echoes):
                e = self._echoes[echo_id]
                if (
                    (e.sync, e.side, e.key, e.field, e.fingerprint)
                    == (sync, Side(side), key, field, fingerprint)
                    and e.expires_at > now
                    and echo_id not in self._spent
                ):
                    return echo_id
            return None

    def find_echoes(
        self, sync: str, side: Side, keys: Sequence[str], now: datetime
    ) -> dict[tuple[str, str, str], int]:
        now = utc(now)
        side, wanted = Side(side), set(keys)
        found: dict[tuple[str, str, str], int] = {}
        with self._lock:
            for echo_id in sorted(self._echoes, reverse=True):  # the oldest entry wins
                e = self._echoes[echo_id]
                if (
                    e.sync == sync
                    and e.side == side
                    and e.key in wanted
                    and e.expires_at > now
                    and echo_id not in self._spent
                ):
                    found[(e.key, e.field, e.fingerprint)] = echo_id
        return found

    def echo_times(
        self, sync: str, records: Sequence[tuple[Side, str]], now: datetime
    ) -> dict[tuple[Side, str, str, str], datetime]:
        now = utc(now)
        wanted = {(Side(side), key) for side, key in records}
        found: dict[tuple[Side, str, str, str], datetime] = {}
        with self._lock:
            for e in self._echoes.values():
                if (
                    e.sync != sync
                    or e.source_time is None
                    or e.expires_at <= now
                    or (e.side, e.key) not in wanted
                ):
                    continue
                at = (e.side, e.key, e.field, e.fingerprint)
                found[at] = max(found.get(at, e.source_time), e.source_time)
        return found

    def claim_outbox(
        self, owner: str, *, limit: int, now: datetime, lease: timedelta
    ) -> list[OutboxEntry]:
        now = utc(now)
        with self._lock:
            due = sorted(
                (e for e in self._outbox.values() if e.status == "pending" and e.next_at <= now),
                key=lambda e: (e.next_at, e.id or 0),
            )
            out = []
            for entry in due:
                assert entry.id is not None
                held = self._outbox_leases.get(entry.id)
                if held is not None and held >= now:
                    continue
                self._outbox_leases[entry.id] = now + lease
                out.append(entry)
                if len(out) >= limit:
                    break
            return out

    def get_intents(
        self, sync: str, side: Side, source_keys: Sequence[str]
    ) -> dict[str, CreateIntent]:
        with self._lock:
            found = {k: self._intents.get((sync, Side(side), k)) for k in source_keys}
            return {k: v for k, v in found.items() if v is not None}

    def get_schemas(self, sync: str) -> list[FieldSchema]:
        with self._lock:
            found = [v for k, v in self._schemas.items() if k[0] == sync]
        return sorted(found, key=lambda f: (f.side.value, f.field))

    def prune(self, retention: Retention, now: datetime) -> Mapping[str, int]:
        removed: dict[str, int] = {}
        with self._lock:
            for kind, cut in prune_cutoffs(retention, now).items():
                removed[kind] = self._prune(kind, cut)
        return removed

    def _prune(self, kind: str, cut: datetime) -> int:
        """Remove the rows of ``kind`` older than ``cut`` (see ``prune_cutoffs``); how many."""
        if kind == "inbox":
            old = [i for i, e in self._inbox.items() if e.status == "done" and e.received_at < cut]
            for event_id in old:
                entry = self._inbox.pop(event_id)
                self._inbox_keys.pop((entry.source, entry.dedupe_key), None)
                self._inbox_leases.pop(event_id, None)
            return len(old)
        if kind == "echoes":
            expired = [i for i, e in self._echoes.items() if e.expires_at < cut]
            for echo_id in expired:
                del self._echoes[echo_id]
            self._spent = self._spent - set(expired)
            return len(expired)
        if kind == "outbox":
            settled = [
                i
                for i, o in self._outbox.items()
                if o.status in ("done", "failed") and o.next_at < cut
            ]
            for entry_id in settled:
                del self._outbox[entry_id]
                self._outbox_leases.pop(entry_id, None)
            return len(settled)
        if kind == "cycles":
            cycles = [i for i, c in self._cycles.items() if c.started_at < cut]
            for cycle_id in cycles:
                del self._cycles[cycle_id]
            return len(cycles)
        if kind == "counters":
            counters = [k for k in self._counters if k[2] < cut]
            for key3 in counters:
                del self._counters[key3]
            return len(counters)
        assert kind == "items", kind
        closed = [
            i
            for i, d in self._items.items()
            if not Status(d.status).is_active and d.resolved_at is not None and d.resolved_at < cut
        ]
        for item_id in closed:
            del self._items[item_id]
        return len(closed)
