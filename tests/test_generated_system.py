"""GeneratedSystem, the benchmark's large simulated system: listings see every change."""

from __future__ import annotations

from syncrecon.testing import GeneratedSystem, ManualClock


def _all_keys(system: GeneratedSystem) -> list[str]:
    keys: list[str] = []
    cursor = None
    while True:
        page = system.list_records(since=None, cursor=cursor)
        keys += [r.key for r in page.records]
        if page.next_cursor is None:
            return keys
        cursor = page.next_cursor


def test_listings_follow_creates_and_deletes_between_them() -> None:
    clock = ManualClock()
    system = GeneratedSystem(
        "gen", count=5, make=lambda i: {"n": i}, clock=clock, key_prefix="g", page_size=2
    )
    assert _all_keys(system) == ["g0", "g1", "g2", "g3", "g4"]
    created = system.create({"n": 99})
    system.edit("g1", n=-1)
    assert _all_keys(system) == ["g0", "g1", "g2", "g3", "g4", created]
    assert system.get("g1").fields == {"n": -1}
    system.delete(created)
    system.delete("g3")
    assert _all_keys(system) == ["g0", "g1", "g2", "g4"]
    again = system.create({"n": 100})
    assert _all_keys(system) == ["g0", "g1", "g2", "g4", again]
