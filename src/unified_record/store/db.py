"""Engines and migrations: one place that knows the differences between SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from unified_record.store.models import (
    ResourceRow,
    ResourceVersionRow,
    SearchIndexRow,
    table_of,
)

__all__ = ["deferred_for_bulk_load", "make_engine", "make_session_factory", "migrate",
           "refresh_statistics"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BULK_CACHE_MIB = 256  # the most one bulk-loading SQLite connection keeps in memory
BULK_WAL_MIB = 400  # what a bulk load's SQLite WAL grows to between checkpoints
SQLITE_PAGE_BYTES = 16_384  # the page size of a database this creates (SQLite's default: 4,096)


def make_engine(url: str, *, bulk_load: bool = False, pool_size: int | None = None) -> Engine:
    """An engine tuned for its backend.

    `pool_size` (PostgreSQL): connections kept open for reuse; past it, up to 10 more are
    opened and closed again after each use. A server should keep every connection its
    requests can hold at once (the API: `api.app`): each one opened afresh costs a new
    PostgreSQL backend, which must read the catalog and plan every statement anew.

    SQLite: WAL (readers never block the writer), foreign keys on, and SQLAlchemy emits BEGIN
    itself so that SELECTs, DDL and SAVEPOINTs all run inside real transactions. A new
    database gets pages of `SQLITE_PAGE_BYTES`: rows of encrypted bodies and raw messages
    are 1 to 4 KB, so a 4 KiB page held one to three of them and a GP Bundle's row often
    spilled onto an overflow page; with larger pages several share one, and fewer pages are
    written per commit. A 100,000-person load ran 7 to 17% faster (docs/benchmarks.md,
    Ingest). A database made before keeps its page size.
    PostgreSQL: pre-ping, so connections dropped by a restart are replaced transparently.

    `bulk_load` is for loading files that stay on disk until the load is done: commits do
    not wait for the disk (SQLite `synchronous=NORMAL` in WAL mode, PostgreSQL
    `synchronous_commit=off`). Neither can corrupt the database; a power cut may lose the
    last few commits, which re-running the idempotent load restores. Never use it where a
    commit is a promise to a sender (the MLLP listener acknowledges only durable commits).
    SQLite also gets a page cache of up to `BULK_CACHE_MIB` for it: the search index and
    the primary keys take random keys, and past the default 2 MiB nearly every insert
    reads its B-tree pages from the file again (see docs/benchmarks.md, Ingest). And its
    WAL is copied back into the database every `BULK_WAL_MIB`, not every 1,000 pages: a
    batch's random inserts dirty tens of thousands of index pages, so at the default every
    commit was followed by a checkpoint that wrote each page again, and a page changed by
    the next commits too was written once per commit instead of once per checkpoint. The
    last connection to close checkpoints the rest and removes the WAL file.
    """
    backend = sa.make_url(url).get_backend_name()
    if backend != "sqlite":
        engine = sa.create_engine(url, pool_pre_ping=True,
                                  **({"pool_size": pool_size} if pool_size else {}))
        if bulk_load and backend == "postgresql":
            sa.event.listen(engine, "connect", _postgresql_bulk_on_connect)
        return engine
    engine = sa.create_engine(url)
    sa.event.listen(engine, "connect", _sqlite_bulk_on_connect if bulk_load
                    else _sqlite_on_connect)
    sa.event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def refresh_statistics(engine: Engine) -> None:
    """Update the planner's statistics after a bulk load (PostgreSQL; SQLite needs none).

    Without them PostgreSQL plans `resource_type = ? AND id IN (...)` on a freshly filled
    table as a scan of every row of that type (measured: 30-100 ms a query at 240,000
    rows, against 1 ms with statistics), and autovacuum may be off or not yet have run.
    Only the columns that queries select by are sampled: not the encrypted bodies and raw
    messages, which ANALYZE would otherwise read back from TOAST and sort to no use.
    """
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        conn.execute(sa.text(
            "ANALYZE inbound_message (id, feed, content_hash, message_control_id, status), "
            "resource (resource_type, id, source_feed, source_record_id, inbound_message_id), "
            "resource_version (resource_type, id, version_id, inbound_message_id), "
            "search_index (resource_type, resource_id, param, value_hash)"))
        conn.commit()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _sqlite_on_begin)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_BYTES}")  # only a new database takes it
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


def _sqlite_bulk_on_connect(dbapi_connection: Any, record: Any) -> None:
    _sqlite_on_connect(dbapi_connection, record)
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA cache_size=-{BULK_CACHE_MIB * 1024}")  # negative: KiB
        cursor.execute(f"PRAGMA wal_autocheckpoint={_bulk_wal_pages(cursor)}")
    finally:
        cursor.close()


def _bulk_wal_pages(cursor: Any) -> int:
    """`BULK_WAL_MIB` in pages of this database's size."""
    page_bytes = cursor.execute("PRAGMA page_size").fetchone()[0]
    return int(BULK_WAL_MIB * 1024 * 1024 // page_bytes)


def _postgresql_bulk_on_connect(dbapi_connection: Any, _record: Any) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")
    dbapi_connection.commit()


def _sqlite_on_begin(connection: sa.Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (callers often use ids afterwards)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config() -> Config:
    """An Alembic configuration built in code, pointing at the migrations in this package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


def migrate(url: str | Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` (``alembic upgrade head`` by default).

    The connection is handed to env.py, so URL options such as a PostgreSQL search_path
    decide where the tables go.
    """
    engine = make_engine(url) if isinstance(url, str) else url
    config = alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            if revision == "head":  # a bulk load that was killed may have left them dropped
                _restore_deferred(connection)
    finally:
        if isinstance(url, str):
            engine.dispose()


def _deferred_index() -> sa.Index:
    return next(i for i in table_of(SearchIndexRow).indexes
                if i.name == "ix_search_index_param_value_hash")


def _deferred_foreign_keys(connection: sa.Connection
                           ) -> list[tuple[sa.ForeignKeyConstraint, bool]]:
    """Each resource row's and version row's reference to its inbound message, and whether
    the database has it now. None on SQLite, where they are part of the table itself."""
    if connection.dialect.name != "postgresql":
        return []
    inspector = sa.inspect(connection)
    return [(fk, fk.name in {f["name"] for f in inspector.get_foreign_keys(fk.table.name)})
            for model in (ResourceRow, ResourceVersionRow)
            for fk in table_of(model).foreign_key_constraints]


def _restore_deferred(connection: sa.Connection) -> None:
    """Build what `deferred_for_bulk_load` left out, if it is missing."""
    _deferred_index().create(connection, checkfirst=True)
    for fk, present in _deferred_foreign_keys(connection):
        if not present:
            connection.execute(sa.schema.AddConstraint(fk))  # checks every row as it is added


@contextmanager
def deferred_for_bulk_load(engine: Engine) -> Iterator[None]:
    """During a bulk load into an empty store, leave out the blind index's lookup index
    (param, value hash) and, on PostgreSQL, the resource tables' foreign keys to their
    inbound message; build them once at the end.

    Each row's keyed hash is random, so every batch's commit rewrote most of that index's
    pages (at 100,000 people: a quarter of the loading process's CPU went to the search
    index); built at the end from sorted rows it takes a few seconds. Nothing a load reads
    needs it: the ingest pipeline finds resources by id and source record, and the client
    index is empty until the first `link`. Searches that run meanwhile are correct but scan.
    PostgreSQL checks a foreign key with a trigger per inserted row that looks up and
    share-locks the message row: a tenth of the server's CPU during a load. The pipeline
    stores every message before the resources that name it, and adding the constraints at
    the end checks every row again in one join, so nothing goes unchecked.
    A load into a store that already holds resources keeps all of them as it goes (the
    rebuild would cost more than the load saves). If the process dies first, the next
    `migrate` (every command and the API run it at start) builds them again.
    """
    with engine.begin() as connection:
        empty = connection.execute(sa.select(SearchIndexRow.id).limit(1)).first() is None
        if empty:
            _deferred_index().drop(connection, checkfirst=True)
            for fk, present in _deferred_foreign_keys(connection):
                if present:
                    connection.execute(sa.schema.DropConstraint(fk))
    try:
        yield
    finally:
        if empty:
            with engine.begin() as connection:
                _restore_deferred(connection)
