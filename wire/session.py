"""The session and retry engine shared by the client library, the pipeline and the HTTP gateway.

- **What a reply means**: :func:`outcome` reads the one table of reply statuses
  (``STATUS_CLASS`` in raftkv/records.py): FINAL is the answer, REJECTED is raised and never
  retried, RETRY asks again (the leader, or later), NEW_SESSION means the cluster forgot the
  write's session (see :func:`may_renew`). Nothing in wire/ classifies a status otherwise.
- **Sessions**: writes carry ``(client_id, seq)`` and every resend reuses the pair, so the
  cluster's session table (Raft thesis 6.3) applies a write at most once. :class:`Session`
  allocates the pairs; :func:`idempotency_session` maps an HTTP ``Idempotency-Key``.
- **Retries**: :class:`RetryPolicy` holds the per-attempt wait and the backoff; :class:`Attempts`
  is the state of one call (deadline, failed rounds, whether an attempt went unanswered) and
  turns it into the right error at the deadline.
"""
from __future__ import annotations

import hashlib
import random
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from .errors import ClientError, Compacted, InvalidRequest, NotAuthorized, Timeout, Unavailable
from .messages import STATUS_CLASS, Outcome, Status

__all__ = ["Outcome", "Status", "OUTCOME_OF", "outcome", "may_renew", "Session", "idempotency_session", "attempt_time",
           "RetryPolicy", "Attempts", "rejection"]

# STATUS_CLASS indexed by the plain wire string a decoded reply carries: the gateway's hot path
# reads it directly (``OUTCOME_OF.get(status)``: one dict lookup, no call, no Enum construction).
OUTCOME_OF: dict[str, Outcome] = {st.value: oc for st, oc in STATUS_CLASS.items()}


def outcome(status: str) -> Optional[Outcome]:
    """How a client treats a reply ``status`` (STATUS_CLASS); None for a status it does not know."""
    return OUTCOME_OF.get(status)


def rejection(status: str, error: Optional[str], revision: int = 0) -> ClientError:
    """The exception a REJECTED reply raises (nothing was applied; asking again cannot help)."""
    if status == Status.NOT_AUTHORIZED.value:
        return NotAuthorized(error or "not authorized")
    if status == Status.COMPACTED.value:
        return Compacted(error or "revision compacted", revision)
    return InvalidRequest(error or "invalid request")


def may_renew(*, write: bool, unanswered_before: bool, own_session: bool) -> bool:
    """After an ``expired`` reply (Outcome.NEW_SESSION): may the request go again in a new session?

    Only a write of a session of our own none of whose earlier attempts went unanswered: then
    every answer said "not applied", and the cluster did not know the session when this one
    arrived, so nothing of the write was applied. After an unanswered attempt that attempt may
    have been applied, and a caller-chosen session (an Idempotency-Key, an explicit
    ``client_id``) is not ours to replace: then the outcome is unknown.
    """
    return write and not unanswered_before and own_session


class Session:
    """Allocates the ``(client_id, seq)`` pairs of one writer. Not thread-safe: its owner
    serialises calls (the Client's lock, the gateway's event loop).

    ``chunk``: at most this many writes per session id, then a new id starts. A writer with many
    writes in flight that may be answered out of order (the gateway) must stay below the FSM's
    per-session result window (1,024), or a resend could fall outside it.
    """

    __slots__ = ("client_id", "seq", "prefix", "chunk")

    def __init__(self, client_id: Optional[str] = None, *, prefix: str = "", chunk: Optional[int] = None) -> None:
        self.prefix = prefix
        self.chunk = chunk
        self.client_id = client_id or self._new_id()
        self.seq = 0

    def _new_id(self) -> str:
        return self.prefix + uuid.uuid4().hex

    def next(self) -> tuple[str, int]:
        """The pair of a new write."""
        if self.chunk is not None and self.seq >= self.chunk:
            self.renew()
        self.seq += 1
        return self.client_id, self.seq

    def renew(self) -> None:
        """Start a new session (the cluster forgot this one, or the chunk is used up)."""
        self.client_id, self.seq = self._new_id(), 0


def idempotency_session(key: str) -> tuple[str, int]:
    """The write session (client_id, seq) an ``Idempotency-Key`` header value stands for."""
    return "idem-" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32], 1


def attempt_time(timeout: float, attempt_timeout: Optional[float] = None) -> float:
    """How long one attempt waits for a reply: ``attempt_timeout``, else a third of the call's
    ``timeout`` within [0.1, 2] s, so that a call has time for about three attempts."""
    return attempt_timeout or min(2.0, max(0.1, timeout / 3))


@dataclass
class RetryPolicy:
    """The timing of retries: the call's overall ``timeout``, one attempt's wait, the backoff."""

    timeout: float
    attempt_timeout: Optional[float] = None
    backoff_base: float = 0.05  # first backoff (s); doubles per failed round
    backoff_max: float = 1.0  # cap of one backoff sleep (s)

    def per_attempt(self) -> float:
        return attempt_time(self.timeout, self.attempt_timeout)

    def backoff(self, rounds: int, deadline: float) -> None:
        """Sleep before round ``rounds + 1``: exponential with jitter (half fixed, half random) so
        that many clients that failed together do not come back together; never past ``deadline``."""
        cap = min(self.backoff_max, self.backoff_base * (2 ** min(rounds - 1, 16)))
        delay = min(random.uniform(cap / 2, cap), deadline - time.monotonic())
        if delay > 0:
            time.sleep(delay)


class Attempts:
    """The retry state of one call: its deadline, failed rounds, whether an attempt ended without
    a definite answer (``silent``: a write may then have been applied), and the last failure."""

    __slots__ = ("policy", "what", "write", "deadline", "rounds", "redirects", "silent", "last")

    def __init__(self, policy: RetryPolicy, what: str, write: bool) -> None:
        self.policy = policy
        self.what = what
        self.write = write
        self.deadline = time.monotonic() + policy.timeout
        self.rounds = 0  # failed rounds, for the backoff
        self.redirects = 0
        self.silent = False
        self.last = "no server answered"

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def unanswered(self, why: str) -> None:
        """An attempt got no reply (Lazy Pirate): the next goes elsewhere at once, without backoff."""
        self.silent = True
        self.last = why

    def failed(self, why: str, *, silent: bool = False) -> None:
        """A round failed: remember why, and back off before the next."""
        self.last = why
        self.silent = self.silent or silent
        self.rounds += 1
        self.policy.backoff(self.rounds, self.deadline)

    def soon(self, why: str) -> None:
        """Ask again after the shortest backoff (an election is on: answering costs next to nothing)."""
        self.last = why
        self.policy.backoff(1, self.deadline)

    def deadline_error(self) -> ClientError:
        """The error of a call whose deadline passed."""
        timeout = self.policy.timeout
        if self.write:
            return Timeout(f"{self.what}: no definite answer within {timeout:g}s ({self.last}); "
                           "the write may still have been applied")
        if self.silent:
            return Timeout(f"{self.what}: no answer within {timeout:g}s ({self.last})")
        return Unavailable(f"{self.what}: cluster unavailable for {timeout:g}s ({self.last})")
