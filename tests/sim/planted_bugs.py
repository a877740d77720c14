"""Plant known Raft bugs in a copy of actors/core.py and measure how fast the simulation finds them.

The copy is built from the current source text with one snippet replaced (or one method wrapped)
and loaded as its own module (``actors._planted_<name>``); actors/core.py itself is never
modified. A snippet that no longer exists in core.py is an error (the experiment would silently
test nothing): update it here when the core changes.

    python -m tests.sim.planted_bugs [--max-seeds 2000] [--count 300] [--no-lemma] [bug ...]

prints, per bug, the first failing seed, the time to find it and what broke; with ``--count N``
it also counts how many of the first N seeds fail. tests/sim/test_planted.py checks in CI that
bugs (a), (b), (e) and (g) are caught within the first 300 seeds. (f) is caught within ~200
seeds (the race it needs is rare); (h), the 2015 single-server-change bug, needs a narrow
interleaving: with the direct rule checks off (--no-rules) it was first seen, as a liveness
failure, at seed 1748.
"""
from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path
from typing import Optional

from tests.sim.cluster import Sim, SimFailure, default_nodes

CORE_PATH = Path(__file__).resolve().parents[2] / "actors" / "core.py"


def _ack_before_persist(mod: types.ModuleType) -> None:
    """Bug (c): every AppendReply that _on_append queues after persist leaves at once instead."""
    from raftkv.wire.messages import AppendEntries, AppendReply
    orig = mod.RaftCore._on_append

    def _on_append(self, sender, m):
        n = len(self.ready.send_after_persist)
        orig(self, sender, m)
        tail = self.ready.send_after_persist[n:]
        self.ready.send_after_persist[n:] = [x for x in tail if type(x[1]) is not AppendReply]
        self.ready.send.extend(x for x in tail if type(x[1]) is AppendReply)

    mod.RaftCore._on_append = _on_append
    mod.RaftCore._HANDLERS[AppendEntries] = _on_append


# name -> (description, [(original snippet, planted replacement), ...] or a function patching the copy)
BUGS: dict = {
    "a": ("leader commits an entry of an earlier term by counting replicas (Figure 8)", [
        ("if n > self.commit and self.log.term(n) == self.term:",
         "if n > self.commit:  # PLANTED: no current-term check"),
    ]),
    "b": ("votes granted without the up-to-date check (and pre-votes too)", [
        ("up_to_date = self._is_up_to_date(m)",
         "up_to_date = True  # PLANTED"),
    ]),
    "c": ("follower acknowledges appended entries before persisting them", _ack_before_persist),
    "d": ("conflicting entries are overwritten in place, the old suffix after them is kept", [
        ("                self._truncate(idx + i)\n                break\n",
         "                old_tail = log.slice(idx + len(ents), last + 1)  # PLANTED: keep the old suffix\n"
         "                self._truncate(idx + i)\n"
         "                self._append(ents[i:] + old_tail)\n"
         "                i = len(ents)\n"
         "                break\n"),
    ]),
    "e": ("learners count for quorums and votes like voters", [
        ("            idx = self._index_of = (members, by_id, [m.id for m in members if m.voter])\n",
         "            idx = self._index_of = (members, by_id, [m.id for m in members])  # PLANTED: learners too\n"),
    ]),
    "f": ("install_snapshot does not hand out again the entries after a snapshot that rewound the FSM", [
        ("        self.handed = last_index\n        self.want_snapshot = False\n",
         "        self.handed = max(self.handed, last_index)  # PLANTED\n        self.want_snapshot = False\n"),
    ]),
    "g": ("a configuration change is allowed before the previous one commits", [
        ("\n                and self.config_index() <= self.commit)",
         ")  # PLANTED: no one-change-at-a-time check"),
    ]),
    "h": ("a configuration change is allowed before an entry of the leader's term commits (the 2015 bug)", [
        ("self.transferee is None and self.log.term(self.commit) == self.term\n",
         "self.transferee is None  # PLANTED\n"),
    ]),
}


def planted_core(name: str) -> types.ModuleType:
    """A module like actors.core with bug ``name`` planted."""
    src = CORE_PATH.read_text()
    plant = BUGS[name][1]
    for old, new in ([] if callable(plant) else plant):
        if old not in src:
            raise RuntimeError(f"bug {name}: snippet not found in {CORE_PATH}: {old!r}")
        src = src.replace(old, new)
    modname = f"actors._planted_{name}"
    mod = types.ModuleType(modname)
    mod.__file__ = str(CORE_PATH)
    mod.__package__ = "actors"
    sys.modules[modname] = mod
    exec(compile(src, f"<actors/core.py with bug {name}>", "exec"), mod.__dict__)
    if callable(plant):
        plant(mod)
    return mod


def _sim_class(lemma: bool, rules: bool = True) -> type:
    class S(Sim):
        CHECK_COMMIT_SAFETY = lemma
        CHECK_MEMBERSHIP_RULES = rules
    return S


def first_failure(name: str, max_seeds: int, base: int = 0, lemma: bool = True, rules: bool = True) -> tuple:
    """(seed, seconds, message) of the first failing seed, or (None, seconds, '').

    ``lemma=False`` turns off the commit-safety/durability check, leaving the end-to-end
    invariants (Election Safety, Log Matching, Leader Completeness at elections, State Machine
    Safety, ReadIndex, acknowledged writes, liveness). ``rules=False`` turns off the direct
    membership-rule checks (Sim.CHECK_MEMBERSHIP_RULES)."""
    mod = planted_core(name)
    sim = _sim_class(lemma, rules)
    t0 = time.perf_counter()
    for seed in range(base, base + max_seeds):
        try:
            sim(seed, default_nodes(seed), core_module=mod).run()
        except SimFailure as e:
            return seed, time.perf_counter() - t0, e.what
        except Exception as e:  # a planted bug may also trip an assertion inside the core
            return seed, time.perf_counter() - t0, f"{type(e).__name__} in the core: {e}"
    return None, time.perf_counter() - t0, ""


def count_failures(name: str, seeds: int, base: int = 0, lemma: bool = True, rules: bool = True) -> int:
    mod = planted_core(name)
    sim = _sim_class(lemma, rules)
    n = 0
    for seed in range(base, base + seeds):
        try:
            sim(seed, default_nodes(seed), core_module=mod).run()
        except Exception:
            n += 1
    return n


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bugs", nargs="*", default=sorted(BUGS))
    ap.add_argument("--max-seeds", type=int, default=2000)
    ap.add_argument("--base", type=int, default=0)
    ap.add_argument("--count", type=int, default=0, help="also count failing seeds among the first N")
    ap.add_argument("--no-lemma", action="store_true",
                    help="without the commit-safety/durability check: end-to-end invariants only")
    ap.add_argument("--no-rules", action="store_true",
                    help="without the direct membership-rule checks (one change at a time, voter quorums)")
    args = ap.parse_args(argv)
    lemma = not args.no_lemma
    rules = not args.no_rules
    for name in args.bugs:
        desc = BUGS[name][0]
        seed, secs, what = first_failure(name, args.max_seeds, args.base, lemma, rules)
        if seed is None:
            print(f"({name}) {desc}: NOT FOUND in {args.max_seeds} seeds ({secs:.1f}s)")
        else:
            print(f"({name}) {desc}: first failing seed {seed} ({default_nodes(seed)} nodes) "
                  f"after {secs:.2f}s\n      {what}")
        if args.count:
            t0 = time.perf_counter()
            k = count_failures(name, args.count, args.base, lemma, rules)
            print(f"      {k}/{args.count} seeds fail ({time.perf_counter() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
