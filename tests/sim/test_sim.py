"""The deterministic simulation (tests/sim/cluster.py) over many fixed seeds.

Seeds are ``range(SIM_SEED_BASE, SIM_SEED_BASE + SIM_SEEDS)`` (defaults 0 and 1000): even seeds
run 3 nodes, odd seeds 5. A failure names the seed and the command that replays it with a trace.
Soak: ``SIM_SEEDS=20000 python -m pytest tests/sim/test_sim.py -q``.
"""
from __future__ import annotations

import os

import pytest

from tests.sim.cluster import SimFailure, default_nodes, replay_command, run_seed

SEEDS = int(os.environ.get("SIM_SEEDS", "1000"))
BASE = int(os.environ.get("SIM_SEED_BASE", "0"))
CHUNK = 100


def _chunks() -> list:
    return [(lo, min(lo + CHUNK, BASE + SEEDS)) for lo in range(BASE, BASE + SEEDS, CHUNK)]


@pytest.mark.parametrize("lo,hi", _chunks(), ids=lambda v: str(v))
def test_seeds(lo: int, hi: int) -> None:
    failures = []
    shallow = []
    for seed in range(lo, hi):
        nodes = default_nodes(seed)
        try:
            st = run_seed(seed, nodes)
        except SimFailure as e:
            failures.append(str(e))
            continue
        except Exception as e:  # an exception inside the core (e.g. one of its assertions)
            failures.append(f"seed {seed} ({nodes} nodes): {type(e).__name__}: {e}\n"
                            f"  replay: {replay_command(seed, nodes)} -v")
            continue
        if not st.deep():
            shallow.append(f"{seed}: elections={st.elections} crashes={st.crashes} partitions={st.partitions}")
    assert not failures, f"{len(failures)} failing seed(s):\n" + "\n".join(failures)
    # Simulation depth (DESIGN.md section 8): most seeds see >= 2 elections, a crash and a partition.
    assert len(shallow) <= 0.1 * (hi - lo), "too many shallow seeds:\n" + "\n".join(shallow)


def test_replay_is_deterministic() -> None:
    a = run_seed(11, 5)
    b = run_seed(11, 5)
    assert a == b
    assert a.elections >= 2 and a.crashes >= 1 and a.partitions >= 1 and a.acked > 0
