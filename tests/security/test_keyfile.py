"""Where keys come from: the environment, or the development key file (never production)."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from unified_record.config import ConfigError, Settings, load_settings
from unified_record.security import (
    BlindIndex,
    KeyRing,
    load_or_create_keys,
    rotate_key_file,
)

DATA_KEY = base64.b64encode(bytes(range(32))).decode()
OLD_KEY = base64.b64encode(bytes(range(32, 64))).decode()
INDEX_KEY = base64.b64encode(b"i" * 32).decode()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean UR_* environment pointing at a not-yet-existing data directory."""
    for name in list(os.environ):
        if name.startswith("UR_"):
            monkeypatch.delenv(name)
    directory = tmp_path / "var"
    monkeypatch.setenv("UR_DATA_DIR", str(directory))
    return directory


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_file_created_0600_and_reused(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="unified_record.security.keyfile"):
        ring, index = load_or_create_keys(load_settings())
    path = data_dir / "keys.json"
    assert mode_of(path) == 0o600
    assert [p.name for p in data_dir.iterdir()] == ["keys.json"]  # no temp file left
    assert str(path) in caplog.text and "demo only" in caplog.text
    assert all(record.levelno == logging.WARNING for record in caplog.records)
    document = json.loads(path.read_text())
    assert document["version"] == 1
    assert document["active"] == ring.active_kid
    assert list(document["data_keys"]) == [ring.active_kid]
    assert len(base64.b64decode(document["index_key"])) == 32
    assert document["index_key"] not in caplog.text

    ring2, index2 = load_or_create_keys(load_settings())
    assert ring2.active_kid == ring.active_kid
    assert ring2.decrypt(ring.encrypt(b"x", b"a"), b"a") == b"x"
    assert index2.digest("name", "SMITH") == index.digest("name", "SMITH")


def test_explicit_key_file_path(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = data_dir.parent / "elsewhere" / "k.json"
    monkeypatch.setenv("UR_KEY_FILE", str(path))
    load_or_create_keys(load_settings())
    assert mode_of(path) == 0o600
    assert not data_dir.exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_loose_permissions_refused(data_dir: Path, mode: int) -> None:
    load_or_create_keys(load_settings())
    path = data_dir / "keys.json"
    path.chmod(mode)
    with pytest.raises(ConfigError, match="0600") as info:
        load_or_create_keys(load_settings())
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="0600"):
        rotate_key_file(load_settings())


def test_stricter_permissions_accepted(data_dir: Path) -> None:
    ring, _ = load_or_create_keys(load_settings())
    (data_dir / "keys.json").chmod(0o400)
    assert load_or_create_keys(load_settings())[0].active_kid == ring.active_kid


def test_corrupt_key_file_named_without_keys(data_dir: Path) -> None:
    load_or_create_keys(load_settings())
    path = data_dir / "keys.json"
    document = json.loads(path.read_text())
    kid = document["active"]
    secret = document["data_keys"][kid]
    for broken in (
        {**document, "version": 2},
        {**document, "active": "nope"},
        {**document, "data_keys": {kid: secret[:20]}},
        {**document, "index_key": 7},
    ):
        path.write_text(json.dumps(broken))
        with pytest.raises(ConfigError, match="key file") as info:
            load_or_create_keys(load_settings())
        assert secret[:20] not in str(info.value)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_or_create_keys(load_settings())


def test_production_without_keys_raises(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UR_ENV", "production")
    monkeypatch.setenv("UR_DATABASE_URL", "postgresql+psycopg://db/ur")
    with pytest.raises(ConfigError):
        load_or_create_keys(load_settings())
    # even if settings validation were bypassed, the key file is never used in production
    settings = Settings.model_construct(env="production", data_dir=data_dir)
    with pytest.raises(ConfigError, match="UR_DATA_KEYS"):
        load_or_create_keys(settings)
    with pytest.raises(ConfigError):
        rotate_key_file(settings)
    assert not data_dir.exists()


def test_env_keys_take_precedence(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file_ring, file_index = load_or_create_keys(load_settings())
    monkeypatch.setenv("UR_DATA_KEYS", f"kenv2:{DATA_KEY},kenv1:{OLD_KEY}")
    monkeypatch.setenv("UR_INDEX_KEY", INDEX_KEY)
    ring, index = load_or_create_keys(load_settings())
    assert ring.active_kid == "kenv2"
    assert set(ring.key_ids) == {"kenv1", "kenv2"}
    assert index.digest("n", "v") == BlindIndex(b"i" * 32).digest("n", "v")
    assert index.digest("n", "v") != file_index.digest("n", "v")
    assert file_ring.active_kid not in ring.key_ids


def test_env_keys_in_production(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UR_ENV", "production")
    monkeypatch.setenv("UR_DATABASE_URL", "postgresql+psycopg://db/ur")
    monkeypatch.setenv("UR_DATA_KEYS", f"k1:{DATA_KEY}")
    monkeypatch.setenv("UR_INDEX_KEY", INDEX_KEY)
    ring, _ = load_or_create_keys(load_settings())
    assert isinstance(ring, KeyRing) and ring.active_kid == "k1"
    assert not data_dir.exists()


def test_bad_env_keys_name_variable_not_value(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UR_DATA_KEYS", f"k1:{DATA_KEY},{OLD_KEY}")
    monkeypatch.setenv("UR_INDEX_KEY", INDEX_KEY)
    with pytest.raises(ConfigError, match="UR_DATA_KEYS: data key entry 2") as info:
        load_or_create_keys(load_settings())
    assert OLD_KEY not in str(info.value) and DATA_KEY not in str(info.value)
    monkeypatch.setenv("UR_DATA_KEYS", f"k1:{DATA_KEY}")
    monkeypatch.setenv("UR_INDEX_KEY", "c2hvcnQ=")
    with pytest.raises(ConfigError, match="UR_INDEX_KEY") as info:
        load_or_create_keys(load_settings())
    assert "c2hvcnQ" not in str(info.value)


def test_half_configured_env_refused(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UR_DATA_KEYS", f"k1:{DATA_KEY}")
    with pytest.raises(ConfigError, match="UR_INDEX_KEY is missing"):
        load_or_create_keys(load_settings())
    monkeypatch.delenv("UR_DATA_KEYS")
    monkeypatch.setenv("UR_INDEX_KEY", INDEX_KEY)
    with pytest.raises(ConfigError, match="UR_DATA_KEYS is missing"):
        load_or_create_keys(load_settings())


def test_rotate_key_file(data_dir: Path) -> None:
    ring, index = load_or_create_keys(load_settings())
    old = ring.encrypt(b"old", b"ctx")
    kid = rotate_key_file(load_settings())
    path = data_dir / "keys.json"
    assert mode_of(path) == 0o600
    assert [p.name for p in data_dir.iterdir()] == ["keys.json"]
    new_ring, new_index = load_or_create_keys(load_settings())
    assert new_ring.active_kid == kid != ring.active_kid
    assert new_ring.decrypt(old, b"ctx") == b"old"
    assert new_ring.needs_rotation(old)
    assert KeyRing.key_id_of(new_ring.encrypt(b"new")) == kid
    assert new_index.digest("k", "v") == index.digest("k", "v")
    kid2 = rotate_key_file(load_settings())
    assert len({ring.active_kid, kid, kid2}) == 3
    assert len(load_or_create_keys(load_settings())[0].key_ids) == 3


def test_rotate_with_env_keys_tells_operator_to_prepend(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UR_DATA_KEYS", f"k1:{DATA_KEY}")
    monkeypatch.setenv("UR_INDEX_KEY", INDEX_KEY)
    with pytest.raises(ConfigError, match="prepend") as info:
        rotate_key_file(load_settings())
    assert DATA_KEY not in str(info.value)


def test_rotate_without_key_file_refuses(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match="no key file"):
        rotate_key_file(load_settings())
    assert not (data_dir / "keys.json").exists()


def test_losing_a_creation_race_uses_the_winners_file(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes starting at once must end up with the same keys, not overwrite each other."""
    from unified_record.security import keyfile

    winner_ring, _ = load_or_create_keys(load_settings())
    path = data_dir / "keys.json"
    winner_bytes = path.read_bytes()
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda self: False if self == path else real_exists(self))
    ring, _ = keyfile.load_or_create_keys(load_settings())
    assert path.read_bytes() == winner_bytes
    assert ring.active_kid == winner_ring.active_kid
    assert [p.name for p in data_dir.iterdir()] == ["keys.json"]
