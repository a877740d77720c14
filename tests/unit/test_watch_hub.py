"""The watch history (actors/watch_hub.py): order, bounds, compaction, waiting and progress."""
from __future__ import annotations

import queue
import time

import pytest

from raftkv.actors.watch_events import EventType, WatchEvent
from raftkv.actors.watch_hub import MAX_EVENTS_PER_REPLY, WatchHub, event_size
from raftkv.records import ClientReply, ClientRequest, Status


def put(rev: int, key: str, value: bytes = b"v") -> WatchEvent:
    return WatchEvent(rev, EventType.PUT, key, value)


def delete(rev: int, key: str) -> WatchEvent:
    return WatchEvent(rev, EventType.DELETE, key)


def watch(prefix: str, start: int, wait_ms: int = 0, limit: int = 0) -> ClientRequest:
    return ClientRequest("watch", key=prefix, start_revision=start, wait_ms=wait_ms, limit=limit)


class Replies:
    """Collects the hub's answers; ``get`` waits for the next one (with a deadline, no sleep)."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()

    def __call__(self, items: list) -> None:
        for route, rep in items:
            self.q.put((route, rep))

    def get(self, timeout: float = 5.0) -> tuple:
        return self.q.get(timeout=timeout)

    def none_within(self, seconds: float) -> bool:
        try:
            self.q.get(timeout=seconds)
        except queue.Empty:
            return True
        return False


@pytest.fixture
def hub_and_replies():
    replies = Replies()
    hub = WatchHub(replies, 0, history_revisions=100, name="t")
    hub.start()
    yield hub, replies
    hub.stop()


def test_events_come_in_revision_order_filtered_by_prefix():
    hub = WatchHub(Replies(), 0)
    hub.publish([put(1, "a/x"), put(2, "b/y")], 2)
    hub.publish([put(3, "a/z", b"3"), delete(3, "a/x"), put(4, "a/x")], 5)
    rep = hub.answer_now(watch("a/", 1))
    assert rep.status == Status.OK
    assert [(e[0], e[1], e[2]) for e in rep.events] == [(1, "put", "a/x"), (3, "put", "a/z"), (3, "delete", "a/x"),
                                                        (4, "put", "a/x")]
    assert rep.revision == 5  # complete up to the applied index, which moved past the last event
    assert [e[0] for e in hub.answer_now(watch("a/", 4)).events] == [4]
    empty = hub.answer_now(watch("c/", 1))
    assert empty.events == [] and empty.revision == 5  # progress: nothing under c/ up to 5


def test_a_start_below_the_window_is_compacted_with_the_revision_to_restart_from():
    hub = WatchHub(Replies(), 0, history_revisions=10)
    for rev in range(1, 31):
        hub.publish([put(rev, f"k{rev}")], rev)
    assert hub.floor == 20
    rep = hub.answer_now(watch("", 5))
    assert rep.status == Status.COMPACTED and rep.revision == 21
    assert "restart the watch from revision 21" in rep.error
    ok = hub.answer_now(watch("", 21))
    assert [e[0] for e in ok.events] == list(range(21, 31))


def test_a_restarted_node_keeps_no_history_before_its_start():
    hub = WatchHub(Replies(), 500)
    assert hub.answer_now(watch("", 500)).status == Status.COMPACTED
    assert hub.answer_now(watch("", 501)).status == Status.OK


def test_the_byte_bound_drops_whole_revisions_and_moves_the_floor():
    hub = WatchHub(Replies(), 0, history_revisions=1000, history_bytes=10_000)
    big = b"x" * 1000
    for rev in range(1, 41):
        hub.publish([put(rev, "a", big), put(rev, "b", big)], rev)  # two events per revision
    st = hub.stats()
    assert st["bytes"] <= 10_000 and st["events"] % 2 == 0
    oldest = hub.answer_now(watch("", hub.floor + 1)).events
    assert oldest[0][0] == hub.floor + 1 and len(oldest) == st["events"]


def test_an_answer_is_cut_between_revisions_never_inside_one():
    hub = WatchHub(Replies(), 0, history_revisions=10_000)
    rev = 0
    for rev in range(1, 601):
        hub.publish([put(rev, "a"), put(rev, "b")], rev)  # 1200 events
    rep = hub.answer_now(watch("", 1))
    assert len(rep.events) == MAX_EVENTS_PER_REPLY
    last = rep.events[-1][0]
    assert rep.revision == last and rep.events[-2][0] == last  # both events of the last revision
    rest = hub.answer_now(watch("", rep.revision + 1))
    seen = [e[0] for e in rep.events] + [e[0] for e in rest.events]
    assert seen == [r for r in range(1, 601) for _ in (0, 1)]  # no gap, no duplicate
    assert [len(hub.answer_now(watch("", 1, limit=3)).events)] == [4]  # limit 3, but revision 2 goes whole


def test_a_waiting_watch_is_answered_by_the_first_matching_event(hub_and_replies):
    hub, replies = hub_and_replies
    hub.publish([put(1, "a")], 1)
    hub.submit([("r1", watch("b/", 2, wait_ms=5000))])
    deadline = time.monotonic() + 5
    while hub.stats()["waiters"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    hub.publish([put(2, "a")], 2)  # not under b/
    assert replies.none_within(0.1)
    hub.publish([put(3, "b/1", b"hello")], 3)
    route, rep = replies.get()
    assert route == "r1" and [(e[0], e[2], e[3]) for e in rep.events] == [(3, "b/1", b"hello")]


def test_a_wait_that_ends_with_nothing_is_a_progress_answer(hub_and_replies):
    hub, replies = hub_and_replies
    hub.publish([put(1, "a")], 7)
    t0 = time.monotonic()
    hub.submit([("r", watch("zzz", 2, wait_ms=200))])
    route, rep = replies.get()
    assert time.monotonic() - t0 >= 0.19
    assert rep.status == Status.OK and rep.events == [] and rep.revision == 7


def test_a_snapshot_install_tells_waiters_behind_it_compacted(hub_and_replies):
    hub, replies = hub_and_replies
    hub.publish([put(1, "a")], 1)
    hub.submit([("r", watch("zzz", 2, wait_ms=5000))])
    deadline = time.monotonic() + 5
    while hub.stats()["waiters"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    hub.reset(50)
    route, rep = replies.get()
    assert rep.status == Status.COMPACTED and rep.revision == 51


def test_waiters_are_bounded():
    replies = Replies()
    hub = WatchHub(replies, 0, max_waiters=2, name="t")
    hub.start()
    try:
        hub.submit([(i, watch("", 1, wait_ms=5000)) for i in range(3)])
        route, rep = replies.get()
        assert route == 2 and rep.status == Status.UNAVAILABLE and "already wait" in rep.error
    finally:
        hub.stop()


def test_a_future_start_waits_for_its_revision(hub_and_replies):
    hub, replies = hub_and_replies
    hub.publish([put(1, "a")], 1)
    hub.submit([("r", watch("", 5, wait_ms=5000))])
    hub.publish([put(2, "a"), put(3, "a")], 3)
    assert replies.none_within(0.1)  # revisions 2 and 3 are before the start
    hub.publish([put(5, "a")], 5)
    _, rep = replies.get()
    assert [e[0] for e in rep.events] == [5]


def test_the_history_window_follows_the_applied_index_even_without_events():
    hub = WatchHub(Replies(), 0, history_revisions=10)
    hub.publish([put(1, "a")], 1)
    hub.publish([], 100)
    assert hub.floor == 90 and hub.stats()["events"] == 0
    assert isinstance(hub.answer_now(watch("", 1)), ClientReply)
    assert hub.answer_now(watch("", 1)).status == Status.COMPACTED


def test_the_fsm_hands_each_batch_s_events_to_the_hub_and_a_restore_restarts_the_history():
    from raftkv.actors import fsm
    from raftkv.actors.fsm import KVState
    from raftkv.actors.messages import Apply, Read, Restore
    from raftkv.wire.messages import Command, Entry, EntryKind, encode_record

    def cmd(op, key, value=None, seq=1):
        return encode_record(Command(op, key, value, client_id="c", seq=seq))

    hub = WatchHub(Replies(), 0)
    replies: list = []
    actor = fsm.Fsm(replies.extend, lambda v: None, lambda m: None, snapshot_threshold=1_000, hub=hub)
    actor.on_receive(Apply([(1, Entry(1, EntryKind.COMMAND, cmd("put", "a/1", b"x", 1))),
                            (2, Entry(1, EntryKind.NOOP, b"")),
                            (3, Entry(1, EntryKind.COMMAND, cmd("delete", "a/1", seq=2)))], {}))
    rep = hub.answer_now(watch("a/", 1))
    assert [(e.revision, e.type, e.key, e.value, e.prev_value) for e in rep.events] == [
        (1, "put", "a/1", b"x", None), (3, "delete", "a/1", None, b"x")]
    assert rep.revision == 3 and hub.current == 3
    # a watch's confirmed start is answered with the applied index
    actor.on_receive(Read(3, [("r", ClientRequest("watch", key="a/"))]))
    assert replies[-1] == ("r", ClientReply("ok", revision=3))
    snap = KVState()
    for i in range(1, 11):
        snap.apply(i, EntryKind.COMMAND, cmd("put", "b", b"y", seq=i))
    actor.on_receive(Restore(list(snap.chunks()), 10, 1, []))
    assert hub.floor == 10 and hub.answer_now(watch("", 5)).status == Status.COMPACTED


def test_the_window_stays_exact_while_trimmed_events_are_dropped_in_bulk():
    # The hub drops trimmed events from its lists in bulk, not at every publish: whatever the
    # moment, an answer holds exactly the window, and the byte count only what it holds.
    hub = WatchHub(Replies(), 0, history_revisions=10, history_bytes=10_000)
    published: list = []
    for rev in range(1, 200):
        evs = [put(rev, f"k{rev}", b"x" * (rev % 7)) for _ in range(1 + rev % 3)]
        hub.publish(evs, rev)
        published += evs
        assert hub.stats()["bytes"] == sum(event_size(e) for e in published if e.revision > rev - 10)
        assert hub.floor == max(0, rev - 10)
        got = hub.answer_now(watch("", hub.floor + 1)).events
        assert [e[0] for e in got] == [r for r in range(max(1, rev - 9), rev + 1) for _ in range(1 + r % 3)]
        assert hub.stats()["events"] == len(got)
        assert hub.answer_now(watch("", hub.floor)).status == Status.COMPACTED
