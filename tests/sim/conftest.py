"""Report what the simulation's seeds exercised (tests/sim/test_sim.py collects it)."""
from __future__ import annotations


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    import sys

    mod = sys.modules.get("tests.sim.test_sim")
    totals = getattr(mod, "TOTALS", None)
    if not totals or not totals.get("seeds"):
        return
    n = totals["seeds"]
    parts = [f"{f} {totals['seeds:' + f]}/{n} seeds ({totals[f]} in all)" for f in mod.COVERAGE_FIELDS]
    terminalreporter.write_sep("-", f"simulation coverage over {n} passing seeds")
    terminalreporter.write_line("; ".join(parts))
