"""Field policies: the pure decision core.

A policy answers one question: *given the left value, the right value, the last-synced base
value and the modification times, what happens to this field?* It is a function of values,
with no I/O, no clock and no storage, so a notebook can call it directly::

    >>> from syncrecon import FieldState, decide, recency, escalate
    >>> state = FieldState(field="notes", left="call back", right="called", base="called")
    >>> decide(recency() | escalate("notes"), state).outcome
    <Outcome.TAKE_LEFT: 'take_left'>

Policies compose like tenacity's stop conditions: ``a | b`` tries ``a`` and falls back to
``b`` when ``a`` abstains (returns ``None``). A plain callable ``(FieldState) -> Decision |
None`` is a policy too. When every policy abstains, the field is escalated with category
``"unresolved_conflict"``: syncrecon never guesses.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final, TypeAlias

import attrs

from ._clock import utc
from ._models import Side

__all__ = [
    "MISSING",
    "Decision",
    "Escalate",
    "FieldPolicy",
    "FieldState",
    "Merge",
    "OneSided",
    "Outcome",
    "PolicyLike",
    "Recency",
    "SourceOfTruth",
    "as_policy",
    "decide",
    "escalate",
    "is_blank",
    "merge",
    "merge_lists",
    "one_sided",
    "recency",
    "source_of_truth",
    "values_equal",
]


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing.MISSING
"""The base value of a field that has never been synced (no last agreed value is known)."""


def is_blank(value: Any) -> bool:
    """``None``, an empty string (or only whitespace), an empty list or mapping."""
    if value is None or value is MISSING:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple | set | frozenset | dict):
        return len(value) == 0
    return False


def values_equal(a: Any, b: Any) -> bool:
    """Whether two values count as the same for syncing.

    Python equality (so ``Decimal("3") == 3`` and a str enum equals its text), both blank
    counting as equal, lists and mappings compared item by item, and one exception: a bool
    never equals a number (``True`` and ``1`` are different values in every system we sync).
    """
    if a is b:
        return True
    if is_blank(a) and is_blank(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    a_seq, b_seq = isinstance(a, list | tuple), isinstance(b, list | tuple)
    if a_seq or b_seq:
        return (
            a_seq
            and b_seq
            and len(a) == len(b)
            and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, datetime) and isinstance(b, datetime):
        return utc(a) == utc(b)  # a naive time is taken to be UTC, as everywhere in syncrecon
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # a user value with a broken __eq__
        return False


def _same_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is list or type(a) is tuple:
        for x, y in zip(a, b, strict=True):
            if type(x) is not type(y) or (type(x) in _NESTED and not _same_types(x, y)):
                return False
    elif type(a) is dict:
        for k, v in a.items():
            w = b[k]
            if type(v) is not type(w) or (type(v) in _NESTED and not _same_types(v, w)):
                return False
    return True


_NESTED = (list, tuple, dict)


def unchanged(values: Mapping[str, Any], base: Mapping[str, Any]) -> bool:
    """Whether a record's mapped values are exactly its base: same fields, values and types.

    The compare fast path: C-speed equality first, then a type check (``True == 1`` and
    ``Decimal("1") == 1`` in Python, but not here). A ``False`` only means "decide this pair";
    :func:`values_equal` then judges each field.
    """
    if values != base:
        return False
    for k, v in values.items():
        w = base[k]
        kind = type(v)
        if kind is not type(w):
            return False
        if kind is list:  # the common container (tags, ids): checked inline, it is hot
            for x, y in zip(v, w, strict=True):
                if type(x) is not type(y) or (type(x) in _NESTED and not _same_types(x, y)):
                    return False
        elif (kind is dict or kind is tuple) and not _same_types(v, w):
            return False
    return True


@attrs.frozen(kw_only=True)
class FieldState:
    """Everything a policy may look at for one field of one linked record.

    ``left`` and ``right`` are the current values, both in the sync's common vocabulary (the
    left system's; a field mapping's transform converts the right value). ``base`` is the last
    value both systems agreed on, or :data:`MISSING` when the field was never synced.
    ``left_modified_at``/``right_modified_at`` are the best modification times known, and
    ``left_per_field``/``right_per_field`` tell whether those are the field's own times (True)
    or only the record's (False).
    """

    field: str
    left: Any
    right: Any
    base: Any = MISSING
    left_modified_at: datetime | None = None
    right_modified_at: datetime | None = None
    left_per_field: bool = False
    right_per_field: bool = False

    @property
    def has_base(self) -> bool:
        """Whether a last-synced base value is known."""
        return self.base is not MISSING

    @property
    def left_changed(self) -> bool:
        """Whether the left value moved away from the base (True when there is no base)."""
        return not self.has_base or not values_equal(self.left, self.base)

    @property
    def right_changed(self) -> bool:
        """Whether the right value moved away from the base (True when there is no base)."""
        return not self.has_base or not values_equal(self.right, self.base)

    def value(self, side: Side | str) -> Any:
        """The current value on ``side``."""
        return self.left if Side(side) is Side.LEFT else self.right

    def modified_at(self, side: Side | str) -> datetime | None:
        """The modification time known for ``side``."""
        return self.left_modified_at if Side(side) is Side.LEFT else self.right_modified_at


class Outcome(enum.StrEnum):
    """What a decision does to a field."""

    AGREE = "agree"
    """Both sides already hold the same value; nothing is written."""
    TAKE_LEFT = "take_left"
    """The left value wins and is written to the right system."""
    TAKE_RIGHT = "take_right"
    """The right value wins and is written to the left system."""
    MERGE = "merge"
    """A new value (a merged list) is written to both systems."""
    ESCALATE = "escalate"
    """Nothing is written; the discrepancy waits for an operator."""


@attrs.frozen(kw_only=True)
class Decision:
    """The outcome of a policy for one field, with the reasons for it.

    ``value`` is the value both systems should hold afterwards (``None`` when escalated),
    ``rule`` the name of the policy that decided, ``category`` the escalation category, and
    ``reason`` a sentence a person can read. :meth:`explain` prints all of it.
    """

    outcome: Outcome
    state: FieldState
    rule: str
    reason: str
    value: Any = None
    category: str | None = None

    @classmethod
    def take(cls, side: Side | str, state: FieldState, *, rule: str, reason: str) -> Decision:
        """A decision that ``side``'s value wins (the building block of custom policies)."""
        side = Side(side)
        outcome = Outcome.TAKE_LEFT if side is Side.LEFT else Outcome.TAKE_RIGHT
        return cls(outcome=outcome, state=state, rule=rule, reason=reason, value=state.value(side))

    @property
    def is_discrepancy(self) -> bool:
        """Whether the two sides differed (everything but :attr:`Outcome.AGREE`)."""
        return self.outcome is not Outcome.AGREE

    @property
    def escalated(self) -> bool:
        """Whether the decision leaves the field for an operator."""
        return self.outcome is Outcome.ESCALATE

    @property
    def writes_left(self) -> bool:
        """Whether the left system must be written."""
        return self.outcome in (Outcome.TAKE_RIGHT, Outcome.MERGE) and not values_equal(
            self.value, self.state.left
        )

    @property
    def writes_right(self) -> bool:
        """Whether the right system must be written."""
        return self.outcome in (Outcome.TAKE_LEFT, Outcome.MERGE) and not values_equal(
            self.value, self.state.right
        )

    def explain(self) -> str:
        """A few lines that say what was compared, which rule decided and why.

        Queue items keep this text as it is (``--json`` prints it); the queue's screens show
        it as a person reads it (``syncrecon.queue._views.explanation_text`` reads these
        lines back: keep their shape).
        """
        s = self.state
        base = "never synced" if not s.has_base else repr(s.base)
        lines = [
            f"field {s.field!r}: left={s.left!r} right={s.right!r} base={base}",
            f"  times: left={_fmt_time(s.left_modified_at, s.left_per_field)}"
            f" right={_fmt_time(s.right_modified_at, s.right_per_field)}",
        ]
        if self.outcome is Outcome.ESCALATE:
            lines.append(f"  rule {self.rule}: escalate to an operator ({self.category})")
        elif self.outcome is Outcome.AGREE:
            lines.append("  both sides agree: nothing to do")
        else:
            lines.append(f"  rule {self.rule}: {self.outcome.value} -> {self.value!r}")
        lines.append(f"  why: {self.reason}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.explain()


def _fmt_time(when: datetime | None, per_field: bool) -> str:
    if when is None:
        return "unknown"
    return f"{when.isoformat()} ({'field' if per_field else 'record'})"


PolicyLike: TypeAlias = "FieldPolicy | Callable[[FieldState], Decision | None]"


class FieldPolicy:
    """Base class of field policies.

    Subclasses implement :meth:`__call__`, returning a :class:`Decision` or ``None`` to
    abstain (the next policy of a ``|`` chain then decides). ``decide`` only calls a policy
    when the two values differ.
    """

    name: str = "policy"

    def __call__(self, state: FieldState) -> Decision | None:
        raise NotImplementedError

    def __or__(self, other: PolicyLike) -> FieldPolicy:
        return FallbackChain((self, as_policy(other)))

    def __ror__(self, other: PolicyLike) -> FieldPolicy:
        return FallbackChain((as_policy(other), self))

    def _take(self, side: Side, state: FieldState, reason: str) -> Decision:
        return Decision.take(side, state, rule=self.name, reason=reason)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@attrs.frozen(repr=False)
class FallbackChain(FieldPolicy):
    """Policies tried in order; the first that does not abstain decides."""

    policies: tuple[FieldPolicy, ...]

    @property
    def name(self) -> str:  # type: ignore[override]
        return " | ".join(p.name for p in self.policies)

    def __call__(self, state: FieldState) -> Decision | None:
        for policy in self.policies:
            decision = policy(state)
            if decision is not None:
                return decision
        return None

    def __or__(self, other: PolicyLike) -> FieldPolicy:
        return FallbackChain((*self.policies, as_policy(other)))

    def __repr__(self) -> str:
        return " | ".join(repr(p) for p in self.policies)


@attrs.frozen(repr=False)
class _CallablePolicy(FieldPolicy):
    func: Callable[[FieldState], Decision | None]

    @property
    def name(self) -> str:  # type: ignore[override]
        return getattr(self.func, "__name__", "custom")

    def __call__(self, state: FieldState) -> Decision | None:
        return self.func(state)

    def __repr__(self) -> str:
        return f"as_policy({self.name})"


def as_policy(policy: PolicyLike) -> FieldPolicy:
    """Wrap a plain callable ``(FieldState) -> Decision | None`` as a :class:`FieldPolicy`."""
    if isinstance(policy, FieldPolicy):
        return policy
    if callable(policy):
        return _CallablePolicy(policy)
    raise TypeError(f"a field policy must be a FieldPolicy or a callable, got {policy!r}")


@attrs.frozen(repr=False)
class SourceOfTruth(FieldPolicy):
    """One named system always wins.

    With ``unless_blank=True`` the other side wins while the source of truth's value is blank
    (HubSpot's "prefer Salesforce unless blank").
    """

    side: Side = attrs.field(converter=Side)
    unless_blank: bool = False
    name: str = attrs.field(default="source_of_truth", init=False)

    def __call__(self, state: FieldState) -> Decision | None:
        winner = self.side
        if self.unless_blank and is_blank(state.value(winner)):
            other = winner.other
            return self._take(
                other, state, f"{winner} is the source of truth but its value is blank"
            )
        changed_other = state.right_changed if winner is Side.LEFT else state.left_changed
        note = f"; the change on {winner.other} is not propagated" if changed_other else ""
        return self._take(winner, state, f"{winner} is the source of truth{note}")

    def __repr__(self) -> str:
        extra = ", unless_blank=True" if self.unless_blank else ""
        return f"source_of_truth({self.side.value!r}{extra})"


@attrs.frozen(repr=False)
class OneSided(FieldPolicy):
    """When only one side changed since the base, that change propagates; else abstain."""

    name: str = attrs.field(default="one_sided", init=False)

    def __call__(self, state: FieldState) -> Decision | None:
        return _one_sided(self, state)

    def __repr__(self) -> str:
        return "one_sided()"


def _one_sided(policy: FieldPolicy, state: FieldState) -> Decision | None:
    if not state.has_base:
        return None
    if state.left_changed and not state.right_changed:
        return policy._take(Side.LEFT, state, "only left changed since the last sync")
    if state.right_changed and not state.left_changed:
        return policy._take(Side.RIGHT, state, "only right changed since the last sync")
    return None


@attrs.frozen(repr=False)
class Recency(FieldPolicy):
    """The most recently modified value wins.

    A change on one side only propagates without looking at times. When both sides changed,
    the later modification time wins; per-field times are used where the system has them and
    record-level times otherwise. Times closer together than ``skew`` (clock-skew tolerance)
    or missing times make the policy abstain, which escalates unless a fallback follows.
    """

    skew: timedelta = timedelta(seconds=5)
    name: str = attrs.field(default="recency", init=False)

    def __call__(self, state: FieldState) -> Decision | None:
        one = _one_sided(self, state)
        if one is not None:
            return one
        lt, rt = state.left_modified_at, state.right_modified_at
        if lt is None or rt is None:
            return None
        if abs(lt - rt) <= self.skew:
            return None
        granularity = "field" if state.left_per_field and state.right_per_field else "record-level"
        if lt > rt:
            return self._take(Side.LEFT, state, f"left is newer by {lt - rt} ({granularity} times)")
        return self._take(Side.RIGHT, state, f"right is newer by {rt - lt} ({granularity} times)")

    def __repr__(self) -> str:
        return f"recency(skew={self.skew!r})"


def _hashable(item: Any) -> Hashable:
    if isinstance(item, Hashable):
        return item
    return json.dumps(item, sort_keys=True, default=str)


def _as_list(value: Any) -> list[Any]:
    if value is None or value is MISSING:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return [value]


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple | set | frozenset)


def _same_items(left: list[Any], right: list[Any]) -> bool:
    """Whether two lists hold the same items, whatever their order (duplicates counted)."""
    if len(left) != len(right):
        return False
    unmatched = list(right)
    for item in left:
        for i, other in enumerate(unmatched):
            if values_equal(item, other):
                del unmatched[i]
                break
        else:
            return False
    return True


def merge_lists(left: Iterable[Any], right: Iterable[Any], base: Iterable[Any] | None) -> list[Any]:
    """Three-way, order-stable union of two lists.

    Items of ``left`` come first in their order, then new items of ``right``. An item of the
    base that either side removed stays removed; without a base it is a plain union.
    """
    left_l, right_l = list(left), list(right)
    left_k = {_hashable(x) for x in left_l}
    right_k = {_hashable(x) for x in right_l}
    base_k = set() if base is None else {_hashable(x) for x in base}
    result: list[Any] = []
    seen: set[Hashable] = set()
    for item in (*left_l, *right_l):
        k = _hashable(item)
        if k in seen:
            continue
        seen.add(k)
        if k in base_k and (k not in left_k or k not in right_k):
            continue  # removed on one side since the last sync
        result.append(item)
    return result


@attrs.frozen(repr=False)
class Merge(FieldPolicy):
    """List fields (tags, multi-selects, related ids) take the order-stable union.

    The merge is three-way: an item that one side removed since the base stays removed
    instead of being brought back by the union. Two lists with the same items in another
    order agree: the order of a multi-select is the system's (Salesforce returns its picklist's
    order), so it is never written back and forth.
    """

    name: str = attrs.field(default="merge", init=False)

    def __call__(self, state: FieldState) -> Decision | None:
        base = _as_list(state.base) if state.has_base else None
        left, right = _as_list(state.left), _as_list(state.right)
        if _is_list(state.left) and _is_list(state.right) and _same_items(left, right):
            # A list field is a set of items: the order is the system's, not the user's
            # (Salesforce returns a multi-select in its picklist's order, whatever was
            # written). Writing the other order would bounce between the systems forever.
            return Decision(
                outcome=Outcome.AGREE,
                state=state,
                rule=self.name,
                value=state.left,
                reason="both lists hold the same items (in another order)",
            )
        merged = merge_lists(left, right, base)
        how = "three-way union" if base is not None else "union (never synced)"
        if values_equal(merged, left) or values_equal(merged, state.left):
            return self._take(Side.LEFT, state, f"{how} equals the left list")
        if values_equal(merged, right) or values_equal(merged, state.right):
            return self._take(Side.RIGHT, state, f"{how} equals the right list")
        return Decision(
            outcome=Outcome.MERGE,
            state=state,
            rule=self.name,
            value=merged,
            reason=f"{how} of both lists",
        )

    def __repr__(self) -> str:
        return "merge()"


@attrs.frozen(repr=False)
class Escalate(FieldPolicy):
    """Never resolved automatically: every difference goes to the operator queue."""

    category: str = "manual_review"
    name: str = attrs.field(default="escalate", init=False)

    def __call__(self, state: FieldState) -> Decision | None:
        return Decision(
            outcome=Outcome.ESCALATE,
            state=state,
            rule=self.name,
            category=self.category,
            reason=f"differences in this field always need an operator ({self.category})",
        )

    def __repr__(self) -> str:
        return f"escalate({self.category!r})"


UNRESOLVED_CATEGORY: Final = "unresolved_conflict"


def source_of_truth(side: Side | str, *, unless_blank: bool = False) -> SourceOfTruth:
    """One named system (``"left"`` or ``"right"``) always wins."""
    return SourceOfTruth(Side(side), unless_blank)


def recency(*, skew: timedelta = timedelta(seconds=5)) -> Recency:
    """The most recently modified value wins; abstains within ``skew`` or without times."""
    return Recency(skew)


def merge() -> Merge:
    """List fields take the three-way, order-stable union."""
    return Merge()


def escalate(category: str = "manual_review") -> Escalate:
    """Every difference goes to an operator, under ``category``."""
    return Escalate(category)


def one_sided() -> OneSided:
    """Propagate a change made on one side only; abstain on a conflict."""
    return OneSided()


def decide(policy: PolicyLike, state: FieldState) -> Decision:
    """Decide one field: agree when the values match, else ask ``policy``.

    When the policy abstains the field is escalated with category
    ``"unresolved_conflict"``. Pure: no I/O, no clock.
    """
    if values_equal(state.left, state.right):
        return Decision(
            outcome=Outcome.AGREE,
            state=state,
            rule="agree",
            value=state.left,
            reason="both sides hold the same value",
        )
    decision = as_policy(policy)(state)
    if decision is None:
        return Decision(
            outcome=Outcome.ESCALATE,
            state=state,
            rule=as_policy(policy).name,
            category=UNRESOLVED_CATEGORY,
            reason="no rule could decide (both sides changed and the rule abstained)",
        )
    return decision
