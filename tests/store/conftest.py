"""Store fixtures: a migrated database on each backend, the real key ring and blind index."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from unified_record.security import BlindIndex, KeyRing
from unified_record.store import UnitOfWork, make_engine, migrate

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
INDEX_KEY = bytes(range(200, 232))

NHS_NUMBER = "9434765919"
FAMILY = "Quixblatterwick"
POSTCODE = "ZZ99 3QX"


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


def patient(resource_id: str | None = "p1", **extra: Any) -> dict[str, Any]:
    """A Patient with distinctive values, so a leak of any of them is easy to spot."""
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS_NUMBER}],
        "name": [{"family": FAMILY, "given": ["Ermintrude"]}],
        "birthDate": "1950-02-03",
        "address": [{"postalCode": POSTCODE}],
        **extra,
    }
    if resource_id is not None:
        body["id"] = resource_id
    return body


def provenance(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ResourceRepository.put with a council source."""
    return {
        "source_feed": "council_asc",
        "source_org": "E08000026",
        "source_record_id": "ASC-1",
        **overrides,
    }
