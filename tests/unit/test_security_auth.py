"""Per-request authorization by ZAP user id and by HTTP bearer token: 401, 403 and revocation."""
from raftkv.wire.messages import Op
from raftkv.wire.security.auth import AuthOutcome, TokenTable, authorize_bearer, authorize_user_id, bearer_token
from raftkv.wire.security.keys import generate_keypair
from raftkv.wire.security.tokens import ClientToken, Role, new_client_token, new_join_token

SERVER = generate_keypair().public


def tokens():
    return {r: new_client_token(f"t-{r.value}", r, "c", SERVER) for r in Role}


def test_bearer_header_parsing():
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    for bad in [None, "", "Bearer", "Bearer  ", "Basic abc", "abc"]:
        assert bearer_token(bad) is None


def test_bearer_decisions_map_to_401_and_403():
    toks = tokens()
    table = TokenTable(t.stored() for t in toks.values())
    reader, writer, admin = (f"Bearer {toks[r].encode()}" for r in (Role.READ, Role.WRITE, Role.ADMIN))

    assert authorize_bearer(table, reader, Op.GET).ok
    d = authorize_bearer(table, reader, Op.PUT)
    assert d.outcome is AuthOutcome.FORBIDDEN and d.http_status == 403 and d.token_name == "t-read"
    assert "needs write" in d.message and d.message.startswith("not authorized")
    assert authorize_bearer(table, writer, "put").ok
    assert authorize_bearer(table, writer, Op.REMOVE_NODE).http_status == 403
    assert authorize_bearer(table, admin, Op.REMOVE_NODE).ok

    for header in [None, "", "Basic x", "Bearer garbage", f"Bearer {new_join_token('c', SERVER).encode()}"]:
        assert authorize_bearer(table, header, Op.GET).http_status == 401


def test_wrong_secret_and_unknown_name_are_401():
    toks = tokens()
    table = TokenTable(t.stored() for t in toks.values())
    real = toks[Role.ADMIN]
    forged = ClientToken(real.name, Role.ADMIN, "c", SERVER, b"\x00" * 32)
    assert authorize_bearer(table, f"Bearer {forged.encode()}", Op.GET).http_status == 401
    stranger = new_client_token("stranger", Role.ADMIN, "c", SERVER)
    assert authorize_bearer(table, f"Bearer {stranger.encode()}", Op.GET).http_status == 401


def test_revocation_takes_effect_on_the_next_request():
    toks = tokens()
    table = TokenTable(t.stored() for t in toks.values())
    header = f"Bearer {toks[Role.WRITE].encode()}"
    assert authorize_bearer(table, header, Op.PUT).ok
    assert authorize_user_id(table, "t-write", Op.PUT).ok
    table.replace(t.stored() for r, t in toks.items() if r is not Role.WRITE)
    assert authorize_bearer(table, header, Op.PUT).http_status == 401
    assert authorize_user_id(table, "t-write", Op.PUT).http_status == 401
    assert table.names() == ["t-admin", "t-read"]


def test_user_id_decisions():
    toks = tokens()
    table = TokenTable(t.stored() for t in toks.values())
    assert authorize_user_id(table, "t-read", Op.LIST).ok
    assert authorize_user_id(table, "t-read", Op.CAS).outcome is AuthOutcome.FORBIDDEN
    assert authorize_user_id(table, "t-admin", "token_create").ok
    assert authorize_user_id(table, "t-write", "token_create").outcome is AuthOutcome.FORBIDDEN
    for uid in [None, "", "anonymous", "join:", "nobody"]:
        assert authorize_user_id(table, uid, Op.GET).outcome is AuthOutcome.UNAUTHENTICATED


def test_client_door_key_ring_comes_from_the_table():
    toks = tokens()
    table = TokenTable(t.stored() for t in toks.values())
    assert table.client_keys() == {t.keypair().public: t.name for t in toks.values()}
    assert len(table) == 3
