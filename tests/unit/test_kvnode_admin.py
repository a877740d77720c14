"""kvnode recover on a data directory (raftkv/cli/kvnode_admin.py): it explains and changes nothing
without --yes; with it, one new configuration entry naming the survivor alone, in a new term;
directories it must not touch are refused with a reason."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from raftkv.actors.core import decode_config, encode_config
from raftkv.cli.kvnode_admin import AdminError, admin, recover_node
from raftkv.records import Entry, EntryKind, Member
from raftkv.storage.log_store import LogStore

MEMBERS = [Member("n1", "127.0.0.1:9001", "127.0.0.1:5001"), Member("n2", "127.0.0.1:9002", "127.0.0.1:5002"),
           Member("n3", "127.0.0.1:9003", "127.0.0.1:5003", "", True, "inc3")]


def _node(tmp_path, node_id: str = "n3", commit: int = 3, **meta: str):
    d = tmp_path / node_id
    store = LogStore(str(d / "raft"))
    store.write(term=4, vote="n1", entries=[Entry(1, EntryKind.CONFIG, encode_config(MEMBERS)),
                                             Entry(2, EntryKind.NOOP, b""), Entry(4, EntryKind.NOOP, b""),
                                             Entry(4, EntryKind.NOOP, b"")], commit=commit)
    store.set_meta(node_id=node_id, cluster_id="c1", **meta)
    store.close()
    return d


def _log(d):
    store = LogStore(str(d / "raft"))
    try:
        return store.stable(), store.all_entries()
    finally:
        store.close()


def test_without_yes_it_explains_and_changes_nothing(tmp_path):
    d = _node(tmp_path)
    before = _log(d)
    r = CliRunner().invoke(admin, ["recover", "--data-dir", str(tmp_path), "--id", "n3"])
    assert r.exit_code == 2, r.output
    assert "n1" in r.output and "n2" in r.output and "entries 4..4 (1) are not known to be committed" in r.output
    assert "--yes" in r.output
    assert _log(d) == before


def test_with_yes_the_survivor_alone_in_a_new_term(tmp_path):
    d = _node(tmp_path)
    _, before = _log(d)
    plan, done = recover_node(d, "n3", yes=True)
    assert done and [m.id for m in plan.lost] == ["n1", "n2"]
    stable, entries = _log(d)
    assert entries[:-1] == before  # the log is kept
    last = entries[-1]
    assert last.kind == EntryKind.CONFIG and last.term == 5 and stable.term == 5 and stable.vote is None
    assert decode_config(last.data) == [MEMBERS[2]]  # same addresses and incarnation


@pytest.mark.parametrize("node_id, meta, words", [
    ("n4", {}, "not in its own stored configuration"),
    ("n3", {"removed": "true"}, "was removed"),
])
def test_refused(tmp_path, node_id, meta, words):
    d = _node(tmp_path, node_id, **meta)
    with pytest.raises(AdminError, match=words):
        recover_node(d, node_id, yes=True)


def test_a_directory_of_another_node_or_none(tmp_path):
    d = _node(tmp_path, "n3")
    (tmp_path / "n2").mkdir()
    d.rename(tmp_path / "n2" / "x")
    (tmp_path / "n2" / "x" / "raft").rename(tmp_path / "n2" / "raft")
    with pytest.raises(AdminError, match="belongs to node 'n3'"):
        recover_node(tmp_path / "n2", "n2", yes=True)
    r = CliRunner().invoke(admin, ["recover", "--data-dir", str(tmp_path / "nothing"), "--id", "n3", "--yes"])
    assert r.exit_code == 1 and "no data of node 'n3'" in r.output
