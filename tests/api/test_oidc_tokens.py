"""Tokens from an external OpenID Connect provider, whose JWKS a tiny local HTTP server
publishes: accepted when everything checks out, refused (401) otherwise."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from api_support import BASE, JWKSServer, bearer, public_jwks, with_probes
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from unified_record.api import create_app
from unified_record.config import Settings

IDP = "https://idp.example/realms/council"
AUDIENCE = "https://record.example/fhir"


@pytest.fixture(scope="module")
def idp_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "idp-1"})


@pytest.fixture
def idp(idp_key: RSAKey) -> Iterator[JWKSServer]:
    server = JWKSServer(public_jwks(idp_key, ECKey.generate_key("P-256",
                                                                parameters={"kid": "idp-2"})))
    yield server
    server.close()


@pytest.fixture
def oidc_api(settings: Settings, idp: JWKSServer) -> Iterator[TestClient]:
    configured = settings.model_copy(update={
        "oidc_issuer": IDP, "oidc_jwks_url": idp.url, "oidc_audience": AUDIENCE,
        "oidc_organisation_claim": "ods_code"})
    with TestClient(with_probes(create_app(configured)), base_url=BASE) as client:
        yield client


def _idp_token(key: RSAKey | ECKey, alg: str = "RS256", **changes: Any) -> str:
    now = int(time.time())
    claims = {"iss": IDP, "aud": [AUDIENCE, "account"], "sub": "user-7f3a", "azp": "council-ui",
              "scope": "openid user/Patient.rs", "ods_code": "E08000035",
              "role": "social-worker", "iat": now, "exp": now + 300, **changes}
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])


def test_provider_token_is_accepted(oidc_api: TestClient, idp: JWKSServer,
                                    idp_key: RSAKey) -> None:
    response = oidc_api.get("/fhir/_probe/patient", headers=bearer(_idp_token(idp_key)))
    assert response.status_code == 200, response.text
    assert response.json() == {"client_id": "council-ui", "sub": "user-7f3a",
                               "role": "social-worker", "organisation": "E08000035",
                               "scope": "user/Patient.rs openid", "issuer": IDP}
    for _ in range(3):
        oidc_api.get("/fhir/_probe/patient", headers=bearer(_idp_token(idp_key)))
    assert idp.fetches == 1, "the JWKS is cached"


def test_provider_tokens_are_checked(oidc_api: TestClient, idp: JWKSServer,
                                     idp_key: RSAKey) -> None:
    def refused(token: str, reason: str) -> None:
        response = oidc_api.get("/fhir/_probe/patient", headers=bearer(token))
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer ")
        assert reason in response.json()["issue"][0]["diagnostics"]

    refused(_idp_token(idp_key, aud="https://someone-else.example"), "claim aud")
    refused(_idp_token(idp_key, exp=int(time.time()) - 120), "expired")
    refused(_idp_token(idp_key, nbf=int(time.time()) + 120), "not valid yet")
    refused(_idp_token(idp_key, iss="https://idp.example/realms/other"), "not trusted")
    stranger = RSAKey.generate_key(2048, parameters={"kid": "idp-9"})
    refused(_idp_token(stranger), "signing key is unknown")
    impostor = RSAKey.generate_key(2048, parameters={"kid": "idp-1"})
    refused(_idp_token(impostor), "signature does not verify")
    # a valid token whose scopes do not cover the interaction is a 403, not a 401
    narrow = _idp_token(idp_key, scope="openid user/Observation.rs")
    assert oidc_api.get("/fhir/_probe/patient", headers=bearer(narrow)).status_code == 403
    # patient/ scopes without a patient in context grant nothing at type level
    patient_only = _idp_token(idp_key, scope="patient/Patient.rs")
    assert oidc_api.get("/fhir/_probe/patient", headers=bearer(patient_only)).status_code \
        == 403
    with_context = _idp_token(idp_key, scope="patient/Patient.rs", patient="p-123")
    assert oidc_api.get("/fhir/_probe/patient", headers=bearer(with_context)).status_code \
        == 200


def test_provider_keys_unreachable_is_401_not_500(settings: Settings) -> None:
    configured = settings.model_copy(update={
        "oidc_issuer": IDP, "oidc_jwks_url": "http://127.0.0.1:9/jwks",
        "oidc_audience": AUDIENCE})
    key = RSAKey.generate_key(2048, parameters={"kid": "idp-1"})
    with TestClient(with_probes(create_app(configured)), base_url=BASE) as api:
        response = api.get("/fhir/_probe/patient", headers=bearer(_idp_token(key)))
    assert response.status_code == 401
    assert "cannot be fetched" in response.json()["issue"][0]["diagnostics"]
