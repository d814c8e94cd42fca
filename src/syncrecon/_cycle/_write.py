"""Step 4, write: carry out the plans, batch by batch, never over a newer value.

Owns the claims of the records written (so a cycle and a fast-loop worker never write one
record at once), the update and delete batches through the one apply path that every writer
takes (:func:`~syncrecon._write_path.apply_writes`: the re-reads of targets and sources
(``verify_source``), the checks, the write), the create batches (a create never twice), the
echo-ledger entries of every write, and the commit of each outcome (bases, links, queue items).

The cycle's steps, in the order it runs them, each a class extending the one before (a later step
calls an earlier one, never the reverse): ``_state`` -> ``_read`` -> ``_match`` -> ``_decide`` ->
``_write`` -> ``_report`` -> ``_run`` (:class:`_Cycle`, the driver).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from .. import _codec
from .._clock import parse_ts
from .._connector import AnyConnector, find_created, write_batch
from .._exceptions import (
    ConnectorBugError,
    ConnectorError,
    RateLimitedError,
    StorageError,
    TransientError,
)
from .._models import Change, ChangeOp, Record, Side, WriteResult
from .._policy import values_equal as _same
from .._stash import PlanRow, Stash
from .._write_path import Applied, PlannedWrite, WriteOutcome, apply_writes, record_name
from ..storage._base import RECORD_FIELD, BaseUpdate, CreateIntent, ItemUpdate, Link, Status, Step
from ._decide import _Decide
from ._state import _SIDE_INDEX

log = logging.getLogger("syncrecon.reconciler")


def _source_holds(record: Record | None, accepted: Mapping[str, list[Any]]) -> bool:
    """Whether a re-read source record still holds, for every field, one accepted value."""
    if record is None or record.deleted:
        return False
    return all(
        name in record.fields and any(_same(record.fields[name], v) for v in values)
        for name, values in accepted.items()
    )


class _Write(_Decide):
    """Writing: claims, re-reads, write batches, echoes and outcomes."""

    def _execute(self, stash: Stash) -> None:
        stash.checkpoint()
        for side in Side:
            connector = self.sync.connector(side)
            caps = connector.capabilities
            size = min(caps.max_read_batch, caps.max_write_batch)
            index = _SIDE_INDEX[side]
            for rows in stash.planned(index, ("update", "delete"), size):
                self._write_existing(stash, side, connector, rows)
                self._renew_lease()
            for rows in stash.planned(index, ("create",), caps.max_write_batch):
                self._write_creates(side, connector, rows)
                self._renew_lease()
        self._finish_shared(stash)

    def _write_existing(
        self, stash: Stash, side: Side, connector: AnyConnector, rows: list[PlanRow]
    ) -> None:
        # Claim both records of every pair first, as a fast-loop worker claims an event's
        # record: a worker between its write and its commit holds it, and a worker gets no
        # events of a record this cycle holds. So a cycle and a worker never write one record
        # at once (a worker's late write cannot cross the cycle's, and a merge never uses a
        # base a worker is about to move). A record a worker holds is left to the next cycle.
        pair_records = {
            r.id: (
                record_name(self.sync.name, Side.LEFT, r.key(0)),
                record_name(self.sync.name, Side.RIGHT, r.key(1)),
            )
            for r in rows
        }
        wanted = sorted({record for pair in pair_records.values() for record in pair})
        granted = self.storage.claim_records(
            self.owner, wanted, now=self.clock.now(), lease=self.rec.lease_ttl
        )
        try:
            self._write_claimed(stash, side, rows, pair_records, granted)
        finally:
            self.storage.release_records(self.owner, sorted(granted))

    def _write_claimed(
        self,
        stash: Stash,
        side: Side,
        rows: list[PlanRow],
        pair_records: Mapping[int, tuple[str, str]],
        granted: set[str],
    ) -> None:
        held = [r for r in rows if not set(pair_records[r.id]) <= granted]
        rows = [r for r in rows if set(pair_records[r.id]) <= granted]
        if not rows:
            step = Step(at=self.clock.now())
            self._skip(step, held)
            stash.mark_done([r.id for r in held], -1)
            self._commit(step)
            return
        keyed = {r.key(_SIDE_INDEX[side]): r for r in rows}
        plan_src = {r.id: _codec.loads(r.src) for r in rows if r.src}
        by_id = {r.id: r for r in rows}
        steps: list[Step] = []

        def checked(outcomes: list[WriteOutcome]) -> None:
            # Changed (or vanished) since it was read, or its source moved on after it was
            # read (a user, or the fast loop): never written over a newer value nor from an
            # old one; the next cycle decides again.
            step = Step(at=self.clock.now())
            steps.append(step)
            skipped = held + [by_id[int(o.planned.ref)] for o in outcomes]
            self._skip(step, skipped)
            stash.mark_done([r.id for r in skipped], -1)

        outcomes = apply_writes(
            self.caller,
            self.sync,
            [self._planned(side, key, row, plan_src.get(row.id)) for key, row in keyed.items()],
            now=self.clock.now,
            echo_ttl=self.rec.echo_ttl,
            checked=checked,
        )
        for o in outcomes:
            if o.kind is Applied.READ_FAILED and o.exc is not None:
                raise o.exc
        (step,) = steps
        made = [o for o in outcomes if o.kind in (Applied.WRITTEN, Applied.FAILED)]
        ok_ids = []
        for o in made:
            row = by_id[int(o.planned.ref)]
            if o.kind is Applied.FAILED:
                self._failed(step, row, o.error, retryable=o.retryable)
                stash.mark_done([row.id], -1)
                continue
            ok_ids.append(row.id)
            self.t.writes[side.value] += 1
            if row.op == ChangeOp.DELETE.value:
                self.t.deleted[side.value] += 1
                left_key, right_key = row.pair
                step.unlink.append((self.sync.name, left_key))
                self._resolve(step, row)
                self._settle_link(step, left_key, right_key, "the record was deleted")
            else:
                # Echo-ledger entries, so the webhooks this write causes are recognized as
                # ours; each with the time of the edit its value copies, so that a later read
                # of the target compares that edit's time, not the write's.
                step.echoes.extend(
                    o.planned.echoes(self.sync.name, now=self.clock.now(), ttl=self.rec.echo_ttl)
                )
                if not row.shared:
                    self._resolve(step, row)
        if made:
            stash.mark_done(ok_ids, 1)
        self._commit(step)

    def _planned(
        self, side: Side, key: str, row: PlanRow, src: Mapping[str, Any] | None
    ) -> PlannedWrite:
        """A planned row as a write of the one apply path: fine while the target holds what
        it held when read (an update: the fields decided from; a delete: not modified since),
        and (``verify_source``) while the source holds one of the values decided from."""
        verify = self.rec.verify_source and src is not None
        source_key = row.key(_SIDE_INDEX[side.other]) if verify else None
        holds_now = (lambda record: _source_holds(record, src["holds"])) if src else None
        source_holds = holds_now if verify else None
        if row.op == ChangeOp.DELETE.value:
            expect_mod = parse_ts(row.expect_mod) if row.expect_mod else None

            def unchanged(record: Record) -> bool:
                mod = record.modified_at
                return expect_mod is None or mod is None or mod <= expect_mod

            return PlannedWrite(
                side=side,
                key=key,
                op=ChangeOp.DELETE,
                unchanged=unchanged,
                source_key=source_key,
                source_holds=source_holds,
                ref=str(row.id),
            )
        copied = src.get("times", {}) if src else {}
        return PlannedWrite(
            side=side,
            key=key,
            fields=_codec.loads(row.fields),
            expected=_codec.loads(row.expect) if row.expect else {},
            source_times={name: parse_ts(at) for name, at in copied.items()},
            source_key=source_key,
            source_holds=source_holds,
            ref=str(row.id),
        )

    def _resolve(self, step: Step, row: PlanRow) -> None:
        """A planned fix landed: update bases and close its queue items."""
        base = _codec.loads(row.base) if row.base else {}
        if row.op != ChangeOp.DELETE.value and base:
            step.bases.append(BaseUpdate(sync=self.sync.name, left_key=row.pair[0], values=base))
        self._close_items(step, row.items, row.rules)

    def _close_items(self, step: Step, items_text: str | None, rules_text: str | None) -> None:
        items = _codec.loads(items_text) if items_text else []
        rules = _codec.loads(rules_text) if rules_text else []
        for rule in rules:
            self.t.auto[rule] += 1
        now = self.clock.now()
        for item_id in items:
            step.item_updates.append(
                ItemUpdate(id=item_id, status=Status.AUTO_RESOLVED, resolved_at=now)
            )

    def _skip(self, step: Step, rows: list[PlanRow]) -> None:
        self.t.skipped += len(rows)
        for row in rows:
            for item_id in _codec.loads(row.items) if row.items else []:
                step.item_updates.append(
                    ItemUpdate(
                        id=item_id,
                        status=Status.OPEN,
                        note="the target changed (or vanished) after it was read; the next"
                        " cycle decides again",
                    )
                )

    def _failed(self, step: Step, row: PlanRow, error: str | None, *, retryable: bool) -> None:
        self.t.write_failures += 1
        for item_id in _codec.loads(row.items) if row.items else []:
            step.item_updates.append(
                ItemUpdate(
                    id=item_id,
                    status=Status.OPEN,
                    note=f"write failed ({'retryable' if retryable else 'rejected'}): {error}",
                )
            )

    def _write_creates(self, side: Side, connector: AnyConnector, rows: list[PlanRow]) -> None:
        """Create records on ``side``, never twice (invariant 2).

        Each create is recorded with a stable idempotency key before the call (a create
        intent, committed first). A create is retried after a lost answer only where that is
        safe: the provider de-duplicates by the key (``idempotent_creates``), or the connector
        can look up what it created (``finds_created``, asked before every retry and before
        creating again what an earlier cycle may have created). Otherwise the intent stays and
        the next full sweep links the record by its natural key.
        """
        source_of = {row.id: row.key(_SIDE_INDEX[side.other]) for row in rows}
        before = self.storage.get_intents(self.sync.name, side, list(source_of.values()))
        now = self.clock.now()
        keys: dict[int, str] = {}
        fresh: list[CreateIntent] = []
        for row in rows:
            intent = before.get(source_of[row.id])
            if intent is None:
                intent = CreateIntent(
                    sync=self.sync.name,
                    side=side,
                    source_key=source_of[row.id],
                    idempotency_key=f"syncrecon-{uuid.uuid4().hex}",
                    created_at=now,
                )
                fresh.append(intent)
            keys[row.id] = intent.idempotency_key
        self._commit(Step(at=now, intents=fresh))
        by_id, ambiguous = self._create(connector, rows, keys, earlier=set(before))
        results = [by_id[row.id] for row in rows]
        step = Step(at=self.clock.now())
        for row, res in zip(rows, results, strict=True):
            if res.ok or row.id not in ambiguous:
                # Linked below, or definitely not created: the intent is done with.
                step.intents_settled.append((self.sync.name, side, source_of[row.id]))
        returned = [r.key for r in results if r.ok and r.key]
        taken = self.storage.get_links(self.sync.name, side, returned) if returned else {}
        for row, res in zip(rows, results, strict=True):
            if res.ok and res.key in taken:
                # The system answered with a record that is already linked (an upsert or a
                # de-duplication on its side): never link one record twice.
                res = WriteResult(
                    ref=res.ref,
                    ok=False,
                    key=res.key,
                    error=f"{side} returned {res.key!r}, which is already linked to another record",
                )
            if not res.ok or not res.key:
                self.t.write_failures += 1
                step.new_items.append(
                    self._item(
                        left_key=row.left_key,
                        right_key=row.right_key,
                        field=RECORD_FIELD,
                        status=Status.OPEN,
                        rule="create_on",
                        explanation=f"creating the record in {side} failed: {res.error}",
                    )
                )
                continue
            self.t.writes[side.value] += 1
            self.t.created[side.value] += 1
            self.t.auto["create_on"] += 1
            prior = self.active.get(
                (self.sync.name, row.left_key or "", row.right_key or "", RECORD_FIELD)
            )
            if prior is not None and prior.rule == "create_on" and prior.id is not None:
                step.item_updates.append(
                    ItemUpdate(
                        id=prior.id, status=Status.AUTO_RESOLVED, resolved_at=self.clock.now()
                    )
                )
            source_key = source_of[row.id]
            step.links.append(
                Link(
                    sync=self.sync.name,
                    left_key=res.key if side is Side.LEFT else source_key,
                    right_key=res.key if side is Side.RIGHT else source_key,
                    natural_key=row.nat,
                    base=_codec.loads(row.base) if row.base else {},
                )
            )
        self._commit(step)

    def _create(
        self,
        connector: AnyConnector,
        rows: list[PlanRow],
        keys: Mapping[int, str],
        *,
        earlier: set[str],
    ) -> tuple[dict[int, WriteResult], set[int]]:
        """Results of creating ``rows`` by plan id, and the ids whose outcome is unknown."""
        caps = connector.capabilities
        results: dict[int, WriteResult] = {}
        ambiguous: set[int] = set()
        todo = rows
        if earlier and caps.finds_created:
            # An earlier attempt may have landed (a lost answer, a crash): look it up first.
            to_right = connector is self.sync.right
            maybe = [
                row for row in rows if (row.left_key if to_right else row.right_key) in earlier
            ]
            found, failed = self._look_up(connector, maybe, keys)
            results.update(found)
            ambiguous |= failed
            for row_id in failed:
                results[row_id] = WriteResult(
                    ref=str(row_id), ok=False, error="looking up an earlier create failed"
                )
            todo = [row for row in rows if row.id not in results]
        tries = self.rec.retry.attempts if caps.finds_created else 1
        while todo:
            changes = [
                Change(
                    op=ChangeOp.CREATE,
                    fields=_codec.loads(row.fields),
                    ref=str(row.id),
                    idempotency_key=keys[row.id],
                )
                for row in todo
            ]
            tries -= 1
            try:
                # The provider de-duplicates by the key: the call itself may be retried.
                out = write_batch(
                    self.caller, connector, changes, attempts=None if caps.idempotent_creates else 1
                )
            except TransientError as exc:
                if tries > 0:
                    if isinstance(exc, RateLimitedError) and exc.retry_after:
                        self.rec.retry.sleep(min(exc.retry_after, self.rec.retry.maximum))
                    found, failed = self._look_up(connector, todo, keys)
                    if not failed:
                        results.update(found)
                        todo = [row for row in todo if row.id not in found]
                        continue
                error = (
                    f"the answer to the create was lost ({type(exc).__name__}: {exc}); the next"
                    " cycle links the record if it was created, or creates it with the same key"
                )
                for row in todo:
                    results[row.id] = WriteResult(
                        ref=str(row.id), ok=False, error=error, retryable=True
                    )
                    ambiguous.add(row.id)
                break
            except (ConnectorError, StorageError) as exc:
                # A refusal (4xx) created nothing; a connector's own bug may have, after the call.
                unknown = isinstance(exc, ConnectorBugError | StorageError)
                if unknown:
                    log.error("%s: creating failed: %s", connector.name, exc, exc_info=True)
                for row in todo:
                    results[row.id] = WriteResult(
                        ref=str(row.id), ok=False, error=f"{type(exc).__name__}: {exc}"
                    )
                    if unknown:
                        ambiguous.add(row.id)
                break
            results.update({int(res.ref): res for res in out})
            break
        return results, ambiguous

    def _look_up(
        self, connector: AnyConnector, rows: list[PlanRow], keys: Mapping[int, str]
    ) -> tuple[dict[int, WriteResult], set[int]]:
        """Records ``connector`` already created for ``rows`` (by idempotency key), as results;
        and the ids that could not be looked up."""
        if not rows:
            return {}, set()
        try:
            found = find_created(self.caller, connector, [keys[row.id] for row in rows])
        except (ConnectorError, StorageError) as exc:
            log.warning("%s: looking up earlier creates failed: %s", connector.name, exc)
            return {}, {row.id for row in rows}
        out = {}
        for row in rows:
            record = found.get(keys[row.id])
            if record is not None:
                out[row.id] = WriteResult(ref=str(row.id), ok=True, key=record.key)
        return out, set()

    def _finish_shared(self, stash: Stash) -> None:
        """Links written on both sides: their bases move only once both writes landed."""
        step = Step(at=self.clock.now())
        for left_key, base_text, items_text, rules_text in stash.shared_complete():
            base = _codec.loads(base_text) if base_text else {}
            step.bases.append(BaseUpdate(sync=self.sync.name, left_key=left_key, values=base))
            self._close_items(step, items_text, rules_text)
        self._commit(step)
