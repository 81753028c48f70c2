"""Bulk writes for ingest: many resources and messages in a few statements per batch.

`ResourceBatch.put` follows exactly the rules of `ResourceRepository.put` (ids from the
source record, no new version for an unchanged body, one version row per change, labels and
blind index replaced with each version) but buffers the rows and writes them with one
executemany per table at `flush()`. Current rows are read up front with `load()`, so a batch
costs a handful of round trips instead of several per resource. A checkpoint lets a caller
undo one message's puts when a later one of them fails, without a database savepoint.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from unified_record.store.crypto import BlindIndexer, Cipher, raw_aad
from unified_record.store.messages import MessageRepository
from unified_record.store.models import (
    MESSAGE_STATUSES,
    InboundMessage,
    ResourceRow,
    ResourceVersionRow,
    SearchIndexRow,
)
from unified_record.store.resources import (
    _ID_RE,
    SourceConflictError,
    _apply_security_labels,
    _check_type,
    _content,
    _now,
    open_body,
    seal_body,
)

__all__ = ["NewMessage", "ResourceBatch", "StoredMessage", "add_messages", "mark_messages"]

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
    row: dict[str, Any]
    index: list[tuple[str, str]]
    version: dict[str, Any] = field(default_factory=dict)


class ResourceBatch:
    """Buffered resource writes for one transaction; call `flush()` before committing."""

    def __init__(self, session: Session, cipher: Cipher, blind_index: BlindIndexer) -> None:
        self._session = session
        self._cipher = cipher
        self._index = blind_index
        self._states: dict[Key, _State | None] = {}
        self._sources: dict[SourceKey, str | None] = {}
        self._writes: list[_Write] = []
        self._undo: list[tuple[Key, _State | None, SourceKey | None, str | None]] = []

    # -- reading -------------------------------------------------------------------------

    def load(self, keys: Iterable[Key], sources: Iterable[SourceKey] = ()) -> None:
        """Read the current rows of these resources (and source-record owners) in bulk."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self._states]
        for resource_type, ids in _group(wanted):
            for chunk in _chunks(ids):
                stmt = sa.select(ResourceRow.id, ResourceRow.version_id, ResourceRow.deleted,
                                 ResourceRow.body).where(ResourceRow.resource_type ==
                                                         resource_type, ResourceRow.id.in_(chunk))
                for rid, version_id, deleted, body in self._session.execute(stmt):
                    self._states[(resource_type, rid)] = _State(version_id, deleted, body, True)
        for key in wanted:
            self._states.setdefault(key, None)
        by_feed: dict[tuple[str, str], list[str]] = {}
        for src in dict.fromkeys(sources):
            if src not in self._sources:
                by_feed.setdefault((src[0], src[1]), []).append(src[2])
                self._sources[src] = None
        for (resource_type, feed), record_ids in by_feed.items():
            for chunk in _chunks(record_ids):
                owners = sa.select(ResourceRow.source_record_id, ResourceRow.id).where(
                    ResourceRow.resource_type == resource_type, ResourceRow.source_feed == feed,
                    ResourceRow.source_record_id.in_(chunk))
                for record_id, rid in self._session.execute(owners):
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
        body["id"] = self._resolve_id(body.get("id"), source)
        labels = _apply_security_labels(body, security_labels)
        key = (resource_type, body["id"])

        current = self._state(key)
        if current is not None and not current.deleted:
            stored = self._body(resource_type, body["id"], current)
            if _content(stored) == _content(body):
                return stored
        version_id = current.version_id + 1 if current is not None else 1
        now = _now()
        envelope = seal_body(self._cipher, body, version_id, now)
        key_id = self._cipher.key_id_of(envelope)

        self._undo.append((key, current, source, self._sources.get(source) if source else None))
        self._states[key] = _State(version_id, False, envelope,
                                   current.in_db if current else False, body)
        if source:
            self._sources[source] = body["id"]
        row = {"resource_type": resource_type, "id": body["id"], "version_id": version_id,
               "last_updated": now, "deleted": False, "source_feed": source_feed,
               "source_org": source_org, "source_record_id": source_record_id,
               "inbound_message_id": inbound_message_id, "security_labels": " ".join(labels),
               "key_id": key_id, "body": envelope}
        version = {"resource_type": resource_type, "id": body["id"], "version_id": version_id,
                   "last_updated": now, "deleted": False,
                   "inbound_message_id": inbound_message_id, "key_id": key_id,
                   "body": envelope}
        hashes = sorted({(p, self._index.digest(p, v)) for p, v in index_values})
        self._writes.append(_Write(key, row, hashes, version))
        return body

    def checkpoint(self) -> int:
        return len(self._writes)

    def rollback_to(self, mark: int) -> None:
        """Forget every put after `checkpoint()` returned `mark`."""
        while len(self._writes) > mark:
            self._writes.pop()
            key, state, source, owner = self._undo.pop()
            self._states[key] = state
            if source is not None:
                self._sources[source] = owner

    def flush(self) -> None:
        """Write everything buffered: inserts, updates, versions, then the index."""
        if not self._writes:
            return
        final: dict[Key, _Write] = {}
        for write in self._writes:
            final[write.key] = write
        stale = [key for key in final if (state := self._states[key]) is not None and state.in_db]
        stale_set = set(stale)
        inserts = [write.row for key, write in final.items() if key not in stale_set]
        if inserts:  # Core executemany on the tables: no ORM bookkeeping per row
            self._session.execute(sa.insert(_table(ResourceRow)), inserts)
        if stale:
            self._session.execute(sa.update(ResourceRow), [final[key].row for key in stale])
        self._session.execute(sa.insert(_table(ResourceVersionRow)),
                              [w.version for w in self._writes])
        for resource_type, ids in _group(stale):
            for chunk in _chunks(ids):
                self._session.execute(sa.delete(SearchIndexRow).where(
                    SearchIndexRow.resource_type == resource_type,
                    SearchIndexRow.resource_id.in_(chunk)))
        index_rows = [{"resource_type": key[0], "resource_id": key[1], "param": p,
                       "value_hash": h} for key, write in final.items() for p, h in write.index]
        if index_rows:
            self._session.execute(sa.insert(_table(SearchIndexRow)), index_rows)
        for key in final:
            state = self._states[key]
            if state is not None:
                state.in_db = True
        self._writes.clear()
        self._undo.clear()

    # -- internals -----------------------------------------------------------------------

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
    rows: list[dict[str, Any]] = []
    now = datetime.now(UTC)
    for message, content_hash in zip(messages, hashes, strict=True):
        existing = by_hash.get(content_hash) or (
            by_control.get(message.control_id) if message.control_id else None)
        if existing is not None:
            results.append(StoredMessage(existing.id, False, existing.status, existing.attempts))
            continue
        message_id = uuid.uuid4().hex
        envelope = cipher.encrypt(message.raw, raw_aad(message_id))
        rows.append({"id": message_id, "feed": feed, "received_at": now,
                     "content_hash": content_hash, "message_control_id": message.control_id,
                     "status": "pending", "reason": None, "locator": message.locator,
                     "key_id": cipher.key_id_of(envelope), "raw": envelope, "attempts": 0})
        stored = StoredMessage(message_id, True, "pending", 0)
        by_hash[content_hash] = stored
        if message.control_id:
            by_control[message.control_id] = stored
        results.append(stored)
    if rows:
        try:
            with session.begin_nested():
                session.execute(sa.insert(_table(InboundMessage)), rows)
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
    table = _table(InboundMessage)
    stmt = (sa.update(table).where(table.c.id == sa.bindparam("m_id"))
            .values(status=sa.bindparam("m_status"), reason=sa.bindparam("m_reason"),
                    attempts=table.c.attempts + 1))
    session.execute(stmt, [{"m_id": i, "m_status": s, "m_reason": r} for i, s, r in outcomes])


def _table(model: type[Any]) -> sa.Table:
    return cast(sa.Table, model.__table__)


def _group(keys: Iterable[Key]) -> Iterator[tuple[str, list[str]]]:
    grouped: dict[str, list[str]] = {}
    for resource_type, rid in keys:
        grouped.setdefault(resource_type, []).append(rid)
    yield from grouped.items()


def _chunks(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start:start + _CHUNK]
