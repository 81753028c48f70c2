"""Blind index: keyed hashes of searchable values, so the database alone reveals no one.

Equal inputs give equal digests (exact-match search works); without the key the digests
cannot be brute-forced from a list of names or NHS numbers. Normalise before hashing.
"""

from __future__ import annotations

import hashlib
import hmac

from unified_record.security._base64 import decode_b64

__all__ = ["BlindIndex"]

MIN_KEY_BYTES = 32
_SEPARATOR = "\x1f"  # ASCII unit separator; never valid in a kind
_REMEMBERED = 100_000  # digests kept per index: a person's details recur on every record


class BlindIndex:
    """HMAC-SHA256 over ``kind + "\\x1f" + value``, as lowercase hex."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
            raise ValueError(f"blind-index key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)  # copied for each digest
        self._recent: dict[tuple[str, str], str] = {}  # in memory only, like the values

    @classmethod
    def parse(cls, b64: str) -> BlindIndex:
        """Read the key from base64 (standard or URL-safe); errors never repeat the key."""
        try:
            key = decode_b64(b64)
        except ValueError as exc:
            raise ValueError(f"blind-index {exc}") from None
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(
                f"blind-index key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}"
            )
        return cls(key)

    def __repr__(self) -> str:  # never show the key
        return "BlindIndex(key=<hidden>)"

    def __reduce__(self) -> tuple[type[BlindIndex], tuple[bytes]]:
        """Picklable (ingest workers get it once, at pool start, through the process pipe)."""
        return BlindIndex, (self._key,)

    def digest(self, kind: str, value: str) -> str:
        """Keyed hash of `value` in the `kind` domain (so a name never matches a postcode)."""
        remembered = self._recent.get((kind, value))
        if remembered is not None:
            return remembered
        if not kind or _SEPARATOR in kind:
            raise ValueError("blind-index kind must be non-empty and contain no \\x1f")
        mac = self._keyed.copy()  # the key's pads hashed once, not for every value
        mac.update((kind + _SEPARATOR + value).encode("utf-8"))
        digest = mac.hexdigest()
        if len(self._recent) >= _REMEMBERED:
            self._recent.clear()
        self._recent[kind, value] = digest
        return digest
