"""SMART Backend Services at /oauth/token: the happy path with ES384 and RS384, and every
way a client assertion can be wrong (RFC 6749 error bodies)."""

from __future__ import annotations

import base64
import time
import uuid

import pytest
from api_support import ASSERTION_TYPE, TOKEN_URL, assertion, bearer, es384_key, token_form
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from unified_record.config import Settings
from unified_record.security import hash_client_secret
from unified_record.store import OAuthClient, OAuthClientRepository


@pytest.mark.parametrize("which", ["es", "rs"])
def test_backend_services_flow(api: TestClient, partner: OAuthClient, es_key: ECKey,
                               rs_key: RSAKey, which: str) -> None:
    key = es_key if which == "es" else rs_key
    response = api.post("/oauth/token",
                        data=token_form(assertion(key, partner.client_id), "system/Patient.rs"))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert 0 < body["expires_in"] <= 300
    assert body["scope"] == "system/Patient.rs"

    claims = jwt.decode(body["access_token"], _jwks(api)).claims
    assert claims["iss"] == "http://testserver"
    assert claims["aud"] == "http://testserver/fhir"
    assert claims["sub"] == claims["client_id"] == partner.client_id
    assert claims["organisation"] == "A81001" and claims["role"] == "gp-system"
    assert claims["exp"] - claims["iat"] <= 300
    assert claims["nbf"] <= time.time() + 1 and claims["jti"]

    probe = api.get("/fhir/_probe/patient", headers=bearer(body["access_token"]))
    assert probe.status_code == 200, probe.text
    assert probe.json() == {"client_id": partner.client_id, "sub": partner.client_id,
                            "role": "gp-system", "organisation": "A81001",
                            "scope": "system/Patient.rs", "issuer": "http://testserver"}
    metadata = api.get("/fhir/metadata", headers=bearer(body["access_token"]))
    assert metadata.status_code == 200


def test_scope_is_narrowed_to_what_the_client_is_registered_for(
        api: TestClient, partner: OAuthClient, es_key: ECKey) -> None:
    form = token_form(assertion(es_key, partner.client_id),
                      "system/*.cruds system/Observation.read user/Patient.rs openid")
    body = api.post("/oauth/token", data=form).json()
    # user/ and openid were never registered; system/*.cruds narrows to each registered type
    assert body["scope"].split() == ["system/Patient.rs", "system/Observation.rs",
                                     "system/Observation.read"]

    no_scope = api.post("/oauth/token", data=token_form(assertion(es_key, partner.client_id),
                                                        None)).json()
    assert no_scope["scope"] == "system/Patient.rs system/Observation.read"


def test_nothing_grantable_is_invalid_scope(api: TestClient, partner: OAuthClient,
                                            es_key: ECKey) -> None:
    form = token_form(assertion(es_key, partner.client_id), "system/Condition.rs user/*.rs")
    response = api.post("/oauth/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def _jwks(api: TestClient) -> object:
    from joserfc.jwk import KeySet

    document = api.get("/oauth/jwks").json()
    assert all("d" not in key for key in document["keys"])
    return KeySet.import_key_set(document)


def _refused(api: TestClient, form: dict[str, str], error: str = "invalid_client",
             status: int = 400) -> str:
    response = api.post("/oauth/token", data=form)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error, body
    assert response.headers["cache-control"] == "no-store"
    return str(body.get("error_description", ""))


def test_replayed_jti_is_refused(api: TestClient, partner: OAuthClient, es_key: ECKey) -> None:
    signed = assertion(es_key, partner.client_id)
    assert api.post("/oauth/token", data=token_form(signed)).status_code == 200
    assert "used before" in _refused(api, token_form(signed))
    # the same jti in a freshly signed assertion is a replay too
    jti = uuid.uuid4().hex
    assert api.post("/oauth/token",
                    data=token_form(assertion(es_key, partner.client_id, jti=jti))).status_code \
        == 200
    assert "used before" in _refused(api, token_form(assertion(es_key, partner.client_id,
                                                               jti=jti)))


def test_replay_is_refused_by_another_app_on_the_same_database(
        api: TestClient, partner: OAuthClient, es_key: ECKey, settings: Settings) -> None:
    """Two workers share nothing but the database: the jti rule must still hold."""
    from unified_record.api import create_app

    signed = assertion(es_key, partner.client_id)
    assert api.post("/oauth/token", data=token_form(signed)).status_code == 200
    with TestClient(create_app(settings), base_url="http://testserver") as other:
        assert "used before" in _refused(other, token_form(signed))


@pytest.mark.parametrize(("change", "message"), [
    ({"token_url": "http://testserver/other"}, "aud must be the token URL"),
    ({"exp_in": 600}, "more than five minutes ahead"),
    ({"exp_in": -120}, "expired"),
    ({"kid": "no-such-kid"}, "no key registered"),
    ({"alg": "ES256"}, "RS384 or ES384"),
    ({"alg": "HS256"}, "RS384 or ES384"),
])
def test_bad_assertions_are_refused(api: TestClient, partner: OAuthClient, es_key: ECKey,
                                    change: dict[str, object], message: str) -> None:
    if change.get("alg") == "HS256":
        from joserfc.jwk import OctKey

        key = OctKey.import_key(b"k" * 32, parameters={"kid": es_key.kid})
        signed = jwt.encode({"alg": "HS256", "kid": es_key.kid},
                            {"iss": partner.client_id, "sub": partner.client_id,
                             "aud": TOKEN_URL, "exp": int(time.time()) + 60, "jti": "x"},
                            key, algorithms=["HS256"])
    elif change.get("alg") == "ES256":
        p256 = ECKey.generate_key("P-256", parameters={"kid": es_key.kid})
        signed = assertion(p256, partner.client_id, alg="ES256")
    else:
        signed = assertion(es_key, partner.client_id, **change)
    assert message in _refused(api, token_form(signed))


def test_unknown_client_and_foreign_key_are_refused(api: TestClient, partner: OAuthClient,
                                                    es_key: ECKey) -> None:
    assert "unknown" in _refused(api, token_form(assertion(es_key, "no-such-client")))
    impostor = es384_key(kid=str(es_key.kid))  # right kid, wrong private key
    assert "signature" in _refused(api, token_form(assertion(impostor, partner.client_id)))
    mismatched = assertion(es_key, partner.client_id, sub="someone-else")
    assert "iss and sub" in _refused(api, token_form(mismatched))


def test_missing_jti_or_exp_is_refused(api: TestClient, partner: OAuthClient,
                                       es_key: ECKey) -> None:
    signed = jwt.encode({"alg": "ES384", "kid": es_key.kid},
                        {"iss": partner.client_id, "sub": partner.client_id, "aud": TOKEN_URL,
                         "exp": int(time.time()) + 60}, es_key, algorithms=["ES384"])
    assert "jti" in _refused(api, token_form(signed))
    signed = jwt.encode({"alg": "ES384", "kid": es_key.kid},
                        {"iss": partner.client_id, "sub": partner.client_id, "aud": TOKEN_URL,
                         "jti": "j"}, es_key, algorithms=["ES384"])
    assert "exp" in _refused(api, token_form(signed))


def test_inactive_client_is_refused(api: TestClient, clients: OAuthClientRepository,
                                    es_key: ECKey, partner: OAuthClient) -> None:
    import sqlalchemy as sa

    from unified_record.store import OAuthClientRow

    with clients._sessions.begin() as session:
        session.execute(sa.update(OAuthClientRow).values(active=False))
    assert "inactive" in _refused(api, token_form(assertion(es_key, partner.client_id)))


def test_malformed_requests(api: TestClient, partner: OAuthClient, es_key: ECKey) -> None:
    signed = assertion(es_key, partner.client_id)
    _refused(api, {**token_form(signed), "grant_type": "password"}, "unsupported_grant_type")
    _refused(api, {"scope": "system/Patient.rs"}, "invalid_request")
    _refused(api, {"grant_type": "client_credentials"}, "invalid_client", 401)
    _refused(api, {**token_form(signed), "client_assertion_type": "urn:other"})
    _refused(api, {**token_form("not.a.jwt")})
    as_json = api.post("/oauth/token", json=token_form(signed))
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    repeated = api.post("/oauth/token", content="grant_type=client_credentials&"
                        "grant_type=client_credentials",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert repeated.json()["error"] == "invalid_request"
    huge = api.post("/oauth/token", content=b"a=" + b"x" * 70_000,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 400


def _secret_client(clients: OAuthClientRepository) -> tuple[str, str]:
    secret = "s3cr3t-for-tests-only-" + uuid.uuid4().hex
    client = clients.add(name="Dev tool", organisation="X26", role=None,
                         scopes="system/Patient.rs", secret_hash=hash_client_secret(secret))
    return client.client_id, secret


def _basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def test_client_secret_basic_is_refused_unless_allowed(api: TestClient,
                                                       clients: OAuthClientRepository) -> None:
    client_id, secret = _secret_client(clients)
    response = api.post("/oauth/token", data={"grant_type": "client_credentials"},
                        headers=_basic(client_id, secret))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert "development only" in response.json()["error_description"]
    assert response.headers["www-authenticate"].startswith("Basic")
    smart = api.get("/.well-known/smart-configuration").json()
    assert smart["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]


def test_client_secret_basic_in_development(settings: Settings,
                                            clients: OAuthClientRepository) -> None:
    from unified_record.api import create_app

    dev = settings.model_copy(update={"allow_client_secret": True})
    client_id, secret = _secret_client(clients)
    with TestClient(create_app(dev), base_url="http://testserver") as api:
        ok = api.post("/oauth/token", data={"grant_type": "client_credentials"},
                      headers=_basic(client_id, secret))
        assert ok.status_code == 200, ok.text
        assert ok.json()["scope"] == "system/Patient.rs"
        wrong = api.post("/oauth/token", data={"grant_type": "client_credentials"},
                         headers=_basic(client_id, secret + "x"))
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        smart = api.get("/.well-known/smart-configuration").json()
        assert "client_secret_basic" in smart["token_endpoint_auth_methods_supported"]


def test_discovery_and_keys(api: TestClient) -> None:
    for path in ("/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"):
        smart = api.get(path).json()
        assert smart["token_endpoint"] == "http://testserver/oauth/token"
        assert smart["grant_types_supported"] == ["client_credentials"]
        assert smart["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
        assert "system/*.rs" in smart["scopes_supported"]
        assert {"client-confidential-asymmetric", "permission-v2", "permission-v1"} <= \
            set(smart["capabilities"])
        assert smart["jwks_uri"] == "http://testserver/oauth/jwks"
    keys = api.get("/oauth/jwks").json()["keys"]
    assert len(keys) == 1 and keys[0]["alg"] == "ES256" and keys[0]["kid"]
    assert "d" not in keys[0]
    assert ASSERTION_TYPE in str(api.get("/openapi.json").json()["paths"]["/oauth/token"])


def test_client_with_a_jwks_url(api: TestClient, clients: OAuthClientRepository) -> None:
    """The client publishes its keys; a new key is picked up when it first signs with it."""
    from api_support import JWKSServer, public_jwks

    first = es384_key("2026-a")
    published = JWKSServer(public_jwks(first))
    try:
        client = clients.add(name="Trust EPR", organisation="RR8", role="acute-epr",
                             scopes="system/*.rs", jwks_url=published.url)
        ok = api.post("/oauth/token", data=token_form(assertion(first, client.client_id)))
        assert ok.status_code == 200, ok.text
        assert published.fetches == 1
        ok = api.post("/oauth/token", data=token_form(assertion(first, client.client_id)))
        assert ok.status_code == 200 and published.fetches == 1, "cached"
        _refused(api, token_form(assertion(es384_key("2026-b"), client.client_id)))
    finally:
        published.close()
    gone = clients.add(name="Gone", organisation="RR9", role=None, scopes="system/*.rs",
                       jwks_url="http://127.0.0.1:9/jwks")
    assert "cannot be read" in _refused(api, token_form(assertion(first, gone.client_id)))
