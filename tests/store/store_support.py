"""Test data for the store tests (importable by name, unlike conftest)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
INDEX_KEY = bytes(range(200, 232))

NHS_NUMBER = "9434765919"
FAMILY = "Quixblatterwick"
POSTCODE = "ZZ99 3QX"


def patient(resource_id: str | None = "p1", **extra: Any) -> dict[str, Any]:
    """A Patient with distinctive values, so a leak of any of them is easy to spot."""
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": NHS_NUMBER}],
        "name": [{"family": FAMILY, "given": ["Ermintrude"]}],
        "birthDate": "1950-02-03",
        "address": [{"postalCode": POSTCODE}],
        **extra,
    }
    if resource_id is not None:
        body["id"] = resource_id
    return body


def provenance(**overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ResourceRepository.put with a council source."""
    return {
        "source_feed": "council_asc",
        "source_org": "E08000026",
        "source_record_id": "ASC-1",
        **overrides,
    }


def own_bodies(session: Session, resource_type: str, resource_id: str) -> dict[int, bool]:
    """Per version: does its resource_version row hold a body of its own? (The current
    version's must not: `resource` holds it.) A key id is there exactly when a body is."""
    rows = session.execute(
        sa.text("SELECT version_id, body IS NOT NULL, key_id IS NOT NULL FROM resource_version"
                " WHERE resource_type = :type AND id = :id ORDER BY version_id"),
        {"type": resource_type, "id": resource_id},
    ).all()
    assert all(bool(body) == bool(key_id) for _, body, key_id in rows)
    return {version: bool(body) for version, body, _ in rows}
