"""kvnode's offline subcommands: ``restore`` (a new cluster from a backup) and ``recover`` (a
one-node cluster from the survivor of a lost majority). Both work on a stopped node's data
directory and start nothing; the node is then started with its usual command line.

    kvnode restore FILE --id ID --data-dir DIR [--addr HOST:PORT] [--client ..] [--http ..]
                   [--config FILE] [--cluster-id CID]
    kvnode recover --data-dir DIR --id ID [--yes]

``restore`` is etcd's ``etcdutl snapshot restore``: the backup (``kvclient backup``) is checked
end to end (format version, length, SHA-256, then every file's CRC-32 and that the state opens
at the backup's index) and becomes a data directory holding that state as the snapshot of a
NEW single-member cluster: a new cluster id and a new incarnation, so that nothing of the old
cluster can mistake it for one of its members. The others then join it (``--join``).

``recover`` is etcd's ``--force-new-cluster`` and hashicorp/raft's ``RecoverCluster``: it keeps
this node's log and state and appends, in a new term, a configuration naming this node alone.
Started, the node is the only voter: it elects itself and commits everything in its log, the
entries it did not know were committed included (as etcd and hashicorp/raft do: a write that was
acknowledged may be among them; one whose client got no answer may come back). What the lost
majority acknowledged and this node never received is gone for good.

Exit status: 0 done; 1 the backup or the data directory cannot be used (nothing was written);
2 usage, or ``recover`` without ``--yes`` (it printed what it would do).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import click
import msgpack

from raftkv.cli.node_logging import LogFormat, setup_logging
from raftkv.config import ConfigError, load_config
from raftkv.fsync import fsync_dir
from raftkv.records import DecodeError, Entry, EntryKind, Member

ADMIN_COMMANDS = ("restore", "recover")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

log = logging.getLogger("kvnode.admin")


class AdminError(Exception):
    """The backup or the data directory cannot be used; the message says why (exit 1)."""


def _fail(code: int, msg: str) -> None:
    click.echo(f"kvnode: error: {msg}", err=True)
    sys.exit(code)


# ------------------------------------------------------------------ restore


@dataclass
class Restored:
    """What ``restore`` made: the node's directory, the new cluster and where the state came from."""

    node_dir: Path
    cluster_id: str
    old_cluster_id: str
    index: int
    term: int
    member: Member
    stream_bytes: int


def restore_backup(path: str, cfg: Any, cluster_id: Optional[str] = None) -> Restored:
    """Make ``cfg.node_dir`` the data directory of a new one-node cluster holding the backup at
    ``path``. Everything is built in a hidden sibling directory and renamed into place at the
    end, so a failure (a damaged backup, a full disk) leaves nothing behind. Raises AdminError."""
    from raftkv.actors.db_state import META_MEMBERS, META_TERM
    from raftkv.storage.backup_file import BackupError, iter_stream, verify
    from raftkv.storage.checkpoint_store import CheckpointStore, StreamReceiver
    from raftkv.storage.format import encode_members, pack
    from raftkv.storage.kv_checkpoint import CheckpointError
    from raftkv.storage.kv_store import KvStore
    from raftkv.storage.log_store import LogStore, StorageError

    try:
        header = verify(path)
    except BackupError as e:
        raise AdminError(f"{path}: {e}; nothing was restored") from None
    except OSError as e:
        raise AdminError(f"cannot read {path}: {e.strerror or e}") from None
    node_dir = Path(cfg.node_dir)
    if node_dir.exists() and (not node_dir.is_dir() or any(node_dir.iterdir())):
        raise AdminError(f"{node_dir} is not empty: restore makes a new node's data directory; "
                         "choose another --data-dir or --id (or move that directory away)")
    parent = node_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    work = parent / f".{cfg.id}.restoring-{uuid.uuid4().hex[:8]}"
    incarnation = uuid.uuid4().hex
    new_cid = cluster_id or uuid.uuid4().hex[:16]
    spec = cfg.spec
    me = Member(cfg.id, spec.addr, spec.client, spec.http or "", True, incarnation)
    try:
        work.mkdir()
        snaps = CheckpointStore(str(work / "snapshots"), keep=cfg.raft.snapshots_kept)
        rx = StreamReceiver(str(work / "restore-staging"))
        try:
            for block in iter_stream(path):
                rx.feed(block)
            info, _ = rx.finish()
        except (BackupError, CheckpointError) as e:
            raise AdminError(f"{path}: the state in it is unusable: {e}; nothing was restored") from None
        if info.applied_index != header.index:
            raise AdminError(f"{path}: its state is at index {info.applied_index}, its header says {header.index}")
        kv = KvStore(str(work / "kv"))
        try:
            kv.install(info.path)
            # The state's own record of the configuration (the FSM's, carried into every later
            # snapshot) becomes the new cluster's: this node alone.
            kv.apply_batch([], header.index, meta={META_TERM: pack(header.term), META_MEMBERS: encode_members([me])})
            ckpt = kv.checkpoint(snaps.path_for(header.index))
        finally:
            kv.close()
        snaps.describe(ckpt, header.term, [me])  # the snapshot joining nodes are sent first
        store = LogStore(str(work / "raft"))
        try:
            store.drop_prefix(header.index, header.term)  # the log starts after the backup's index
            store.write(term=header.term, vote=None, commit=header.index)
            store.set_meta(node_id=cfg.id, incarnation=incarnation, cluster_id=new_cid)
        finally:
            store.close()
        if node_dir.exists():
            node_dir.rmdir()  # empty (checked above)
        os.rename(work, node_dir)
        fsync_dir(parent)
    except StorageError as e:
        raise AdminError(f"cannot write {node_dir}: {e}") from None
    except OSError as e:
        raise AdminError(f"cannot write {node_dir}: {e.strerror or e}") from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return Restored(node_dir, new_cid, header.cluster_id, header.index, header.term, me, header.stream_bytes)


def _restore_config(path: str, node_id: str, data_dir: Optional[str], config: Optional[str],
                    overrides: dict) -> Any:
    """The node's configuration for ``restore``: its file and flags; with neither file nor
    --addr, the addresses the same id had in the backup's configuration."""
    from raftkv.storage.backup_file import BackupError, read_header

    ov = {"data_dir": data_dir, **overrides}
    if config is None and overrides.get("addr") is None:
        try:
            with open(path, "rb") as f:
                header, _ = read_header(f)
        except (BackupError, OSError) as e:
            raise AdminError(f"{path}: {e}") from None
        old = next((m for m in header.members if m.id == node_id), None)
        if old is None:
            raise AdminError(f"--addr is required: {node_id!r} is not a member in the backup (its members: "
                             f"{', '.join(m.id for m in header.members)})")
        ov["addr"] = old.addr
        if ov.get("client") is None and old.client:
            ov["client"] = old.client
        if ov.get("http") is None and old.http:
            ov["http"] = old.http
    return load_config(config, node_id, ov)


def _restore_command_line(cfg: Any, config: Optional[str]) -> str:
    if config:
        return f"kvnode --config {config} --id {cfg.id} --data-dir {cfg.data_dir}"
    line = f"kvnode --id {cfg.id} --addr {cfg.addr} --client {cfg.client}"
    if cfg.http:
        line += f" --http {cfg.http}"
    return line + f" --data-dir {cfg.data_dir}"


# ------------------------------------------------------------------ recover


@dataclass
class RecoveryPlan:
    """What ``recover`` found in a stopped node's data directory and what it will write."""

    node_id: str
    cluster_id: str
    members: list  # the stored configuration
    config_index: int  # its log index (0: from the snapshot)
    me: Member
    first_index: int
    last_index: int
    last_term: int
    commit: int
    term: int

    @property
    def new_term(self) -> int:
        return max(self.term, self.last_term) + 1

    @property
    def lost(self) -> list:
        return [m for m in self.members if m.id != self.node_id]

    def describe(self) -> str:
        """The plan, for the operator, before anything is written."""
        def who(m: Member) -> str:
            return f"{m.id} ({'voter' if m.voter else 'learner'}, {m.addr})"

        where = f"entry {self.config_index}" if self.config_index else "the snapshot"
        unknown = self.last_index - self.commit
        lines = [
            f"node {self.node_id} of cluster {self.cluster_id}:",
            f"  stored configuration (from {where}): {', '.join(who(m) for m in self.members)}",
            f"  log: entries {self.first_index}..{self.last_index} (term {self.last_term}), "
            f"known committed up to {self.commit}",
            f"it will become a one-node cluster: {self.node_id} alone, from term {self.new_term}.",
            f"  - {', '.join(m.id for m in self.lost) or 'no other member'} will no longer be members: never start "
            "them again with their old data; wipe their data directories and join them anew (--join).",
        ]
        if unknown > 0:
            lines.append(f"  - entries {self.commit + 1}..{self.last_index} ({unknown}) are not known to be committed: "
                         "they are kept and will be committed (a write whose client got no answer may take effect).")
        lines.append("  - writes the lost members acknowledged that this node never received are lost for good.")
        return "\n".join(lines)


def _snapshot_members(snap_dir: Path, base_index: int) -> list:
    """The members recorded with the newest snapshot at or above ``base_index`` (read-only:
    the sidecars, no RocksDB open), or []."""
    from raftkv.storage.format import FormatError, decode_members

    best: tuple = (-1, [])
    if not snap_dir.is_dir():
        return []
    for side in snap_dir.glob("ckpt-*.meta"):
        try:
            index = int(side.name[len("ckpt-"):-len(".meta")])
            if index < base_index or index <= best[0]:
                continue
            doc = msgpack.unpackb(side.read_bytes(), raw=False)
            best = (index, decode_members(doc["members"]))
        except (ValueError, KeyError, TypeError, OSError, FormatError, msgpack.ExtraData):
            continue
    return best[1]


def plan_recovery(node_dir: Path, node_id: str, store: Any) -> RecoveryPlan:
    """Read the stored configuration and log of the node whose LogStore is ``store``."""
    from raftkv.actors.core import decode_config

    nid = store.get_meta("node_id")
    if nid is not None and nid != node_id:
        raise AdminError(f"{node_dir} belongs to node {nid!r}, not {node_id!r}")
    cid = store.get_meta("cluster_id") or "?"
    if store.get_meta("removed") == "true":
        raise AdminError(f"node {node_id!r} was removed from cluster {cid}: its data is no survivor to recover from")
    first, last = store.first_index(), store.last_index()
    base_index, base_term = store.base()
    entries = store.all_entries()
    members: list = []
    config_index = 0
    try:
        for i, e in enumerate(entries, start=first):
            if e.kind == EntryKind.CONFIG:
                members, config_index = decode_config(e.data), i
    except DecodeError as e:
        raise AdminError(f"{node_dir}: a configuration entry is unreadable: {e}") from None
    if not members:
        members = _snapshot_members(node_dir / "snapshots", base_index)
    me = next((m for m in members if m.id == node_id), None)
    if me is None:
        raise AdminError(f"{node_id!r} is not in its own stored configuration "
                         f"({', '.join(m.id for m in members) or 'none found'}): nothing to recover")
    st = store.stable()
    return RecoveryPlan(node_id, cid, members, config_index, me, first, last,
                        entries[-1].term if entries else base_term, st.commit, st.term)


def recover_node(node_dir: Path, node_id: str, yes: bool) -> tuple[RecoveryPlan, bool]:
    """Plan (and with ``yes``, carry out) the recovery of a stopped node. Returns the plan and
    whether it was applied. Raises AdminError."""
    from raftkv.actors.core import encode_config
    from raftkv.storage.log_store import LogStore, StorageError

    raft = node_dir / "raft"
    if not raft.is_dir():
        raise AdminError(f"no data of node {node_id!r} in {node_dir} (is --data-dir the root, holding {node_id}/?)")
    try:
        store = LogStore(str(raft))
    except StorageError as e:
        raise AdminError(f"{e} (stop the node first: recover works on a stopped node)") from None
    try:
        plan = plan_recovery(node_dir, node_id, store)
        if not yes:
            return plan, False
        alone = [plan.me._replace(voter=True, promote=True)]
        term = plan.new_term
        # A new term, so that this configuration is newer than anything a lost member may hold.
        store.write(term=term, vote=None, entries=[Entry(term, EntryKind.CONFIG, encode_config(alone))])
    finally:
        store.close()
    log.warning("%s: recovered from lost quorum: the stored configuration is now %s alone (was %s), entry %d in "
                "term %d; start the node with its usual command line: it will lead a one-node cluster %s",
                node_id, node_id, ", ".join(m.id for m in plan.members), plan.last_index + 1, plan.new_term,
                plan.cluster_id)
    return plan, True


# ------------------------------------------------------------------ the commands


CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group(context_settings=CONTEXT)
def admin() -> None:
    """kvnode's offline subcommands (the node must not be running)."""


@admin.command(context_settings=CONTEXT)
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--id", "node_id", required=True, help="The new node's id.")
@click.option("--data-dir", default=None, help="Root data directory; the node's files go in DATA_DIR/ID [./data].")
@click.option("--config", "config", default=None, help="The node's YAML file (addresses, raft tuning).")
@click.option("--addr", default=None,
              help="Peer address HOST:PORT [default: the address ID had in the backup's configuration].")
@click.option("--client", default=None,
              help="Client address HOST:PORT [default: as in the backup, else peer port - 4000].")
@click.option("--http", default=None, help="HTTP gateway address [default: as in the backup].")
@click.option("--cluster-id", default=None, help="The new cluster's id [default: a new random one].")
def restore(file: str, node_id: str, data_dir: Optional[str], config: Optional[str], addr: Optional[str],
            client: Optional[str], http: Optional[str], cluster_id: Optional[str]) -> None:
    """Make a new one-node cluster's data directory from backup FILE (kvclient backup)."""
    setup_logging("WARNING", LogFormat.TEXT, node_id)
    try:
        cfg = _restore_config(file, node_id, data_dir, config, {"addr": addr, "client": client, "http": http})
        done = restore_backup(file, cfg, cluster_id)
    except ConfigError as e:
        _fail(EXIT_USAGE, str(e))
    except AdminError as e:
        _fail(EXIT_FAILED, str(e))
    click.echo(f"restored the state of cluster {done.old_cluster_id} at index {done.index} (term {done.term}, "
               f"{done.stream_bytes} bytes) into {done.node_dir}: {node_id} is the only member of a new cluster "
               f"{done.cluster_id}")
    click.echo(f"start it:      {_restore_command_line(cfg, config)}")
    click.echo(f"then join others to it with --join {done.member.addr}")


@admin.command(context_settings=CONTEXT)
@click.option("--data-dir", default=None, help="Root data directory holding DATA_DIR/ID [./data].")
@click.option("--id", "node_id", required=True, help="The surviving node's id.")
@click.option("--config", "config", default=None, help="The node's YAML file (for its data_dir).")
@click.option("--yes", is_flag=True, default=False, help="Do it (without: print what would be done, exit 2).")
def recover(data_dir: Optional[str], node_id: str, config: Optional[str], yes: bool) -> None:
    """Make a stopped node, the survivor of a permanently lost majority, a one-node cluster."""
    setup_logging("INFO", LogFormat.TEXT, node_id)
    try:
        if config is not None:
            node_dir = Path(load_config(config, node_id, {"data_dir": data_dir}).node_dir)
        else:
            node_dir = Path(data_dir or "./data") / node_id
        plan, done = recover_node(node_dir, node_id, yes)
    except ConfigError as e:
        _fail(EXIT_USAGE, str(e))
    except AdminError as e:
        _fail(EXIT_FAILED, str(e))
    click.echo(plan.describe())
    if not done:
        click.echo("nothing was changed; run again with --yes to do it (the node must be stopped)")
        sys.exit(EXIT_USAGE)
    click.echo(f"done: start {node_id} with its usual command line; then join new nodes to it with --join "
               f"{plan.me.addr}")


class KvnodeCommand(click.Command):
    """kvnode's click command, which hands ``kvnode restore ...`` and ``kvnode recover ...`` to
    :data:`admin` (so the flag form and the subcommands share one program)."""

    def main(self, args: Any = None, prog_name: Optional[str] = None, **kw: Any) -> Any:  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        if argv and argv[0] in ADMIN_COMMANDS:
            return admin.main(argv, prog_name=prog_name or "kvnode", **kw)
        return super().main(args, prog_name, **kw)

    def format_epilog(self, ctx: click.Context, formatter: Any) -> None:
        super().format_epilog(ctx, formatter)
        with formatter.section("Offline subcommands (see kvnode restore --help, kvnode recover --help)"):
            formatter.write_dl([
                ("restore FILE --id ID --data-dir DIR", "a new one-node cluster from a kvclient backup"),
                ("recover --data-dir DIR --id ID --yes", "the survivor of a lost majority becomes a one-node cluster"),
            ])
