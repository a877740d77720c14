"""Config keys of the secure HTTP gateway: tls_cert, tls_key (also flags) and metrics_open."""
import pytest

from raftkv.config import ConfigError, load_config
from tests.unit.test_config import CLUSTER, NODE, error_of, write


def test_defaults_none_and_closed(tmp_path):
    cfg = load_config(write(tmp_path, NODE))
    assert (cfg.tls_cert, cfg.tls_key, cfg.metrics_open) == (None, None, False)


def test_from_node_file_and_whole_cluster_file(tmp_path):
    cfg = load_config(write(tmp_path, NODE + "tls_cert: /etc/kv/crt.pem\ntls_key: /etc/kv/key.pem\nmetrics_open: true\n"))
    assert (cfg.tls_cert, cfg.tls_key, cfg.metrics_open) == ("/etc/kv/crt.pem", "/etc/kv/key.pem", True)
    cfg = load_config(write(tmp_path, "metrics_open: true\n" + CLUSTER), "b")
    assert cfg.metrics_open is True


def test_flags_win_over_the_file(tmp_path):
    path = write(tmp_path, NODE + "tls_cert: /a.crt\ntls_key: /a.key\n")
    cfg = load_config(path, None, {"tls_cert": "/b.crt", "tls_key": "/b.key"})
    assert (cfg.tls_cert, cfg.tls_key) == ("/b.crt", "/b.key")
    cfg = load_config(None, None, {"id": "n", "addr": "127.0.0.1:9001", "tls_cert": "~/c.crt", "tls_key": "/c.key"})
    assert cfg.tls_cert.endswith("/c.crt") and not cfg.tls_cert.startswith("~")


def test_cert_and_key_go_together(tmp_path):
    assert "tls_cert and tls_key go together" in error_of(write(tmp_path, NODE + "tls_cert: /a.crt\n"))
    with pytest.raises(ConfigError, match="go together"):
        load_config(None, None, {"id": "n", "addr": "127.0.0.1:9001", "tls_key": "/c.key"})


@pytest.mark.parametrize("line, msg", [("metrics_open: 1\n", "metrics_open must be true or false"),
                                       ("tls_cert: ''\ntls_key: /k\n", "tls_cert must be a non-empty string")])
def test_bad_values_are_named(tmp_path, line, msg):
    assert msg in error_of(write(tmp_path, NODE + line))
