"""Unit tests of wire.client against a scripted fake front door."""
import time

import pytest

from tests.unit.fake_frontdoor import FakeFrontDoor, free_port
from raftkv.wire.client import Client, InvalidRequest, NotFound, Timeout, Unavailable, json_item
from raftkv.wire.messages import ClientReply


@pytest.fixture
def fd():
    with FakeFrontDoor() as f:
        yield f


@pytest.fixture
def fd2():
    with FakeFrontDoor("node2") as f:
        yield f


def test_put_get_delete_roundtrip(fd):
    with Client([fd.address], timeout=2) as kv:
        kv.put("hello", b"distributed")
        assert kv.get("hello") == b"distributed"
        kv.delete("hello")
        with pytest.raises(NotFound):
            kv.get("hello")


def test_servers_as_comma_separated_string(fd, fd2):
    kv = Client(f" {fd.address} , {fd2.address},", timeout=2)
    assert kv.servers == (fd.address, fd2.address)
    kv.close()


def test_redirect_followed_and_leader_cached(fd, fd2):
    fd.push(ClientReply("not_leader", leader_id="node2", leader_client=fd2.address))
    with Client([fd.address, fd2.address], timeout=2) as kv:
        kv.put("a", b"1")
        assert fd2.store == {"a": b"1"}
        assert kv.leader == fd2.address and kv.leader_id == "node2"
        assert kv.get("a") == b"1"
    assert len(fd.requests()) == 1  # the second call went straight to the cached leader
    assert [r.op for r in fd2.requests()] == ["put", "get"]


def test_redirect_to_a_server_not_in_the_list(fd, fd2):
    fd.push(ClientReply("not_leader", leader_client=fd2.address))
    with Client([fd.address], timeout=2) as kv:
        kv.put("a", b"1")
    assert fd2.store == {"a": b"1"}


def test_unavailable_then_success_after_backoff(fd):
    fd.push(ClientReply("unavailable", error="no leader"), ClientReply("unavailable", error="no leader"))
    with Client([fd.address], timeout=3) as kv:
        kv.BACKOFF_BASE = 0.1
        start = time.monotonic()
        kv.put("a", b"1")
        elapsed = time.monotonic() - start
    # two backoffs: >= 0.05 (half of 0.1) + 0.1 (half of 0.2)
    assert elapsed >= 0.14
    assert len(fd.requests("put")) == 3
    assert fd.store == {"a": b"1"}


def test_silent_server_socket_reopened_and_retried(fd):
    fd.push(None)  # swallow the first request
    with Client([fd.address], timeout=3, attempt_timeout=0.3) as kv:
        kv.put("a", b"1")
    got = fd.received
    assert len(got) == 2
    # a new REQ socket has a new routing identity: the stuck socket was closed and reopened
    assert got[0].identity != got[1].identity
    assert got[0].req.seq == got[1].req.seq


def test_silent_server_next_server_tried(fd, fd2):
    fd.handler = lambda req: None  # never answers
    with Client([fd.address, fd2.address], timeout=3, attempt_timeout=0.3) as kv:
        start = time.monotonic()
        kv.put("a", b"1")
        assert time.monotonic() - start < 1.5
        assert kv.leader == fd2.address
    assert len(fd.requests()) == 1
    assert fd2.store == {"a": b"1"}


def test_dead_server_skipped_quickly(fd):
    dead = f"127.0.0.1:{free_port()}"
    with Client([dead, fd.address], timeout=3, attempt_timeout=2.0, connect_timeout=0.2) as kv:
        start = time.monotonic()
        kv.put("a", b"1")
        assert time.monotonic() - start < 1.0


def test_overall_deadline_raises_timeout(fd):
    fd.handler = lambda req: None
    with Client([fd.address], timeout=0.8, attempt_timeout=0.2) as kv:
        start = time.monotonic()
        with pytest.raises(Timeout) as err:
            kv.put("a", b"1")
        elapsed = time.monotonic() - start
    assert 0.7 <= elapsed < 1.5
    assert "may still have been applied" in str(err.value)
    assert len(fd.requests()) >= 3


def test_no_reachable_server_is_timeout_and_unavailable():
    with Client([f"127.0.0.1:{free_port()}"], timeout=0.5) as kv:
        with pytest.raises(Unavailable):
            kv.get("a")


def test_unavailable_until_deadline_on_read_is_unavailable(fd):
    fd.handler = lambda req: ClientReply("unavailable", error="no leader")
    with Client([fd.address], timeout=0.5) as kv:
        with pytest.raises(Unavailable) as err:
            kv.get("a")
    assert "no leader" in str(err.value)


def test_same_session_across_retries_new_seq_for_next_write(fd):
    fd.push(ClientReply("timeout", error="commit timed out"), None)
    with Client([fd.address], timeout=3, attempt_timeout=0.3, client_id="c1") as kv:
        kv.BACKOFF_BASE = 0.01
        kv.put("a", b"1")
        kv.delete("a")
    puts = fd.requests("put")
    assert [(r.client_id, r.seq) for r in puts] == [("c1", 1)] * 3
    (d,) = fd.requests("delete")
    assert (d.client_id, d.seq) == ("c1", 2)


def test_random_client_ids_differ():
    a, b = Client("127.0.0.1:1"), Client("127.0.0.1:1")
    assert a.client_id != b.client_id
    a.close()
    b.close()


def test_invalid_reply_raises_without_retry(fd):
    fd.push(ClientReply("invalid", error="value too large: 2000000 > 1048576 bytes"))
    with Client([fd.address], timeout=2) as kv:
        with pytest.raises(InvalidRequest, match="value too large"):
            kv.put("a", b"x")
    assert len(fd.requests()) == 1


@pytest.mark.parametrize("call", [
    lambda kv: kv.put("", b"x"),
    lambda kv: kv.put(7, b"x"),
    lambda kv: kv.put("k", 7),
    lambda kv: kv.put("k", None),
    lambda kv: kv.get("k", consistency="eventual"),
    lambda kv: kv.list(limit=-1),
    lambda kv: kv.cas("k", b"1"),
    lambda kv: kv.add_node("n4", "nowhere"),
])
def test_input_validated_before_sending(fd, call):
    with Client([fd.address], timeout=1) as kv:
        with pytest.raises(InvalidRequest):
            call(kv)
    assert fd.requests() == []


def test_bad_server_list():
    with pytest.raises(InvalidRequest):
        Client("")
    with pytest.raises(InvalidRequest):
        Client(["localhost"])


def test_str_values_encoded(fd):
    with Client([fd.address], timeout=2) as kv:
        kv.put("k", "héllo")
        assert kv.cas("k", "héllo", "wörld") is True
    put, cas = fd.requests()
    assert put.value == "héllo".encode()
    assert (cas.expected, cas.value, cas.expect_absent) == ("héllo".encode(), "wörld".encode(), False)


def test_cas_and_create(fd):
    with Client([fd.address], timeout=2) as kv:
        assert kv.create("n", b"1") is True
        assert kv.create("n", b"1") is False
        assert kv.cas("n", expected=b"2", new=b"3") is False
        assert kv.cas("n", expected=b"1", new=b"2") is True
        assert kv.get("n") == b"2"
    assert fd.requests("cas")[0].expect_absent is True


def test_list_status_members_admin(fd):
    fd.store.update({"a/1": b"x", "a/2": b"y", "b": b"z"})
    with Client([fd.address], timeout=2) as kv:
        assert kv.list("a/") == [("a/1", b"x"), ("a/2", b"y")]
        assert kv.list(limit=1) == [("a/1", b"x")]
        st = kv.status()
        assert st["id"] == "node1" and st["leader_id"] == "node1"
        assert kv.members()[0]["id"] == "node1"
        kv.add_node("n4", "127.0.0.1:9004", client="127.0.0.1:5004", voter=False)
        kv.remove_node("n4")
        kv.transfer_leader()
        kv.snapshot()
    add = fd.requests("add_node")[0]
    assert add.member.id == "n4" and add.member.voter is False and add.member.client == "127.0.0.1:5004"
    assert fd.requests("remove_node")[0].key == "n4"
    assert fd.requests("transfer_leader")[0].key == ""


def test_status_asks_first_reachable_without_redirect(fd, fd2):
    fd.push(ClientReply("not_leader", leader_client=fd2.address))
    with Client([f"127.0.0.1:{free_port()}", fd.address], timeout=2, connect_timeout=0.1) as kv:
        # a not_leader answer to status is not followed: the node asked is retried
        st = kv.status()
        assert st["id"] == "node1"
        assert kv.status(server=fd2.address)["id"] == "node2"
    assert fd2.requests() == [fd2.requests()[0]] and fd2.requests()[0].op == "status"


def test_stale_read_does_not_cache_leader(fd):
    with Client([fd.address], timeout=2) as kv:
        with pytest.raises(NotFound):
            kv.get("x", consistency="stale")
        assert kv.leader is None
    assert fd.requests()[0].consistency == "stale"


def test_json_item_flags_binary():
    assert json_item("k", b"v") == {"key": "k", "value": "v"}
    assert json_item("k", b"\xff") == {"key": "k", "value": "/w==", "value_b64": True}


def test_stale_read_goes_to_first_server_not_leader(fd, fd2):
    fd.push(ClientReply("not_leader", leader_client=fd2.address))
    fd.store["k"] = b"local"
    fd2.store["k"] = b"leader"
    with Client([fd.address, fd2.address], timeout=2) as kv:
        kv.put("w", b"1")  # redirected: fd2 is now the cached leader
        assert kv.get("k", consistency="stale") == b"local"
        assert kv.get("k") == b"leader"
        assert kv.leader == fd2.address


def test_slow_connection_kept_for_next_attempt(fd):
    # A connect that does not finish in time is not a stuck REQ socket: it is reused.
    with Client([fd.address], timeout=2, connect_timeout=0.001) as kv:
        kv.put("a", b"1")
        first = kv._sockets[fd.address].sock
        kv.put("b", b"2")
        assert kv._sockets[fd.address].sock is first


def test_server_dying_mid_request_detected_before_attempt_timeout(fd, fd2):
    fd.handler = fd.crash
    with Client([fd.address, fd2.address], timeout=5, attempt_timeout=3) as kv:
        start = time.monotonic()
        kv.put("a", b"1")
        assert time.monotonic() - start < 1.0
    assert fd2.store == {"a": b"1"}


def test_an_expired_session_on_a_first_attempt_continues_in_a_new_session(fd):
    from raftkv.wire.messages import ClientReply

    with Client([fd.address], timeout=5) as kv:
        old_id = kv.client_id
        fd.push(ClientReply("expired"))
        kv.put("k", b"v")  # the rejected first attempt was not applied: resent in a new session
        reqs = fd.requests("put")
        assert reqs[0].client_id == old_id and reqs[1].client_id != old_id and reqs[1].seq == 1
        assert kv.client_id == reqs[1].client_id


def test_round_robin_passes_over_a_server_that_just_failed(fd, fd2):
    from raftkv.wire.messages import ClientRequest

    dead = f"127.0.0.1:{free_port()}"
    with Client([dead, fd.address, fd2.address], timeout=3, connect_timeout=0.2) as kv:
        kv.put("a", b"1")  # the dead server fails the first attempt, fd answers
        kv.leader, kv._next = None, 0  # leader forgotten; the rotation is back at the dead one
        assert kv._target(ClientRequest("put", key="b")) == fd.address


def test_put_many_and_get_many_pipelined(fd):
    with Client([fd.address], timeout=5) as kv:
        kv.put_many([(f"k{i}", b"v%d" % i) for i in range(1000)], window=64)
        assert kv.get_many(["k0", "k999", "nope"], window=2) == [b"v0", b"v999", None]
    puts = fd.requests("put")
    assert len(puts) == 1000 and fd.store["k500"] == b"v500"
    assert len({r.seq for r in puts}) == 1000 and len({r.client_id for r in puts}) == 1


def test_put_many_follows_a_redirect_and_resends_with_the_same_sessions(fd, fd2):
    fd.leader_id = "node2"
    fd.handler = lambda req: ClientReply("not_leader", leader_id="node2", leader_client=fd2.address)
    with Client([fd.address, fd2.address], timeout=5) as kv:
        kv.put_many([(f"k{i}", b"x") for i in range(300)], window=50)
        # the new leader then loses a round: unanswered writes go again, same (client_id, seq)
        fd2.push(fd2.kv_handler, *[ClientReply("timeout", error="no quorum")] * 10)
        kv.put_many([(f"j{i}", b"y") for i in range(100)], window=50)
    assert all(fd2.store.get(f"k{i}") == b"x" for i in range(300))
    assert all(fd2.store.get(f"j{i}") == b"y" for i in range(100))
    by_key: dict = {}
    for r in fd2.requests("put"):
        by_key.setdefault(r.key, set()).add((r.client_id, r.seq))
    assert all(len(s) == 1 for s in by_key.values())  # a resend is the same write
    assert len(fd2.requests("put")) > 400  # and there were resends


def test_consecutive_put_many_calls_share_one_connection(fd):
    """One Client's pipelined calls reuse its connection to the leader (issue 15: a connection
    and an authentication per call cost the leader more than the writes)."""
    with Client([fd.address], timeout=5) as kv:
        kv.put_many([(f"a{i}", b"1") for i in range(50)], window=16)
        first = {r.identity for r in fd.received[1:]}  # [0] settled the leader over REQ
        n = len(fd.received)
        kv.put_many([(f"b{i}", b"2") for i in range(50)], window=16)
        assert kv.get_many([f"b{i}" for i in range(50)], window=16) == [b"2"] * 50
        later = {r.identity for r in fd.received[n:]}
    assert len(first) == 1 and later == first


def test_late_answers_of_an_earlier_call_are_not_taken_for_a_later_calls(fd):
    """Every pipelined request is answered twice, the second time when the next call's requests
    arrive: put_many's late "ok"s (no value) reach the kept connection while get_many waits for
    its values, and get_many's late values while the next put_many waits."""
    fd.late_duplicates = True
    with Client([fd.address], timeout=5) as kv:
        for rnd in range(3):
            kv.put_many([(f"k{i}", b"v%d-%d" % (rnd, i)) for i in range(40)], window=40)
            assert kv.get_many([f"k{i}" for i in range(40)], window=40) == [b"v%d-%d" % (rnd, i) for i in range(40)]
    assert len({r.identity for r in fd.received[1:]}) == 1  # all on one connection


def test_put_many_rejects_bad_input_before_sending(fd):
    with Client([fd.address], timeout=5) as kv:
        with pytest.raises(InvalidRequest):
            kv.put_many([("ok", b"1"), ("", b"2")])
    assert fd.requests() == []
