"""Inbound messages: kept exactly as received (encrypted), deduplicated, and replayable."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from unified_record.store.crypto import BlindIndexer, Cipher, raw_aad
from unified_record.store.models import MESSAGE_STATUSES, InboundMessage

__all__ = ["MessageRepository", "new_message_id"]


def new_message_id() -> str:
    """32 hex digits: the time in milliseconds (48 bits), then 80 random bits (as UUIDv7).

    Ids that grow with time are appended at the end of the primary key's B-tree and of the
    indexes that refer to messages, where random ids (uuid4) put every new message's rows on
    a different page of each, and a bulk load wrote each of those pages whole at every
    commit (docs/benchmarks.md, Ingest). The time adds nothing the row does not say already
    (`received_at`)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


class MessageRepository:
    """Stores and finds inbound messages; the only code that sees their plaintext bytes.

    With a `hasher`, `content_hash` is a keyed hash of the message's SHA-256, so the
    database alone cannot confirm a guessed message; without one it is the plain SHA-256.
    """

    def __init__(self, session: Session, cipher: Cipher, hasher: BlindIndexer | None = None):
        self._session = session
        self._cipher = cipher
        self._hasher = hasher

    def add(
        self,
        feed: str,
        raw: bytes,
        locator: str | None = None,
        message_control_id: str | None = None,
    ) -> tuple[InboundMessage, bool]:
        """Store a message once: the same bytes (or control id) from a feed return the first
        copy and False, so re-sending a file or an HL7 retry never duplicates anything."""
        content_hash = self.content_hash(raw)
        existing = self._find(feed, content_hash, message_control_id)
        if existing is not None:
            return existing, False
        message_id = new_message_id()
        envelope = self._cipher.encrypt(raw, raw_aad(message_id))
        message = InboundMessage(
            id=message_id,
            feed=feed,
            received_at=datetime.now(UTC),
            content_hash=content_hash,
            message_control_id=message_control_id,
            status="pending",
            reason=None,
            locator=locator,
            key_id=self._cipher.key_id_of(envelope),
            raw=envelope,
            attempts=0,
        )
        try:
            with self._session.begin_nested():  # a savepoint: a lost race must not undo the rest
                self._session.add(message)
        except IntegrityError:
            existing = self._find(feed, content_hash, message_control_id)
            if existing is None:
                raise
            return existing, False
        return message, True

    def content_hash(self, raw: bytes) -> str:
        digest = hashlib.sha256(raw).hexdigest()
        return self._hasher.digest("inbound-message", digest) if self._hasher else digest

    def get(self, message_id: str) -> InboundMessage | None:
        return self._session.get(InboundMessage, message_id)

    def raw_bytes(self, message: InboundMessage) -> bytes:
        """The exact bytes received, for replay; fails if the row was tampered with."""
        return self._cipher.decrypt(message.raw, raw_aad(message.id))

    def mark(self, message: InboundMessage, status: str, reason: str | None = None) -> None:
        """Record the outcome of a processing attempt.

        `reason` is shown to operators: name the file, line, segment and field, never a value.
        Setting 'pending' queues the message again without counting an attempt.
        """
        if status not in MESSAGE_STATUSES:
            raise ValueError(f"unknown message status {status!r}")
        message.status = status
        message.reason = reason
        if status != "pending":
            message.attempts += 1

    def with_status(self, status: str, feed: str | None = None) -> Iterator[InboundMessage]:
        """Messages in a status, oldest first (replay keeps the feed's order)."""
        stmt = sa.select(InboundMessage).where(InboundMessage.status == status)
        if feed is not None:
            stmt = stmt.where(InboundMessage.feed == feed)
        stmt = stmt.order_by(InboundMessage.received_at, InboundMessage.id)
        yield from self._session.scalars(stmt)

    def quarantined(self, feed: str | None = None) -> Iterator[InboundMessage]:
        return self.with_status("quarantined", feed)

    def _find(
        self, feed: str, content_hash: str, message_control_id: str | None
    ) -> InboundMessage | None:
        same = InboundMessage.content_hash == content_hash
        if message_control_id is not None:
            same = sa.or_(same, InboundMessage.message_control_id == message_control_id)
        stmt = (
            sa.select(InboundMessage)
            .where(InboundMessage.feed == feed, same)
            .order_by(InboundMessage.received_at)
            .limit(1)
        )
        return self._session.scalars(stmt).first()
