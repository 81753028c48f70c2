"""Obligations applied to a permitted resource: the right elements go or get labelled, and
the resource they were applied to is never changed (it may be the stored body)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from unified_record.consent.redaction import apply_obligations


def _condition() -> dict[str, Any]:
    return {"resourceType": "Condition", "id": "c1",
            "meta": {"versionId": "2", "security": [{"system": "s", "code": "PSY"}]},
            "text": {"status": "generated", "div": "<div>narrative</div>"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "35489007"}],
                     "text": "free text"},
            "note": [{"text": "a clinician's note"}],
            "subject": {"reference": "Patient/p1"}}


@pytest.mark.parametrize("obligations", [(), ("mark-restricted",), ("redact-notes",),
                                         ("demographics-only",),
                                         ("redact-notes", "mark-restricted")])
def test_the_resource_given_is_never_changed(obligations: tuple[str, ...]) -> None:
    body = _condition()
    before = copy.deepcopy(body)
    out = apply_obligations(body, obligations)
    out["meta"].setdefault("tag", []).append({"code": "later"})  # as the API's provenance
    out["meta"]["security"].append({"code": "later"})
    out["id"] = "changed"
    assert body == before


def test_without_obligations_the_content_is_the_same() -> None:
    assert apply_obligations(_condition(), ()) == _condition()


def test_redact_notes_removes_free_text_and_labels() -> None:
    out = apply_obligations(_condition(), ["redact-notes"])
    assert "text" not in out and "note" not in out and "text" not in out["code"]
    assert out["code"]["coding"] == _condition()["code"]["coding"]
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "REDACTED", "display": "redacted"} in out["meta"]["security"]
    assert {"system": "s", "code": "PSY"} in out["meta"]["security"]


def test_mark_restricted_and_demographics_only() -> None:
    restricted = apply_obligations(_condition(), ["mark-restricted"])
    assert restricted["meta"]["security"][-1]["code"] == "R"
    assert restricted["note"] == _condition()["note"]
    subset = apply_obligations({"resourceType": "Patient", "id": "p1", "name": [{"family": "X"}],
                                "maritalStatus": {"text": "M"}}, ["demographics-only"])
    assert set(subset) == {"resourceType", "id", "name", "meta"}
    assert subset["meta"]["tag"][0]["code"] == "SUBSETTED"
