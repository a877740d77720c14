"""The transaction script ``kvclient txn`` reads from stdin: etcdctl's interactive syntax.

Three sections separated by a blank line: compares, success ops, failure ops (a missing
section is empty). Lines starting with ``#`` are ignored.

    value("k") = "v"          # target("key") OP "operand"; OP is =, !=, < or >
    mod("k") > "5"            # targets: value (bytes), version, create, mod (numbers)

    put k "new value"         # put KEY VALUE / del KEY / get KEY (shell-style quoting)
    get other

    get k

Operands are double-quoted JSON strings, as etcdctl writes them; a number operand may also be
written bare (``version("k") = 0``).
"""
from __future__ import annotations

import json
import re
import shlex

from raftkv import txn as t
from raftkv.records import Compare, Txn, TxnOp

_COMPARE = re.compile(r'\s*(value|version|create|mod)\s*\(\s*("(?:[^"\\]|\\.)*")\s*\)\s*(!=|=|<|>)\s*(.+?)\s*\Z')
_TARGETS = {"value": t.value, "version": t.version, "create": t.create, "mod": t.mod}


class ScriptError(ValueError):
    """A line of the script that is not a compare or an op; the message names the line."""


def _json_str(text: str, what: str, n: int) -> str:
    try:
        v = json.loads(text)
    except ValueError:
        raise ScriptError(f"line {n}: {what} must be a double-quoted string, got {text}") from None
    if not isinstance(v, (str, int)) or isinstance(v, bool):
        raise ScriptError(f"line {n}: {what} must be a double-quoted string, got {text}")
    return str(v)


def parse_compare(line: str, n: int) -> Compare:
    """One compare line."""
    m = _COMPARE.match(line)
    if m is None:
        raise ScriptError(f'line {n}: not a compare (expected e.g. value("k") = "v" or mod("k") > "5"): {line}')
    target, key_text, op, operand_text = m.groups()
    key = _json_str(key_text, "the key", n)
    operand = _json_str(operand_text, "the operand", n)
    side = _TARGETS[target](key)
    arg: object = operand
    if target != "value":
        if not operand.isdigit():
            raise ScriptError(f"line {n}: {target}() compares with a non-negative number, got {operand_text}")
        arg = int(operand)
    try:
        if op == "=":
            return side == arg
        if op == "!=":
            return side != arg
        return side < arg if op == "<" else side > arg
    except TypeError as e:
        raise ScriptError(f"line {n}: {e}") from None


def parse_op(line: str, n: int) -> TxnOp:
    """One op line: ``put KEY VALUE``, ``del KEY`` or ``get KEY``."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise ScriptError(f"line {n}: {e}: {line}") from None
    if not words:
        raise ScriptError(f"line {n}: empty op")
    verb, args = words[0].lower(), words[1:]
    try:
        if verb == "put" and len(args) == 2:
            return t.put(args[0], args[1])
        if verb in ("del", "delete") and len(args) == 1:
            return t.delete(args[0])
        if verb == "get" and len(args) == 1:
            return t.get(args[0])
    except TypeError as e:
        raise ScriptError(f"line {n}: {e}") from None
    raise ScriptError(f"line {n}: not an op (expected put KEY VALUE, del KEY or get KEY): {line}")


def parse_script(text: str) -> Txn:
    """The transaction a whole script describes: as etcdctl reads it, each blank line ends a
    section (so a script starting with a blank line has no compares)."""
    sections: list[list[tuple[int, str]]] = [[], [], []]
    sec = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#"):
            continue
        if not line:
            sec += 1
            continue
        if sec > 2:
            raise ScriptError(f"line {n}: more than three sections (compares, success ops, failure ops)")
        sections[sec].append((n, line))
    return Txn([parse_compare(line, n) for n, line in sections[0]],
               [parse_op(line, n) for n, line in sections[1]],
               [parse_op(line, n) for n, line in sections[2]])
