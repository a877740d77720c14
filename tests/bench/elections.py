"""kvbench elections: watch a local cluster (idle, or under background writers) for DURATION
seconds: term and leader changes seen by polling every node's status, and election attempts
(pre-candidate or candidate) counted in the node logs; none is expected."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from .cluster import BenchCluster
from .common import EXIT_FAILED, BenchError, in_temp_dir, quiet_or_echo
from .writers import WriteLoad


def _elections(nodes: int, duration: float, writers: int, interval: float, as_json: bool, directory: Path) -> dict:
    out = quiet_or_echo(as_json)
    cl = BenchCluster(directory, n=nodes)
    load_ = None
    try:
        cl.start()
        first = cl.wait_leader_status(30)
        # Settled: every node follows the first leader (joiners of the bootstrap are voters).
        deadline = time.monotonic() + 30
        while any(st.get("leader_id") != first["id"] for st in cl.statuses().values()) or \
                len(cl.statuses()) < nodes:
            if time.monotonic() > deadline:
                raise BenchError(f"the nodes do not all follow {first['id']} after 30 s")
            time.sleep(0.05)
        marks = {nid: cl.log_size(nid) for nid in cl.ids}
        if writers:
            load_ = WriteLoad(cl.servers, writers)
            load_.start()
        out(f"cluster of {nodes} up, leader {first['id']} in term {first['term']}; watching for {duration:g} s "
            f"({'idle' if not writers else f'{writers} writer threads'})")
        t0 = time.monotonic()
        leader, term = first["id"], first["term"]
        changes = []  # (seconds since start, new leader, term)
        max_gap_seen = 0.0
        next_report = t0 + 60
        while True:
            now = time.monotonic()
            if now - t0 >= duration:
                break
            cl.check_exits()
            for st in cl.statuses().values():
                if st.get("term", 0) > term or (st.get("state") == "leader" and st["id"] != leader):
                    term = max(term, st.get("term", 0))
                    if st.get("state") == "leader":
                        leader = st["id"]
                    changes.append((round(now - t0, 2), st.get("leader_id"), st.get("term")))
            if load_ is not None:
                max_gap_seen = max(max_gap_seen, load_.max_gap)
            if now >= next_report:
                next_report += 60
                done = f", {load_.ok} writes acknowledged" if load_ else ""
                out(f"  {now - t0:4.0f} s: term {term}, leader {leader}, {len(changes)} term/leader changes{done}")
            time.sleep(interval)
        elapsed = time.monotonic() - t0
        # A pre-vote that fails changes no term, so the logs count the election attempts too.
        attempts = {nid: len(cl.log_findall(nid, marks[nid], r": (?:pre-candidate|candidate) in term"))
                    for nid in cl.ids}
        return {
            "nodes": nodes, "duration_s": round(elapsed, 1), "writers": writers,
            "first_term": first["term"], "last_term": term, "leader_changes": changes,
            "election_attempts": attempts, "writes_ok": load_.ok if load_ else 0,
            "writes_failed": load_.failed if load_ else 0,
            "max_ack_gap_s": round(max_gap_seen, 3) if load_ else None,
        }
    finally:
        if load_ is not None:
            load_.close()
        cl.stop()


@click.command()
@click.option("--nodes", "-n", type=click.IntRange(3, 9), default=3, show_default=True, help="Cluster size.")
@click.option("--duration", "-d", type=click.FloatRange(1.0, None), default=600.0, show_default=True,
              help="Seconds to watch.")
@click.option("--writers", type=click.IntRange(0, 256), default=0, show_default=True,
              help="Background writer threads (closed loop); 0 = an idle cluster.")
@click.option("--interval", type=click.FloatRange(0.05, 10.0), default=0.2, show_default=True,
              help="Seconds between status polls of every node.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print one JSON object.")
@click.option("--keep-dir", is_flag=True, default=False, help="Keep the temporary directory (config, data, logs).")
def elections(nodes, duration, writers, interval, as_json, keep_dir) -> None:
    """Watch a local cluster (idle, or under WRITERS) for DURATION seconds and count elections
    that nothing caused: term and leader changes seen in /status, and election attempts (a
    node turning pre-candidate or candidate) found in the node logs. Exit status 1 if any."""
    res = in_temp_dir("kvbench-elections-", keep_dir,
                       lambda d: _elections(nodes, duration, writers, interval, as_json, d))
    attempts = sum(res["election_attempts"].values())
    if as_json:
        click.echo(json.dumps(res))
    else:
        click.echo(f"watched {res['duration_s']:g} s ({'idle' if not writers else f'{writers} writers'}): "
                   f"term {res['first_term']} -> {res['last_term']}, {len(res['leader_changes'])} term/leader "
                   f"changes, {attempts} election attempts")
        if writers:
            click.echo(f"background writes: {res['writes_ok']} acknowledged, {res['writes_failed']} failed or "
                       f"timed out; longest gap between acknowledgements {res['max_ack_gap_s']:.3f} s")
    if res["leader_changes"] or attempts:
        sys.exit(EXIT_FAILED)

