"""Migrations build exactly the schema the models describe, on every backend."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from unified_record.store import Base, make_engine, migrate
from unified_record.store.db import BULK_CACHE_MIB, BULK_WAL_PAGES, alembic_config


def test_migrations_reach_head_and_rerun_as_no_op(database_url: str, engine: Engine) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    migrate(database_url)  # already at head: nothing to do, nothing fails
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head
        tables = set(sa.inspect(conn).get_table_names())
    assert {"inbound_message", "resource", "resource_version", "search_index"} <= tables


def test_migrated_schema_matches_models(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_tables_land_in_the_schema_of_the_url(engine: Engine) -> None:
    # On PostgreSQL the URL's search_path names a per-test schema; nothing goes to public.
    with engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            return
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        assert schema.startswith("t_")
        assert "resource" in sa.inspect(conn).get_table_names(schema=schema)
        assert "resource" not in sa.inspect(conn).get_table_names(schema="public")


@pytest.mark.parametrize("bulk_load", [False, True])
def test_bulk_load_engines_commit_without_waiting_for_the_disk(database_url: str,
                                                               bulk_load: bool) -> None:
    """Only a bulk-load engine relaxes commit durability; the default never does."""
    engine = make_engine(database_url, bulk_load=bulk_load)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            value = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
            assert value == (1 if bulk_load else 2)  # NORMAL : FULL
            cache = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
            assert cache == (-BULK_CACHE_MIB * 1024 if bulk_load else -2000)  # KiB; default
            pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
            assert pages == (BULK_WAL_PAGES if bulk_load else 1000)
        else:
            value = conn.exec_driver_sql("SHOW synchronous_commit").scalar_one()
            assert value == ("off" if bulk_load else "on")
    engine.dispose()
