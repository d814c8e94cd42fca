"""Canonical JSON for values: what storage keeps and what the compare fast path hashes.

Field values are JSON values plus ``date``, ``datetime`` and ``Decimal``, which are kept as
tagged objects (``{"$date": "2026-01-31"}``) so they come back as the same type. Encoding is
canonical (sorted keys, no spaces), so two equal projections encode to the same text.

Values are data: a value's own mapping whose key starts with ``$`` (a MongoDB-style
``{"$date": ...}``, say) is stored with that key escaped (``"$$date"``), so that it is never
read back as a tag and comes back exactly as it went in.
"""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["dumps", "fingerprint", "loads"]

_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)

# How many tags the encoder emitted in this thread's current ``dumps`` call.
_local = threading.local()


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        _local.tags += 1
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        _local.tags += 1
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        _local.tags += 1
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


def _encode(value: Any) -> str:
    if _fast is not None and isinstance(value, dict):
        return "".join(_fast(value, 0))
    return _encoder_tagged.encode(value)


def _escape(value: Any) -> Any:
    """``value`` with one more ``$`` in front of every mapping key that starts with ``$``."""
    if isinstance(value, dict):
        return {
            ("$" + k if isinstance(k, str) and k.startswith("$") else k): _escape(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_escape(v) for v in value]
    return value  # a set cannot hold a mapping; everything else is a leaf


def dumps(value: Any) -> str:
    """Canonical JSON text of ``value``."""
    _local.tags = 0
    text = _encode(value)
    # A key always follows "{" or ","; a quote inside a string is always escaped. So when
    # '{"$' and ',"$' occur once per tag, no key of the value starts with "$". Otherwise
    # escape those keys so that they cannot pass for tags (rare: the usual path stays in C).
    if '"$' in text and text.count('{"$') + text.count(',"$') != _local.tags:
        _local.tags = 0
        text = _encode(_escape(value))
    return text


_TAGS: dict[str, Any] = {
    "$datetime": datetime.fromisoformat,
    "$date": date.fromisoformat,
    "$decimal": Decimal,
}


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        ((tag, text),) = obj.items()
        parse = _TAGS.get(tag)
        if parse is not None and isinstance(text, str):
            try:
                return parse(text)
            except (ValueError, InvalidOperation):
                return obj  # not a tag after all (text written before keys were escaped)
    return obj


def _unescaping_hook(obj: dict[str, Any]) -> Any:
    value = _hook(obj)
    if value is obj and any(k.startswith("$$") for k in obj):
        return {(k[1:] if k.startswith("$$") else k): v for k, v in obj.items()}
    return value


_decoder = json.JSONDecoder(object_hook=_hook)
_unescaping_decoder = json.JSONDecoder(object_hook=_unescaping_hook)


def loads(text: str) -> Any:
    """The value that :func:`dumps` encoded."""
    if '"$$' in text:
        return _unescaping_decoder.decode(text)
    return _decoder.decode(text)


def fingerprint(value: Any) -> str:
    """A short, stable fingerprint of a value (what the echo ledger remembers), the same for
    every loop: both loops and the operator queue record and look up echoes with it."""
    return hashlib.sha256(dumps({"v": value}).encode()).hexdigest()[:24]
