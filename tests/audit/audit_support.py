"""Test helpers for the audit tests (importable by name, also by spawned processes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from unified_record.audit import Agent, AuditLog, AuditSigner, Entity, audit_event
from unified_record.audit.log import canonical_json, chain_hash
from unified_record.store import make_engine
from unified_record.store.governance_models import AuditEntryRow


def event(number: int, client_id: str = "C000000000001") -> dict[str, Any]:
    """A read of one Condition by a clinician."""
    return audit_event(
        subtype="read",
        agent=Agent("user-1", "https://issuer.example", "RZ1", "nhs_clinician", "app-1"),
        recorded=datetime.now(UTC), decision="permit", purpose="TREAT", client_id=client_id,
        entities=[Entity(f"Condition/c{number}/_history/1", outcome="returned")],
        source_address="192.0.2.1")


def pem(signer: AuditSigner) -> bytes:
    return signer.private_key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())


def new_signer() -> AuditSigner:
    return AuditSigner(Ed25519PrivateKey.generate())


def append_many(url: str, key_pem: bytes, count: int, tag: str, barrier: Any,
                rounds: int = 10) -> None:
    """Append `count` events from this process (run in a spawned process), in `rounds`
    that every process starts together, so that they race each round even when one could
    otherwise hold the database lock for all its appends (SQLite on a busy machine); client
    ids start with "C" + `tag`, to tell the writers apart."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    engine = make_engine(url)
    log = AuditLog(engine, AuditSigner(key), checkpoint_every=7)
    try:
        for number in range(count):
            if number % -(-count // rounds) == 0:
                barrier.wait(timeout=120)
            log.append(event(number, client_id=f"C{tag}{number:05d}"[:13]))
    finally:
        engine.dispose()


def drop_guards(conn: sa.Connection) -> None:
    """What an attacker with DDL rights does first: remove the append-only triggers."""
    if conn.dialect.name == "postgresql":
        for table in ("audit_entry", "audit_checkpoint"):
            conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
        return
    for table in ("audit_entry", "audit_checkpoint"):
        for kind in ("update", "delete"):
            conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_no_{kind}"))


def forge(conn: sa.Connection, seq: int, prev_hash: str, body: dict[str, Any]) -> str:
    """Insert an entry with a correctly computed hash; return the hash."""
    canonical = canonical_json(body)
    entry_hash = chain_hash(prev_hash, canonical)
    conn.execute(sa.insert(AuditEntryRow).values(
        seq=seq, event_id=body["id"], recorded=datetime.fromisoformat(body["recorded"]),
        client_id="C000000000001", decision="permit", break_glass=False,
        event=canonical.decode(), prev_hash=prev_hash, entry_hash=entry_hash))
    return entry_hash
