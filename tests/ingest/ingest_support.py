"""Paths and keys for the ingest tests (importable by name, unlike conftest)."""

from __future__ import annotations

import os
from pathlib import Path

from unified_record.security import BlindIndex, KeyRing

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "synthetic_data" / "sample"
MAPPINGS = REPO / "mappings"


def make_keys() -> tuple[KeyRing, BlindIndex]:
    return KeyRing({"k1": os.urandom(32)}, "k1"), BlindIndex(os.urandom(32))
