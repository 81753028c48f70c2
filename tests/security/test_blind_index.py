"""Blind-index digests: deterministic, key-dependent, separated by kind."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from unified_record.security import BlindIndex

KEY = b"k" * 32


def test_deterministic_hex_hmac() -> None:
    index = BlindIndex(KEY)
    digest = index.digest("family_name", "SMITH")
    assert digest == index.digest("family_name", "SMITH")
    assert digest == BlindIndex(KEY).digest("family_name", "SMITH")
    expected = hmac.new(KEY, b"family_name\x1fSMITH", hashlib.sha256).hexdigest()
    assert digest == expected
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_depends_on_key() -> None:
    assert BlindIndex(KEY).digest("nhs", "9991234567") != BlindIndex(b"j" * 32).digest(
        "nhs", "9991234567"
    )


def test_kinds_are_separated() -> None:
    index = BlindIndex(KEY)
    assert index.digest("name", "LS1 4AB") != index.digest("postcode", "LS1 4AB")
    # the separator stops "ab" + "c" colliding with "a" + "bc"
    assert index.digest("ab", "c") != index.digest("a", "bc")


def test_no_normalisation_is_done() -> None:
    index = BlindIndex(KEY)
    assert index.digest("name", "Smith") != index.digest("name", "SMITH")


def test_kind_must_be_clean() -> None:
    index = BlindIndex(KEY)
    for kind in ("", "a\x1fb"):
        with pytest.raises(ValueError):
            index.digest(kind, "x")


def test_parse_and_key_checks() -> None:
    std = base64.b64encode(KEY).decode()
    urlsafe = base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode().rstrip("=")
    assert BlindIndex.parse(std).digest("k", "v") == BlindIndex(KEY).digest("k", "v")
    assert BlindIndex.parse(urlsafe).digest("k", "v") == BlindIndex(b"\xfb\xff" * 16).digest(
        "k", "v"
    )
    with pytest.raises(ValueError, match="at least 32 bytes") as info:
        BlindIndex.parse(base64.b64encode(b"short-key").decode())
    assert "c2hvcnQ" not in str(info.value)
    with pytest.raises(ValueError, match="base64") as info:
        BlindIndex.parse("not*base64*at*all")
    assert "not*base64" not in str(info.value)
    with pytest.raises(ValueError):
        BlindIndex(b"short")
    assert "kkkk" not in repr(BlindIndex(KEY))


def test_remembered_digests_are_the_computed_ones_and_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from unified_record.security import blind_index

    monkeypatch.setattr(blind_index, "_REMEMBERED", 50)
    index = BlindIndex(KEY)
    values = [f"value {i}" for i in range(120)]
    for _ in range(2):  # the second round answers partly from memory
        for value in values:
            expected = hmac.new(KEY, b"given\x1f" + value.encode(), hashlib.sha256).hexdigest()
            assert index.digest("given", value) == expected
            assert len(index._recent) <= 50
    assert index.digest("family", "value 1") != index.digest("given", "value 1")
