"""The :class:`~syncrecon.storage.MetricsStore` contract: cycle reports and counters.

Every backend passes the same tests (the ``storage`` fixture). ``prune`` has its own tests
in ``tests/test_retention.py``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from storage_helpers import AT, SYNC, commit, cycle

from syncrecon.storage import Counter, Storage

# -- cycles ---------------------------------------------------------------------------------------


def test_cycles_newest_first(storage: Storage) -> None:
    report = {"escalated": {"amount": 2}, "found": 3, "at": date(2026, 1, 1), "x": [Decimal("1")]}
    for n, cid in enumerate(["c1", "c2", "c3"]):
        commit(storage, cycle=cycle(cid, AT + timedelta(hours=n), report))
    commit(storage, cycle=cycle("o1", AT + timedelta(hours=10), sync="other"))
    assert [c.id for c in storage.list_cycles()] == ["o1", "c3", "c2", "c1"]
    assert [c.id for c in storage.list_cycles(sync=SYNC)] == ["c3", "c2", "c1"]
    assert [c.id for c in storage.list_cycles(sync=SYNC, limit=2)] == ["c3", "c2"]
    assert storage.list_cycles(sync="nope") == []
    got = storage.list_cycles(sync=SYNC, limit=1)[0]
    assert got == cycle("c3", AT + timedelta(hours=2), report)


def test_a_cycle_stored_again_is_replaced(storage: Storage) -> None:
    commit(storage, cycle=cycle("c1", AT, {"found": 1}))
    commit(storage, cycle=cycle("c1", AT, {"found": 2}))
    (got,) = storage.list_cycles()
    assert got.report == {"found": 2}


# -- counters -------------------------------------------------------------------------------------


def hour(h: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, 5, h, minute, tzinfo=UTC)


@pytest.fixture
def counted(storage: Storage) -> Storage:
    r, e = {"rule": "recency"}, {"category": "amount"}
    commit(storage, at=hour(10, 5), counters=[Counter(metric="m", labels=r)])
    commit(storage, at=hour(10, 55), counters=[Counter(metric="m", labels=r, amount=2)])
    commit(storage, at=hour(11, 0), counters=[Counter(metric="m", labels=r, amount=4)])
    commit(
        storage,
        at=hour(12, 30),
        counters=[
            Counter(metric="m", labels=e, amount=8),
            Counter(metric="m", labels={}, amount=16),
            Counter(metric="other", labels=r, amount=100),
        ],
    )
    commit(storage, at=hour(13, 59), counters=[Counter(metric="m", labels=r, amount=32)])
    return storage


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (None, None, {"{}": 16, "amount": 8, "recency": 39}),
        (hour(11), None, {"{}": 16, "amount": 8, "recency": 36}),
        # ``since`` counts its whole hour: 10:30 includes 10:05 and 10:55.
        (hour(10, 30), None, {"{}": 16, "amount": 8, "recency": 39}),
        (None, hour(11), {"recency": 3}),
        # ``until`` excludes the hour that starts at it, includes the hours before it.
        (None, hour(12), {"recency": 7}),
        (None, hour(12, 1), {"{}": 16, "amount": 8, "recency": 7}),
        (hour(11), hour(13), {"{}": 16, "amount": 8, "recency": 4}),
        (hour(14), None, {}),
        (hour(9), hour(10), {}),
    ],
    ids=str,
)
def test_counter_totals_by_window(
    counted: Storage, since: datetime | None, until: datetime | None, expected: dict[str, int]
) -> None:
    totals = counted.counter_totals("m", since=since, until=until)
    flat = {(next(iter(labels.values())) if labels else "{}"): n for labels, n in totals}
    assert flat == expected


def test_counter_totals_shape_and_order(counted: Storage) -> None:
    assert counted.counter_totals("m") == [
        ({"category": "amount"}, 8),
        ({"rule": "recency"}, 39),
        ({}, 16),
    ]
    assert counted.counter_totals("other") == [({"rule": "recency"}, 100)]
    assert counted.counter_totals("unknown") == []


def test_counters_sum_per_label_set_whatever_the_label_order(storage: Storage) -> None:
    commit(
        storage,
        counters=[
            Counter(metric="m", labels={"a": "1", "b": "2"}),
            Counter(metric="m", labels={"b": "2", "a": "1"}, amount=2),
            Counter(metric="m", labels={"a": "1"}, amount=4),
            Counter(metric="m", labels={"a": "1", "b": "3"}, amount=8),
        ],
    )
    totals = {tuple(sorted(labels.items())): n for labels, n in storage.counter_totals("m")}
    assert totals == {
        (("a", "1"), ("b", "2")): 3,
        (("a", "1"),): 4,
        (("a", "1"), ("b", "3")): 8,
    }
