"""Break-glass: emergency access to one client's record, for a short time, reviewed after.

A caller whose role may use purpose BTG asks with a written reason; the grant covers that
caller (same OAuth client and user) and that client until it expires
(``UR_BREAK_GLASS_MINUTES``). Requests under BTG are decided by the policy's BTG rules and
are not blocked by the person's objections or the National Data Opt-out, which is why every
grant is flagged in the audit log and waits in the review queue until a governance officer
closes it with an outcome. The reason and the review note are free text, so encrypted.

These functions write into the caller's session; `consent.enforcement` adds the audit
entries in the same transaction and commits.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from unified_record.security.caller import Caller
from unified_record.store.crypto import Cipher, break_glass_aad, review_aad
from unified_record.store.governance_models import (
    REVIEW_OUTCOMES,
    BreakGlassGrantRow,
    BreakGlassReviewRow,
)

__all__ = [
    "BreakGlassError",
    "BreakGlassGrant",
    "BreakGlassReview",
    "active_grants",
    "close_review",
    "grant_break_glass",
    "list_grants",
]

MAX_REASON = 2000


class BreakGlassError(ValueError):
    """A break-glass request or review that cannot be accepted."""


@dataclass(frozen=True)
class BreakGlassGrant:
    id: str
    client_id: str
    oauth_client_id: str
    sub: str
    organisation: str | None
    role: str | None
    granted_at: datetime
    expires_at: datetime

    def covers(self, caller: Caller, client_id: str | None, now: datetime) -> bool:
        return (client_id is not None and self.client_id == client_id
                and self.oauth_client_id == caller.client_id and self.sub == caller.sub
                and self.granted_at <= now < self.expires_at)


@dataclass(frozen=True)
class BreakGlassReview:
    """A grant as a governance officer reviews it (reason decrypted)."""

    grant: BreakGlassGrant
    reason: str
    outcome: str | None = None
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    note: str | None = None


def grant_break_glass(session: Session, cipher: Cipher, caller: Caller, client_id: str,
                      reason: str, *, minutes: int, now: datetime) -> BreakGlassGrant:
    """Record a grant (the caller's role has been checked by the enforcement point)."""
    reason = reason.strip()
    if not reason:
        raise BreakGlassError("break-glass needs a written reason")
    if len(reason) > MAX_REASON:
        raise BreakGlassError(f"the reason is longer than {MAX_REASON} characters")
    if minutes < 1:
        raise BreakGlassError("a grant lasts at least a minute")
    grant_id = str(uuid.uuid4())
    envelope = cipher.encrypt(reason.encode("utf-8"), break_glass_aad(grant_id))
    row = BreakGlassGrantRow(
        id=grant_id, client_id=client_id, oauth_client_id=caller.client_id, sub=caller.sub,
        organisation=caller.organisation, role=caller.role, granted_at=now,
        expires_at=now + timedelta(minutes=minutes), reason=envelope,
        key_id=cipher.key_id_of(envelope))
    session.add(row)
    session.flush()
    return _grant(row)


def active_grants(session: Session, client_ids: Collection[str], now: datetime
                  ) -> list[BreakGlassGrant]:
    """Unexpired grants for these clients (for anyone; `covers` picks the caller's)."""
    if not client_ids:
        return []
    rows = session.scalars(sa.select(BreakGlassGrantRow).where(
        BreakGlassGrantRow.client_id.in_(list(client_ids)),
        BreakGlassGrantRow.expires_at > now,
        BreakGlassGrantRow.granted_at <= now))
    return [_grant(row) for row in rows]


def list_grants(session: Session, cipher: Cipher, *, open_only: bool = True,
                client_id: str | None = None, limit: int = 100) -> list[BreakGlassReview]:
    """The review queue (grants not yet closed), oldest first; or every grant."""
    stmt = (sa.select(BreakGlassGrantRow, BreakGlassReviewRow)
            .outerjoin(BreakGlassReviewRow,
                       BreakGlassReviewRow.grant_id == BreakGlassGrantRow.id)
            .order_by(BreakGlassGrantRow.granted_at, BreakGlassGrantRow.id).limit(limit))
    if open_only:
        stmt = stmt.where(BreakGlassReviewRow.grant_id.is_(None))
    if client_id is not None:
        stmt = stmt.where(BreakGlassGrantRow.client_id == client_id)
    found = []
    for grant, review in session.execute(stmt):
        reason = cipher.decrypt(grant.reason, break_glass_aad(grant.id)).decode("utf-8")
        if review is None:
            found.append(BreakGlassReview(_grant(grant), reason))
            continue
        note = cipher.decrypt(review.note, review_aad(grant.id)).decode("utf-8")
        found.append(BreakGlassReview(_grant(grant), reason, review.outcome,
                                      review.reviewed_by, review.reviewed_at, note or None))
    return found


def close_review(session: Session, cipher: Cipher, grant_id: str, *, outcome: str,
                 reviewed_by: str, note: str = "", now: datetime) -> BreakGlassGrant:
    """Close a grant's review with an outcome; BreakGlassError if unknown or closed."""
    if outcome not in REVIEW_OUTCOMES:
        raise BreakGlassError(f"outcome must be one of {', '.join(REVIEW_OUTCOMES)}")
    if not reviewed_by.strip():
        raise BreakGlassError("a review needs the governance officer who closed it")
    grant = session.get(BreakGlassGrantRow, grant_id)
    if grant is None:
        raise BreakGlassError(f"no break-glass grant {grant_id}")
    if session.get(BreakGlassReviewRow, grant_id) is not None:
        raise BreakGlassError(f"break-glass grant {grant_id} is already closed")
    envelope = cipher.encrypt(note.strip().encode("utf-8"), review_aad(grant_id))
    session.add(BreakGlassReviewRow(
        grant_id=grant_id, reviewed_by=reviewed_by.strip(), reviewed_at=now, outcome=outcome,
        note=envelope, key_id=cipher.key_id_of(envelope)))
    session.flush()
    return _grant(grant)


def _grant(row: BreakGlassGrantRow) -> BreakGlassGrant:
    return BreakGlassGrant(row.id, row.client_id, row.oauth_client_id, row.sub,
                           row.organisation, row.role, row.granted_at, row.expires_at)
