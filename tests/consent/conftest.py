"""Consent fixtures: a migrated database on each backend holding two clients' records, and
an enforcement point over it with the repository's policy and a test clock."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from consent_support import C1, C2, C_OLD, KEY_1, Clock, policy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from unified_record.audit import AuditLog, AuditSigner
from unified_record.consent import EnforcementPoint
from unified_record.security import BlindIndex, KeyRing
from unified_record.store import ResourceRepository, make_engine, make_session_factory, migrate
from unified_record.store.models import ClientMemberRow, ClientRow


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing({"k1": KEY_1}, "k1")


@pytest.fixture
def blind_index() -> BlindIndex:
    return BlindIndex(os.urandom(32))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    migrate(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def signer() -> AuditSigner:
    return AuditSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def point(engine: Engine, keyring: KeyRing, signer: AuditSigner, clock: Clock
          ) -> EnforcementPoint:
    return EnforcementPoint(policy(), AuditLog(engine, signer, checkpoint_every=5), keyring,
                            break_glass_minutes=30, clock=clock)


@pytest.fixture
def world(engine: Engine, keyring: KeyRing, blind_index: BlindIndex) -> None:
    """C1: an acute-trust and a council record; C2: one record; C_OLD merged into C1."""
    with make_session_factory(engine)() as session:
        repo = ResourceRepository(session, keyring, blind_index)
        for rid, org in (("p-acute", "RZ1"), ("p-council", "E08000035"), ("p-two", "RZ1")):
            repo.put({"resourceType": "Patient", "id": rid, "gender": "female",
                      "name": [{"family": "Quixblatterwick"}],
                      "extension": [{"url": "https://example/ext", "valueString": "x"}]},
                     source_feed="feed", source_org=org, source_record_id=rid)
        for rid, subject, org, labels, rtype in (
                ("cond-plain", "p-acute", "RZ1", (), "Condition"),
                ("cond-mh", "p-acute", "RZ1", ("mental_health",), "Condition"),
                ("cond-rz2", "p-acute", "RZ2", (), "Condition"),
                ("flag-sg", "p-council", "E08000035", ("safeguarding",), "Flag"),
                ("cond-two", "p-two", "RZ1", (), "Condition")):
            repo.put({"resourceType": rtype, "id": rid,
                      "subject": {"reference": f"Patient/{subject}"},
                      "note": [{"text": "free text"}]},
                     source_feed="feed", source_org=org, source_record_id=rid,
                     security_labels=labels,
                     index_values=[("patient", f"Patient/{subject}")])
        session.add_all([
            ClientRow(id=C1, status="active", replaced_by=None, created_run=1, updated_run=1),
            ClientRow(id=C2, status="active", replaced_by=None, created_run=1, updated_run=1),
            ClientRow(id=C_OLD, status="retired", replaced_by=C1, created_run=1,
                      updated_run=2),
            ClientMemberRow(unique_id="p-acute", client_id=C1, run_id=1),
            ClientMemberRow(unique_id="p-council", client_id=C1, run_id=1),
            ClientMemberRow(unique_id="p-two", client_id=C2, run_id=1),
        ])
        session.commit()


@pytest.fixture
def session(engine: Engine, world: None) -> Iterator[Session]:
    with make_session_factory(engine)() as session:
        yield session


@pytest.fixture
def repo(session: Session, keyring: KeyRing, blind_index: BlindIndex) -> ResourceRepository:
    return ResourceRepository(session, keyring, blind_index)
