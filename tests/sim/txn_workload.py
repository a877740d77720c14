"""Transactions in the simulation's workload (issue 14): bank transfers between a few account
keys, built by the proposing leader from its applied state and applied by every node's FSM model
with the node's own rules (actors/kv_apply.run_txn), so that State Machine Safety (same digest
after the same index on every node) covers which branch each transaction took, and an invariant
of its own checks atomicity: the accounts' balances always add up to TOTAL once minted.

A transfer compares both balances with what the leader last saw, so a concurrent one makes it
take the failure branch (a get), never a partial or negative move. Its own random stream keeps
the simulation's schedule (the main rng's draws) exactly as without transactions.
"""
from __future__ import annotations

import random
from typing import Optional, Union

from raftkv.actors import kv_apply
from raftkv.records import Compare, Txn, TxnOp
from raftkv.storage.kv_record import KeyRecord

ACCOUNTS = ("acct0", "acct1", "acct2", "acct3")
TOTAL = 100
TXN_SHARE = 0.25  # of the proposed commands


def make_txn(rng: random.Random, kv: dict) -> Txn:
    """A mint (if no account exists yet in ``kv``) or a transfer between two accounts."""
    if not any(a in kv for a in ACCOUNTS):
        return Txn([Compare("version", "=", a, None, 0) for a in ACCOUNTS],
                   [TxnOp("put", ACCOUNTS[0], b"%d" % TOTAL)] + [TxnOp("put", a, b"0") for a in ACCOUNTS[1:]],
                   [TxnOp("get", ACCOUNTS[0])])
    src, dst = rng.sample(ACCOUNTS, 2)
    have_src, have_dst = int(kv.get(src, b"0")), int(kv.get(dst, b"0"))
    amount = rng.randint(0, max(0, have_src))
    return Txn([Compare("value", "=", src, b"%d" % have_src), Compare("value", "=", dst, b"%d" % have_dst)],
               [TxnOp("put", src, b"%d" % (have_src - amount)), TxnOp("put", dst, b"%d" % (have_dst + amount)),
                TxnOp("get", src)],
               [TxnOp("get", src), TxnOp("get", dst)])


class _Changes:
    """kv_apply's RecordView over a node model's dict, recording the changes instead of making them."""

    def __init__(self, kv: dict) -> None:
        self.kv = kv
        self.over: dict = {}

    def record(self, key: str) -> Optional[KeyRecord]:
        v = self.over[key] if key in self.over else self.kv.get(key)
        return None if v is None else KeyRecord(v, 0, 0, 1)

    def put_record(self, key: str, rec: KeyRecord) -> None:
        self.over[key] = rec.value

    def delete_record(self, key: str) -> None:
        self.over[key] = None


def effects(kv: dict, op: Union[tuple, Txn]) -> list:
    """The (key, new value or None) changes a command makes to the model state ``kv``."""
    if not isinstance(op, Txn):
        return [op]  # a put: (key, value)
    view = _Changes(kv)
    kv_apply.run_txn(view, [], 0, op)
    return list(view.over.items())


def total_problem(kv: dict) -> Optional[str]:
    """What is wrong with the accounts in ``kv`` (None: nothing minted yet, or they add up)."""
    present = [a for a in ACCOUNTS if a in kv]
    if not present:
        return None
    if len(present) != len(ACCOUNTS):
        return f"only accounts {present} exist: a mint was applied in part"
    balances = {a: int(kv[a]) for a in ACCOUNTS}
    if sum(balances.values()) != TOTAL or min(balances.values()) < 0:
        return f"balances {balances} do not add up to {TOTAL}: a transfer was applied in part"
    return None
