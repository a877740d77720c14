"""CPU cost of the pure Raft core per write, without actors, sockets or disks.

    python3 tests/bench_core.py [--writes 5000]

Three RaftCores wired in memory; n1 is elected; then for each write: the leader proposes one
entry (one AppendEntries per follower), each follower steps it and acknowledges, the leader
steps both acknowledgements and commits. Prints microseconds per write for each side.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raftkv.actors.core import LEADER, CoreConfig, RaftCore  # noqa: E402
from raftkv.wire.messages import EntryKind, Member, VoteReply  # noqa: E402


def _persist(core: RaftCore, ready) -> None:
    p = ready.persist
    if p.entries:
        core.on_persisted(p.first + len(p.entries) - 1, p.entries[-1].term)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writes", type=int, default=5000)
    n = ap.parse_args().writes
    members = [Member(f"n{i}", f"127.0.0.1:{9000 + i}") for i in (1, 2, 3)]
    cores = {m.id: RaftCore(m.id, CoreConfig(), members=members) for m in members}
    leader = cores["n1"]
    leader.campaign()
    for p in ("n2", "n3"):
        leader.step(p, VoteReply(leader.term + 1, True, pre_vote=True))
    for p in ("n2", "n3"):
        leader.step(p, VoteReply(leader.term, True))
    assert leader.role == LEADER
    # Deliver the new leader's no-op until it commits, so the followers replicate (not probe).
    rd = leader.take_ready()
    _persist(leader, rd)
    while rd.send or rd.send_after_persist:
        acks = []
        for to, m in rd.send + rd.send_after_persist:
            c = cores[to]
            c.step(leader.id if to != leader.id else "", m)
            crd = c.take_ready()
            _persist(c, crd)
            acks += [(to, a) for _, a in crd.send + crd.send_after_persist]
        for frm, a in acks:
            leader.step(frm, a)
        rd = leader.take_ready()
    t_lead = t_follow = t_commit = 0.0
    for _ in range(n):
        t0 = time.perf_counter()
        leader.propose([(EntryKind.COMMAND, b"x" * 150)])
        rd = leader.take_ready()
        _persist(leader, rd)
        leader.take_ready()
        t1 = time.perf_counter()
        acks = []
        for to, m in rd.send:
            f = cores[to]
            f.step("n1", m)
            frd = f.take_ready()
            _persist(f, frd)
            acks += [(to, a) for _, a in frd.send + frd.send_after_persist]
        t2 = time.perf_counter()
        for frm, a in acks:
            leader.step(frm, a)
        committed = leader.take_ready().committed
        t3 = time.perf_counter()
        assert committed, "a write did not commit"
        t_lead += t1 - t0
        t_follow += (t2 - t1) / len(rd.send)
        t_commit += t3 - t2
    print(f"per write: leader propose {t_lead / n * 1e6:.1f} us, follower append {t_follow / n * 1e6:.1f} us, "
          f"leader commit (2 acks) {t_commit / n * 1e6:.1f} us")


if __name__ == "__main__":
    main()
