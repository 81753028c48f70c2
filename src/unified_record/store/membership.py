"""Which client each source record belongs to, as one transaction has already read it.

A request reads a client's members to assemble its golden Patient or its `$everything`,
and then decides access (which client each record belongs to) and the withheld notice (the
client's whole record): both need the same membership. Kept in the session and forgotten
when its transaction ends, so it never outlives the snapshot it was read in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

__all__ = ["Membership"]

_KEY = "unified_record.store.membership"


@dataclass
class Membership:
    clients: dict[str, str] = field(default_factory=dict)  # record or client id -> client
    members: dict[str, frozenset[str]] = field(default_factory=dict)  # client -> records

    @staticmethod
    def of(session: Session) -> Membership:
        memo = session.info.get(_KEY)
        if not isinstance(memo, Membership):
            memo = session.info[_KEY] = Membership()
        return memo

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
