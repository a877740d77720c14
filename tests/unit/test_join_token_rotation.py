"""Join-token rotation (issue 11): the leader's check of a rotation request, applying it, the
doors following it, and a stale join.token file renamed."""
from __future__ import annotations

from types import SimpleNamespace

import msgpack

from raftkv.actors.node_security import NodeDoors, retire_stale_join_token
from raftkv.actors.token_state import JOIN_SECRET_KEY, TokenState, join_secret_command
from raftkv.records import Command
from raftkv.wire.security.bootstrap import StoredJoinSecret
from raftkv.wire.security.keys import generate_keypair
from raftkv.wire.security.tokens import hash_secret, new_join_token
from raftkv.wire.security.zap import JOINER_USER_ID, Door

from tests.unit.test_token_state import _Auth

SERVER = generate_keypair().public


def _rotation(jt) -> bytes:
    """What Client.join_token_rotate sends as the value of its token_create."""
    return msgpack.packb([hash_secret(jt.secret), jt.keypair().public], use_bin_type=True)


def test_a_rotation_request_is_checked_and_applied_like_the_bootstrap_secret():
    ts = TokenState()
    old = new_join_token("c1", SERVER)
    ts.apply(join_secret_command(StoredJoinSecret.of(old)))
    new = new_join_token("c1", SERVER)
    assert ts.check_create(JOIN_SECRET_KEY, _rotation(new)) is None
    for bad in (None, b"\xc1", msgpack.packb([b"short", b"x"]), msgpack.packb("text")):
        assert ts.check_create(JOIN_SECRET_KEY, bad).startswith("join secret:")
    version = ts.version
    assert ts.apply(Command("token_create", JOIN_SECRET_KEY, _rotation(new))) == ("ok", None)
    assert ts.join_secret == StoredJoinSecret.of(new) and ts.version == version + 1
    assert JOIN_SECRET_KEY not in ts.tokens and ts.listing() == []  # never listed as a client token
    again = TokenState.decode(ts.encode())  # survives snapshots and restarts like the table
    assert again.join_secret == StoredJoinSecret.of(new)


def test_the_peer_door_admits_the_new_join_key_only(tmp_path):
    auth = _Auth()
    doors = NodeDoors(auth, "n1", tmp_path)  # type: ignore[arg-type]
    doors.peer = SimpleNamespace(allowed_senders=None)
    ts = TokenState()
    old, new = new_join_token("c1", SERVER), new_join_token("c1", SERVER)
    ts.apply(join_secret_command(StoredJoinSecret.of(old)))
    doors.on_tokens(ts)
    assert auth.ring(Door.PEER).user_id(old.keypair().public) == JOINER_USER_ID
    ts.apply(Command("token_create", JOIN_SECRET_KEY, _rotation(new)))
    doors.on_tokens(ts)
    assert auth.ring(Door.PEER).user_id(old.keypair().public) is None
    assert auth.ring(Door.PEER).user_id(new.keypair().public) == JOINER_USER_ID


def test_a_join_token_file_holding_the_old_token_is_renamed(tmp_path, caplog):
    old, new = new_join_token("c1", SERVER), new_join_token("c1", SERVER)
    path = tmp_path / "join.token"
    path.write_text(old.encode() + "\n")
    assert retire_stale_join_token("n1", tmp_path, old.keypair().public) is None  # still current
    assert path.exists()
    moved = retire_stale_join_token("n1", tmp_path, new.keypair().public)
    assert moved == tmp_path / "join.token.rotated" and not path.exists()
    assert moved.read_text().strip() == old.encode()
    assert "join token was rotated" in caplog.text and "n1" in caplog.text
    assert retire_stale_join_token("n1", tmp_path, new.keypair().public) is None  # no file: nothing to do
    path.write_text("not a token\n")
    assert retire_stale_join_token("n1", tmp_path, new.keypair().public) is None and path.exists()
