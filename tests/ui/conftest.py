"""A linked sample store for the web-page tests, built once per module and backend."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from unified_record.config import Settings
from unified_record.ingest import Pipeline
from unified_record.linkage.index import MODEL_FILE_NAME, current_clusters, run_full_linkage
from unified_record.security import load_or_create_keys

REPO = Path(__file__).resolve().parents[2]
SAMPLE, MAPPINGS = REPO / "synthetic_data" / "sample", REPO / "mappings"
PG_URL = os.environ.get("UR_TEST_DATABASE_URL", "")
_backends = ["sqlite"] + (["postgresql"] if PG_URL else [])


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


@pytest.fixture(scope="module", params=_backends)
def sample_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[str, Path]]:
    """(database URL, data folder) of a freshly ingested and linked sample."""
    tmp = tmp_path_factory.mktemp("ui")
    if request.param == "sqlite":
        yield f"sqlite:///{tmp / 'ui.db'}", tmp / "var"
        shutil.rmtree(tmp, ignore_errors=True)
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}", tmp / "var"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)
