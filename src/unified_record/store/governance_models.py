"""Tables of information governance: the audit log (entries, chain head, signed
checkpoints), National Data Opt-out flags, and break-glass grants with their reviews.

The audit tables hold ids and codes only (no names, no NHS numbers), so the log verifies
without any key. Free-text reasons are personal data and are encrypted with the store's
cipher, bound to their row (`store.crypto.break_glass_aad`, `review_aad`).

Only `unified_record.audit.AuditLog` writes the audit tables, and only by appending; the
migration adds triggers that refuse UPDATE and DELETE of entries and checkpoints.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from unified_record.store.models import Base, UTCDateTime

__all__ = [
    "GENESIS_HASH",
    "REVIEW_OUTCOMES",
    "AuditChainHeadRow",
    "AuditCheckpointRow",
    "AuditEntryRow",
    "BreakGlassGrantRow",
    "BreakGlassReviewRow",
    "OptOutRow",
]

GENESIS_HASH = "0" * 64  # the "previous hash" of the first entry
REVIEW_OUTCOMES = ("appropriate", "inappropriate", "referred")


class AuditEntryRow(Base):
    """One AuditEvent (canonical JSON), its place in the chain and its hash.

    `client_id`, `recorded`, `decision` and `break_glass` repeat what the event says so
    governance queries need no JSON parsing; verification checks they still agree.
    """

    __tablename__ = "audit_entry"
    __table_args__ = (
        sa.UniqueConstraint("event_id", name="uq_audit_entry_event_id"),
        sa.CheckConstraint("decision IN ('permit', 'deny', 'none')", name="decision"),
        sa.Index("ix_audit_entry_client_id", "client_id", "seq"),
        sa.Index("ix_audit_entry_recorded", "recorded"),
    )

    seq: Mapped[int] = mapped_column(sa.BigInteger(), primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(sa.String(64))
    recorded: Mapped[datetime] = mapped_column(UTCDateTime())
    client_id: Mapped[str | None] = mapped_column(sa.String(32))
    decision: Mapped[str] = mapped_column(sa.String(10))
    break_glass: Mapped[bool] = mapped_column(sa.Boolean())
    event: Mapped[str] = mapped_column(sa.Text())
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    entry_hash: Mapped[str] = mapped_column(sa.String(64))


class AuditChainHeadRow(Base):
    """The single row naming the last entry: appenders lock it, so the chain never forks."""

    __tablename__ = "audit_chain_head"
    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(sa.BigInteger())
    entry_hash: Mapped[str] = mapped_column(sa.String(64))


class AuditCheckpointRow(Base):
    """An Ed25519 signature over (seq, entry hash): entries up to `seq` cannot be rewritten,
    even with every hash recomputed, without the signing key."""

    __tablename__ = "audit_checkpoint"

    seq: Mapped[int] = mapped_column(sa.BigInteger(), primary_key=True, autoincrement=False)
    entry_hash: Mapped[str] = mapped_column(sa.String(64))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[str] = mapped_column(sa.String(64))
    signature: Mapped[str] = mapped_column(sa.String(128))


class OptOutRow(Base):
    """A unified client who has registered a National Data Opt-out (present = opted out).
    Setting and clearing are audited; the audit log keeps the history."""

    __tablename__ = "national_opt_out"

    client_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str] = mapped_column(sa.String(128))


class BreakGlassGrantRow(Base):
    """Emergency access to one client for one caller until `expires_at`, and why
    (free text, encrypted)."""

    __tablename__ = "break_glass_grant"
    __table_args__ = (
        sa.Index("ix_break_glass_grant_client_id", "client_id", "expires_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    client_id: Mapped[str] = mapped_column(sa.String(32))
    oauth_client_id: Mapped[str] = mapped_column(sa.String(64))
    sub: Mapped[str] = mapped_column(sa.String(255))
    organisation: Mapped[str | None] = mapped_column(sa.String(50))
    role: Mapped[str | None] = mapped_column(sa.String(100))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[bytes] = mapped_column(sa.LargeBinary())
    key_id: Mapped[str] = mapped_column(sa.String(64))


class BreakGlassReviewRow(Base):
    """A governance officer's closing review of a grant (one per grant); a grant without
    one is in the review queue. The note is free text, so it is encrypted."""

    __tablename__ = "break_glass_review"
    __table_args__ = (
        sa.CheckConstraint(
            "outcome IN ('appropriate', 'inappropriate', 'referred')", name="outcome"),
    )

    grant_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("break_glass_grant.id"), primary_key=True)
    reviewed_by: Mapped[str] = mapped_column(sa.String(128))
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    outcome: Mapped[str] = mapped_column(sa.String(20))
    note: Mapped[bytes] = mapped_column(sa.LargeBinary())
    key_id: Mapped[str] = mapped_column(sa.String(64))
