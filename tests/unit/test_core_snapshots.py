"""RaftCore: snapshots, compaction and membership corner cases found by the simulation (tests/sim).

Each test pins down a fix: the seed that found it is named in the docstring.
"""
from __future__ import annotations

import pytest

from raftkv.actors.core import NotLeader
from raftkv.actors.memlog import MemLog
from raftkv.wire.messages import AppendEntries, AppendReply, InstallSnapshot

from tests.unit.polling import wait_for
from tests.unit.test_core import E, commit_noop, core, elect, members


def committed_follower(n_entries: int = 6, commit: int = 6):
    """A follower of term 2 whose log 1..n_entries (term 2) is committed up to ``commit`` and handed out."""
    c = core("n2", term=2, log=MemLog(entries=[E(2, b"%d" % i) for i in range(1, n_entries + 1)]), commit=commit)
    rd = c.take_ready()
    assert [i for i, _ in rd.committed] == list(range(1, commit + 1))
    return c


def test_can_change_config_is_false_while_leadership_is_transferred():
    """Seed 7 (5 nodes): can_change_config() said yes during a transfer and propose_config then
    raised NotLeader, which Leader._promote_caught_up_learner does not catch (the actor would die)."""
    c = core()
    elect(c)
    commit_noop(c)
    c.take_ready()
    assert c.can_change_config()
    c.transfer_leadership("n2")
    assert not c.can_change_config()
    with pytest.raises(NotLeader):
        c.propose_config(members(4))


def test_install_snapshot_hands_out_again_what_follows_it_when_the_fsm_was_ahead():
    """Seed 927 (5 nodes): a resent InstallSnapshot was accepted while the first copy was being
    saved; when the second copy was installed the FSM had applied past it. RoleActor._install
    restores the FSM to the snapshot, so the entries after it must be handed out again (they were
    skipped, and the FSM refused the next entry as a gap forever)."""
    c = committed_follower(n_entries=6, commit=6)
    c.install_snapshot(4, 2, members(3))  # the FSM is back at 4
    rd = c.take_ready()
    assert [i for i, _ in rd.committed] == [5, 6]
    assert rd.persist.compact_to == (4, 2)
    assert c.log.base_index == 4 and c.log.last_index() == 6 and c.commit == 6


def test_install_snapshot_older_than_the_log_base_asks_for_a_new_snapshot():
    """Seed 445 (5 nodes): a stale snapshot finished saving after the follower had compacted past
    it. The FSM was restored to it but the entries after it are gone: ask the leader for another
    (AppendReply.need_snapshot) and hand nothing out until it is installed."""
    c = committed_follower(n_entries=8, commit=8)
    c.compact(6)
    c.take_ready()
    c.install_snapshot(3, 2, members(3))
    assert c.want_snapshot
    assert c.log.base_index == 6 and c.log.last_index() == 8, "the log is kept"
    assert not c.take_ready().committed
    c.step("n1", AppendEntries(2, 8, 2, [E(2, b"9")], 9))
    rd = c.take_ready()
    assert not rd.committed
    (_, reply), = rd.send_after_persist
    assert type(reply) is AppendReply and reply.need_snapshot
    c.install_snapshot(9, 2, members(3))  # the leader's newer snapshot
    assert not c.want_snapshot and c.handed == 9 and c.commit == 9


def test_install_snapshot_that_conflicts_with_the_log_discards_it():
    c = core("n2", term=3, log=MemLog(entries=[E(1), E(1), E(2), E(2)]), commit=2)
    c.take_ready()
    c.install_snapshot(3, 3, members(3))  # (3, 3) is not in our log: drop all of it
    rd = c.take_ready()
    assert c.log.base_index == 3 and c.log.last_index() == 3 and c.log.base_term == 3
    assert rd.persist.truncate_from == 1 and rd.persist.compact_to == (3, 3) and rd.persist.commit == 3
    assert not rd.committed and c.handed == 3


def test_an_already_covered_snapshot_is_acknowledged_at_once():
    c = committed_follower(n_entries=6, commit=6)
    c.step("n1", InstallSnapshot(2, 5, 2, 0, b"abc", True, members(3)))
    rd = c.take_ready()
    assert not rd.chunks_to_store
    (to, reply), = rd.send
    assert to == "n1" and reply.done and reply.last_index == 5


def test_a_follower_installing_a_snapshot_hands_its_whole_log_to_the_background_free():
    """Installing a snapshot the log does not hold drops the whole log; a long one (after a
    preload, ~1M entries) was freed on the role thread with the GIL held, stalling every thread
    of the node. Its entries now go to actors/deferred_free.py, as a large compaction's do."""

    from raftkv.actors import deferred_free

    n = 3 * deferred_free.SMALL
    c = core("n2", term=3, log=MemLog(entries=[E(2, b"%d" % i) for i in range(n)]), commit=2)
    c.take_ready()
    held = c.log.entries
    c.install_snapshot(n + 10, 3, members(3))  # beyond the log: all of it goes
    assert c.log.base_index == n + 10 and c.log.entries == [] and c.log.last_index() == n + 10
    # emptied by the background thread (on the old code it stayed whole)
    wait_for(lambda: not held, "the dropped log freed", timeout=30, every=0.01)
