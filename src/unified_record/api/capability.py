"""The CapabilityStatement `GET /fhir/metadata` returns: exactly what is implemented."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from unified_record import __version__
from unified_record.api.responses import FHIR_JSON
from unified_record.fhir.validation import validate_resource

__all__ = ["capability_statement"]

SECURITY_SERVICE_SYSTEM = "http://terminology.hl7.org/CodeSystem/restful-security-service"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def capability_statement(fhir_base: str, token_url: str,
                         resources: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """A valid R4 CapabilityStatement listing `resources` (the `rest.resource` entries)."""
    rest: dict[str, Any] = {
        "mode": "server",
        "security": {
            "extension": [{"url": OAUTH_URIS,
                           "extension": [{"url": "token", "valueUri": token_url}]}],
            "cors": False,
            "service": [{
                "coding": [{"system": SECURITY_SERVICE_SYSTEM, "code": "SMART-on-FHIR",
                            "display": "SMART-on-FHIR"}],
                "text": "OAuth2 with SMART on FHIR scopes (Backend Services)",
            }],
            "description": "Bearer access tokens from the token endpoint (SMART Backend "
                           "Services, private_key_jwt) or a configured OpenID Connect "
                           "provider; SMART v1 and v2 scopes.",
        },
    }
    if resources:
        rest["resource"] = list(resources)
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(UTC).date().isoformat(),
        "publisher": "Unified Record",
        "kind": "instance",
        "software": {"name": "Unified Record", "version": __version__},
        "implementation": {"description": "Unified Record FHIR API", "url": fhir_base},
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON, "json"],
        "rest": [rest],
    }
    validate_resource(statement)
    return statement
