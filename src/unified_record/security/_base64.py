"""Base64 for key material: operators paste keys from `openssl rand -base64 32` or from
tools that emit the URL-safe alphabet, with or without padding, so accept all of them."""

from __future__ import annotations

import base64
import binascii


def decode_b64(text: str) -> bytes:
    """Decode standard or URL-safe base64; the ValueError never repeats the input."""
    compact = text.strip().replace("-", "+").replace("_", "/")
    if not compact:
        raise ValueError("key is empty")
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("key is not valid base64") from None


def encode_b64(data: bytes) -> str:
    """Standard padded base64, the form `decode_b64` and most tools read."""
    return base64.b64encode(data).decode("ascii")
