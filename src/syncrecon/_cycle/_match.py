"""Step 2, match: link records by natural key, guard deletions, plan creates and deletes.

Owns what happens to records by their partner: natural-key matching (two candidates
escalate as possible duplicates, never a guess), the mass-delete guard (a cycle that would
delete too much is halted before it writes), the delete of a pair with a side gone, and the
creates of records that exist on one side only.

The cycle's steps, in the order it runs them, each a class extending the one before (a later step
calls an earlier one, never the reverse): ``_state`` -> ``_read`` -> ``_match`` -> ``_decide`` ->
``_write`` -> ``_report`` -> ``_run`` (:class:`_Cycle`, the driver).
"""

from __future__ import annotations

from typing import Any

from .. import _codec
from .._models import ChangeOp, Side
from .._stash import PairRow, Planned, Single, Stash
from ..storage._base import RECORD_FIELD, Discrepancy, Link, Status, Step
from ._read import _Read
from ._state import _SIDE_INDEX

DUPLICATE_CATEGORY = "possible_duplicate"


NO_NATURAL_KEY_CATEGORY = "no_natural_key"


DELETION_CATEGORY = "deletion"


MASS_DELETE_CATEGORY = "mass_delete"


class _Match(_Read):
    """Matching: links by natural key, the mass-delete guard, deletes and creates."""

    def _match(self, stash: Stash) -> None:
        """Link unlinked records by natural key; two candidates escalate, never guess."""
        if self.sync.natural_key is None:
            return
        groups: dict[str, tuple[list[str], list[str]]] = {}

        def flush() -> None:
            if not groups:
                return
            known = self.storage.links_by_natural_key(self.sync.name, list(groups))
            pending: list[tuple[str, str]] = []
            for nat, (lefts, rights) in groups.items():
                taken = known.get(nat, [])
                if len(lefts) == 1 and len(rights) == 1 and not taken:
                    pending.append((lefts[0], rights[0]))
                elif len(lefts) + len(rights) + len(taken) > 1:
                    self._duplicate(nat, lefts, rights, taken)
                    stash.hold([(0, k) for k in lefts] + [(1, k) for k in rights])
            stash.add_matches(pending)
            groups.clear()

        last: str | None = None
        for nat, side, key in stash.unlinked_by_natural_key():
            if nat is None:
                continue
            # Rows come ordered by natural key: flush only between two groups.
            if nat != last and len(groups) >= self.rec.batch_size:
                flush()
            last = nat
            lefts, rights = groups.setdefault(nat, ([], []))
            (lefts if side == 0 else rights).append(key)
        flush()
        self.t.new_links += stash.apply_matches()

    def _duplicate(self, nat: str, lefts: list[str], rights: list[str], taken: list[Link]) -> None:
        others = [f"left {k}" for k in lefts] + [f"right {k}" for k in rights]
        others += [f"linked {lk.left_key}<->{lk.right_key}" for lk in taken]
        keys = [(k, None) for k in lefts] + [(None, k) for k in rights]
        items = [
            self._escalation(
                left_key=lk,
                right_key=rk,
                rule="natural_key",
                category=DUPLICATE_CATEGORY,
                explanation=f"natural key {nat!r} matches several records: {', '.join(others)};"
                " they are not linked until an operator decides",
            )
            for lk, rk in keys
        ]
        self._commit(Step(at=self.clock.now(), new_items=items))

    def _guard(self, stash: Stash, mode: str) -> str | None:
        if self.sync.delete_from is None:
            return None
        gone = stash.count_deleted_pairs(_SIDE_INDEX[self.sync.delete_from])
        linked = self.storage.count_links(self.sync.name)
        if gone == 0 or gone <= self.rec.max_delete_fraction * linked:
            return None
        reason = (
            f"{gone} of {linked} linked records would be deleted"
            f" (more than {self.rec.max_delete_fraction:.0%}); nothing was written"
            f" ({mode} sweep). Check the {self.sync.delete_from} system, then resolve this item."
        )
        item = self._escalation(
            rule="mass_delete_guard",
            category=MASS_DELETE_CATEGORY,
            explanation=reason,
        )
        self._commit(Step(at=self.clock.now(), new_items=[item]))
        return reason

    def _gone(
        self,
        step: Step,
        plans: list[Planned],
        plan_items: list[list[Discrepancy]],
        row: PairRow,
    ) -> None:
        lkey, rkey, ldel, rdel = row.left_key, row.right_key, row.left_deleted, row.right_deleted
        if ldel and rdel:
            step.unlink.append((self.sync.name, lkey))
            self._settle_link(step, lkey, rkey, "the record is deleted in both systems")
            return
        deleted = Side.LEFT if ldel else Side.RIGHT
        survivor = deleted.other
        self.t.found += 1
        if self.sync.delete_from is deleted:
            item = self._item(
                left_key=lkey,
                right_key=rkey,
                field=RECORD_FIELD,
                status=Status.OPEN,
                rule="delete_from",
                explanation=f"deleted in {deleted}, the side whose deletions propagate",
            )
            if self.dry_run:
                self.t.auto["delete_from"] += 1
                return
            step.new_items.append(item)
            plans.append(
                Planned(
                    target=_SIDE_INDEX[survivor],
                    op=ChangeOp.DELETE.value,
                    left_key=lkey,
                    right_key=rkey,
                    nat=row.nat,
                    fields="{}",
                    expect=None,
                    expect_mod=row.left_mod if survivor is Side.LEFT else row.right_mod,
                    base=row.base,
                    items="[]",
                    rules=_codec.dumps(["delete_from"]),
                    shared=0,
                    src=None,
                )
            )
            plan_items.append([item])
            return
        self.t.escalated[DELETION_CATEGORY] += 1
        step.new_items.append(
            self._item(
                left_key=lkey,
                right_key=rkey,
                field=RECORD_FIELD,
                status=Status.ESCALATED,
                rule="delete_from",
                category=DELETION_CATEGORY,
                explanation=f"deleted in {deleted}, whose deletions do not propagate"
                f" ({'no side' if self.sync.delete_from is None else self.sync.delete_from}"
                " is the source of deletions)",
            )
        )

    def _plan_singles(self, stash: Stash) -> None:
        """Plan creates for records that exist on one side only, where the sync allows it.

        Only full sweeps create: an incremental pass does not see unchanged unlinked records
        on the other side, so it could not tell a missing record from an unmatched one.
        """
        if self.incremental:
            return
        for side in Side:
            target = side.other
            if target not in self.sync.create_on:
                continue
            for batch in stash.singles(_SIDE_INDEX[side], self.rec.batch_size):
                self._plan_creates(stash, side, target, batch)

    def _plan_creates(self, stash: Stash, side: Side, target: Side, batch: list[Single]) -> None:
        nk = self.sync.natural_key
        assert nk is not None
        nk_source = nk.left if side is Side.LEFT else nk.right
        nk_target = nk.right if target is Side.RIGHT else nk.left
        rows = []
        items = []
        for key, nat, proj_text, raw_text in batch:
            if proj_text is None:
                continue  # its values do not map: held and escalated, never created
            if nat is None:
                # Without a natural key a create could not be matched back after a crash.
                items.append(
                    self._escalation(
                        left_key=key if side is Side.LEFT else None,
                        right_key=key if side is Side.RIGHT else None,
                        rule="create_on",
                        category=NO_NATURAL_KEY_CATEGORY,
                        explanation=f"this {side} record has no natural key, so it is not"
                        f" created in {target}; give it one or link it by hand",
                    )
                )
                continue
            proj = _codec.loads(proj_text)
            fields: dict[str, Any] = {}
            base: dict[str, Any] = {}
            for fm in self._fields:
                if not fm.direction.allows_write(target) or fm.left in self.quarantined:
                    continue
                if fm.left not in proj:
                    continue  # unknown (absent) or held (does not fit): never created blank
                value = proj[fm.left]
                base[fm.left] = value
                if target is Side.RIGHT:
                    fields[fm.right] = fm.transform.to_right(value)
                else:
                    fields[fm.left] = value
            raw = _codec.loads(raw_text) if raw_text else {}
            if nk_target not in fields and nk_source in raw:
                fields[nk_target] = raw[nk_source]
            self.t.found += 1
            if self.dry_run:
                self.t.auto["create_on"] += 1
                continue
            lkey, rkey = (key, None) if side is Side.LEFT else (None, key)
            rows.append(
                Planned(
                    target=_SIDE_INDEX[target],
                    op=ChangeOp.CREATE.value,
                    left_key=lkey,
                    right_key=rkey,
                    nat=nat,
                    fields=_codec.dumps(fields),
                    expect=None,
                    expect_mod=None,
                    base=_codec.dumps(base),
                    items="[]",
                    rules=_codec.dumps(["create_on"]),
                    shared=0,
                    src=None,
                )
            )
        stash.plan(rows)
        self._commit(Step(at=self.clock.now(), new_items=items))
