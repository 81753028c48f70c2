"""Settings of the web pages (`UR_UI_*`), read next to the service's own (`config.Settings`).

The embedded default signs staff in at the built-in issuer's demo login page and derives
the session key from the token signing key. Production needs an external OpenID Connect
provider (`UR_UI_OIDC_ISSUER`, `UR_UI_OIDC_CLIENT_ID`, `UR_UI_OIDC_CLIENT_SECRET`) and a
session secret (`UR_UI_SESSION_SECRET`, 32 bytes or more), and refuses to start without them.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from unified_record.config import ConfigError, Settings

__all__ = ["UISettings", "load_ui_settings", "role_from_claim"]


class UISettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UR_UI_", extra="ignore")

    # An external OpenID Connect provider for staff sign-in (its issuer URL; discovery at
    # <issuer>/.well-known/openid-configuration). Empty: the built-in demo issuer.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = Field(default="", repr=False)
    oidc_scope: str = "openid profile"
    # Claims of the ID token that name the user's role and organisation.
    role_claim: str = "role"
    organisation_claim: str = "organisation"
    # The provider's names for roles where they differ from the policy's (consent/roles.yaml),
    # as JSON: {"provider value": "role", ...}, e.g. {"CSC-SocialWorkers": "social_worker"}.
    # When set it is the whole list: a value it does not name gives no role.
    role_map: dict[str, str] = Field(default_factory=dict)
    # Signs the session cookie. Empty in development: derived from the token signing key.
    session_secret: str = Field(default="", repr=False)
    session_minutes: int = Field(default=480, ge=5, le=24 * 60)
    # Where the GOV.UK Frontend package was installed (npm, by `make`).
    assets_dir: Path | None = None

    @property
    def resolved_assets_dir(self) -> Path:
        return self.assets_dir or (Path(__file__).resolve().parents[4] / "node_modules")


def load_ui_settings(settings: Settings) -> UISettings:
    ui = UISettings()
    if settings.env == "production":
        missing = [name for name, value in (
            ("UR_UI_OIDC_ISSUER", ui.oidc_issuer), ("UR_UI_OIDC_CLIENT_ID", ui.oidc_client_id),
            ("UR_UI_OIDC_CLIENT_SECRET", ui.oidc_client_secret),
            ("UR_UI_SESSION_SECRET", ui.session_secret)) if not value]
        if missing:
            raise ConfigError(f"production setting needs {', '.join(missing)} for the web "
                              "pages' sign-in")
        if len(ui.session_secret) < 32:
            raise ConfigError("UR_UI_SESSION_SECRET must be at least 32 characters")
    return ui


def role_from_claim(value: Any, ui: UISettings, known: Collection[str]) -> str | None:
    """The policy role named by the ID token's role claim (a string, or a list such as
    groups), through `UR_UI_ROLE_MAP` when set; None when it names no known role."""
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    for item in values:
        if not isinstance(item, str):
            continue
        role = ui.role_map.get(item) if ui.role_map else item
        if role in known:
            return role
    return None
