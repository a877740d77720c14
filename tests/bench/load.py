"""kvbench load: closed-loop load against a running cluster, through the client library.

C closed-loop clients, each in its own process (one Client per process; the next request goes out
when the previous one has answered; with ``--pipeline N``, the next batch of N reads or N writes,
sent through ``Client.get_many``/``put_many`` with all N in flight, goes out when the previous
batch is answered, and each request is recorded with its batch's latency). Keys are "k%015d",
uniformly random over K keys; values are B random bytes. A warm-up (1 s) is not measured.
Latencies go into log-scale histograms (histogram.py), one per second of the run. A read of a key
never written counts as a successful read (the server answered "not found").
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from typing import Any, Optional

import click

from raftkv.wire.client import CONSISTENCY_LEVELS, Client, ClientError, InvalidRequest, NotFound

from .common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, fail
from .histogram import bucket
from .load_report import OPS, merge, plot, print_report, report

DEFAULT_SERVERS = "127.0.0.1:5001,127.0.0.1:5002,127.0.0.1:5003"
PLOT_HINT = "--plot needs matplotlib: pip install 'raftkv[plot]'"


def _load_worker(idx: int, servers: list, opts: dict, barrier: Any, stop: Any, live: Any, outq: Any) -> None:
    """One closed-loop client. Sends its results (histograms, counts) to ``outq``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    rng = random.Random()  # seeded from os.urandom: forked children must not share a sequence
    res: dict = {"idx": idx, "error": None}
    client = None
    try:
        client = Client(servers, timeout=opts["timeout"])
        value = os.urandom(opts["value_size"])
        keys, read_ratio, consistency = opts["keys"], opts["read_ratio"], opts["consistency"]
        nsec = max(1, math.ceil(opts["duration"]))
        hist = {op: [Counter() for _ in range(nsec)] for op in OPS}
        lat_max = {op: 0.0 for op in OPS}
        lat_sum = {op: 0.0 for op in OPS}
        errors = [0] * nsec
        err_kinds: Counter = Counter()
        err_sample: dict = {}
        not_found = 0
        barrier.wait(timeout=120)
        t0 = time.monotonic()
        start = t0 + opts["warmup"]
        end = start + opts["duration"]
        base = idx * 3
        mono = time.monotonic
        depth = opts["pipeline"]
        while not stop.value:
            is_read = rng.random() < read_ratio
            key = "k%015d" % rng.randrange(keys)
            err = None
            missing = 0
            n = 1
            t1 = mono()
            if t1 >= end:
                break
            try:
                if depth > 1:
                    # A batch of DEPTH reads or writes, pipelined; each counts the batch's time.
                    n = depth
                    batch = ["k%015d" % rng.randrange(keys) for _ in range(depth)]
                    if is_read:
                        missing = client.get_many(batch, consistency=consistency, window=depth).count(None)
                    else:
                        client.put_many([(k, value) for k in batch], window=depth)
                elif is_read:
                    client.get(key, consistency=consistency)
                else:
                    client.put(key, value)
            except NotFound:
                missing = 1
            except ClientError as e:
                err = e
            except Exception as e:  # count anything else as an error, go on
                err = e
            t2 = mono()
            if t2 < start:
                continue  # warm-up
            if t2 >= end:
                break
            sec = min(int(t2 - start), nsec - 1)
            if err is not None:
                kind = type(err).__name__
                errors[sec] += 1
                err_kinds[kind] += 1
                err_sample.setdefault(kind, str(err)[:300])
                live[base + 2] += 1
                continue
            op = "read" if is_read else "write"
            lat = t2 - t1
            hist[op][sec][bucket(lat)] += n
            lat_sum[op] += lat * n
            if lat > lat_max[op]:
                lat_max[op] = lat
            not_found += missing
            live[base + (0 if is_read else 1)] += n
        res.update(hist={op: [dict(c) for c in hist[op]] for op in OPS}, lat_max=lat_max, lat_sum=lat_sum,
                   errors=errors, err_kinds=dict(err_kinds), err_sample=err_sample, not_found=not_found)
    except threading.BrokenBarrierError:
        res["error"] = "aborted before the start"
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        try:
            barrier.abort()
        except Exception:
            pass
    finally:
        if client is not None:
            client.close()
        outq.put(res)


@click.command()
@click.option("--servers", default=None,
              help="Client addresses HOST:PORT,... [env KV_SERVERS, else " + DEFAULT_SERVERS + "]")
@click.option("--clients", "-c", type=click.IntRange(1, 4096), default=8, show_default=True,
              help="Concurrent closed-loop clients, one process each.")
@click.option("--duration", "-d", type=click.FloatRange(0.1, None), default=10.0, show_default=True,
              help="Measured seconds (after the warm-up).")
@click.option("--warmup", type=click.FloatRange(0.0, None), default=1.0, show_default=True,
              help="Seconds of load before measuring.")
@click.option("--read-ratio", "-r", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Fraction of operations that are reads (0: write-only).")
@click.option("--keys", "-k", type=click.IntRange(1, None), default=10000, show_default=True,
              help="Key space: keys are k%015d for 0 <= n < KEYS, uniformly random.")
@click.option("--value-size", "-b", type=click.IntRange(0, None), default=100, show_default=True,
              help="Bytes per written value.")
@click.option("--consistency", type=click.Choice(CONSISTENCY_LEVELS), default="linearizable",
              show_default=True, help="Read consistency.")
@click.option("--timeout", type=click.FloatRange(0.01, None), default=5.0, show_default=True,
              help="Deadline of one call (retries included); a call past it counts as an error.")
@click.option("--pipeline", "-p", type=click.IntRange(1, 512), default=1, show_default=True,
              help="Requests in flight per client (Client.put_many/get_many); >1 records each "
                   "request with its batch's latency.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print one JSON object.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Draw throughput and latency over time into this PNG (needs matplotlib).")
def load(servers, clients, duration, warmup, read_ratio, keys, value_size, consistency, timeout,
         pipeline, as_json, plot_path) -> None:
    """Closed-loop load against a running cluster; prints throughput and latency."""
    if plot_path:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            fail(EXIT_USAGE, PLOT_HINT)
    from raftkv.wire.client import parse_servers

    try:
        server_list = parse_servers(servers or os.environ.get("KV_SERVERS", "").strip() or DEFAULT_SERVERS)
    except InvalidRequest as e:
        fail(EXIT_USAGE, str(e))
    opts = dict(timeout=timeout, value_size=value_size, keys=keys, read_ratio=read_ratio,
                consistency=consistency, duration=duration, warmup=warmup, pipeline=pipeline)
    nsec = max(1, math.ceil(duration))
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    barrier = ctx.Barrier(clients + 1)
    stop = ctx.Value("b", 0, lock=False)
    live = ctx.Array("q", clients * 3, lock=False)  # per worker: reads, writes, errors (measured)
    outq = ctx.Queue()
    procs = [ctx.Process(target=_load_worker, args=(i, server_list, opts, barrier, stop, live, outq),
                         name=f"kvbench-client-{i}", daemon=True) for i in range(clients)]
    results: list = []
    interrupted = False
    progress = sys.stderr.isatty()
    stopped_at: Optional[float] = None
    try:
        for p in procs:
            p.start()
        try:
            barrier.wait(timeout=120)
        except threading.BrokenBarrierError:
            pass  # a worker failed before the start: its result says why
        t0 = time.monotonic()
        start, end = t0 + warmup, t0 + warmup + duration
        last_n, last_t = 0, start
        try:
            while True:
                now = time.monotonic()
                if now >= end or all(not p.is_alive() for p in procs):
                    break
                # Ticks: every 0.5 s in the warm-up, then at start + 1 s, start + 2 s, ...
                nxt = min(now + 0.5, start) if now < start - 0.01 else start + math.floor(now - start + 1e-3) + 1
                time.sleep(max(0.0, min(nxt, end) - now))
                if progress:
                    now = time.monotonic()
                    if now < start - 0.01:
                        sys.stderr.write(f"\r\033[Kwarming up ({start - now:.1f} s left)")
                    elif now - last_t < 0.25:
                        sys.stderr.write("\r\033[Kmeasuring...")
                    else:
                        vals = list(live)
                        r, w, e = sum(vals[0::3]), sum(vals[1::3]), sum(vals[2::3])
                        n = r + w
                        rate = (n - last_n) / max(1e-6, now - last_t)
                        last_n, last_t = n, now
                        sys.stderr.write(f"\r\033[K[{min(now - start, duration):5.1f}/{duration:g} s] "
                                         f"{rate:9.1f} ops/s   reads {r}  writes {w}  errors {e}")
                    sys.stderr.flush()
        except KeyboardInterrupt:
            interrupted = True
            stopped_at = time.monotonic()
            stop.value = 1
        if progress:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        deadline = time.monotonic() + timeout + 15
        while len(results) < clients and time.monotonic() < deadline:
            try:
                results.append(outq.get(timeout=0.5))
            except Exception:  # queue.Empty
                if all(not p.is_alive() for p in procs) and outq.empty():
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.value = 1
        for p in procs:
            p.join(timeout=2)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
    if interrupted and not results:
        fail(EXIT_INTERRUPTED, "interrupted")
    failed = [r for r in results if r.get("error")]
    missing = clients - len(results)
    if failed or missing:
        why = failed[0]["error"] if failed else "no result"
        click.echo(f"kvbench: warning: {len(failed) + missing} of {clients} clients failed ({why})", err=True)
    elapsed = duration if stopped_at is None else max(0.0, min(duration, stopped_at - start))
    rep = report(merge(results, nsec), elapsed, nsec, duration)
    rep["config"] = {"servers": server_list, "clients": clients, "duration": duration, "warmup": warmup,
                     "read_ratio": read_ratio, "keys": keys, "value_size": value_size,
                     "consistency": consistency, "timeout": timeout, "pipeline": pipeline}
    rep["clients_failed"] = len(failed) + missing
    rep["interrupted"] = interrupted
    if as_json:
        click.echo(json.dumps(rep))
    else:
        print_report(rep)
    if plot_path:
        plot(plot_path, rep)
        if not as_json:
            click.echo(f"plot: {plot_path}")
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if rep["ops"] == 0:
        fail(EXIT_FAILED, "no operation succeeded")
