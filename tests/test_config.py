import pytest

from unified_record.config import ConfigError, load_settings


def test_development_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("UR_ENV", "UR_DATABASE_URL", "UR_DATA_KEYS", "UR_INDEX_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.env == "development"
    assert settings.database_url == "sqlite:///./var/unified-record.db"


def test_production_without_secrets_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UR_ENV", "production")
    monkeypatch.setenv("UR_DATABASE_URL", "postgresql+psycopg://db/ur")
    monkeypatch.delenv("UR_DATA_KEYS", raising=False)
    monkeypatch.delenv("UR_INDEX_KEY", raising=False)
    with pytest.raises(ConfigError, match="UR_DATA_KEYS, UR_INDEX_KEY"):
        load_settings()


def test_production_refuses_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UR_ENV", "production")
    monkeypatch.setenv("UR_DATA_KEYS", "k1:AAAA")
    monkeypatch.setenv("UR_INDEX_KEY", "AAAA")
    monkeypatch.delenv("UR_DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="server database"):
        load_settings()


def test_bad_value_names_the_variable_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UR_ENV", "staging-secret-xyz")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "UR_ENV" in str(info.value)
    assert "staging-secret-xyz" not in str(info.value)


def test_linkage_bands_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UR_LINK_AUTO_THRESHOLD", "0.995")
    monkeypatch.setenv("UR_LINK_REVIEW_THRESHOLD", "0.7")
    settings = load_settings()
    assert (settings.link_auto_threshold, settings.link_review_threshold) == (0.995, 0.7)


@pytest.mark.parametrize(("auto", "review", "problem"), [
    ("0.5", "0.9", "must not exceed UR_LINK_AUTO_THRESHOLD"),
    ("1.5", "0.5", "UR_LINK_AUTO_THRESHOLD"),
    ("high", "0.5", "UR_LINK_AUTO_THRESHOLD"),
])
def test_bad_linkage_bands_refuse_to_start(monkeypatch: pytest.MonkeyPatch, auto: str,
                                           review: str, problem: str) -> None:
    monkeypatch.setenv("UR_LINK_AUTO_THRESHOLD", auto)
    monkeypatch.setenv("UR_LINK_REVIEW_THRESHOLD", review)
    with pytest.raises(ConfigError, match=problem):
        load_settings()
