"""The Candidate role: pre-vote and election rounds (Raft thesis 9.6)."""
from __future__ import annotations

from .role import RoleActor


class Candidate(RoleActor):
    """A node campaigning (pre-vote or real vote). Clients get "unavailable": no leader is known."""

