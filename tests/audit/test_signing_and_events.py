"""The checkpoint signing key (development file, environment, production refusal) and the
AuditEvents themselves (valid FHIR R4, ids only, columns derivable)."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from audit_support import event, new_signer, pem
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from unified_record.audit import Agent, Entity, audit_event, load_audit_signer, load_verify_keys
from unified_record.audit.events import derive_columns
from unified_record.config import ConfigError, Settings
from unified_record.fhir.validation import validate_resource
from unified_record.security._base64 import encode_b64


def test_development_makes_a_private_key_file_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = load_audit_signer(settings)
    path = tmp_path / "audit-signing-key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_audit_signer(settings).key_id == first.key_id
    assert "PRIVATE" not in repr(first)


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    load_audit_signer(settings)
    (tmp_path / "audit-signing-key.pem").chmod(0o644)
    with pytest.raises(ConfigError, match="looser than 0600"):
        load_audit_signer(settings)


def test_the_environment_key_is_used_and_production_needs_it(tmp_path: Path) -> None:
    signer = new_signer()
    settings = Settings(data_dir=tmp_path, audit_signing_key=pem(signer).decode())
    assert load_audit_signer(settings).key_id == signer.key_id
    assert not (tmp_path / "audit-signing-key.pem").exists()
    production = Settings(env="production", data_dir=tmp_path, data_keys="k1:AAAA",
                          index_key="AAAA", database_url="postgresql+psycopg://db/ur")
    with pytest.raises(ConfigError, match="UR_AUDIT_SIGNING_KEY"):
        load_audit_signer(production)


def test_a_key_that_is_not_ed25519_is_refused_without_showing_it(tmp_path: Path) -> None:
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    with pytest.raises(ConfigError, match="UR_AUDIT_SIGNING_KEY: the audit signing key must "
                                          "be Ed25519"):
        load_audit_signer(Settings(data_dir=tmp_path, audit_signing_key=other))
    with pytest.raises(ConfigError) as info:
        load_audit_signer(Settings(data_dir=tmp_path, audit_signing_key="secret-garbage"))
    assert "secret-garbage" not in str(info.value)


def test_verify_keys_add_earlier_public_keys(tmp_path: Path) -> None:
    current, earlier = new_signer(), new_signer()
    raw = earlier.public_key.public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw)
    settings = Settings(data_dir=tmp_path, audit_verify_keys=f" {encode_b64(raw)} ,")
    assert set(load_verify_keys(settings, current)) == {current.key_id, earlier.key_id}
    with pytest.raises(ConfigError, match="UR_AUDIT_VERIFY_KEYS: entry 1"):
        load_verify_keys(Settings(data_dir=tmp_path, audit_verify_keys="AAAA"), current)


def test_events_are_valid_fhir_and_carry_ids_only() -> None:
    body = event(1)
    validate_resource(body)
    assert body["type"]["code"] == "rest"
    assert body["source"]["observer"] == {"display": "unified-record"}
    client_id, recorded, decision, break_glass = derive_columns(body)
    assert (client_id, decision, break_glass) == ("C000000000001", "permit", False)
    assert datetime.fromisoformat(recorded).tzinfo is not None


def test_governance_events_by_an_operator() -> None:
    body = audit_event(subtype="opt-out-set", agent=Agent.operator("officer-1"),
                       recorded=datetime.now(UTC), client_id="C000000000001")
    assert body["type"]["code"] == "110110" and body["action"] == "E"
    assert derive_columns(body)[2] == "none"
    flagged = audit_event(subtype="break-glass-granted", agent=Agent.operator("x"),
                          recorded=datetime.now(UTC), decision="permit", break_glass=True,
                          entities=[Entity(identifier=("urn:x", "g1"), role="13")])
    assert derive_columns(flagged)[3] is True
    assert flagged["entity"][0]["what"]["identifier"]["value"] == "g1"
