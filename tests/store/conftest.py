"""Store fixtures: a migrated database on each backend, the real key ring and blind index."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine
from store_support import INDEX_KEY, KEY_1

from unified_record.security import BlindIndex, KeyRing
from unified_record.store import UnitOfWork, make_engine, migrate


@pytest.fixture
def cipher() -> KeyRing:
    return KeyRing({"k1": KEY_1}, "k1")


@pytest.fixture
def blind_index() -> BlindIndex:
    return BlindIndex(INDEX_KEY)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    migrate(database_url)
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def uow(engine: Engine, cipher: KeyRing, blind_index: BlindIndex) -> UnitOfWork:
    return UnitOfWork(engine, cipher, blind_index)
