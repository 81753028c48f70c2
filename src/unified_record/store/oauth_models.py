"""Tables of the built-in authorization server: registered OAuth clients (partner systems)
and the client-assertion ids already used, so a `jti` is accepted once across every
worker and restart. No personal data: clients are organisations' systems.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from unified_record.store.models import Base, UTCDateTime

__all__ = ["OAuthClientRow", "UsedJtiRow"]


class OAuthClientRow(Base):
    """A partner system allowed to ask for tokens: its keys (a JWKS, or the URL where it
    publishes one), the scopes it may be granted, and the organisation, role and purpose of
    use (a v3 ActReason code, e.g. TREAT for a system serving direct care) its tokens
    carry. `secret_hash` (SHA-256 of a random secret) is for development only."""

    __tablename__ = "oauth_client"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    organisation: Mapped[str] = mapped_column(sa.String(50))
    role: Mapped[str | None] = mapped_column(sa.String(100))
    purpose_of_use: Mapped[str | None] = mapped_column(sa.String(20))
    scopes: Mapped[str] = mapped_column(sa.Text())
    jwks: Mapped[str | None] = mapped_column(sa.Text())
    jwks_url: Mapped[str | None] = mapped_column(sa.String(1000))
    secret_hash: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    active: Mapped[bool] = mapped_column(sa.Boolean())


class UsedJtiRow(Base):
    """A client assertion's `jti`, kept until the assertion could no longer be accepted."""

    __tablename__ = "oauth_used_jti"
    __table_args__ = (sa.Index("ix_oauth_used_jti_expires_at", "expires_at"),)

    client_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
