from __future__ import annotations

from collections.abc import Iterator

import pytest
from ingest_support import MAPPINGS, make_keys

from unified_record.ingest import Pipeline


@pytest.fixture
def pipeline(database_url: str) -> Iterator[Pipeline]:
    keyring, blind_index = make_keys()
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, workers=1) as p:
        yield p
    p.engine.dispose()
