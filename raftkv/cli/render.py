"""How kvclient shows the server's documents to a person (``--json`` prints them as they are).

Values read as JSON would spell them (``null``, ``true``, ``false``) rather than Python's
``None``/``True``, and a duration or size carries its unit, so ``last_contact=7.641s``
cannot be misread as milliseconds.
"""
from __future__ import annotations

import json
from typing import Any

# Fields whose name does not say their unit: seconds since the leader last heard from a member.
SECONDS_FIELDS = frozenset({"last_contact"})
# Name suffixes that do (Prometheus style, as new status fields are named): shown with the unit.
SUFFIX_UNITS = (("_seconds", "s"), ("_ms", "ms"), ("_bytes", " B"))


def show(value: Any, key: str = "") -> str:
    """One value for a human: nulls and booleans as in JSON, durations with their unit."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if key in SECONDS_FIELDS:
            return f"{value:.3f}s"
        for suffix, unit in SUFFIX_UNITS:
            if key.endswith(suffix):
                return f"{value:g}{unit}"
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


MEMBER_FIELDS = ("id", "addr", "client", "http", "voter")


def member_line(m: dict) -> str:
    """``ID ADDR client=... http=... voter|learner`` and then any other field as key=value.

    An empty address (a node without an HTTP gateway) is shown as null.
    """
    base = [str(m.get("id", "?")), show(m.get("addr") or None), f"client={show(m.get('client') or None)}",
            f"http={show(m.get('http') or None)}", "voter" if m.get("voter", True) else "learner"]
    return " ".join(base + [f"{k}={show(v, k)}" for k, v in m.items() if k not in MEMBER_FIELDS])


STATUS_ORDER = ("id", "state", "term", "leader_id", "commit_index", "applied_index",
                "last_log_index", "snapshot_index", "first_log_index")


def status_text(st: dict) -> str:
    """The status document as ``key: value`` lines, the docs/architecture.md 6 fields first, members last."""
    keys = [k for k in STATUS_ORDER if k in st] + [k for k in st if k not in STATUS_ORDER and k != "members"]
    lines = [f"{k}: {show(st[k], k)}" for k in keys]
    if "members" in st:
        lines.append("members:")
        lines += ["  " + member_line(m) for m in st["members"] if isinstance(m, dict)]
    return "\n".join(lines) + "\n"
