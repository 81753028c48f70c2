"""Public keys published at a URL (an identity provider's or a client's JWKS), cached.

Keys are fetched on first use and kept for `ttl` seconds. A key id not in the cache
triggers one early refetch (providers rotate by publishing a new key), at most once per
`min_refetch` seconds, so a stream of tokens with made-up key ids cannot hammer the URL.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

__all__ = ["JWKSCache", "JWKSError", "fetch_jwks", "key_set_from_jwks"]

MAX_JWKS_BYTES = 256 * 1024
FETCH_TIMEOUT = 5.0


class JWKSError(Exception):
    """The JWKS could not be fetched or read; the message names the URL, never a key."""


def fetch_jwks(url: str) -> dict[str, Any]:
    """GET a JWKS document (http or https only, bounded size and time)."""
    if not url.startswith(("https://", "http://")):
        raise JWKSError(f"JWKS URL must be http(s): {url}")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:
            body = response.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:
        raise JWKSError(f"cannot fetch JWKS from {url}: {exc.__class__.__name__}") from None
    if len(body) > MAX_JWKS_BYTES:
        raise JWKSError(f"JWKS from {url} is larger than {MAX_JWKS_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError:
        raise JWKSError(f"JWKS from {url} is not JSON") from None
    if not isinstance(document, dict):
        raise JWKSError(f"JWKS from {url} is not a JSON object")
    return document


def key_set_from_jwks(document: Any, source: str) -> KeySet:
    """Import a JWKS of public keys; private key material is refused outright."""
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise JWKSError(f"{source}: expected a JWKS object with a non-empty 'keys' list")
    if any(not isinstance(k, dict) for k in keys):
        raise JWKSError(f"{source}: every entry of 'keys' must be a JSON object")
    if any("d" in k or "p" in k for k in keys):
        raise JWKSError(f"{source}: holds private key material; publish public keys only")
    try:
        return KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError, KeyError):
        raise JWKSError(f"{source}: not a valid JWKS") from None


class JWKSCache:
    """One URL's keys, looked up by key id."""

    def __init__(self, url: str, *, ttl: float = 300.0, min_refetch: float = 30.0,
                 fetch: Callable[[str], dict[str, Any]] = fetch_jwks,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self._ttl = ttl
        self._min_refetch = min_refetch
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")

    def get(self, kid: str | None) -> Key | None:
        """The key with this id (or the only key, when the token names none)."""
        with self._lock:
            now = self._clock()
            since = now - self._fetched_at
            if since > self._ttl or (self._keys is None and since >= self._min_refetch):
                self._refresh(now)
            key = _pick(self._keys, kid)
            if key is None and now - self._fetched_at >= self._min_refetch:
                self._refresh(now)
                key = _pick(self._keys, kid)
            return key

    def _refresh(self, now: float) -> None:
        self._fetched_at = now  # also on failure: do not retry on every request
        self._keys = key_set_from_jwks(self._fetch(self.url), self.url)


def _pick(keys: KeySet | None, kid: str | None) -> Key | None:
    if keys is None:
        return None
    if kid:
        return next((k for k in keys if k.kid == kid), None)
    only = list(keys)
    return only[0] if len(only) == 1 else None
