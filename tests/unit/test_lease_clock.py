"""The leader's lease clock (actors/lease_clock.py): deadlines from explicit times."""
from __future__ import annotations

from pytest import approx

from raftkv.actors.lease_clock import LeaseClock


def test_nothing_expires_before_promotion_and_a_new_leader_extends_every_lease():
    c = LeaseClock(extend=0.3, retry=60.0)
    assert c.due(1000.0) == [] and c.keepalive(0.0, 1, 5) is False
    c.promote(10.0, {1: 5, 2: 1})
    assert c.remaining(10.0, 1) == approx(5.3) and c.remaining(10.0, 2) == approx(1.3)
    assert c.due(11.29) == []
    assert c.due(11.31) == [2]
    assert c.due(15.31) == [1]


def test_keepalive_moves_the_deadline_and_a_lease_kept_alive_never_expires():
    c = LeaseClock(extend=0.3)
    c.promote(0.0, {7: 2})
    t = 0.0
    while t < 60.0:
        t += 1.5  # a keepalive every 1.5 s of a 2 s lease
        assert c.due(t) == []
        assert c.keepalive(t, 7, 2)
    assert c.due(t + 1.99) == [] and c.due(t + 2.0) == [7]


def test_a_revoking_lease_refuses_keepalives_and_is_proposed_again_after_retry():
    c = LeaseClock(extend=0.0, retry=2.0)
    c.promote(0.0, {3: 1})
    assert c.due(1.0) == [3]
    assert c.keepalive(1.1, 3, 1) is False and c.remaining(1.1, 3) == 0.0
    assert c.due(2.9) == []  # the revoke is in flight
    assert c.due(3.0) == [3]  # lost (e.g. a leader change)? propose it again
    c.sync(3.5, {})  # applied: the table no longer has it
    assert c.due(100.0) == [] and c.remaining(3.5, 3) is None


def test_sync_follows_grants_and_revokes():
    c = LeaseClock(extend=1.0)
    c.promote(0.0, {1: 10})
    c.sync(4.0, {1: 10, 9: 2})  # lease 9 granted at (about) 4.0: no extension for a grant
    assert c.remaining(4.0, 9) == 2.0 and c.remaining(4.0, 1) == 7.0
    c.sync(5.0, {9: 2})
    assert c.remaining(5.0, 1) is None


def test_due_is_bounded_and_in_id_order():
    c = LeaseClock(extend=0.0)
    c.promote(0.0, {i: 1 for i in range(100, 0, -1)})
    first = c.due(5.0, limit=10)
    assert first == list(range(1, 11))
    assert c.due(5.0, limit=1000) == list(range(11, 101))
