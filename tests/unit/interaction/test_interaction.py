"""Runs every scenario file in testdata/ through the interaction environment.

A failure shows the diff between the expected output in the file and what the core printed;
``REWRITE=1 python -m pytest tests/unit/interaction`` regenerates the files (read the diff
before committing it: a wrong expected file is a defect).
"""
from __future__ import annotations

import pathlib

import pytest

from .datadriven import run_file
from .env import InteractionEnv

TESTDATA = pathlib.Path(__file__).parent / "testdata"
FILES = sorted(TESTDATA.glob("*.txt"))


def test_there_are_scenarios():
    assert FILES, f"no scenario files in {TESTDATA}"


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_scenario(path: pathlib.Path):
    env = InteractionEnv()
    run_file(str(path), env.handle)
