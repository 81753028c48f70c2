"""Helpers of the web-page tests: a linked sample store, and the CSRF token of a page."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from unified_record.config import Settings
from unified_record.ingest import Pipeline
from unified_record.linkage.index import MODEL_FILE_NAME, current_clusters, run_full_linkage
from unified_record.security import load_or_create_keys

REPO = Path(__file__).resolve().parents[2]
SAMPLE, MAPPINGS = REPO / "synthetic_data" / "sample", REPO / "mappings"


@dataclass
class Sample:
    settings: Settings
    index: dict[str, str]  # source Patient id -> client id


def build_sample(database_url: str, data_dir: Path, public_url: str) -> Sample:
    settings = Settings(database_url=database_url, data_dir=data_dir, public_url=public_url)
    keyring, blind_index = load_or_create_keys(settings)
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, workers=1) as pipeline:
        pipeline.ingest_dataset(SAMPLE)
        run_full_linkage(pipeline.sessions, keyring, blind_index,
                         model_path=data_dir / MODEL_FILE_NAME)
        with pipeline.sessions() as session:
            index = current_clusters(session)
        pipeline.engine.dispose()
    return Sample(settings, index)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)
