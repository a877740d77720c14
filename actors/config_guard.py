"""A follower's check of the configuration entries a leader sends it (issue 11).

On a secure cluster every member, voter or learner, is let in at the peer door by its CURVE
public key, which the replicated configuration carries. A configuration in which a member has
no key (or a malformed one) would lock that member out, or, were a future door to treat a
missing key as "anyone", let anyone in: an honest leader never proposes one (actors/leader.py
refuses a keyless join), so a follower that receives one is talking to a buggy or hostile
member. It refuses the whole append (appends nothing, acknowledges nothing) instead of adopting
such a configuration: the configuration is effective as soon as it is appended (thesis 4.1).

A cluster is secure when its current configuration carries keys; a cluster made without
--secure has none, and there this check allows everything, as before.
"""
from __future__ import annotations

from typing import Iterable, Optional

from raftkv.records import DecodeError, Entry, EntryKind

# The Z85 alphabet (ZeroMQ RFC 32): a CURVE public key is 40 of these characters.
_Z85 = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")
Z85_KEY_LEN = 40


def well_formed_key(key: object) -> bool:
    """Whether ``key`` is a CURVE public key in Z85 text (40 characters of the alphabet)."""
    return type(key) is str and len(key) == Z85_KEY_LEN and all(c in _Z85 for c in key)


def is_secure(members: Iterable) -> bool:
    """Whether a configuration is a secure cluster's: some member carries a CURVE key."""
    return any(getattr(m, "curve_key", "") for m in members)


def keyless_config(current: list, entries: Iterable[Entry], decode) -> Optional[str]:
    """Why ``entries`` must not be appended under the configuration ``current`` (None: they may).
    ``decode`` turns a CONFIG entry's data into its members (RaftCore's decode_config)."""
    if not is_secure(current):
        return None
    for e in entries:
        if e.kind != EntryKind.CONFIG:
            continue
        try:
            members = decode(e.data)
        except (DecodeError, ValueError, TypeError) as err:
            return f"a configuration entry of term {e.term} does not decode ({err})"
        bad = [m.id for m in members if not well_formed_key(getattr(m, "curve_key", ""))]
        if bad:
            return (f"a configuration entry of term {e.term} lists {', '.join(sorted(bad)[:8])} without a valid "
                    f"CURVE key, on a secure cluster")
    return None
