"""A small hand-made record served by the API (no ingest, no linkage: fast), and callers of
any role with real tokens. Used by the governance API tests and the adversarial consent
suite, which both need to put exact resources in front of exact callers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey
from sqlalchemy.orm import Session, sessionmaker

from unified_record.api import create_app
from unified_record.config import Settings
from unified_record.ingest.search_values import index_values
from unified_record.security import load_or_create_keys
from unified_record.store import (
    OAuthClientRepository,
    ResourceRepository,
    make_engine,
    make_session_factory,
    migrate,
)
from unified_record.store.models import ClientMemberRow, ClientRow

BASE = "http://testserver"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PARTNER_ORG, COUNCIL = "A81001", "E08000035"


@dataclass
class World:
    api: TestClient
    settings: Settings
    sessions: sessionmaker[Session]
    clients: OAuthClientRepository
    repo_keys: tuple[Any, Any]  # (key ring, blind index)

    def token(self, role: str = "partner_system", scope: str = "system/*.rs",
              org: str = PARTNER_ORG, purpose: str | None = "TREAT") -> dict[str, str]:
        """Bearer headers of a newly registered client with this role (SMART Backend
        Services: a signed assertion exchanged at the token endpoint)."""
        key = ECKey.generate_key("P-384", parameters={"kid": "k1"})
        client = self.clients.add(name=f"test {role}", organisation=org, role=role,
                                  scopes=scope, jwks={"keys": [key.as_dict(private=False)]},
                                  purpose_of_use=purpose)
        claims = {"iss": client.client_id, "sub": client.client_id,
                  "aud": f"{BASE}/oauth/token", "exp": int(time.time() + 240),
                  "jti": uuid.uuid4().hex}
        signed = jwt.encode({"alg": "ES384", "kid": "k1", "typ": "JWT"}, claims, key,
                            algorithms=["ES384"])
        response = self.api.post("/oauth/token", data={
            "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed, "scope": scope})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def put(self, body: dict[str, Any], org: str = "RZ1", labels: Iterable[str] = (),
            index: Iterable[tuple[str, str]] | None = None) -> dict[str, Any]:
        """Store a resource (a new version if its id exists) as the ingest would."""
        keyring, blind_index = self.repo_keys
        if index is None:
            index = index_values(body)
        with self.sessions() as session:
            stored = ResourceRepository(session, keyring, blind_index).put(
                body, source_feed="test", source_org=org, source_record_id=body.get("id"),
                security_labels=tuple(labels), index_values=index)
            session.commit()
        return stored

    def client(self, client_id: str, members: Iterable[str]) -> None:
        """A unified client made of these source Patients."""
        with self.sessions() as session:
            session.add(ClientRow(id=client_id, status="active", replaced_by=None,
                                  created_run=1, updated_run=1))
            session.add_all(ClientMemberRow(unique_id=m, client_id=client_id, run_id=1)
                            for m in members)
            session.commit()

    def get(self, url: str, headers: dict[str, str]) -> Any:
        return self.api.get(url, headers=headers)


@contextmanager
def serve_world(database_url: str, folder: Path) -> Iterator[World]:
    migrate(database_url)
    settings = Settings(database_url=database_url, data_dir=folder / "var", public_url=BASE)
    keys = load_or_create_keys(settings)
    engine = make_engine(database_url)
    try:
        with TestClient(create_app(settings), base_url=BASE) as api:
            yield World(api, settings, make_session_factory(engine),
                        OAuthClientRepository(make_session_factory(engine)), keys)
    finally:
        engine.dispose()


def patient(pid: str, family: str = "Quixblatterwick") -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female",
            "birthDate": "1970-01-02", "name": [{"family": family, "given": ["Ann"]}]}


def condition(cid: str, pid: str, code: str = "38341003",
              onset: str = "2024-03-01") -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cid, "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": "active"}]},
            "onsetDateTime": onset}
