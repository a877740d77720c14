"""The secret files of a node of a secure cluster, and what bootstrap makes.

Layout in the node's directory (``<data_dir>/<id>/``), every secret file mode 0600::

    node.key      this node's CURVE key pair (its identity at the peer door), made on first start
    cluster.key   the cluster's CURVE server key pair, served by every member's doors
    join.token    the join token (bootstrap only): give it to ``kvnode --join ADDR --token``
    admin.token   the first admin client token (bootstrap only)
    tls.crt/.key  the gateway's self-signed certificate (bootstrap, unless --tls-cert/--tls-key)

Why one cluster server key shared by the members, besides each node's own key: a client token
and a join token carry *one* server key and stay valid whichever member the holder reaches and
however the membership changes. A joiner receives ``cluster.key`` in the JoinReply, over the
CURVE channel its join token opened. A removed member still knows it, so it could pose as a
server to a client that connects to its address; it can no longer connect to anyone (its node
key is revoked). Rotating the cluster key is the answer to a compromised member.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from .files import PathLike, PrivateFileError, read_private_file, write_private_file
from .keys import KeyPair, generate_keypair, load_keypair, load_or_create_keypair, write_keypair
from .tokens import (
    JoinToken, Role, StoredToken, TokenError, hash_secret, new_client_token, new_join_token,
)

NODE_KEY = "node.key"
CLUSTER_KEY = "cluster.key"
JOIN_TOKEN = "join.token"
ADMIN_TOKEN = "admin.token"
ADMIN_TOKEN_NAME = "admin"


@dataclass(frozen=True, slots=True)
class StoredJoinSecret:
    """The join token as the replicated state keeps it: a hash and the derived CURVE public key."""

    secret_hash: bytes
    curve_public: bytes  # Z85: admitted at the peer door with user id JOINER_USER_ID

    @classmethod
    def of(cls, token: JoinToken) -> "StoredJoinSecret":
        return cls(hash_secret(token.secret), token.keypair().public)


@dataclass(frozen=True, slots=True)
class SecureBootstrap:
    """What ``kvnode --bootstrap --secure`` made: files written, and records for the first state."""

    node_key: KeyPair
    cluster_key: KeyPair
    join_token_path: Path
    admin_token_path: Path
    join_secret: StoredJoinSecret
    admin_token: StoredToken
    tls_cert: Optional[Path]
    tls_key: Optional[Path]


def bootstrap_secure(node_dir: PathLike, cluster_id: str, http_hosts: Iterable[str] = (),
                     make_tls: bool = True) -> SecureBootstrap:
    """Make the keys, the join token, the first admin token and (if asked) a TLS certificate.

    Refuses (FileExistsError) to overwrite a cluster key: bootstrapping twice into one
    directory would make a second cluster that the first one's tokens cannot reach.
    """
    node_dir = Path(node_dir)
    node_key = load_or_create_keypair(node_dir / NODE_KEY)
    cluster_key = generate_keypair()
    write_keypair(node_dir / CLUSTER_KEY, cluster_key, overwrite=False)
    join = new_join_token(cluster_id, cluster_key.public)
    admin = new_client_token(ADMIN_TOKEN_NAME, Role.ADMIN, cluster_id, cluster_key.public)
    join_path = write_private_file(node_dir / JOIN_TOKEN, (join.encode() + "\n").encode())
    admin_path = write_private_file(node_dir / ADMIN_TOKEN, (admin.encode() + "\n").encode())
    cert = key = None
    if make_tls:
        # Imported here: the tls module imports ssl (~10 ms), which a node's start needs only
        # for an HTTPS gateway, and this module is imported by every node.
        from .tls import make_self_signed_cert

        cert, key = make_self_signed_cert(node_dir, http_hosts)
    return SecureBootstrap(node_key, cluster_key, join_path, admin_path, StoredJoinSecret.of(join),
                           admin.stored(), cert, key)


def read_token_file(path: PathLike) -> str:
    """The token text in a token file (must be private); TokenError with the path if unusable."""
    try:
        return read_private_file(path).decode("ascii").strip()
    except FileNotFoundError:
        raise TokenError(f"{path}: no such token file") from None
    except (PrivateFileError, UnicodeDecodeError) as e:
        raise TokenError(f"{path}: {e}") from None


def load_cluster_key(node_dir: PathLike) -> Optional[KeyPair]:
    """The cluster key pair if this node has one (a member of a secure cluster), else None."""
    try:
        return load_keypair(Path(node_dir) / CLUSTER_KEY)
    except FileNotFoundError:
        return None


def save_cluster_key(node_dir: PathLike, pair: KeyPair) -> Path:
    """Store the cluster key pair a joiner received in its JoinReply (0600, atomically)."""
    return write_keypair(Path(node_dir) / CLUSTER_KEY, pair)

