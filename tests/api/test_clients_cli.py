"""`unified-record clients add` as an operator uses it (see the `env` fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from api_support import es384_key, public_jwks, rs384_key
from cli_support import run
from joserfc.jwk import ECKey

from unified_record.config import load_settings
from unified_record.store import OAuthClientRepository, make_engine, make_session_factory


def _stored(client_id: str) -> dict[str, object]:
    engine = make_engine(load_settings().database_url)
    try:
        client = OAuthClientRepository(make_session_factory(engine)).get(client_id)
    finally:
        engine.dispose()
    assert client is not None
    keys = client.jwks["keys"] if client.jwks else []
    return {"name": client.name, "organisation": client.organisation, "role": client.role,
            "scopes": client.scopes, "kids": [k["kid"] for k in keys],
            "secret": client.secret_hash is not None, "active": client.active}


def test_clients_add_registers_and_prints_the_id_last(env: Path) -> None:
    jwks_file = env / "partner.jwks.json"
    jwks_file.write_text(json.dumps(public_jwks(es384_key("es-1"), rs384_key("rs-1"))))
    code, out = run("clients", "add", "--name", "Leeds GP system", "--jwks-file",
                    str(jwks_file), "--scope", "system/Patient.rs system/Observation.read",
                    "--org", "b86001", "--role", "gp-system")
    assert code == 0, out
    client_id = out.strip().splitlines()[-1]
    assert _stored(client_id) == {
        "name": "Leeds GP system", "organisation": "B86001", "role": "gp-system",
        "scopes": "system/Patient.rs system/Observation.read", "kids": ["es-1", "rs-1"],
        "secret": False, "active": True}
    code, again = run("clients", "add", "--name", "Leeds GP system", "--jwks-file",
                      str(jwks_file), "--scope", "system/Patient.rs", "--org", "B86001")
    assert code == 0 and again.strip().splitlines()[-1] != client_id


def test_clients_add_with_a_jwks_url_or_a_dev_secret(env: Path) -> None:
    code, out = run("clients", "add", "--name", "Trust EPR", "--jwks-url",
                    "https://epr.example/jwks", "--scope", "system/*.rs", "--org", "RR8")
    assert code == 0, out
    code, out = run("clients", "add", "--name", "Dev tool", "--with-secret",
                    "--scope", "system/Patient.rs", "--org", "X26")
    assert code == 0, out
    assert "client secret (development only" in out
    assert _stored(out.strip().splitlines()[-1])["secret"] is True


@pytest.mark.parametrize(("case", "message"), [
    ("private", "private key material"),
    ("p256", "cannot sign RS384 or ES384"),
    ("no-kid", "needs a kid"),
    ("not-json", "not valid JSON"),
    ("scope", "not a SMART resource scope"),
    ("org", "--org must be"),
    ("no-keys", "give the client's public keys"),
])
def test_clients_add_refuses_bad_input(env: Path, case: str, message: str) -> None:
    jwks_file = env / "keys.json"
    key = es384_key()
    document = {
        "private": {"keys": [key.as_dict(private=True)]},
        "p256": public_jwks(ECKey.generate_key("P-256", parameters={"kid": "p"})),
        "no-kid": {"keys": [{k: v for k, v in key.as_dict(private=False).items()
                             if k != "kid"}]},
    }.get(case, public_jwks(key))
    jwks_file.write_text("{oops" if case == "not-json" else json.dumps(document))
    args = ["clients", "add", "--name", "X", "--jwks-file", str(jwks_file),
            "--scope", "patient/Patient.rs" if case != "scope" else "Patient.read",
            "--org", "A81001" if case != "org" else "A8-1001"]
    if case == "no-keys":
        args = args[:3] + args[5:]
    code, out = run(*args)
    assert code == 2
    assert message in out
    assert '"d"' not in out and str(key.as_dict(private=True)["d"]) not in out


def test_dev_secret_is_refused_in_production(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UR_ENV", "production")
    monkeypatch.setenv("UR_DATABASE_URL", "postgresql+psycopg://db.invalid/ur")
    monkeypatch.setenv("UR_DATA_KEYS", "k1:" + "A" * 43 + "=")
    monkeypatch.setenv("UR_INDEX_KEY", "B" * 43 + "=")
    code, out = run("clients", "add", "--name", "Dev tool", "--with-secret",
                    "--scope", "system/Patient.rs", "--org", "X26")
    assert code == 2 and "--with-secret is for development only" in out
    monkeypatch.setenv("UR_ALLOW_CLIENT_SECRET", "true")
    code, out = run("version")
    assert code == 2 and "UR_ALLOW_CLIENT_SECRET is for development only" in out
