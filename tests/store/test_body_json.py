"""Resource bodies' JSON (store.resources.body_json): orjson's text is json's text, apart
from how a float's exponent is written, and always reads back as the same values; and
reading JSON (store.resources.parse_json) gives what json.loads gives, or raises as it does."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unified_record.store.resources import body_json, parse_json

SAMPLE = Path(__file__).resolve().parents[2] / "synthetic_data" / "sample" / "gp_fhir"


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def _json_values(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    values = st.recursive(leaves, lambda children: st.lists(children, max_size=4)
                          | st.dictionaries(st.text(max_size=8), children, max_size=4),
                          max_leaves=30)
    return st.dictionaries(st.text(max_size=8), values, max_size=6)


_NO_FLOATS = st.none() | st.booleans() | st.integers() | st.text()
_FLOATS = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=400, deadline=None)
@given(_json_values(_NO_FLOATS))
def test_a_body_without_floats_is_written_as_json_writes_it(body: dict[str, Any]) -> None:
    """Integers beyond 64 bits, control characters, non-ASCII, key order: the same bytes."""
    assert body_json(body) == _json(body)


@settings(max_examples=400, deadline=None)
@given(_json_values(_NO_FLOATS | _FLOATS))
def test_every_body_reads_back_as_it_was(body: dict[str, Any]) -> None:
    """Floats too (orjson writes 5.96e-8 where json writes 5.96e-08: the same number)."""
    again = json.loads(body_json(body))
    assert again == body
    assert _json(again) == _json(body)  # every float exactly, -0.0 included


def test_sample_bundles_resources_are_written_as_json_writes_them() -> None:
    bodies = [entry["resource"] for path in sorted(SAMPLE.iterdir())
              for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
              for entry in json.loads(line).get("entry", [])]
    assert len(bodies) > 100
    assert all(body_json(b) == _json(b) for b in bodies)


def test_what_json_refuses_is_still_refused() -> None:
    """A datetime, a Decimal, a non-JSON object from a Python caller: TypeError, as before
    (orjson alone would write a datetime as text)."""
    for value in (datetime(2026, 1, 1, tzinfo=UTC), Decimal("1.5"), object()):
        with pytest.raises(TypeError):
            body_json({"resourceType": "Basic", "value": value})


def _read_by_json(data: bytes) -> tuple[str, Any]:
    try:
        return "value", json.loads(data)
    except (ValueError, RecursionError) as exc:
        return "error", type(exc)


def _read_by_parse_json(data: bytes) -> tuple[str, Any]:
    try:
        return "value", parse_json(data)
    except (ValueError, RecursionError) as exc:
        return "error", type(exc)


@settings(max_examples=400, deadline=None)
@given(_json_values(_NO_FLOATS | _FLOATS))
def test_parse_json_reads_every_body_as_json_reads_it(body: dict[str, Any]) -> None:
    """Integers beyond 64 bits stay exact integers (orjson alone would make them floats)."""
    for data in (body_json(body), _json(body)):
        got = parse_json(data)
        assert got == json.loads(data)
        assert _json(got) == _json(json.loads(data))  # types too: 10**30 is not 1e30


@pytest.mark.parametrize("data", [
    b'{"a":123456789012345678901234567890}', b'{"a":-9223372036854775809}',
    b'{"a":18446744073709551616}', b'{"a":NaN}', b'{"a":1e400}', b'{"a":-Infinity}',
    '{"a":1}'.encode("utf-16"), b'\xef\xbb\xbf{"a":1}', b'{"a":"\\ud800"}',
    b'{"a":1,"a":2}', b"[" * 2000 + b"]" * 2000, b'{"a":"x\ny"}', b'{"a":"\xff"}',
    b'{"a":01}', b"", b'{"a":1}x', b'{"a":"\\u0000","b":-0.0,"c":1E5}',
    b"99999999999999999999", b'[-99999999999999999999]', b'{"a":"12345678901234567890"}',
])
def test_parse_json_reads_or_refuses_what_json_does(data: bytes) -> None:
    assert repr(_read_by_parse_json(data)) == repr(_read_by_json(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=40).map(str.encode))
def test_parse_json_on_any_bytes_agrees_with_json(data: bytes) -> None:
    assert repr(_read_by_parse_json(data)) == repr(_read_by_json(data))
