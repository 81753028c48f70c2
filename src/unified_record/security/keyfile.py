"""Where the key ring and blind-index key come from.

Production reads them from ``UR_DATA_KEYS`` and ``UR_INDEX_KEY`` and refuses to start
without them. The embedded demo needs no configuration, so in development a JSON key file
is created on first run (mode 0600) and reused afterwards::

    {"version": 1, "active": kid, "data_keys": {kid: base64, ...}, "index_key": base64}

Losing that file makes the stored data unreadable, so it is never overwritten blindly:
first creation publishes with a hard link (no clobbering a file another process just made)
and rotation keeps every old key.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from unified_record.config import ConfigError, Settings
from unified_record.security._base64 import decode_b64, encode_b64
from unified_record.security._private_file import read_private_file, write_private_file
from unified_record.security.blind_index import BlindIndex
from unified_record.security.keyring import KeyRing, generate_key_id

__all__ = ["load_or_create_keys", "rotate_key_file"]

logger = logging.getLogger(__name__)

KEY_FILE_VERSION = 1
INDEX_KEY_BYTES = 32


def load_or_create_keys(settings: Settings) -> tuple[KeyRing, BlindIndex]:
    """The key ring and blind index for this process, from the environment or the key file."""
    if _env_keys(settings):
        return _keys_from_env(settings)
    if settings.env == "production":
        raise ConfigError(
            "production setting needs UR_DATA_KEYS and UR_INDEX_KEY; "
            "the local key file is for development only"
        )
    path = settings.resolved_key_file
    created = not path.exists() and _create_key_file(path)
    logger.warning(
        "%s local key file %s for encryption at rest: suitable for the demo only; "
        "set UR_DATA_KEYS and UR_INDEX_KEY for real data",
        "created" if created else "using",
        path,
    )
    return _parse_key_file(path, _read_key_file(path))


def rotate_key_file(settings: Settings) -> str:
    """Add a fresh active data key to the key file, keeping the old ones; return its id.

    Running processes keep their loaded keys until restarted. The blind-index key does not
    rotate here: changing it would need every index hash recomputed.
    """
    if settings.data_keys:
        raise ConfigError(
            "keys come from UR_DATA_KEYS: to rotate, prepend a new 'key_id:base64-key' entry "
            "to UR_DATA_KEYS (keep the old entries so existing data still decrypts) and restart"
        )
    _env_keys(settings)  # a lone UR_INDEX_KEY is a configuration mistake; say so
    if settings.env == "production":
        raise ConfigError("production setting needs UR_DATA_KEYS; there is no key file to rotate")
    path = settings.resolved_key_file
    if not path.exists():
        raise ConfigError(f"no key file at {path} to rotate (one is created on first run)")
    document = _read_key_file(path)
    ring, _ = _parse_key_file(path, document)
    kid = generate_key_id(ring.key_ids)
    data_keys = {kid: encode_b64(AESGCM.generate_key(bit_length=256)), **document["data_keys"]}
    _write_atomic(
        path,
        {**document, "version": KEY_FILE_VERSION, "active": kid, "data_keys": data_keys},
        replace=True,
    )
    logger.warning("rotated local key file %s: new active data key %s", path, kid)
    return kid


def _env_keys(settings: Settings) -> bool:
    """True when both keys come from the environment; refuse a half-configured pair."""
    if bool(settings.data_keys) != bool(settings.index_key):
        missing = "UR_INDEX_KEY" if settings.data_keys else "UR_DATA_KEYS"
        raise ConfigError(
            f"UR_DATA_KEYS and UR_INDEX_KEY must be set together; {missing} is missing"
        )
    return bool(settings.data_keys)


def _keys_from_env(settings: Settings) -> tuple[KeyRing, BlindIndex]:
    try:
        ring = KeyRing.parse(settings.data_keys)
    except ValueError as exc:
        raise ConfigError(f"UR_DATA_KEYS: {exc}") from None
    try:
        index = BlindIndex.parse(settings.index_key)
    except ValueError as exc:
        raise ConfigError(f"UR_INDEX_KEY: {exc}") from None
    return ring, index


def _read_key_file(path: Path) -> dict[str, Any]:
    """Read the key file after checking nobody but the owner can read or write it."""
    raw = read_private_file(path, "key file")
    try:
        document = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise ConfigError(f"key file {path} is not valid JSON") from None
    if not isinstance(document, dict):
        raise ConfigError(f"key file {path}: expected a JSON object")
    return document


def _parse_key_file(path: Path, document: dict[str, Any]) -> tuple[KeyRing, BlindIndex]:
    """Validate the key file's fields; errors name the path and field, never a key."""
    if document.get("version") != KEY_FILE_VERSION:
        raise ConfigError(f"key file {path}: unsupported version (expected {KEY_FILE_VERSION})")
    data_keys = document.get("data_keys")
    active = document.get("active")
    index_key = document.get("index_key")
    if not isinstance(data_keys, dict) or not data_keys:
        raise ConfigError(f"key file {path}: 'data_keys' must be a non-empty object")
    if not isinstance(active, str) or active not in data_keys:
        raise ConfigError(f"key file {path}: 'active' must name one of 'data_keys'")
    if not isinstance(index_key, str):
        raise ConfigError(f"key file {path}: 'index_key' must be a base64 string")
    keys: dict[str, bytes] = {}
    for kid, encoded in data_keys.items():
        try:
            if not isinstance(encoded, str):
                raise ValueError("key must be a base64 string")
            keys[kid] = decode_b64(encoded)
        except ValueError as exc:
            raise ConfigError(f"key file {path}: data key {kid!r}: {exc}") from None
    try:
        ring = KeyRing(keys, active)
    except ValueError as exc:
        raise ConfigError(f"key file {path}: {exc}") from None
    try:
        index = BlindIndex.parse(index_key)
    except ValueError as exc:
        raise ConfigError(f"key file {path}: 'index_key': {exc}") from None
    return ring, index


def _create_key_file(path: Path) -> bool:
    """Make a fresh key file; False if another process created one first (use theirs)."""
    kid = generate_key_id()
    document = {
        "version": KEY_FILE_VERSION,
        "active": kid,
        "data_keys": {kid: encode_b64(AESGCM.generate_key(bit_length=256))},
        "index_key": encode_b64(secrets.token_bytes(INDEX_KEY_BYTES)),
    }
    return _write_atomic(path, document, replace=False)


def _write_atomic(path: Path, document: dict[str, Any], *, replace: bool) -> bool:
    """Publish the JSON document as a 0600 file in one step (see `write_private_file`)."""
    data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    return write_private_file(path, data, replace=replace)
