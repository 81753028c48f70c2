"""The web pages' sign-in settings: production refuses the demo sign-in and needs an
external OpenID Connect provider and a session secret."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from unified_record.api.oauth import login_server
from unified_record.api.ui.settings import load_ui_settings
from unified_record.config import ConfigError, Settings

PRODUCTION = {"env": "production", "data_keys": "k1:" + "A" * 44, "index_key": "B" * 44,
              "database_url": "postgresql+psycopg://db.example/ur",
              "public_url": "https://record.example"}


def _request(settings: Settings) -> Any:
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(settings=settings)))


def test_production_refuses_the_demo_sign_in(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ISSUER", "CLIENT_ID", "CLIENT_SECRET"):
        monkeypatch.delenv(f"UR_UI_OIDC_{name}", raising=False)
    monkeypatch.delenv("UR_UI_SESSION_SECRET", raising=False)
    settings = Settings(**PRODUCTION)  # type: ignore[arg-type]
    assert login_server(_request(settings)) is None
    with pytest.raises(ConfigError, match="UR_UI_OIDC_ISSUER"):
        load_ui_settings(settings)
    monkeypatch.setenv("UR_UI_OIDC_ISSUER", "https://login.council.example/realms/staff")
    monkeypatch.setenv("UR_UI_OIDC_CLIENT_ID", "unified-record")
    monkeypatch.setenv("UR_UI_OIDC_CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("UR_UI_SESSION_SECRET", "short")
    with pytest.raises(ConfigError, match="at least 32"):
        load_ui_settings(settings)
    monkeypatch.setenv("UR_UI_SESSION_SECRET", "x" * 40)
    assert load_ui_settings(settings).oidc_issuer.startswith("https://login.council")


def test_development_needs_nothing(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path)
    assert load_ui_settings(settings).oidc_issuer == ""
