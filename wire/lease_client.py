"""Leases in the client library: the :class:`Lease` handle and its keep-alive thread.

``Client.lease(ttl)`` grants a lease and returns a :class:`Lease` whose background thread renews
it every third of its TTL (through its own Client, so a slow call of the caller's Client never
delays a keepalive) until it is closed; closing revokes it, so its keys disappear with the
``with`` block (or with the process: a holder that dies stops renewing, and the leader expires
the lease within its TTL plus one election timeout)::

    with kv.lease(ttl=10) as lease:
        kv.put("service/me", b"10.0.0.7:80", lease=lease.id)
        ...  # while the process lives and reaches the cluster, the key stays

If a keepalive finds the lease gone (the process was paused or cut off past the TTL), ``lost``
is set and renewal stops: the keys are gone and the holder must not act as if it still held them.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Optional

from .errors import ClientError, NotFound

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("raftkv.client.lease")


class Lease:
    """A granted lease kept alive by a background thread until :meth:`close` (or the ``with``
    block's end), which stops renewing and revokes it (its keys are deleted)."""

    def __init__(self, owner: "Client", lease_id: int, ttl: int, keepalive_client: "Client") -> None:
        self.id = lease_id
        self.ttl = ttl
        self.lost = threading.Event()  # set when a keepalive found the lease gone
        self._owner = owner
        self._kc = keepalive_client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"raftkv-lease-{lease_id}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False once the lease is known to be gone (expired, revoked) or closed."""
        return not self.lost.is_set() and not self._stop.is_set()

    def _run(self) -> None:
        interval = max(0.1, self.ttl / 3.0)
        while not self._stop.wait(interval):
            try:
                self._kc.lease_keepalive(self.id)
            except NotFound:
                log.warning("lease %d expired before it could be renewed; its keys are gone", self.id)
                self.lost.set()
                return
            except ClientError as e:  # no leader for a moment: try again at the next beat
                log.info("lease %d: keepalive failed (%s); retrying", self.id, e)

    def remaining(self) -> float:
        """Seconds before the lease expires, as the leader sees it now."""
        return float(self._owner.lease_ttl(self.id)["remaining"])

    def keys(self) -> list:
        """The keys attached to the lease."""
        return list(self._owner.lease_ttl(self.id)["keys"])

    def close(self, revoke: bool = True) -> None:
        """Stop renewing and (``revoke``) revoke the lease now. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._kc.close()
        if revoke and not self.lost.is_set():
            try:
                self._owner.lease_revoke(self.id)
            except NotFound:
                pass  # already expired

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "lost" if self.lost.is_set() else ("closed" if self._stop.is_set() else "alive")
        return f"Lease(id={self.id}, ttl={self.ttl}, {state})"


def lease_id_of(value: Optional[bytes]) -> int:
    """The lease id in a grant's reply value (its decimal digits)."""
    if not value or not value.isdigit() or len(value) > 20:
        raise ClientError(f"lease_grant: malformed lease id in the reply: {value!r}")
    return int(value)
