"""Bearer tokens at the FHIR API: what is accepted, what gets 401 or 403, and how errors
look (OperationOutcome, `application/fhir+json`, never a stack trace)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from api_support import assertion, bearer, token_form
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey

from unified_record.security import AuthorizationServer
from unified_record.store import OAuthClient


def _token(api: TestClient, partner: OAuthClient, key: ECKey,
           scope: str = "system/Patient.rs") -> str:
    response = api.post("/oauth/token", data=token_form(assertion(key, partner.client_id), scope))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _server(api: TestClient) -> AuthorizationServer:
    server: AuthorizationServer = api.app.state.authorization_server  # type: ignore[attr-defined]
    return server


def _is_outcome(response: object, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("application/fhir+json")  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    from fhir.resources.R4B.operationoutcome import OperationOutcome

    OperationOutcome.model_validate(body)
    assert body["issue"][0]["code"] == code
    return body  # type: ignore[no-any-return]


def _unauthorised(api: TestClient, token: str, reason: str) -> None:
    response = api.get("/fhir/_probe/patient", headers=bearer(token))
    body = _is_outcome(response, 401, "login")
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge
    assert reason in str(body["issue"][0]["diagnostics"])  # type: ignore[index]


def _sign(claims: dict[str, object], key: ECKey, alg: str = "ES256",
          typ: str = "at+jwt") -> str:
    return jwt.encode({"alg": alg, "kid": key.kid, "typ": typ}, claims, key, algorithms=[alg])


def _claims(partner: OAuthClient, **changes: object) -> dict[str, object]:
    now = int(time.time())
    return {"iss": "http://testserver", "aud": "http://testserver/fhir",
            "sub": partner.client_id, "client_id": partner.client_id,
            "scope": "system/Patient.rs", "iat": now, "nbf": now, "exp": now + 300,
            "jti": "t1", **changes}


def test_missing_or_malformed_authorization_gets_401(api: TestClient) -> None:
    response = api.get("/fhir/_probe/patient")
    _is_outcome(response, 401, "login")
    assert response.headers["www-authenticate"] == 'Bearer realm="unified-record"'
    response = api.get("/fhir/_probe/patient", headers={"Authorization": "Basic abc"})
    _is_outcome(response, 401, "login")
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    _unauthorised(api, "not-a-jwt", "not a signed JWT")


def test_tampered_token_gets_401(api: TestClient, partner: OAuthClient, es_key: ECKey) -> None:
    token = _token(api, partner, es_key)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "system/*.cruds"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    _unauthorised(api, f"{header}.{forged}.{signature}", "signature does not verify")


def test_expired_and_not_yet_valid_tokens_get_401(api: TestClient, partner: OAuthClient) -> None:
    server = _server(api)
    old = server.issue(partner, "system/Patient.rs", now=time.time() - 400)
    _unauthorised(api, old, "expired")
    early = server.issue(partner, "system/Patient.rs", now=time.time() + 120)
    _unauthorised(api, early, "not valid yet")


def test_tokens_from_elsewhere_get_401(api: TestClient, partner: OAuthClient) -> None:
    stranger = ECKey.generate_key("P-256", auto_kid=True)
    _unauthorised(api, _sign(_claims(partner, iss="https://idp.example"), stranger),
                  "issuer is not trusted")
    # our issuer's name, someone else's key (with our key id, or another)
    ours = _server(api).signing_key
    impostor = ECKey.generate_key("P-256", parameters={"kid": ours.kid})
    _unauthorised(api, _sign(_claims(partner), impostor), "signature does not verify")
    _unauthorised(api, _sign(_claims(partner), stranger), "signing key is unknown")
    # our key, but meant for another audience, or not an access token
    _unauthorised(api, _sign(_claims(partner, aud="https://other.example/fhir"), ours.key),
                  "claim aud")
    _unauthorised(api, _sign(_claims(partner), ours.key, typ="JWT"), "token type")


def test_none_and_hmac_algorithms_get_401(api: TestClient, partner: OAuthClient) -> None:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    unsigned = f"{part({'alg': 'none', 'typ': 'at+jwt'})}.{part(_claims(partner))}."
    response = api.get("/fhir/_probe/patient", headers=bearer(unsigned))
    _is_outcome(response, 401, "login")
    # HS256 keyed with the issuer's *public* key: the classic algorithm-confusion attack
    # (joserfc refuses to build such a key, so sign by hand)
    public_pem = _server(api).signing_key.key.as_pem(private=False)
    signing_input = (f"{part({'alg': 'HS256', 'typ': 'at+jwt'})}."
                     f"{part(_claims(partner))}")
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    _unauthorised(api, forged, "algorithm is not allowed")


def test_insufficient_scope_gets_403_outcome(api: TestClient, partner: OAuthClient,
                                             es_key: ECKey) -> None:
    token = _token(api, partner, es_key, "system/Observation.read")
    response = api.get("/fhir/_probe/patient", headers=bearer(token))
    body = _is_outcome(response, 403, "forbidden")
    assert "read on Patient" in str(body["issue"][0]["diagnostics"])  # type: ignore[index]
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    # read (r) does not include search (s): Patient.rs covers it, Condition is not granted
    token = _token(api, partner, es_key, "system/Patient.rs")
    _is_outcome(api.get("/fhir/_probe/condition", headers=bearer(token)), 403, "forbidden")
    assert api.get("/fhir/_probe/anyone", headers=bearer(token)).status_code == 200


def test_metadata_is_a_valid_capability_statement(api: TestClient) -> None:
    response = api.get("/fhir/metadata")  # no token needed
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    from fhir.resources.R4B.capabilitystatement import CapabilityStatement

    statement = CapabilityStatement.model_validate(response.json())
    assert statement.kind == "instance" and statement.fhirVersion == "4.0.1"
    security = response.json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert security["extension"][0]["extension"][0]["valueUri"] == \
        "http://testserver/oauth/token"


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/fhir/NoSuchThing/1", 404, "not-supported"),
    ("/fhir/_nothing/here/at/all", 404, "not-found"),
    ("/fhir/_probe/count?count=lots", 400, "invalid"),
    ("/fhir/_probe/boom", 500, "exception"),
])
def test_errors_are_operation_outcomes(api: TestClient, path: str, status: int,
                                       code: str, caplog: pytest.LogCaptureFixture) -> None:
    body = _is_outcome(api.get(path), status, code)
    assert "9434765919" not in json.dumps(body)
    assert "Traceback" not in json.dumps(body)
    assert "9434765919" not in caplog.text, "the exception's message never reaches the log"


def test_method_not_allowed_is_an_outcome(api: TestClient) -> None:
    _is_outcome(api.delete("/fhir/metadata"), 405, "not-supported")


def test_errors_outside_fhir_stay_plain_json(api: TestClient) -> None:
    response = api.get("/no/such/page")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
