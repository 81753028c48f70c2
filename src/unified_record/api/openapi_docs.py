"""What the OpenAPI document (`/docs`, `/openapi.json`) says about the FHIR routes: example
responses and errors, the search parameters (the route reads them itself, strictly, so
FastAPI cannot list them) and the transaction Bundle a partner posts.

Every example is synthetic (NHS numbers from the 999 test range, made-up names).
"""

from __future__ import annotations

from typing import Any

from unified_record.api.responses import FHIR_JSON

__all__ = ["CAPABILITIES", "EVERYTHING", "HISTORY", "READ", "SEARCH", "TRANSACTION", "VREAD"]

_NHS = "https://fhir.nhs.uk/Id/nhs-number"
_CLIENT = "https://unified-record.example/Id/client"
_FEED = "https://unified-record.example/CodeSystem/source-feed"

_PATIENT = {
    "resourceType": "Patient", "id": "C1a2b3c4d5e6f",
    "meta": {"versionId": "1", "lastUpdated": "2026-03-02T09:15:00+00:00"},
    "identifier": [{"system": _CLIENT, "value": "C1a2b3c4d5e6f"},
                   {"system": _NHS, "value": "9990001234"}],
    "name": [{"use": "official", "family": "Example", "given": ["Alex"]}],
    "gender": "female", "birthDate": "1958-04-21",
    "address": [{"line": ["1 Example Street"], "city": "Leeds", "postalCode": "LS1 4AP"}],
    "link": [{"other": {"reference": "Patient/gp-fhir-7a1"}, "type": "seealso"},
             {"other": {"reference": "Patient/acute-adt-22f"}, "type": "seealso"}],
}
_ENCOUNTER = {
    "resourceType": "Encounter", "id": "acute-adt-e91", "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
    "subject": {"reference": "Patient/acute-adt-22f"},
    "period": {"start": "2025-11-03T10:20:00+00:00", "end": "2025-11-05T16:00:00+00:00"},
    "meta": {"source": "urn:x-unified-record:org:RR8",
             "tag": [{"system": _FEED, "code": "acute_adt"}]},
}
_BASE = "https://record.example/fhir"


def _outcome(code: str, diagnostics: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]}


_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("Bad request (an unknown or malformed parameter, id or body)", "not-supported",
          "unknown or unsupported search parameter 'favourite-colour' for Patient"),
    401: ("No valid bearer token (with a WWW-Authenticate challenge)", "login",
          "a Bearer access token is required"),
    403: ("The token's scopes, or the policy, do not allow this", "forbidden",
          "the token's scopes do not allow search-type on Patient"),
    404: ("Unknown (or withheld) resource, or a type not served here", "not-found",
          "Patient/C000000000000 is not known"),
    410: ("The resource was deleted", "deleted", "Patient/gp-fhir-7a1 was deleted"),
    413: ("The body is larger than UR_MAX_BODY_BYTES", "too-costly",
          "the request body is larger than this server accepts (4194304 bytes)"),
    415: ("Not application/fhir+json", "not-supported",
          "send the Bundle as application/fhir+json"),
    422: ("A well-formed body this server cannot process", "processing",
          "Bundle.type must be transaction or batch"),
}


def _responses(summary: str, example: dict[str, Any], *errors: int
               ) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {
        200: {"description": summary, "content": {FHIR_JSON: {"example": example}}}}
    for status in errors:
        description, code, diagnostics = _ERRORS[status]
        out[status] = {"description": description,
                       "content": {FHIR_JSON: {"example": _outcome(code, diagnostics)}}}
    return out


def _bundle(kind: str, entries: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, **extra, "entry": entries}


_SEARCHSET = _bundle("searchset", [
    {"fullUrl": f"{_BASE}/Patient/C1a2b3c4d5e6f", "resource": _PATIENT,
     "search": {"mode": "match"}}], total=1, link=[
    {"relation": "self", "url": f"{_BASE}/Patient?identifier={_NHS}|9990001234"}])

_QUERY_PARAMETERS: list[tuple[str, str, str]] = [
    ("identifier", f"{_NHS}|9990001234", "Patient: `system|value` (NHS number, or a unified "
     "client id in the client-id system)"),
    ("family", "Example", "Patient: a whole family name (case, accents, punctuation folded)"),
    ("given", "Alex", "Patient: a whole given name"),
    ("name", "Example", "Patient: a whole family or given name"),
    ("birthdate", "ge1950-01-01", "Patient: a date with an optional prefix "
     "(eq ne lt gt le ge sa eb ap)"),
    ("gender", "female", "Patient: male, female, other or unknown"),
    ("address-postalcode", "LS1 4AP", "Patient: postcode (spaces and case ignored)"),
    ("view", "unified", "Patient: `unified` (default: unified clients) or `source` "
     "(the partners' own Patient records)"),
    ("patient", "C1a2b3c4d5e6f", "Other types: a source Patient or a unified client id"),
    ("date", "ge2025-01-01", "Other types: a date with an optional prefix"),
    ("code", "http://snomed.info/sct|44054006", "Other types: `system|code`, `code` or "
     "`system|`"),
    ("status", "finished", "Other types: the status code"),
    ("_count", "20", "Page size (at most 200; larger is capped, negative is refused)"),
    ("_sort", "-birthdate", "Sort keys: Patient _id, birthdate, family, given, "
     "_lastUpdated; others _id, date, _lastUpdated"),
    ("_summary", "count", "Only `count`: the total, no entries"),
    ("_include", "Encounter:subject", "Other types: add the Patients they refer to"),
    ("_revinclude", "Encounter:patient", "Patient: add what refers to the matches"),
    ("_page", "WyIxOTU4LTA0LTIxIl0", "The cursor of a `next` link (opaque)"),
]

SEARCH: dict[str, Any] = {
    "responses": _responses("A searchset Bundle (total counts only what the caller may "
                            "see)", _SEARCHSET, 400, 401, 403, 404),
    "openapi_extra": {"parameters": [
        {"name": name, "in": "query", "required": False, "description": text,
         "schema": {"type": "string"}, "example": example}
        for name, example, text in _QUERY_PARAMETERS]},
    "description": "FHIR search with strict handling: an unknown parameter, modifier or "
                   "value is refused with 400. Patient searches return unified clients "
                   "(golden Patients) unless `view=source`. See /fhir/metadata for the "
                   "parameters of each type.",
}

READ: dict[str, Any] = {"responses": _responses(
    "The resource (for a unified client id: the golden Patient, with links to its "
    "sources)", _PATIENT, 400, 401, 403, 404, 410)}
VREAD: dict[str, Any] = {"responses": _responses("That version of the resource", _PATIENT,
                                                 400, 401, 403, 404, 410)}
HISTORY: dict[str, Any] = {"responses": _responses("A history Bundle, newest first", _bundle(
    "history", [{"fullUrl": f"{_BASE}/Patient/gp-fhir-7a1",
                 "resource": {**_PATIENT, "id": "gp-fhir-7a1", "link": []},
                 "request": {"method": "POST", "url": "Patient/gp-fhir-7a1"},
                 "response": {"status": "200 OK",
                              "lastModified": "2026-03-02T09:15:00+00:00"}}], total=1),
    400, 401, 403, 404)}
EVERYTHING: dict[str, Any] = {"responses": _responses(
    "A searchset Bundle: the golden Patient, every linked source Patient and what refers to "
    "them, each with its source organisation (`meta.source`) and feed (`meta.tag`)",
    _bundle("searchset", [
        {"fullUrl": f"{_BASE}/Patient/C1a2b3c4d5e6f", "resource": _PATIENT,
         "search": {"mode": "match"}},
        {"fullUrl": f"{_BASE}/Encounter/acute-adt-e91", "resource": _ENCOUNTER,
         "search": {"mode": "match"}}], total=2), 400, 401, 403, 404)}
CAPABILITIES: dict[str, Any] = {"responses": _responses(
    "The CapabilityStatement", {
        "resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
        "fhirVersion": "4.0.1", "format": [FHIR_JSON, "json"],
        "rest": [{"mode": "server", "security": {"service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR"}]}]},
                  "resource": [{"type": "Patient", "interaction": [{"code": "read"},
                                                                   {"code": "search-type"}]}]}]})}

_TRANSACTION_EXAMPLE = _bundle("transaction", [{
    "fullUrl": "urn:uuid:1f0c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
    "resource": {"resourceType": "Patient",
                 "identifier": [{"system": _NHS, "value": "9990001234"}],
                 "name": [{"family": "Example", "given": ["Alex"]}],
                 "gender": "female", "birthDate": "1958-04-21"},
    "request": {"method": "POST", "url": "Patient"}}])
TRANSACTION: dict[str, Any] = {
    "responses": _responses("A transaction-response or batch-response Bundle", _bundle(
        "transaction-response", [{"response": {
            "status": "201 Created", "location": "Patient/partner-fhir-3c9/_history/1",
            "etag": 'W/"1"', "lastModified": "2026-03-02T09:15:00+00:00"}}]),
        400, 401, 403, 413, 415, 422),
    "openapi_extra": {"requestBody": {"required": True, "content": {FHIR_JSON: {
        "schema": {"type": "object", "required": ["resourceType", "type"], "properties": {
            "resourceType": {"type": "string", "enum": ["Bundle"]},
            "type": {"type": "string", "enum": ["transaction", "batch"]},
            "entry": {"type": "array", "items": {"type": "object"}}}},
        "example": _TRANSACTION_EXAMPLE}}}},
}
