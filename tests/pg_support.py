"""PostgreSQL for tests: each test gets a schema of its own, so parallel workers never
collide, dropped when it is done."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("UR_TEST_DATABASE_URL", "")
# For tests of what exists only on PostgreSQL (the benches that measure its commits and its
# backends). Tests run on SQLite always and on PostgreSQL where UR_TEST_DATABASE_URL is set:
# .ci/run always sets it, so CI runs these, and its runs report 0 skipped.
needs_pg = pytest.mark.skipif(not PG_URL, reason="needs PostgreSQL (UR_TEST_DATABASE_URL; "
                              ".ci/run sets it)")


@contextmanager
def pg_schema(base_url: str = PG_URL) -> Iterator[str]:
    """A URL of `base_url`'s database whose search path is a fresh, empty schema."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
