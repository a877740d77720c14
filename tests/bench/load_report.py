"""kvbench load: merging the workers' histograms into one report, and printing or plotting it."""
from __future__ import annotations

from collections import Counter

import click

from .common import rounded
from .histogram import quantiles

OPS = ("read", "write")


def merge(results: list, nsec: int) -> dict:
    """The workers' results as one: histograms and counters summed (failed workers left out)."""
    hist = {op: [Counter() for _ in range(nsec)] for op in OPS}
    lat_max = {op: 0.0 for op in OPS}
    lat_sum = {op: 0.0 for op in OPS}
    errors = [0] * nsec
    err_kinds: Counter = Counter()
    err_sample: dict = {}
    not_found = 0
    for r in results:
        if r.get("error"):
            continue
        for op in OPS:
            for s, h in enumerate(r["hist"][op]):
                hist[op][s].update(h)
            lat_max[op] = max(lat_max[op], r["lat_max"][op])
            lat_sum[op] += r["lat_sum"][op]
        for s, n in enumerate(r["errors"]):
            errors[s] += n
        err_kinds.update(r["err_kinds"])
        for k, v in r["err_sample"].items():
            err_sample.setdefault(k, v)
        not_found += r["not_found"]
    return dict(hist=hist, lat_max=lat_max, lat_sum=lat_sum, errors=errors, err_kinds=err_kinds,
                err_sample=err_sample, not_found=not_found)


def _lat_summary(h: Counter, n: int, lat_max: float, lat_sum: float) -> dict:
    if not n:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    mx = lat_max * 1000.0
    p50, p95, p99 = quantiles(h, max_ms=mx)
    return {"count": n, "p50": rounded(p50), "p95": rounded(p95), "p99": rounded(p99), "max": rounded(mx),
            "mean": rounded(lat_sum * 1000.0 / n)}


def report(m: dict, elapsed: float, nsec: int, duration: float) -> dict:
    """The JSON report of the merged results: totals, rates, latency summaries, a timeline."""
    totals = {op: Counter() for op in OPS}
    counts = {}
    for op in OPS:
        for h in m["hist"][op]:
            totals[op].update(h)
        counts[op] = sum(totals[op].values())
    all_h = totals["read"] + totals["write"]
    ops = counts["read"] + counts["write"]
    errors = sum(m["errors"])
    latency = {
        op: _lat_summary(totals[op], counts[op], m["lat_max"][op], m["lat_sum"][op]) for op in OPS
    }
    latency["all"] = _lat_summary(all_h, ops, max(m["lat_max"].values()), sum(m["lat_sum"].values()))
    timeline = []
    for s in range(nsec):
        width = min(1.0, duration - s) if s == nsec - 1 else 1.0
        if s >= elapsed:
            break
        width = min(width, elapsed - s)
        r = sum(m["hist"]["read"][s].values())
        w = sum(m["hist"]["write"][s].values())
        h = m["hist"]["read"][s] + m["hist"]["write"][s]
        p50, p95, p99 = quantiles(h)
        timeline.append({"t": s, "seconds": round(width, 3), "reads": r, "writes": w, "errors": m["errors"][s],
                         "ops_per_sec": round((r + w) / width, 1) if width > 0 else 0.0,
                         "p50": rounded(p50), "p95": rounded(p95), "p99": rounded(p99)})
    el = max(elapsed, 1e-9)
    return {
        "elapsed": round(elapsed, 3),
        "ops": ops,
        "ops_per_sec": round(ops / el, 1),
        "reads": counts["read"],
        "reads_per_sec": round(counts["read"] / el, 1),
        "writes": counts["write"],
        "writes_per_sec": round(counts["write"] / el, 1),
        "not_found": m["not_found"],
        "errors": errors,
        "error_kinds": dict(m["err_kinds"]),
        "error_samples": m["err_sample"],
        "latency_ms": latency,
        "timeline": timeline,
    }


def print_report(rep: dict) -> None:
    """The report as a table for a terminal."""
    p = click.echo
    cfg = rep["config"]
    p(f"kvbench load: {cfg['clients']} clients (processes), {rep['elapsed']:g} s measured after "
      f"{cfg['warmup']:g} s warm-up; read ratio {cfg['read_ratio']:g}, {cfg['keys']} keys, "
      f"{cfg['value_size']} B values, {cfg['consistency']} reads"
      + (f"; {cfg['pipeline']} requests in flight per client" if cfg.get("pipeline", 1) > 1 else ""))
    p(f"servers: {','.join(cfg['servers'])}")
    p(f"  ops      {rep['ops']:>10}  {rep['ops_per_sec']:>10.1f} ops/s")
    p(f"  reads    {rep['reads']:>10}  {rep['reads_per_sec']:>10.1f} /s" +
      (f"   ({rep['not_found']} not found)" if rep["not_found"] else ""))
    p(f"  writes   {rep['writes']:>10}  {rep['writes_per_sec']:>10.1f} /s")
    p(f"  errors   {rep['errors']:>10}" +
      (("   " + ", ".join(f"{k}: {v}" for k, v in sorted(rep["error_kinds"].items()))) if rep["errors"] else ""))
    for k, v in rep["error_samples"].items():
        p(f"    e.g. {k}: {v}")
    lat = rep["latency_ms"]
    rows = [op for op in OPS if lat[op]["count"]]
    if len(rows) > 1:
        rows.append("all")
    if rows:
        p(f"  latency ms {'p50':>9} {'p95':>9} {'p99':>9} {'max':>9} {'mean':>9}")
    for op in rows:
        d = lat[op]
        p(f"  {op:<10} " + " ".join(f"{d[f]:>9.2f}" for f in ("p50", "p95", "p99", "max", "mean")))


def plot(path: str, rep: dict) -> None:
    """Throughput and latency over time, drawn into the PNG ``path`` (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = rep["timeline"]
    t = [row["t"] + row["seconds"] for row in tl]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    cfg = rep["config"]
    fig.suptitle(f"kvbench load: {cfg['clients']} clients, read ratio {cfg['read_ratio']:g}, "
                 f"{cfg['value_size']} B values, {cfg['consistency']} reads")
    ax1.plot(t, [row["ops_per_sec"] for row in tl], marker=".", label="total")
    if rep["reads"] and rep["writes"]:
        ax1.plot(t, [row["reads"] / row["seconds"] for row in tl], marker=".", label="reads")
        ax1.plot(t, [row["writes"] / row["seconds"] for row in tl], marker=".", label="writes")
    if rep["errors"]:
        ax1.plot(t, [row["errors"] / row["seconds"] for row in tl], marker="x", label="errors")
    ax1.set_ylabel("operations / s")
    ax1.set_ylim(bottom=0)
    ax1.grid(True, alpha=0.3)
    ax1.legend(loc="lower right")
    for q in ("p50", "p95", "p99"):
        ax2.plot(t, [row[q] if row[q] is not None else float("nan") for row in tl], marker=".", label=q)
    ax2.set_ylabel("latency (ms)")
    ax2.set_xlabel("time (s)")
    ax2.set_ylim(bottom=0)
    ax2.grid(True, alpha=0.3)
    ax2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
