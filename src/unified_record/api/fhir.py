"""The FHIR REST API under /fhir. For now: the CapabilityStatement (resource routes follow)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from unified_record.api.responses import FHIR_JSON, FHIRResponse

__all__ = ["router"]

router = APIRouter(prefix="/fhir", tags=["FHIR"])


@router.get(
    "/metadata",
    response_class=FHIRResponse,
    summary="CapabilityStatement",
    description="What this server implements, and how to get a token (SMART on FHIR). "
                "No token needed.",
    responses={200: {"content": {FHIR_JSON: {}}}},
)
def metadata(request: Request) -> FHIRResponse:
    return FHIRResponse(request.app.state.capability_statement)
