"""The audit log: append-only, hash-chained AuditEvents with signed checkpoints.

Each entry stores the AuditEvent as canonical JSON (keys sorted, no insignificant space,
UTF-8: the RFC 8785 form for the strings and integers events hold) and

    entry_hash = SHA-256( prev_hash + canonical_json )       (prev_hash as 64 hex digits)

where prev_hash is the previous entry's hash (64 zeros for the first). Every
`checkpoint_every` entries, and on demand, the head (seq, entry_hash) is signed with Ed25519,
so a chain rewritten with fresh hashes still fails verification (`audit.verify`).

Appends never fork the chain: the appending transaction starts by locking the single
`audit_chain_head` row (on PostgreSQL one statement locks it, advances it and inserts the
entry, hashed in SQL exactly as `chain_hash` does; on SQLite ``UPDATE ... RETURNING`` takes
the database write lock), so the next append waits and then sees this one. A request's
entries written with its own COMMIT (`append_at_commit`) go to PostgreSQL in one pipeline
with that COMMIT, so the head is locked only while the server runs the two, never while the
request's thread waits for Python's GIL between them (under load that wait held every other
request's append for tens of milliseconds).
`AuditLog` is the only writer and exposes appends and reads only; the migration's triggers
refuse UPDATE and DELETE of entries and checkpoints for everyone else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import psycopg as postgresql_psycopg
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction

from unified_record.audit.events import derive_columns
from unified_record.audit.signing import AuditSigner
from unified_record.security._base64 import encode_b64
from unified_record.store.governance_models import (
    AuditChainHeadRow,
    AuditCheckpointRow,
    AuditEntryRow,
)
from unified_record.store.resources import body_json

__all__ = [
    "AuditLog",
    "AuditRecord",
    "AuditWriteError",
    "canonical_json",
    "chain_hash",
    "checkpoint_message",
]

logger = logging.getLogger(__name__)

_SQLITE_RETRIES = 10
_MAX_BATCH = 200  # requests' appends written in one transaction at most
_WRITE_TIMEOUT = 60.0  # seconds a request waits for its entries before failing closed
_WRITER_IDLE = 30.0  # seconds without appends after which the writer thread ends


@dataclass
class _Pending:
    """One request's entries, waiting for the writer."""

    events: list[dict[str, Any]]
    canonical: list[bytes]
    done: Future[list[AuditRecord]] = field(default_factory=Future)


class AuditWriteError(RuntimeError):
    """The audit log could not be written: the request must fail closed (return nothing)."""


@dataclass(frozen=True)
class AuditRecord:
    """One entry as read back."""

    seq: int
    event_id: str
    recorded: datetime
    client_id: str | None
    decision: str
    break_glass: bool
    event: dict[str, Any]
    entry_hash: str


def canonical_json(value: Any) -> bytes:
    """Keys sorted, no insignificant space, UTF-8: `json.dumps(value, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False)`'s bytes, written by orjson (`body_json`),
    several times faster on an event. `audit.verify` hashes the stored text, so entries
    written before by `json` verify as they did."""
    return body_json(value)


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


def checkpoint_message(seq: int, entry_hash: str, signed_at: datetime, key_id: str) -> bytes:
    """The bytes a checkpoint signature covers."""
    return canonical_json({"log": "unified-record audit", "seq": seq, "entry_hash": entry_hash,
                           "signed_at": signed_at.isoformat(), "key_id": key_id})


class AuditLog:
    """``AuditLog(engine, signer).append(event)``: append-only access to the audit log."""

    def __init__(self, engine: Engine, signer: AuditSigner, checkpoint_every: int = 100) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self._engine = engine
        self._signer = signer
        self._every = checkpoint_every
        self._pending: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()

    def append(self, event: dict[str, Any], session: Session | None = None) -> AuditRecord:
        """Append one AuditEvent (see `audit.events.audit_event`); raise AuditWriteError if
        it cannot be written.

        Without `session` the entry commits at once in its own short transaction (reads and
        denials are audited whether or not the request goes on). With `session` it joins that
        transaction, so a change and its audit entry commit or roll back together; the chain
        head stays locked until that transaction ends, so keep it short.
        """
        canonical = canonical_json(event)
        if session is not None:
            try:
                return self._append(session.connection(), event, canonical)
            except SQLAlchemyError as exc:
                raise AuditWriteError(f"audit log not written ({type(exc).__name__})") from exc
        return self.append_many([event])[0]

    def append_at_commit(self, session: Session, events: Sequence[dict[str, Any]]) -> None:
        """Append one request's entries in `session`'s own transaction, as it commits.

        For a read whose answer is sent only after its transaction commits (the API's): the
        entries go in with that COMMIT, so a failed append makes the commit fail and nothing
        is returned, and the request pays no second transaction, no second COMMIT and no
        hand-over to the writer thread. The appends and the COMMIT are sent in one pipeline
        (`_commit_with_entries`), so the chain head is locked only while the server runs
        them. If the transaction ends without committing (an error
        after the decision), the entries are written on their own as it ends, as
        `append_many` would, so an access is never left unaudited. On SQLite (whose read
        transactions cannot become the writer once another has written) and in a session of
        another engine, this is `append_many`.
        """
        if not events:
            return
        same_database = session.get_bind().engine.url == self._engine.url
        if self._engine.dialect.name != "postgresql" or not same_database:
            self.append_many(events)
            return
        session.info.setdefault(_AT_COMMIT, []).append((self, list(events)))

    def append_many(self, events: Sequence[dict[str, Any]]) -> list[AuditRecord]:
        """Append several entries (one request's decisions): all or none, consecutive in the
        chain, committed before this returns. AuditWriteError if they cannot be written.

        Appends that arrive while another is being written wait and are then written together
        by one writer thread, in one transaction: one lock of the chain head and one durable
        commit for the lot. Under load the chain head is the one thing every request queues
        for, and a commit that waits for the disk would otherwise hold each of them in turn.
        """
        if not events:
            return []
        pending = _Pending(list(events), [canonical_json(event) for event in events])
        self._pending.put(pending)
        self._start_writer()
        try:
            return pending.done.result(timeout=_WRITE_TIMEOUT)
        except FutureTimeout:
            raise AuditWriteError("audit log not written (timed out)") from None

    def _start_writer(self) -> None:
        with self._writer_lock:  # a new process after a fork has no writer yet
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_forever, daemon=True,
                                                name="audit-writer")
                self._writer.start()

    def _write_forever(self) -> None:
        while True:
            try:
                batch = [self._pending.get(timeout=_WRITER_IDLE)]
            except queue.Empty:
                with self._writer_lock:  # an append after this starts a new writer
                    if self._pending.empty():
                        self._writer = None
                        return
                continue
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            self._write_batch(batch)

    def _write_batch(self, batch: list[_Pending]) -> None:
        """All in one transaction; if that fails and there were several, each on its own,
        so that one bad append fails only its own request."""
        try:
            records = self._in_own_transaction(lambda conn: [
                self._append(conn, event, canonical) for item in batch
                for event, canonical in zip(item.events, item.canonical, strict=True)])
        except Exception as exc:
            if len(batch) > 1:
                for item in batch:
                    self._write_batch([item])
                return
            error = exc if isinstance(exc, AuditWriteError) else AuditWriteError(
                f"audit log not written ({type(exc).__name__})")
            batch[0].done.set_exception(error)
            return
        start = 0
        for item in batch:
            item.done.set_result(records[start:start + len(item.events)])
            start += len(item.events)

    def _in_own_transaction(self, write: Callable[[Connection], list[AuditRecord]]
                            ) -> list[AuditRecord]:
        """Run `write` in a short transaction of its own; on SQLite, retry while the write
        lock stays busy. AuditWriteError if it cannot be written."""
        for attempt in range(_SQLITE_RETRIES):
            try:
                with self._engine.begin() as conn:
                    return write(conn)
            except OperationalError as exc:  # SQLite: the write lock stayed busy too long
                if self._engine.dialect.name != "sqlite" or attempt == _SQLITE_RETRIES - 1:
                    raise AuditWriteError(
                        f"audit log not written ({type(exc).__name__})") from exc
                time.sleep(0.05 * (attempt + 1))
            except SQLAlchemyError as exc:
                raise AuditWriteError(f"audit log not written ({type(exc).__name__})") from exc
        raise AssertionError("unreachable")

    def checkpoint(self) -> int:
        """Sign the current head now (if not yet signed); return its seq (0: empty log)."""
        with self._engine.begin() as conn:
            seq, entry_hash = _lock_head(conn, advance=False)
            if seq == 0:
                return 0
            exists = conn.execute(sa.select(AuditCheckpointRow.seq)
                                  .where(AuditCheckpointRow.seq == seq)).first()
            if exists is None:
                self._sign(conn, seq, entry_hash)
            return seq

    # -- reads -------------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(AuditChainHeadRow.seq, AuditChainHeadRow.entry_hash)
                               .where(AuditChainHeadRow.id == 1)).one()
            return int(row.seq), str(row.entry_hash)

    def entries(
        self,
        *,
        client_id: str | None = None,
        decision: str | None = None,
        break_glass: bool | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        """Entries in chain order, optionally filtered (client, decision, break-glass, time)."""
        stmt = sa.select(AuditEntryRow).order_by(AuditEntryRow.seq)
        if client_id is not None:
            stmt = stmt.where(AuditEntryRow.client_id == client_id)
        if decision is not None:
            stmt = stmt.where(AuditEntryRow.decision == decision)
        if break_glass is not None:
            stmt = stmt.where(AuditEntryRow.break_glass == break_glass)
        if since is not None:
            stmt = stmt.where(AuditEntryRow.recorded >= since)
        if until is not None:
            stmt = stmt.where(AuditEntryRow.recorded < until)
        if limit is not None:
            stmt = stmt.limit(limit)
        with Session(self._engine) as session:
            return [_record(row) for row in session.scalars(stmt)]

    def __iter__(self) -> Iterator[AuditRecord]:
        return iter(self.entries())

    # -- internals ---------------------------------------------------------------------------

    def _append(self, conn: Connection, event: dict[str, Any], canonical: bytes) -> AuditRecord:
        row = _entry_row(event, canonical)
        if conn.dialect.name == "postgresql":  # one round trip (see _PG_APPEND)
            seq, entry_hash = conn.execute(_PG_APPEND, row).one()
            seq = int(seq)
        else:
            seq, prev_hash = _lock_head(conn, advance=True)
            entry_hash = chain_hash(prev_hash, canonical)
            conn.execute(sa.insert(AuditEntryRow).values(
                seq=seq, prev_hash=prev_hash, entry_hash=entry_hash, **row))
            conn.execute(sa.update(AuditChainHeadRow).where(AuditChainHeadRow.id == 1)
                         .values(entry_hash=entry_hash))
        if seq % self._every == 0:
            self._sign(conn, seq, entry_hash)
        return AuditRecord(seq, row["event_id"], row["recorded"], row["client_id"],
                           row["decision"], row["break_glass"], event, entry_hash)

    def _commit_with_entries(self, conn: Connection, events: Sequence[dict[str, Any]]) -> None:
        """PostgreSQL: send `events`' appends and the COMMIT of `conn`'s transaction in one
        pipeline (one round trip), then read what came back. The COMMIT is skipped if an
        append fails (AuditWriteError); SQLAlchemy's own COMMIT that follows finds nothing
        left to do.
        A checkpoint falling on one of them is signed just after, in a short transaction
        of its own: it covers entries already committed, so it can be added at any time, and
        if it cannot be the next one covers them too."""
        driver: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
        rows = [_entry_row(event, canonical_json(event)) for event in events]
        try:
            with driver.pipeline():
                cursors = [driver.cursor() for _ in rows]
                for cursor, row in zip(cursors, rows, strict=True):
                    cursor.execute(_PG_APPEND_DRIVER, row)
                # Queued like the appends, so the pipeline's one Sync, as it ends, sends
                # them all (`driver.commit()` would send its own: a second round trip).
                driver.execute(b"COMMIT")
            heads = [cursor.fetchone() for cursor in cursors]
        except Exception as exc:
            raise AuditWriteError(f"audit log not written ({type(exc).__name__})") from exc
        for head in heads:
            if head is None:
                raise AuditWriteError("audit log not written (no entry came back)")
            seq, entry_hash = head
            if seq % self._every == 0:
                try:
                    with self._engine.begin() as own:
                        self._sign(own, seq, entry_hash)
                except SQLAlchemyError as exc:  # the entries stand; a later checkpoint covers them
                    logger.warning("audit checkpoint at entry %d not signed (%s)", seq,
                                   type(exc).__name__)

    def _sign(self, conn: Connection, seq: int, entry_hash: str) -> None:
        signed_at = datetime.now(UTC)
        key_id = self._signer.key_id
        signature = self._signer.sign(checkpoint_message(seq, entry_hash, signed_at, key_id))
        conn.execute(sa.insert(AuditCheckpointRow).values(
            seq=seq, entry_hash=entry_hash, signed_at=signed_at, key_id=key_id,
            signature=encode_b64(signature)))


_AT_COMMIT = "unified_record.audit.at_commit"


@sa_event.listens_for(Session, "before_commit")
def _append_at_commit(session: Session) -> None:
    pending: list[tuple[AuditLog, list[dict[str, Any]]]] = session.info.pop(_AT_COMMIT, [])
    if not pending:
        return
    session.flush()  # the transaction's own writes first: the pipeline ends it
    log = pending[0][0]  # one audit log per database (append_at_commit checks the URL)
    log._commit_with_entries(session.connection(),  # AuditWriteError fails the commit
                             [event for _, events in pending for event in events])


@sa_event.listens_for(Session, "after_transaction_end")
def _append_if_not_committed(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    pending: list[tuple[AuditLog, list[dict[str, Any]]]] = session.info.pop(_AT_COMMIT, [])
    for log, events in pending:  # rolled back or closed: the entries on their own
        log.append_many(events)


# PostgreSQL: lock the head, advance it, hash and insert the entry in one statement, with
# the same hash as `chain_hash` (SHA-256 over the previous hash's ASCII and the canonical
# JSON's UTF-8). The head row is locked first (FOR UPDATE), so a concurrent append waits and
# then sees this one: the chain cannot fork. `audit.verify` recomputes every hash in Python.
_PG_APPEND = sa.text("""
WITH head AS (
    SELECT seq, entry_hash FROM audit_chain_head WHERE id = 1 FOR UPDATE
), moved AS (
    UPDATE audit_chain_head AS h
    SET seq = head.seq + 1,
        entry_hash = encode(sha256(convert_to(head.entry_hash || :event, 'UTF8')), 'hex')
    FROM head WHERE h.id = 1
    RETURNING h.seq, h.entry_hash, head.entry_hash AS prev_hash
)
INSERT INTO audit_entry (seq, event_id, recorded, client_id, decision, break_glass, event,
                         prev_hash, entry_hash)
VALUES ((SELECT seq FROM moved), :event_id, :recorded, :client_id, :decision, :break_glass,
        :event, (SELECT prev_hash FROM moved), (SELECT entry_hash FROM moved))
RETURNING seq, entry_hash
""")
# The same for the driver (psycopg's placeholders). Without a head row the seq is NULL and the
# INSERT fails (seq is NOT NULL), so a pipelined COMMIT after it is skipped.
_PG_APPEND_DRIVER = str(_PG_APPEND.compile(
    dialect=postgresql_psycopg.dialect()))  # type: ignore[no-untyped-call]


def _entry_row(event: dict[str, Any], canonical: bytes) -> dict[str, Any]:
    """An entry's columns apart from its place in the chain."""
    client_id, recorded, decision, break_glass = derive_columns(event)
    return {"event_id": str(event["id"]), "recorded": datetime.fromisoformat(recorded),
            "client_id": client_id, "decision": decision, "break_glass": break_glass,
            "event": canonical.decode("utf-8")}


def _lock_head(conn: Connection, *, advance: bool) -> tuple[int, str]:
    """Lock the chain head (first statement of the transaction: a write, so SQLite takes its
    write lock here, waiting for any other appender) and return (seq, previous hash); with
    `advance` the returned seq is the new entry's."""
    stmt = (sa.update(AuditChainHeadRow).where(AuditChainHeadRow.id == 1)
            .values(seq=AuditChainHeadRow.seq + (1 if advance else 0))
            .returning(AuditChainHeadRow.seq, AuditChainHeadRow.entry_hash))
    row = conn.execute(stmt).first()
    if row is None:
        raise AuditWriteError("the audit chain head is missing (run the migrations)")
    return int(row.seq), str(row.entry_hash)


def _record(row: AuditEntryRow) -> AuditRecord:
    return AuditRecord(row.seq, row.event_id, row.recorded, row.client_id, row.decision,
                       row.break_glass, json.loads(row.event), row.entry_hash)
