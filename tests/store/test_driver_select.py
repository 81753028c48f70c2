"""A hot SELECT through the driver gives exactly SQLAlchemy's rows, for every shape of its IN
lists, and on PostgreSQL skips SQLAlchemy's execution."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from unified_record.store.driver_select import select_through_driver
from unified_record.store.models import ClientRow

_IDS: sa.BindParameter[Any] = sa.bindparam("ids", expanding=True)
# Constants, a scalar value, and one IN list used twice: what the consent statement has.
STATEMENT: sa.CompoundSelect[Any] = sa.union_all(
    sa.select(sa.literal_column("'own'"), ClientRow.id, ClientRow.created_run)
    .where(ClientRow.id.in_(_IDS), ClientRow.status == "active",
           ClientRow.created_run >= sa.bindparam("run")),
    sa.select(sa.literal_column("'merged'"), ClientRow.replaced_by, ClientRow.created_run)
    .where(ClientRow.replaced_by.in_(_IDS), ClientRow.id.in_(sa.bindparam("also",
                                                                        expanding=True))))


@pytest.fixture
def session(engine: Engine) -> Any:
    with Session(engine) as session:
        session.add_all([
            ClientRow(id="C1", status="active", replaced_by=None, created_run=1, updated_run=1),
            ClientRow(id="C2", status="active", replaced_by=None, created_run=2, updated_run=2),
            ClientRow(id="C3", status="retired", replaced_by="C1", created_run=3,
                      updated_run=3),
            ClientRow(id="C4", status="retired", replaced_by="C2", created_run=1,
                      updated_run=4)])
        session.commit()
        yield session


@pytest.mark.parametrize("values", [
    {"ids": ["C1"], "run": 1, "also": ["C3"]},
    {"ids": ["C1", "C2"], "run": 2, "also": ["C3", "C4"]},
    {"ids": ["C2", "C1"], "run": 0, "also": ["C4", "C3"]},  # same shape, other values
    {"ids": ["C1", "C2", "C9"], "run": 1, "also": []},
    {"ids": [], "run": 1, "also": ["C3"]},
])
def test_rows_are_sqlalchemys_for_every_shape(session: Session,
                                              values: dict[str, Any]) -> None:
    expected = sorted(tuple(row) for row in session.execute(STATEMENT, values))
    assert sorted(select_through_driver(session, STATEMENT, values)) == expected
    again = {**values, "run": 3}  # the cached SQL binds the new values, not the first ones
    assert sorted(select_through_driver(session, STATEMENT, again)) == sorted(
        tuple(row) for row in session.execute(STATEMENT, again))


def test_postgresql_skips_sqlalchemys_execution(session: Session, engine: Engine) -> None:
    executed: list[str] = []

    def seen(*args: Any) -> None:
        executed.append(args[2])

    event.listen(engine, "before_cursor_execute", seen)
    try:
        rows = select_through_driver(session, STATEMENT, {"ids": ["C1", "C2"], "run": 2,
                                                          "also": ["C3"]})
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert sorted(rows) == [("merged", "C1", 3), ("own", "C2", 2)]
    through_sqlalchemy = [sql for sql in executed if "client.replaced_by" in sql]
    assert len(through_sqlalchemy) == (0 if engine.dialect.name == "postgresql" else 1)
