"""The canonical value codec: what storage keeps and what the compare fast path hashes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncrecon._codec import dumps, loads

ROUND_TRIPS = [
    None,
    True,
    False,
    0,
    -17,
    2**70,
    1.5,
    -0.25,
    1e300,
    "",
    "plain",
    "ünïcødé ✓ 日本語 🚀",
    "quotes ' \" and ; -- '); DROP TABLE links; --",
    "back\\slash\nnew line\ttab\x00nul",
    "$100",
    "$$",
    [],
    [1, "a", None, [2, [3]]],
    {},
    {"a": 1, "b": [True, None], "c": {"d": "e"}},
    date(2026, 1, 31),
    datetime(2026, 1, 31, 23, 59, 59, 999999),
    datetime(2026, 1, 31, 12, 0, tzinfo=UTC),
    datetime(2026, 1, 31, 12, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    Decimal("1200.50"),
    Decimal("-0.001"),
    Decimal("1E+3"),
    {"close": date(2026, 3, 1), "amount": Decimal("9.99"), "at": [datetime(2026, 1, 1)]},
    # A value's own mappings are data, even when they look like the codec's tags.
    {"$date": "2026-01-31"},
    {"$datetime": "2026-01-31T00:00:00"},
    {"$decimal": "1.5"},
    {"$decimal": "not a number"},
    {"$date": "soon"},
    {"$date": 5},
    {"$$date": "2026-01-31"},
    {"$": 1, "$$": 2, "$$$": 3},
    {"$set": {"stage": "won"}, "$inc": {"n": 1}},
    [{"$date": date(2026, 1, 1)}, {"$oid": "abc"}],
    {"key": "$100", "list": ["$a", "$b"], "nested": {"$x": {"$y": date(2026, 2, 2)}}},
]


@pytest.mark.parametrize("value", ROUND_TRIPS, ids=repr)
def test_round_trip(value: Any) -> None:
    text = dumps(value)
    back = loads(text)
    assert back == value
    assert type(back) is type(value)
    assert dumps(back) == text
    json.loads(text)  # plain JSON that any tool can read


def test_round_trip_keeps_nested_types() -> None:
    value = {"a": [date(2026, 1, 1), Decimal("1.10")], "b": {"c": datetime(2026, 1, 1, 8)}}
    back = loads(dumps(value))
    assert type(back["a"][0]) is date
    assert type(back["a"][1]) is Decimal
    assert str(back["a"][1]) == "1.10"  # the exponent survives, not just the value
    assert type(back["b"]["c"]) is datetime


def test_datetime_is_not_confused_with_date() -> None:
    assert type(loads(dumps(datetime(2026, 1, 1)))) is datetime
    assert type(loads(dumps(date(2026, 1, 1)))) is date


def test_aware_datetime_keeps_its_offset() -> None:
    when = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    back = loads(dumps(when))
    assert back == when
    assert back.utcoffset() == timedelta(hours=2)


def test_tuples_and_sets_are_stored_as_lists() -> None:
    assert loads(dumps((1, "a"))) == [1, "a"]
    assert loads(dumps({"b", "a", "c"})) == ["a", "b", "c"]
    assert loads(dumps(frozenset({3, 1, 2}))) == [1, 2, 3]
    assert dumps({"x", "y"}) == dumps({"y", "x"})


def test_encoding_is_canonical() -> None:
    a = {"b": 1, "a": {"y": 2, "x": [1, {"q": 1, "p": 2}]}}
    b = {"a": {"x": [1, {"p": 2, "q": 1}], "y": 2}, "b": 1}
    assert dumps(a) == dumps(b)
    assert dumps(a) == '{"a":{"x":[1,{"p":2,"q":1}],"y":2},"b":1}'
    assert dumps({"z": "é"}) == '{"z":"é"}'  # no escaping of non-ASCII, no spaces
    assert dumps({"$z": 1, "a": 2}) == dumps({"a": 2, "$z": 1})


def test_tags_are_plain_json_objects() -> None:
    assert dumps(date(2026, 1, 31)) == '{"$date":"2026-01-31"}'
    assert dumps(Decimal("1.50")) == '{"$decimal":"1.50"}'
    assert dumps(datetime(2026, 1, 31, 8, 30)) == '{"$datetime":"2026-01-31T08:30:00"}'


def test_a_value_that_looks_like_a_tag_is_not_decoded_as_one() -> None:
    assert loads(dumps({"$date": "2026-01-31"})) == {"$date": "2026-01-31"}
    assert dumps({"$date": "2026-01-31"}) != dumps(date(2026, 1, 31))


class Unstorable:
    pass


@pytest.mark.parametrize(
    "value",
    [
        object(),
        Unstorable(),
        b"bytes",
        bytearray(b"x"),
        1 + 2j,
        timedelta(seconds=1),
        [1, object()],
        {"a": {"b": Unstorable()}},
        {"$date": Unstorable()},
        {1: "a", "b": 2},  # mixed key types cannot be ordered canonically
    ],
    ids=repr,
)
def test_unsupported_values_raise_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        dumps(value)


def test_type_error_names_the_type() -> None:
    with pytest.raises(TypeError, match="Unstorable"):
        dumps({"a": [Unstorable()]})


# -- property: everything storable round-trips -------------------------------------------------

keys = st.one_of(
    st.text(max_size=6), st.sampled_from(["$date", "$decimal", "$datetime", "$", "$$x"])
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.dates(),
    # Fixed offsets: a zoneinfo time in a fold compares unequal to its own instant elsewhere.
    st.datetimes(
        timezones=st.one_of(
            st.none(),
            st.just(UTC),
            st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
        )
    ),
    st.decimals(allow_nan=False),
    keys,
)
storable = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


@given(value=storable)
def test_storable_values_round_trip(value: Any) -> None:
    text = dumps(value)
    back = loads(text)
    assert back == value
    assert dumps(back) == text


@given(value=st.dictionaries(keys, st.one_of(leaves, st.lists(leaves, max_size=3)), max_size=5))
def test_equal_mappings_encode_alike_whatever_their_order(value: dict[str, Any]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert dumps(reordered) == dumps(value)
