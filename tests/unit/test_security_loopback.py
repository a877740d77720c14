"""Loopback-only mode: which addresses are loopback, which binds are refused, rate-limited logging."""
import logging

import pytest

from raftkv.wire.security.loopback import LoopbackGuard, RateLimitedLog, bind_refusal, is_loopback, is_wildcard


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "[::1]", "localhost",
                                  "LOCALHOST", "::ffff:127.0.0.1", " 127.0.0.1 "])
def test_loopback_addresses(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "192.168.1.2", "0.0.0.0", "::", "128.0.0.1", "::ffff:10.0.0.1",
                                  "fe80::1%eth0", "example.com", "localhost.evil.com", "", "*", "126.255.255.255"])
def test_non_loopback_addresses(host):
    assert not is_loopback(host)


def test_non_text_is_not_loopback():
    assert not is_loopback(None)  # type: ignore[arg-type]


def test_wildcards():
    assert all(is_wildcard(h) for h in ["", "*", "0.0.0.0", "::", "[::]"])
    assert not is_wildcard("127.0.0.1") and not is_wildcard("10.0.0.1")


def test_binding_a_specific_non_loopback_address_is_refused_unless_secure_or_insecure():
    why = bind_refusal("10.0.0.5", secure=False, insecure=False)
    assert why and "--secure" in why and "--insecure" in why and "10.0.0.5" in why
    assert bind_refusal("10.0.0.5", secure=True, insecure=False) is None
    assert bind_refusal("10.0.0.5", secure=False, insecure=True) is None
    for host in ["127.0.0.1", "localhost", "::1", "0.0.0.0", "*"]:
        assert bind_refusal(host, secure=False, insecure=False) is None


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_rate_limited_log_writes_one_line_per_interval_with_a_count(caplog):
    clock = Clock()
    log = RateLimitedLog(logging.getLogger("t.rl"), interval=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t.rl"):
        assert log.log("refused %s", "a")
        for _ in range(99):
            clock.t += 0.05
            assert not log.log("refused %s", "b")
        clock.t += 10
        assert log.log("refused %s", "c")
        clock.t += 11
        assert log.log("refused %s", "d")
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["refused a", "refused c (and 99 more like it in the last 10 s)", "refused d"]


def test_guard_admits_loopback_and_refuses_others_with_one_log_line(caplog):
    clock = Clock()
    guard = LoopbackGuard(enabled=True, logger=logging.getLogger("t.guard"), interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t.guard"):
        assert guard.admit("127.0.0.1") and guard.admit("::1")
        for i in range(1000):
            assert not guard.admit(f"10.0.{i // 256}.{i % 256}", "http")
    assert guard.refused == 1000
    assert len(caplog.records) == 1
    assert "10.0.0.0 at the http door" in caplog.text and "--secure" in caplog.text


def test_disabled_guard_admits_everyone():
    guard = LoopbackGuard(enabled=False)
    assert guard.admit("203.0.113.9") and guard.refused == 0
