"""Registered OAuth clients and the assertion ids they have used."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from unified_record.store.oauth_models import OAuthClientRow, UsedJtiRow

__all__ = ["OAuthClient", "OAuthClientRepository"]


@dataclass(frozen=True)
class OAuthClient:
    client_id: str
    name: str
    organisation: str
    role: str | None
    scopes: str  # space-separated SMART scopes it may be granted
    jwks: dict[str, Any] | None
    jwks_url: str | None
    secret_hash: str | None
    created_at: datetime
    active: bool
    purpose_of_use: str | None = None  # carried by its tokens; None: the request must say


class OAuthClientRepository:
    """Each call is its own short transaction (the token endpoint needs nothing longer)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def add(self, *, name: str, organisation: str, role: str | None, scopes: str,
            jwks: dict[str, Any] | None = None, jwks_url: str | None = None,
            secret_hash: str | None = None, purpose_of_use: str | None = None
            ) -> OAuthClient:
        """Register a client under a new random id."""
        row = OAuthClientRow(
            id=secrets.token_urlsafe(16),
            name=name,
            organisation=organisation,
            role=role,
            scopes=scopes,
            jwks=json.dumps(jwks) if jwks is not None else None,
            jwks_url=jwks_url,
            secret_hash=secret_hash,
            purpose_of_use=purpose_of_use,
            created_at=datetime.now(UTC),
            active=True,
        )
        with self._sessions.begin() as session:
            session.add(row)
        return _client(row)

    def get(self, client_id: str) -> OAuthClient | None:
        with self._sessions() as session:
            row = session.get(OAuthClientRow, client_id)
            return _client(row) if row is not None else None

    def use_jti(self, client_id: str, jti: str, keep_until: datetime) -> bool:
        """Record an assertion id; False if this client used it before (a replay).

        Ids whose assertions can no longer be accepted are purged on the way, so the table
        stays as small as five minutes of traffic.
        """
        try:
            with self._sessions.begin() as session:
                session.execute(sa.delete(UsedJtiRow).where(
                    UsedJtiRow.expires_at < datetime.now(UTC)))
                session.add(UsedJtiRow(client_id=client_id, jti=jti, expires_at=keep_until))
        except IntegrityError:
            return False
        return True


def _client(row: OAuthClientRow) -> OAuthClient:
    return OAuthClient(
        client_id=row.id,
        name=row.name,
        organisation=row.organisation,
        role=row.role,
        scopes=row.scopes,
        jwks=json.loads(row.jwks) if row.jwks else None,
        jwks_url=row.jwks_url,
        secret_hash=row.secret_hash,
        purpose_of_use=row.purpose_of_use,
        created_at=row.created_at,
        active=row.active,
    )
