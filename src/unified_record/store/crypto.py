"""What the store needs from encryption, and how ciphertexts are bound to their rows.

The store depends on these small protocols rather than on `unified_record.security`, so the
layers stay decoupled and tests can plug in any cipher with the same shape.
"""

from __future__ import annotations

from typing import Protocol

__all__ = [
    "BlindIndexer",
    "Cipher",
    "body_aad",
    "break_glass_aad",
    "decision_aad",
    "raw_aad",
    "review_aad",
]


class Cipher(Protocol):
    """Authenticated encryption with key ids (see `unified_record.security.KeyRing`)."""

    @property
    def active_kid(self) -> str: ...

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> bytes: ...

    def decrypt(self, envelope: bytes, aad: bytes = b"") -> bytes: ...

    def key_id_of(self, envelope: bytes) -> str: ...

    def needs_rotation(self, envelope: bytes) -> bool: ...


class BlindIndexer(Protocol):
    """Keyed hashing of searchable values (see `unified_record.security.BlindIndex`)."""

    def digest(self, kind: str, value: str) -> str: ...


def body_aad(resource_type: str, resource_id: str, version_id: int) -> bytes:
    """Context for a resource body: a body moved to another resource or version won't open."""
    return f"{resource_type}/{resource_id}/{version_id}".encode()


def raw_aad(message_id: str) -> bytes:
    """Context for a raw inbound message: it only opens under its own message id."""
    return f"inbound_message/{message_id}".encode()


def decision_aad(decision_id: str) -> bytes:
    """Context for a steward decision's reason: it only opens under its own decision id."""
    return f"link_decision/{decision_id}".encode()


def break_glass_aad(grant_id: str) -> bytes:
    """Context for a break-glass reason: it only opens under its own grant id."""
    return f"break_glass_grant/{grant_id}".encode()


def review_aad(grant_id: str) -> bytes:
    """Context for a break-glass review note: it only opens under its own grant id."""
    return f"break_glass_review/{grant_id}".encode()
