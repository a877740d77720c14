"""A small, dependency-free reader and runner for data-driven test files (the format of
cockroachdb/datadriven, as etcd-io/raft uses it).

A file is a sequence of test cases separated by blank lines; lines starting with ``#`` are
comments. A case is::

    command arg1 key=value key=(a,b)
    optional input lines
    ----
    expected output (no blank lines; the case ends at the first blank line or end of file)

The runner hands each case to a handler and compares the handler's output with the expected
block. With the environment variable ``REWRITE=1`` it instead writes the actual outputs back
into the file, leaving commands and comments untouched, so a change of behaviour shows up as a
diff of the file under version control.
"""
from __future__ import annotations

import difflib
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Callable, Optional

SEPARATOR = "----"


@dataclass(frozen=True)
class CmdArg:
    """One argument: ``key`` alone (a positional argument) or ``key=value`` / ``key=(v1,v2)``."""

    key: str
    vals: tuple = ()

    def value(self) -> str:
        """The single value of a ``key=value`` argument."""
        if len(self.vals) != 1:
            raise ValueError(f"argument {self.key!r} needs exactly one value, has {list(self.vals)}")
        return self.vals[0]


@dataclass
class TestCase:
    """One case of a file: where it is, what to run and what it should print."""

    __test__ = False  # not a pytest class

    line: int  # 1-based line of the command
    cmd: str
    args: list
    input: list  # further lines before the separator
    expected: str
    # Position of the expected block in the file's lines: [start, end) (for rewriting).
    expected_span: tuple = field(default=(0, 0))


_ARG = re.compile(r"""([^\s=()]+)(?:=(\([^)]*\)|\S+))?""")


def parse_line(line: str) -> tuple:
    """Split a command line into (command, [CmdArg]). Values in parentheses are lists,
    separated by commas or spaces: ``voters=(1,2,3)`` or ``voters=(1 2 3)``."""
    line = line.strip()
    if not line:
        raise ValueError("empty command line")
    head, _, rest = line.partition(" ")
    args = []
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        if rest[pos].isspace():
            pos += 1
            continue
        m = _ARG.match(rest, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot parse arguments at {rest[pos:]!r} in {line!r}")
        key, val = m.group(1), m.group(2)
        if val is None:
            args.append(CmdArg(key))
        elif val.startswith("("):
            inner = val[1:-1].replace(",", " ")
            args.append(CmdArg(key, tuple(shlex.split(inner))))
        else:
            args.append(CmdArg(key, (val,)))
        pos = m.end()
    return head, args


def parse(text: str) -> list:
    """All test cases of a file's text."""
    lines = text.split("\n")
    cases = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        start = i
        cmd, args = parse_line(line)
        i += 1
        inp = []
        while i < len(lines) and lines[i].strip() != SEPARATOR:
            if not lines[i].strip():
                raise ValueError(f"line {start + 1}: command {cmd!r} has no {SEPARATOR} line")
            inp.append(lines[i])
            i += 1
        if i >= len(lines):
            raise ValueError(f"line {start + 1}: command {cmd!r} has no {SEPARATOR} line")
        i += 1  # the separator
        exp_start = i
        while i < len(lines) and lines[i].strip():
            i += 1
        expected = "\n".join(lines[exp_start:i])
        cases.append(TestCase(start + 1, cmd, args, inp, expected, (exp_start, i)))
    return cases


def run_file(path: str, handler: Callable[[TestCase], str], rewrite: Optional[bool] = None) -> None:
    """Run every case of ``path`` through ``handler``; raise AssertionError with a diff at the first
    mismatch, or (``rewrite``, default from the REWRITE environment variable) rewrite the file."""
    if rewrite is None:
        rewrite = os.environ.get("REWRITE", "") not in ("", "0")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    cases = parse(text)
    lines = text.split("\n")
    outputs = []
    for case in cases:
        actual = handler(case).rstrip("\n")
        if not actual:
            actual = "ok"
        if any(not ln.strip() for ln in actual.split("\n")):
            raise AssertionError(f"{path}:{case.line}: output contains a blank line, which this format cannot hold")
        if not rewrite and actual != case.expected:
            diff = "\n".join(difflib.unified_diff(case.expected.split("\n"), actual.split("\n"),
                                                  "expected", "actual", lineterm=""))
            raise AssertionError(f"{path}:{case.line}: output of {case.cmd!r} differs "
                                 f"(REWRITE=1 regenerates the file):\n{diff}")
        outputs.append(actual)
    if rewrite:
        # Replace expected blocks from the end so earlier spans stay valid.
        for case, out in reversed(list(zip(cases, outputs, strict=True))):
            a, b = case.expected_span
            lines[a:b] = out.split("\n")
        new = "\n".join(lines)
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
