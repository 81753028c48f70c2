"""A fresh database for the web-page tests, once per module and backend (the sample is
ingested and linked into it by `ui_support.build_sample`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_support import PG_URL, pg_schema

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
    with pg_schema() as url:
        yield url, tmp / "var"
