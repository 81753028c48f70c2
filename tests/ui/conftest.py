"""A fresh database for the web-page tests, once per module and backend (the sample is
ingested and linked into it by `ui_support.build_sample`)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("UR_TEST_DATABASE_URL", "")
_backends = ["sqlite"] + (["postgresql"] if PG_URL else [])


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
