"""A secure cluster's follower refuses a configuration entry in which a member lacks a valid
CURVE key (actors/config_guard.py, issue 11)."""
from __future__ import annotations

import logging
import random

import pytest

from raftkv.actors.config_guard import keyless_config, well_formed_key
from raftkv.actors.core import MISADDRESSED_WARN_TICKS, CoreConfig, RaftCore, decode_config, encode_config
from raftkv.wire.messages import AppendEntries, AppendReply, Entry, EntryKind, Member

from tests.unit.test_core import EMAX, EMIN, HB, sent_after

KEYS = {i: chr(ord("a") + i) * 40 for i in range(1, 6)}


def keyed(i, key=None, voter=True):
    return Member(f"n{i}", f"127.0.0.1:{9000 + i}", voter=voter, curve_key=KEYS[i] if key is None else key)


def follower(secure=True):
    ms = [keyed(i) if secure else keyed(i, key="") for i in (1, 2, 3)]
    cfg = CoreConfig(election_ticks_min=EMIN, election_ticks_max=EMAX, heartbeat_ticks=HB)
    return RaftCore("n2", cfg, term=1, members=ms, rng=random.Random(3))


def config_append(members, term=2):
    return AppendEntries(term, 0, 0, [Entry(term, EntryKind.NOOP, b""),
                                      Entry(term, EntryKind.CONFIG, encode_config(members))], 0)


def base():
    return [keyed(i) for i in (1, 2, 3)]


@pytest.mark.parametrize("newcomer", [keyed(4, key=""), keyed(4, key="", voter=False)], ids=["voter", "learner"])
def test_a_configuration_with_a_keyless_member_is_not_appended(newcomer, caplog):
    f = follower()
    before = list(f.members)
    with caplog.at_level(logging.ERROR):
        f.step("n1", config_append(base() + [newcomer]))
    r = f.take_ready()
    assert f.log.last_index() == 0 and f.members == before
    assert not r.persist.entries and not sent_after(r, AppendReply)
    errors = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(errors) == 1
    msg = errors[0].getMessage()
    assert msg.startswith("n2: term 2:") and "n4 without a valid CURVE key" in msg and "from n1" in msg


def test_a_member_of_the_current_configuration_losing_its_key_is_refused_too():
    f = follower()
    f.step("n1", config_append([keyed(1), keyed(2), keyed(3, key="")]))
    assert f.log.last_index() == 0 and f.member("n3").curve_key == KEYS[3]


def test_a_malformed_key_is_refused_and_nothing_raises():
    f = follower()
    bad = Member("n4", "127.0.0.1:9004", curve_key="~" * 40)  # not the Z85 alphabet
    f.step("n1", config_append(base() + [bad]))
    assert f.log.last_index() == 0
    f.step("n1", AppendEntries(2, 0, 0, [Entry(2, EntryKind.CONFIG, b"\xc1 not msgpack")], 0))
    assert f.log.last_index() == 0
    assert not well_formed_key("a" * 39) and not well_formed_key(None) and well_formed_key(KEYS[1])


def test_the_error_is_rate_limited(caplog):
    f = follower()
    with caplog.at_level(logging.ERROR):
        for _ in range(50):
            f.step("n1", config_append(base() + [keyed(4, key="")]))
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
        for _ in range(MISADDRESSED_WARN_TICKS):
            f.now += 1  # the clock alone (no election: the follower's timer is not what is tested)
        f.step("n1", config_append(base() + [keyed(4, key="")]))
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2


def test_a_keyed_configuration_is_appended_and_acknowledged():
    f = follower()
    f.step("n1", config_append(base() + [keyed(4, voter=False)]))
    r = f.take_ready()
    assert f.log.last_index() == 2 and f.member("n4").curve_key == KEYS[4]
    (ack,) = sent_after(r, AppendReply)
    assert ack.success and ack.match_index == 2


def test_a_cluster_made_without_secure_appends_keyless_configurations_as_before():
    f = follower(secure=False)
    f.step("n1", config_append([keyed(i, key="") for i in (1, 2, 3, 4)]))
    assert f.log.last_index() == 2 and f.member("n4") is not None


def test_keyless_config_ignores_other_entries():
    assert keyless_config(base(), [Entry(1, EntryKind.COMMAND, b"x")], decode_config) is None
    assert keyless_config([], [Entry(1, EntryKind.CONFIG, encode_config([keyed(1, key="")]))], decode_config) is None
