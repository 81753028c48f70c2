"""Where the token issuer's key comes from (like the data keys), and remote JWKS caching."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey

from unified_record.api import create_app
from unified_record.config import ConfigError, Settings, load_settings
from unified_record.security import load_or_create_signing_key
from unified_record.security.jwks import JWKSCache, JWKSError, key_set_from_jwks


def _pem(private_key: Any) -> str:
    return private_key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("UR_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("UR_DATA_DIR", str(tmp_path / "var"))
    return tmp_path / "var"


def test_development_key_file_is_made_once_with_0600(data_dir: Path) -> None:
    first = load_or_create_signing_key(load_settings())
    path = data_dir / "token-signing-key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.alg == "ES256"
    again = load_or_create_signing_key(load_settings())
    assert again.kid == first.kid, "the same key after a restart"
    assert "PRIVATE" not in repr(first) and "d" not in first.public_jwks()["keys"][0]


def test_loose_key_file_is_refused(data_dir: Path) -> None:
    load_or_create_signing_key(load_settings())
    path = data_dir / "token-signing-key.pem"
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="0600"):
        load_or_create_signing_key(load_settings())


def test_production_without_a_signing_key_refuses(data_dir: Path) -> None:
    settings = Settings.model_construct(env="production", data_dir=data_dir,
                                        public_url="https://record.example")
    with pytest.raises(ConfigError, match="UR_TOKEN_SIGNING_KEY"):
        load_or_create_signing_key(settings)
    with pytest.raises(ConfigError, match="UR_TOKEN_SIGNING_KEY"):
        create_app(settings)
    assert not data_dir.exists()
    no_url = Settings.model_construct(env="production", data_dir=data_dir, public_url="")
    with pytest.raises(ConfigError, match="UR_PUBLIC_URL"):
        create_app(no_url)


def test_key_from_the_environment_or_a_file(data_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UR_TOKEN_SIGNING_KEY", _pem(rsa.generate_private_key(65537, 2048)))
    key = load_or_create_signing_key(load_settings())
    assert key.alg == "RS256"
    monkeypatch.delenv("UR_TOKEN_SIGNING_KEY")
    path = tmp_path / "issuer.pem"
    path.write_text(_pem(ec.generate_private_key(ec.SECP256R1())))
    path.chmod(0o600)
    monkeypatch.setenv("UR_TOKEN_SIGNING_KEY_FILE", str(path))
    assert load_or_create_signing_key(load_settings()).alg == "ES256"
    assert not data_dir.exists(), "no development file when a key is configured"


@pytest.mark.parametrize("bad", ["garbage", "p384", "rsa1024"])
def test_unusable_keys_are_refused_without_echoing_them(data_dir: Path, bad: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    text = {"garbage": "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
            "p384": _pem(ec.generate_private_key(ec.SECP384R1())),
            "rsa1024": _pem(rsa.generate_private_key(65537, 1024))}[bad]
    monkeypatch.setenv("UR_TOKEN_SIGNING_KEY", text)
    with pytest.raises(ConfigError, match="UR_TOKEN_SIGNING_KEY") as info:
        load_or_create_signing_key(load_settings())
    assert "c2VjcmV0" not in str(info.value) and "BEGIN" not in str(info.value)


def test_oidc_settings_come_together(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UR_OIDC_ISSUER", "https://idp.example")
    with pytest.raises(ConfigError, match="UR_OIDC_JWKS_URL, UR_OIDC_AUDIENCE"):
        load_settings()


def test_server_settings_have_safe_defaults(data_dir: Path) -> None:
    settings = load_settings()
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.resolved_public_url == "http://127.0.0.1:8000"
    assert settings.token_lifetime <= 300 and settings.allow_client_secret is False


class FakeFetch:
    def __init__(self, *documents: dict[str, Any]) -> None:
        self.documents = list(documents)
        self.calls = 0

    def __call__(self, url: str) -> dict[str, Any]:
        self.calls += 1
        return self.documents[min(self.calls, len(self.documents)) - 1]


def test_jwks_cache_refetches_for_a_new_kid_but_not_too_often() -> None:
    old = ECKey.generate_key("P-256", parameters={"kid": "old"})
    new = ECKey.generate_key("P-256", parameters={"kid": "new"})
    fetch = FakeFetch({"keys": [old.as_dict(private=False)]},
                      {"keys": [old.as_dict(private=False), new.as_dict(private=False)]})
    now = [1000.0]
    cache = JWKSCache("https://idp/jwks", ttl=300, min_refetch=30, fetch=fetch,
                      clock=lambda: now[0])
    assert cache.get("old") is not None and fetch.calls == 1
    assert cache.get("new") is None and fetch.calls == 1, "too soon to refetch"
    now[0] += 31
    assert cache.get("new") is not None and fetch.calls == 2, "the provider rotated"
    assert cache.get("nope") is None and fetch.calls == 2
    now[0] += 301
    assert cache.get("old") is not None and fetch.calls == 3, "expired: fetched again"


def test_jwks_documents_are_checked() -> None:
    private = ECKey.generate_key("P-256", parameters={"kid": "k"}).as_dict(private=True)
    for document in ({}, {"keys": []}, {"keys": ["x"]}, {"keys": [private]},
                     {"keys": [{"kty": "EC", "kid": "k"}]}):
        with pytest.raises(JWKSError):
            key_set_from_jwks(document, "test")
