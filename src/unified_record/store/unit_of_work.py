"""Unit of work: one transaction around the repositories, committed only on request."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from unified_record.store.crypto import BlindIndexer, Cipher
from unified_record.store.db import make_session_factory
from unified_record.store.messages import MessageRepository
from unified_record.store.resources import ResourceRepository

__all__ = ["UnitOfWork"]


class UnitOfWork:
    """``with UnitOfWork(engine, cipher, index) as uow: ...; uow.commit()``.

    Leaving the block without `commit()` discards the work (and an exception always does),
    so a half-processed message never leaves half its resources behind.
    """

    session: Session
    messages: MessageRepository
    resources: ResourceRepository

    def __init__(
        self,
        bind: Engine | sessionmaker[Session],
        cipher: Cipher,
        blind_index: BlindIndexer,
    ) -> None:
        self._factory = make_session_factory(bind) if isinstance(bind, Engine) else bind
        self._cipher = cipher
        self._blind_index = blind_index

    @property
    def blind_index(self) -> BlindIndexer:
        """The keyed hasher searches use to look values up."""
        return self._blind_index

    def __enter__(self) -> Self:
        self.session = self._factory()
        self.messages = MessageRepository(self.session, self._cipher, self._blind_index)
        self.resources = ResourceRepository(self.session, self._cipher, self._blind_index)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.rollback()  # a no-op after commit()
        finally:
            self.session.close()

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()
