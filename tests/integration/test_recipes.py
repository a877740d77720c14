"""Locks and elections (wire/recipes.py) with real kvnode processes (issue 14): two processes
contending for a lock never hold it at once, a SIGKILLed holder loses it after its TTL, a txn
comparing the fencing token refuses a stale holder's write, and an election hands over on resign."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time

from raftkv import txn as t

from .harness import ROOT, wait_until

ELECTION_MAX = 0.6  # raft.election_timeout_ms default [300, 600]

CONTENDER = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {root!r})
    from raftkv import Client
    kv = Client({servers!r}, timeout=10)
    holds = []
    for _ in range({rounds}):
        with kv.lock("ctr", ttl=5) as lock:
            start = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the machine
            n = int(kv.get("counter"))
            kv.put("counter", str(n + 1))
            holds.append((start, time.monotonic(), lock.fencing_token))
    print(json.dumps(holds), flush=True)
""")


def test_two_processes_contending_for_a_lock_never_hold_it_at_once(cluster):
    cluster.wait_leader()
    rounds = 20
    with cluster.client() as kv:
        kv.put("counter", "0")
        src = CONTENDER.format(root=str(ROOT), servers=cluster.servers, rounds=rounds)
        procs = [subprocess.Popen([sys.executable, "-c", src], stdout=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        # read-modify-write under the lock: a lost update would leave less than 2 * rounds
        assert kv.get("counter") == str(2 * rounds).encode()
        assert kv.list("ctr/") == []  # every holder deleted its key
    holds = sorted(h for out in outs for h in json.loads(out))
    assert len(holds) == 2 * rounds
    for (s1, e1, tok1), (s2, e2, tok2) in zip(holds, holds[1:]):
        assert e1 < s2, f"two holders at once: [{s1}, {e1}] and [{s2}, {e2}]"
        assert tok1 < tok2  # fencing tokens grow from one holder to the next


HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from raftkv import Client
    kv = Client({servers!r}, timeout=5)
    lock = kv.lock("job", ttl={ttl})
    print(lock.fencing_token, flush=True)
    while True:
        time.sleep(1)
""")


def test_a_holder_killed_with_sigkill_loses_the_lock_after_its_ttl(cluster):
    cluster.wait_leader()
    ttl = 2
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT), servers=cluster.servers, ttl=ttl)],
                              stdout=subprocess.PIPE, text=True)
    try:
        holder_token = int(holder.stdout.readline())
        got: dict = {}
        with cluster.client() as kv:
            def wait_for_it() -> None:
                lock = kv.lock("job", ttl=ttl, timeout=30)
                got["at"], got["lock"] = time.monotonic(), lock

            waiter = threading.Thread(target=wait_for_it)
            waiter.start()
            with cluster.client() as probe:
                wait_until(lambda: len(probe.list("job/")) == 2, what="the waiter queued behind the holder")
            time.sleep(ttl)  # the waiter keeps waiting while the holder lives, well past a TTL
            assert "lock" not in got and waiter.is_alive()
            holder.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            waiter.join(timeout=ttl + ELECTION_MAX + 10)
            assert "lock" in got, "the waiter never got the lock"
            took = got["at"] - killed
            assert took <= ttl + ELECTION_MAX + 3, f"the lock came {took:.2f}s after the holder died"
            lock = got["lock"]
            assert lock.fencing_token > holder_token
            lock.release()
            assert kv.list("job/") == []
    finally:
        holder.kill()
        holder.wait()


def _write_fenced(kv, lock, value: bytes) -> bool:
    """The stored-token pattern (README): the write happens only if no later token was stored."""
    mine = f"{lock.fencing_token:020d}"
    return kv.txn([t.value("res-token") < f"{lock.fencing_token + 1:020d}"],
                  [t.put("res-token", mine), t.put("res-ext", value)]).succeeded


def test_a_txn_comparing_the_fencing_token_refuses_a_stale_holders_write(cluster):
    cluster.wait_leader()
    with cluster.client() as kv, cluster.client() as other:
        kv.create("res-token", f"{0:020d}")
        lock = kv.lock("res", ttl=1)
        assert kv.txn([lock.is_owner()], [t.put("res-data", b"by holder 1")]).succeeded
        assert _write_fenced(kv, lock, b"ext 1")
        other.lease_revoke(lock.lease.id)  # as the leader does when a paused holder's lease expires
        with other.lock("res", ttl=5, timeout=10) as lock2:
            assert lock2.fencing_token > lock.fencing_token
            # the first holder wakes up and writes as if it still held the lock: refused
            assert not kv.txn([lock.is_owner()], [t.put("res-data", b"stale")]).succeeded
            assert kv.get("res-data") == b"by holder 1"
            assert _write_fenced(other, lock2, b"ext 2") and not _write_fenced(kv, lock, b"ext stale")
            assert kv.get("res-ext") == b"ext 2"
            wait_until(lambda: lock.lost, timeout=5, what="the stale holder noticing its lease is gone")
            assert kv.txn([lock2.is_owner()], [t.put("res-data", b"by holder 2")]).succeeded
        lock.release()  # harmless after the loss
        assert kv.get("res-data") == b"by holder 2"


def test_the_first_campaigner_leads_and_a_second_takes_over_when_it_resigns(cluster):
    cluster.wait_leader()
    with cluster.client() as kv1, cluster.client() as kv2:
        e1, e2 = kv1.election("svc", ttl=5), kv2.election("svc", ttl=5)
        assert e1.leader() is None
        e1.campaign(b"node-1")
        assert e2.leader() == b"node-1"
        done = threading.Event()

        def campaign_2() -> None:
            e2.campaign("node-2", timeout=30)
            done.set()

        th = threading.Thread(target=campaign_2)
        th.start()
        wait_until(lambda: len(kv1.list("svc/")) == 2, what="the second campaigner queued")
        e1.proclaim(b"node-1 v2")
        assert e2.leader() == b"node-1 v2" and not done.is_set()
        e1.resign()
        assert done.wait(10), "the second campaigner did not take over"
        th.join()
        assert e1.leader() == b"node-2"
        e2.resign()
        assert e1.leader() is None


def test_waiters_get_the_lock_in_the_order_they_queued(cluster):
    cluster.wait_leader()
    order: list = []
    with cluster.client() as kv:
        holder = kv.lock("fifo", ttl=5)
        clients = [cluster.client() for _ in range(3)]
        threads = []
        try:
            for i, c in enumerate(clients):
                def take(i=i, c=c) -> None:
                    with c.lock("fifo", ttl=5, timeout=30):
                        order.append(i)

                th = threading.Thread(target=take)
                th.start()
                threads.append(th)
                wait_until(lambda i=i: len(kv.list("fifo/")) == i + 2, what=f"waiter {i} queued")
            holder.release()
            for th in threads:
                th.join(timeout=30)
        finally:
            for c in clients:
                c.close()
    assert order == [0, 1, 2]
