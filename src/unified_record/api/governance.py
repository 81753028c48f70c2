"""Governance tools over the API, for information-governance officers.

FHIR-shaped where FHIR has a fit:

* ``GET /fhir/AuditEvent?patient=<client>``: who accessed a client's record, when and why
  (a searchset Bundle of the audit log's AuditEvents, oldest first);
* ``GET /fhir/Patient/<client>/$audit-trail[?_format=csv]``: the same trail exported for a
  subject access request, as a FHIR collection Bundle or as CSV;
* ``GET /fhir/Consent?patient=<client>``: the client's consents and objections, active and
  withdrawn (each Consent's versions: ``GET /fhir/Consent/<id>/_history``).

Plain JSON under ``/governance`` where FHIR has none:

* ``GET /governance/break-glass[?all=true&client=<client>]``: grants awaiting review;
* ``POST /governance/break-glass/<grant id>/close`` ``{"outcome": ..., "note": ...}``;
* ``GET /governance/denied[?since=<ISO date or time>]``: denied accesses.

Every call passes the enforcement point (`EnforcementPoint.authorize_governance`): only a
role the policy lets read governance records for its purpose (governance officers, HCOMPL or
PATRQT) gets an answer, anyone else 403; allowed or not, the call is audited. The audit log
itself is only ever read here, never written through a resource route.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from unified_record.api.auth import CallerDep, check_scope
from unified_record.api.errors import FHIRError
from unified_record.api.fhir import IdPath
from unified_record.api.guard import Guard, refusals
from unified_record.api.responses import FHIRResponse
from unified_record.audit.events import Entity, break_glass_entity
from unified_record.audit.log import AuditRecord
from unified_record.audit.reports import access_line, client_trail, trail_bundle, trail_csv
from unified_record.consent.breakglass import BreakGlassError, BreakGlassReview, list_grants
from unified_record.consent.enforcement import merged_client_ids
from unified_record.consent.records import list_consents
from unified_record.security.scopes import Interaction
from unified_record.store.governance_models import (
    REVIEW_OUTCOMES,
    BreakGlassGrantRow,
    BreakGlassReviewRow,
)
from unified_record.store.models import ClientRow
from unified_record.store.unit_of_work import UnitOfWork

__all__ = ["router"]

router = APIRouter(tags=["Governance"])
_CSV = "text/csv; charset=utf-8"
_CLIENT_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # a FHIR id


def _uow(request: Request) -> UnitOfWork:
    state = request.app.state
    return UnitOfWork(state.sessions, state.keyring, state.blind_index)


def _params(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each at most once; anything else is refused (400)."""
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            raise FHIRError(400, "not-supported", f"unknown or unsupported parameter {name!r}")
        if name in found:
            raise FHIRError(400, "invalid", f"parameter {name!r} given twice")
        found[name] = value.strip()
    return found


def _client_param(params: dict[str, str], name: str = "patient") -> str:
    client_id = params.get(name, "").removeprefix("Patient/")
    if not client_id:
        raise FHIRError(400, "required", f"the {name} parameter (a client id) is required")
    if not _CLIENT_ID.fullmatch(client_id):
        raise FHIRError(400, "invalid", f"{name} must be a client id")
    return client_id


def _known_client(uow: UnitOfWork, client_id: str) -> None:
    if uow.session.get(ClientRow, client_id) is None:
        raise FHIRError(404, "not-found", f"Patient/{client_id} is not a unified client")


def _allow(guard: Guard, uow: UnitOfWork, action: str, client_id: str | None = None,
           entities: tuple[Entity, ...] = (), outcome_desc: str | None = None) -> None:
    """Gate and audit one governance call (403 and audited when the role may not)."""
    with refusals():
        guard.point.authorize_governance(guard.ctx, action, client_id, entities, outcome_desc)
    uow.commit()


def _trail(request: Request, guard: Guard, client_id: str, action: str) -> list[AuditRecord]:
    with _uow(request) as uow:
        _known_client(uow, client_id)
        ids = merged_client_ids(uow.session, client_id)
        records = client_trail(guard.point.audit, ids)
        _allow(guard, uow, action, client_id, outcome_desc=f"{len(records)} audit entries")
    return records


@router.get("/fhir/AuditEvent", response_class=FHIRResponse, summary="who accessed a record",
            description="The audit log's AuditEvents about one unified client (`patient`), "
                        "oldest first: who, from which organisation, when, for what purpose, "
                        "and what was returned or withheld. Governance officers only; "
                        "audited.")
def audit_events(request: Request, caller: CallerDep) -> FHIRResponse:
    check_scope(caller, "AuditEvent", Interaction.SEARCH_TYPE)
    client_id = _client_param(_params(request, ("patient",)))
    guard = Guard.of(request, caller)
    records = _trail(request, guard, client_id, "search-type")
    return FHIRResponse({
        "resourceType": "Bundle", "type": "searchset", "total": len(records),
        "link": [{"relation": "self", "url": str(request.url)}],
        "entry": [{**entry, "search": {"mode": "match"}}
                  for entry in trail_bundle(records)["entry"]]})


@router.get("/fhir/Patient/{client_id}/$audit-trail", summary="audit trail export",
            description="A client's audit trail for a subject access request: a FHIR "
                        "collection Bundle of AuditEvents, or with `_format=csv` one CSV line "
                        "per entry. Governance officers only; audited.",
            responses={200: {"content": {"application/fhir+json": {}, "text/csv": {}}}})
def audit_trail(client_id: IdPath, request: Request, caller: CallerDep) -> Response:
    check_scope(caller, "AuditEvent", Interaction.SEARCH_TYPE)
    wanted = _params(request, ("_format",)).get("_format", "json")
    if wanted not in ("json", "application/fhir+json", "csv", "text/csv"):
        raise FHIRError(400, "not-supported", "_format must be json or csv")
    guard = Guard.of(request, caller)
    records = _trail(request, guard, client_id, "operation")
    if "csv" in wanted:
        return Response(trail_csv(access_line(r) for r in records), media_type=_CSV,
                        headers={"Content-Disposition":
                                 f'attachment; filename="audit-trail-{client_id}.csv"'})
    return FHIRResponse(trail_bundle(records))


@router.get("/fhir/Consent", response_class=FHIRResponse, summary="consent history",
            description="A unified client's consents and objections (`patient`), active and "
                        "withdrawn, oldest first, including those recorded under ids merged "
                        "into it. Governance officers only; audited.")
def consents(request: Request, caller: CallerDep) -> FHIRResponse:
    check_scope(caller, "Consent", Interaction.SEARCH_TYPE)
    client_id = _client_param(_params(request, ("patient",)))
    guard = Guard.of(request, caller)
    with _uow(request) as uow:
        _known_client(uow, client_id)
        found = list_consents(uow.resources, merged_client_ids(uow.session, client_id))
        refs = tuple(Entity(f"Consent/{c['id']}/_history/{c['meta']['versionId']}",
                            outcome="returned") for c in found)
        _allow(guard, uow, "search-type", client_id, refs, f"{len(found)} returned")
    base = f"{request.app.state.settings.resolved_public_url}/fhir"
    return FHIRResponse({
        "resourceType": "Bundle", "type": "searchset", "total": len(found),
        "link": [{"relation": "self", "url": str(request.url)}],
        "entry": [{"fullUrl": f"{base}/Consent/{c['id']}", "resource": c,
                   "search": {"mode": "match"}} for c in found]})


@router.get("/governance/break-glass", summary="break-glass review queue",
            description="Break-glass grants awaiting review, oldest first (`all=true`: closed "
                        "ones too; `client`: one client's). Governance officers only; "
                        "audited.")
def break_glass_queue(request: Request, caller: CallerDep) -> JSONResponse:
    check_scope(caller, "AuditEvent", Interaction.SEARCH_TYPE)
    params = _params(request, ("all", "client"))
    if params.get("all", "false") not in ("true", "false"):
        raise FHIRError(400, "invalid", "all must be true or false")
    client_id = _client_param(params, "client") if "client" in params else None
    guard = Guard.of(request, caller)
    with _uow(request) as uow:
        reviews = list_grants(uow.session, request.app.state.keyring,
                              open_only=params.get("all") != "true", client_id=client_id)
        _allow(guard, uow, "break-glass-queue", client_id,
               tuple(break_glass_entity(r.grant.id, r.outcome or "awaiting-review")
                     for r in reviews), f"{len(reviews)} grants listed")
    return JSONResponse({"grants": [_review_json(r) for r in reviews]})


@router.post("/governance/break-glass/{grant_id}/close", summary="close a break-glass review",
             description='Close a grant\'s review: `{"outcome": "appropriate" | '
                         '"inappropriate" | "referred", "note": "..."}`. Governance officers '
                         "only; audited.")
async def close_break_glass(grant_id: str, request: Request, caller: CallerDep
                            ) -> JSONResponse:
    check_scope(caller, "AuditEvent", Interaction.SEARCH_TYPE)
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        raise FHIRError(400, "invalid", "the body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("note", ""), str):
        raise FHIRError(422, "processing", 'send {"outcome": ..., "note": "..."}')
    outcome = body.get("outcome")
    if outcome not in REVIEW_OUTCOMES:
        raise FHIRError(422, "processing", f"outcome must be one of "
                        f"{', '.join(REVIEW_OUTCOMES)}")
    guard = Guard.of(request, caller)
    review: BreakGlassReview = await run_in_threadpool(
        _close, request, guard, grant_id, str(outcome), str(body.get("note", "")))
    return JSONResponse(_review_json(review))


def _close(request: Request, guard: Guard, grant_id: str, outcome: str, note: str
           ) -> BreakGlassReview:
    keyring = request.app.state.keyring
    with _uow(request) as uow, refusals():
        try:  # the role is checked (and a refusal audited) before the grant is looked up
            grant = guard.point.close_break_glass(uow.session, guard.ctx, grant_id, outcome,
                                                  note)
        except BreakGlassError as exc:
            uow.session.rollback()
            if uow.session.get(BreakGlassGrantRow, grant_id) is None:
                raise FHIRError(404, "not-found", f"no break-glass grant {grant_id}") from None
            if uow.session.get(BreakGlassReviewRow, grant_id) is not None:
                raise FHIRError(409, "conflict", f"break-glass grant {grant_id} is already "
                                "closed") from None
            raise FHIRError(422, "processing", str(exc)) from None
        uow.commit()
        closed = list_grants(uow.session, keyring, open_only=False, client_id=grant.client_id)
    return next(r for r in closed if r.grant.id == grant_id)


@router.get("/governance/denied", summary="denied-access report",
            description="Denied accesses, oldest first (`since`: an ISO date or time, UTC "
                        "unless it says otherwise). Governance officers only; audited.")
def denied(request: Request, caller: CallerDep) -> JSONResponse:
    check_scope(caller, "AuditEvent", Interaction.SEARCH_TYPE)
    since_text = _params(request, ("since",)).get("since")
    since = None
    if since_text:
        try:
            since = datetime.fromisoformat(since_text)
        except ValueError:
            raise FHIRError(400, "invalid", "since must be an ISO date or time") from None
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
    guard = Guard.of(request, caller)
    records = guard.point.audit.entries(decision="deny", since=since)
    with _uow(request) as uow:
        _allow(guard, uow, "denied-report", None, outcome_desc=f"{len(records)} entries")
    return JSONResponse({"entries": [asdict(access_line(r)) for r in records]})


def _review_json(review: BreakGlassReview) -> dict[str, Any]:
    grant = review.grant

    def when(value: datetime | None) -> str | None:
        return value.isoformat(timespec="seconds") if value else None

    return {"id": grant.id, "client_id": grant.client_id, "user": grant.sub,
            "oauth_client": grant.oauth_client_id, "organisation": grant.organisation,
            "role": grant.role, "granted_at": when(grant.granted_at),
            "expires_at": when(grant.expires_at), "reason": review.reason,
            "status": "closed" if review.outcome else "awaiting-review",
            "outcome": review.outcome, "reviewed_by": review.reviewed_by,
            "reviewed_at": when(review.reviewed_at), "note": review.note}
