"""The simulation can fail: known Raft bugs planted in a copy of the core are caught quickly.

actors/core.py itself is not modified (see tests/sim/planted_bugs.py).
"""
from __future__ import annotations

import pytest

from tests.sim.planted_bugs import first_failure, planted_core


@pytest.mark.parametrize("bug", ["a", "b", "e", "g"])
def test_planted_bug_is_caught(bug: str) -> None:
    seed, secs, what = first_failure(bug, max_seeds=300)
    assert seed is not None, f"planted bug ({bug}) survived 300 seeds ({secs:.1f}s)"


def test_planted_copy_leaves_the_real_core_alone() -> None:
    import raftkv.actors.core as real
    mod = planted_core("a")
    assert mod.RaftCore is not real.RaftCore
    assert "PLANTED" not in open(real.__file__).read()
