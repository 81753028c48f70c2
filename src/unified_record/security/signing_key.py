"""The built-in token issuer's signing key, kept like the data keys.

Production reads a PEM private key from ``UR_TOKEN_SIGNING_KEY`` (the text) or
``UR_TOKEN_SIGNING_KEY_FILE`` (a path, mode 0600) and refuses to start without one. The
embedded demo needs no configuration: in development an EC P-256 key is made on first use
at ``UR_DATA_DIR/token-signing-key.pem`` (mode 0600) and reused afterwards, so tokens
survive a restart and every worker signs with the same key.

EC P-256 keys sign ES256, RSA keys (2048 bits or more) sign RS256. The key id is the
RFC 7638 thumbprint, so the same key always has the same id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, KeySet, RSAKey

from unified_record.config import ConfigError, Settings
from unified_record.security._private_file import read_private_file, write_private_file

__all__ = ["SigningKey", "load_or_create_signing_key"]

logger = logging.getLogger(__name__)

MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class SigningKey:
    key: ECKey | RSAKey
    alg: str

    @property
    def kid(self) -> str:
        kid = self.key.kid
        assert kid is not None
        return kid

    def public_jwks(self) -> dict[str, Any]:
        """The JWKS document `/oauth/jwks` publishes (public parts only)."""
        public = self.key.as_dict(private=False)
        return {"keys": [{**public, "use": "sig", "alg": self.alg, "kid": self.kid}]}

    def public_key_set(self) -> KeySet:
        return KeySet.import_key_set(self.public_jwks())  # type: ignore[arg-type]

    def __repr__(self) -> str:  # never show the key
        return f"SigningKey(alg={self.alg!r}, kid={self.kid!r})"


def load_or_create_signing_key(settings: Settings) -> SigningKey:
    """The issuer's key, from the environment, the configured file, or the development file."""
    if settings.token_signing_key:
        return parse_signing_key(settings.token_signing_key.encode("utf-8"),
                                 "UR_TOKEN_SIGNING_KEY")
    if settings.token_signing_key_file is not None:
        path = settings.token_signing_key_file
        return parse_signing_key(read_private_file(path, "token signing key file"), str(path))
    if settings.env == "production":
        raise ConfigError(
            "production setting needs UR_TOKEN_SIGNING_KEY or UR_TOKEN_SIGNING_KEY_FILE; "
            "the local signing key file is for development only"
        )
    path = settings.resolved_signing_key_file
    created = not path.exists() and write_private_file(path, _new_pem(), replace=False)
    logger.warning(
        "%s local token signing key %s: suitable for the demo only; "
        "set UR_TOKEN_SIGNING_KEY or UR_TOKEN_SIGNING_KEY_FILE for real use",
        "created" if created else "using",
        path,
    )
    return parse_signing_key(read_private_file(path, "token signing key file"), str(path))


def parse_signing_key(pem: bytes, source: str) -> SigningKey:
    """Read a PEM private key; errors name the source, never the key."""
    try:
        native = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            f"{source}: not an unencrypted PEM private key (EC P-256 or RSA)") from None
    key: ECKey | RSAKey
    if isinstance(native, ec.EllipticCurvePrivateKey) and isinstance(native.curve,
                                                                     ec.SECP256R1):
        key, alg = ECKey.import_key(native), "ES256"
    elif isinstance(native, rsa.RSAPrivateKey) and native.key_size >= MIN_RSA_BITS:
        key, alg = RSAKey.import_key(native), "RS256"
    else:
        raise ConfigError(
            f"{source}: the token signing key must be EC P-256 or RSA of at least "
            f"{MIN_RSA_BITS} bits")
    key.ensure_kid()
    return SigningKey(key, alg)


def _new_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
