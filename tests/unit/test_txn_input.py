"""What users type for a transaction: kvclient's etcdctl-style script, the HTTP JSON body and the
library's builders all give the same typed Txn, and a mistake is a clear error naming it."""
from __future__ import annotations

import json

import pytest

from raftkv import txn as t
from raftkv.cli.txn_script import ScriptError, parse_script
from raftkv.records import Compare, Txn, TxnOp
from raftkv.wire.http_server import HttpError
from raftkv.wire.http_txn import parse_txn_body

EXPECTED = Txn([Compare("value", "=", "k", b"v"), Compare("mod", ">", "k", None, 5)],
               [TxnOp("put", "k", b"new value"), TxnOp("get", "other")], [TxnOp("delete", "k")])


def test_the_three_ways_of_writing_a_txn_agree():
    script = 'value("k") = "v"\nmod("k") > "5"\n\nput k "new value"\nget other\n\ndel k\n'
    body = {"compare": [{"target": "value", "key": "k", "result": "=", "value": "v"},
                        {"target": "mod", "key": "k", "result": ">", "number": 5}],
            "success": [{"op": "put", "key": "k", "value": "new value"}, {"op": "get", "key": "other"}],
            "failure": [{"op": "delete", "key": "k"}]}
    built = t.build([t.value("k") == "v", t.mod("k") > 5], [t.put("k", b"new value"), t.get("other")],
                    [t.delete("k")])
    assert parse_script(script) == parse_txn_body(json.dumps(body).encode()) == built == EXPECTED


def test_a_script_may_leave_sections_empty():
    assert parse_script('version("a") = 0\n\n\nget a\n') == Txn([Compare("version", "=", "a", None, 0)], [],
                                                                 [TxnOp("get", "a")])


@pytest.mark.parametrize("script,word", [
    ('value(k) = "v"\n', "line 1: not a compare"),
    ('mod("k") > "x"\n', "non-negative number"),
    ('value("k") = "v"\n\nupsert k v\n', "line 3: not an op"),
    ('value("k") = "v"\n\nput k\n', "line 3"),
    ('\n\n\nget a\n\nget b\n', "more than three sections"),
])
def test_script_mistakes_name_the_line(script, word):
    with pytest.raises(ScriptError, match=word):
        parse_script(script)


@pytest.mark.parametrize("body,word", [
    (b"not json", "not JSON"),
    (b'{"compare": [], "then": []}', "unknown field 'then'"),
    (b'{"compare": [{"target": "lease", "key": "k", "result": "="}]}', "target must be"),
    (b'{"compare": [{"target": "mod", "key": "k", "result": "=", "number": -1}]}', "integer >= 0"),
    (b'{"compare": [{"target": "value", "key": "k", "result": "~", "value": "v"}]}', "result must be"),
    (b'{"success": [{"op": "put", "key": "k"}]}', "needs value"),
    (b'{"success": [{"op": "get", "key": "k", "value": "x"}]}', "takes no value"),
    (b'{"failure": [{"op": "delete", "key": ""}]}', "key must be"),
    (b'{"failure": [{"op": "put", "key": "k", "value_b64": "!!"}]}', "not valid base64"),
])
def test_bad_http_bodies_are_400_naming_the_problem(body, word):
    with pytest.raises(HttpError) as e:
        parse_txn_body(body)
    assert e.value.code == 400 and word in e.value.message


def test_builders_refuse_the_wrong_kinds():
    with pytest.raises(TypeError):
        t.version("k") == "1"  # noqa: B015  a number compare needs an int
    with pytest.raises(TypeError):
        t.build(["value(k) = v"])
