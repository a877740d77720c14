"""Issue 11's configuration keys: ``secure`` (--secure) and ``join_token`` (--token, $KV_JOIN_TOKEN)."""
import pytest
import yaml

from raftkv.config import ConfigError, load_config


def test_flags_and_file_keys(tmp_path):
    cfg = load_config(None, None, {"id": "n1", "addr": "127.0.0.1:9001", "bootstrap": True, "secure": True})
    assert cfg.secure and cfg.join_token is None
    cfg = load_config(None, None, {"id": "n2", "addr": "127.0.0.1:9002", "join": "127.0.0.1:9001",
                                   "join_token": "kvj1_x"})
    assert not cfg.secure and cfg.join_token == "kvj1_x"
    f = tmp_path / "n2.yaml"
    f.write_text(yaml.safe_dump({"id": "n2", "addr": "127.0.0.1:9002", "join": "127.0.0.1:9001",
                                 "join_token": "kvj1_y", "secure": True}))
    cfg = load_config(str(f))
    assert cfg.secure and cfg.join_token == "kvj1_y"
    assert load_config(str(f), None, {"join_token": "kvj1_z"}).join_token == "kvj1_z"  # the flag wins


def test_bad_values_name_the_key(tmp_path):
    f = tmp_path / "n1.yaml"
    f.write_text(yaml.safe_dump({"id": "n1", "addr": "127.0.0.1:9001", "secure": "yes"}))
    with pytest.raises(ConfigError, match="secure"):
        load_config(str(f))
    f.write_text(yaml.safe_dump({"id": "n1", "addr": "127.0.0.1:9001", "join_token": 5}))
    with pytest.raises(ConfigError, match="join_token"):
        load_config(str(f))
