"""The local cluster of the failover, snapshot and elections benchmarks: the integration tests'
harness (real kvnode processes on 127.0.0.1, free ports, a whole-cluster file), with what a
benchmark adds: its own process sessions, status Clients kept between polls, BenchError instead
of test assertions, and reading figures back from the node logs."""
from __future__ import annotations

import re
import time
from typing import Any, Callable, Optional

from raftkv.wire.client import ClientError
from tests.integration.harness import Cluster

from .common import BenchError


class BenchCluster(Cluster):
    """A :class:`tests.integration.harness.Cluster` run by a benchmark (see the module docstring)."""

    id_prefix = "kvbench"
    new_session = True
    reuse_status_clients = True
    STATUS_TIMEOUT = 0.5  # a poll must not hold up the benchmark's clock for long

    @property
    def ids(self) -> list:
        return list(self.nodes)

    def status_or_none(self, nid: str) -> Optional[dict]:
        """The node's status, or None if it is down or does not answer in time."""
        node = self.nodes[nid]
        if not node.alive():
            return None
        try:
            return node.status(self.STATUS_TIMEOUT)
        except ClientError:
            return None

    def statuses(self) -> dict:
        return {nid: st for nid in self.ids if (st := self.status_or_none(nid)) is not None}

    def check_exits(self) -> None:
        """BenchError if a node exited other than by our kill -9 (a crash, a refusal to start)."""
        for nid, rc in self.exited().items():
            raise BenchError(f"{nid} exited with status {rc}; see {self.nodes[nid].log_path}")

    def wait_leader_status(self, timeout: float, min_term: int = 0) -> dict:
        """The status of the leader (in a term >= ``min_term``), polled until ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_exits()
            st = self.leader_status(min_term=min_term)
            if st is not None:
                return st
            time.sleep(0.05)
        raise BenchError(f"no leader after {timeout:g} s; logs in {self.dir}")

    def wait_for(self, what: str, nid: str, deadline: float, cond: Callable[[], Any],
                 interval: float = 0.05) -> Any:
        """Poll ``cond`` until truthy; BenchError with the tail of ``nid``'s log at ``deadline``."""
        while True:
            self.check_exits()
            v = cond()
            if v:
                return v
            if time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for {what}; last lines of {nid}'s log:\n{self.log_tail(nid)}")
            time.sleep(interval)

    # ------------------------------------------------------------ figures from the node logs

    def log_tail(self, nid: str, n: int = 20) -> str:
        return "\n".join(self.nodes[nid].log_text().splitlines()[-n:])

    def log_size(self, nid: str) -> int:
        """The log's size in bytes: a mark to search from later."""
        try:
            return self.nodes[nid].log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_since(self, nid: str, since: int) -> str:
        try:
            with open(self.nodes[nid].log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_find(self, nid: str, since: int, pattern: str) -> Optional[tuple]:
        """The groups of the first match of ``pattern`` in the node's log after byte ``since``."""
        m = re.search(pattern, self._log_since(nid, since))
        return m.groups() if m else None

    def log_findall(self, nid: str, since: int, pattern: str) -> list:
        """Every match of ``pattern`` in the node's log after byte ``since``."""
        return re.findall(pattern, self._log_since(nid, since))

    def snapshot_file_size(self, nid: str, index: int) -> Optional[int]:
        """Size in bytes of the node's snapshot file at ``index``, if it is there."""
        d = self.data_dir / nid / "snapshots"
        try:
            for f in d.iterdir():
                if f.name.startswith(f"snap-{index:020d}-") and f.name.endswith(".snap"):
                    return f.stat().st_size
        except FileNotFoundError:
            pass
        return None
