"""kvnode's log records: the node id on every line, text or JSON."""
import io
import json
import logging

import pytest

from raftkv.cli.node_logging import LogFormat, setup_logging


@pytest.fixture
def restore_root_logging():
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_json_lines_carry_time_level_node_logger_message(restore_root_logging):
    out = io.StringIO()
    field = setup_logging("info", LogFormat.JSON, stream=out)
    field.node = "node2"  # named once the configuration is loaded
    logging.getLogger("storage.snapshot").info("saved snapshot %s", "snap-1")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logging.getLogger("actors").exception("failed")
    logging.getLogger("x").debug("hidden below INFO")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # a traceback stays inside its record's one line
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"time", "level", "node", "logger", "message"}
    assert (first["level"], first["node"], first["logger"], first["message"]) == \
        ("INFO", "node2", "storage.snapshot", "saved snapshot snap-1")
    assert first["time"].endswith("+00:00")
    assert second["node"] == "node2" and "boom" in second["exception"]


def test_text_lines_name_the_node_even_for_other_libraries(restore_root_logging):
    out = io.StringIO()
    setup_logging("debug", LogFormat.TEXT, node="node1", stream=out)
    logging.getLogger("raftkv.wire.http").info("HTTP gateway listening on 127.0.0.1:8001")
    logging.getLogger("pykka").warning("a library's line")
    logging.getLogger("pykka").info("pykka below WARNING is hidden")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert all(" [node1] " in line for line in lines)
    assert lines[0].endswith("INFO [node1] raftkv.wire.http: HTTP gateway listening on 127.0.0.1:8001")
