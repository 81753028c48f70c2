"""API fixtures: a migrated database on each backend, the app with probe routes, a partner
system registered with an ES384 and an RS384 key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import BASE, es384_key, public_jwks, rs384_key, with_probes
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey, RSAKey

from unified_record.api import create_app
from unified_record.config import Settings
from unified_record.store import (
    OAuthClient,
    OAuthClientRepository,
    make_engine,
    make_session_factory,
    migrate,
)

PARTNER_SCOPES = "system/Patient.rs system/Observation.read"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    migrate(database_url)
    return Settings(database_url=database_url, data_dir=tmp_path / "var", public_url=BASE)


@pytest.fixture
def clients(settings: Settings) -> Iterator[OAuthClientRepository]:
    engine = make_engine(settings.database_url)
    yield OAuthClientRepository(make_session_factory(engine))
    engine.dispose()


@pytest.fixture
def es_key() -> ECKey:
    return es384_key()


@pytest.fixture(scope="session")
def rs_key() -> RSAKey:
    return rs384_key()  # RSA generation is slow; one per session is enough


@pytest.fixture
def partner(clients: OAuthClientRepository, es_key: ECKey, rs_key: RSAKey) -> OAuthClient:
    return clients.add(name="Test GP system", organisation="A81001", role="gp-system",
                       scopes=PARTNER_SCOPES, jwks=public_jwks(es_key, rs_key))


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(with_probes(create_app(settings)), base_url=BASE) as client:
        yield client
