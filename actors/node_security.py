"""A secure node's doors (issue 11): who may connect, and who may do what.

:class:`NodeDoors` is fed by two owners and keeps the ZAP key rings and the transports' tables
in step with them:

* the role actor, whenever the latest configuration changes (``on_members``): the peer door
  admits exactly the members' CURVE keys (plus the join secret's key, as ``JOINER_USER_ID``), and
  the peer transport accepts messages only from those members;
* the FSM, whenever a token entry was applied or a snapshot restored (``on_tokens``): the client
  door admits the tokens' keys, and the :class:`TokenTable` every request is checked against
  (``authorize``, in the front door's thread) is replaced whole.

Both only swap references (KeyRing and TokenTable are copy-on-write), so readers need no lock;
the lock here only keeps two writers from interleaving their read-modify-write of the peer ring.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Optional

from raftkv.records import ClientReply, ClientRequest, Entry, EntryKind, Status
from raftkv.wire.messages import encode_record
from raftkv.wire.security.auth import TokenTable, authorize_user_id
from raftkv.wire.security.bootstrap import SecureBootstrap
from raftkv.wire.security.zap import JOINER_USER_ID, Door, DoorAuthenticator

from .token_state import TokenState, create_command, join_secret_command

log = logging.getLogger("actors.node")

MAX_DECISIONS = 4096  # cached authorization decisions (token names x ops: small in practice)
META_SECURE = "secure"  # node meta: "true" on a member of a secure cluster


def bootstrap_entries(boot: SecureBootstrap, term: int = 1) -> list:
    """The log entries after the bootstrap configuration that put the join secret and the first
    admin token into the first state (written in the same synced write as the configuration)."""
    return [Entry(term, EntryKind.COMMAND, encode_record(join_secret_command(boot.join_secret))),
            Entry(term, EntryKind.COMMAND, encode_record(create_command(boot.admin_token)))]


def announce_bootstrap(node_id: str, boot: SecureBootstrap) -> None:
    """Tell the operator where the secrets are (they are printed nowhere else)."""
    log.warning("%s: secure cluster: join token in %s (kvnode --join ADDR --token \"$(cat %s)\"), admin token "
                "in %s (kvclient --token \"$(cat %s)\")", node_id, boot.join_token_path, boot.join_token_path,
                boot.admin_token_path, boot.admin_token_path)
    if boot.tls_cert is not None:
        log.warning("%s: secure cluster: the HTTP gateway's self-signed certificate is %s (curl --cacert %s)",
                    node_id, boot.tls_cert, boot.tls_cert)


class NodeDoors:
    """The key rings and tables of a secure node's doors (see the module docstring)."""

    def __init__(self, auth: DoorAuthenticator, node_id: str, node_dir: Path) -> None:
        self.auth = auth
        self.node_id = node_id
        self.node_dir = node_dir
        self.tokens = TokenTable()
        self.peer: Any = None  # the PeerTransport, once made (its allowed_senders)
        self._lock = threading.Lock()
        self._member_keys: dict[bytes, str] = {}
        self._joiner_key: Optional[bytes] = None
        self._seed: dict[bytes, str] = {}  # members a joiner learned from its JoinReply
        self._members: list = []
        self._tokens_seen: tuple = (None, -1)
        # (token name, op) -> the decision, for the current table: the front door decides each
        # request without walking the role rules again (the per-request cost of a secure door).
        self._decisions: dict = {}

    # ------------------------------------------------------------ peer door

    def seed(self, members: list) -> None:
        """Members known from a JoinReply, used while this node has no configuration yet (a
        joiner must let the leader in before the leader's configuration reaches it)."""
        with self._lock:
            self._seed = {m.curve_key.encode(): m.id for m in members if m.curve_key}
            self._refresh_peer_locked()

    def on_members(self, members: list) -> None:
        """The latest configuration (appended, not necessarily committed: the one Raft acts on)."""
        with self._lock:
            self._members = list(members)
            self._member_keys = {m.curve_key.encode(): m.id for m in members if m.curve_key}
            self._refresh_peer_locked()

    def _refresh_peer_locked(self) -> None:
        keys = dict(self._member_keys) if self._members else dict(self._seed)
        if self._joiner_key is not None:
            keys[self._joiner_key] = JOINER_USER_ID
        self.auth.ring(Door.PEER).replace(keys)
        if self.peer is not None:
            self.peer.allowed_senders = frozenset(uid for uid in keys.values() if uid != JOINER_USER_ID)

    # ------------------------------------------------------------ client door

    def on_tokens(self, state: TokenState) -> None:
        """The applied token table (called by the FSM's thread after each batch or restore):
        refreshes the rings only when it changed."""
        seen = (id(state), state.version)
        if seen == self._tokens_seen:
            return
        self._tokens_seen = seen
        self.tokens.replace(state.tokens.values())
        self._decisions = {}  # swapped, never cleared in place: the front door's thread may be reading it
        self.auth.ring(Door.CLIENT).replace(self.tokens.client_keys())
        js = state.join_secret
        with self._lock:
            self._joiner_key = js.curve_public if js is not None else None
            self._refresh_peer_locked()
        if js is not None:
            retire_stale_join_token(self.node_id, self.node_dir, js.curve_public)
        log.info("%s: token table: %d token(s)%s", self.node_id, len(self.tokens),
                 ", join secret set" if js is not None else "")

    def authorize(self, user_id: Optional[str], req: ClientRequest) -> Optional[ClientReply]:
        """None if the connection's token may make ``req``, else the NOT_AUTHORIZED reply (the
        table is the current one: a token revoked after its connection was made fails now)."""
        key = (user_id, req.op)
        cache = self._decisions
        if key in cache:
            return cache[key]
        d = authorize_user_id(self.tokens, user_id, req.op)
        out = None if d.ok else ClientReply(Status.NOT_AUTHORIZED.value, error=d.message)
        if len(cache) < MAX_DECISIONS and (user_id is None or len(user_id) <= 64) and len(req.op) <= 64:
            cache[key] = out  # (a reply is never mutated after it is made: sharing one is safe)
        return out


ROTATED_SUFFIX = ".rotated"


def retire_stale_join_token(node_id: str, node_dir: Path, current_public: bytes) -> Optional[Path]:
    """The join token was rotated (``kvclient join-token rotate``): a ``join.token`` file here that
    holds another token would only get joiners refused, so it is renamed ``join.token.rotated``
    with a WARNING (the token rotate printed is the one to use). Returns the new path, if any."""
    from raftkv.wire.security.bootstrap import JOIN_TOKEN
    from raftkv.wire.security.tokens import JoinToken, TokenError

    path = Path(node_dir) / JOIN_TOKEN
    try:
        held = JoinToken.decode(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, TokenError):
        return None  # not ours to judge: the operator's file, left as it is
    if held.keypair().public == current_public:
        return None
    new = path.with_name(JOIN_TOKEN + ROTATED_SUFFIX)
    try:
        os.replace(path, new)
    except OSError as e:
        log.warning("%s: the join token in %s was rotated out, and renaming it failed: %s", node_id, path, e)
        return None
    log.warning("%s: the cluster's join token was rotated: %s held the old one, renamed %s (use the token "
                "kvclient join-token rotate printed)", node_id, path, new)
    return new
