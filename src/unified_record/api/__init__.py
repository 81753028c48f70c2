"""The web API: FastAPI app factory, FHIR routes, the token endpoints."""

from unified_record.api.app import create_app

__all__ = ["create_app"]
