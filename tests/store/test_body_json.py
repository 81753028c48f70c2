"""Resource bodies' JSON (store.resources.body_json): orjson's text is json's text, apart
from how a float's exponent is written, and always reads back as the same values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unified_record.store.resources import body_json

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
