"""Audit fixtures: a migrated database on each backend and a log with a fresh signing key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from audit_support import new_signer
from sqlalchemy.engine import Engine

from unified_record.audit import AuditLog, AuditSigner
from unified_record.store import make_engine, migrate


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    migrate(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def signer() -> AuditSigner:
    return new_signer()


@pytest.fixture
def log(engine: Engine, signer: AuditSigner) -> AuditLog:
    return AuditLog(engine, signer, checkpoint_every=4)
