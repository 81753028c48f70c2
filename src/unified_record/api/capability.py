"""The CapabilityStatement `GET /fhir/metadata` returns: exactly what is implemented."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from unified_record import __version__
from unified_record.api.responses import FHIR_JSON
from unified_record.fhir.validation import validate_resource

__all__ = ["capability_statement", "resource_capabilities"]

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


_SEARCH_TYPES = {"_id": "token", "identifier": "token", "family": "string", "given": "string",
                 "name": "string", "phonetic": "string", "birthdate": "date", "gender": "token",
                 "address-postalcode": "string", "view": "token", "patient": "reference",
                 "subject": "reference", "date": "date", "code": "token", "status": "token"}
_DOCS = {"view": "unified (default): unified clients (golden Patients); source: the source "
                 "Patients as each partner sent them",
         "family": "whole family name; case, accents and punctuation ignored (no prefixes)",
         "given": "whole given name; case, accents and punctuation ignored (no prefixes)",
         "name": "a whole family or given name",
         "phonetic": "Soundex of the family name",
         "patient": "a source Patient, or a unified client id (all its source Patients)"}


def resource_capabilities() -> list[dict[str, Any]]:
    """`rest.resource` entries for what the FHIR routes serve."""
    from unified_record.records.search import (
        CLINICAL_PARAMS,
        CLINICAL_TYPES,
        PATIENT_PARAMS,
    )

    def params(names: Sequence[str]) -> list[dict[str, Any]]:
        out = []
        for name in names:
            entry = {"name": name, "type": _SEARCH_TYPES[name]}
            if name in _DOCS:
                entry["documentation"] = _DOCS[name]
            out.append(entry)
        return out

    interactions = [{"code": c} for c in ("read", "vread", "history-instance", "search-type")]
    patient: dict[str, Any] = {
        "type": "Patient", "interaction": interactions, "versioning": "versioned",
        "readHistory": True, "conditionalCreate": False,
        "searchParam": params(PATIENT_PARAMS),
        "searchRevInclude": [f"{t}:patient" for t in CLINICAL_TYPES],
        "operation": [{"name": "everything",
                       "definition": "http://hl7.org/fhir/OperationDefinition/"
                                     "Patient-everything"}],
    }
    patient["operation"].append({
        "name": "audit-trail",
        "definition": "https://unified-record.example/OperationDefinition/Patient-audit-trail",
        "documentation": "a client's audit trail for a subject access request: a collection "
                         "Bundle, or CSV with _format=csv (governance officers)"})
    others = [{"type": t, "interaction": interactions, "versioning": "versioned",
               "readHistory": True, "searchParam": params(CLINICAL_PARAMS),
               "searchInclude": [f"{t}:patient", f"{t}:subject"]}
              for t in CLINICAL_TYPES if t != "Consent"]
    governance = "a unified client id; governance officers only (api/governance.py)"
    consent = {"type": "Consent", "versioning": "versioned", "readHistory": True,
               "interaction": [{"code": c} for c in ("read", "vread", "history-instance",
                                                     "search-type", "create")],
               "searchParam": [{"name": "patient", "type": "reference",
                                "documentation": governance}]}
    audit = {"type": "AuditEvent", "interaction": [{"code": "search-type"}],
             "searchParam": [{"name": "patient", "type": "reference",
                              "documentation": governance}]}
    return [patient, *others, consent, audit]
