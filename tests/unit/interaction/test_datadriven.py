"""The data-driven file format: parsing, comparison, and rewriting (REWRITE=1)."""
from __future__ import annotations

import pytest

from .datadriven import CmdArg, parse, parse_line, run_file

FILE = """# a comment
echo a b=1 c=(x,y) d=(p q)
----
old output

# another
echo z
more input
----
"""


def test_parse_line_splits_positional_and_list_arguments():
    cmd, args = parse_line("add-nodes 3 voters=(1,2,3) learners=(4 5) index=2")
    assert cmd == "add-nodes"
    assert args == [CmdArg("3"), CmdArg("voters", ("1", "2", "3")), CmdArg("learners", ("4", "5")),
                    CmdArg("index", ("2",))]


def test_parse_finds_cases_with_input_lines_and_expected_blocks():
    cases = parse(FILE)
    assert [(c.line, c.cmd, c.input, c.expected) for c in cases] == [
        (2, "echo", [], "old output"),
        (7, "echo", ["more input"], ""),
    ]


def echo(case) -> str:
    return " ".join([case.cmd] + [a.key for a in case.args] + case.input)


def test_a_mismatch_fails_with_a_diff_naming_the_line(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text(FILE)
    with pytest.raises(AssertionError, match=r"t.txt:2: output of 'echo' differs") as e:
        run_file(str(p), echo, rewrite=False)
    assert "-old output" in str(e.value) and "+echo a b c d" in str(e.value)


def test_rewrite_replaces_only_expected_blocks_and_then_the_file_passes(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text(FILE)
    run_file(str(p), echo, rewrite=True)
    assert p.read_text() == FILE.replace("old output", "echo a b c d").replace(
        "more input\n----\n", "more input\n----\necho z more input\n")
    run_file(str(p), echo, rewrite=False)


def test_a_command_without_separator_is_an_error():
    with pytest.raises(ValueError, match="no ----"):
        parse("echo a\n\n")
