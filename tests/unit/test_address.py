"""The one address parser (wire/address.py) and its users: config, client, HTTP bind, ZeroMQ."""
import pytest

from raftkv.config import ConfigError, load_config
from raftkv.wire.address import (Address, AddressError, advertise, normalize_address, parse_address, parse_bind,
                                 zmq_endpoint)
from raftkv.wire.client import Client, InvalidRequest, parse_servers


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9001", Address("127.0.0.1", 9001)),
    (" host-1.example.com:9001 ", Address("host-1.example.com", 9001)),
    ("localhost:65535", Address("localhost", 65535)),
    ("[::1]:9001", Address("[::1]", 9001)),
    (":8001", Address("0.0.0.0", 8001)),  # empty host: all interfaces
    ("*:8001", Address("0.0.0.0", 8001)),
])
def test_good_addresses(text, expected):
    assert parse_address(text) == expected
    assert str(parse_address(text)) == str(expected)


@pytest.mark.parametrize("text, why", [
    ("9001", "expected HOST:PORT"),
    ("127.0.0.1:", "port '' is not a number"),
    ("127.0.0.1:http", "port 'http' is not a number"),
    ("127.0.0.1:0", "port 0 is not in 1..65535"),
    ("127.0.0.1:65536", "port 65536 is not in 1..65535"),
    ("127.0.0.1:-1", "port '-1' is not a number"),
    ("::1:9001", "put an IPv6 host in brackets"),
    ("tcp://127.0.0.1:9001", "without a scheme"),
    ("bad_host!:9001", "bad host 'bad_host!'"),
    (9001, "expected HOST:PORT"),
])
def test_bad_addresses_say_what_is_wrong(text, why):
    with pytest.raises(AddressError, match="bad address") as e:
        parse_address(text)
    assert why in str(e.value)
    assert isinstance(e.value, ValueError)


def test_ipv6_host_for_sockets_has_no_brackets():
    a = parse_address("[::1]:80")
    assert a.is_ipv6 and a.bare_host == "::1"
    assert parse_bind("[::1]:80") == ("::1", 80)


def test_listening_forms():
    assert normalize_address(":8001") == "0.0.0.0:8001"
    assert advertise(":9001") == "127.0.0.1:9001"
    assert advertise("[::]:9001") == "[::1]:9001"
    assert zmq_endpoint("127.0.0.1:9001") == "tcp://127.0.0.1:9001"
    assert zmq_endpoint(":9001") == "tcp://0.0.0.0:9001"


def test_http_bind_allows_port_zero_and_names_itself():
    assert parse_bind(":8001") == ("0.0.0.0", 8001)
    assert parse_bind("127.0.0.1:0") == ("127.0.0.1", 0)
    with pytest.raises(ValueError, match=r"bad HTTP address '8001': expected HOST:PORT"):
        parse_bind("8001")


def test_port_zero_only_where_allowed():
    with pytest.raises(AddressError, match="port 0 is not in 1..65535"):
        parse_address("127.0.0.1:0")
    assert parse_address("127.0.0.1:0", port_zero=True).port == 0


def test_a_client_needs_a_host_to_connect_to():
    with pytest.raises(InvalidRequest, match=r"bad server address ':5001': no host"):
        parse_servers(":5001")
    with pytest.raises(InvalidRequest, match=r"bad server address '127.0.0.1:0': port 0"):
        Client(["127.0.0.1:0"])
    assert parse_servers("tcp://127.0.0.1:5001, [::1]:5002,127.0.0.1:5001") == ["127.0.0.1:5001", "[::1]:5002"]


def test_config_and_flags_use_the_same_rules(tmp_path):
    with pytest.raises(ConfigError, match=r"--http: bad address '127.0.0.1:http': port 'http' is not a number"):
        load_config(None, None, {"id": "n1", "addr": "127.0.0.1:9001", "http": "127.0.0.1:http", "bootstrap": True})
    cfg = load_config(None, None, {"id": "n1", "addr": "[::1]:9001", "http": ":8001", "bootstrap": True})
    assert (cfg.addr, cfg.http) == ("[::1]:9001", "0.0.0.0:8001")
