"""Bulk writes for ingest: many resources and messages in a few statements per batch.

`ResourceBatch.put` follows exactly the rules of `ResourceRepository.put` (ids from the
source record, no new version for an unchanged body, one version row per change, labels and
blind index replaced with each version) but buffers the rows and writes them with one
executemany per table at `flush()`. Current rows are read up front with `load()`, so a batch
costs a handful of round trips instead of several per resource. A checkpoint lets a caller
undo one message's puts when a later one of them fails, without a database savepoint.

Each body is written once, as the repository stores it: a key's last version in the flush
goes to `resource`, its version row gets no body; a version superseded within the same
flush keeps its body in its version row; and for a resource stored before, the version row
of what was current gets the body `load()` read (one executemany UPDATE per flush).

The CPU-heavy part of a put (canonical JSON, AES-GCM, the blind index's HMACs) can be done
ahead of time, in the ingest worker processes, by `seal_new`: it seals a body as a new
resource's version 1. `put_sealed` uses that envelope when the resource is indeed new, and
opens it and seals again itself when it is not (a new version of an existing resource).
Rows are written with the driver's own executemany (PostgreSQL: binary COPY for inserts), with
the column types' bind processing applied, so what is stored is what SQLAlchemy would store.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from unified_record.store.crypto import BlindIndexer, Cipher, raw_aad
from unified_record.store.messages import MessageRepository, new_message_id
from unified_record.store.models import (
    MESSAGE_STATUSES,
    InboundMessage,
    ResourceRow,
    ResourceVersionRow,
    SearchIndexRow,
    table_of,
)
from unified_record.store.resources import (
    _ID_RE,
    SourceConflictError,
    _apply_security_labels,
    _check_type,
    _content,
    _now,
    body_json,
    open_body,
    seal_body,
)

__all__ = ["NewMessage", "ResourceBatch", "Sealed", "StoredMessage", "add_messages",
           "mark_messages", "seal_new"]

_CHUNK = 500  # values per IN (...) list: well under every backend's parameter limit

Key = tuple[str, str]  # (resource type, id)
SourceKey = tuple[str, str, str]  # (resource type, source feed, source record id)


@dataclass
class _State:
    version_id: int
    deleted: bool
    envelope: bytes
    in_db: bool
    body: dict[str, Any] | None = None  # decrypted lazily


@dataclass
class _Write:
    key: Key
    replaced: _State | None  # what was current before this write (restored on rollback)
    row: tuple[Any, ...]  # in the order of _RESOURCE_COLUMNS
    index: list[tuple[str, str]]
    version: tuple[Any, ...] = ()  # in the order of _VERSION_COLUMNS, key_id and body last


@dataclass(frozen=True)
class Sealed:
    """A body sealed in advance as version 1 of a new resource (see `seal_new`).

    The body travels only inside its envelope: a Sealed crosses from the ingest workers to
    the main process, and unpickling bodies as dicts cost that process more than anything
    but its database writes. `put_sealed` opens the envelope only if it needs the body."""

    resource_type: str
    id: str
    labels: list[str]
    last_updated: datetime
    envelope: bytes  # the body, labels applied, meta.versionId "1" and meta.lastUpdated
    index: list[tuple[str, str]]  # (param, keyed hash), sorted
    content_digest: bytes  # of the body without its version fields (see ResourceBatch)


def seal_new(cipher: Cipher, blind_index: BlindIndexer, resource: Mapping[str, Any],
             security_labels: Iterable[str] = (),
             index_values: Iterable[tuple[str, str]] = (),
             now: datetime | None = None) -> Sealed | None:
    """Do a put's CPU work ahead of time, as if the resource were new (version 1).

    None when the body has no valid type and id, or unknown labels: `put` then raises as
    it always has. The caller keeps the key material; nothing here touches the database.
    `now`: the lastUpdated to give it (by default, now), so the resources of one message
    can share one.
    """
    body = dict(resource)
    body["meta"] = dict(body.get("meta") or {})
    try:
        resource_type = _check_type(body.get("resourceType"))
        labels = _apply_security_labels(body, security_labels)
    except ValueError:
        return None
    rid = body.get("id")
    if not isinstance(rid, str) or not _ID_RE.fullmatch(rid):
        return None
    digest = content_digest(body)
    now = now or _now()
    envelope = seal_body(cipher, body, 1, now)
    return Sealed(resource_type, rid, labels, now, envelope, _digests(blind_index, index_values),
                  digest)


def content_digest(body: Mapping[str, Any]) -> bytes:
    """A digest of what change detection compares (`_content`): kept in memory only."""
    return hashlib.blake2b(body_json(_content(body)), digest_size=16).digest()


def _digests(blind_index: BlindIndexer, values: Iterable[tuple[str, str]]
             ) -> list[tuple[str, str]]:
    return sorted({(p, blind_index.digest(p, v)) for p, v in values})


class ResourceBatch:
    """Buffered resource writes for one transaction; call `flush()` before committing."""

    def __init__(self, session: Session, cipher: Cipher, blind_index: BlindIndexer,
                 known: Mapping[Key, tuple[int, bytes]] | None = None) -> None:
        """`known`: (version id, content digest) of resources as committed earlier (see
        `committed`); `put_sealed` then needs not open an unchanged resource to see that
        it is unchanged. A stale entry is harmless: its version id no longer matches."""
        self._session = session
        self._cipher = cipher
        self._index = blind_index
        self._known = known or {}
        # what this batch wrote or found unchanged: to add to `known` once it is committed
        self.committed: dict[Key, tuple[int, bytes]] = {}
        self._states: dict[Key, _State | None] = {}
        self._sources: dict[SourceKey, str | None] = {}
        self._writes: list[_Write] = []
        self._undo: list[tuple[SourceKey | None, str | None]] = []  # one per write

    # -- reading -------------------------------------------------------------------------

    def load(self, keys: Iterable[Key], sources: Iterable[SourceKey] = ()) -> None:
        """Read the current rows of these resources (and source-record owners) in bulk."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self._states]
        reader = _RawWriter(self._session)
        for resource_type, ids in _group(wanted):
            for chunk in _chunks(ids):
                found = reader.select("SELECT id, version_id, deleted, body FROM resource "
                                      "WHERE resource_type = ? AND id IN ({})",
                                      resource_type, chunk)
                for rid, version_id, deleted, body in found:
                    self._states[(resource_type, rid)] = _State(version_id, bool(deleted),
                                                                bytes(body), True)
        for key in wanted:
            self._states.setdefault(key, None)
        by_feed: dict[tuple[str, str], list[str]] = {}
        for src in dict.fromkeys(sources):
            if src not in self._sources:
                by_feed.setdefault((src[0], src[1]), []).append(src[2])
                self._sources[src] = None
        for (resource_type, feed), record_ids in by_feed.items():
            for chunk in _chunks(record_ids):
                owners = reader.select("SELECT source_record_id, id FROM resource "
                                       "WHERE resource_type = ? AND source_feed = ? "
                                       "AND source_record_id IN ({})",
                                       resource_type, chunk, feed)
                for record_id, rid in owners:
                    self._sources[(resource_type, feed, str(record_id))] = rid

    def get(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """The current version as this batch would leave it, or None (missing or deleted)."""
        state = self._state((resource_type, resource_id))
        if state is None or state.deleted:
            return None
        return dict(self._body(resource_type, resource_id, state))

    # -- writing -------------------------------------------------------------------------

    def put(
        self,
        resource: Mapping[str, Any],
        *,
        source_feed: str,
        source_org: str | None,
        source_record_id: str | None,
        inbound_message_id: str | None = None,
        security_labels: Iterable[str] = (),
        index_values: Iterable[tuple[str, str]] = (),
    ) -> dict[str, Any]:
        """As `ResourceRepository.put`, buffered. Raises before buffering anything."""
        body = dict(resource)
        body["meta"] = dict(body.get("meta") or {})
        resource_type = _check_type(body.get("resourceType"))
        source = (resource_type, source_feed, source_record_id) if source_record_id else None
        body["id"] = resolved = self._resolve_id(body.get("id"), source)
        labels = _apply_security_labels(body, security_labels)
        key = (resource_type, resolved)
        current = self._state(key)
        if current is not None and not current.deleted:
            stored = self._body(resource_type, resolved, current)
            if _content(stored) == _content(body):
                return stored
        version_id = current.version_id + 1 if current is not None else 1
        now = _now()
        envelope = seal_body(self._cipher, body, version_id, now)
        self._buffer(key, current, source, version_id, now, envelope,
                     _digests(self._index, index_values), labels, body,
                     (source_feed, source_org, source_record_id, inbound_message_id))
        return body

    def put_sealed(
        self,
        sealed: Sealed,
        *,
        source_feed: str,
        source_org: str | None,
        source_record_id: str | None,
        inbound_message_id: str | None = None,
    ) -> None:
        """As `put` of the body `seal_new` sealed, with its labels and index values.

        A new resource is written with the envelope as it is (the body is not even opened);
        an existing one is compared with it, and a changed body becomes a new version,
        sealed again here. Raises before buffering anything, as `put` does."""
        resource_type = sealed.resource_type
        source = (resource_type, source_feed, source_record_id) if source_record_id else None
        resolved = self._resolve_id(sealed.id, source)
        key = (resource_type, resolved)
        provenance = (source_feed, source_org, source_record_id, inbound_message_id)
        current = self._state(key)
        digest = sealed.content_digest
        if current is None:
            self._buffer(key, current, source, 1, sealed.last_updated, sealed.envelope,
                         sealed.index, sealed.labels, None, provenance)
            self.committed[key] = (1, digest)
            return
        remembered = self.committed.get(key) or self._known.get(key)  # this batch's first
        if not current.deleted and remembered == (current.version_id, digest):
            return  # unchanged, as remembered: neither body opened
        body = open_body(self._cipher, sealed.envelope, resource_type, resolved, 1)
        if not current.deleted and _content(self._body(resource_type, resolved, current)
                                            ) == _content(body):
            self.committed[key] = (current.version_id, digest)
            return
        version_id = current.version_id + 1  # not new after all: a version of its own
        now = _now()
        envelope = seal_body(self._cipher, body, version_id, now)
        self._buffer(key, current, source, version_id, now, envelope, sealed.index,
                     sealed.labels, body, provenance)
        self.committed[key] = (version_id, digest)

    def _buffer(self, key: Key, current: _State | None, source: SourceKey | None,
                version_id: int, now: datetime, envelope: bytes,
                hashes: list[tuple[str, str]], labels: list[str],
                body: dict[str, Any] | None,
                provenance: tuple[str, str | None, str | None, str | None]) -> None:
        source_feed, source_org, source_record_id, inbound_message_id = provenance
        key_id = self._cipher.key_id_of(envelope)
        self._undo.append((source, self._sources.get(source) if source else None))
        self._states[key] = _State(version_id, False, envelope,
                                   current.in_db if current else False, body)
        if source:
            self._sources[source] = key[1]
        row = (key[0], key[1], version_id, now, False, source_feed, source_org,
               source_record_id, inbound_message_id, " ".join(labels), key_id, envelope)
        version = (key[0], key[1], version_id, now, False, inbound_message_id, key_id, envelope)
        self._writes.append(_Write(key, current, row, hashes, version))

    def checkpoint(self) -> int:
        return len(self._writes)

    def rollback_to(self, mark: int) -> None:
        """Forget every put after `checkpoint()` returned `mark`."""
        while len(self._writes) > mark:
            write = self._writes.pop()
            source, owner = self._undo.pop()
            self._states[write.key] = write.replaced
            self.committed.pop(write.key, None)  # what is known of it now may be undone too
            if source is not None:
                self._sources[source] = owner

    def flush(self) -> None:
        """Write everything buffered: inserts, updates, versions, then the index.

        Each body once: a key's final write goes to `resource` and its version row has no
        body; earlier writes of the key in this flush keep theirs in their version rows; the
        version that was current in the database before gets the body `load()` read."""
        if not self._writes:
            return
        first: dict[Key, _Write] = {}
        final: dict[Key, _Write] = {}
        for write in self._writes:
            first.setdefault(write.key, write)
            final[write.key] = write
        stale = [key for key in final if (state := self._states[key]) is not None and state.in_db]
        stale_set = set(stale)
        writer = _RawWriter(self._session)
        inserts = [write.row for key, write in final.items() if key not in stale_set]
        if inserts:
            writer.insert(table_of(ResourceRow), _RESOURCE_COLUMNS, inserts)
        if stale:
            writer.update(table_of(ResourceRow), _RESOURCE_COLUMNS, 2,
                          [final[key].row for key in stale])
            writer.update(table_of(ResourceVersionRow), _KEPT_BODY_COLUMNS, 3,
                          [self._kept_body(key, first[key].replaced) for key in stale])
        writer.insert(table_of(ResourceVersionRow), _VERSION_COLUMNS,
                      [(*w.version[:-2], None, None) if final[w.key] is w else w.version
                       for w in self._writes])
        for resource_type, ids in _group(stale):
            for chunk in _chunks(ids):
                self._session.execute(sa.delete(SearchIndexRow).where(
                    SearchIndexRow.resource_type == resource_type,
                    SearchIndexRow.resource_id.in_(chunk)))
        index_rows = [(key[0], key[1], p, h) for key, write in final.items()
                      for p, h in write.index]
        if index_rows:
            writer.insert(table_of(SearchIndexRow), _INDEX_COLUMNS, index_rows)
        for key in final:
            state = self._states[key]
            if state is not None:
                state.in_db = True
        self._writes.clear()
        self._undo.clear()

    # -- internals -----------------------------------------------------------------------

    def _kept_body(self, key: Key, replaced: _State | None) -> tuple[Any, ...]:
        """The row of the version current in the database, as it is kept: with its body."""
        assert replaced is not None and replaced.in_db, "a stale key replaced a stored version"
        return (key[0], key[1], replaced.version_id, self._cipher.key_id_of(replaced.envelope),
                replaced.envelope)

    def _state(self, key: Key) -> _State | None:
        if key not in self._states:
            self.load([key])
        return self._states[key]

    def _body(self, resource_type: str, resource_id: str, state: _State) -> dict[str, Any]:
        if state.body is None:
            state.body = open_body(self._cipher, state.envelope, resource_type, resource_id,
                                   state.version_id)
        return state.body

    def _resolve_id(self, given: object, source: SourceKey | None) -> str:
        if source is not None and source not in self._sources:
            self.load((), [source])
        holder = self._sources.get(source) if source is not None else None
        if given is None:
            return holder or str(uuid.uuid4())
        if not isinstance(given, str) or not _ID_RE.fullmatch(given):
            raise ValueError("resource id must be 1-64 characters of A-Z a-z 0-9 - .")
        if holder is not None and holder != given:
            raise SourceConflictError(
                f"{source[0] if source else 'resource'} from this source record is already "
                "stored under another id")
        return given


# --- rows through the driver ----------------------------------------------------------------

_RESOURCE_COLUMNS = ("resource_type", "id", "version_id", "last_updated", "deleted",
                     "source_feed", "source_org", "source_record_id", "inbound_message_id",
                     "security_labels", "key_id", "body")
_VERSION_COLUMNS = ("resource_type", "id", "version_id", "last_updated", "deleted",
                    "inbound_message_id", "key_id", "body")
_KEPT_BODY_COLUMNS = ("resource_type", "id", "version_id", "key_id", "body")
_INDEX_COLUMNS = ("resource_type", "resource_id", "param", "value_hash")
_MESSAGE_COLUMNS = ("id", "feed", "received_at", "content_hash", "message_control_id",
                    "status", "reason", "locator", "key_id", "raw", "attempts")


# PostgreSQL DDL type (as SQLAlchemy compiles a column's type) -> psycopg's type for COPY
_BINARY_COPY_TYPES = {"VARCHAR": "varchar", "TEXT": "text", "INTEGER": "int4",
                      "BOOLEAN": "bool", "BYTEA": "bytea",
                      "TIMESTAMP WITH TIME ZONE": "timestamptz"}


class _RawWriter:
    """executemany on the DBAPI connection of the session's transaction.

    SQLAlchemy's Core executemany spends more time per row building and processing
    parameters than SQLite spends inserting it. Here rows are tuples; each column type's
    bind processing (UTC datetimes, SQLite's datetime text and booleans) is still applied,
    so the stored values are exactly those Core would store. PostgreSQL (psycopg) inserts
    with COPY, in its binary format. A DBAPI IntegrityError is raised as SQLAlchemy's, as
    Core would.
    """

    def __init__(self, session: Session) -> None:
        connection = session.connection()
        self._dialect = connection.dialect
        self._dbapi = connection.connection
        self._qmark = self._dialect.paramstyle == "qmark"
        self._copy = self._dialect.name == "postgresql" and self._dialect.driver == "psycopg"
        self._quote = self._dialect.identifier_preparer.quote

    def insert(self, table: sa.Table, columns: Sequence[str],
               rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        names = ", ".join(self._quote(c) for c in columns)
        rows = self._processed(table, columns, rows)
        if self._copy:
            types = self._copy_types(table, columns)
            binary = " (FORMAT BINARY)" if types else ""
            sql = f"COPY {self._quote(table.name)} ({names}) FROM STDIN{binary}"
            cursor: Any = self._dbapi.cursor()
            try:
                with self._errors(sql), cursor.copy(sql) as copy:
                    if types:
                        copy.set_types(types)
                    for row in rows:
                        copy.write_row(row)
            finally:
                cursor.close()
            return
        marks = ", ".join("?" for _ in columns)
        self.executemany(f"INSERT INTO {self._quote(table.name)} ({names}) VALUES ({marks})",
                         rows)

    def _copy_types(self, table: sa.Table, columns: Sequence[str]) -> list[str] | None:
        """PostgreSQL's names for the columns' types, for COPY's binary format, which the
        server reads without parsing text or decoding hex (a fifth of its CPU for the
        resource tables' COPY); None if a column's type has no binary form listed here."""
        names = []
        for column in columns:
            ddl = table.c[column].type.compile(dialect=self._dialect)
            name = _BINARY_COPY_TYPES.get(ddl.split("(")[0])
            if name is None:
                return None
            names.append(name)
        return names

    def update(self, table: sa.Table, columns: Sequence[str], keys: int,
               rows: Sequence[Sequence[Any]]) -> None:
        """UPDATE by the first `keys` columns (the primary key), setting the others."""
        sets = ", ".join(f"{self._quote(c)} = ?" for c in columns[keys:])
        where = " AND ".join(f"{self._quote(c)} = ?" for c in columns[:keys])
        self.executemany(f"UPDATE {self._quote(table.name)} SET {sets} WHERE {where}",
                         [(*row[keys:], *row[:keys])
                          for row in self._processed(table, columns, rows)])

    def select(self, sql: str, first: str, values: Sequence[str], *more: str
               ) -> list[Sequence[Any]]:
        """Rows of `sql` (? placeholders; "{}" becomes one per value of `values`), with
        `first`, then `more`, then `values` as parameters. Text and binary columns only."""
        sql = sql.format(", ".join("?" for _ in values))
        if not self._qmark:
            sql = sql.replace("?", "%s")
        cursor = self._dbapi.cursor()
        try:
            cursor.execute(sql, (first, *more, *values))
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """`sql` with ? placeholders (and no literal ?); values already processed."""
        if not self._qmark:
            sql = sql.replace("?", "%s")
        with self._errors(sql):
            cursor = self._dbapi.cursor()
            try:
                cursor.executemany(sql, rows)
            finally:
                cursor.close()

    def _processed(self, table: sa.Table, columns: Sequence[str],
                   rows: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
        processors = []
        for i, name in enumerate(columns):
            column_type = table.c[name].type
            if isinstance(column_type, sa.LargeBinary):
                continue  # bytes reach both drivers as they are
            process = column_type.dialect_impl(self._dialect).bind_processor(self._dialect)
            if process is not None:
                processors.append((i, process))
        if not processors:
            return rows
        done: dict[tuple[int, Any], Any] = {}  # a batch repeats its times and flags
        out = []
        for row in rows:
            values = list(row)
            for i, process in processors:
                value = values[i]
                try:
                    values[i] = done[(i, value)]
                except KeyError:
                    values[i] = done[(i, value)] = process(value)
            out.append(values)
        return out

    @contextmanager
    def _errors(self, sql: str) -> Iterator[None]:
        try:
            yield
        except self._dialect.loaded_dbapi.IntegrityError as exc:
            raise IntegrityError(sql, None, exc) from exc


# --- inbound messages in bulk ---------------------------------------------------------------


@dataclass(frozen=True)
class NewMessage:
    raw: bytes
    locator: str | None = None
    control_id: str | None = None


@dataclass(frozen=True)
class StoredMessage:
    id: str
    created: bool
    status: str
    attempts: int


def add_messages(session: Session, cipher: Cipher, hasher: BlindIndexer | None, feed: str,
                 messages: Sequence[NewMessage]) -> list[StoredMessage]:
    """As `MessageRepository.add` for many messages: one lookup, one insert.

    A message whose bytes or control id are already stored (or earlier in the same batch)
    maps to the first copy with created=False. If a concurrent writer wins a race the
    batch falls back to adding one by one, so the outcome is the same either way.
    """
    repo = MessageRepository(session, cipher, hasher)
    hashes = [repo.content_hash(m.raw) for m in messages]
    by_hash: dict[str, StoredMessage] = {}
    by_control: dict[str, StoredMessage] = {}
    controls = [m.control_id for m in messages if m.control_id]
    for column, values in ((InboundMessage.content_hash, hashes),
                           (InboundMessage.message_control_id, controls)):
        for chunk in _chunks(list(dict.fromkeys(values))):
            stmt = (sa.select(InboundMessage.id, InboundMessage.content_hash,
                              InboundMessage.message_control_id, InboundMessage.status,
                              InboundMessage.attempts)
                    .where(InboundMessage.feed == feed, column.in_(chunk))
                    .order_by(InboundMessage.received_at))
            for mid, chash, control, status, attempts in session.execute(stmt):
                found = StoredMessage(mid, False, status, attempts)
                by_hash.setdefault(chash, found)
                if control:
                    by_control.setdefault(control, found)
    results: list[StoredMessage] = []
    rows: list[tuple[Any, ...]] = []
    now = datetime.now(UTC)
    for message, content_hash in zip(messages, hashes, strict=True):
        existing = by_hash.get(content_hash) or (
            by_control.get(message.control_id) if message.control_id else None)
        if existing is not None:
            results.append(StoredMessage(existing.id, False, existing.status, existing.attempts))
            continue
        message_id = new_message_id()
        envelope = cipher.encrypt(message.raw, raw_aad(message_id))
        rows.append((message_id, feed, now, content_hash, message.control_id, "pending", None,
                     message.locator, cipher.key_id_of(envelope), envelope, 0))
        stored = StoredMessage(message_id, True, "pending", 0)
        by_hash[content_hash] = stored
        if message.control_id:
            by_control[message.control_id] = stored
        results.append(stored)
    if rows:
        try:
            with session.begin_nested():
                _RawWriter(session).insert(table_of(InboundMessage), _MESSAGE_COLUMNS, rows)
        except IntegrityError:  # a concurrent writer stored some of them first
            results = []
            for message in messages:
                msg, created = repo.add(feed, message.raw, message.locator, message.control_id)
                results.append(StoredMessage(msg.id, created, msg.status, msg.attempts))
    return results


def mark_messages(session: Session, outcomes: Sequence[tuple[str, str, str | None]]) -> None:
    """Set (message id, status, reason) for many messages in one executemany; each
    processing attempt is counted, as `MessageRepository.mark` does."""
    if not outcomes:
        return
    for _, status, _ in outcomes:
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"unknown message status {status!r}")
    writer = _RawWriter(session)
    writer.executemany(f"UPDATE {table_of(InboundMessage).name} SET status = ?, reason = ?, "
                       "attempts = attempts + 1 WHERE id = ?",
                       [(s, r, i) for i, s, r in outcomes])


def _group(keys: Iterable[Key]) -> Iterator[tuple[str, list[str]]]:
    grouped: dict[str, list[str]] = {}
    for resource_type, rid in keys:
        grouped.setdefault(resource_type, []).append(rid)
    yield from grouped.items()


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start:start + _CHUNK]
