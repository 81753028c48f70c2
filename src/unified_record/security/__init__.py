"""Encryption at rest (AES-GCM key ring) and blind indexes for searchable values."""

from unified_record.security.blind_index import BlindIndex
from unified_record.security.keyfile import load_or_create_keys, rotate_key_file
from unified_record.security.keyring import DecryptionError, KeyRing

__all__ = ["BlindIndex", "DecryptionError", "KeyRing", "load_or_create_keys", "rotate_key_file"]
