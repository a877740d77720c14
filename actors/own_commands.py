"""The leader applies the Commands it proposed itself instead of decoding their entries again.

Every replica decodes a committed COMMAND entry's payload (``fsm.committed_command``) and applies
the Command it gets. The leader built that payload itself a few milliseconds earlier from a
Command object; decoding it again costs ~1.5-2 us per write on the leader's FSM thread. This
module decides when the leader may apply that object instead, which is safe only if applying it
is indistinguishable from applying what decoding the committed bytes gives on every other node:

1. **The committed bytes are the ones encoded from it.** The leader keeps ``(cmd, payload)``
   with the waiter of the entry's index, and the FSM uses ``cmd`` only if the committed entry's
   data *is* that payload object (identity, not equality). Entries reach the FSM from the
   core's in-memory log without a copy (actors/memlog.py), so an entry that was truncated and
   replaced (a new leader's log), reloaded from disk or received from a peer is a different
   object and is decoded as usual. The waiters die with the Leader role (a term change).
2. **Decoding those bytes gives back an equal Command with the same field types.**
   :func:`round_trips` admits only commands made of the types msgpack gives back unchanged (str,
   bytes, bool, int, None; no subclasses: an ``Op`` member or a bytearray is decoded as a plain
   str or bytes, so such a command is not admitted) and within every bound the decoder
   checks (``Command``'s field checkers in raftkv/records.py); and only put, delete and cas
   (no transaction: its nested records are rebuilt by the decoder). Anything else is decoded.

tests/unit/test_own_commands.py checks (2) against the real codec on generated commands, and the
FSM's results with and without the shortcut.
"""
from __future__ import annotations

from typing import Any

from raftkv.records import INDEX_LIMIT, MAX_ID_BYTES, MAX_KEY_BYTES, MAX_VALUE_BYTES, Command

# Ops whose Command is all plain fields (no txn); each is far below the op name's byte bound.
PLAIN_OPS = frozenset({"put", "delete", "cas"})


def _str_fits(s: str, cap: int) -> bool:
    # the decoder's UTF-8 length rule (records._str_at_most): encode only when length cannot decide
    n = len(s)
    return n <= cap and (n * 4 <= cap or s.isascii() or len(s.encode("utf-8", "surrogatepass")) <= cap)


def round_trips(cmd: Any) -> bool:
    """Whether ``decode_record(encode_record(cmd), Command)`` is a Command equal to ``cmd`` whose
    fields have the same types, accepted by the FSM (see the module docstring). Conservative:
    False means only "decode it as usual"."""
    if type(cmd) is not Command:
        return False
    op, key, value, expected, cid, seq, lease = (cmd.op, cmd.key, cmd.value, cmd.expected, cmd.client_id,
                                                 cmd.seq, cmd.lease)
    return (type(op) is str and op in PLAIN_OPS and cmd.txn is None
            and type(key) is str and _str_fits(key, MAX_KEY_BYTES)
            and type(cid) is str and _str_fits(cid, MAX_ID_BYTES)
            and (value is None or (type(value) is bytes and len(value) <= MAX_VALUE_BYTES))
            and (expected is None or (type(expected) is bytes and len(expected) <= MAX_VALUE_BYTES))
            and type(cmd.expect_absent) is bool
            and type(seq) is int and 0 <= seq < INDEX_LIMIT
            and type(lease) is int and 0 <= lease < INDEX_LIMIT)


def own_command(waiter: Any, data: bytes) -> Any:
    """The Command a leader's waiter ``(term, route, cmd, payload)`` carries for a committed
    entry whose data is ``data``, or None (decode the entry as usual)."""
    if waiter is not None and len(waiter) == 4 and waiter[3] is data:
        return waiter[2]
    return None
