"""A committed entry the FSM cannot decode stops the node; one with appended fields applies."""
import msgpack
import pytest

from raftkv.actors import fsm as fsm_module
from raftkv.actors.fsm import Fsm, KVState
from raftkv.actors.messages import Apply
from raftkv.records import Command, Entry, EntryKind, UndecodableEntry, spec_of, to_fields
from raftkv.wire.codec import encode_record

CODE = spec_of(Command).code


def test_command_with_an_extra_trailing_field_is_applied():
    s = KVState()
    payload = msgpack.packb([CODE, to_fields(Command("put", "k", b"v", client_id="c", seq=1)) + [42]],
                            use_bin_type=True)
    assert s.apply(1, EntryKind.COMMAND, payload)[:2] == ("ok", None)
    assert s.data == {"k": b"v"}


@pytest.mark.parametrize("kind, payload, why", [
    (EntryKind.COMMAND, b"\xc1 garbage", "not msgpack"),
    (EntryKind.COMMAND, msgpack.packb([CODE, ["put", 7]]), "expected str"),
    (EntryKind.COMMAND, encode_record(Command("increment", "k")), "unknown write operation 'increment'"),
    (7, b"", "unknown entry kind 7"),
])
def test_undecodable_committed_entry_raises_naming_its_index(kind, payload, why):
    s = KVState()
    s.apply(1, EntryKind.COMMAND, encode_record(Command("put", "a", b"1")))
    with pytest.raises(UndecodableEntry, match=f"committed entry 2 cannot be decoded.*{why}") as info:
        s.apply(2, kind, payload)
    assert info.value.index == 2
    assert s.data == {"a": b"1"}  # nothing applied from it


def test_fsm_actor_stops_the_node_on_an_undecodable_entry(monkeypatch):
    reasons = []

    def die(reason):  # the real one logs CRITICAL and calls os._exit
        reasons.append(reason)
        raise SystemExit(70)

    monkeypatch.setattr(fsm_module, "die", die)
    replies = []
    actor = Fsm(replies.extend, lambda *a: None, lambda *a: None, snapshot_threshold=10**9)
    good = Entry(1, EntryKind.COMMAND, encode_record(Command("put", "a", b"1")))
    bad = Entry(1, EntryKind.COMMAND, b"\xc1")
    with pytest.raises(SystemExit):
        actor.on_receive(Apply([(1, good), (2, bad), (3, good)]))
    assert len(reasons) == 1 and reasons[0].startswith("committed entry 2 cannot be decoded")
    assert actor.state.data == {"a": b"1"}  # entry 3 was not applied past the bad one
