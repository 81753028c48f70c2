"""A database holding the committed sample, shared by a whole test module (ingest and linkage
take seconds, so a module pays for them once per backend), and uvicorn serving it on loopback.

`database_url` in tests/conftest.py is per test; this is its module-scoped twin: the same
backends (SQLite, and PostgreSQL when UR_TEST_DATABASE_URL is set), each in its own schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from api_support import assertion, es384_key, public_jwks, token_form
from pg_support import PG_URL, pg_schema

from unified_record.config import Settings
from unified_record.ingest import Pipeline
from unified_record.linkage.index import current_clusters, run_full_linkage
from unified_record.security import load_or_create_keys
from unified_record.store import OAuthClientRepository, make_engine, make_session_factory

REPO = Path(__file__).resolve().parents[2]
SAMPLE, MAPPINGS = REPO / "synthetic_data" / "sample", REPO / "mappings"

BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


@contextmanager
def backend_database(backend: str, folder: Path) -> Iterator[str]:
    """A fresh, empty database URL on `backend` (dropped afterwards on PostgreSQL)."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'test.db'}"
        return
    with pg_schema() as url:
        yield url


def load_sample(settings: Settings, *, link: bool) -> dict[str, str]:
    """Ingest the committed sample (and link it): the index source Patient id -> client id."""
    keyring, blind_index = load_or_create_keys(settings)
    with Pipeline(settings.database_url, keyring, blind_index, MAPPINGS,
                  workers=1) as pipeline:
        pipeline.ingest_dataset(SAMPLE)
        index: dict[str, str] = {}
        if link:
            run_full_linkage(pipeline.sessions, keyring, blind_index,
                             model_path=settings.data_dir / "model.json")
            with pipeline.sessions() as session:
                index = current_clusters(session)
        pipeline.engine.dispose()
    return index


@dataclass
class Partner:
    """A registered partner system and its private key (it signs its own assertions)."""

    client_id: str
    key: object
    scope: str

    def assertion(self, token_url: str) -> str:
        return assertion(self.key, self.client_id, token_url=token_url)  # type: ignore[arg-type]

    def token_form(self, token_url: str) -> dict[str, str]:
        return token_form(self.assertion(token_url), self.scope)


def register_partner(settings: Settings, scope: str, role: str = "partner_system",
                     org: str = "A81001", purpose: str | None = "TREAT") -> Partner:
    key = es384_key()
    engine = make_engine(settings.database_url)
    try:
        client = OAuthClientRepository(make_session_factory(engine)).add(
            name=f"test {role}", organisation=org, role=role, scopes=scope,
            jwks=public_jwks(key), purpose_of_use=purpose)
    finally:
        engine.dispose()
    return Partner(client.client_id, key, scope)
