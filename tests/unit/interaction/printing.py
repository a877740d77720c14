"""Deterministic text for what a RaftCore produces: entries, messages, Ready, progress.

Everything the interaction tests print about a Ready goes through :func:`format_ready`, so that
a change of the Ready record (fields added or removed) is adapted in one place. Messages of a
type not known here print generically (type name and fields), so new message types show up in
the output instead of failing.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from raftkv.actors.core import decode_config
from raftkv.wire.messages import (AppendEntries, AppendReply, Entry, EntryKind, Heartbeat, HeartbeatReply,
                                  InstallSnapshot, InstallSnapshotReply, ReadIndexReply, ReadIndexRequest,
                                  RequestVote, TimeoutNow, VoteReply)


def _member_name(m: Any) -> str:
    # ``id@incarnation`` where the record has one; "*" marks a learner that stays one
    return m.id + (f"@{m.incarnation}" if m.incarnation else "") + ("" if m.promote or m.voter else "*")


def format_members(members: list) -> str:
    voters = [_member_name(m) for m in members if m.voter]
    learners = [_member_name(m) for m in members if not m.voter]
    s = f"voters=({','.join(voters)})"
    if learners:
        s += f" learners=({','.join(learners)})"
    return s


def format_entry(index: int, e: Entry) -> str:
    """``term/index KIND payload``, as etcd-io/raft prints entries."""
    kind = EntryKind(e.kind)
    if kind == EntryKind.CONFIG:
        payload = " " + format_members(decode_config(e.data))
    elif kind == EntryKind.NOOP:
        payload = ""
    else:
        payload = " " + (e.data.decode("utf-8", "backslashreplace") if isinstance(e.data, bytes) else repr(e.data))
    return f"{e.term}/{index} {kind.name}{payload}"


def format_handle(h: Any) -> str:
    """A read handle: a label given by the test, or a follower's forwarded read."""
    if type(h).__name__ == "RemoteRead":
        return f"remote({h.peer},#{h.req_id})"
    return str(h)


def format_msg(m: Any) -> str:
    """One message, field by field."""
    t = type(m)
    if t is RequestVote:
        flags = "".join(f" {f}" for f in ("pre_vote", "transfer") if getattr(m, f))
        return f"RequestVote term={m.term} last={m.last_log_term}/{m.last_log_index}{flags}"
    if t is VoteReply:
        return (f"VoteReply term={m.term} {'granted' if m.granted else 'rejected'}"
                f"{' pre_vote' if m.pre_vote else ''}")
    if t is AppendEntries:
        ents = ", ".join(format_entry(i, e) for i, e in enumerate(m.entries, start=m.prev_index + 1))
        return f"AppendEntries term={m.term} prev={m.prev_term}/{m.prev_index} commit={m.commit} entries=[{ents}]"
    if t is AppendReply:
        if m.success:
            s = f"AppendReply term={m.term} ok match={m.match_index}"
        else:
            s = (f"AppendReply term={m.term} reject={m.reject_index} hint={m.conflict_index}"
                 f"{f' conflict_term={m.conflict_term}' if m.conflict_term else ''}")
        return s + (" need_snapshot" if m.need_snapshot else "")
    if t is Heartbeat:
        return f"Heartbeat term={m.term} commit={m.commit} round={m.round}"
    if t is HeartbeatReply:
        return f"HeartbeatReply term={m.term} round={m.round} last={m.last_index}"
    if t is TimeoutNow:
        return f"TimeoutNow term={m.term}"
    if t is InstallSnapshot:
        return (f"InstallSnapshot term={m.term} snap={m.last_term}/{m.last_index} offset={m.offset} "
                f"bytes={len(m.data)}{' done' if m.done else ''} {format_members(m.members)}")
    if t is InstallSnapshotReply:
        return (f"InstallSnapshotReply term={m.term} snap_index={m.last_index} next_offset={m.next_offset}"
                f"{' done' if m.done else ''}")
    if t is ReadIndexRequest:
        return f"ReadIndexRequest term={m.term} req={m.req_id}"
    if t is ReadIndexReply:
        return f"ReadIndexReply term={m.term} req={m.req_id} index={m.index} {'ok' if m.ok else 'failed'}"
    if dataclasses.is_dataclass(m):
        fields = " ".join(f"{f.name}={getattr(m, f.name)!r}" for f in dataclasses.fields(m))
        return f"{t.__name__} {fields}"
    return repr(m)


def format_send(frm: str, to: str, m: Any) -> str:
    inc = getattr(m, "to_incarnation", "") or getattr(m, "from_incarnation", "")
    who = "" if not inc else (f" to@{inc}" if getattr(m, "to_incarnation", "") else f" from@{inc}")
    return f"{frm}->{to} {format_msg(m)}{who}"


def format_ready(node_id: str, core: Any, rd: Any) -> list:
    """The lines describing one Ready of ``core`` (already taken with take_ready), in a fixed order:
    role change, hard state, log writes, commit, committed entries, messages (now and after the
    persist), the re-admission request, reads, snapshot chunks, membership changes and the
    removal. Fields that are empty print nothing."""
    out = []
    if rd.role_changed:
        out.append(f"State: {core.role} term={core.term} lead={core.leader_id}")
    p = rd.persist
    if p.term is not None:
        out.append(f"HardState term={p.term} vote={p.vote}")
    if p.truncate_from is not None:
        out.append(f"Truncate from={p.truncate_from}")
    if p.compact_to is not None:
        out.append(f"CompactTo {p.compact_to[1]}/{p.compact_to[0]}")
    if p.entries:
        out.append("Entries:")
        out.extend("  " + format_entry(i, e) for i, e in enumerate(p.entries, start=p.first))
    if p.commit is not None:
        out.append(f"Commit={p.commit}")
    if rd.committed:
        out.append("CommittedEntries:")
        out.extend("  " + format_entry(i, e) for i, e in rd.committed)
    if rd.send:
        out.append("Messages:")
        out.extend("  " + format_send(node_id, to, m) for to, m in rd.send)
    if rd.send_after_persist:
        out.append("Messages after persist:")
        out.extend("  " + format_send(node_id, to, m) for to, m in rd.send_after_persist)
    if rd.readmission is not None:
        out.append("Readmission:")
        out.append("  " + format_send(node_id, *rd.readmission))
    for index, handles in rd.reads:
        out.append(f"ReadConfirmed index={index} handles=[{', '.join(format_handle(h) for h in handles)}]")
    if rd.reads_failed:
        out.append(f"ReadsFailed [{', '.join(format_handle(h) for h in rd.reads_failed)}]")
    for c in rd.chunks_to_send:
        out.append(f"SendChunk to={c.peer} term={c.term} snap_index={c.index} offset={c.offset}")
    for c in rd.chunks_to_store:
        out.append(f"StoreChunk from={c.leader} {format_msg(c.msg)}")
    for change, index in rd.config_proposed:
        out.append(f"ConfigProposed index={index} {format_change(change)}")
    for change in rd.config_dropped:
        out.append(f"ConfigDropped {format_change(change)}")
    if rd.removed:
        out.append("Removed")
    return out


def format_change(change: Any) -> str:
    """A membership change the core proposed or dropped: what it does and who asked for it."""
    who = change.origin.value + (f" {change.handle}" if change.handle is not None else "")
    return f"{change.describe()} ({who})"


def format_progress(core: Any) -> list:
    """The leader's view of each follower (etcd-io/raft's ``status``)."""
    out = []
    for pid in sorted(core.progress):
        pr = core.progress[pid]
        extra = ""
        if pr.inflight:
            extra += f" inflight={len(pr.inflight)}"
        if pr.state == "probe" and pr.probe_sent:
            extra += " paused"
        out.append(f"{pid}: {pr.state} match={pr.match} next={pr.next}{extra}")
    return out
