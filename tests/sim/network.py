"""The simulated network: delays, reordering, loss, duplication, partitions, and the
in-order delivery of a paused process's queued messages when it resumes."""
from __future__ import annotations

from typing import Any, Optional

from raftkv.wire.messages import JoinRequest, ReadIndexReply, VoteReply

from .model import LEADER, MSG, Node


class NetworkModel:
    """Delivers messages between the simulated nodes (a mixin of :class:`tests.sim.cluster.Sim`)."""

    def send(self, src: Node, msgs: list) -> None:
        rng = self.rng
        for to, msg in msgs:
            dst = self.index[to]
            tm = type(msg)
            if tm is VoteReply and msg.granted and not msg.pre_vote:
                key = (msg.term, src.id, src.gen)  # a wiped node's new incarnation is another voter
                prev = self.granted.setdefault(key, to)
                if prev != to:
                    self.fail(f"{src.id} granted its vote in term {msg.term} to {prev} and to {to}")
            elif tm is ReadIndexReply and msg.ok and msg.index > src.core.commit:
                self.fail(f"ReadIndex: {src.id} answers a follower's read at {msg.index} beyond its commit "
                          f"{src.core.commit}")
            copies = 1
            if self.drop and rng.random() < self.drop:
                copies = 0
            elif self.dup and rng.random() < self.dup:
                copies = 2
            for _ in range(copies):
                if self.tail and rng.random() < self.tail:
                    d = rng.uniform(self.delay_hi, 10.0)
                else:
                    d = rng.uniform(0.05, self.delay_hi)
                self.push(self.now + d, MSG, src.i, dst, msg)
            if self.verbose:
                self.trace(f"{src.id} -> {to} {msg!r}" + ("" if copies == 1 else f"  [x{copies}]"))

    def deliver(self, src: int, dst: int, msg: Any) -> None:
        nd = self.nodes[dst]
        if not nd.alive or (src, dst) in self.blocked:
            return
        self.stats.delivered += 1
        if self.verbose:
            self.trace(f"{nd.id} <- n{src + 1} {msg!r}")
        if type(msg) is JoinRequest:
            self.on_join_request(nd, msg)
        else:
            nd.core.step(self.nodes[src].id, msg)
        self.after_input(nd)

    def on_join_request(self, nd: Node, req: JoinRequest) -> None:
        """A JoinRequest reaching a node over the peer transport, as the role actors take it
        (Leader.on_join, Role.on_join): the leader hands it to its core (a refusal goes back to
        the joiner, which retries), anyone else forwards it to the leader it knows."""
        core = nd.core
        if core.role == LEADER:
            self.stats.readmissions += 1
            try:
                core.join(req.member, None, req.incarnation)
            except (self.cm.NotLeader, self.cm.MemberLive):
                pass
        elif core.leader_id is not None and core.leader_id != nd.id and core.member(core.leader_id) is not None:
            self.send(nd, [(core.leader_id, req)])

    def defer(self, kind: int, a: int, b: int, c: Any) -> None:
        """An event for a stopped process waits until it resumes. Its sockets then hand over each
        peer's messages in the order they were sent (one TCP stream per peer), the peers' streams
        interleaved at random; the syncs' completions come in order too."""
        nd = self.nodes[b if kind == MSG else a]
        src = a if kind == MSG else nd.i
        off = self.defer_off.get((nd.i, src))
        if off is None:
            off = self.defer_off[(nd.i, src)] = self.rng.uniform(0.001, 0.5)
        self.defer_n += 1
        self.push(nd.resume_at + off + self.defer_n * 1e-6, kind, a, b, c)
        self.deferred[self.seq] = nd.resume_at  # heal() moves it if the pause ends early

    def new_partition(self, isolate: Optional[int] = None) -> None:
        rng = self.rng
        ids = [nd.i for nd in self.active()]
        n = len(ids)
        if n < 2:
            return
        kind = rng.randrange(5) if isolate is None else 1
        blocked = set()
        leader = self.current_leader()
        if kind <= 1:  # isolate one node (the leader on kind 0 when there is one)
            if isolate is not None:
                x = isolate
            else:
                x = leader.i if (kind == 0 and leader is not None) else rng.choice(ids)
            side = [x]
            desc = f"isolate n{x + 1}"
        elif kind == 2:  # random split
            rng.shuffle(ids)
            side = ids[:rng.randrange(1, n)]
            desc = f"split {sorted(side)}"
        elif kind == 3:  # one-way links
            side = None
            for a in ids:
                for b in ids:
                    if a != b and rng.random() < 0.3:
                        blocked.add((a, b))
            if leader is not None and rng.random() < 0.5:  # the leader hears but is not heard, or vice versa
                out = rng.random() < 0.5
                for b in ids:
                    if b != leader.i:
                        blocked.add((leader.i, b) if out else (b, leader.i))
            desc = f"one-way {sorted(blocked)}"
        elif n >= 3:  # a bridge: two halves that only one node connects
            rng.shuffle(ids)
            bridge = ids[0]
            rest = ids[1:]
            half = rng.randrange(1, len(rest))
            a_side, b_side = rest[:half], rest[half:]
            for a in a_side:
                for b in b_side:
                    blocked.add((a, b))
                    blocked.add((b, a))
            side = None
            desc = f"bridge n{bridge + 1} between {sorted(a_side)} and {sorted(b_side)}"
        else:
            side = [ids[0]]
            desc = f"isolate n{ids[0] + 1}"
        if side is not None:
            other = [i for i in range(len(self.nodes)) if i not in side]
            for a in side:
                for b in other:
                    blocked.add((a, b))
                    blocked.add((b, a))
        self.blocked = blocked
        self.partition_until = self.now + rng.uniform(self.part_lo, self.part_hi)
        self.stats.partitions += 1
        if self.verbose:
            self.trace(f"!!! partition: {desc}")
