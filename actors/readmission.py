"""Asking to be admitted again when a leader addresses this node as another incarnation of its
id (sim seed 4095).

A wiped member restarts as a new incarnation and joins through the leader, which replaces the
old record with a learner of the new incarnation (RaftCore.join). The joiner stops asking once
its own log lists it as its incarnation (kvnode's join loop, RoleView.members). That entry can
still be truncated: a leader of a later term with a shorter log wins without it (Raft
dissertation 4.1: a configuration takes effect when appended, and a truncated one reverts). The
new leader's configuration then lists the old incarnation; it addresses the node as that one, and
the node rightly ignores every such message (its vote or log of the old one is not its own). Nothing
would ever ask again: the voter slot would be dead for good, and a second lost member a lost
quorum.

So a node that is listed as itself in its own configuration, and gets a leader's message
(AppendEntries, Heartbeat, InstallSnapshot) addressed to another incarnation of its id in a term
later than that of its configuration's entry (not known committed: only a leader of a later term
can lack it), even one below its own term (see readmission_request), sends that leader a
JoinRequest as itself (its own record: its addresses and key), at most once per minimum election
timeout. On a secure cluster the leader's door admits only the keys its configuration lists (the
old incarnation's, the new one was in the truncated entry), so the shell sends the request over a
join-token connection, as a join is sent (actors/secure_readmission.py). It is an ordinary join:
the leader replaces the old record only once that incarnation has been silent for an election
timeout (actors/replacement_guard.py). This does not deadlock against that guard: "live" means a reply
from the incarnation the leader's configuration lists, and this node never answers messages
addressed to another incarnation, so the old record falls silent and the retry is admitted. Nor
does it give anyone a new power: the request names only this node's own identity and is sent to
a member of its own configuration, any node holding the join token could send the same join, and
the leader's refusal of a live member stands (a second process under the same id keeps its
record while it answers).
"""
from __future__ import annotations

from typing import Any, Optional

from raftkv.wire.messages import AppendEntries, Heartbeat, InstallSnapshot, JoinRequest, Member

# A leader's messages: only a leader can admit us, and only its messages name our incarnation as
# its configuration knows it.
LEADER_MESSAGES = (AppendEntries, Heartbeat, InstallSnapshot)


def readmission_request(me: Optional[Member], incarnation: str, config_term: Optional[int], msg: Any,
                        now: int, asked_at: Optional[int], every: int) -> Optional[JoinRequest]:
    """The JoinRequest to send the sender of ``msg`` (a message addressed to another incarnation of
    our id), or None. ``me`` is our record in our own configuration (None: not listed, the join
    loop's case); ``config_term`` the term of that configuration's entry, None when it is known
    committed (or in our snapshot); ``asked_at`` the tick of our last such request, ``every`` the
    minimum election timeout in ticks."""
    if me is None or not incarnation or me.incarnation != incarnation:
        return None  # not admitted as this incarnation in our own log: the join loop asks (Node._join_loop)
    if type(msg) not in LEADER_MESSAGES:
        return None
    # A leader of a term below ours is asked too. Our term may be ahead only through our own
    # campaigns (a learner whose log is ahead, RaftCore.needed_learner), which its voters ignore
    # within its lease, and it cannot learn our term: we never answer messages addressed to the
    # old incarnation. Refusing it kept us out for good (sim seeds 1519 and 2233 with
    # NodeModel.maybe_strand_admission). A truly stale leader gets a join it cannot commit.
    if config_term is None or msg.term <= config_term:
        # A committed entry is in every later leader's log, and the leader of the entry's own
        # term appended it: either one addressing the old incarnation sent that before it knew
        # (a message delayed in the network, or queued while we were paused). Asking then would
        # be a join nobody needs, and one arriving after an operator removed this node would
        # add it again (sim seed 47064).
        return None
    if asked_at is not None and now - asked_at < every:
        return None
    return JoinRequest(me, incarnation)  # the leader decides voter and promotion (RaftCore.join)
