"""Fixtures that start real kvnode processes; their logs are printed when a test fails."""
from __future__ import annotations

import pytest

from .harness import Cluster


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def make_cluster(tmp_path, request):
    """Factory: ``make_cluster(n=3, http=False, raft=None)`` -> a started Cluster, stopped after the test."""
    made = []

    def make(n: int = 3, start: bool = True, **kw) -> Cluster:
        c = Cluster(tmp_path / f"c{len(made)}", n=n, **kw)
        made.append(c)
        if start:
            c.start()
        return c

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for c in made:
        c.stop()
        if failed:
            print(c.logs())


@pytest.fixture
def cluster(make_cluster):
    """A started 3-node cluster."""
    return make_cluster(3)
