"""The leader's rule against replacing a live member (issue 11).

A join by a member's id with another incarnation replaces that member (its data directory was
wiped: RaftCore.join, actors/membership.py). The join token is enough to send such a join, so
without a guard anyone holding the token could push a running member out of the configuration
under its own id. The leader therefore refuses the replacement while it still hears from the
member: a reply from that incarnation within the last election timeout (the maximum of the
range). Why that window and not check-quorum's: check-quorum clears its ``active`` flags every
minimum election timeout, so just after a clear a member that answered one tick ago would look
silent; a per-member time of the last reply has no such blind spot. A full election timeout is
many heartbeat intervals (6-12 by default), so a reachable member is never judged dead by a lost
heartbeat or two, and a member silent that long is what its own followers would call dead.

The joiner is told so (``JOIN_REFUSED_LIVE_MEMBER`` in the JoinReply's error) and keeps retrying
with backoff: once the old process is really dead, the next attempt after one election timeout
is admitted. A leader is always live, so a join under the leader's own id with another
incarnation is refused too; a new leader counts every member as heard at its election, so it
waits one election timeout before believing any of them dead.
"""
from __future__ import annotations

from typing import Optional

from raftkv.records import JOIN_REFUSED_LIVE_MEMBER


class MemberLive(Exception):
    """A join asked to replace a member this leader still hears from: refused (retry later)."""


def live_refusal(member_id: str, leader_id: str, heard: Optional[int], now: int, window: int) -> Optional[str]:
    """The refusal text for replacing ``member_id`` (None: it may be replaced). ``heard`` is the
    tick of the last reply from its current incarnation (None: no progress is kept for it);
    ``window`` the election timeout in ticks."""
    if member_id == leader_id:
        return f"{JOIN_REFUSED_LIVE_MEMBER}: {member_id} is the leader itself; refusing to replace it"
    if heard is not None and now - heard < window:
        return (f"{JOIN_REFUSED_LIVE_MEMBER}: {member_id} answered the leader {leader_id} within the last election "
                f"timeout; refusing to replace it by a new incarnation while it runs (if its disk was really "
                f"replaced, the old process is dead and a retry is admitted once it has been silent that long)")
    return None
