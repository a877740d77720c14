"""A leader that admitted a join replacing a member (a new incarnation of its id: its data
directory was wiped) stops counting the old incarnation's acknowledgements for commit (sim seed
15879: it committed the entry promoting a sixth voter with them, so that entry was on the disks
of only 3 of its 6 voters, and then proposed the replacement on the strength of that commit)."""
from __future__ import annotations

import random

from raftkv.actors.core import CoreConfig, RaftCore
from raftkv.wire.messages import AppendReply, EntryKind, Member

from tests.unit.test_core import EMAX, EMIN, HB, commit_noop, elect
from tests.unit.test_core_identity import silence


def leader4() -> RaftCore:
    ms = [Member(f"n{i}", f"127.0.0.1:{9000 + i}", incarnation=f"a{i}") for i in (1, 2, 3, 4)]
    cfg = CoreConfig(election_ticks_min=EMIN, election_ticks_max=EMAX, heartbeat_ticks=HB)
    c = RaftCore("n1", cfg, members=ms, rng=random.Random(7), incarnation="a1")
    elect(c)
    commit_noop(c)
    c.take_ready()
    return c


def test_the_acknowledgements_of_a_replaced_incarnation_stop_counting_for_commit():
    c = leader4()  # 4 voters: a quorum is 3
    idx, _ = c.propose([(EntryKind.COMMAND, b"x")])
    c.on_persisted(idx, c.term)
    c.step("n3", AppendReply(c.term, True, match_index=idx, from_incarnation="a3"))
    assert c.commit < idx
    silence(c, "n3")  # n3 answers no more: its disk is being replaced
    c.join(Member("n3", "127.0.0.1:9003"), "route", "b3")  # passes the guard: a wiped n3
    c.step("n2", AppendReply(c.term, True, match_index=idx, from_incarnation="a2"))
    assert c.commit < idx, "n1 and n2 hold it; n3's copy was on the wiped disk"
    c.step("n4", AppendReply(c.term, True, match_index=idx, from_incarnation="a4"))
    assert c.commit == idx


def test_without_a_replacement_the_same_acknowledgements_commit():
    c = leader4()
    idx, _ = c.propose([(EntryKind.COMMAND, b"x")])
    c.on_persisted(idx, c.term)
    c.step("n3", AppendReply(c.term, True, match_index=idx, from_incarnation="a3"))
    silence(c, "n3")
    c.step("n2", AppendReply(c.term, True, match_index=idx, from_incarnation="a2"))
    assert c.commit == idx
