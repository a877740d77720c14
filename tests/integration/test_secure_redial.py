"""A secure cluster's peer door refuses a joiner until its configuration lists the joiner's key;
the joiner's transport redials such a member until it is let in (issue 11, wire/peer.py).

The refusal is made certain, not hoped for: a follower (the *laggard*) is cut off from the other
members by a real network partition (nftables, tests/jepsen/nemesis.py) while node4 joins, so the
configuration carrying node4's key cannot reach it, but node4 itself can reach the laggard; its
first handshake there is refused by ZAP ("unknown key"). libzmq never retries a handshake ZAP
refused, so without the redial node4 would never reach the laggard again. After the heal, the
laggard catches up and must take node4's writes once node4 leads: its only way to receive them is
node4's redialled connection.

Needs root and the ``nft`` binary (apt package ``nftables``): without them the test FAILS
(NftUnavailable), it does not skip.
"""
from __future__ import annotations

from raftkv.wire.client import Client
from tests.jepsen.nemesis import Firewall, SecureNemesisCluster, require_nft

from .harness import wait_until


def _member_ids(status: dict) -> set:
    return {m["id"] for m in status["members"]}


def test_a_member_that_refused_a_joiners_key_lets_it_in_once_it_catches_up(tmp_path):
    require_nft()
    c = SecureNemesisCluster(tmp_path / "c", n=3)
    fw = None
    try:
        c.start()
        fw = Firewall()
        leader = c.wait_leader(30)
        # A follower that is not node1 either: the joiner asks node1 (SecureCluster.add_secure_joiner).
        lag = next(nid for nid in ("node3", "node2") if nid != leader)
        lagger = c.nodes[lag]
        fw.cut([(c.ips[lag], ip) for nid, ip in c.ips.items() if nid != lag])
        with c.client(timeout=15) as kv:
            kv.put("during-cut", b"1")

        node4 = c.add_secure_joiner("node4")
        node4.start()
        # node4's dial of the laggard is refused at its door (the laggard does not know node4's key)...
        wait_until(lambda: f"{lag} refused our key" in node4.log_text(), 60,
                   what=f"node4 to report that {lag} refused its key")
        wait_until(lambda: "refused a CURVE handshake" in lagger.log_text() and "unknown key" in lagger.log_text(),
                   10, what=f"{lag} to log the refusal")
        # ... while the others admit node4 and promote it (3 of 4 voters answer without the laggard).
        wait_until(lambda: {m["id"]: m["voter"] for m in c.leader_status()["members"]}.get("node4"), 90,
                   what="node4 admitted and promoted")
        assert "node4" not in _member_ids(lagger.status(timeout=5)), "the cut laggard learnt node4 anyway"

        fw.heal()
        wait_until(lambda: "node4" in _member_ids(lagger.status(timeout=2)), 60,
                   what=f"{lag} to learn the configuration with node4")
        wait_until(lambda: f"{lag} accepted our key after a redial" in node4.log_text(), 30,
                   what=f"node4 to redial {lag} and be let in")

        # What a user sees: with node4 leading, the laggard receives node4's writes (only node4's
        # redialled connection can carry them) and reads them back.
        with c.client(timeout=15) as kv:

            def node4_leads() -> bool:
                if c.leader() != "node4":
                    kv.transfer_leader("node4")
                return c.leader() == "node4"

            wait_until(node4_leads, 60, interval=0.5, what="node4 to lead")
            kv.put("after-heal", b"from node4")
        with Client([lagger.client], timeout=5, token=c.admin_token) as lc:
            wait_until(lambda: lc.get("after-heal", consistency="stale") == b"from node4", 30,
                       what=f"{lag} to apply node4's write")
            assert lc.get("during-cut", consistency="stale") == b"1"
        st = c.leader_status()
        assert st["id"] == "node4" and _member_ids(st) == {"node1", "node2", "node3", "node4"}
        assert not c.exited(), c.exited()
    finally:
        if fw is not None:
            fw.close()
        c.stop()
