"""Alembic environment: runs on the connection `store.db.migrate` hands over.

Using the caller's connection (rather than a URL) keeps URL options such as a PostgreSQL
search_path in force, so migrations land in the schema the caller chose.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from unified_record.store.db import make_engine
from unified_record.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER much
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection or sqlalchemy.url given to the migrations")
    engine = make_engine(url)
    try:
        with engine.connect() as new_connection:
            _run(new_connection)
            new_connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; use store.migrate")
run_migrations_online()
