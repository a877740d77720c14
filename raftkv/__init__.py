"""raftkv: a Raft-replicated key-value store on ZeroMQ and Pykka actors, with its log in RocksDB.

The public client is re-exported here::

    from raftkv import Client
    with Client(["127.0.0.1:5001", "127.0.0.1:5002", "127.0.0.1:5003"]) as kv:
        kv.put("hello", b"world")

Importing this package loads only the client library (pyzmq and msgpack); the node
(``raftkv.actors``, ``raftkv.storage``) is imported by ``kvnode`` alone.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

_CLIENT_NAMES = ("Client", "ClientError", "NotFound", "Unavailable", "Timeout", "InvalidRequest", "Refused",
                 "NotAuthorized", "Compacted")

__all__ = ["__version__", *_CLIENT_NAMES]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``import raftkv.actors.core`` (the simulation) does not pull in pyzmq.
    if name in _CLIENT_NAMES:
        from .wire import client

        return getattr(client, name)
    raise AttributeError(f"module 'raftkv' has no attribute {name!r}")
