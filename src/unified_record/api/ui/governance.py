"""The governance officer's pages: consents and objections per client (view, add,
withdraw), the National Data Opt-out, "who viewed this record", the break-glass review
queue, the denied-access report, audit verification and a dashboard of accesses.

Writes go through the enforcement point (`record_consent`, `withdraw_consent`,
`set_opt_out`, `close_break_glass`), which checks the role and purpose and audits them;
audit entries and Consent records are read through the access guard like any record.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from unified_record.api.ui.charts import stacked_chart
from unified_record.api.ui.session import (
    FormDep,
    WebUser,
    enforcement,
    guard,
    main_state,
    require_role,
    uow,
)
from unified_record.api.ui.templating import render
from unified_record.audit.log import AuditRecord
from unified_record.audit.reports import AccessLine, access_line, client_trail
from unified_record.audit.signing import load_audit_signer, load_verify_keys
from unified_record.audit.verify import verify_audit_log
from unified_record.consent.breakglass import BreakGlassError, list_grants
from unified_record.consent.enforcement import AccessRefused, merged_client_ids
from unified_record.consent.optout import is_opted_out
from unified_record.consent.records import ConsentError, build_consent, list_consents
from unified_record.security.scopes import Interaction
from unified_record.store.governance_models import REVIEW_OUTCOMES
from unified_record.store.models import ClientRow

__all__ = ["router"]

router = APIRouter(prefix="/governance")
Officer = require_role("governance_officer")


def _lines(request: Request, user: WebUser, records: list[AuditRecord]) -> list[AccessLine]:
    """The audit entries the officer may see (through the guard, so this read is audited)."""
    g = guard(request, user)
    with uow(request) as unit:
        shown, _ = g.filter(unit, [r.event for r in records], Interaction.SEARCH_TYPE)
        unit.commit()
    keep = {body.get("id") for body in shown}
    return [access_line(r) for r in records if r.event.get("id") in keep]


@router.get("", response_class=HTMLResponse)
def dashboard(request: Request, user: WebUser = Officer) -> Response:
    state = main_state(request)
    point = enforcement(request)
    g = guard(request, user)
    point.check_purpose(g.ctx, "search-type")  # refused (and audited) for a wrong purpose
    records = point.audit.entries()
    by_purpose: dict[str, Counter[str]] = defaultdict(Counter)
    by_org: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        line = access_line(record)
        day = line.recorded[:10]
        by_purpose[line.purpose or "(none)"][day] += 1
        by_org[line.organisation or "(none)"][day] += 1
    days = sorted({d for counts in by_purpose.values() for d in counts})[-30:]
    plots = []
    for key, heading, groups in (("purpose", "Accesses over time by purpose of use",
                                  by_purpose),
                                 ("organisation", "Accesses over time by organisation",
                                  by_org)):
        names = sorted(groups)
        series = [(n, [float(groups[n][d]) for d in days]) for n in names]
        plots.append({"id": f"by-{key}", "heading": heading, "names": names,
                      "chart": stacked_chart(days, series, f"{heading}, last 30 days "
                                                           "(the table has the numbers)"),
                      "rows": [(d, [groups[n][d] for n in names]) for d in days]})
    signer = load_audit_signer(state.settings)
    report = verify_audit_log(state.engine, load_verify_keys(state.settings, signer))
    with uow(request) as unit:
        open_reviews = len(list_grants(unit.session, state.keyring, open_only=True))
    return render(request, "governance.html", {
        "title": "Information governance", "report": report, "open_reviews": open_reviews,
        "entries": len(records), "plots": plots})


@router.get("/client", response_class=HTMLResponse)
def client_lookup(request: Request, client_id: str = "", user: WebUser = Officer) -> Response:
    client_id = client_id.strip()
    if client_id:
        return RedirectResponse(f"/ui/governance/clients/{client_id}", status_code=303)
    return RedirectResponse("/ui/governance", status_code=303)


def _client_page(request: Request, user: WebUser, client_id: str, *,
                 error: str | None = None, status: int = 200) -> Response:
    state = main_state(request)
    g = guard(request, user)
    with uow(request) as unit:
        if unit.session.get(ClientRow, client_id) is None:
            return render(request, "error.html", {"title": "Client not found",
                                                  "message": "There is no client with this id."},
                          status=404)
        merged = merged_client_ids(unit.session, client_id)
        consents, _ = g.filter(unit, list_consents(unit.resources, merged),
                               Interaction.SEARCH_TYPE)
        opted_out = is_opted_out(unit.session, [client_id])
        grants = list_grants(unit.session, state.keyring, open_only=False, client_id=client_id)
        unit.commit()
    viewed = _lines(request, user, client_trail(enforcement(request).audit, merged))
    policy = enforcement(request).policy
    return render(request, "governance_client.html", {
        "title": f"Governance record of client {client_id}", "client_id": client_id,
        "consents": [_consent_row(c) for c in consents], "opted_out": opted_out,
        "grants": grants, "viewed": viewed[-200:][::-1], "error": error,
        "categories": sorted(policy.categories), "orgs": policy.organisations,
        "purposes": policy.purposes}, status=status)


def _consent_row(consent: dict[str, Any]) -> dict[str, Any]:
    provision = consent.get("provision") or {}
    actors = [a.get("reference", {}).get("identifier", {}).get("value", "")
              for a in provision.get("actor") or []]
    labels = [c.get("code", "") for c in provision.get("securityLabel") or []]
    return {"id": consent.get("id"), "status": consent.get("status"),
            "effect": provision.get("type"), "date": str(consent.get("dateTime", ""))[:10],
            "actors": ", ".join(filter(None, actors)) or "everyone",
            "purposes": ", ".join(p.get("code", "") for p in provision.get("purpose") or [])
            or "any purpose",
            "labels": ", ".join(labels) or "all data"}


@router.get("/clients/{client_id}", response_class=HTMLResponse)
def client_governance(client_id: str, request: Request, user: WebUser = Officer) -> Response:
    return _client_page(request, user, client_id)


@router.post("/clients/{client_id}/consents")
def add_consent(client_id: str, request: Request, form: FormDep,
                user: WebUser = Officer) -> Response:
    point = enforcement(request)
    effect = form.get("effect", "")
    if effect not in ("permit", "deny"):
        return _client_page(request, user, client_id, status=400,
                            error="Select whether the person agrees or objects")
    org, category = form.get("organisation", ""), form.get("category", "")
    purpose = form.get("purpose", "")
    g = guard(request, user)
    with uow(request) as unit:
        try:
            consent = build_consent(point.policy, client_id=client_id, effect=effect,  # type: ignore[arg-type]
                                    recipient_orgs=[org] if org else [],
                                    categories=[category] if category else [],
                                    purposes=[purpose] if purpose else [],
                                    recorded_by_org=user.organisation or None)
            point.record_consent(unit.session, unit.resources, g.ctx, consent)
        except ConsentError as exc:
            return _client_page(request, user, client_id, error=str(exc), status=400)
        except AccessRefused:
            unit.commit()
            return _client_page(request, user, client_id, status=403,
                                error="Your role and purpose may not record consents")
        unit.commit()
    request.session["flash"] = "Consent recorded."
    return RedirectResponse(f"/ui/governance/clients/{client_id}", status_code=303)


@router.post("/clients/{client_id}/consents/{consent_id}/withdraw")
def withdraw(client_id: str, consent_id: str, request: Request, form: FormDep,
             user: WebUser = Officer) -> Response:
    point = enforcement(request)
    g = guard(request, user)
    with uow(request) as unit:
        try:
            point.withdraw_consent(unit.session, unit.resources, g.ctx, consent_id)
        except ConsentError as exc:
            return _client_page(request, user, client_id, error=str(exc), status=400)
        except AccessRefused:
            unit.commit()
            return _client_page(request, user, client_id, status=403,
                                error="Your role and purpose may not withdraw consents")
        unit.commit()
    request.session["flash"] = "Consent withdrawn."
    return RedirectResponse(f"/ui/governance/clients/{client_id}", status_code=303)


@router.post("/clients/{client_id}/opt-out")
def opt_out(client_id: str, request: Request, form: FormDep, user: WebUser = Officer
            ) -> Response:
    point = enforcement(request)
    g = guard(request, user)
    with uow(request) as unit:
        try:
            point.set_opt_out(unit.session, g.ctx, client_id, form.get("opt_out") == "yes")
        except ConsentError as exc:
            return _client_page(request, user, client_id, error=str(exc), status=400)
        except AccessRefused:
            unit.commit()
            return _client_page(request, user, client_id, status=403,
                                error="Your role and purpose may not change the opt-out")
        unit.commit()
    request.session["flash"] = "National Data Opt-out updated."
    return RedirectResponse(f"/ui/governance/clients/{client_id}", status_code=303)


@router.get("/break-glass", response_class=HTMLResponse)
def break_glass_queue(request: Request, user: WebUser = Officer, error: str | None = None
                      ) -> Response:
    state = main_state(request)
    enforcement(request).check_purpose(guard(request, user).ctx, "search-type")
    with uow(request) as unit:
        grants = list_grants(unit.session, state.keyring, open_only=True)
    return render(request, "break_glass.html", {
        "title": "Break-glass reviews", "grants": grants, "outcomes": REVIEW_OUTCOMES,
        "error": error}, status=400 if error else 200)


@router.post("/break-glass/{grant_id}")
def close_review(grant_id: str, request: Request, form: FormDep, user: WebUser = Officer
                 ) -> Response:
    outcome = form.get("outcome", "")
    if outcome not in REVIEW_OUTCOMES:
        return break_glass_queue(request, user, error="Select the outcome of the review")
    g = guard(request, user)
    with uow(request) as unit:
        try:
            enforcement(request).close_break_glass(unit.session, g.ctx, grant_id, outcome,
                                                   form.get("note", ""))
        except BreakGlassError as exc:
            return break_glass_queue(request, user, error=str(exc))
        except AccessRefused:
            unit.commit()
            return break_glass_queue(request, user,
                                     error="Your role and purpose may not close reviews")
        unit.commit()
    request.session["flash"] = "Review closed."
    return RedirectResponse("/ui/governance/break-glass", status_code=303)


@router.get("/denied", response_class=HTMLResponse)
def denied(request: Request, user: WebUser = Officer) -> Response:
    records = enforcement(request).audit.entries(decision="deny")[-200:]
    lines = _lines(request, user, records)[::-1]
    return render(request, "denied.html", {"title": "Denied access", "lines": lines})
