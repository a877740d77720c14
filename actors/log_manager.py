"""The LogManager actor: owns the durable log (storage.log_store) and writes it in group commits.

The role actor keeps at most one PersistRequest in flight and merges everything produced
meanwhile into the next one, so one synced RocksDB WriteBatch carries every proposal, vote and
truncation that arrived during the previous sync (group commit). Messages that promise
durability (votes, append acknowledgements) are sent from here, right after the sync.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from storage.log_store import UNSET, LogStore

from .messages import PersistRequest, Persisted, SetMeta
from .supervision import SupervisedActor

log = logging.getLogger("actors.log")


class LogManager(SupervisedActor):
    """Writes PersistRequests synced, sends their follow-up messages, reports back."""

    def __init__(self, store: LogStore, send_many: Callable[[list], None], report: Callable[[Any], None]) -> None:
        super().__init__()
        self.store = store
        self.send_many = send_many
        self.report = report

    def on_receive(self, msg: Any) -> Any:
        if type(msg) is PersistRequest:
            b = msg.batch
            self.store.write(
                term=b.term,
                vote=b.vote if b.term is not None else UNSET,
                commit=b.commit,
                truncate_from=b.truncate_from,
                first_index=b.first,
                entries=b.entries,
            )
            if b.compact_to is not None:
                self.store.drop_prefix(*b.compact_to)
            self.send_many(msg.after)
            self.report(Persisted(msg.last))
        elif type(msg) is SetMeta:
            self.store.set_meta(**msg.values)
        return None
