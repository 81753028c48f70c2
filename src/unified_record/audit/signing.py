"""The audit log's checkpoint signing key (Ed25519), kept like the token signing key.

Production reads a PEM private key from ``UR_AUDIT_SIGNING_KEY`` and refuses to sign
without one. The embedded demo needs no configuration: in development a key is made on first
use at ``UR_DATA_DIR/audit-signing-key.pem`` (mode 0600) and reused afterwards, so every
worker and the `audit verify` command agree on it.

Verification needs public keys only: the signing key's own, and those of earlier keys listed
in ``UR_AUDIT_VERIFY_KEYS`` (base64 of the raw 32 bytes), so a key change does not orphan
the checkpoints signed before it. A key id is the first 16 hex digits of the SHA-256 of the
raw public key.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from unified_record.config import ConfigError, Settings
from unified_record.security._base64 import decode_b64
from unified_record.security._private_file import read_private_file, write_private_file

__all__ = [
    "AuditSigner",
    "key_id_of",
    "load_audit_signer",
    "load_verify_keys",
    "parse_audit_key",
    "verify_signature",
]

logger = logging.getLogger(__name__)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class AuditSigner:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def __repr__(self) -> str:  # never show the key
        return f"AuditSigner(key_id={self.key_id!r})"


def load_audit_signer(settings: Settings) -> AuditSigner:
    """The signing key from UR_AUDIT_SIGNING_KEY, or (development only) the local file."""
    if settings.audit_signing_key:
        return parse_audit_key(settings.audit_signing_key.encode("utf-8"), "UR_AUDIT_SIGNING_KEY")
    if settings.env == "production":
        raise ConfigError("production setting needs UR_AUDIT_SIGNING_KEY; the local audit "
                          "signing key file is for development only")
    path = settings.resolved_audit_key_file
    created = not path.exists() and write_private_file(path, _new_pem(), replace=False)
    logger.warning(
        "%s local audit signing key %s: suitable for the demo only; set UR_AUDIT_SIGNING_KEY "
        "for real use", "created" if created else "using", path)
    return parse_audit_key(read_private_file(path, "audit signing key file"), str(path))


def load_verify_keys(settings: Settings, signer: AuditSigner | None
                     ) -> dict[str, Ed25519PublicKey]:
    """Trusted public keys by key id: the signer's and UR_AUDIT_VERIFY_KEYS."""
    keys: dict[str, Ed25519PublicKey] = {}
    if signer is not None:
        keys[signer.key_id] = signer.public_key
    for number, text in enumerate(filter(None, (t.strip() for t in
                                                settings.audit_verify_keys.split(","))), 1):
        try:
            public = Ed25519PublicKey.from_public_bytes(decode_b64(text))
        except ValueError:
            raise ConfigError(f"UR_AUDIT_VERIFY_KEYS: entry {number} is not a base64 raw "
                              "Ed25519 public key (32 bytes)") from None
        keys[key_id_of(public)] = public
    return keys


def parse_audit_key(pem: bytes, source: str) -> AuditSigner:
    """Read a PEM Ed25519 private key; errors name the source, never the key."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{source}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{source}: the audit signing key must be Ed25519")
    return AuditSigner(key)


def verify_signature(keys: Mapping[str, Ed25519PublicKey], key_id: str, signature: bytes,
                     message: bytes) -> str | None:
    """None if valid, else why not (unknown key or bad signature)."""
    public = keys.get(key_id)
    if public is None:
        return f"signed by unknown key {key_id}"
    try:
        public.verify(signature, message)
    except InvalidSignature:
        return "signature does not verify"
    return None


def _new_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
