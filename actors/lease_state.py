"""The replicated lease table: which leases exist, their TTLs and the keys attached to them.

Part of the state machine (KVState in memory, DbState on RocksDB): changed only by committed
entries, so every replica holds the same table at the same index, in snapshots too. When a lease
ends (``lease_revoke``, from a client or from the leader's expiry decision: actors/lease_clock.py)
its keys are deleted by that one entry, so watchers see every delete at one revision.

- ``lease_grant`` (Command.lease = TTL seconds): the new lease's id is the entry's log index,
  the same on every replica with no counter to keep.
- a put or cas carrying ``lease`` attaches its key (moving it from its previous lease, if any);
  a put without one, or a delete, detaches it (etcd's semantics). A transaction's puts likewise
  (TxnOp.lease), in the order of the branch that ran. A write naming a lease that
  is not in the table (never granted, expired, revoked) is refused, nothing changed.
- Bounds: at most MAX_LEASES leases and MAX_KEYS_PER_LEASE keys per lease; TTL in
  [1, MAX_TTL_SECONDS].

The table never holds deadlines: time belongs to the leader (lease_clock.py). Other threads (the
leader's role actor) read :attr:`LeaseTable.view`, an id -> TTL mapping replaced (never mutated)
on every grant and revoke, and :meth:`LeaseTable.keys_of`.
"""
from __future__ import annotations

from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple, Optional

from raftkv.records import ClientReply, Op, TxnOpType

if TYPE_CHECKING:
    from raftkv.records import Command

MAX_LEASES = 10_000
MAX_KEYS_PER_LEASE = 10_000
MAX_TTL_SECONDS = 365 * 24 * 3600

LEASE_WRITE_OPS = frozenset({Op.LEASE_GRANT.value, Op.LEASE_REVOKE.value})  # ops that are log entries
# answered by the leader from its clock and applied table, never logged
LEASE_LEADER_OPS = frozenset({Op.LEASE_KEEPALIVE.value, Op.LEASE_TTL.value, Op.LEASE_LIST.value})
_TXN, _DELETE = Op.TXN.value, Op.DELETE.value  # read per applied write: an enum's .value is a property call


class LeaseChange(Enum):
    """What a change of the table does, for a persistent state to journal (DbState)."""

    GRANT = "grant"      # (lease, ttl)
    ATTACH = "attach"    # (lease, key)
    DETACH = "detach"    # (lease, key)
    DROP = "drop"        # (lease): the lease and all its attachments


class LeaseOpRecord(NamedTuple):
    """One change of the table, handed to the journal of a persistent state."""

    change: LeaseChange
    lease: int
    ttl: int = 0
    key: str = ""


def ttl_problem(ttl: int) -> Optional[str]:
    """Why ``ttl`` is not a valid lease TTL, or None."""
    if not 1 <= ttl <= MAX_TTL_SECONDS:
        return f"lease TTL must be between 1 and {MAX_TTL_SECONDS} seconds, not {ttl}"
    return None


def grant_reply_value(lease_id: int) -> bytes:
    """A grant's result value as the session table stores it (the decimal id)."""
    return str(lease_id).encode()


class LeaseTable:
    """The lease table of one replica. ``journal`` (when set) receives every change, for a
    persistent state to write with the batch that made it."""

    def __init__(self, journal: Optional[Callable[[LeaseOpRecord], None]] = None) -> None:
        self.ttl: dict[int, int] = {}
        self.keys: dict[int, set[str]] = {}
        self.owner: dict[str, int] = {}  # key -> its lease
        self.journal = journal
        self.view: Mapping[int, int] = MappingProxyType({})
        self.version = 0  # bumped when the set of leases changes (the leader re-syncs its clock)

    # ---------------------------------------------------------------- loading

    def load(self, leases: Iterable[tuple[int, int, Iterable[str]]]) -> None:
        """Replace the table by ``(id, ttl, keys)`` records (a snapshot or the DB)."""
        self.ttl, self.keys, self.owner = {}, {}, {}
        for lid, ttl, keys in leases:
            self.ttl[lid] = ttl
            ks = self.keys[lid] = set(keys)
            for k in ks:
                self.owner[k] = lid
        self._publish()

    def records(self) -> list:
        """The table as ``[id, ttl, sorted keys]`` lists (for a snapshot), in id order."""
        return [[lid, self.ttl[lid], sorted(self.keys[lid])] for lid in sorted(self.ttl)]

    def _publish(self) -> None:
        self.view = MappingProxyType(dict(self.ttl))
        self.version += 1

    def _log(self, rec: LeaseOpRecord) -> None:
        if self.journal is not None:
            self.journal(rec)

    # ---------------------------------------------------------------- reading (any thread)

    def keys_of(self, lease_id: int) -> list[str]:
        """The keys attached to a lease, sorted ([] if unknown). Safe from another thread: the
        copy of the set is one C call under the GIL."""
        ks = self.keys.get(lease_id)
        if ks is None:
            return []
        for _ in range(3):
            try:
                return sorted(list(ks))
            except RuntimeError:  # changed size while copied: try again
                continue
        return []

    # ---------------------------------------------------------------- applying (FSM thread)

    def check_write(self, lease_id: int, key: str, index: int = 0) -> Optional[tuple]:
        """The refusal of a write of ``key`` attached to ``lease_id`` (a result tuple), or None."""
        if not lease_id:
            return None
        ks = self.keys.get(lease_id)
        if ks is None:
            return ("invalid", f"lease {lease_id} not found (expired or revoked)".encode(), index, None)
        if key not in ks and len(ks) >= MAX_KEYS_PER_LEASE:
            return ("invalid", f"lease {lease_id} already has {MAX_KEYS_PER_LEASE} keys (the limit)".encode(),
                    index, None)
        return None

    def written(self, key: str, lease_id: int) -> None:
        """``key`` was written with ``lease_id`` (0: none): attach it, detaching it from the lease
        it had before."""
        old = self.owner.get(key, 0)
        if old == lease_id:
            return
        if old:
            self.keys[old].discard(key)
            del self.owner[key]
            self._log(LeaseOpRecord(LeaseChange.DETACH, old, key=key))
        if lease_id:
            self.keys[lease_id].add(key)
            self.owner[key] = lease_id
            self._log(LeaseOpRecord(LeaseChange.ATTACH, lease_id, key=key))

    def deleted(self, key: str) -> None:
        """``key`` was deleted: detach it from its lease."""
        self.written(key, 0)

    def apply(self, op: str, index: int, lease: int, delete_key: Callable[[str], object]) -> tuple:
        """Apply a committed ``lease_grant`` (``lease`` is the TTL) or ``lease_revoke`` (``lease``
        is the id) at ``index``; ``delete_key`` deletes one user key of a revoked lease (the
        state's own delete, which records its watch event). Returns the result
        (status, value, revision, None) as actors/kv_apply.py's."""
        if op == Op.LEASE_GRANT.value:
            problem = ttl_problem(lease)
            if problem:
                return ("invalid", problem.encode(), index, None)
            if len(self.ttl) >= MAX_LEASES:
                return ("invalid", f"too many leases ({MAX_LEASES}, the limit): revoke some first".encode(), index,
                        None)
            self.ttl[index] = lease
            self.keys[index] = set()
            self._log(LeaseOpRecord(LeaseChange.GRANT, index, ttl=lease))
            self._publish()
            return ("ok", grant_reply_value(index), index, None)
        if op == Op.LEASE_REVOKE.value:
            ks = self.keys.pop(lease, None)
            if ks is None:
                return ("not_found", None, index, None)
            del self.ttl[lease]
            for k in sorted(ks):  # sorted: every replica emits the deletes in the same order
                self.owner.pop(k, None)
                delete_key(k)
            self._log(LeaseOpRecord(LeaseChange.DROP, lease))
            self._publish()
            return ("ok", None, index, None)
        return ("invalid", f"not a lease operation: {op}".encode(), index, None)


def execute_with_lease(table: LeaseTable, cmd: "Command", index: int, execute: Callable[["Command"], tuple],
                       delete_key: Callable[[str], object]) -> tuple:
    """Run one committed command through the lease table around the state's own ``execute``:
    lease entries change the table (a revoke deletes its keys through ``delete_key``); a write
    naming a dead or full lease is refused before anything changes; a successful put or cas
    attaches its key to its lease (or detaches it), a delete detaches it."""
    op = cmd.op
    if op in LEASE_WRITE_OPS:
        return table.apply(op, index, cmd.lease, delete_key)
    if op == _TXN:
        return _execute_txn(table, cmd, index, execute)
    if op != _DELETE:
        refused = table.check_write(cmd.lease, cmd.key, index)
        if refused is not None:
            return refused
    result = execute(cmd)
    if result[0] == "ok" and (cmd.lease or cmd.key in table.owner):
        if op == _DELETE:
            table.deleted(cmd.key)
        else:
            table.written(cmd.key, cmd.lease)
    return result


def _check_txn_leases(table: LeaseTable, txn: Any, index: int) -> Optional[tuple]:
    """The refusal of a txn whose puts (in either branch: which one runs is known only once it
    ran) name a lease that is gone, or would take a lease past MAX_KEYS_PER_LEASE; or None."""
    new_keys: dict[int, set[str]] = {}
    for o in list(txn.success) + list(txn.failure):
        if o.type != TxnOpType.PUT.value or not o.lease:
            continue
        refused = table.check_write(o.lease, o.key, index)
        if refused is not None:
            return refused
        if o.key not in table.keys[o.lease]:
            new_keys.setdefault(o.lease, set()).add(o.key)
    for lid, ks in new_keys.items():
        if len(table.keys[lid]) + len(ks) > MAX_KEYS_PER_LEASE:
            return ("invalid", f"lease {lid} would have more than {MAX_KEYS_PER_LEASE} keys (the limit)".encode(),
                    index, None)
    return None


def _execute_txn(table: LeaseTable, cmd: "Command", index: int, execute: Callable[["Command"], tuple]) -> tuple:
    """A transaction: refused before anything changes if a put names a dead lease; after it ran,
    each put of the branch that ran attaches its key to its lease (or, without one, detaches it:
    etcd's rule), each delete that found its key detaches it, in the branch's order."""
    txn = cmd.txn
    if txn is not None:
        refused = _check_txn_leases(table, txn, index)
        if refused is not None:
            return refused
    result = execute(cmd)
    if txn is None or result[0] != "ok" or len(result) < 4 or result[3] is None:
        return result
    succeeded, responses = result[3]
    for o, r in zip(txn.success if succeeded else txn.failure, responses):
        if o.type == TxnOpType.PUT.value:
            if o.lease or o.key in table.owner:
                table.written(o.key, o.lease)
        elif o.type == TxnOpType.DELETE.value and r.found and o.key in table.owner:
            table.deleted(o.key)
    return result


def result_reply(status: str, value: Optional[bytes], revision: int = 0) -> ClientReply:
    """The reply to a writer from a command's result: a refusal's value is its message (a lease
    write refused at apply time); otherwise the value is the answer (the current value of a
    failed cas, a granted lease's id)."""
    if status == "invalid":
        return ClientReply(status, error=value.decode("utf-8", "replace") if value else None, revision=revision)
    return ClientReply(status, value=value, revision=revision)
