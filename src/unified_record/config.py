"""Settings from `UR_*` environment variables, validated once at start-up.

The embedded default (``UR_ENV=development``) runs with no configuration at all; a production
setting that lacks a secret refuses to start instead of falling back to a default.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(Exception):
    """Configuration is invalid; the message names the variable, never its value."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UR_", extra="ignore")

    env: Literal["development", "production"] = "development"
    database_url: str = "sqlite:///./var/unified-record.db"
    data_dir: Path = Path("./var")
    # Key ring for encryption at rest: comma-separated `key_id:base64-key` entries, the first
    # one encrypts, all of them decrypt. Empty in development means: use the local key file.
    data_keys: str = Field(default="", repr=False)
    # HMAC key for blind-index (searchable) hashes, base64. Same fallback rule as data_keys.
    index_key: str = Field(default="", repr=False)
    key_file: Path | None = None
    client_id_system: str = "https://unified-record.example/Id/client"
    # Linkage bands by match probability: auto-link at or above the first; a possible match
    # for a data steward's review at or above the second; no link below it.
    link_auto_threshold: float = Field(default=0.999, ge=0.0, le=1.0)
    link_review_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # The API server (`unified-record serve`): loopback only unless told otherwise.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    # Seconds an idle keep-alive connection stays open. Longer than clients and proxies keep
    # theirs (httpx: 5 s, load balancers: often 60 s): if the server closed first, a request
    # sent as it closes would meet a dropped connection (uvicorn's default, 5 s, equals
    # httpx's and did, about once in 10,000 requests under load).
    keep_alive_seconds: int = Field(default=65, ge=1, le=3600)
    # The address partners use to reach the service (https in production). The built-in
    # token issuer is this URL, tokens are for `<it>/fhir`, client assertions are for
    # `<it>/oauth/token`. Empty in development means http://host:port.
    public_url: str = ""
    # Request bodies larger than this are refused with 413 before a route reads them.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    # Requests in progress at once in each worker; the rest wait their turn. A request can
    # hold two database connections (its own, and the audit log's): each worker keeps twice
    # this many open (PostgreSQL's max_connections must allow that for every worker).
    max_concurrent_requests: int = Field(default=7, ge=1, le=1000)
    # The built-in issuer's private signing key (EC P-256 or RSA PEM), as text or as a file
    # (mode 0600). Empty in development means: use the local key file, made on first use.
    token_signing_key: str = Field(default="", repr=False)
    token_signing_key_file: Path | None = None
    token_lifetime: int = Field(default=300, ge=10, le=300)
    # client_secret_basic at the token endpoint: a development convenience, never production.
    allow_client_secret: bool = False
    # An external OpenID Connect provider whose access tokens the API also accepts.
    oidc_issuer: str = ""
    oidc_jwks_url: str = ""
    oidc_audience: str = ""
    oidc_organisation_claim: str = "organisation"
    oidc_role_claim: str = "role"
    # The built-in demo sign-in (development only) may also sign staff in to one other
    # service, acting as its OpenID Connect provider: that service's client id, secret and
    # redirect URIs (comma-separated), e.g. a second Unified Record's /ui/auth/callback.
    login_client_id: str = ""
    login_client_secret: str = Field(default="", repr=False)
    login_redirect_uris: str = ""
    # Information governance (docs/governance.md). The consent policy folder (consent/*.yaml);
    # empty means the repository's consent/ folder, which an installed wheel does not carry.
    consent_dir: Path | None = None
    # How long a break-glass grant lasts.
    break_glass_minutes: int = Field(default=60, ge=1, le=720)
    # The audit log's Ed25519 checkpoint signing key (PEM). Empty in development means: use
    # the local key file, made on first use; production refuses to sign without it.
    audit_signing_key: str = Field(default="", repr=False)
    # Public keys (base64, raw 32 bytes, comma-separated) of earlier signing keys, so
    # checkpoints they signed still verify after the key changes.
    audit_verify_keys: str = ""
    # A signed checkpoint after every this many audit entries.
    audit_checkpoint_every: int = Field(default=100, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> Settings:
        if self.env == "production":
            secrets = {"UR_DATA_KEYS": self.data_keys, "UR_INDEX_KEY": self.index_key}
            missing = [name for name, value in secrets.items() if not value]
            if missing:
                raise ValueError(f"production setting needs {', '.join(missing)}")
            if self.database_url.startswith("sqlite"):
                raise ValueError("production setting needs UR_DATABASE_URL for a server database")
        return self

    @model_validator(mode="after")
    def _bands_in_order(self) -> Settings:
        if self.link_review_threshold > self.link_auto_threshold:
            raise ValueError("UR_LINK_REVIEW_THRESHOLD must not exceed UR_LINK_AUTO_THRESHOLD")
        return self

    @model_validator(mode="after")
    def _token_settings(self) -> Settings:
        if self.allow_client_secret and self.env == "production":
            raise ValueError("UR_ALLOW_CLIENT_SECRET is for development only")
        oidc = {"UR_OIDC_ISSUER": self.oidc_issuer, "UR_OIDC_JWKS_URL": self.oidc_jwks_url,
                "UR_OIDC_AUDIENCE": self.oidc_audience}
        if any(oidc.values()) and not all(oidc.values()):
            missing = [name for name, value in oidc.items() if not value]
            raise ValueError(f"an external OpenID Connect provider needs {', '.join(missing)}")
        login = {"UR_LOGIN_CLIENT_ID": self.login_client_id,
                 "UR_LOGIN_CLIENT_SECRET": self.login_client_secret,
                 "UR_LOGIN_REDIRECT_URIS": self.login_redirect_uris}
        if any(login.values()) and not all(login.values()):
            missing = [name for name, value in login.items() if not value]
            raise ValueError(f"another service signing in here needs {', '.join(missing)}")
        if self.token_signing_key and self.token_signing_key_file:
            raise ValueError(
                "set UR_TOKEN_SIGNING_KEY or UR_TOKEN_SIGNING_KEY_FILE, not both")
        return self

    @property
    def resolved_public_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return self.public_url.rstrip("/") or f"http://{host}:{self.port}"

    @property
    def resolved_signing_key_file(self) -> Path:
        return self.token_signing_key_file or self.data_dir / "token-signing-key.pem"

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "keys.json"

    @property
    def resolved_consent_dir(self) -> Path:
        return self.consent_dir or Path(__file__).resolve().parents[2] / "consent"

    @property
    def resolved_audit_key_file(self) -> Path:
        return self.data_dir / "audit-signing-key.pem"


def load_settings() -> Settings:
    """Read and validate the environment; raise ConfigError with a one-line reason."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'UR_' + str(err['loc'][0]).upper() if err['loc'] else 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
