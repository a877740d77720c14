"""What every kvbench command shares: exit statuses, the error that stops a benchmark, the
temporary directory of a benchmark's own cluster, and number formatting."""
from __future__ import annotations

import math
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional

import click

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
KEY_FMT = "k%015d"  # the key space of ``load`` and of the snapshot preload


class BenchError(Exception):
    """The benchmark cannot go on (no leader, a node exited, a deadline passed)."""


def fail(code: int, msg: str) -> NoReturn:
    """Print ``kvbench: error: msg`` on stderr and exit with ``code``."""
    click.echo(f"kvbench: error: {msg}", err=True)
    sys.exit(code)


def rounded(x: Optional[float], nd: int = 3) -> Optional[float]:
    """``x`` rounded for a report; None stays None."""
    return None if x is None else round(x, nd)


def nearest_rank(sorted_vals: list, q: float) -> Optional[float]:
    """Nearest-rank quantile of an ascending list; None when it is empty."""
    if not sorted_vals:
        return None
    return sorted_vals[max(0, min(len(sorted_vals) - 1, math.ceil(q * len(sorted_vals)) - 1))]


def quiet_or_echo(as_json: bool) -> Callable[..., None]:
    """Progress lines go to stdout unless the one JSON object is (it must be alone there)."""
    return (lambda *a, **k: None) if as_json else click.echo


def in_temp_dir(prefix: str, keep_dir: bool, body: Callable[[Path], dict]) -> dict:
    """Run ``body(directory)`` in a fresh temporary directory, removed afterwards unless
    ``keep_dir`` or the run failed; SIGTERM and Ctrl-C end the run (the nodes are killed by the
    body's cleanup). Exits with EXIT_INTERRUPTED or EXIT_FAILED when the run did not finish."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    keep = keep_dir
    code = 0
    try:
        res = body(directory)
    except KeyboardInterrupt:
        click.echo("kvbench: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except BenchError as e:
        click.echo(f"kvbench: error: {e}", err=True)
        keep, code = True, EXIT_FAILED
    except Exception:
        keep = True
        raise
    finally:
        if keep:
            click.echo(f"kvbench: kept {directory} (config, data, node logs)", err=True)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    if code:
        sys.exit(code)
    res["dir"] = str(directory) if keep_dir else None
    return res
