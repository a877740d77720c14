"""The token table of the replicated state (issue 11): what token commands do, that both state
kinds keep it across snapshots and restarts, and the checks a secure node's doors make."""
from __future__ import annotations

from types import SimpleNamespace

import msgpack
import pytest

from raftkv.actors.db_state import DbState
from raftkv.actors.fsm import KVState
from raftkv.actors.node_security import NodeDoors, bootstrap_entries
from raftkv.actors.token_state import (JOIN_SECRET_KEY, MAX_TOKENS, TokenState, create_command,
                                       join_secret_command)
from raftkv.records import Configuration, DecodeError, EntryKind, Member, Status, from_fields, spec_of
from raftkv.storage.kv_store import KvStore
from raftkv.wire.messages import ClientRequest, Command, encode_record
from raftkv.wire.security.bootstrap import StoredJoinSecret, bootstrap_secure
from raftkv.wire.security.keys import generate_keypair
from raftkv.wire.security.tokens import Role, new_client_token, new_join_token
from raftkv.wire.security.zap import JOINER_USER_ID, Door, KeyRing

SERVER = generate_keypair().public


def _token(name: str, role: Role = Role.WRITE):
    return new_client_token(name, role, "c1", SERVER)


def _create(t) -> Command:
    return create_command(t.stored())


def _revoke(name: str) -> Command:
    return Command("token_revoke", name)


def test_create_revoke_and_the_last_admin_token():
    ts = TokenState()
    admin, app = _token("admin", Role.ADMIN), _token("app")
    assert ts.apply(_create(admin)) == ("ok", None)
    assert ts.apply(_create(app)) == ("ok", None)
    assert ts.apply(_create(app)) == ("cas_failed", None)  # a name is never overwritten
    assert ts.listing() == [{"name": "admin", "role": "admin"}, {"name": "app", "role": "write"}]
    assert ts.check_revoke("admin") is not None and "last admin" in ts.check_revoke("admin")
    assert ts.apply(_revoke("admin")) == ("cas_failed", None)
    assert ts.apply(_revoke("nobody")) == ("not_found", None)
    assert ts.apply(_revoke("app")) == ("ok", None)
    assert list(ts.tokens) == ["admin"]


def test_what_a_token_create_request_must_carry():
    ts = TokenState()
    t = _token("app")
    good = msgpack.packb(t.stored().to_wire(), use_bin_type=True)
    assert ts.check_create("app", good) is None
    assert "name" in ts.check_create("other", good)  # key and token name must agree
    assert ts.check_create("app", None) is not None
    assert ts.check_create("app", b"\xc1") is not None  # not msgpack
    assert ts.check_create("app", msgpack.packb(["app", "root", b"x" * 32, SERVER])) is not None  # no such role
    # the join secret's reserved name is not a token name: under it only a join secret (the
    # join-token rotation, admin only) is accepted, never a client token
    js = msgpack.packb([b"h" * 32, SERVER])
    assert ts.check_create(JOIN_SECRET_KEY, js) is None
    assert ts.check_create(JOIN_SECRET_KEY, good) is not None
    # a malformed committed command is answered invalid and changes nothing
    assert ts.apply(Command("token_create", "app", b"\xc1")) == ("invalid", None)
    assert ts.tokens == {}


def test_the_table_is_bounded(monkeypatch):
    import raftkv.actors.token_state as token_state

    monkeypatch.setattr(token_state, "MAX_TOKENS", 2)
    ts = TokenState()
    for name in ("a", "b"):
        assert ts.apply(_create(_token(name))) == ("ok", None)
    assert ts.apply(_create(_token("c"))) == ("invalid", None)
    assert "too many" in ts.check_create("c", msgpack.packb(_token("c").stored().to_wire(), use_bin_type=True))
    assert MAX_TOKENS >= 1000


def test_the_join_secret_and_a_round_trip_through_encode():
    ts = TokenState()
    jt = new_join_token("c1", SERVER)
    assert ts.apply(join_secret_command(StoredJoinSecret.of(jt))) == ("ok", None)
    ts.apply(_create(_token("admin", Role.ADMIN)))
    again = TokenState.decode(ts.encode())
    assert again.tokens == ts.tokens
    assert again.join_secret == StoredJoinSecret.of(jt)
    assert TokenState.decode(None).tokens == {}


def _entries(cmds: list) -> list:
    return [(i + 1, EntryKind.COMMAND, encode_record(c)) for i, c in enumerate(cmds)]


def test_both_states_keep_tokens_apart_from_keys_across_snapshots_and_restarts(tmp_path):
    cmds = [_create(_token("admin", Role.ADMIN)), Command("put", "k", b"v"), _create(_token("app"))]
    mem = KVState()
    for index, kind, data in _entries(cmds):
        mem.apply(index, kind, data)
    assert sorted(mem.tokens.tokens) == ["admin", "app"]
    assert mem.read("list", "").items == [("k", b"v")]  # tokens are no keys
    restored = KVState.restore(mem.frozen().chunks())
    assert restored.tokens.tokens == mem.tokens.tokens
    store = KvStore(str(tmp_path / "kv"))
    db = DbState(store)
    for index, kind, data in _entries(cmds):
        db.apply(index, kind, data)
    db.end_batch(1, None)
    assert db.read("list", "").items == [("k", b"v")]
    store.close()
    store = KvStore(str(tmp_path / "kv"))
    try:
        assert DbState(store).tokens.tokens == mem.tokens.tokens
    finally:
        store.close()


def test_bootstrap_entries_put_the_join_secret_and_admin_token_in_the_first_state(tmp_path):
    boot = bootstrap_secure(tmp_path, "c1", make_tls=False)
    st = KVState()
    for i, e in enumerate(bootstrap_entries(boot), start=2):
        assert st.apply(i, e.kind, e.data)[:2] == ("ok", None)
    assert st.tokens.join_secret == boot.join_secret
    assert list(st.tokens.tokens) == ["admin"]


class _Auth:
    def __init__(self) -> None:
        self.rings: dict = {}

    def ring(self, door: Door) -> KeyRing:
        return self.rings.setdefault(door, KeyRing())


def test_doors_follow_the_configuration_and_the_token_table(tmp_path):
    auth = _Auth()
    doors = NodeDoors(auth, "n1", tmp_path)  # type: ignore[arg-type]
    doors.peer = SimpleNamespace(allowed_senders=None)
    k1, k2 = generate_keypair().public, generate_keypair().public
    doors.on_members([Member("n1", "h:1", curve_key=k1.decode()), Member("n2", "h:2", curve_key=k2.decode())])
    assert auth.ring(Door.PEER).user_id(k2) == "n2"
    assert doors.peer.allowed_senders == {"n1", "n2"}
    ts = TokenState()
    jt = new_join_token("c1", SERVER)
    ts.apply(join_secret_command(StoredJoinSecret.of(jt)))
    reader = _token("dash", Role.READ)
    ts.apply(_create(reader))
    doors.on_tokens(ts)
    assert auth.ring(Door.PEER).user_id(jt.keypair().public) == JOINER_USER_ID
    assert auth.ring(Door.CLIENT).user_id(reader.keypair().public) == "dash"
    assert doors.authorize("dash", ClientRequest("get", "k")) is None
    refused = doors.authorize("dash", ClientRequest("put", "k", b"v"))
    assert refused.status == Status.NOT_AUTHORIZED.value and "needs write" in refused.error
    assert doors.authorize(None, ClientRequest("get", "k")).status == Status.NOT_AUTHORIZED.value
    # removing a member revokes its key, and its messages on an open connection
    doors.on_members([Member("n1", "h:1", curve_key=k1.decode())])
    assert auth.ring(Door.PEER).user_id(k2) is None
    assert doors.peer.allowed_senders == {"n1"}
    assert auth.ring(Door.PEER).user_id(jt.keypair().public) == JOINER_USER_ID
    # revoking a token: the next request of that name is refused
    ts.apply(_revoke("dash"))
    doors.on_tokens(ts)
    assert doors.authorize("dash", ClientRequest("get", "k")).status == Status.NOT_AUTHORIZED.value
    assert auth.ring(Door.CLIENT).user_id(reader.keypair().public) is None


def test_member_curve_key_is_optional_and_checked():
    code = spec_of(Configuration).code
    old = from_fields(code, [[["n1", "h:1", "", "", True, "", True]]])
    assert old.members[0].curve_key == ""
    key = generate_keypair().public.decode()
    assert from_fields(code, [[["n1", "h:1", "", "", True, "", True, key]]]).members[0].curve_key == key
    with pytest.raises(DecodeError, match="curve_key"):
        from_fields(code, [[["n1", "h:1", "", "", True, "", True, "x" * 39]]])
