"""AES-256-GCM key ring with key ids, so data keys can rotate without re-encrypting at once.

Every ciphertext is a self-describing envelope::

    0x01 | len(kid) | kid (ascii) | 12-byte random nonce | AES-GCM ciphertext + 16-byte tag

The envelope header (version and kid) is authenticated together with the caller's aad, so a
ciphertext cannot be relabelled with another key id even if two ids share the same key.
Old keys stay in the ring for decryption; `needs_rotation` finds envelopes to re-encrypt.
"""

from __future__ import annotations

import os
import re
import secrets
import string
import threading
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from unified_record.security._base64 import decode_b64

__all__ = ["DecryptionError", "KeyRing", "generate_key_id"]

ENVELOPE_VERSION = 0x01
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
# Key ids travel in `kid:key,kid:key` lists and in every envelope, so keep them short and
# free of the separators.
_KID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class DecryptionError(Exception):
    """An envelope could not be opened; the message never contains plaintext or key bytes."""


def _check_kid(kid: object) -> str:
    if not isinstance(kid, str) or not _KID_RE.fullmatch(kid):
        raise ValueError("key id must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return kid


def generate_key_id(existing: Collection[str] = ()) -> str:
    """A new id like ``k20261124a``: the date tells operators how old a key is at a glance."""
    stem = "k" + datetime.now(UTC).strftime("%Y%m%d")
    for letter in string.ascii_lowercase:
        if stem + letter not in existing:
            return stem + letter
    while True:  # more than 26 keys in one day: fall back to a random suffix
        candidate = stem + secrets.token_hex(3)
        if candidate not in existing:
            return candidate


def _split_header(envelope: bytes) -> tuple[int, str, bytes]:
    """Return (header length, kid, rest) or raise DecryptionError on a malformed envelope."""
    if len(envelope) < 2 or envelope[0] != ENVELOPE_VERSION:
        raise DecryptionError("not an encrypted envelope (unknown version)")
    kid_len = envelope[1]
    header_len = 2 + kid_len
    if kid_len == 0 or len(envelope) < header_len + NONCE_BYTES + TAG_BYTES:
        raise DecryptionError("encrypted envelope is truncated or malformed")
    try:
        kid = envelope[2:header_len].decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionError("encrypted envelope has a malformed key id") from None
    if not _KID_RE.fullmatch(kid):
        raise DecryptionError("encrypted envelope has a malformed key id")
    return header_len, kid, envelope[header_len:]


class KeyRing:
    """Data keys by key id; the active one encrypts, all of them decrypt."""

    def __init__(self, keys: Mapping[str, bytes], active_kid: str) -> None:
        if not keys:
            raise ValueError("key ring needs at least one key")
        checked: dict[str, bytes] = {}
        for kid, key in keys.items():
            _check_kid(kid)
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise ValueError(f"key {kid!r} must be {KEY_BYTES} bytes (AES-256)")
            checked[kid] = key
        if active_kid not in checked:
            raise ValueError(f"active key id {active_kid!r} is not in the key ring")
        self._keys: Mapping[str, bytes] = MappingProxyType(checked)
        self._ciphers = {kid: AESGCM(key) for kid, key in checked.items()}
        self._active_kid = active_kid

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        """Read ``kid:base64key,kid:base64key``; the first entry is active.

        Errors name the entry position only, never its text, since the text may be a key.
        """
        keys: dict[str, bytes] = {}
        active: str | None = None
        entries = [entry.strip() for entry in spec.split(",")]
        if not any(entries):
            raise ValueError("no data keys given; expected 'key_id:base64-key' entries")
        for position, entry in enumerate(entries, start=1):
            if not entry:
                continue  # tolerate a trailing or doubled comma
            kid, sep, encoded = entry.partition(":")
            kid = kid.strip()
            if not sep:
                raise ValueError(f"data key entry {position}: expected 'key_id:base64-key'")
            if not _KID_RE.fullmatch(kid):
                raise ValueError(
                    f"data key entry {position}: key id must be 1-64 characters "
                    "of A-Z a-z 0-9 . _ -"
                )
            if kid in keys:
                raise ValueError(f"data key entry {position}: duplicate key id")
            try:
                key = decode_b64(encoded)
            except ValueError as exc:
                raise ValueError(f"data key entry {position}: {exc}") from None
            if len(key) != KEY_BYTES:
                raise ValueError(
                    f"data key entry {position}: key must be {KEY_BYTES} bytes "
                    f"(AES-256), got {len(key)}"
                )
            keys[kid] = key
            active = active or kid
        assert active is not None
        return cls(keys, active)

    @property
    def active_kid(self) -> str:
        return self._active_kid

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id the ring can decrypt, for status pages and rotation reports."""
        return tuple(self._keys)

    def __repr__(self) -> str:  # never show key bytes
        return f"KeyRing(key_ids={list(self._keys)!r}, active_kid={self._active_kid!r})"

    def __reduce__(self) -> tuple[type[KeyRing], tuple[dict[str, bytes], str]]:
        """Picklable, so ingest worker processes get the ring once, when their pool starts
        (through the process pipe; the keys are never logged or written anywhere)."""
        return KeyRing, (dict(self._keys), self._active_kid)

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Seal under the active key; bind `aad` (e.g. table, column, row id) to the result."""
        kid = self._active_kid.encode("ascii")
        header = bytes((ENVELOPE_VERSION, len(kid))) + kid
        nonce = _nonces.take()
        sealed = self._ciphers[self._active_kid].encrypt(nonce, plaintext, header + aad)
        return header + nonce + sealed

    def decrypt(self, envelope: bytes, aad: bytes = b"") -> bytes:
        """Open an envelope sealed by any key in the ring, with the same `aad`."""
        header_len, kid, rest = _split_header(envelope)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise DecryptionError(f"encrypted with key id {kid!r}, which is not in the key ring")
        try:
            return cipher.decrypt(
                rest[:NONCE_BYTES], rest[NONCE_BYTES:], envelope[:header_len] + aad
            )
        except InvalidTag:
            raise DecryptionError(
                "encrypted value failed authentication (tampered, or wrong context)"
            ) from None

    @staticmethod
    def key_id_of(envelope: bytes) -> str:
        """The key id an envelope was sealed under, without needing any key."""
        return _split_header(envelope)[1]

    def needs_rotation(self, envelope: bytes) -> bool:
        """True when the envelope is not under the active key and should be re-encrypted."""
        return self.key_id_of(envelope) != self._active_kid

    def with_new_active_key(self) -> tuple[KeyRing, str]:
        """A new ring whose fresh key encrypts; the old keys stay so old data still opens."""
        kid = generate_key_id(self._keys)
        keys = {kid: AESGCM.generate_key(bit_length=256), **self._keys}
        return KeyRing(keys, kid), kid


class _NoncePool:
    """Random 96-bit GCM nonces drawn from the OS in blocks: one getrandom call per 4,096
    nonces instead of one each (the syscall was the bulk of encryption time at ingest).
    A forked child starts a fresh block, so parent and child never share nonces."""

    BLOCK = NONCE_BYTES * 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._buffer = b""
        self._offset = 0

    def take(self) -> bytes:
        with self._lock:
            if self._offset + NONCE_BYTES > len(self._buffer):
                self._buffer, self._offset = os.urandom(self.BLOCK), 0
            nonce = self._buffer[self._offset:self._offset + NONCE_BYTES]
            self._offset += NONCE_BYTES
            return nonce


_nonces = _NoncePool()
os.register_at_fork(after_in_child=_nonces._reset)
