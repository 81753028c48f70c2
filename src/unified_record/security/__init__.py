"""Encryption at rest (AES-GCM key ring), blind indexes for searchable values, and access
tokens: the built-in issuer, token validation, SMART scopes and the caller they describe."""

from unified_record.security.authorization_server import AuthorizationServer, hash_client_secret
from unified_record.security.blind_index import BlindIndex
from unified_record.security.caller import Caller
from unified_record.security.keyfile import load_or_create_keys, rotate_key_file
from unified_record.security.keyring import DecryptionError, KeyRing
from unified_record.security.scopes import Interaction, Scope, ScopeSet, grant_scopes, parse_scope
from unified_record.security.signing_key import SigningKey, load_or_create_signing_key
from unified_record.security.tokens import InvalidTokenError, TokenValidator

__all__ = [
    "AuthorizationServer",
    "BlindIndex",
    "Caller",
    "DecryptionError",
    "Interaction",
    "InvalidTokenError",
    "KeyRing",
    "Scope",
    "ScopeSet",
    "SigningKey",
    "TokenValidator",
    "grant_scopes",
    "hash_client_secret",
    "load_or_create_keys",
    "load_or_create_signing_key",
    "parse_scope",
    "rotate_key_file",
]
