"""The bank workload (transactions, issue 14) on real kvnode processes under kill, pause and
partition faults: no torn read, no negative balance, every acknowledged transfer in the final
balances and no failed one, reads never go back, the cluster recovers, no node crashes.

Partition faults need root and nftables: without them this FAILS (NftUnavailable)."""
from __future__ import annotations

import pytest

from tests.jepsen.bank import run_bank

pytestmark = pytest.mark.integration


def test_bank_transfers_under_kill_pause_partition(tmp_path):
    lines: list = []
    res = run_bank("kill-leader,pause-leader,partition-leader,partition-halves", nodes=3, duration_s=24,
                   clients=5, accounts=5, seed=31, directory=tmp_path / "cluster",
                   history_dir=tmp_path / "histories", log=lines.append)
    print("\n".join(lines))
    print(res.summary())
    why = f"\n{res.summary()}\n--- nemesis timeline ---\n" + "\n".join(f"+{t:7.2f}s {s}" for t, s in res.events)
    if not res.ok:
        why += f"\n--- node logs (tail) ---\n{res.log_tail}"
    assert res.check is not None and res.check.ok, "the bank history is NOT consistent" + why
    assert not res.check.notes, "part of the check was inconclusive" + why
    for kind in res.nemeses:
        assert res.faults[kind] > 0, f"no {kind} fault was injected" + why
    assert res.check.transfers_ok > 50 and res.check.reads > 50, "too few ops to mean anything" + why
    assert res.ops_during_faults > 0, "no op succeeded while faults were injected" + why
    assert res.live, "the cluster did not recover after the final heal" + why
    assert not res.crashed, f"nodes exited on their own: {res.crashed}" + why
    assert res.final_balances is not None and sum(res.final_balances.values()) == 500


def test_blind_transfers_are_caught(tmp_path):
    """The harness is not vacuous: transfers without the compare (read, then blindly put both
    balances) lose updates when they race, and the checker must say so."""
    res = run_bank("kill-leader", nodes=3, duration_s=5, clients=5, accounts=3, seed=32,
                   directory=tmp_path / "cluster", history_dir=tmp_path / "histories", compare=False)
    print(res.summary())
    assert res.check is not None and not res.check.ok, res.summary()
    assert "torn read" in res.check.explanation or "lost or phantom" in res.check.explanation
    assert res.history_path and res.cluster_dir  # a failing run keeps what is needed to replay it
