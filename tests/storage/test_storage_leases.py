"""The :class:`~syncrecon.storage.LeaseStore` contract: named leases.

Every backend passes the same tests (the ``storage`` fixture).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from storage_helpers import AT, SYNC, TTL, commit, link

from syncrecon import LeaseLostError
from syncrecon.storage import Storage


def test_lease_acquire_and_refuse(storage: Storage) -> None:
    assert storage.acquire_lease("cycle:deals", "w1", TTL, AT)
    assert not storage.acquire_lease("cycle:deals", "w2", TTL, AT)
    assert not storage.acquire_lease("cycle:deals", "w2", TTL, AT + TTL - timedelta(microseconds=1))
    assert storage.acquire_lease("cycle:other", "w2", TTL, AT)  # another name is free


def test_lease_taken_after_expiry(storage: Storage) -> None:
    assert storage.acquire_lease("l", "w1", TTL, AT)
    assert storage.acquire_lease("l", "w2", TTL, AT + TTL)  # expired at that instant
    assert not storage.acquire_lease("l", "w1", TTL, AT + TTL + timedelta(minutes=1))


def test_lease_renewed_by_its_owner(storage: Storage) -> None:
    assert storage.acquire_lease("l", "w1", TTL, AT)
    assert storage.acquire_lease("l", "w1", TTL, AT + timedelta(minutes=8))
    # The renewal moved the expiry to 18 minutes: at 12 minutes w2 is still refused.
    assert not storage.acquire_lease("l", "w2", TTL, AT + timedelta(minutes=12))
    assert storage.acquire_lease("l", "w2", TTL, AT + timedelta(minutes=18))


def test_lease_release(storage: Storage) -> None:
    assert storage.acquire_lease("l", "w1", TTL, AT)
    storage.release_lease("l", "w2")  # not the owner: no effect
    assert not storage.acquire_lease("l", "w2", TTL, AT)
    storage.release_lease("l", "w1")
    assert storage.acquire_lease("l", "w2", TTL, AT)
    storage.release_lease("never-taken", "w1")
    storage.release_lease("never-taken", "")


def test_lease_owner_may_be_any_string(storage: Storage) -> None:
    storage.release_lease("l", "")
    assert storage.acquire_lease("l", "", TTL, AT)
    assert not storage.acquire_lease("l", "w2", TTL, AT)
    storage.release_lease("l", "")
    assert storage.acquire_lease("l", "w2", TTL, AT)


def test_a_commit_is_fenced_by_its_lease(storage: Storage) -> None:
    fence = ("cycle:deals", "w1")
    assert storage.acquire_lease(*fence, TTL, AT)
    commit(storage, links=[link("L1", "R1")], fence=fence)
    # Expired but taken by nobody: still w1's, its commits go through.
    commit(storage, at=AT + 2 * TTL, links=[link("L2", "R2")], fence=fence)
    assert storage.acquire_lease("cycle:deals", "w2", TTL, AT + 2 * TTL)
    with pytest.raises(LeaseLostError) as lost:
        commit(storage, at=AT + 2 * TTL, links=[link("L3", "R3")], fence=fence)
    assert (lost.value.name, lost.value.owner) == ("cycle:deals", "w2")
    storage.release_lease("cycle:deals", "w2")
    with pytest.raises(LeaseLostError):
        commit(storage, at=AT + 2 * TTL, links=[link("L3", "R3")], fence=fence)
    assert storage.count_links(SYNC) == 2
    assert storage.lease_holder("cycle:deals") is None


def test_lease_holder(storage: Storage) -> None:
    assert storage.lease_holder("l") is None
    assert storage.acquire_lease("l", "w1", TTL, AT)
    assert storage.lease_holder("l") == ("w1", AT + TTL)
    assert storage.renew_lease("l", "w1", TTL, AT + TTL)  # expired, but nobody took it
    assert storage.lease_holder("l") == ("w1", AT + 2 * TTL)
    assert not storage.renew_lease("l", "w2", TTL, AT)
    assert storage.acquire_lease("l", "w2", TTL, AT + 2 * TTL)
    assert not storage.renew_lease("l", "w1", TTL, AT + 2 * TTL)  # lost
    assert storage.lease_holder("l") == ("w2", AT + 3 * TTL)
