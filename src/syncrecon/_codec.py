"""Canonical JSON for values: what storage keeps and what the compare fast path hashes.

Field values are JSON values plus ``date``, ``datetime`` and ``Decimal``, which are kept as
tagged objects (``{"$date": "2026-01-31"}``) so they come back as the same type. Encoding is
canonical (sorted keys, no spaces), so two equal projections encode to the same text.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

__all__ = ["dumps", "loads"]

_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, tuple | set | frozenset):
        return list(value) if isinstance(value, tuple) else sorted(value, key=repr)
    raise TypeError(f"value of type {type(value).__name__} cannot be stored: {value!r}")


_encoder_tagged = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default
)

# ``JSONEncoder.encode`` builds a new C encoder on every call, which costs more than encoding
# a small record. Build it once (the standard library's own fast path, when it has one).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_fast: Any = (
    _c_make_encoder(
        None, _default, json.encoder.encode_basestring, None, ":", ",", True, False, True
    )
    if _c_make_encoder is not None
    else None
)


def dumps(value: Any) -> str:
    """Canonical JSON text of ``value``."""
    if _fast is not None and isinstance(value, dict):
        return "".join(_fast(value, 0))
    return _encoder_tagged.encode(value)


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        ((tag, text),) = obj.items()
        if tag == "$datetime":
            return datetime.fromisoformat(text)
        if tag == "$date":
            return date.fromisoformat(text)
        if tag == "$decimal":
            return Decimal(text)
    return obj


_decoder = json.JSONDecoder(object_hook=_hook)


def loads(text: str) -> Any:
    """The value that :func:`dumps` encoded."""
    return _decoder.decode(text)
