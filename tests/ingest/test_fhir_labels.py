"""Sensitive-category labels on FHIR feeds look at every coding, not only the first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ingest_support import MAPPINGS, SAMPLE

from unified_record.ingest.mapping import load_mapping
from unified_record.ingest.prepare import prepare

MAPPING = load_mapping(MAPPINGS / "gp_fhir.yaml")
DEPRESSION = "35489007"  # in gp_fhir.yaml's mental_health rule
HYPERTENSION = "38341003"  # in no rule


def bundle_with_condition(codes: list[str]) -> bytes:
    for path in sorted(Path(SAMPLE / "gp_fhir").glob("*.ndjson")):
        for line in path.read_text().splitlines():
            bundle: dict[str, Any] = json.loads(line)
            for entry in bundle["entry"]:
                if entry["resource"]["resourceType"] == "Condition":
                    entry["resource"]["code"] = {"coding": [
                        {"system": "http://snomed.info/sct", "code": c} for c in codes]}
                    return json.dumps(bundle).encode()
    raise AssertionError("the sample has no GP Condition")


def condition_labels(codes: list[str]) -> list[str]:
    prepared = prepare(MAPPING, bundle_with_condition(codes))
    assert prepared.error is None
    (condition,) = [r for r in prepared.resources if r.resource["resourceType"] == "Condition"
                    and [c["code"] for c in r.resource["code"]["coding"]] == codes]
    return condition.labels


def test_a_sensitive_code_in_the_second_coding_labels_the_resource() -> None:
    assert condition_labels([HYPERTENSION, DEPRESSION]) == ["mental_health"]
    assert condition_labels([DEPRESSION, HYPERTENSION]) == ["mental_health"]
    assert condition_labels([HYPERTENSION]) == []
