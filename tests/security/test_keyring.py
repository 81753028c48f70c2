"""The AES-GCM key ring: envelopes open only with the right key and context."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unified_record.security import DecryptionError, KeyRing

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def ring(active: str = "ka", **keys: bytes) -> KeyRing:
    return KeyRing(keys or {"ka": KEY_A, "kb": KEY_B}, active)


RING = ring()


def test_round_trip_and_envelope_layout() -> None:
    envelope = RING.encrypt(b"Jane Smith, 9991234567", aad=b"patient/1/name")
    assert envelope[0] == 0x01
    assert envelope[1] == 2 and envelope[2:4] == b"ka"
    assert len(envelope) == 4 + 12 + len(b"Jane Smith, 9991234567") + 16
    assert b"Jane" not in envelope
    assert RING.decrypt(envelope, aad=b"patient/1/name") == b"Jane Smith, 9991234567"


def test_nonces_are_fresh() -> None:
    assert RING.encrypt(b"same") != RING.encrypt(b"same")


def test_tampering_with_any_byte_fails() -> None:
    envelope = RING.encrypt(b"secret value", aad=b"ctx")
    for i in range(len(envelope)):
        tampered = bytearray(envelope)
        tampered[i] ^= 0x01
        with pytest.raises(DecryptionError) as info:
            RING.decrypt(bytes(tampered), aad=b"ctx")
        assert "secret" not in str(info.value)


def test_truncated_and_garbage_envelopes_fail() -> None:
    envelope = RING.encrypt(b"x")
    for bad in (b"", b"\x01", envelope[:-1], envelope[:10], b"\x02" + envelope[1:]):
        with pytest.raises(DecryptionError):
            RING.decrypt(bad)


def test_wrong_aad_fails() -> None:
    envelope = RING.encrypt(b"value", aad=b"patient/1")
    with pytest.raises(DecryptionError):
        RING.decrypt(envelope, aad=b"patient/2")
    with pytest.raises(DecryptionError):
        RING.decrypt(envelope)


def test_unknown_kid_fails() -> None:
    other = KeyRing({"kz": KEY_A}, "kz")
    with pytest.raises(DecryptionError, match="kz"):
        RING.decrypt(other.encrypt(b"value"))


def test_header_is_authenticated_even_when_two_ids_share_a_key() -> None:
    shared = KeyRing({"k1": KEY_A, "k2": KEY_A}, "k1")
    envelope = shared.encrypt(b"value")
    relabelled = envelope[:2] + b"k2" + envelope[4:]
    with pytest.raises(DecryptionError):
        shared.decrypt(relabelled)


def test_rotation_keeps_old_envelopes_readable() -> None:
    old = RING.encrypt(b"old data", aad=b"a")
    rotated, kid = RING.with_new_active_key()
    assert rotated.active_kid == kid != RING.active_kid
    assert set(rotated.key_ids) == {"ka", "kb", kid}
    assert rotated.decrypt(old, aad=b"a") == b"old data"
    new = rotated.encrypt(b"new data")
    assert KeyRing.key_id_of(new) == kid
    assert rotated.decrypt(new) == b"new data"
    with pytest.raises(DecryptionError):
        RING.decrypt(new)  # the original ring is unchanged


def test_repeated_rotation_gives_distinct_ids() -> None:
    current, kids = RING, set()
    for _ in range(30):
        current, kid = current.with_new_active_key()
        kids.add(kid)
    assert len(kids) == 30


def test_needs_rotation_and_key_id_of() -> None:
    envelope = RING.encrypt(b"v")
    assert KeyRing.key_id_of(envelope) == "ka"
    assert not RING.needs_rotation(envelope)
    assert ring(active="kb").needs_rotation(envelope)
    with pytest.raises(DecryptionError):
        KeyRing.key_id_of(b"not an envelope")


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        KeyRing({"ka": b"short"}, "ka")
    with pytest.raises(ValueError, match="not in the key ring"):
        KeyRing({"ka": KEY_A}, "kb")
    with pytest.raises(ValueError, match="key id"):
        KeyRing({"bad:id": KEY_A}, "bad:id")
    with pytest.raises(ValueError):
        KeyRing({}, "ka")


def test_repr_hides_keys() -> None:
    text = repr(RING)
    assert "ka" in text and KEY_A.hex() not in text and str(KEY_A) not in text


def b64(key: bytes, urlsafe: bool = False) -> str:
    return (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(key).decode()


def test_parse_first_entry_is_active_and_accepts_both_alphabets() -> None:
    key_c = b"\xfb\xff" * 16  # encodes with + / in standard and - _ in URL-safe
    spec = f" k2:{b64(KEY_B)} , k1:{b64(KEY_A, urlsafe=True).rstrip('=')},k3:{b64(key_c, True)},"
    parsed = KeyRing.parse(spec)
    assert parsed.active_kid == "k2"
    assert set(parsed.key_ids) == {"k1", "k2", "k3"}
    assert parsed.decrypt(KeyRing({"k1": KEY_A}, "k1").encrypt(b"x")) == b"x"
    assert parsed.decrypt(KeyRing({"k3": key_c}, "k3").encrypt(b"y")) == b"y"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no data keys"),
        (" , ", "no data keys"),
        (f"k1:{b64(KEY_A)},{b64(KEY_B)}", "entry 2: expected"),
        (f"k1:{b64(KEY_A)},k1:{b64(KEY_B)}", "entry 2: duplicate"),
        (f"k1:{b64(KEY_A)},k 2:{b64(KEY_B)}", "entry 2: key id"),
        (f"k1:{b64(KEY_A)[:-4]}!!!!", "entry 1: key is not valid base64"),
        (f"k1:{b64(KEY_A[:16])}", "entry 1: key must be 32 bytes"),
        ("k1:", "entry 1: key is empty"),
    ],
)
def test_parse_errors_name_position_not_key(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        KeyRing.parse(spec)
    text = str(info.value)
    for secret in (b64(KEY_A), b64(KEY_B), b64(KEY_A)[:12], b64(KEY_B)[:12]):
        assert secret not in text


@given(plaintext=st.binary(max_size=2048), aad=st.binary(max_size=256))
def test_round_trip_property(plaintext: bytes, aad: bytes) -> None:
    envelope = RING.encrypt(plaintext, aad)
    assert RING.decrypt(envelope, aad) == plaintext
    assert len(envelope) == 2 + 2 + 12 + len(plaintext) + 16


@given(plaintext=st.binary(max_size=64), aad=st.binary(max_size=32), other=st.binary(max_size=32))
def test_different_aad_never_opens(plaintext: bytes, aad: bytes, other: bytes) -> None:
    if aad == other:
        return
    with pytest.raises(DecryptionError):
        RING.decrypt(RING.encrypt(plaintext, aad), other)


def test_random_keys_work() -> None:
    fresh = KeyRing({"k": os.urandom(32)}, "k")
    assert fresh.decrypt(fresh.encrypt(b"hello")) == b"hello"


def test_nonces_never_repeat_and_a_forked_child_draws_its_own() -> None:
    import os as _os

    from unified_record.security.keyring import NONCE_BYTES, _nonces

    seen = {_nonces.take() for _ in range(10_000)}
    assert len(seen) == 10_000 and all(len(n) == NONCE_BYTES for n in seen)
    read, write = _os.pipe()
    pid = _os.fork()
    if pid == 0:  # child: report the next nonce, then exit at once
        _os.write(write, _nonces.take())
        _os._exit(0)
    _os.waitpid(pid, 0)
    child = _os.read(read, NONCE_BYTES)
    assert child != _nonces.take() and child not in seen
