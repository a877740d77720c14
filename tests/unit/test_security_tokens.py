"""Join and client tokens: round trips, clear errors for garbage, hashed secrets, roles."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.wire.messages import Op
from raftkv.wire.security.keys import generate_keypair
from raftkv.wire.security.tokens import (
    CLIENT_PREFIX, ClientToken, JoinToken, Role, StoredToken, TokenError, allowed, hash_secret,
    new_client_token, new_join_token, required_role, verify_secret,
)

SERVER = generate_keypair().public
URL_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_join_token_round_trips_as_one_url_safe_word():
    tok = new_join_token("prod-cluster-7f3a", SERVER)
    text = tok.encode()
    assert set(text) <= URL_SAFE and text.startswith("kvj1_")
    assert JoinToken.decode(text) == tok
    assert JoinToken.decode(f"  {text}\n") == tok  # pasted with the newline of the file
    assert tok.secret.hex() not in repr(tok)


def test_client_token_round_trips_with_name_role_and_server_key():
    tok = new_client_token("ci-reader", Role.READ, "prod", SERVER)
    back = ClientToken.decode(tok.encode())
    assert back == tok
    assert (back.name, back.role, back.server_public_key) == ("ci-reader", Role.READ, SERVER)
    assert set(tok.encode()) <= URL_SAFE


def test_two_tokens_have_different_secrets():
    assert new_join_token("c", SERVER).secret != new_join_token("c", SERVER).secret


def test_stored_token_verifies_the_right_secret_only():
    tok = new_client_token("app", Role.WRITE, "c", SERVER)
    stored = tok.stored()
    assert tok.secret not in stored.to_wire() and stored.secret_hash == hash_secret(tok.secret)
    assert stored.verify(tok)
    forged = ClientToken(tok.name, Role.ADMIN, tok.cluster_id, SERVER, b"\x00" * 32)
    assert not stored.verify(forged)
    other_name = ClientToken("other", tok.role, tok.cluster_id, SERVER, tok.secret)
    assert not stored.verify(other_name)
    assert not verify_secret(tok.secret[:-1] + bytes([tok.secret[-1] ^ 1]), stored.secret_hash)


def test_stored_token_wire_round_trip_and_garbage():
    stored = new_client_token("app", Role.ADMIN, "c", SERVER).stored()
    assert StoredToken.from_wire(stored.to_wire()) == stored
    for bad in [None, [], ["app", "admin", b"x", stored.curve_public], ["app", "root", stored.secret_hash,
                stored.curve_public], ["a:b", "read", stored.secret_hash, stored.curve_public],
                ["app", "read", stored.secret_hash, b"short"]]:
        with pytest.raises(ValueError):
            StoredToken.from_wire(bad)


def test_token_key_pairs_are_derived_from_the_secret():
    tok = new_client_token("app", Role.READ, "c", SERVER)
    assert tok.keypair() == ClientToken.decode(tok.encode()).keypair()
    assert tok.stored().curve_public == tok.keypair().public
    j = new_join_token("c", SERVER)
    assert j.keypair() != tok.keypair()


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("hello", "not a raftkv client token"),
    (CLIENT_PREFIX, "too short|damaged"),
    ("kvt9_AAAA", "unknown format version"),
    ("kvt1_abc def", "characters"),
    ("kvt1_'abc'", "characters"),
])
def test_garbage_client_tokens_get_clear_errors(text, message):
    with pytest.raises(TokenError, match=message):
        ClientToken.decode(text)


def test_wrong_kind_of_token_is_named():
    join = new_join_token("c", SERVER).encode()
    client = new_client_token("n", Role.READ, "c", SERVER).encode()
    with pytest.raises(TokenError, match="join token, not a client token"):
        ClientToken.decode(join)
    with pytest.raises(TokenError, match="client token, not a join token"):
        JoinToken.decode(client)


def test_truncated_or_mistyped_token_is_called_damaged():
    text = new_client_token("n", Role.READ, "c", SERVER).encode()
    with pytest.raises(TokenError, match="damaged|short"):
        ClientToken.decode(text[:-3])
    flipped = text[:20] + ("A" if text[20] != "A" else "B") + text[21:]
    with pytest.raises(TokenError, match="damaged"):
        ClientToken.decode(flipped)


def test_non_text_token_is_refused():
    with pytest.raises(TokenError, match="text"):
        ClientToken.decode(b"kvt1_x")  # type: ignore[arg-type]


def test_bad_names_are_refused_when_made():
    for name in ["", "a" * 65, "has space", "-dash", "a:b", "é"]:
        with pytest.raises(TokenError, match="token name"):
            new_client_token(name, Role.READ, "c", SERVER)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_token_or_a_token_error(text):
    for decode in (ClientToken.decode, JoinToken.decode):
        try:
            decode(text)
        except TokenError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_body_with_a_valid_prefix_is_a_token_or_a_token_error(body):
    import base64
    for prefix, decode in (("kvt1_", ClientToken.decode), ("kvj1_", JoinToken.decode)):
        try:
            decode(prefix + base64.urlsafe_b64encode(body).rstrip(b"=").decode())
        except TokenError:
            pass


READ = {Op.GET, Op.LIST, Op.STATUS, Op.MEMBERS, Op.WATCH}
WRITE = {Op.PUT, Op.DELETE, Op.CAS, Op.TXN, Op.LEASE_GRANT, Op.LEASE_REVOKE, Op.LEASE_KEEPALIVE, Op.LEASE_TTL,
         Op.LEASE_LIST}
ADMIN = {Op.ADD_NODE, Op.REMOVE_NODE, Op.TRANSFER_LEADER, Op.SNAPSHOT, Op.TOKEN_CREATE, Op.TOKEN_LIST,
         Op.TOKEN_REVOKE, Op.BACKUP}


def test_every_op_has_a_role():
    assert READ | WRITE | ADMIN == set(Op)


@pytest.mark.parametrize("op", sorted(Op, key=lambda o: o.value))
def test_roles_are_nested(op):
    need = required_role(op)
    assert allowed(Role.ADMIN, op)
    assert allowed(Role.WRITE, op) == (need in (Role.READ, Role.WRITE))
    assert allowed(Role.READ, op) == (need is Role.READ)
    assert need is (Role.READ if op in READ else Role.WRITE if op in WRITE else Role.ADMIN)


def test_new_op_names_by_family_and_unknown_ones_are_admin_only():
    assert required_role("watch") is Role.READ and required_role("watch_cancel") is Role.READ
    assert required_role("txn") is Role.WRITE and required_role("create") is Role.WRITE
    assert required_role("lease_grant") is Role.WRITE and required_role("lease") is Role.WRITE
    for op in ["token_create", "token_list", "backup", "something_new", "", None, 7]:
        assert required_role(op) is Role.ADMIN
        assert not allowed(Role.WRITE, op) and allowed(Role.ADMIN, op)


def test_roles_are_accepted_by_name():
    assert allowed("read", "get") and not allowed("read", "put")
    with pytest.raises(ValueError):
        allowed("root", "get")
