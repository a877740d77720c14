"""kvnode's log output: every record names its node, as text or as one JSON object a line.

A process runs one node (or, with ``--all``, supervises several), so the node id is a
property of the process's one stderr handler rather than of each call site: a
:class:`NodeField` filter on the handler stamps it on every record that reaches it,
including records of libraries (pykka, rocksdict) and lines whose message does not
carry the id (snapshot saved, HTTP listening). In ``--all``'s merged output each child
names itself and the supervisor's own lines say ``supervisor``.
"""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from enum import Enum
from typing import Optional, TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(node)s] %(name)s: %(message)s"
SUPERVISOR = "supervisor"  # the node field of ``kvnode --all``'s own lines
UNKNOWN_NODE = "-"  # before the configuration has named the node


class LogFormat(str, Enum):
    """``--log-format``: human-readable lines or JSON lines for a log collector."""

    TEXT = "text"
    JSON = "json"


class NodeField(logging.Filter):
    """Sets ``record.node`` to this process's node id (changeable once the config names it)."""

    def __init__(self, node: str = UNKNOWN_NODE) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, node, logger, message.

    A traceback goes into ``exception`` inside the same object, so a record is always
    exactly one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "node": getattr(record, "node", UNKNOWN_NODE),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def level_number(level: str) -> int:
    """``"debug"`` -> ``logging.DEBUG``; unknown names fall back to INFO (config.py validates them)."""
    value = logging.getLevelName(level.upper())
    return value if isinstance(value, int) else logging.INFO


def setup_logging(level: str, fmt: LogFormat, node: str = UNKNOWN_NODE,
                  stream: Optional[TextIO] = None) -> NodeField:
    """Route every record to one stderr handler in ``fmt``; return its node filter so the
    caller can name the node once the configuration is loaded."""
    handler = logging.StreamHandler(stream or sys.stderr)
    field = NodeField(node)
    handler.addFilter(field)
    handler.setFormatter(JsonFormatter() if fmt is LogFormat.JSON else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_number(level))
    logging.getLogger("pykka").setLevel(logging.WARNING)
    return field
