"""The Follower role: replicates the leader's log; redirects clients to the leader."""
from __future__ import annotations

from .role import RoleActor


class Follower(RoleActor):
    """A follower (also a learner, and a joining node before it is a member).

    Everything it does is the base behaviour: step peer messages into the core, redirect writes
    and linearizable reads to the leader, serve stale reads and status locally, forward joins.
    """

    role_name = "follower"
