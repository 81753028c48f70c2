"""Which client each source record belongs to, as one transaction has already read it.

A request reads a client's members to assemble its golden Patient or its `$everything`,
and then decides access (which client each record belongs to) and the withheld notice (the
client's whole record): both need the same membership. Kept in the session and forgotten
when its transaction ends, so it never outlives the snapshot it was read in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session

__all__ = ["Membership", "transaction_memo"]

_KEY = "unified_record.store.membership"
_T = TypeVar("_T")


def transaction_memo(session: Session, key: str, kind: Callable[[], _T]) -> _T:
    """The `kind` kept under `key` in the session (a new one if there is none); whoever
    keeps one there forgets it when the transaction ends."""
    memo = session.info.get(key)
    if memo is None:
        memo = session.info[key] = kind()
    return memo


@dataclass
class Membership:
    clients: dict[str, str] = field(default_factory=dict)  # record or client id -> client
    members: dict[str, frozenset[str]] = field(default_factory=dict)  # client -> records

    @staticmethod
    def of(session: Session) -> Membership:
        return transaction_memo(session, _KEY, Membership)

    @staticmethod
    def forget(session: Session) -> None:
        session.info.pop(_KEY, None)

    def learn_members(self, client_id: str, record_ids: Iterable[str]) -> None:
        """All the source records of an *active* client (read as such in this transaction)."""
        records = frozenset(record_ids)
        self.members[client_id] = records
        self.clients[client_id] = client_id
        for record_id in records:
            self.clients[record_id] = client_id


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, _transaction: Any) -> None:
    Membership.forget(session)
