"""Step 1, read: choose the mode, list both systems and stage every record in the scratch file.

Owns the mode (full sweep or incremental since the watermark), the listing (page by page,
advancing the watermark), staging (a record unchanged since its mark staged light, the rest
in full, projected to the left vocabulary), the reads by key (counterparts not listed,
partial records, queued pairs, links neither of whose records was listed), the watermarks,
and the escalation of records that do not map and of entries that are not records. The
sharding hooks of this step (``_list_page``, ``_keep``, ``_owns``, ``_scan_links``,
``_stage_listing``) are overridden by :mod:`syncrecon._shards`.

The cycle's steps, in the order it runs them, each a class extending the one before (a later step
calls an earlier one, never the reverse): ``_state`` -> ``_read`` -> ``_match`` -> ``_decide`` ->
``_write`` -> ``_report`` -> ``_run`` (:class:`_Cycle`, the driver).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from .. import _codec
from .._clock import ts
from .._connector import list_page, read_batch
from .._drift import misfit, storable_problem
from .._exceptions import ConfigurationError, ConnectorBugError, PermanentError
from .._models import Page, Record, Side
from .._policy import unchanged
from .._stash import SeenRow, StagedRow, Stash
from ..storage._base import Link, LinkMark, SeenMark, Step
from ._state import _EPOCH, _MICROSECOND, _SIDE_INDEX, _CycleState, _iso, _micros

log = logging.getLogger("syncrecon.reconciler")


UNMAPPABLE_CATEGORY = "unmappable_value"


INVALID_RECORD_CATEGORY = "invalid_record"


_WANT_FULL_MAX = 200_000  # right keys remembered to stage in full; past it, all of them


class _Read(_CycleState):
    """Reading: the mode, the listings, staging and the reads by key."""

    def _incremental(
        self, marks: Mapping[Side, datetime], last_full: datetime | None, now: datetime
    ) -> bool:
        if self.force_full is not None:
            if not self.force_full and not self._can_incremental(marks):
                raise ConfigurationError(
                    "an incremental cycle needs incremental connectors and a previous full sweep"
                )
            return not self.force_full
        if not self._can_incremental(marks) or last_full is None:
            return False
        return now - last_full < self.rec.full_sweep_every

    def _can_incremental(self, marks: Mapping[Side, datetime]) -> bool:
        return all(
            self.sync.connector(side).capabilities.incremental and side in marks for side in Side
        )

    def _stage_listing(self, stash: Stash, side: Side, since: datetime | None) -> None:
        connector = self.sync.connector(side)
        cursor: str | None = None
        pages = 0
        began = self.clock.now()
        self.listing = True
        while True:
            page = self._list_page(side, since, cursor)
            self._stage(stash, side, page.records)
            self._advance_mark(side, page.records, began)
            pages += 1
            self._renew_lease()
            if pages % 50 == 0:
                stash.checkpoint()
            if page.next_cursor is None:
                self.listing = False
                break
            if page.next_cursor == cursor:
                raise RuntimeError(f"{connector.name} returned the same cursor twice: {cursor!r}")
            cursor = page.next_cursor

    def _list_page(self, side: Side, since: datetime | None, cursor: str | None) -> Page:
        """One page of ``side``'s listing (a shard lists its partition instead)."""
        return list_page(
            self.caller,
            self.sync.connector(side),
            since=since,
            cursor=cursor,
            invalid=self.invalid[side],
        )

    def _advance_mark(self, side: Side, records: Sequence[Record], listing_began: datetime) -> None:
        """Move the watermark to the newest listed change, but never past the listing's start.

        A record edited while a long listing runs may carry a time earlier than records listed
        after it; capping at the start (minus the overlap on the next read) keeps it visible.
        """
        newest = max((r.modified_at for r in records if r.modified_at is not None), default=None)
        if newest is None:
            return
        newest = min(newest, listing_began)
        mark = self.marks[side]
        if mark is None or newest > mark:
            self.marks[side] = newest

    def _stage(
        self, stash: Stash, side: Side, records: Sequence[Record], *, returned: bool = True
    ) -> None:
        marks = self.storage.link_marks(self.sync.name, side, [r.key for r in records])
        records = self._keep(side, records, marks)
        light: list[SeenRow | tuple[int, str, str, int | None]] = []
        full: list[Record] = []
        # The hot path, inline: a linked record not modified since its mark (between full
        # sweeps) is staged light at once; everything else goes through _light or in full.
        trust = self.trust_times
        fp = self.rec.mapping_fp
        forced = self.forced[side]
        left = side is Side.LEFT
        skip_right = not left and self.all_full
        want_full = self.want_full
        index = _SIDE_INDEX[side]
        by_time = 0
        for record in records:
            key = record.key
            mark = marks.get(key)
            if (
                trust
                and mark is not None
                and mark.seen is not None
                and mark.digest is not None
                and record.modified_at is not None
                and not record.deleted
                and mark.digest.startswith(fp)
                and key not in forced
                and (left or not (skip_right or key in want_full))
            ):
                seen = (record.modified_at - _EPOCH) // _MICROSECOND
                if seen <= mark.seen:
                    by_time += 1
                    light.append((index, key, mark.right_key if left else mark.left_key, seen))
                    continue
            row = self._light(side, record, mark)
            if row is None:
                full.append(record)
            else:
                light.append(row)
        if by_time:
            self.t.unchanged["modification_time"] += by_time
        stash.put_unchanged(light)
        if full:
            linked = [r.key for r in full if r.key in marks]
            links = self.storage.get_links(self.sync.name, side, linked) if linked else {}
            stash.put(list(self._rows(side, full, links, returned)))
        if self.held:
            stash.hold(self.held)
            self.held = []
        self._commit(self.side_step)
        self.side_step = Step(at=self.clock.now())

    def _keep(
        self, side: Side, records: Sequence[Record], marks: Mapping[str, LinkMark]
    ) -> Sequence[Record]:
        """The records read that this cycle stages (a shard: not those of other shards)."""
        return records

    def _light(self, side: Side, record: Record, mark: LinkMark | None) -> SeenRow | None:
        """The light row of a linked record whose mapped values hash to its mark's digest, or
        ``None`` to stage it in full. (The loop in :meth:`_stage` takes the common case, a
        record not modified since its mark between full sweeps, before calling this.)"""
        if mark is None or record.deleted:
            return None
        key = record.key
        digest = mark.digest
        if (
            digest is None
            or not digest.startswith(self.rec.mapping_fp)
            or key in self.forced[side]
            or (side is Side.RIGHT and (self.all_full or key in self.want_full))
        ):
            return None
        mod = record.modified_at
        try:
            proj, _raw, bad = self._project(side, record)
        except Exception:  # the full path escalates it
            return None
        if bad or not self._names[side].issubset(record.fields):
            return None
        if self._digest(_codec.dumps(proj)) != digest:
            return None
        if side is Side.LEFT and self._nk_unmapped:
            nat = self._natural(side, record)
            if nat is not None and nat != mark.natural_key:
                return None
        self.t.unchanged["digest"] += 1
        refreshed = self._seen(mod)
        if refreshed is not None and refreshed != mark.seen:
            self.side_step.marks.append(
                SeenMark(
                    sync=self.sync.name,
                    side=side,
                    left_key=mark.left_key,
                    base=None,
                    seen=refreshed,
                    digest=digest,
                )
            )
        return SeenRow(
            side=_SIDE_INDEX[side],
            key=key,
            other=mark.right_key if side is Side.LEFT else mark.left_key,
            modus=None if mod is None else _micros(mod),
        )

    def _rows(
        self, side: Side, records: Sequence[Record], links: Mapping[str, Link], returned: bool
    ) -> Iterable[StagedRow]:
        index = _SIDE_INDEX[side]
        names = self._names[side]
        for record in records:
            link = links.get(record.key)
            proj_text = raw_text = bad_text = None
            proj: dict[str, Any] | None = None
            if not record.deleted:
                try:
                    proj, raw, bad = self._project(side, record)
                except Exception as exc:  # one bad value must not stop the cycle
                    self._unmappable(side, record, link, exc)
                    proj = None
                else:
                    proj_text = _codec.dumps(proj)
                    raw_text = _codec.dumps(raw) if raw else None
                    bad_text = _codec.dumps(bad) if bad else None
                    if not names.issubset(record.fields):
                        if self.listing:
                            self.partial[side].append(record.key)
                        else:
                            self.t.partial[self.sync.connector(side).name] += 1
            mod = record.modified_at
            base_text = None if link is None else _codec.dumps(dict(link.base))
            same = link is not None and proj is not None and unchanged(proj, link.base)
            if same and not bad_text and names.issubset(record.fields):
                assert link is not None
                assert base_text is not None
                assert proj_text is not None
                self.side_step.marks.append(
                    SeenMark(
                        sync=self.sync.name,
                        side=side,
                        left_key=link.left_key,
                        base=base_text,
                        seen=self._seen(mod),
                        digest=self._digest(proj_text),
                    )
                )
            elif side is Side.LEFT and link is not None:
                self._want_full(link.right_key)
            yield StagedRow(
                side=index,
                key=record.key,
                link=None if link is None else link.left_key,
                other=None if link is None else link.key(side.other),
                nat=self._natural(side, record)
                if link is None
                else self._live_nat(side, record, link),
                proj=proj_text,
                raw=raw_text,
                mod=_iso(mod),
                ftimes=None if record.deleted else self._ftimes(side, record),
                base=base_text,
                deleted=int(record.deleted),
                changed=int(not same),
                bad=bad_text,
                ret=int(returned),
            )

    def _project(
        self, side: Side, record: Record
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        """(values in the left vocabulary by left name, raw values by the side's own names,
        problems of values that do not fit by left name).

        A field the record does not carry is unknown: it is left out, never taken as blank
        (invariant 9). A value that does not fit its field (:func:`_drift.misfit`) is left out
        too, and its problem reported: that field of that record is held and escalated.
        Raw values are kept for the right side's mapped fields (a re-read compares them) and
        for the natural key field of either side (a create copies it).
        """
        proj: dict[str, Any] = {}
        raw: dict[str, Any] = {}
        bad: dict[str, str] = {}
        values = record.fields
        infos = self.field_info.get(side, {})
        for fm in self._fields:
            name = fm.left if side is Side.LEFT else fm.right
            if name not in values:
                continue
            value = values[name]
            problem = misfit(fm, name, value, infos.get(name), expects_list=self._lists[fm.left])
            if problem is not None:
                bad[fm.left] = problem
                continue
            if side is Side.LEFT:
                proj[fm.left] = value
                continue
            mapped = fm.transform.to_left(value)
            problem = storable_problem(mapped)
            if problem is not None:
                bad[fm.left] = f"field {name!r} maps to {problem}, which cannot be stored"
                continue
            raw[fm.right] = value
            proj[fm.left] = mapped
        nk = self.sync.natural_key
        if nk is not None:
            name = nk.left if side is Side.LEFT else nk.right
            if name in values and storable_problem(values[name]) is None:
                raw[name] = values[name]
        return proj, raw, bad

    def _ftimes(self, side: Side, record: Record) -> str | None:
        times = record.field_modified_at
        if not times:
            return None
        out = {}
        for fm in self._fields:
            name = fm.left if side is Side.LEFT else fm.right
            if name in times:
                out[fm.left] = ts(times[name])
        return _codec.dumps(out) if out else None

    def _natural(self, side: Side, record: Record) -> str | None:
        nk = self.sync.natural_key
        if nk is None:
            return None
        value = record.fields.get(nk.left if side is Side.LEFT else nk.right)
        try:
            nat = nk.normalize(value)
        except Exception:  # a value the normalizer cannot read: no natural key
            log.warning(
                "%s record %r: the natural key %r does not normalize",
                self.sync.connector(side).name,
                record.key,
                type(value).__name__,
            )
            return None
        return nat if isinstance(nat, str) and nat else None

    def _live_nat(self, side: Side, record: Record, link: Link) -> str | None:
        """The record's natural key now; a left record's change is kept on its link."""
        nat = self._natural(side, record)
        if nat is None:
            return link.natural_key
        if side is Side.LEFT and nat != link.natural_key:
            self.side_step.links.append(attrs.evolve(link, natural_key=nat))
        return nat

    def _digest(self, proj_text: str) -> str:
        """A record's mapped values as its mark keeps them, salted with the mapping."""
        hashed = hashlib.blake2b(proj_text.encode(), digest_size=16).hexdigest()
        return self.rec.mapping_fp + hashed

    def _seen(self, mod: datetime | None) -> int | None:
        """What a mark keeps of a record's modification time: none for a record modified within
        ``overlap`` of this cycle's start, as a change in the same clock tick, or committed
        late, could carry the same time (the next cycle compares its digest instead)."""
        if mod is None or self.started is None or mod > self.started - self.rec.overlap:
            return None
        return _micros(mod)

    def _want_full(self, right_key: str) -> None:
        """Stage this right record in full: its left record changed, so the pair is decided."""
        if self.all_full:
            return
        self.want_full.add(right_key)
        if len(self.want_full) > _WANT_FULL_MAX:
            self.all_full = True
            self.want_full.clear()

    def _unmappable(self, side: Side, record: Record, link: Link | None, exc: Exception) -> None:
        """Hold a record whose value the mapping cannot convert, and escalate it."""
        self.held.append((_SIDE_INDEX[side], record.key))
        left_key = record.key if side is Side.LEFT else (link.left_key if link else None)
        right_key = record.key if side is Side.RIGHT else (link.right_key if link else None)
        self.side_step.new_items.append(
            self._escalation(
                left_key=left_key,
                right_key=right_key,
                rule="field_map",
                category=UNMAPPABLE_CATEGORY,
                explanation=f"a value of this {side} record does not map:"
                f" {type(exc).__name__}: {exc}; the record is held back until it does",
            )
        )

    def _stage_counterparts(self, stash: Stash) -> None:
        """Read linked records whose counterpart was not listed; stage absent ones as gone.

        A full sweep also looks for links neither of whose records was listed (both deleted,
        or a crash after a propagated delete) and reads both sides by key. Once every listed
        record's counterpart is staged, it scans the links only when fewer links are staged
        than storage holds (the scan is a third of an unchanged record's cost, and usually
        finds nothing).
        """
        if self.incremental:
            # Failed or skipped fixes wait in the queue: re-read their records by key.
            pairs = {
                (i.left_key, i.right_key)
                for i in self.active.values()
                if i.left_key is not None and i.right_key is not None and self._owns(i.left_key)
            }
            left_seen = stash.staged(0, [lk for lk, _ in pairs])
            right_seen = stash.staged(1, [rk for _, rk in pairs])
            self._read_by_key(
                stash, Side.LEFT, sorted(lk for lk, _ in pairs if lk not in left_seen)
            )
            self._read_by_key(
                stash, Side.RIGHT, sorted(rk for _, rk in pairs if rk not in right_seen)
            )
        for side in Side:
            wanted = [o for _, o in stash.missing_counterparts(_SIDE_INDEX[side])]
            self._read_by_key(stash, side.other, wanted, missed=not self.incremental)
        if not self.incremental and self._scan_links(stash):
            unseen: list[tuple[str, str]] = []
            batch = self.rec.batch_size
            for linked in self.storage.iter_link_keys(self.sync.name, batch=batch):
                linked = [pair for pair in linked if self._owns(pair[0])]
                left_seen = stash.staged(0, [left for left, _ in linked])
                right_seen = stash.staged(1, [right for _, right in linked])
                unseen += [
                    (left, right)
                    for left, right in linked
                    if left not in left_seen and right not in right_seen
                ]
            for side in Side:
                keys = [pair[_SIDE_INDEX[side]] for pair in unseen]
                self._read_by_key(stash, side, keys, missed=True)
        # Records listed without some mapped field (a partial answer): read by key once.
        for side in Side:
            self.forced[side].update(self.partial[side])  # staged in full again
            self._read_by_key(stash, side, sorted(set(self.partial[side])))
            self.partial[side].clear()
        # A right record staged light before its left record was staged changed (the left one
        # was read by key later): its pair is decided, so it is read again and staged in full.
        partners = stash.light_partners()
        self.forced[Side.RIGHT].update(partners)
        self._read_by_key(stash, Side.RIGHT, partners)
        self._escalate_invalid()
        stash.checkpoint()

    def _owns(self, left_key: str) -> bool:
        """Whether this cycle decides the link of ``left_key`` (a shard: only its own)."""
        return True

    def _scan_links(self, stash: Stash) -> bool:
        """Whether a full sweep looks for links neither of whose records was staged."""
        return stash.linked_left() < self.storage.count_links(self.sync.name)

    def _read_by_key(
        self, stash: Stash, side: Side, wanted: Sequence[str], *, missed: bool = False
    ) -> None:
        """Read records by key and stage them; a key not found is staged as gone.

        ``missed`` says a full sweep's listing should have returned these records: the ones
        found are counted as missed by the listing (a truncated or inconsistent listing).
        """
        connector = self.sync.connector(side)
        size = connector.capabilities.max_read_batch
        for i in range(0, len(wanted), size):
            keys = wanted[i : i + size]
            try:
                records = read_batch(self.caller, connector, keys, self.invalid[side])
            except PermanentError as exc:
                # Unknown is not gone: these records are not staged (so not decided) this cycle.
                log.error(
                    "%s: reading %d records by key failed; they are not compared this cycle: %s",
                    connector.name,
                    len(keys),
                    exc,
                    exc_info=isinstance(exc, ConnectorBugError),
                )
                self.t.read_failures[connector.name] += len(keys)
                continue
            found = {r.key: r for r in records if r.key in keys}
            self._stage(stash, side, list(found.values()))
            gone = [Record(key=k, deleted=True) for k in keys if k not in found]
            if gone:
                self._stage(stash, side, gone, returned=False)
            alive = sum(1 for r in found.values() if not r.deleted)
            if missed and alive:
                self.t.missed[connector.name] += alive

    def _escalate_invalid(self) -> None:
        """One record-level escalation for each entry a connector returned that is no record."""
        step = Step(at=self.clock.now())
        for side, errors in self.invalid.items():
            for error in errors:
                item = error.item
                key = getattr(item, "key", None)
                shown = key if isinstance(key, str) and key else f"<invalid key {key!r}>"
                name = "left_key" if side is Side.LEFT else "right_key"
                prior = self.active.get(
                    (self.sync.name, *((shown, "") if side is Side.LEFT else ("", shown)), "*")
                )
                if (prior is not None and prior.category == INVALID_RECORD_CATEGORY) or (
                    side,
                    shown,
                ) in self.invalid_seen:
                    continue  # escalated once: earlier, or already in this cycle
                self.invalid_seen.add((side, shown))
                step.new_items.append(
                    self._escalation(
                        rule="connector",
                        category=INVALID_RECORD_CATEGORY,
                        explanation=f"{error}; the entry was skipped and the cycle went on"
                        " with the rest. Fix the connector, then resolve this item.",
                        **{name: shown},
                    )
                )
            if errors:
                self.t.invalid[self.sync.connector(side).name] += len(errors)
                errors.clear()
        self._commit(step)
