"""Migrations build exactly the schema the models describe, on every backend."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from store_support import own_bodies, patient

from unified_record.security import BlindIndex, KeyRing
from unified_record.store import (
    Base,
    ResourceRow,
    ResourceVersionRow,
    UnitOfWork,
    make_engine,
    migrate,
)
from unified_record.store.db import (
    BULK_CACHE_MIB,
    BULK_WAL_MIB,
    SQLITE_PAGE_BYTES,
    alembic_config,
)
from unified_record.store.resources import seal_body


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
            page_bytes = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
            assert pages == (BULK_WAL_MIB * 1024 * 1024 // page_bytes if bulk_load else 1000)
        else:
            value = conn.exec_driver_sql("SHOW synchronous_commit").scalar_one()
            assert value == ("off" if bulk_load else "on")
    engine.dispose()


@pytest.mark.parametrize("bulk_load", [False, True])
def test_a_new_sqlite_database_gets_large_pages_and_an_old_one_keeps_its_own(
        tmp_path: Path, bulk_load: bool) -> None:
    """Encrypted bodies and raw messages fit in their rows' pages; a database made with
    SQLite's default 4 KiB pages is used as it is, its bulk WAL limit counted in its pages."""
    new_file, old_file = tmp_path / "new.db", tmp_path / "old.db"
    with sqlite3.connect(old_file) as old:  # as SQLite makes one by default
        old.execute("CREATE TABLE kept (x)")
        old.execute("INSERT INTO kept VALUES (1)")
    for path, page_bytes in ((new_file, SQLITE_PAGE_BYTES), (old_file, 4096)):
        engine = make_engine(f"sqlite:///{path}", bulk_load=bulk_load)
        migrate(engine)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA page_size").scalar_one() == page_bytes
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            if bulk_load:
                pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
                assert pages * page_bytes == BULK_WAL_MIB * 1024 * 1024
            if path == old_file:
                assert conn.exec_driver_sql("SELECT x FROM kept").scalar_one() == 1
        engine.dispose()
    with sqlite3.connect(new_file) as raw:  # the file itself, as any SQLite reads it
        assert raw.execute("PRAGMA page_size").fetchone()[0] == SQLITE_PAGE_BYTES


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _readable(uow: UnitOfWork, ids: list[str]) -> dict[str, list[Any]]:
    """Every version of each Patient through the repository: history, then each vread."""
    with uow:
        return {rid: [uow.resources.history("Patient", rid),
                      [uow.resources.vread("Patient", rid, v.version_id)
                       for v in uow.resources.versions("Patient", rid)]] for rid in ids}


def test_0009_upgrades_a_store_that_kept_each_body_twice(
    database_url: str, cipher: KeyRing, blind_index: BlindIndex
) -> None:
    """A store at 0008 (every version row with its body, the current one's repeating
    `resource.body`) reads the same at head, the current versions' rows without a body."""
    migrate(database_url, "0008")
    engine = make_engine(database_url)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    history: dict[str, list[dict[str, Any]]] = {  # oldest first
        "p1": [patient("p1"), patient("p1", gender="male"),
               {"resourceType": "Patient", "id": "p1"}],  # deleted
        "p2": [patient("p2")],
    }
    with engine.begin() as conn:  # written as the store wrote it before 0009
        for rid, versions in history.items():
            for number, body in enumerate(versions, start=1):
                when = at + timedelta(minutes=number)
                envelope = seal_body(cipher, body, number, when)
                row = {"resource_type": "Patient", "id": rid, "version_id": number,
                       "last_updated": when, "deleted": "gender" not in body and number > 1,
                       "inbound_message_id": None, "key_id": "k1", "body": envelope}
                conn.execute(sa.insert(ResourceVersionRow), row)
            conn.execute(sa.insert(ResourceRow), {
                **row, "source_feed": "council_asc", "source_org": None,
                "source_record_id": rid, "security_labels": ""})
    uow = UnitOfWork(engine, cipher, blind_index)
    before = _readable(uow, list(history))
    assert before == {rid: [versions[::-1], versions[::-1]] for rid, versions in history.items()}
    with uow:
        assert own_bodies(uow.session, "Patient", "p1") == {1: True, 2: True, 3: True}

    migrate(database_url)
    assert _revision(engine) == ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert _readable(uow, list(history)) == before
    with uow:
        assert own_bodies(uow.session, "Patient", "p1") == {1: True, 2: True, 3: False}
        assert own_bodies(uow.session, "Patient", "p2") == {1: False}
    engine.dispose()


def test_0009_downgrade_puts_the_current_bodies_back(
    database_url: str, cipher: KeyRing, blind_index: BlindIndex
) -> None:
    migrate(database_url)
    engine = make_engine(database_url)
    uow = UnitOfWork(engine, cipher, blind_index)
    with uow:
        uow.resources.put(patient("p1"), source_feed="f", source_org=None, source_record_id="1")
        uow.resources.put(patient("p1", gender="male"), source_feed="f", source_org=None,
                          source_record_id="1")
        uow.resources.put(patient("p2"), source_feed="f", source_org=None, source_record_id="2")
        uow.commit()
    before = _readable(uow, ["p1", "p2"])
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0008")
    assert _revision(engine) == "0008"
    with engine.connect() as conn:
        columns = {c["name"]: c for c in sa.inspect(conn).get_columns("resource_version")}
        assert not columns["body"]["nullable"] and not columns["key_id"]["nullable"]
        copies = conn.execute(sa.text(
            "SELECT v.body = r.body, v.key_id = r.key_id FROM resource_version v JOIN resource r"
            " ON r.resource_type = v.resource_type AND r.id = v.id "
            "AND r.version_id = v.version_id")).all()
    assert [tuple(map(bool, row)) for row in copies] == [(True, True)] * 2
    assert _readable(uow, ["p1", "p2"]) == before
    migrate(database_url)
    assert _readable(uow, ["p1", "p2"]) == before
    with uow:
        assert own_bodies(uow.session, "Patient", "p1") == {1: True, 2: False}
    engine.dispose()


def test_every_migration_downgrades_to_an_empty_database_and_up_again(
        database_url: str) -> None:
    """Each downgrade runs (a constraint dropped by a name the naming convention prefixed
    again failed at 0003), leaves no table behind, and the upgrades rebuild the schema."""
    migrate(database_url)
    engine = make_engine(database_url)
    config = alembic_config()
    revisions = [s.revision for s in ScriptDirectory.from_config(config).walk_revisions()]
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        for below in [*revisions[1:], "base"]:
            command.downgrade(config, below)
    with engine.connect() as conn:
        left = set(sa.inspect(conn).get_table_names()) - {"alembic_version"}
    assert left == set()
    migrate(database_url)
    with engine.connect() as conn:
        assert not compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()


def _storage(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT c.relname || '.' || a.attname, a.attstorage FROM pg_attribute a"
            " JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            " AND a.attname IN ('raw', 'body')")).all()
    return {str(name): str(storage) for name, storage in rows}


def test_0010_stores_encrypted_columns_uncompressed_on_postgresql(database_url: str) -> None:
    """Envelopes are random bytes: PostgreSQL is not asked to compress them (EXTERNAL, not
    the default EXTENDED); the downgrade asks again. SQLite has no such setting, and the
    migration passes it by."""
    migrate(database_url)
    engine = make_engine(database_url)
    config = alembic_config()
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0009")
        assert _revision(engine) == "0009"
        migrate(database_url)
        assert _revision(engine) == "0010"
        engine.dispose()
        return
    encrypted = {"inbound_message.raw", "resource.body", "resource_version.body"}
    assert _storage(engine) == dict.fromkeys(encrypted, "e")
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0009")
    assert _storage(engine) == dict.fromkeys(encrypted, "x")
    migrate(database_url)
    assert _storage(engine) == dict.fromkeys(encrypted, "e")
    engine.dispose()
