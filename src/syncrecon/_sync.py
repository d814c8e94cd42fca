"""A sync definition: two connectors, the field mapping, the natural key and the policies."""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ._connector import AnyConnector
from ._exceptions import ConfigurationError
from ._models import Side
from ._policy import (
    Decision,
    FieldPolicy,
    FieldState,
    Outcome,
    as_policy,
    decide,
    source_of_truth,
)

__all__ = [
    "Direction",
    "FieldMap",
    "NaturalKey",
    "SyncDefinition",
    "Transform",
    "mapping_fingerprint",
    "normalize_email",
    "value_map",
]


def _identity(value: Any) -> Any:
    return value


@attrs.frozen(kw_only=True)
class Transform:
    """A two-way value conversion between the left and the right system's vocabularies.

    Values are compared in the left vocabulary: ``to_left`` converts right values when they
    are read, ``to_right`` converts values written to the right system.
    """

    to_right: Callable[[Any], Any] = _identity
    to_left: Callable[[Any], Any] = _identity
    left_values: frozenset[Any] | None = None
    """The left picklist values the transform maps (schema drift watches them)."""
    right_values: frozenset[Any] | None = None
    """The right picklist values the transform maps."""


def value_map(mapping: Mapping[Any, Any], *, strict: bool = False) -> Transform:
    """A picklist value map ``{left value: right value}`` (it must be one-to-one).

    Unmapped values pass through unchanged, or raise ``ValueError`` with ``strict=True``.
    """
    forward = dict(mapping)
    backward = {v: k for k, v in forward.items()}
    if len(backward) != len(forward):
        raise ConfigurationError("a value map must be one-to-one")

    def lookup(table: dict[Any, Any], value: Any) -> Any:
        if value is None:
            return None
        try:
            return table[value]
        except (KeyError, TypeError):
            if strict:
                raise ValueError(f"no mapping for value {value!r}") from None
            return value

    return Transform(
        to_right=lambda v: lookup(forward, v),
        to_left=lambda v: lookup(backward, v),
        left_values=frozenset(forward),
        right_values=frozenset(backward),
    )


class Direction(enum.StrEnum):
    """Which way a field may flow."""

    BOTH = "both"
    LEFT_TO_RIGHT = "left_to_right"
    RIGHT_TO_LEFT = "right_to_left"

    def allows_write(self, side: Side) -> bool:
        """Whether values may be written to ``side``."""
        if self is Direction.BOTH:
            return True
        return side is (Side.RIGHT if self is Direction.LEFT_TO_RIGHT else Side.LEFT)


ONE_WAY_CATEGORY = "one_way_conflict"


@attrs.frozen(kw_only=True)
class FieldMap:
    """One mapped field: its name on each side, its transform, direction and policy.

    A one-way field's policy defaults to its source side as source of truth; a decision that
    would write against the field's direction is escalated (category ``one_way_conflict``).
    """

    left: str
    right: str
    policy: FieldPolicy = attrs.field(default=None, converter=attrs.converters.optional(as_policy))
    transform: Transform = attrs.field(factory=Transform)
    direction: Direction = attrs.field(default=Direction.BOTH, converter=Direction)

    def __attrs_post_init__(self) -> None:
        if self.policy is None:
            if self.direction is Direction.BOTH:
                raise ConfigurationError(f"field {self.left!r} needs a policy")
            source = Side.LEFT if self.direction is Direction.LEFT_TO_RIGHT else Side.RIGHT
            object.__setattr__(self, "policy", source_of_truth(source))

    @property
    def name(self) -> str:
        """The field's name in syncrecon (its left name)."""
        return self.left

    def decide(self, state: FieldState) -> Decision:
        """The policy's decision, with the field's direction enforced."""
        decision = decide(self.policy, state)
        if decision.outcome in (Outcome.AGREE, Outcome.ESCALATE):
            return decision
        for side in (Side.LEFT, Side.RIGHT):
            wants = decision.writes_left if side is Side.LEFT else decision.writes_right
            if wants and not self.direction.allows_write(side):
                return attrs.evolve(
                    decision,
                    outcome=Outcome.ESCALATE,
                    value=None,
                    category=ONE_WAY_CATEGORY,
                    reason=f"{decision.reason}, but the field never flows to {side}",
                )
        return decision


def normalize_email(value: Any) -> str | None:
    """The default natural-key normalizer: stripped and case-folded text, blank as ``None``."""
    if value is None:
        return None
    text = str(value).strip().casefold()
    return text or None


@attrs.frozen(kw_only=True)
class NaturalKey:
    """How to match records that are not linked yet: a field on each side and a normalizer."""

    left: str
    right: str
    normalize: Callable[[Any], str | None] = normalize_email


def _to_fields(value: Iterable[FieldMap]) -> tuple[FieldMap, ...]:
    return tuple(value)


def _to_sides(value: Iterable[Side | str]) -> frozenset[Side]:
    return frozenset(Side(v) for v in value)


@attrs.frozen(kw_only=True)
class SyncDefinition:
    """One pair of object types kept in agreement, e.g. HubSpot deals and Salesforce opportunities.

    ``create_on`` names the sides on which a record missing there is created (and linked).
    ``delete_from`` names the side whose deletions propagate (deletions elsewhere escalate);
    ``None`` propagates no deletion.
    """

    name: str
    left: AnyConnector
    right: AnyConnector
    fields: tuple[FieldMap, ...] = attrs.field(converter=_to_fields)
    natural_key: NaturalKey | None = None
    create_on: frozenset[Side] = attrs.field(factory=frozenset, converter=_to_sides)
    delete_from: Side | None = attrs.field(default=None, converter=attrs.converters.optional(Side))

    def __attrs_post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigurationError("a sync needs a non-empty name")
        if not self.fields:
            raise ConfigurationError(f"sync {self.name!r} maps no field")
        for attr in ("left", "right"):
            names = [getattr(f, attr) for f in self.fields]
            if len(set(names)) != len(names):
                raise ConfigurationError(f"sync {self.name!r} maps a {attr} field twice")
        if self.left.name == self.right.name:
            raise ConfigurationError("the two connectors need different names")

    def connector(self, side: Side) -> AnyConnector:
        """The connector of ``side``."""
        return self.left if side is Side.LEFT else self.right

    def field(self, name: str) -> FieldMap:
        """The mapped field with this (left) name."""
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _describe(value: Any, depth: int = 0) -> str:
    """A text that changes when a mapping's behaviour may have changed and not between runs.

    A function is named by its qualified name, its bytecode and constants (nested functions'
    too), and, a few levels deep, what it captured, its defaults and the module-level names it
    reads (a lookup table, a helper function); a callable object by its class and attributes;
    other values by their ``repr`` without memory addresses.
    """
    if depth > 4:
        return type(value).__qualname__
    if isinstance(value, set | frozenset):  # their order changes with the hash seed
        return "{" + ",".join(sorted(_describe(v, depth) for v in value)) + "}"
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{_describe(k, depth)}:{_describe(v, depth)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ",".join(_describe(v, depth) for v in value) + "]"
    function = getattr(value, "__func__", value)  # a bound method: its function
    code = getattr(function, "__code__", None)
    if code is None:
        if callable(value) and hasattr(value, "__dict__") and not isinstance(value, type):
            state = ",".join(
                f"{k}={_describe(v, depth + 1)}" for k, v in sorted(vars(value).items())
            )
            return f"{type(value).__module__}.{type(value).__qualname__}({state})"
        return _ADDRESS.sub("", repr(value))
    module_globals = getattr(function, "__globals__", {})
    read = [
        f"{name}={_describe(module_globals[name], depth + 1)}"
        for name in _names_read(code)
        if name in module_globals and not _is_module(module_globals[name])
    ]
    captured = [
        _describe(cell.cell_contents, depth + 1)
        for cell in (getattr(function, "__closure__", None) or ())
        if cell.cell_contents is not function
    ]
    defaults = [_describe(d, depth + 1) for d in (getattr(function, "__defaults__", None) or ())]
    return "|".join(
        [
            f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}",
            _code_text(code),
            *captured,
            *defaults,
            *read,
        ]
    )


def _code_text(code: Any) -> str:
    """Bytecode and constants of a code object and of the code objects nested in it."""
    parts = [code.co_code.hex()]
    for const in code.co_consts:
        parts.append(
            _code_text(const) if hasattr(const, "co_code") else _ADDRESS.sub("", repr(const))
        )
    return "(" + ",".join(parts) + ")"


def _names_read(code: Any) -> list[str]:
    """The global names a code object (and the code nested in it) reads, in order."""
    names = list(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            names += _names_read(const)
    return list(dict.fromkeys(names))


def _is_module(value: Any) -> bool:
    return type(value).__name__ == "module"


def mapping_fingerprint(sync: SyncDefinition) -> str:
    """A short fingerprint of what turns a record into its mapped values: the mapped field
    names on both sides, the transforms' ``to_left`` (their code and what they captured) and
    the natural key. A cycle's marks of unchanged records carry it, so changing the mapping
    makes the next cycle compare every record again."""
    parts = [f"{fm.left}\x00{fm.right}\x00{_describe(fm.transform.to_left)}" for fm in sync.fields]
    nk = sync.natural_key
    if nk is not None:
        parts.append(f"nk\x00{nk.left}\x00{nk.right}\x00{_describe(nk.normalize)}")
    digest = hashlib.blake2b("\x01".join(parts).encode(), digest_size=6)
    return digest.hexdigest()
