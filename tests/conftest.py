"""Shared fixtures: every database test runs on SQLite and, when UR_TEST_DATABASE_URL is set,
on PostgreSQL too (each test in its own schema, so parallel workers never collide)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_support import PG_URL, pg_schema

REPO_ROOT = Path(__file__).resolve().parents[1]

_backends = ["sqlite"] + (["postgresql"] if PG_URL else [])


@pytest.fixture(params=_backends)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL on each configured backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    with pg_schema() as url:
        yield url


@pytest.fixture
def env(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The command line's environment: a fresh database and data folder."""
    monkeypatch.setenv("UR_DATABASE_URL", database_url)
    monkeypatch.setenv("UR_DATA_DIR", str(tmp_path / "var"))
    return tmp_path
