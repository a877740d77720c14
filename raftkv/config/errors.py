"""The one error type of configuration loading, and how a bad value is shown in it."""
from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """A bad configuration, as one line naming the file (or the flag) and the key.

    Example: ``configs/x.yaml: unknown key 'raft.heartbeat' (known: heartbeat_ms, ...)``.
    """


def show_value(v: Any) -> str:
    """A short rendering of a bad value for an error line (YAML's words: null, a list)."""
    if v is None:
        return "null"
    if isinstance(v, (dict, list, tuple)):
        return "a mapping" if isinstance(v, dict) else "a list"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."
