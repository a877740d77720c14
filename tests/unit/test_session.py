"""The session and retry engine (wire/session.py) shared by the client, the pipeline and HTTP."""
import subprocess
import sys
import time

import pytest

from raftkv.wire.errors import Timeout, Unavailable
from raftkv.wire.messages import STATUS_CLASS, Outcome, Status
from raftkv.wire.session import Attempts, RetryPolicy, Session, idempotency_session, may_renew, outcome


def test_every_status_has_the_outcome_of_the_table():
    for st in Status:
        assert outcome(st.value) is STATUS_CLASS[st]
    assert outcome("ok") is Outcome.FINAL
    assert outcome("not_leader") is Outcome.RETRY
    assert outcome("invalid") is Outcome.REJECTED
    assert outcome("expired") is Outcome.NEW_SESSION
    assert outcome("no-such-status") is None


def test_a_write_is_renewed_only_when_nothing_of_it_can_have_been_applied():
    assert may_renew(write=True, unanswered_before=False, own_session=True)
    assert not may_renew(write=True, unanswered_before=True, own_session=True)  # an attempt went unanswered
    assert not may_renew(write=True, unanswered_before=False, own_session=False)  # Idempotency-Key's session
    assert not may_renew(write=False, unanswered_before=False, own_session=True)


def test_session_numbers_writes_and_chunks_them():
    s = Session("c1")
    assert [s.next() for _ in range(3)] == [("c1", 1), ("c1", 2), ("c1", 3)]
    s.renew()
    cid, seq = s.next()
    assert cid != "c1" and seq == 1
    g = Session(prefix="http-", chunk=2)
    pairs = [g.next() for _ in range(5)]
    assert [p[1] for p in pairs] == [1, 2, 1, 2, 1]
    assert len({p[0] for p in pairs}) == 3 and all(p[0].startswith("http-") for p in pairs)


def test_idempotency_key_maps_to_one_fixed_session():
    assert idempotency_session("k") == idempotency_session("k")
    assert idempotency_session("k")[0].startswith("idem-") and idempotency_session("k")[1] == 1
    assert idempotency_session("k") != idempotency_session("other")


def test_deadline_errors_say_whether_a_write_may_have_been_applied():
    policy = RetryPolicy(timeout=0.5)
    w = Attempts(policy, "put 'k'", write=True)
    assert isinstance(w.deadline_error(), Timeout) and "may still have been applied" in str(w.deadline_error())
    r = Attempts(policy, "get 'k'", write=False)
    assert type(r.deadline_error()) is Unavailable  # every server said no: no leader, no quorum
    r.unanswered("x did not answer")
    assert isinstance(r.deadline_error(), Timeout) and "x did not answer" in str(r.deadline_error())


def test_backoff_never_sleeps_past_the_deadline():
    policy = RetryPolicy(timeout=0.1, backoff_base=10.0, backoff_max=10.0)
    a = Attempts(policy, "get", write=False)
    t0 = time.monotonic()
    a.failed("no")
    assert time.monotonic() - t0 < 0.5 and a.rounds == 1


@pytest.mark.parametrize("module", ["raftkv.wire.pipeline", "raftkv.wire.session", "raftkv.wire.http"])
def test_modules_import_on_their_own(module):
    # The pipeline does not import the client (no cycle): each module imports first in a fresh process.
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
