"""kvbench, the development benchmarks, run from a checkout: ``bin/kvbench`` (see kvbench.py)."""
