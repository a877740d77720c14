"""The leader's membership-change rules, as pure data and functions (Raft thesis 4.1, 4.2.1).

Owned by :class:`actors.core.RaftCore`: requests to add or remove a server are queued here and
turned into single-server configurations one at a time (the core proposes the next only once the
previous one committed, see ``RaftCore.can_change_config``); a server added to become a voter
joins as a learner first and is promoted once it holds everything committed, so a slow join
never costs the cluster its quorum (as etcd's learners and hashicorp's non-voters). A server
added as a learner (``kvclient add-node --learner``, ``Client.add_node(voter=False)``) stays one:
its record says so (``Member.promote`` False), so every later leader honours it too.

A join by a member's id with a different incarnation (its data directory was replaced) is a
replacement: the old record gives way to a learner with the new incarnation in one entry (see
:meth:`MembershipQueue.next_configuration` for why that is a single-server change).

No threads, sockets or clock: the core calls these functions and carries their results out in
its Ready.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from raftkv.wire.messages import Member


class ChangeOrigin(str, Enum):
    """Who asked for a membership change, so the shell knows how to answer it."""

    CLIENT = "client"  # kvclient add-node / remove-node: answered with a ClientReply
    JOIN = "join"  # a node's JoinRequest (kvnode --join): answered with a JoinReply
    PROMOTION = "promotion"  # the leader's own decision: a caught-up learner becomes a voter
    IDENTITY = "identity"  # the leader's own decision: record members' incarnations it learned


@dataclass
class MembershipChange:
    """One requested single-server change: add ``member`` or remove the server ``removed``.

    ``member.voter`` says what the server is to become: True joins as a learner and is promoted
    once caught up, False stays a learner. ``handle`` is opaque to the core: the shell's way to
    answer the requester (a client route, a peer route)."""

    member: Optional[Member] = None
    removed: Optional[str] = None
    handle: Any = None
    origin: ChangeOrigin = ChangeOrigin.CLIENT
    replaces: Optional[Member] = None  # the record of another incarnation of this id it replaces
    member_ids: tuple = ()  # IDENTITY: the members whose incarnations it records

    @property
    def target(self) -> str:
        if self.member_ids:
            return ", ".join(self.member_ids)
        return self.member.id if self.member is not None else (self.removed or "")

    def describe(self) -> str:
        if self.origin is ChangeOrigin.PROMOTION:
            return f"promoting {self.target} to voter"
        if self.origin is ChangeOrigin.IDENTITY:
            return f"recording the incarnations of {self.target}"
        if self.member is None:
            return f"removing {self.removed}"
        what = "a voter-to-be" if self.member.voter else "a learner that stays one"
        if self.replaces is not None:
            return (f"replacing {self.member.id} (incarnation {self.replaces.incarnation or '?'}, its data directory "
                    f"was replaced) by incarnation {self.member.incarnation} at {self.member.addr} as {what}")
        return f"adding {self.member.id} ({self.member.addr}) as {what}"


@dataclass
class MembershipQueue:
    """Changes waiting for the previous one to commit."""

    pending: list = field(default_factory=list)  # MembershipChange, oldest first

    def queue(self, change: MembershipChange) -> None:
        self.pending.append(change)

    def queued(self, member_id: str) -> bool:
        """Whether an addition of ``member_id`` already waits (a joiner retries its request)."""
        return any(c.member is not None and c.member.id == member_id for c in self.pending)

    def take_all(self) -> list:
        """Drop every queued change (leadership lost): the shell tells the requesters."""
        out, self.pending = self.pending, []
        return out

    def next_configuration(self, members: list) -> Optional[tuple]:
        """The next queued change as ``(change, new members)``, or None. An added server is
        always a learner first (see :func:`promotion`)."""
        if not self.pending:
            return None
        change = self.pending.pop(0)
        # A replacement (the same id, another incarnation) drops the old record and adds the new
        # incarnation as a learner in this one entry. Safety: the voters of the new configuration
        # are those of the old minus the replaced one (a learner votes for nothing and counts for
        # no quorum), so this is a single-voter removal, and any majority of the old voters
        # intersects any majority of the new ones (thesis 4.1); the new incarnation becomes a
        # voter only by a later, separate promotion once it holds everything committed. It is
        # never the old voter with an empty log: its votes and acknowledgements are its own.
        members = [m for m in members if m.id != change.target]
        if change.member is not None:
            m = change.member
            members.append(m._replace(voter=False, promote=m.voter))  # curve_key kept (issue 11)
        return change, members

    def promotion(self, members: list, match: dict, commit: int) -> Optional[tuple]:
        """A learner to promote now, as ``(change, new members)``: the first learner (not one that
        must stay a learner: ``promote`` False) whose replicated log reaches the commit index. ``match`` maps
        follower ids to their match index."""
        for m in members:
            if not m.voter and m.promote and match.get(m.id, -1) >= commit:
                new = [x._replace(voter=True) if x.id == m.id else x for x in members]
                return MembershipChange(m, None, None, ChangeOrigin.PROMOTION), new
        return None


def record_incarnations(members: list, learned: dict) -> Optional[tuple]:
    """Fill in the incarnations of members recorded without one (a whole-cluster bootstrap, a
    legacy record) from ``learned`` (id -> incarnation its replies carry), as ``(change, new
    members)``, or None. No server is added, removed, promoted or demoted: quorums are unchanged,
    so any number may be filled in one entry; from then on the cluster tells a wiped member from
    the one it replaced."""
    fill = [m.id for m in members if not m.incarnation and learned.get(m.id)]
    if not fill:
        return None
    new = [m._replace(incarnation=learned[m.id]) if m.id in fill else m for m in members]
    return MembershipChange(None, None, None, ChangeOrigin.IDENTITY, member_ids=tuple(fill)), new


def has_promotable_learners(members: list) -> bool:
    """Whether any learner in ``members`` is waiting to be promoted."""
    return any(not m.voter and m.promote for m in members)


__all__ = ["ChangeOrigin", "MembershipChange", "MembershipQueue", "has_promotable_learners", "record_incarnations"]
