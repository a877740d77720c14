"""kvbench snapshot: snapshot cost and write stall, restore time on restart, and join time.

Starts its own 3-node cluster (raft.snapshot_threshold 10**9, so only requested snapshots
happen), preloads KEYS keys (pipelined puts, rate reported; every node takes a snapshot each
COMPACT_EVERY keys so that the in-memory logs stay bounded, as the threshold would), reports each
node's RSS and disk use against the raw data, and ``list`` latency, and while background writers keep
writing (each write's latency recorded): measures write latency in a baseline window, times a
snapshot asked of the leader (request until durable) and the latency of the writes in flight
meanwhile, has a follower take a snapshot, kill -9s and restarts it (time until it has caught up
with the leader's commit index, and until it answers a linearizable get itself; the "restored
snapshot" time from its log), and starts a 4th node that joins with --join (time until it is a voter and has caught up; snapshot transfer and load
times from its log).
"""
from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import click

from raftkv.records import ClientRequest, Op
from raftkv.wire.client import Client, ClientError

from .cluster import BenchCluster
from .common import KEY_FMT, BenchError, in_temp_dir
from .writers import LatencyWriteLoad, Preloader


# Snapshots are checkpoints of the key-value store (taken by the FSM, then described for streaming).
_RE_WRITTEN = r"snapshot at index (\d+) \(term \d+, (\d+) bytes\) described in ([\d.]+) ?s"
_RE_RESTORED = r"opened the key-value store at applied index (\d+) \(snapshot \d+\) in ([\d.]+) ?s"
_RE_RECEIVED = r"received snapshot at index (\d+) \((\d+) bytes\) in ([\d.]+) ?s"
_RE_FSM_RESTORED = r"fsm: restored the state at index (\d+) from a snapshot in ([\d.]+) ?s"
# The leader's first chunk and the joiner's adoption, timed by their log lines (one clock): the
# transfer end to end (after the sender has checked the checkpoint: that comes before its first chunk).
_RE_SENDING = r"^(\S+ \S+) .*sending snapshot at index {index} .* to {node}"
_RE_RECEIVED_AT = r"^(\S+ \S+) .*received snapshot at index {index} "


def _log_time(cl: BenchCluster, nid: str, pattern: str) -> Optional[float]:
    """The timestamp (seconds since the epoch) of the first log line of ``nid`` matching ``pattern``."""
    m = re.search(pattern, cl.nodes[nid].log_text(), re.M)
    if m is None:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _rss_mb(pid: int) -> Optional[float]:
    """Resident set size of a process, from /proc (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _cpu_s(pid: int) -> Optional[float]:
    """CPU seconds (user + system) a process has used, from /proc (Linux): on a machine shared
    with other work, the part of a wall-clock time that is this process's own."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, IndexError, ValueError):
        return None


def _disk_mb(path: Path) -> float:
    """Bytes under ``path`` (files counted once per inode: checkpoints hard-link the DB's files)."""
    seen, total = set(), 0
    # os.walk, not Path.rglob: the node deletes old checkpoints meanwhile, and rglob raises when a
    # directory it listed is gone (a 10M-key run lost its figures to that at the very end).
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return round(total / 1e6, 1)


def _node_figures(cl: BenchCluster, raw_mb: float) -> dict:
    """RSS and disk use of every node; ``disk_ratio``: its data dir against the raw data."""
    out = {}
    for nid in cl.ids:
        disk = _disk_mb(cl.data_dir / nid)
        out[nid] = {"rss_mb": _rss_mb(cl.nodes[nid].proc.pid), "disk_mb": disk,
                    "disk_ratio": round(disk / raw_mb, 2) if raw_mb > 0 else None}
    return out


def _snapshot_every_node(cl: BenchCluster, timeout: float) -> list:
    """Ask every node (directly: a follower snapshots its own copy) for a snapshot, which also
    compacts its in-memory log to ``trailing_logs`` entries; [(node, index, seconds)]."""
    done = []
    for nid in cl.ids:
        with Client([cl.nodes[nid].client], timeout=timeout, attempt_timeout=timeout) as c:
            t0 = time.monotonic()
            info = c.snapshot()
            done.append((nid, info.get("index") if isinstance(info, dict) else None,
                         round(time.monotonic() - t0, 3)))
    return done


def _first_linearizable_get(addr: str, key: str, timeout: float) -> None:
    """Return once the node at ``addr`` itself answers a linearizable get of ``key`` (found or
    not): no redirect is followed, so the answer is that node's (a follower's is a ReadIndex
    round with the leader and waits until it has applied that index)."""
    with Client([addr], timeout=timeout, attempt_timeout=0.5) as c:
        # The public get follows redirects to the leader; the fixed-target form of the call does not.
        c._call(ClientRequest(Op.GET.value, key=key, consistency="linearizable"), targets=[addr])


def _list_timing(servers: list, prefix: str, runs: int = 50) -> dict:
    """Latency of ``list PREFIX --limit 100`` (linearizable) from the client."""
    times = []
    with Client(servers, timeout=10) as c:
        got = c.list(prefix, limit=100)
        for _ in range(runs):
            t0 = time.perf_counter()
            c.list(prefix, limit=100)
            times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"prefix": prefix, "items": len(got), "p50_ms": round(times[len(times) // 2], 2),
            "p99_ms": round(times[int(len(times) * 0.99)], 2), "max_ms": round(times[-1], 2)}


def _snapshot_bench(keys: int, value_size: int, writers: int, baseline: float, trailing_logs: int,
                    compact_every: int, as_json: bool, directory: Path, res: dict) -> dict:
    """The run; its figures go into ``res`` as they are measured (a stopped run keeps them)."""
    # With --json, stdout is for the one JSON object: progress goes to stderr (a long run is
    # followed there).
    out = (lambda s: click.echo(s, err=True)) if as_json else click.echo
    raft = {"snapshot_threshold": 10**9, "trailing_logs": trailing_logs}
    cl = BenchCluster(directory, n=3, raft=raft)
    load_: Optional[LatencyWriteLoad] = None
    # Deadlines grow with the data: a 1M-key snapshot is written, sent and loaded in many seconds.
    slow = 120.0 + keys / 1000.0
    raw_mb = keys * (len(KEY_FMT % 0) + value_size) / 1e6
    res.update({"config": {"keys": keys, "value_size": value_size, "writers": writers, "baseline_s": baseline,
                            "raft": raft, "nodes": 3, "compact_every": compact_every},
                 "raw_data_mb": round(raw_mb, 1)})
    try:
        t_start = time.monotonic()
        cl.start()
        st = cl.wait_leader_status(60)
        out(f"cluster of 3 up in {directory}: {st['id']} leads (term {st['term']}) after "
            f"{time.monotonic() - t_start:.2f} s; raft {raft}")

        # 1. Preload.
        out(f"preloading {keys} keys of {value_size} B ...")
        # Only requested snapshots happen (threshold 10**9), so without these the in-memory logs
        # would hold every preloaded entry: every COMPACT_EVERY keys, each node takes one, as the
        # threshold would in a running cluster (the last COMPACT_EVERY keys stay in the log).
        compactions: list = []

        def compact(done: int) -> None:
            for nid, idx, secs in _snapshot_every_node(cl, slow):
                compactions.append({"keys_done": done, "node": nid, "index": idx, "seconds": secs})
            out(f"  preload: every node took a snapshot at {done} keys: {compactions[-len(cl.ids):]}")

        preloader = Preloader(cl.servers, keys, value_size)
        res["preload_progress"] = progress = []  # [seconds, keys done], every 10 s
        t_pre = time.monotonic()

        def progress_line(line: str) -> None:
            progress.append([round(time.monotonic() - t_pre, 1), preloader.done])
            out(line)

        pre = preloader.run(progress=progress_line, every=(compact_every, compact) if compact_every else None)
        pre["snapshots"] = compactions
        res["preload"] = pre
        out(f"preloaded {pre['keys']} keys in {pre['seconds']:.1f} s: {pre['keys_per_sec']:.0f} keys/s")
        res["nodes_after_preload"] = _node_figures(cl, raw_mb)
        out(f"nodes after the preload: {res['nodes_after_preload']}")
        res["list_first_100"] = _list_timing(cl.servers, KEY_FMT.split("%")[0])
        out(f"list of the first 100 keys under a prefix: {res['list_first_100']}")

        # 2. Background writes; a baseline window without any snapshot.
        load_ = LatencyWriteLoad(cl.servers, writers, call_timeout=max(10.0, slow / 4), value_size=value_size)
        load_.start()
        time.sleep(1.0)  # warm-up: every writer has found the leader
        t_b0 = time.monotonic()
        time.sleep(baseline)
        t_b1 = time.monotonic()

        # 3. The leader takes a snapshot while the writes go on.
        lst = cl.wait_leader_status(30)
        leader = lst["id"]
        since = cl.log_size(leader)
        with Client([cl.nodes[leader].client], timeout=slow, attempt_timeout=slow) as c:
            t_s0 = time.monotonic()
            info = c.snapshot()
            t_s1 = time.monotonic()
        snap_index = (info or {}).get("index") if isinstance(info, dict) else None
        written = cl.log_find(leader, since, _RE_WRITTEN)
        if snap_index is None and written:
            snap_index = int(written[0])
        res["leader_snapshot"] = {
            "node": leader, "index": snap_index, "seconds": round(t_s1 - t_s0, 3),
            "keys": None,  # a checkpoint: no key count without reading every key
            "write_seconds": float(written[2]) if written else None,
            "bytes": int(written[1]) if written else None,
        }
        out(f"leader {leader}: snapshot at index {snap_index} in {t_s1 - t_s0:.3f} s")
        time.sleep(1.0)  # writes after the snapshot, for the record; in-flight ones finish

        # 4. A follower takes one too (asked directly: no redirect), then is killed and restarted.
        follower = next(n for n in cl.ids if n != leader)
        since = cl.log_size(follower)
        with Client([cl.nodes[follower].client], timeout=slow, attempt_timeout=slow) as c:
            t_f0 = time.monotonic()
            finfo = c.snapshot()
            t_f1 = time.monotonic()
        f_index = (finfo or {}).get("index") if isinstance(finfo, dict) else None
        fwritten = cl.log_find(follower, since, _RE_WRITTEN)
        res["follower_snapshot"] = {"node": follower, "index": f_index, "seconds": round(t_f1 - t_f0, 3),
                                    "write_seconds": float(fwritten[2]) if fwritten else None}
        out(f"follower {follower}: snapshot at index {f_index} in {t_f1 - t_f0:.3f} s")
        time.sleep(1.0)
        since = cl.log_size(follower)
        cl.nodes[follower].kill()
        t_r0 = time.monotonic()
        cl.nodes[follower].start()
        deadline = t_r0 + slow
        cl.wait_for(f"{follower} to answer after its restart", follower, deadline, lambda: cl.status_or_none(follower))
        t_up = time.monotonic()
        _first_linearizable_get(cl.nodes[follower].client, KEY_FMT % 0, max(1.0, deadline - time.monotonic()))
        t_serving = time.monotonic()
        serving_cpu = _cpu_s(cl.nodes[follower].proc.pid)
        target = cl.wait_leader_status(30)["commit_index"]
        cl.wait_for(f"{follower} to catch up to index {target}", follower, deadline,
              lambda: (s := cl.status_or_none(follower)) is not None and s.get("applied_index", -1) >= target)
        t_r1 = time.monotonic()
        restored = cl.log_find(follower, since, _RE_RESTORED)
        res["restart"] = {
            "node": follower, "answering_s": round(t_up - t_r0, 3), "caught_up_s": round(t_r1 - t_r0, 3),
            "serving_s": round(t_serving - t_r0, 3),
            "serving_cpu_s": serving_cpu,  # the restarted process's own CPU time until then
            "caught_up_index": target,
            "restored_index": int(restored[0]) if restored else None,
            "restored_keys": None,
            "restore_s": float(restored[1]) if restored else None,
        }
        out(f"{follower} killed -9 and restarted: answering after {t_up - t_r0:.2f} s, a linearizable get "
            f"after {t_serving - t_r0:.2f} s, caught up to index "
            f"{target} after {t_r1 - t_r0:.2f} s (snapshot restore {res['restart']['restore_s']} s)")

        # 5. A fourth node joins; it gets the leader's snapshot and becomes a voter once caught up.
        lst = cl.wait_leader_status(30)
        leader = lst["id"]
        # The leader may have changed since step 3 (a node that never took a snapshot would send
        # the joiner its whole log instead): have the current one take a snapshot first.
        with Client([cl.nodes[leader].client], timeout=slow, attempt_timeout=slow) as c:
            c.snapshot()
        joiner = "node4"
        cl.add_joiner(joiner, cl.nodes[leader].addr)
        t_j0 = time.monotonic()
        cl.nodes[joiner].start()
        deadline = t_j0 + slow
        t_inst: Optional[float] = None
        t_voter: Optional[float] = None
        target = None
        with Client(cl.servers, timeout=2.0) as admin:
            while True:
                cl.check_exits()
                now = time.monotonic()
                if now > deadline:
                    raise BenchError(f"{joiner} did not join and catch up within {slow:g} s:\n{cl.log_tail(joiner)}")
                js = cl.status_or_none(joiner)
                if t_inst is None and js is not None and js.get("snapshot_index", 0) > 0:
                    t_inst = now
                if t_voter is None:
                    try:
                        mem = admin.members()
                    except ClientError:
                        mem = []
                    if any(m.get("id") == joiner and m.get("voter") for m in mem):
                        t_voter = now
                        ls = cl.leader_status()
                        target = ls["commit_index"] if ls else None
                if t_voter is not None and target is not None and js is not None \
                        and js.get("applied_index", -1) >= target:
                    t_j1 = time.monotonic()
                    break
                if t_voter is not None and target is None:
                    ls = cl.leader_status()
                    target = ls["commit_index"] if ls else None
                time.sleep(0.05)
        received = cl.log_find(joiner, 0, _RE_RECEIVED)
        fsm_restored = cl.log_find(joiner, 0, _RE_FSM_RESTORED)
        res["join"] = {
            "node": joiner, "voter_s": round(t_voter - t_j0, 3), "caught_up_s": round(t_j1 - t_j0, 3),
            "caught_up_index": target,
            "snapshot_installed_s": round(t_inst - t_j0, 3) if t_inst is not None else None,
            "snapshot_index": int(received[0]) if received else None,
            "snapshot_bytes": int(received[1]) if received else None,
            "snapshot_receive_s": float(received[2]) if received else None,
            "fsm_restore_s": float(fsm_restored[1]) if fsm_restored else None,
        }
        if received and float(received[2]) > 0:
            res["join"]["transfer_mb_per_s"] = round(int(received[1]) / 1e6 / float(received[2]), 1)
            sent_at = [t for nid in cl.ids if nid != joiner
                       if (t := _log_time(cl, nid, _RE_SENDING.format(index=received[0], node=joiner))) is not None]
            got_at = _log_time(cl, joiner, _RE_RECEIVED_AT.format(index=received[0]))
            if sent_at and got_at is not None and got_at > max(sent_at):
                e2e = got_at - max(sent_at)  # the last stream started (an earlier one may have been cut off)
                res["join"]["transfer_end_to_end_s"] = round(e2e, 3)
                res["join"]["end_to_end_mb_per_s"] = round(int(received[1]) / 1e6 / e2e, 1)
        out(f"{joiner} joined: voter after {t_voter - t_j0:.2f} s, caught up to index {target} after "
            f"{t_j1 - t_j0:.2f} s (snapshot received in {res['join']['snapshot_receive_s']} s)")
        time.sleep(0.5)
        load_.stop.set()
        load_.close()
        res["write_latency"] = {
            "baseline": load_.window(t_b0, t_b1, overlap=False),
            "during_leader_snapshot": load_.window(t_s0, t_s1, overlap=True),
            "during_follower_snapshot": load_.window(t_f0, t_f1, overlap=True),
            "during_restart": load_.window(t_r0, t_r1, overlap=True),
            "during_join": load_.window(t_j0, t_j1, overlap=True),
        }
        res["writes_ok"], res["writes_failed"] = load_.ok, load_.failed
        wl = res["write_latency"]
        out("write p99 / p50 ms (writes): " + ", ".join(
            f"{k} {w['p99_ms']} / {w['p50_ms']} ({w['writes']})" for k, w in wl.items()))
        # RSS with the same keys once every node's log is compacted (the figure that depends on
        # the cache, not on how many entries the benchmark left in the logs).
        res["final_snapshots"] = _snapshot_every_node(cl, slow)
        res["nodes_at_end"] = _node_figures(cl, raw_mb)
        return res
    finally:
        if load_ is not None:
            load_.stop.set()
        cl.stop()
        if load_ is not None:
            load_.abandon()


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def _print_snapshot(res: dict) -> None:
    p = click.echo
    cfg = res["config"]
    pre = res["preload"]
    p("")
    p(f"kvbench snapshot: {cfg['keys']} keys of {cfg['value_size']} B, 3 nodes, {cfg['writers']} background "
      f"writers; raft {cfg['raft']}")
    p(f"  {'preload':<26} {pre['keys']} keys in {pre['seconds']:.2f} s = {pre['keys_per_sec']:.0f} keys/s"
      + (f" ({pre['resent_blocks']} blocks resent)" if pre["resent_blocks"] else ""))
    ls, fs = res["leader_snapshot"], res["follower_snapshot"]
    size = f", {ls['bytes'] / 1e6:.1f} MB" if ls.get("bytes") else ""
    p(f"  {'snapshot on the leader':<26} {ls['seconds']:.3f} s (request to durable; file written in "
      f"{_fmt(ls['write_seconds'], '.2f')} s; index {ls['index']}{size})")
    p(f"  {'snapshot on a follower':<26} {fs['seconds']:.3f} s (file written in {_fmt(fs['write_seconds'], '.2f')} s)")
    r = res["restart"]
    p(f"  {'restart (kill -9) of ' + r['node']:<26} answering after {r['answering_s']:.2f} s; a linearizable get "
      f"after {r['serving_s']:.2f} s ({_fmt(r['serving_cpu_s'], '.2f')} s of its CPU); snapshot restore "
      f"{_fmt(r['restore_s'], '.2f')} s ({_fmt(r['restored_keys'], 'd')} keys); caught up to the leader's "
      f"commit after {r['caught_up_s']:.2f} s")
    j = res["join"]
    sb = f", {j['snapshot_bytes'] / 1e6:.1f} MB" if j.get("snapshot_bytes") else ""
    p(f"  {'join of a new ' + j['node']:<26} voter after {j['voter_s']:.2f} s; caught up after "
      f"{j['caught_up_s']:.2f} s (snapshot received in {_fmt(j['snapshot_receive_s'], '.2f')} s{sb}, "
      f"loaded in {_fmt(j['fsm_restore_s'], '.2f')} s)")
    p("")
    p(f"  write latency (ms)          {'window s':>8} {'writes':>7} {'failed':>6} {'w/s':>7} {'p50':>8} "
      f"{'p99':>8} {'max':>8}")
    names = {"baseline": "baseline (no snapshot)", "during_leader_snapshot": "during leader snapshot",
             "during_follower_snapshot": "during follower snapshot", "during_restart": "during restart+catch-up",
             "during_join": "during join (node4)"}
    for k, label in names.items():
        w = res["write_latency"][k]
        p(f"  {label:<27} {w['seconds']:>8.2f} {w['writes']:>7} {w['failed']:>6} {_fmt(w['writes_per_sec'], '.0f'):>7} "
          f"{_fmt(w['p50_ms'], '.2f'):>8} {_fmt(w['p99_ms'], '.2f'):>8} {_fmt(w['max_ms'], '.2f'):>8}")
    p(f"  background writes: {res['writes_ok']} acknowledged, {res['writes_failed']} failed or timed out")
    p(f"  transfer to the joiner: {_fmt(j.get('transfer_mb_per_s'), '.1f')} MB/s as received (first chunk to "
      f"checked and kept); {_fmt(j.get('end_to_end_mb_per_s'), '.1f')} MB/s end to end (leader's first chunk, "
      f"after checking its checkpoint, to the joiner's adoption: {_fmt(j.get('transfer_end_to_end_s'), '.2f')} s)")
    lt = res["list_first_100"]
    p(f"  list {lt['prefix']!r} --limit 100 (linearizable, client side): p50 {lt['p50_ms']} ms, p99 {lt['p99_ms']} ms")
    for when in ("nodes_after_preload", "nodes_at_end"):
        p(f"  {when}: " + "; ".join(f"{n} RSS {v['rss_mb']} MB, disk {v['disk_mb']} MB ({v['disk_ratio']}x raw)"
                                    for n, v in res[when].items()))
    p(f"  raw data: {res['raw_data_mb']} MB; nodes_at_end is after every node took a snapshot (logs compacted)")


@click.command()
@click.option("--keys", "-k", type=click.IntRange(1, None), default=100000, show_default=True,
              help="Keys preloaded before the measurements.")
@click.option("--value-size", "-b", type=click.IntRange(0, None), default=100, show_default=True,
              help="Bytes per value (preload and background writes).")
@click.option("--writers", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Background writer threads (closed loop) whose latency is measured.")
@click.option("--baseline", type=click.FloatRange(0.5, None), default=5.0, show_default=True,
              help="Seconds of background writes measured before any snapshot.")
@click.option("--trailing-logs", type=click.IntRange(0, None), default=None,
              help="raft.trailing_logs of the cluster [min(5000, KEYS/4): the joiner needs the snapshot].")
@click.option("--compact-every", type=click.IntRange(0, None), default=1000000, show_default=True,
              help="During the preload, every node takes a snapshot (compacting its log) each time this "
                   "many more keys are written; 0: never.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print one JSON object.")
@click.option("--keep-dir", is_flag=True, default=False, help="Keep the temporary directory (config, data, logs).")
def snapshot(keys, value_size, writers, baseline, trailing_logs, compact_every, as_json, keep_dir) -> None:
    """Snapshot time and write stall, restore time on restart, and join time, on a local cluster.

    Starts 3 kvnode processes (raft.snapshot_threshold 10**9: only requested snapshots), preloads
    KEYS keys, and while WRITERS threads keep writing: measures write latency without a snapshot,
    asks the leader for a snapshot (time until durable; latency of the writes in flight meanwhile),
    has a follower take one, kill -9s and restarts that follower (time until it has caught up; the
    snapshot restore time from its log), and starts a 4th node that joins (time until it is a voter
    and has caught up)."""
    if trailing_logs is None:
        trailing_logs = min(5000, keys // 4)
    partial: dict = {}
    try:
        res = in_temp_dir("kvbench-snapshot-", keep_dir,
                          lambda d: _snapshot_bench(keys, value_size, writers, baseline, trailing_logs, compact_every,
                                                    as_json, d, partial))
    except (SystemExit, Exception):
        # Stopped or failed: with --json, what was measured until then (marked unfinished).
        if as_json and partial.get("preload_progress"):
            click.echo(json.dumps({**partial, "finished": False}))
        raise
    if as_json:
        click.echo(json.dumps(res))
    else:
        _print_snapshot(res)
