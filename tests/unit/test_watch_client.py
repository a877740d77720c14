"""Client.watch against scripted nodes: resume points, no duplicates, failover, compaction."""
from __future__ import annotations

import pytest

from raftkv.records import ClientReply, Event
from raftkv.wire.client import Client, Compacted
from tests.unit.fake_frontdoor import FakeFrontDoor


def ev(rev: int, key: str = "p/k", value: bytes = b"v") -> Event:
    return Event(rev, "put", key, value)


def ok(*events: Event, upto: int) -> ClientReply:
    return ClientReply("ok", events=list(events), revision=upto)


def test_the_start_is_a_confirmed_read_and_polls_resume_after_each_answer():
    with FakeFrontDoor() as n1:
        n1.push(ClientReply("ok", revision=10),  # the start: "now" is revision 10
                ok(ev(11), ev(12), upto=12),
                ok(upto=20),  # progress: nothing under the prefix up to 20
                ok(ev(21), upto=25))
        with Client([n1.address], timeout=5) as kv, kv.watch("p/", wait=0.2) as w:
            got = [next(w).revision for _ in range(3)]
        assert got == [11, 12, 21]
        reqs = n1.requests("watch")
        assert [r.start_revision for r in reqs] == [0, 11, 13, 21]
        assert reqs[0].consistency == "linearizable" and all(r.key == "p/" for r in reqs)
        assert all(r.wait_ms == 200 for r in reqs[2:])


def test_a_node_that_dies_is_left_for_the_next_which_resumes_without_duplicates():
    with FakeFrontDoor("n1") as n1, FakeFrontDoor("n2") as n2:
        n1.push(ok(ev(5), ev(6), upto=6), n1.crash)
        # n2 answers from revision 7 on, repeating 6 (as a confused node might): it is dropped
        n2.push(ok(ev(6), ev(7), upto=8), ok(ev(9), upto=9))
        with Client([n1.address, n2.address], timeout=5) as kv, kv.watch("p/", start_revision=5, wait=0.2) as w:
            got = [next(w).revision for _ in range(4)]
            assert w.server == n2.address
        assert got == [5, 6, 7, 9]
        assert [r.start_revision for r in n2.requests("watch")] == [7, 9]


def test_compacted_on_one_node_asks_the_others_and_raises_only_when_none_has_it():
    compacted = ClientReply("compacted", revision=50, error="compacted")
    with FakeFrontDoor("n1") as n1, FakeFrontDoor("n2") as n2:
        n1.push(compacted)
        n2.push(ok(ev(3), upto=4))
        with Client([n1.address, n2.address], timeout=5) as kv, kv.watch("p/", start_revision=3) as w:
            assert next(w).revision == 3
        n1.push(ClientReply("compacted", revision=40, error="compacted"))
        n2.push(ClientReply("compacted", revision=60, error="compacted"))
        with Client([n1.address, n2.address], timeout=5) as kv:
            with pytest.raises(Compacted) as exc:
                kv.watch("p/", start_revision=3)
        assert exc.value.revision == 60 and "restart the watch from revision 60" in str(exc.value)
