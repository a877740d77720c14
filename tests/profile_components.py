"""Where a node's interpreter time goes, by component, from a py-spy raw profile.

    py-spy record -p <pid> -d 8 -r 250 --gil -f raw -o node.txt   # while a load runs
    python3 tests/profile_components.py node.txt [more.txt ...]

Each sample (only threads holding the GIL, with --gil) is charged to the first component whose
frames appear in its stack, in the order of COMPONENTS; prints each component's share.
"""
from __future__ import annotations

import collections
import sys

COMPONENTS = [
    ("HTTP gateway (asyncio loop: parse, render, socket writes)", ("HttpGateway", "_Connection")),
    ("snapshots (freeze, serialise, write)", ("Snapshotter", "KVState.frozen", "KVState.chunks", "Fsm._snapshot")),
    ("FSM actor (apply, replies)", ("Fsm.",)),
    ("log writer (RocksDB write, WAL sync call)", ("LogWriter", "LogManager", "LogStore")),
    ("role actor: the Raft core", ("RaftCore",)),
    ("role actor: messages, sends, plumbing", ("RoleActor", "Role.", "Leader.", "Follower.", "NodeContext",
                                                "PeerTransport.send_many")),
    ("peer I/O thread (receive, decode)", ("PeerTransport",)),
    ("front door I/O thread", ("FrontDoor",)),
    ("ticker", ("Node._ticker",)),
    ("pykka actor loop (inbox, dispatch)", ("Actor._actor_loop", "ActorRef")),
]


def shares(path: str) -> tuple:
    counts: collections.Counter = collections.Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if not stack or not n.isdigit():
                continue
            total += int(n)
            frames = stack.split(";")
            name = next((label for label, pats in COMPONENTS
                         if any(p in fr for fr in frames for p in pats)), "other")
            counts[name] += int(n)
    return total, counts


def main() -> None:
    for path in sys.argv[1:]:
        total, counts = shares(path)
        print(f"{path}: {total} samples")
        for name, n in counts.most_common():
            print(f"  {100 * n / max(total, 1):5.1f} %  {name}")


if __name__ == "__main__":
    main()
