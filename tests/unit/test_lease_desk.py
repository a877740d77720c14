"""The leader's lease desk (actors/lease_leader.py): what a confirmed keepalive is answered."""
from __future__ import annotations

from types import SimpleNamespace

from raftkv.actors.lease_leader import LeaseDesk
from raftkv.actors.lease_state import LeaseTable
from raftkv.records import Op


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _desk(table: LeaseTable, clock: Clock) -> LeaseDesk:
    # A leader of term 3 whose no-op (index 10) is committed and applied.
    core = SimpleNamespace(term=3, commit=10, log=SimpleNamespace(term=lambda i: 3))
    ctx = SimpleNamespace(node_id="n1", core=core,
                          applied_view=SimpleNamespace(index=10, state=SimpleNamespace(leases=table)),
                          tuning=SimpleNamespace(election_timeout_ms=(300, 600)))
    desk = LeaseDesk(ctx, now=clock)
    desk.check_every = 1
    return desk


def _keepalive(desk: LeaseDesk, lid: int) -> str:
    return desk.answer(SimpleNamespace(op=Op.LEASE_KEEPALIVE.value, lease=lid)).status


def test_an_overdue_lease_answers_retry_until_its_revoke_is_applied_then_not_found():
    table = LeaseTable()
    table.load([(5, 2, ["a"]), (6, 2, ["b"])])
    clock = Clock()
    desk = _desk(table, clock)
    assert desk.on_tick() == []  # promoted: each lease has 2 s + 0.6 s
    clock.t = 2.0
    assert _keepalive(desk, 6) == "ok"  # lease 6 kept alive, lease 5 not
    clock.t = 3.0
    due = desk.on_tick()
    assert len(due) == 1  # lease 5's revoke, proposed
    # Proposed is not applied: this node may have been deposed while it was paused, its
    # successor keeping lease 5 alive; only the applied revoke says the lease is gone.
    reply = desk.answer(SimpleNamespace(op=Op.LEASE_KEEPALIVE.value, lease=5))
    assert reply.status == "unavailable" and "retry" in (reply.error or "")
    assert _keepalive(desk, 6) == "ok"
    table.load([(6, 2, ["b"])])  # the revoke of lease 5 applied
    assert _keepalive(desk, 5) == "not_found"
    assert _keepalive(desk, 6) == "ok"


def test_a_keepalive_for_a_lease_never_granted_is_not_found():
    table = LeaseTable()
    table.load([(5, 2, [])])
    desk = _desk(table, Clock())
    assert _keepalive(desk, 99) == "not_found"
