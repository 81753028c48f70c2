"""The FHIR REST API under /fhir: capabilities, read, vread, history, search, $everything.

`Patient/{id}` is a unified client (its golden Patient) when the id is a client id, else a
source Patient. Every result passes the access guard (`api.guard`): scopes first, then the
consent engine, filtered before paging and totals.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool

from unified_record.api import openapi_docs as docs
from unified_record.api.auth import CallerDep, check_scope
from unified_record.api.errors import FHIRError
from unified_record.api.guard import Guard, refusals
from unified_record.api.responses import FHIR_JSON, FHIRResponse
from unified_record.consent.enforcement import expect_record_facts
from unified_record.consent.notice import record_withholds
from unified_record.consent.records import ConsentError
from unified_record.ingest import Pipeline
from unified_record.ingest.fhir_bundle import entry_key
from unified_record.ingest.mapping import resource_id
from unified_record.ingest.sources import SourceMessage
from unified_record.records import SearchError, everything, find, parse_search
from unified_record.records.paging import PageError, page_after
from unified_record.records.search import (
    CLINICAL_TYPES,
    Found,
    SearchRequest,
    sort_key,
    unified_patient,
)
from unified_record.security.scopes import Interaction
from unified_record.store.models import ClientRow
from unified_record.store.unit_of_work import UnitOfWork

__all__ = ["SEARCHABLE_TYPES", "router"]

router = APIRouter(prefix="/fhir", tags=["FHIR"])
SEARCHABLE_TYPES = ("Patient", *CLINICAL_TYPES)
_FHIR: dict[int | str, dict[str, Any]] = {200: {"content": {FHIR_JSON: {}}}}


@router.get("/metadata", response_class=FHIRResponse, summary="CapabilityStatement",
            description="What this server implements, and how to get a token (SMART on "
                        "FHIR). No token needed.", **docs.CAPABILITIES)
def metadata(request: Request) -> FHIRResponse:
    return FHIRResponse(request.app.state.capability_statement)


def _uow(request: Request) -> UnitOfWork:
    state = request.app.state
    return UnitOfWork(state.sessions, state.keyring, state.blind_index)


def supported_type(resource_type: str) -> str:
    """The path's resource type, checked before the token: the list is public (metadata)."""
    if resource_type not in SEARCHABLE_TYPES:
        raise FHIRError(404, "not-supported", f"resource type {resource_type!r} is not "
                        "served here (see /fhir/metadata)")
    return resource_type


TypeDep = Annotated[str, Depends(supported_type)]
# A FHIR id (R4 `id` datatype); anything else cannot name a resource here (400, not a query).
IdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9\-.]{1,64}$", examples=["C1a2b3c4d5e6f"])]


def _is_client(uow: UnitOfWork, resource_id: str) -> bool:
    return uow.session.get(ClientRow, resource_id) is not None


PARTNER_FEED = "partner_fhir"
_FHIR_CONTENT_TYPES = ("application/fhir+json", "application/json")


@router.post("", response_class=FHIRResponse, summary="transaction or batch",
             description="A FHIR transaction or batch Bundle from a partner system, stored "
                         "through the ingest pipeline (the raw Bundle first, then mapped and "
                         "validated); answers a transaction-response or batch-response Bundle.",
             **docs.TRANSACTION)
async def transaction(request: Request, caller: CallerDep) -> FHIRResponse:
    raw = await _fhir_body(request, "Bundle")
    bundle = _parse_bundle(raw)
    for method, resource_type in _entry_targets(bundle):
        check_scope(caller, resource_type,
                    Interaction.CREATE if method == "POST" else Interaction.UPDATE)
    guard = Guard.of(request, caller)
    for _, resource_type in _entry_targets(bundle):
        if resource_type in SERVER_KEPT:
            await run_in_threadpool(guard.point.audit_write, guard.ctx, str(bundle["type"]),
                                    [], "deny", f"Bundle not accepted: {resource_type}")
            raise FHIRError(422, "processing", f"{resource_type}: "
                            f"{SERVER_KEPT[resource_type]}")
    response: FHIRResponse = await run_in_threadpool(_store_bundle, request, guard, raw, bundle)
    return response


# Governance records no partner may write in a Bundle.
SERVER_KEPT = {"AuditEvent": "the audit log is written by this server only",
               "Consent": "record consents and objections with POST /fhir/Consent"}


@router.post("/Consent", response_class=FHIRResponse, status_code=201,
             summary="create a Consent",
             description="Record a person's consent or objection (FHIR Consent, scope "
                         "patient-privacy, patient = a unified client). Governance roles only, "
                         "as the policy says; audited.", responses=_FHIR)
async def create_consent(request: Request, caller: CallerDep) -> FHIRResponse:
    check_scope(caller, "Consent", Interaction.CREATE)
    raw = await _fhir_body(request, "Consent")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise FHIRError(400, "invalid", "the body is not valid JSON") from None
    if not isinstance(body, dict) or body.get("resourceType") != "Consent":
        raise FHIRError(422, "processing", "POST /fhir/Consent takes a Consent")
    guard = Guard.of(request, caller)
    stored: dict[str, Any] = await run_in_threadpool(_record_consent, request, guard, body)
    version = stored["meta"]["versionId"]
    return FHIRResponse(stored, status_code=201, headers={
        "Location": f"{_base(request)}/Consent/{stored['id']}/_history/{version}",
        "ETag": f'W/"{version}"'})


def _record_consent(request: Request, guard: Guard, body: dict[str, Any]) -> dict[str, Any]:
    with _uow(request) as uow, refusals():
        try:
            stored = guard.point.record_consent(uow.session, uow.resources, guard.ctx, body)
        except ConsentError as exc:
            raise FHIRError(422, "processing", str(exc)) from None
        uow.commit()
    return stored


async def _fhir_body(request: Request, what: str) -> bytes:
    """The raw request body, once its content type is FHIR JSON (else 415)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _FHIR_CONTENT_TYPES:
        raise FHIRError(415, "not-supported", f"send the {what} as application/fhir+json")
    return await request.body()


def _parse_bundle(raw: bytes) -> dict[str, Any]:
    try:
        bundle = json.loads(raw)
    except (ValueError, RecursionError):
        raise FHIRError(400, "invalid", "the body is not valid JSON") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FHIRError(422, "processing", "POST /fhir takes a Bundle")
    if bundle.get("type") not in ("transaction", "batch"):
        raise FHIRError(422, "processing", "Bundle.type must be transaction or batch")
    if not isinstance(bundle.get("entry", []), list):
        raise FHIRError(422, "processing", "Bundle.entry must be a list")
    return bundle


def _entry_targets(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, resource type) of every entry, for the scope check."""
    targets = []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        request = entry.get("request") if isinstance(entry, dict) else None
        method = request.get("method", "PUT") if isinstance(request, dict) else "PUT"
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            targets.append((str(method), resource["resourceType"]))
    return targets


def _store_bundle(request: Request, guard: Guard, raw: bytes,
                  bundle: dict[str, Any]) -> FHIRResponse:
    pipeline: Pipeline = request.app.state.pipeline
    caller = guard.ctx.caller
    with refusals():
        guard.point.check_purpose(guard.ctx, str(bundle["type"]))
    outcome = pipeline.process_one(
        PARTNER_FEED, SourceMessage(raw, f"api:{caller.client_id}"),
        source_org=caller.organisation or caller.client_id)
    if outcome.status == "quarantined":
        guard.point.audit_write(guard.ctx, str(bundle["type"]), [], "deny",
                                f"Bundle not accepted: {outcome.reason}")
        raise FHIRError(422, "processing", f"Bundle not accepted: {outcome.reason}")
    entries: list[dict[str, Any]] = []
    stored: list[str] = []
    with _uow(request) as uow:
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(resource, dict):
                entries.append(_entry_failed("entry has no resource"))
                continue
            rtype = str(resource.get("resourceType"))
            rid = resource_id(PARTNER_FEED, rtype, entry_key(entry))
            versions = uow.resources.versions(rtype, rid)
            if not versions or versions[0].deleted:
                entries.append(_entry_failed("entry not accepted (see the Bundle's warnings "
                                             "on the inbound message)"))
                continue
            version = versions[0]
            created = version.version_id == 1 and outcome.status == "accepted"
            location = f"{rtype}/{rid}/_history/{version.version_id}"
            stored.append(location)
            entries.append({"response": {
                "status": "201 Created" if created else "200 OK", "location": location,
                "etag": f'W/"{version.version_id}"',
                "lastModified": version.last_updated.isoformat()}})
    guard.point.audit_write(guard.ctx, str(bundle["type"]), stored, "permit",
                            f"{len(stored)} stored ({outcome.status})")
    response_type = f"{bundle['type']}-response"
    return FHIRResponse({"resourceType": "Bundle", "type": response_type, "entry": entries})


def _entry_failed(reason: str) -> dict[str, Any]:
    return {"response": {"status": "400 Bad Request", "outcome": {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": reason}]}}}


@router.get("/{resource_type}/{resource_id}", response_class=FHIRResponse, summary="read",
            **docs.READ)
def read(resource_type: TypeDep, resource_id: IdPath, request: Request,
         caller: CallerDep) -> FHIRResponse:
    check_scope(caller, resource_type, Interaction.READ)
    guard = Guard.of(request, caller)
    with _uow(request) as uow:
        if resource_type == "Patient" and _is_client(uow, resource_id):
            golden = unified_patient(uow.session, uow.resources, resource_id,
                                     request.app.state.settings.client_id_system,
                                     guard.visible(uow))
            shown = guard.assembled(uow, golden.resource, Interaction.READ) if golden else None
        else:
            versions = uow.resources.versions(resource_type, resource_id)
            if versions and versions[0].deleted and guard.may_know_deleted(
                    uow, resource_type, resource_id):
                raise FHIRError(410, "deleted", f"{resource_type}/{resource_id} was deleted")
            shown = guard.read(uow, resource_type, resource_id)
        uow.commit()  # the audit entries
    if shown is None:
        raise FHIRError(404, "not-found", f"{resource_type}/{resource_id} is not known")
    return _resource_response(shown)


@router.get("/{resource_type}/{resource_id}/_history/{version_id}",
            response_class=FHIRResponse, summary="vread", **docs.VREAD)
def vread(resource_type: TypeDep, resource_id: IdPath, version_id: str, request: Request,
          caller: CallerDep) -> FHIRResponse:
    check_scope(caller, resource_type, Interaction.VREAD)
    if not (version_id.isascii() and version_id.isdigit()):
        raise FHIRError(404, "not-found", "version ids are whole numbers")
    guard = Guard.of(request, caller)
    with _uow(request) as uow:
        versions = {v.version_id: v for v in uow.resources.versions(resource_type, resource_id)}
        wanted = versions.get(int(version_id))
        if wanted is not None and wanted.deleted and guard.may_know_deleted(
                uow, resource_type, resource_id):
            raise FHIRError(410, "deleted", f"version {version_id} is a deletion")
        shown = guard.read(uow, resource_type, resource_id, int(version_id)) \
            if wanted is not None and not wanted.deleted else None
        uow.commit()
    if shown is None:
        raise FHIRError(404, "not-found", f"{resource_type}/{resource_id}/_history/"
                        f"{version_id} is not known")
    return _resource_response(shown)


@router.get("/{resource_type}/{resource_id}/_history", response_class=FHIRResponse,
            summary="history (instance)", **docs.HISTORY)
def history(resource_type: TypeDep, resource_id: IdPath, request: Request,
            caller: CallerDep) -> FHIRResponse:
    check_scope(caller, resource_type, Interaction.HISTORY_INSTANCE)
    guard = Guard.of(request, caller)
    with _uow(request) as uow:
        versions = uow.resources.versions(resource_type, resource_id)
        bodies = uow.resources.history(resource_type, resource_id)
        shown, withheld = guard.filter(uow, [b for b, v in zip(bodies, versions, strict=True)
                                             if not v.deleted], Interaction.HISTORY_INSTANCE)
        uow.commit()
    if not shown and not any(v.deleted for v in versions):
        raise FHIRError(404, "not-found", f"{resource_type}/{resource_id} is not known")
    entries: list[dict[str, Any]] = []
    base = _base(request)
    visible = {b.get("meta", {}).get("versionId") for b in shown}
    for version in versions:
        if version.deleted:
            entries.append({"request": {"method": "DELETE",
                                        "url": f"{resource_type}/{resource_id}"},
                            "response": {"status": "410 Gone",
                                         "lastModified": version.last_updated.isoformat()}})
            continue
        body = next((b for b in shown if b.get("meta", {}).get("versionId")
                     == str(version.version_id)), None)
        if body is None or str(version.version_id) not in visible:
            continue
        entries.append({"fullUrl": f"{base}/{resource_type}/{resource_id}",
                        "resource": body,
                        "request": {"method": "PUT" if version.version_id > 1 else "POST",
                                    "url": f"{resource_type}/{resource_id}"},
                        "response": {"status": "200 OK",
                                     "lastModified": version.last_updated.isoformat()}})
    bundle = {"resourceType": "Bundle", "type": "history", "total": len(entries),
              "entry": entries}
    _warn_withheld(bundle, withheld)
    return FHIRResponse(bundle)


@router.get("/{resource_type}", response_class=FHIRResponse, summary="search",
            **docs.SEARCH)
def search(resource_type: TypeDep, request: Request, caller: CallerDep) -> FHIRResponse:
    check_scope(caller, resource_type, Interaction.SEARCH_TYPE)
    try:
        query = parse_search(resource_type, request.query_params.multi_items())
    except SearchError as exc:
        raise FHIRError(400, "not-supported", str(exc)) from None
    for included, _ in (*query.includes, *query.revincludes):
        check_scope(caller, included, Interaction.SEARCH_TYPE)
    if query.includes:
        check_scope(caller, "Patient", Interaction.READ)
    guard = Guard.of(request, caller)
    settings = request.app.state.settings
    with _uow(request) as uow:
        expect_record_facts(uow.session)  # for the withheld notice, read with the states
        try:
            matches = find(uow.session, uow.resources, uow.blind_index, query,
                           settings.client_id_system, guard.visible(uow))
        except SearchError as exc:
            raise FHIRError(400, "not-supported", str(exc)) from None
        shown, _ = guard.filter_found(uow, matches, Interaction.SEARCH_TYPE)
        bundle = _searchset(request, query, shown, uow, guard)
        notice = _record_notice(uow, guard, query, shown)
        uow.commit()
    _warn_withheld(bundle, int(notice))
    return FHIRResponse(bundle)


def _record_notice(uow: UnitOfWork, guard: Guard, query: SearchRequest,
                   shown: list[Found]) -> bool:
    """The withheld notice of a search: about the whole record of the clients it concerns
    (those of its visible matches, and client ids it names), never about its matches,
    else `?_id=X` would say whether a withheld X exists (`consent.notice`)."""
    named = {v.removeprefix("Patient/") for c in query.criteria
             if c.name in ("patient", "subject", "_id") for v in c.values}
    clients = set(uow.session.scalars(sa.select(ClientRow.id).where(
        ClientRow.id.in_(sorted(named)), ClientRow.status == "active"))) if named else set()
    references = {str(f.resource.get("id")) if f.resource.get("resourceType") == "Patient"
                  else _subject_id(f.resource) for f in shown} - {""}
    clients |= set(guard.point.clients_of(uow.session, references).values())
    return record_withholds(guard.point, uow.session, uow.resources, guard.ctx, clients)


def _subject_id(body: dict[str, Any]) -> str:
    for name in ("subject", "patient"):
        reference = (body.get(name) or {}).get("reference")
        if isinstance(reference, str) and reference.startswith("Patient/"):
            return reference.removeprefix("Patient/")
    return ""


@router.get("/Patient/{client_id}/$everything", response_class=FHIRResponse,
            summary="everything about a unified client", **docs.EVERYTHING)
def patient_everything(client_id: IdPath, request: Request, caller: CallerDep) -> FHIRResponse:
    check_scope(caller, "Patient", Interaction.READ)
    guard = Guard.of(request, caller)
    with _uow(request) as uow:
        found = everything(uow.session, uow.resources, uow.blind_index, client_id,
                           request.app.state.settings.client_id_system, guard.visible(uow))
        if found is None:
            uow.commit()
            raise FHIRError(404, "not-found", f"Patient/{client_id} is not a unified client")
        allowed = [f for f in found if caller.permits(f.resource["resourceType"],
                                                      Interaction.READ)]
        shown, withheld = guard.filter_found(uow, allowed, Interaction.READ)
        uow.commit()
    base = _base(request)
    bundle: dict[str, Any] = {
        "resourceType": "Bundle", "type": "searchset", "total": len(shown),
        "entry": [{"fullUrl": f"{base}/{f.resource['resourceType']}/{f.resource['id']}",
                   "resource": with_provenance(f), "search": {"mode": "match"}}
                  for f in shown]}
    _warn_withheld(bundle, withheld + (len(found) - len(allowed)))
    return FHIRResponse(bundle)


# -- helpers -----------------------------------------------------------------------------------


def with_provenance(found: Found) -> dict[str, Any]:
    """The resource with where it came from: `meta.source` (the source organisation) and a
    `meta.tag` naming the feed."""
    body = dict(found.resource)
    meta = dict(body.get("meta") or {})
    if found.source_org:
        meta["source"] = f"urn:x-unified-record:org:{found.source_org}"
    tags = [t for t in meta.get("tag") or [] if t.get("system") != FEED_TAG_SYSTEM]
    tags.append({"system": FEED_TAG_SYSTEM, "code": found.source_feed})
    meta["tag"] = tags
    body["meta"] = meta
    return body


FEED_TAG_SYSTEM = "https://unified-record.example/CodeSystem/source-feed"


def _base(request: Request) -> str:
    return f"{request.app.state.settings.resolved_public_url}/fhir"


def _resource_response(body: dict[str, Any]) -> FHIRResponse:
    headers = {}
    if version := (body.get("meta") or {}).get("versionId"):
        headers["ETag"] = f'W/"{version}"'
    return FHIRResponse(body, headers=headers)


def _warn_withheld(bundle: dict[str, Any], withheld: int) -> None:
    """Say that something was withheld, never what (nor how much)."""
    if withheld <= 0:
        return
    outcome = {"resourceType": "OperationOutcome", "issue": [{
        "severity": "warning", "code": "suppressed",
        "diagnostics": "Some data was withheld under consent or policy."}]}
    bundle.setdefault("entry", []).append({"resource": outcome,
                                           "search": {"mode": "outcome"}})


def _searchset(request: Request, query: SearchRequest, shown: list[Found], uow: UnitOfWork,
               guard: Guard) -> dict[str, Any]:
    base = _base(request)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset",
                              "total": len(shown)}
    self_params = [(k, v) for k, v in request.query_params.multi_items() if k != "_page"]
    bundle["link"] = [{"relation": "self", "url": _url(base, query.resource_type,
                                                       request.query_params.multi_items())}]
    if query.summary_count:
        return bundle
    try:
        page, cursor = page_after(shown, sort_key(query), query.page, query.count)
    except PageError as exc:
        raise FHIRError(400, "invalid", str(exc)) from None
    if cursor is not None:
        bundle["link"].append({"relation": "next", "url": _url(
            base, query.resource_type, [*self_params, ("_page", cursor)])})
    entries = [{"fullUrl": f"{base}/{f.resource['resourceType']}/{f.resource['id']}",
                "resource": with_provenance(f), "search": {"mode": "match"}} for f in page]
    entries += [{"fullUrl": f"{base}/{f.resource['resourceType']}/{f.resource['id']}",
                 "resource": with_provenance(f), "search": {"mode": "include"}}
                for f in guard.included(uow, query, page)]
    bundle["entry"] = entries
    return bundle


def _url(base: str, resource_type: str, params: list[tuple[str, str]]) -> str:
    from urllib.parse import urlencode

    query = urlencode(params)
    return f"{base}/{resource_type}" + (f"?{query}" if query else "")
