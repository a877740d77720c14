"""kvbench failover: kill -9 the leader of a local cluster REPS times, while background writers
keep writing; time from the kill until the first write started after it is acknowledged, then
restart the killed node with the same command and wait until it has caught up."""
from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Optional

import click

from raftkv.wire.client import Client, ClientError

from .cluster import BenchCluster
from .common import BenchError, in_temp_dir, quiet_or_echo
from .writers import WriteLoad


def _failover(nodes: int, reps: int, writers: int, as_json: bool, directory: Path) -> dict:
    out = quiet_or_echo(as_json)
    cl = BenchCluster(directory, n=nodes)
    load_ = None
    probe: Optional[Client] = None
    trials: list = []
    try:
        t_start = time.monotonic()
        cl.start()
        st = cl.wait_leader_status(60)
        out(f"cluster of {nodes} up in {directory}: {st['id']} leads (term {st['term']}) after "
            f"{time.monotonic() - t_start:.2f} s")
        # The cluster takes writes before the first kill.
        deadline = time.monotonic() + 30
        with Client(cl.servers, timeout=2.0) as c:
            while True:
                try:
                    c.put("kvbench-ready", b"1")
                    break
                except ClientError as e:
                    if time.monotonic() > deadline:
                        raise BenchError(f"the cluster takes no write: {e}") from None
        load_ = WriteLoad(cl.servers, writers)
        load_.start()
        probe = Client(cl.servers, timeout=1.0)
        first_term = None
        prev_new_term = None
        between = 0  # term increases between trials (no kill then)
        for rep in range(1, reps + 1):
            st = cl.wait_leader_status(30)
            if first_term is None:
                first_term = st["term"]
            if prev_new_term is not None:
                between += max(0, st["term"] - prev_new_term)
            victim, old_term = st["id"], st["term"]
            # The probe's cached leader is the victim, as for any client that was using it.
            load_.put_once(probe, "failover-probe")
            load_.reset_gap()
            t_kill = time.monotonic()
            cl.nodes[victim].kill()
            t_dead = time.monotonic()
            load_.watch(t_dead)  # writes started from now on cannot reach the old leader
            acked = threading.Event()

            def probe_loop(acked: threading.Event) -> None:
                k = 0
                while not acked.is_set() and not load_.stop.is_set():
                    k += 1
                    if load_.put_once(probe, f"failover-probe-{k % 100}"):
                        acked.set()

            pt = threading.Thread(target=probe_loop, args=(acked,), daemon=True, name="probe")
            pt.start()
            new_leader: Optional[dict] = None
            t_seen: Optional[float] = None
            first_ack: Optional[float] = None
            deadline = t_kill + 60
            while time.monotonic() < deadline:
                cl.check_exits()
                if new_leader is None:
                    s = cl.leader_status(min_term=old_term + 1)
                    if s is not None:
                        new_leader, t_seen = s, time.monotonic()
                with load_.lock:
                    first_ack = load_.first_ack
                if first_ack is not None and new_leader is not None:
                    break
                time.sleep(0.02)
            acked.set()
            pt.join(timeout=5)
            if first_ack is None or new_leader is None:
                raise BenchError(f"trial {rep}: no acknowledged write / new leader within 60 s of killing {victim}")
            failover = first_ack - t_kill
            # Restart the victim with the same command; wait until it has caught up.
            t_restart = time.monotonic()
            cl.nodes[victim].start()
            deadline = t_restart + 120
            vst = None
            while time.monotonic() < deadline:
                cl.check_exits()
                vst = cl.status_or_none(victim)
                if vst is not None:
                    break
                time.sleep(0.05)
            if vst is None:
                raise BenchError(f"{victim} does not answer after its restart:\n{cl.log_tail(victim)}")
            lst = cl.wait_leader_status(30)
            target = lst["commit_index"]
            while True:
                cl.check_exits()
                vst = cl.status_or_none(victim)
                if vst is not None and vst.get("applied_index", -1) >= target:
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{victim} did not catch up to index {target}:\n{cl.log_tail(victim)}")
                time.sleep(0.05)
            caught_up = time.monotonic() - t_restart
            with load_.lock:
                gap = load_.max_gap
            extra = max(0, new_leader["term"] - old_term - 1)
            trial = {"rep": rep, "killed": victim, "old_term": old_term, "new_leader": new_leader["id"],
                     "new_term": new_leader["term"], "failover_s": round(failover, 4),
                     "leader_seen_s": round(t_seen - t_kill, 4), "max_ack_gap_s": round(gap, 4),
                     "extra_terms": extra, "catchup_s": round(caught_up, 3), "catchup_index": target}
            trials.append(trial)
            prev_new_term = new_leader["term"]
            out(f"trial {rep:>2}: killed {victim} (leader, term {old_term}) -> {new_leader['id']} leads term "
                f"{new_leader['term']}; first write acked {failover:.3f} s after the kill "
                f"(leader seen {t_seen - t_kill:.3f} s, writers' longest gap {gap:.3f} s); "
                f"{victim} caught up to index {target} in {caught_up:.2f} s")
        final = cl.wait_leader_status(30)
        if prev_new_term is not None:
            between += max(0, final["term"] - prev_new_term)
        times = [t["failover_s"] for t in trials]
        extra_total = sum(t["extra_terms"] for t in trials) + between
        with load_.lock:
            ok, failed = load_.ok, load_.failed
        return {
            "nodes": nodes, "reps": reps, "writers": writers, "trials": trials,
            "failover_s": {"median": round(statistics.median(times), 4), "min": min(times), "max": max(times),
                           "mean": round(statistics.fmean(times), 4)},
            "unexpected_elections": extra_total,
            "unexpected_elections_between_trials": between,
            "first_term": first_term, "last_term": final["term"],
            "writes_ok": ok, "writes_failed": failed,
        }
    finally:
        if load_ is not None:
            load_.stop.set()
        cl.stop()  # kill -9 every node first: the writers' calls then end within their timeout
        if load_ is not None:
            load_.close()
        if probe is not None:
            probe.close()



@click.command()
@click.option("--nodes", "-n", type=click.IntRange(3, 9), default=3, show_default=True, help="Cluster size.")
@click.option("--reps", type=click.IntRange(1, None), default=10, show_default=True, help="Leader kills.")
@click.option("--writers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Background writer threads (closed loop, 1 s per call).")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print one JSON object.")
@click.option("--keep-dir", is_flag=True, default=False, help="Keep the temporary directory (config, data, logs).")
def failover(nodes, reps, writers, as_json, keep_dir) -> None:
    """Kill -9 the leader of a local cluster REPS times; time until writes are acknowledged again."""
    res = in_temp_dir("kvbench-failover-", keep_dir, lambda d: _failover(nodes, reps, writers, as_json, d))
    if as_json:
        click.echo(json.dumps(res))
        return
    f = res["failover_s"]
    click.echo(f"failover (s) over {len(res['trials'])} trials: median {f['median']:.3f}  min {f['min']:.3f}  "
               f"max {f['max']:.3f}  mean {f['mean']:.3f}")
    click.echo(f"elections not caused by a kill (extra term increases): {res['unexpected_elections']}")
    click.echo(f"background writes: {res['writes_ok']} acknowledged, {res['writes_failed']} failed or timed out")
