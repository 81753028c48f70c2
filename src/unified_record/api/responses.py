"""FHIR JSON responses (``application/fhir+json``)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from unified_record.fhir.outcome import operation_outcome

__all__ = ["FHIR_JSON", "FHIRResponse", "outcome_response"]

FHIR_JSON = "application/fhir+json"


class FHIRResponse(JSONResponse):
    media_type = FHIR_JSON


def outcome_response(status: int, code: str, diagnostics: str,
                     headers: dict[str, str] | None = None) -> FHIRResponse:
    body: dict[str, Any] = operation_outcome(code, diagnostics)
    return FHIRResponse(body, status_code=status, headers=headers)
