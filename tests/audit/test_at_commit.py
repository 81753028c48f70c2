"""Entries appended at the commit of the reader's own transaction (`append_at_commit`):
written with that COMMIT on PostgreSQL, on their own if it rolls back, never lost, and a
failed append makes the commit itself fail (fail closed)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from audit_support import event
from psycopg._pipeline_base import BasePipeline
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from unified_record.audit import AuditLog, AuditSigner, AuditWriteError, verify_audit_log


def _valid(engine: Engine, signer: AuditSigner, expected: int) -> None:
    report = verify_audit_log(engine, {signer.key_id: signer.public_key})
    assert report.ok, report.summary()
    assert report.entries == expected


def _postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def test_entries_are_written_by_the_readers_commit(log: AuditLog, engine: Engine,
                                                   signer: AuditSigner) -> None:
    commits: list[int] = []
    sa.event.listen(engine, "commit", lambda _conn: commits.append(1))
    with Session(engine) as session:
        session.execute(sa.text("SELECT 1"))  # the request's reads
        log.append_at_commit(session, [event(1), event(2)])
        if _postgres(engine):  # not yet: they go in with the request's COMMIT
            assert log.entries() == []
        session.commit()
    assert [e.event["entity"][-1]["what"]["reference"] for e in log.entries()] == [
        "Condition/c1/_history/1", "Condition/c2/_history/1"]
    if _postgres(engine):
        assert len(commits) == 1  # no transaction of their own
    _valid(engine, signer, 2)


def test_the_chain_head_is_not_held_while_the_reader_commits(
        log: AuditLog, engine: Engine, signer: AuditSigner) -> None:
    """On PostgreSQL the appends and the COMMIT go in one pipeline: by the time
    SQLAlchemy commits, the server has committed them and let go of the head, so a request
    whose thread then waits for the GIL holds up no other request's append."""
    seen: list[tuple[int, bool]] = []

    def from_elsewhere(_conn: object) -> None:
        with engine.connect() as other:
            entries = other.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar_one()
            free = True
            if _postgres(engine):
                try:
                    other.execute(sa.text("SELECT seq FROM audit_chain_head WHERE id = 1 "
                                          "FOR UPDATE NOWAIT"))
                except sa.exc.OperationalError:  # LockNotAvailable
                    free = False
                other.rollback()
            seen.append((entries, free))

    with Session(engine) as session:
        session.execute(sa.text("SELECT 1"))
        log.append_at_commit(session, [event(1), event(2), event(3), event(4)])
        sa.event.listen(engine, "commit", from_elsewhere)
        try:
            session.commit()
        finally:
            sa.event.remove(engine, "commit", from_elsewhere)
    assert seen[-1] == (4, True)
    report = verify_audit_log(engine, {signer.key_id: signer.public_key})
    assert report.ok and report.checkpoints == 1, report.summary()  # entry 4: signed after


def test_the_entries_and_the_commit_take_one_round_trip(
        log: AuditLog, engine: Engine, signer: AuditSigner,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL each Sync of a pipeline is a round trip to the server: the appends and
    the COMMIT must share one. (SQLite has no pipeline: there they are written on their own.)"""
    syncs: list[int] = []
    enqueue_sync = BasePipeline._enqueue_sync

    def counted(pipeline: BasePipeline) -> None:
        syncs.append(1)
        enqueue_sync(pipeline)

    with Session(engine) as session:
        session.execute(sa.text("SELECT 1"))
        log.append_at_commit(session, [event(1), event(2)])
        monkeypatch.setattr(BasePipeline, "_enqueue_sync", counted)
        session.commit()
    monkeypatch.undo()
    assert len(syncs) == (1 if _postgres(engine) else 0)
    assert len(log.entries()) == 2
    _valid(engine, signer, 2)


def test_entries_of_a_transaction_that_rolls_back_are_written_on_their_own(
        log: AuditLog, engine: Engine, signer: AuditSigner) -> None:
    with Session(engine) as session:
        session.execute(sa.text("SELECT 1"))
        log.append_at_commit(session, [event(1)])
        session.rollback()
    with Session(engine) as session:  # closed without commit or rollback
        session.execute(sa.text("SELECT 1"))
        log.append_at_commit(session, [event(2)])
    assert len(log.entries()) == 2
    _valid(engine, signer, 2)


def test_an_append_that_fails_makes_the_commit_fail(log: AuditLog, engine: Engine,
                                                    signer: AuditSigner) -> None:
    log.append(event(0))
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_chain_head"))
    with Session(engine) as session, pytest.raises(AuditWriteError):
        session.execute(sa.text("SELECT 1"))
        log.append_at_commit(session, [event(1)])
        session.commit()
    assert len(log.entries()) == 1


def test_concurrent_readers_commits_keep_one_chain(log: AuditLog, engine: Engine,
                                                   signer: AuditSigner) -> None:
    def request(number: int) -> None:
        with Session(engine) as session:
            session.execute(sa.text("SELECT 1"))
            log.append_at_commit(session, [event(number), event(number + 1000)])
            session.commit()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(request, range(40)))
    _valid(engine, signer, 80)
