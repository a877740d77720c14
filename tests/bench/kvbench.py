"""kvbench: load, failover, snapshot and elections benchmarks for the replicated key-value store.

A development tool run from a checkout (``bin/kvbench ...``, or ``python -m tests.bench.kvbench``
from the checkout root), not installed. One module per subcommand (load.py, failover.py,
snapshot.py, elections.py); the local clusters are the integration tests' harness (cluster.py).

    kvbench load [--servers HOST:PORT,...] [--clients C] [--duration S] [--read-ratio R]
                 [--keys K] [--value-size B] [--consistency linearizable|lease|stale]
                 [--pipeline N] [--json] [--plot FILE.png]
    kvbench failover [--nodes 3] [--reps 10] [--json] [--keep-dir]
    kvbench snapshot [--keys 100000] [--value-size 100] [--writers 4] [--compact-every 1000000]
                     [--json] [--keep-dir]
    kvbench stall [--keys 400000] [--rounds 3] [--install NAME=PATH ...] [--sample-threads] [--json]
    kvbench elections [--duration 600] [--writers 0] [--json] [--keep-dir]

``load`` drives a running cluster through raftkv.wire.client with C closed-loop clients, each in
its own process (one Client per process; the next request goes out when the previous one has
answered; with ``--pipeline N``, the next batch of N reads or N writes, sent through
``Client.get_many``/``put_many`` with all N in flight, goes out when the previous batch is
answered, and each request is recorded with its batch's latency). Keys are "k%015d", uniformly
random over K keys; values are B random bytes. A warm-up (1 s) is not measured. Latencies go
into log-scale histograms (1 % wide buckets, one per second of the run), so memory does not grow
with the number of operations; percentiles are exact to within 1 %, the maximum is exact. A read
of a key never written counts as a successful read (the server answered "not found").

``failover`` starts its own local cluster of real kvnode processes in a temporary directory,
and then, REPS times, while background writers keep writing: kill -9 the leader, measure the
time from the kill until the first write started after the kill is acknowledged, restart the
killed node with the same command and wait until it has caught up.

``snapshot`` starts its own 3-node cluster (raft.snapshot_threshold 10**9, so only requested
snapshots happen), preloads KEYS keys (pipelined puts, rate reported; every node takes a snapshot each
COMPACT_EVERY keys, so the in-memory logs stay bounded), reports each node's RSS and disk use
(against the raw data, KEYS x (16 + value size) bytes) and the latency of ``list`` of the first
100 keys, and while background
writers keep writing (each write's latency recorded): measures write latency in a baseline
window, times a snapshot asked of the leader (request until durable) and the latency of the
writes in flight meanwhile, has a follower take a snapshot, kill -9s and restarts it (time
until it has caught up with the leader's commit index; the "restored snapshot" time from its
log; and until it answers a linearizable get itself), and starts a 4th node that joins with
--join (time until it is a voter and has caught up; snapshot transfer and load times from its
log); last, every node takes a snapshot and RSS and disk are taken again.

``stall`` measures the write stall of a snapshot on the leader in repeated small runs (fresh
nodes each), installs of kvnode alternated: write p99 without a snapshot, during the leader's
snapshot, their ratio, and a timeline of the slowest writes beside the nodes' log lines (stall.py).

``elections`` starts its own local cluster and watches it (idle, or under background writers)
for DURATION seconds: term and leader changes seen by polling every node's status, and
election attempts (pre-candidate or candidate) counted in the node logs; none is expected.

Exit status: 0 done (for ``elections``: no election happened); 1 the benchmark could not run
(no successful operation, no leader, a node did not come back); 2 usage error (or --plot
without matplotlib); 130 interrupted.
"""
from __future__ import annotations

import click

from .elections import elections
from .failover import failover
from .load import load
from .snapshot import snapshot
from .stall import stall


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Benchmarks of the replicated key-value store."""


for _command in (load, failover, snapshot, stall, elections):
    main.add_command(_command)

if __name__ == "__main__":
    main(prog_name="kvbench")
