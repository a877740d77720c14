"""The Candidate role: pre-vote and election rounds (Raft thesis 9.6)."""
from __future__ import annotations

from .role import Role


class Candidate(Role):
    """A node campaigning (pre-vote or real vote). Clients get "unavailable": no leader is known."""

