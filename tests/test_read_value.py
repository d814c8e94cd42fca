"""Values an operator types are read as a person writes them, guided by the field's values."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from syncrecon.queue import read_value
from syncrecon.queue._views import input_text


@pytest.mark.parametrize(
    ("text", "like", "expected"),
    [
        ("2026-08-22", date(2026, 1, 1), date(2026, 8, 22)),
        (" 2026-08-22 ", date(2026, 1, 1), date(2026, 8, 22)),
        ('{"$date": "2026-08-22"}', date(2026, 1, 1), date(2026, 8, 22)),  # the tagged form
        (
            "2026-08-22T14:30:00Z",
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2026, 8, 22, 14, 30, tzinfo=UTC),
        ),
        ("1,200.50", Decimal("1"), Decimal("1200.50")),
        ("1200", 5, 1200),
        ("12.5", 5, Decimal("12.5")),
        ("0.25", 1.5, 0.25),
        ("yes", False, True),
        ("No", True, False),
        ("a, b ,c", ["x"], ["a", "b", "c"]),
        ('["a", "b"]', ["x"], ["a", "b"]),
        ("Closed Won", "Open", "Closed Won"),
        ('"42"', "Open", "42"),
        ("42", "Open", "42"),  # a text field keeps text
        ("", "Open", None),  # empty is blank
        ("42", None, 42),  # no hint: JSON when it is JSON
        ("true", None, True),
        ("Closed Won", None, "Closed Won"),  # ... and plain text otherwise
    ],
)
def test_read_value(text: str, like: Any, expected: Any) -> None:
    value = read_value(text, like=like)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "like", "message"),
    [
        ("22/08/2026", date(2026, 1, 1), "not a date (write it like 2026-08-22)"),
        ("soon", datetime(2026, 1, 1, tzinfo=UTC), "not a date and time"),
        ("twelve", Decimal("1"), "not a number"),
        ("maybe", True, "not yes or no"),
    ],
)
def test_what_cannot_be_read_says_how_to_write_it(text: str, like: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        read_value(text, like=like)


@pytest.mark.parametrize(
    "value",
    [
        date(2026, 8, 22),
        datetime(2026, 8, 22, 14, 30, tzinfo=UTC),
        Decimal("1200.50"),
        42,
        True,
        ["a", "b"],
        "Closed Won",
        None,
    ],
)
def test_input_text_reads_back_as_the_same_value(value: Any) -> None:
    assert read_value(input_text(value), like=value if value is not None else "") == value
