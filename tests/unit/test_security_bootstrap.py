"""What a secure bootstrap writes: private keys and tokens that work with each other."""
import os
import stat

import pytest

from raftkv.wire.security.bootstrap import (
    ADMIN_TOKEN, CLUSTER_KEY, JOIN_TOKEN, NODE_KEY, bootstrap_secure, load_cluster_key, read_token_file,
    save_cluster_key,
)
from raftkv.wire.security.keys import generate_keypair, load_keypair
from raftkv.wire.security.tokens import ClientToken, JoinToken, Role, TokenError, verify_secret
from raftkv.wire.security.tls import server_ssl_context


def mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_bootstrap_writes_private_files_that_fit_together(tmp_path):
    node_dir = tmp_path / "data" / "node1"
    b = bootstrap_secure(node_dir, "prod", http_hosts=["127.0.0.1"])
    for name in [NODE_KEY, CLUSTER_KEY, JOIN_TOKEN, ADMIN_TOKEN, "tls.key"]:
        assert mode(node_dir / name) == 0o600, name
    assert load_keypair(node_dir / NODE_KEY) == b.node_key
    assert load_cluster_key(node_dir) == b.cluster_key != b.node_key

    join = JoinToken.decode(read_token_file(b.join_token_path))
    assert join.cluster_id == "prod" and join.server_public_key == b.cluster_key.public
    assert verify_secret(join.secret, b.join_secret.secret_hash)
    assert join.keypair().public == b.join_secret.curve_public

    admin = ClientToken.decode(read_token_file(b.admin_token_path))
    assert admin.role is Role.ADMIN and admin.server_public_key == b.cluster_key.public
    assert b.admin_token.verify(admin) and b.admin_token.role is Role.ADMIN
    server_ssl_context(b.tls_cert, b.tls_key)


def test_bootstrapping_twice_into_one_directory_is_refused(tmp_path):
    bootstrap_secure(tmp_path, "c", make_tls=False)
    first = load_cluster_key(tmp_path)
    with pytest.raises(FileExistsError):
        bootstrap_secure(tmp_path, "c", make_tls=False)
    assert load_cluster_key(tmp_path) == first


def test_joiner_stores_the_cluster_key_it_received(tmp_path):
    assert load_cluster_key(tmp_path) is None
    pair = generate_keypair()
    path = save_cluster_key(tmp_path, pair)
    assert mode(path) == 0o600 and load_cluster_key(tmp_path) == pair


def test_token_file_errors_name_the_file(tmp_path):
    with pytest.raises(TokenError, match="no such token file"):
        read_token_file(tmp_path / "missing.token")
    loose = tmp_path / "loose.token"
    loose.write_text("kvt1_x\n")
    os.chmod(loose, 0o644)
    with pytest.raises(TokenError, match="loose.token.*chmod 600"):
        read_token_file(loose)
