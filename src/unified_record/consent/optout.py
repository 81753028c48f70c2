"""The National Data Opt-out: a flag per unified client.

It denies every purpose the policy marks ``opt_out_applies`` (research, planning,
operations) and never affects direct care (TREAT, ETREAT, BTG; the policy refuses to mark
those). A person's objection to direct-care sharing is not an opt-out: it is a deny Consent
(`consent.records`). Setting and clearing write into the caller's session; the enforcement
point audits them in the same transaction, and the audit log keeps their history.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from unified_record.store.governance_models import OptOutRow

__all__ = ["clear_opt_out", "is_opted_out", "set_opt_out"]


def set_opt_out(session: Session, client_id: str, *, recorded_by: str, now: datetime) -> bool:
    """Flag the client; False if already flagged."""
    if session.get(OptOutRow, client_id) is not None:
        return False
    session.add(OptOutRow(client_id=client_id, recorded_at=now, recorded_by=recorded_by))
    session.flush()
    return True


def clear_opt_out(session: Session, client_id: str) -> bool:
    """Remove the flag; False if there was none."""
    result = session.execute(sa.delete(OptOutRow).where(OptOutRow.client_id == client_id))
    return bool(getattr(result, "rowcount", 0))


def is_opted_out(session: Session, client_ids: Collection[str]) -> bool:
    """True if any of these ids (a client and the ids merged into it) has opted out."""
    if not client_ids:
        return False
    stmt = sa.select(OptOutRow.client_id).where(OptOutRow.client_id.in_(list(client_ids)))
    return session.execute(stmt.limit(1)).first() is not None
