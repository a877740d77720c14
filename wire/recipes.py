"""Locks and elections built only on revisions, transactions, watches and leases (issue 14).

The design is etcd's clientv3/concurrency Mutex and Election. A contender grants a lease (kept
alive by :class:`~raftkv.wire.lease_client.Lease`'s background thread) and creates the key
``<name>/<lease id>`` attached to it, in a transaction that creates it only if absent; the key's
create revision is its place in the queue. The contender whose key has the lowest create revision
under ``<name>/`` holds the lock (leads); every other one watches the deletion of its predecessor
(the key with the largest create revision below its own) and then looks again. So waiters are
served in revision order, and a release (or an expired lease: the holder died) wakes only the
next waiter, not the whole herd.

A held lock's ``fencing_token`` is its key's create revision: it only grows from one holder to
the next. A lease-based lock alone is not safe: a holder paused past its TTL (GC, SIGSTOP, a slow
disk) wakes up still believing it holds the lock while another process does (Jepsen's analysis of
etcd 3.4.3). Writes that must be made by the holder only go in a transaction comparing the token
(:meth:`Lock.is_owner`), which the cluster refuses once the key is gone::

    with kv.lock("jobs", ttl=10) as lock:
        res = kv.txn([lock.is_owner()], [t.put("jobs/state", b"done")])
        if not res.succeeded: ...   # we lost the lock: nothing was written
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Optional

from raftkv import txn as t
from raftkv.records import Compare, TxnOpType

from .errors import ClientError, Compacted, InvalidRequest, Timeout

if TYPE_CHECKING:
    from .client import Client
    from .lease_client import Lease

__all__ = ["Election", "Lock", "LockLost", "queue"]

log = logging.getLogger("raftkv.client.recipes")

_GETS_PER_TXN = 100  # under the node's cap of ops per branch (actors/txn_check.MAX_OPS)
_POLL = 1.0  # seconds one watch poll may wait, so a lost lease or a deadline is noticed


class LockLost(ClientError):
    """The lease of a lock (or a campaign) ended before it was released: its key is gone, and
    another contender may hold the lock now."""


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name or name.endswith("/"):
        raise InvalidRequest("a lock or election name is a non-empty string not ending with '/'")
    return name


def queue(kv: "Client", prefix: str) -> tuple[list[tuple[int, str, bytes]], int]:
    """The contenders under ``prefix``: ``(create_revision, key, value)`` sorted by create
    revision, and the lowest revision at which they were read (watch from it + 1 to miss no
    delete). Keys come from a list, their revisions from read-only transactions (each an atomic
    snapshot, at most _GETS_PER_TXN gets)."""
    # only "<prefix><lease id>": another key under the prefix (or a lock named "<name>/x") is not
    # a contender
    keys = [k for k, _ in kv.list(prefix) if k[len(prefix):].isdigit()]
    out: list[tuple[int, str, bytes]] = []
    rev = 0
    for i in range(0, len(keys), _GETS_PER_TXN):
        res = kv.txn(success=[t.get(k) for k in keys[i:i + _GETS_PER_TXN]])
        rev = res.revision if not rev else min(rev, res.revision)
        out.extend((r.create_revision, r.key, r.value or b"") for r in res.responses
                   if r.type == TxnOpType.GET.value and r.found)
    out.sort()
    return out, rev


class _Contender:
    """One place in the queue of ``<name>/``: a lease kept alive and the key attached to it."""

    def __init__(self, kv: "Client", name: str, ttl: int) -> None:
        self._kv = kv
        self.name = _check_name(name)
        self.prefix = name + "/"
        self.ttl = ttl
        self.lease: Optional["Lease"] = None
        self.key = ""
        self.fencing_token = 0  # the key's create revision (0: not in the queue)

    @property
    def lost(self) -> bool:
        """True once the lease is known to be gone (expired or revoked by someone else): the
        key is deleted and another contender may be ahead now."""
        return self.lease is not None and self.lease.lost.is_set()

    def is_owner(self) -> Compare:
        """A txn compare that holds only while this contender's key is still the one it created
        (etcd's IsOwner): ``kv.txn([lock.is_owner()], [...])`` refuses a stale holder's writes."""
        if not self.fencing_token:
            raise InvalidRequest("not in the queue (never acquired, or released)")
        return t.create(self.key) == self.fencing_token

    def _join(self, value: bytes) -> None:
        """Grant the lease and create the key (only if absent) with it."""
        self.lease = self._kv.lease(self.ttl)
        self.key = f"{self.prefix}{self.lease.id}"
        try:
            res = self._kv.txn([t.create(self.key) == 0], [t.put(self.key, value, lease=self.lease.id)],
                               [t.get(self.key)])
        except BaseException:
            self._leave()
            raise
        self.fencing_token = res.responses[0].create_revision

    def _wait_first(self, deadline: Optional[float]) -> None:
        """Until this key has the lowest create revision under the prefix: watch the delete of
        the predecessor, then look again (etcd's waitDeletes). Raises LockLost if the key is
        gone, Timeout at ``deadline``."""
        kv = self._kv
        while True:
            self._check_alive()
            contenders, rev = queue(kv, self.prefix)
            if not any(k == self.key for _, k, _ in contenders):
                raise LockLost(f"{self.key}: the key is gone (its lease {self._lease_id} ended)")
            ahead = [(c, k) for c, k, _ in contenders if c < self.fencing_token]
            if not ahead:
                return
            pred = ahead[-1][1]
            log.debug("%s waits for %s to go", self.key, pred)
            self._wait_deleted(pred, rev + 1, deadline)

    def _wait_deleted(self, key: str, start: int, deadline: Optional[float]) -> None:
        try:
            w = self._kv.watch(key, start_revision=start, wait=_POLL)
        except Compacted:
            return  # look again: the queue is read anew
        with w:
            while True:
                for ev in w.poll():
                    if ev.key == key and ev.type == "delete":  # the prefix may match longer keys
                        return
                self._check_alive()
                if deadline is not None and time.monotonic() > deadline:
                    raise Timeout(f"{self.name}: still waiting after the timeout")

    @property
    def _lease_id(self) -> int:
        return self.lease.id if self.lease is not None else 0

    def _check_alive(self) -> None:
        if self.lost:
            raise LockLost(f"{self.key}: lease {self._lease_id} expired while waiting")

    def _acquire(self, value: bytes, timeout: Optional[float]) -> None:
        if timeout is not None and timeout < 0:
            raise InvalidRequest("timeout must be non-negative (or None: wait for ever)")
        deadline = None if timeout is None else time.monotonic() + timeout
        self._join(value)
        try:
            self._wait_first(deadline)
        except BaseException:
            self._leave()
            raise

    def _leave(self) -> None:
        """Delete the key (if still ours) and revoke the lease. Idempotent."""
        lease, self.lease = self.lease, None
        if lease is None:
            return
        try:
            if self.fencing_token and not lease.lost.is_set():
                self._kv.txn([t.create(self.key) == self.fencing_token], [t.delete(self.key)])
        finally:
            self.fencing_token = 0
            try:
                lease.close()  # revokes (NotFound, already gone, is ignored)
            except ClientError as e:  # the lease then expires on its own within its TTL
                log.warning("%s: revoking lease %d failed (%s); it expires within %ds", self.key, lease.id, e,
                            lease.ttl)


class Lock(_Contender):
    """A held lock on ``name`` (made by :meth:`Client.lock`). ``key`` is its key,
    ``fencing_token`` its create revision (larger for every later holder), ``lost`` True once its
    lease ended. :meth:`release` (or the end of the ``with`` block) deletes the key and revokes
    the lease."""

    def __init__(self, kv: "Client", name: str, ttl: int = 10, timeout: Optional[float] = None) -> None:
        if type(ttl) is not int or ttl <= 0:
            raise InvalidRequest("a lock's TTL is a positive number of seconds")
        super().__init__(kv, name, ttl)
        self._acquire(b"", timeout)

    def release(self) -> None:
        """Let the lock go: the next waiter (in revision order) gets it. Idempotent."""
        self._leave()

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "lost" if self.lost else ("held" if self.fencing_token else "released")
        return f"Lock({self.key!r}, fencing_token={self.fencing_token}, {state})"


class Election(_Contender):
    """A leader election on ``name`` (made by :meth:`Client.election`): :meth:`campaign` waits
    in the same revision-ordered queue as a lock and returns once this contender leads;
    :meth:`leader` reads the current leader's value; :meth:`proclaim` changes ours while we lead;
    :meth:`resign` steps down (the next campaigner leads). A leader whose lease ends (``lost``)
    is no longer leader: its key is gone."""

    def __init__(self, kv: "Client", name: str, ttl: int = 10) -> None:
        if type(ttl) is not int or ttl <= 0:
            raise InvalidRequest("an election's TTL is a positive number of seconds")
        super().__init__(kv, name, ttl)

    def campaign(self, value: Any, timeout: Optional[float] = None) -> None:
        """Join the election with ``value`` (bytes or str) and block until this contender leads
        (raises Timeout after ``timeout`` seconds, leaving the queue; LockLost if the lease
        ended while waiting)."""
        if self.lease is not None:
            raise InvalidRequest(f"{self.name}: already campaigning; resign first")
        self._acquire(t._b(value, "a value"), timeout)

    def leader(self) -> Optional[bytes]:
        """The current leader's value (the contender with the lowest create revision), or None."""
        contenders, _ = queue(self._kv, self.prefix)
        return contenders[0][2] if contenders else None

    def proclaim(self, value: Any) -> None:
        """Change the leader's value without an election; raises LockLost if we no longer lead."""
        if not self.fencing_token:
            raise InvalidRequest(f"{self.name}: not leading (campaign first)")
        res = self._kv.txn([self.is_owner()], [t.put(self.key, t._b(value, "a value"), lease=self._lease_id)])
        if not res.succeeded:
            raise LockLost(f"{self.key}: no longer the leader (its lease ended)")

    def resign(self) -> None:
        """Step down (delete our key, revoke the lease): the next campaigner leads. Idempotent."""
        self._leave()

    def __enter__(self) -> "Election":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.resign()
