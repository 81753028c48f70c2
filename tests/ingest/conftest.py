from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from unified_record.ingest import Pipeline
from unified_record.security import BlindIndex, KeyRing

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "synthetic_data" / "sample"
MAPPINGS = REPO / "mappings"


def make_keys() -> tuple[KeyRing, BlindIndex]:
    return KeyRing({"k1": os.urandom(32)}, "k1"), BlindIndex(os.urandom(32))


@pytest.fixture
def pipeline(database_url: str) -> Iterator[Pipeline]:
    keyring, blind_index = make_keys()
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, workers=1) as p:
        yield p
    p.engine.dispose()
