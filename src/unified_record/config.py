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

    @property
    def resolved_key_file(self) -> Path:
        return self.key_file or self.data_dir / "keys.json"


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
