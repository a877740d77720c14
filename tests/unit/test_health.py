"""The leader's "peer unreachable" verdicts (actors/health.py): what an operator reads in the log
and in the metrics about a peer that has not answered."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

import raftkv.actors.health as health
from raftkv.actors.core import LEADER
from raftkv.actors.health import HealthWatch

UNREACHABLE_S = 2.0


@dataclass
class _Member:
    id: str
    voter: bool = True
    addr: str = "127.0.0.1:1"


@dataclass
class _Core:
    """The part of RaftCore's public state that HealthWatch reads."""

    members: list
    role: str = LEADER
    term: int = 2
    leader_id: str = "n1"

    def member(self, nid):
        return next((m for m in self.members if m.id == nid), None)


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(health.time, "monotonic", lambda: now[0])
    return now


def _unreachable_lines(caplog):
    return [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]


def test_a_peer_added_long_after_the_election_is_not_reported_silent_since_the_election(clock, caplog):
    core = _Core([_Member("n1"), _Member("n2"), _Member("n3")])
    watch = HealthWatch("n1", UNREACHABLE_S)
    watch.on_role_change(core)
    clock[0] += 600.0  # ten minutes of leading, the peers answering all along
    contact = {"n2": clock[0], "n3": clock[0]}
    with caplog.at_level(logging.WARNING, logger="actors.health"):
        watch.on_tick(core, contact)
        core.members.append(_Member("n4", voter=False))  # a joiner, added as a learner
        watch.on_tick(core, contact)
        assert watch.reachable["n4"] is True
        assert _unreachable_lines(caplog) == []
        # It never answers: reported once it has been silent for unreachable_s since it was added,
        # with that silence, not the leadership's age.
        clock[0] += UNREACHABLE_S + 0.5
        contact = {"n2": clock[0], "n3": clock[0]}
        watch.on_tick(core, contact)
    assert watch.reachable["n4"] is False
    lines = _unreachable_lines(caplog)
    assert len(lines) == 1 and "peer n4 unreachable" in lines[0]
    assert "no answer for 2.5s" in lines[0]


def test_a_peer_silent_since_the_election_is_still_reported(clock, caplog):
    core = _Core([_Member("n1"), _Member("n2"), _Member("n3")])
    watch = HealthWatch("n1", UNREACHABLE_S)
    watch.on_role_change(core)
    watch.on_tick(core, {})
    clock[0] += UNREACHABLE_S + 1.0
    with caplog.at_level(logging.WARNING, logger="actors.health"):
        watch.on_tick(core, {"n2": clock[0]})
    assert watch.reachable == {"n2": True, "n3": False}
    assert [m for m in _unreachable_lines(caplog) if "n3" in m]


def test_a_peer_removed_and_added_again_counts_its_silence_from_its_return(clock, caplog):
    core = _Core([_Member("n1"), _Member("n2"), _Member("n3")])
    watch = HealthWatch("n1", UNREACHABLE_S)
    watch.on_role_change(core)
    watch.on_tick(core, {"n2": clock[0], "n3": clock[0]})
    core.members = [m for m in core.members if m.id != "n3"]
    watch.on_tick(core, {"n2": clock[0]})
    clock[0] += 300.0
    core.members.append(_Member("n3"))
    with caplog.at_level(logging.WARNING, logger="actors.health"):
        watch.on_tick(core, {"n2": clock[0], "n3": clock[0] - 300.0})
    assert watch.reachable["n3"] is True
    assert _unreachable_lines(caplog) == []
