"""Step 3, decide: the schema check, then every linked pair's fields by their policies.

Owns the schema check (a breaking change quarantines its field), the comparison of each
staged pair (the fast path for pairs where nothing changed), the per-field decision with its
guards (recency against the order guard and the echo ledger, escalated fields, values that
do not fit), the queue items it opens or closes, and the plans of the writes that fix them.

The cycle's steps, in the order it runs them, each a class extending the one before (a later step
calls an earlier one, never the reverse): ``_state`` -> ``_read`` -> ``_match`` -> ``_decide`` ->
``_write`` -> ``_report`` -> ``_run`` (:class:`_Cycle`, the driver).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from .. import _codec
from .._clock import parse_ts, ts
from .._codec import fingerprint
from .._connector import describe
from .._drift import INVALID_VALUE_CATEGORY
from .._models import ChangeOp, FieldInfo, Side
from .._policy import MISSING, Decision, FieldState, Outcome
from .._policy import values_equal as _same
from .._stash import PairRow, Planned, Stash
from .._sync import FieldMap
from .._write_path import holds
from ..storage._base import (
    RECORD_FIELD,
    BaseUpdate,
    Counter,
    Discrepancy,
    FieldSchema,
    ItemUpdate,
    Link,
    SeenMark,
    Status,
    Step,
)
from ._match import DUPLICATE_CATEGORY, _Match
from ._state import _EPOCH, _MICROSECOND, _SIDE_INDEX, _iso

log = logging.getLogger("syncrecon.reconciler")


def _source_time(decision: Decision, state: FieldState) -> datetime | None:
    """The source time of the value a decision settles on: the winning side's for a take, the
    later of the two for an agreement or a merge (``None`` when no time is known)."""
    if decision.outcome is Outcome.TAKE_LEFT:
        return state.left_modified_at
    if decision.outcome is Outcome.TAKE_RIGHT:
        return state.right_modified_at
    known = [t for t in (state.left_modified_at, state.right_modified_at) if t is not None]
    return max(known, default=None)


def _copied_times(state: FieldState, left: datetime | None, right: datetime | None) -> FieldState:
    """``state`` with each side that holds a value syncrecon wrote timed by the edit that value
    copies (``left``/``right``, from the echo ledger; ``None``: the side's own time stands).

    A system stamps a written value with the time of the write, which may be later than an edit
    made on the other side after the edit the value copies; recency compares the edits."""
    if left is not None:
        state = attrs.evolve(state, left_modified_at=left, left_per_field=True)
    if right is not None:
        state = attrs.evolve(state, right_modified_at=right, right_per_field=True)
    return state


def _plan_source(holds: Mapping[str, list[Any]], times: Mapping[str, str]) -> str:
    """A planned update's ``src``: per source field, the values the source may still hold for
    the write to go ahead (``holds``); per target field, the time of the edit the written
    value copies (``times``, for its echo entry)."""
    return _codec.dumps({"holds": holds, "times": times})


def _with_mod_texts(row: PairRow) -> PairRow:
    """A staged pair with both modification times as text (a light record keeps its time as
    microseconds: formatting it is left to the few pairs that are decided)."""
    lmod, rmod, lus, rus = row.left_mod, row.right_mod, row.left_modus, row.right_modus
    if (lmod is not None or lus is None) and (rmod is not None or rus is None):
        return row
    if lmod is None and lus is not None:
        lmod = ts(_EPOCH + lus * _MICROSECOND)
    if rmod is None and rus is not None:
        rmod = ts(_EPOCH + rus * _MICROSECOND)
    return row._replace(left_mod=lmod, right_mod=rmod)


def _settled(row: PairRow, active_links: set[tuple[str, str]]) -> bool:
    """Whether a staged pair needs no decision: nothing changed anywhere (the fast path)."""
    return (
        row.left_proj == row.right_proj == (row.base or "{}")
        and (row.left_key, row.right_key) not in active_links
        and row.left_bad is None
        and row.right_bad is None
    )


class _Decide(_Match):
    """Deciding: the schema check, each pair's fields, and the plans of the fixes."""

    def _check_schema(self) -> frozenset[str]:
        """Compare each mapped field's description with the stored one; quarantine breaks.

        Returns the fields (left names) whose writes are stopped: those with an active
        ``schema_drift`` escalation, new or earlier. Resolving it lifts the quarantine.
        """
        from .. import _drift

        described: dict[Side, dict[str, FieldInfo]] = {}
        for side in Side:
            connector = self.sync.connector(side)
            if connector.capabilities.describes_fields:
                try:
                    listed = describe(self.caller, connector)
                except Exception:  # drift detection is a check, not a reason to stop syncing
                    log.warning(
                        "%s.describe_fields failed; schema drift not checked",
                        connector.name,
                        exc_info=True,
                    )
                    continue
                if listed:
                    described[side] = {i.name: i for i in listed}
        stored = {(s.side, s.field): s for s in self.storage.get_schemas(self.sync.name)}
        for (side, name), schema in stored.items():
            self.field_info.setdefault(side, {})[name] = schema.info
        for side, by_name in described.items():
            for name, described_info in by_name.items():
                self.field_info.setdefault(side, {})[name] = _drift.describe(described_info)[1]
        step = Step(at=self.clock.now())
        breaking: dict[str, list[str]] = {}
        earlier = {
            key[3]
            for key, item in self.active.items()
            if item.category == _drift.SCHEMA_DRIFT_CATEGORY and key[1] == key[2] == ""
        }
        for fm in self._fields:
            for side, by_name in described.items():
                name = fm.left if side is Side.LEFT else fm.right
                info = by_name.get(name)
                old = stored.get((side, name))
                new = None
                if info is not None:
                    fp, new = _drift.describe(info)
                    if old is None or old.fingerprint != fp:
                        step.schemas.append(
                            FieldSchema(
                                sync=self.sync.name, side=side, field=name, fingerprint=fp, info=new
                            )
                        )
                change = _drift.classify(fm, side, None if old is None else old.info, new)
                if change is None or (change.breaking and fm.left in earlier):
                    continue  # nothing new, or already waiting for an operator
                if change.breaking:
                    breaking.setdefault(fm.left, []).append(change.description)
                step.counters.append(
                    Counter(
                        metric="schema_changes",
                        labels={"sync": self.sync.name, "breaking": str(change.breaking).lower()},
                    )
                )
        for name, what in breaking.items():
            step.new_items.append(
                self._escalation(
                    field=name,
                    rule="schema",
                    category=_drift.SCHEMA_DRIFT_CATEGORY,
                    explanation="; ".join(what)
                    + ". Writes to this field are stopped until an operator updates the mapping"
                    " and resolves this item; the next cycle then repairs what was held back.",
                )
            )
        self._commit(step)
        return frozenset(earlier | set(breaking))

    def _compare(self, stash: Stash) -> None:
        """Decide every linked pair's fields; queue discrepancies; plan the fixes."""
        active_links = {(k[1], k[2]) for k in self.active}
        stash.mark_active(active_links)
        for rows in stash.pairs(self.rec.batch_size):
            began = time.process_time()
            step = Step(at=self.clock.now())
            plans: list[Planned] = []
            plan_items: list[list[Discrepancy]] = []
            # The latest source time applied to each field (by either loop): a value read
            # before it is older than the agreed state and is never written.
            self.applied = self.storage.get_field_times(
                self.sync.name,
                [
                    (row.left_key, fm.left)
                    for row in rows
                    if not (row.left_deleted or row.right_deleted)
                    for fm in self._fields
                ],
            )
            self._load_echoes(
                [
                    row
                    for row in rows
                    if not (row.left_deleted or row.right_deleted)
                    and row.left_proj is not None
                    and row.right_proj is not None
                    and not _settled(row, active_links)
                ]
            )
            for staged in rows:
                row = _with_mod_texts(staged)
                if row.right_light:
                    # Its left record changed but the right one's own values were never read
                    # (its read by key failed): unknown, so not decided this cycle.
                    continue
                if row.left_deleted or row.right_deleted:
                    self._gone(step, plans, plan_items, row)
                    continue
                if row.left_proj is None or row.right_proj is None:
                    continue  # held back: a value does not map (escalated)
                if _settled(row, active_links):
                    continue  # the fast path: nothing changed anywhere
                self._decide_pair(step, plans, plan_items, row)
            self._phase("decide", began)
            ids = self._commit(step)
            self._plan(stash, plans, plan_items, step.new_items, ids)

    def _load_echoes(self, rows: Sequence[PairRow]) -> None:
        """The echo entries with a source time of the records about to be decided: one storage
        call per batch. A side whose field holds such an entry's value holds a value syncrecon
        wrote (or is writing: the fast loop records before it writes, and commits its base only
        after), and the entry's time is when the edit it copies happened."""
        self.echoed = (
            self.storage.echo_times(
                self.sync.name,
                [
                    (side, row.left_key if side is Side.LEFT else row.right_key)
                    for row in rows
                    for side in Side
                ],
                self.clock.now(),
            )
            if rows
            else {}
        )
        self.echoed_fields = {at[:3] for at in self.echoed}

    def _echo_time(
        self, side: Side, key: str, name: str, values: Mapping[str, Any]
    ) -> datetime | None:
        """The edit time of ``values[name]`` on ``side`` if syncrecon wrote that value there
        (its fingerprint is in the echo ledger with a source time), else ``None``."""
        if (side, key, name) not in self.echoed_fields or name not in values:
            return None
        return self.echoed.get((side, key, name, fingerprint(values[name])))

    def _decide_pair(
        self,
        step: Step,
        plans: list[Planned],
        plan_items: list[list[Discrepancy]],
        row: PairRow,
    ) -> None:
        lkey, rkey, base_text, nat = row.left_key, row.right_key, row.base, row.nat
        lmod, rmod, lft, rft, rraw = (
            row.left_mod,
            row.right_mod,
            row.left_ftimes,
            row.right_ftimes,
            row.right_raw,
        )
        bad = {
            Side.LEFT: _codec.loads(row.left_bad) if row.left_bad else {},
            Side.RIGHT: _codec.loads(row.right_bad) if row.right_bad else {},
        }
        assert row.left_proj is not None
        assert row.right_proj is not None
        left = _codec.loads(row.left_proj)
        right = _codec.loads(row.right_proj)
        base = _codec.loads(base_text) if base_text else {}
        right_raw = _codec.loads(rraw) if rraw else {}
        is_new = base_text is None
        times = (
            parse_ts(lmod) if lmod else None,
            parse_ts(rmod) if rmod else None,
            _codec.loads(lft) if lft else {},
            _codec.loads(rft) if rft else {},
        )
        if is_new:
            step.links.append(
                Link(sync=self.sync.name, left_key=lkey, right_key=rkey, natural_key=nat)
            )
            if self.sync.create_on:
                # Matched by natural key: a create an earlier cycle may have made is found.
                step.intents_settled += [
                    (self.sync.name, Side.RIGHT, lkey),
                    (self.sync.name, Side.LEFT, rkey),
                ]
            # The records are now matched one to one: earlier duplicate doubts are settled.
            for key in (
                (self.sync.name, lkey, "", RECORD_FIELD),
                (self.sync.name, "", rkey, RECORD_FIELD),
            ):
                self._close_record_item(step, key, DUPLICATE_CATEGORY, "matched one to one")
        base_values: dict[str, Any] = {}
        writes: dict[Side, dict[str, Any]] = {Side.LEFT: {}, Side.RIGHT: {}}
        expect: dict[Side, dict[str, Any]] = {Side.LEFT: {}, Side.RIGHT: {}}
        source: dict[Side, dict[str, list[Any]]] = {Side.LEFT: {}, Side.RIGHT: {}}
        copies: dict[Side, dict[str, str]] = {Side.LEFT: {}, Side.RIGHT: {}}
        pending_base: dict[str, Any] = {}
        fixes: list[tuple[Decision, Discrepancy]] = []
        for fm in self._fields:
            if fm.left in self.quarantined:
                continue  # schema drift: no decision, no write, no base move until resolved
            if fm.left in bad[Side.LEFT] or fm.left in bad[Side.RIGHT]:
                self._invalid_value(step, lkey, rkey, fm, bad)
                continue  # held: a value that does not fit is never decided or written
            if fm.left not in left or fm.left not in right:
                self.t.unknown_fields += 1
                continue  # absent is unknown, not blank: not decided for this record
            state = _copied_times(
                self._state(fm, left, right, base, times),
                self._echo_time(Side.LEFT, lkey, fm.left, left),
                self._echo_time(Side.RIGHT, rkey, fm.right, right_raw),
            )
            decision = fm.decide(state)
            applied = self.applied.get((lkey, fm.left))
            source_time = _source_time(decision, state)
            if (
                applied is not None
                and self.started is not None
                and applied > self.started
                and decision.rule == "recency"
                and decision.outcome is not Outcome.AGREE
                and source_time is not None
                and source_time < applied
            ):
                # The newest change wins, and a change of this field newer than the winning
                # value was made after this cycle began, and applied (by the fast loop), maybe
                # after this record was read: the value read may be older than the agreed
                # state. Not decided now; the next cycle reads both sides again. A change
                # older than the cycle is not waited for: either the reads show it, or the
                # re-reads before writing catch its late commit, or its value is gone from
                # both systems (overwritten by a write it raced), and waiting for it would
                # hold the field forever. (Other rules do not go by time: a source of truth
                # wins whatever the other side's times.)
                self.t.skipped += 1
                continue
            if (
                source_time is not None
                and not decision.escalated
                and (applied is None or source_time > applied)
            ):
                # The order guard learns what this cycle settles or writes (invariant 1).
                step.field_times.append((self.sync.name, lkey, fm.left, source_time))
            key = (self.sync.name, lkey, rkey, fm.left)
            prior = self.active.get(key)
            if (
                prior is not None
                and prior.status is Status.ESCALATED
                and decision.outcome is not Outcome.AGREE
                and not decision.escalated
            ):
                # Invariant: an escalated field changes only by an operator's decision.
                decision = attrs.evolve(
                    decision,
                    outcome=Outcome.ESCALATE,
                    value=None,
                    category=prior.category,
                    reason=f"waiting for an operator since {prior.detected_at.isoformat()}"
                    f" ({prior.category}); {decision.rule} would now say: {decision.reason}",
                )
            if (
                decision.outcome in (Outcome.TAKE_LEFT, Outcome.MERGE)
                and not decision.writes_left
                and holds(fm, Side.RIGHT, right_raw.get(fm.right), decision.value)
            ):
                decision = attrs.evolve(
                    decision,
                    outcome=Outcome.AGREE,
                    reason="the right system already holds this value in its own vocabulary",
                )
            if decision.outcome is Outcome.AGREE:
                if not state.has_base or not _same(base.get(fm.left), decision.value):
                    base_values[fm.left] = decision.value
                if prior is not None:
                    closed = (
                        Status.AUTO_RESOLVED if prior.status is Status.OPEN else Status.RESOLVED
                    )
                    assert prior.id is not None
                    step.item_updates.append(
                        ItemUpdate(
                            id=prior.id,
                            status=closed,
                            resolution=decision.value,
                            resolved_at=self.clock.now(),
                            note="both systems now agree",
                        )
                    )
                    if closed is Status.AUTO_RESOLVED and prior.rule:
                        self.t.auto[prior.rule] += 1
                continue
            self.t.found += 1
            item = self._item(
                left_key=lkey,
                right_key=rkey,
                field=fm.left,
                status=Status.ESCALATED if decision.escalated else Status.OPEN,
                left_value=state.left,
                right_value=state.right,
                base_value=None if not state.has_base else state.base,
                has_base=state.has_base,
                rule=decision.rule,
                category=decision.category,
                explanation=decision.explain(),
                resolution=None if decision.escalated else decision.value,
            )
            if decision.escalated:
                assert decision.category is not None
                self.t.escalated[decision.category] += 1
                step.new_items.append(item)
                continue
            fixes.append((decision, item))
            pending_base[fm.left] = decision.value
            if decision.writes_right:
                writes[Side.RIGHT][fm.right] = fm.transform.to_right(decision.value)
                expect[Side.RIGHT][fm.right] = right_raw.get(fm.right)
                # The source (left) must still hold what was read, or what this cycle writes
                # to it too (a merge): re-read with the target before writing.
                source[Side.RIGHT][fm.left] = [state.left, decision.value]
                if source_time is not None:
                    copies[Side.RIGHT][fm.right] = ts(source_time)
            if decision.writes_left:
                writes[Side.LEFT][fm.left] = decision.value
                expect[Side.LEFT][fm.left] = state.left
                source[Side.LEFT][fm.right] = [
                    right_raw.get(fm.right),
                    fm.transform.to_right(decision.value),
                ]
                if source_time is not None:
                    copies[Side.LEFT][fm.left] = ts(source_time)
        if base_values and not is_new:
            step.bases.append(BaseUpdate(sync=self.sync.name, left_key=lkey, values=base_values))
        elif is_new:
            step.links[-1] = attrs.evolve(step.links[-1], base=base_values)
        if not fixes:
            self._mark_settled(step, row, {**base, **base_values})
            return
        items = [item for _, item in fixes]
        rules = [d.rule for d, _ in fixes]
        if self.dry_run:
            for rule in rules:
                self.t.auto[rule] += 1
            return
        step.new_items.extend(items)
        targets = [side for side in Side if writes[side]]
        shared = int(len(targets) == 2)
        for side in targets:
            mod = times[0] if side is Side.LEFT else times[1]
            plans.append(
                Planned(
                    target=_SIDE_INDEX[side],
                    op=ChangeOp.UPDATE.value,
                    left_key=lkey,
                    right_key=rkey,
                    nat=nat,
                    fields=_codec.dumps(writes[side]),
                    expect=_codec.dumps(expect[side]),
                    expect_mod=_iso(mod),
                    base=_codec.dumps(pending_base),
                    items="[]",
                    rules=_codec.dumps(rules),
                    shared=shared,
                    src=_plan_source(source[side], copies[side]),
                )
            )
            plan_items.append(items)

    def _state(
        self,
        fm: FieldMap,
        left: Mapping[str, Any],
        right: Mapping[str, Any],
        base: Any,
        times: tuple[datetime | None, datetime | None, dict[str, Any], dict[str, Any]],
    ) -> FieldState:
        lmod, rmod, lft, rft = times
        name = fm.left
        lt = lft.get(name)
        rt = rft.get(name)
        return FieldState(
            field=name,
            left=left.get(name),
            right=right.get(name),
            base=base.get(name, MISSING),
            left_modified_at=parse_ts(lt) if lt else lmod,
            right_modified_at=parse_ts(rt) if rt else rmod,
            left_per_field=lt is not None,
            right_per_field=rt is not None,
        )

    def _invalid_value(
        self, step: Step, lkey: str, rkey: str, fm: FieldMap, bad: Mapping[Side, Mapping[str, str]]
    ) -> None:
        """Escalate, once, a field of a linked record held because a value does not fit."""
        prior = self.active.get((self.sync.name, lkey, rkey, fm.left))
        if prior is not None and (
            prior.category == INVALID_VALUE_CATEGORY or prior.status is Status.ESCALATED
        ):
            return  # already waiting for an operator
        what = [
            f"{self.sync.connector(side).name} record {lkey if side is Side.LEFT else rkey!r}:"
            f" {bad[side][fm.left]}"
            for side in Side
            if fm.left in bad[side]
        ]
        step.new_items.append(
            self._escalation(
                left_key=lkey,
                right_key=rkey,
                field=fm.left,
                rule="field_check",
                category=INVALID_VALUE_CATEGORY,
                explanation="; ".join(what) + ". This field of this record is held (not decided,"
                " not written) until the value fits; every other field still syncs.",
            )
        )

    def _mark_settled(self, step: Step, row: PairRow, base: Mapping[str, Any]) -> None:
        """Mark each side of a decided pair that now holds exactly its new base (so the next
        cycle finds it unchanged without reading it in full)."""
        if self.dry_run or row.left_bad or row.right_bad:
            return
        base_text = _codec.dumps(dict(base))
        for side, proj_text, mod in (
            (Side.LEFT, row.left_proj, row.left_mod),
            (Side.RIGHT, row.right_proj, row.right_mod),
        ):
            if proj_text != base_text:
                continue
            step.marks.append(
                SeenMark(
                    sync=self.sync.name,
                    side=side,
                    left_key=row.left_key,
                    base=base_text,
                    seen=self._seen(parse_ts(mod)) if mod else None,
                    digest=self._digest(proj_text),
                )
            )

    def _plan(
        self,
        stash: Stash,
        plans: list[Planned],
        plan_items: list[list[Discrepancy]],
        committed: list[Discrepancy],
        ids: list[int],
    ) -> None:
        """Store planned writes with the queue ids of the items they resolve."""
        by_object = {id(item): item_id for item, item_id in zip(committed, ids, strict=True)}
        stash.plan(
            plan._replace(items=_codec.dumps([by_object[id(item)] for item in items]))
            for plan, items in zip(plans, plan_items, strict=True)
        )
