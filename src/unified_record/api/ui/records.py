"""Find a client, and the unified record page (with break-glass where the role allows it).

Every read passes the access guard (`api.guard.Guard`), the same enforcement point as the
FHIR API: the consent policy decides, results are filtered before they are counted, and
every access is in the audit log.

The purpose of use chosen at sign-in applies to every page; on a record page the user may
view that one record for another purpose their role may use (a CSRF-protected form; the
choice is kept in the session for that record only, and every read is audited with it).
Break-glass is a purpose of its own, granted only through its form with a reason.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import date
from functools import cache
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from unified_record.api.ui.session import (
    FormDep,
    UserDep,
    enforcement,
    guard,
    main_state,
    purpose_choices,
    uow,
)
from unified_record.api.ui.templating import org_name, render
from unified_record.consent.breakglass import BreakGlassError
from unified_record.consent.enforcement import AccessRefused
from unified_record.consent.records import ConsentError
from unified_record.fhir.uk_core import NHS_NUMBER_SYSTEM, ODS_CODE_SYSTEM
from unified_record.ingest.mapping import MAPPINGS_DIR
from unified_record.records import SearchError, everything, find, parse_search
from unified_record.records.search import CODE_PATHS, DATE_PATHS, Found, client_sources
from unified_record.security.scopes import Interaction
from unified_record.store.models import ClientRow, ResourceRow

__all__ = ["router"]

router = APIRouter()
MAX_RESULTS = 50
SOCIAL_CARE = ("EpisodeOfCare", "CarePlan", "ServiceRequest")
NHS = ("Encounter", "Condition", "MedicationStatement", "AllergyIntolerance", "Observation")
SECTION_TITLES = {
    "EpisodeOfCare": "Episodes of care", "CarePlan": "Care plans and assessments",
    "ServiceRequest": "Referrals and services", "Encounter": "Encounters",
    "Condition": "Conditions", "MedicationStatement": "Medications",
    "AllergyIntolerance": "Allergies", "Observation": "Observations", "Flag": "Alerts",
}
SEARCH_FIELDS = ("name", "dob", "postcode", "nhs", "local_id")


def _search_params(form: dict[str, str]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """FHIR search parameters from the form, and errors by field."""
    params: list[tuple[str, str]] = []
    errors: dict[str, str] = {}
    name = form.get("name", "").strip()
    if name:
        parts = name.split()
        if form.get("fuzzy"):
            params.append(("phonetic", parts[-1]))
        else:
            params.append(("family", parts[-1]))
            if len(parts) > 1:
                params.append(("given", parts[0]))
    dob = form.get("dob", "").strip()
    if dob:
        try:
            day, month, year = (int(x) for x in dob.replace("-", "/").split("/"))
            params.append(("birthdate", date(year, month, day).isoformat()))
        except ValueError:
            errors["dob"] = "Enter date of birth as day/month/year, for example 27/3/1975"
    if postcode := form.get("postcode", "").strip():
        params.append(("address-postalcode", postcode))
    nhs = form.get("nhs", "").replace(" ", "").strip()
    if nhs:
        if not (nhs.isdigit() and len(nhs) == 10):
            errors["nhs"] = "Enter an NHS number of 10 digits"
        else:
            params.append(("identifier", f"{NHS_NUMBER_SYSTEM}|{nhs}"))
    if local := form.get("local_id", "").strip().replace(",", ""):
        # Any local identifier system a feed uses, or a client id.
        params.append(("identifier", ",".join(
            [f"{system}|{local}" for system in local_id_systems()] + [local])))
    if not params and not errors:
        errors["name"] = "Enter at least one of name, date of birth, postcode, NHS number " \
                         "or local id"
    return params, errors


@cache
def local_id_systems() -> tuple[str, ...]:
    """The identifier systems the feeds' mappings give records (NHS and ODS codes aside):
    council case numbers, hospital numbers, and so on."""
    found: set[str] = set()
    for path in sorted(MAPPINGS_DIR.glob("*.yaml")):
        found |= set(re.findall(r"system:\s*[\"']?(https?://[^\s\"']+/Id/[^\s\"']+)",
                                path.read_text("utf-8")))
    return tuple(sorted(found - {NHS_NUMBER_SYSTEM, ODS_CODE_SYSTEM}))


def _summary(found: Found) -> dict[str, Any]:
    body = found.resource
    name = (body.get("name") or [{}])[0]
    address = (body.get("address") or [{}])[0]
    nhs = next((i.get("value") for i in body.get("identifier") or []
                if i.get("system") == NHS_NUMBER_SYSTEM), None)
    return {"id": body.get("id"), "name": _name(name), "birth_date": body.get("birthDate"),
            "postcode": address.get("postalCode"), "nhs": nhs,
            "sources": len(body.get("link") or [])}


def _name(name: dict[str, Any]) -> str:
    given = " ".join(name.get("given") or [])
    return " ".join(filter(None, (given, name.get("family")))) or name.get("text") or "(no name)"


@router.get("/clients", response_class=HTMLResponse)
def find_client(request: Request, user: UserDep) -> Response:
    form = {k: request.query_params.get(k, "") for k in (*SEARCH_FIELDS, "fuzzy")}
    context: dict[str, Any] = {"title": "Find a client", "form": form, "errors": {},
                               "results": None, "withheld": False}
    if not any(form[k] for k in SEARCH_FIELDS):
        return render(request, "find.html", context)
    params, errors = _search_params(form)
    if errors:
        context["errors"] = errors
        return render(request, "find.html", context, status=400)
    try:
        query = parse_search("Patient", params)
    except SearchError:
        context["errors"] = {"name": "This search cannot be run; check the values"}
        return render(request, "find.html", context, status=400)
    g = guard(request, user)
    settings = main_state(request).settings
    with uow(request) as unit:
        matches = find(unit.session, unit.resources, unit.blind_index, query,
                       settings.client_id_system, g.visible(unit))
        shown, withheld = g.filter_found(unit, matches, Interaction.SEARCH_TYPE)
        unit.commit()
        results = [_summary(f) for f in shown[:MAX_RESULTS]]
        members = {str(link["other"]["reference"]).removeprefix("Patient/")
                   for f in shown[:MAX_RESULTS] for link in f.resource.get("link") or []}
        org_of: dict[str, str | None] = {
            rid: org for rid, org in unit.session.execute(
                sa.select(ResourceRow.id, ResourceRow.source_org).where(
                    ResourceRow.resource_type == "Patient",
                    ResourceRow.id.in_(sorted(members))))} if members else {}
    organisations = enforcement(request).policy.organisations
    for result, found in zip(results, shown, strict=False):
        orgs = {org_of.get(str(link["other"]["reference"]).removeprefix("Patient/"))
                for link in found.resource.get("link") or []}
        result["source_names"] = sorted(org_name(o, organisations) for o in orgs if o)
    context["results"] = results
    context["total"] = len(shown)
    context["withheld"] = withheld > 0
    return render(request, "find.html", context)


# -- the unified record ---------------------------------------------------------------------


def _concept(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(filter(None, (_concept(v) for v in value)))
    if not isinstance(value, dict):
        return str(value) if value else ""
    if value.get("text"):
        return str(value["text"])
    if "coding" not in value and (value.get("display") or value.get("code")):
        return str(value.get("display") or value.get("code"))  # a Coding
    for coding in value.get("coding") or []:
        if coding.get("display") or coding.get("code"):
            return str(coding.get("display") or coding.get("code"))
    return ""


def _first(body: dict[str, Any], path: str) -> Any:
    node: Any = body
    for part in path.split("."):
        if isinstance(node, list):
            node = node[0] if node else None
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _when(body: dict[str, Any]) -> str:
    for path in DATE_PATHS.get(str(body.get("resourceType")), ()):
        value = _first(body, path)
        if value:
            return str(value)[:10]
    return ""


def _status(body: dict[str, Any]) -> str:
    status = body.get("status") or body.get("clinicalStatus")
    return _concept(status) if isinstance(status, dict) else str(status or "")


def _item(found: Found, organisations: Any) -> dict[str, Any]:
    body = found.resource
    rtype = str(body.get("resourceType"))
    what = _concept(body.get(CODE_PATHS.get(rtype, "code")))
    if rtype == "CarePlan" and body.get("title"):
        what = str(body["title"])
    if rtype == "Encounter" and not what:
        what = _concept(body.get("class"))
    restricted = any(label.get("code") == "R" for label in
                     (body.get("meta") or {}).get("security") or [])
    return {"type": rtype, "section": SECTION_TITLES.get(rtype, rtype),
            "what": what or rtype, "date": _when(body), "status": _status(body),
            "source": org_name(found.source_org, organisations),
            "restricted": restricted}


def _demographics(sources: Iterable[Found], organisations: Any) -> list[dict[str, Any]]:
    """Each demographic element with every value the sources hold, and who holds it."""
    rows: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for found in sources:
        body, source = found.resource, org_name(found.source_org, organisations)
        values = {
            "Name": [_name(n) for n in body.get("name") or []][:1],
            "Date of birth": [body["birthDate"]] if body.get("birthDate") else [],
            "Gender": [body["gender"]] if body.get("gender") else [],
            "Address": [", ".join(filter(None, [*(a.get("line") or []), a.get("city"),
                                                a.get("postalCode")]))
                        for a in body.get("address") or []][:1],
            "NHS number": [i["value"] for i in body.get("identifier") or []
                           if i.get("system") == NHS_NUMBER_SYSTEM and i.get("value")],
            "Local id": [i["value"] for i in body.get("identifier") or []
                         if i.get("system") in local_id_systems() and i.get("value")],
            "Phone": [t["value"] for t in body.get("telecom") or []
                      if t.get("system") == "phone" and t.get("value")][:1],
            "Date of death": ([str(body["deceasedDateTime"])[:10]]
                              if body.get("deceasedDateTime") else []),
        }
        for label, found_values in values.items():
            for value in found_values:
                # The same value written differently (case, spacing) is not a conflict.
                same = next((v for v in rows[label] if _fold(v) == _fold(value)), value)
                if source not in rows[label][same]:
                    rows[label][same].append(source)
    order = ("Name", "Date of birth", "Gender", "NHS number", "Local id", "Address", "Phone",
             "Date of death")
    return [{"label": label, "values": [{"value": v, "sources": s}
                                        for v, s in rows[label].items()],
             # Each source numbers its records its own way: several local ids conflict with
             # nothing.
             "conflict": len(rows[label]) > 1 and label != "Local id"}
            for label in order if rows.get(label)]


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def _may_break_glass(request: Request, role: str) -> bool:
    policy = enforcement(request).policy
    return "BTG" in policy.roles[role].purposes


def _view_purpose(request: Request, client_id: str) -> str | None:
    """The purpose chosen for this record alone, if any (else the sign-in purpose holds)."""
    view = request.session.get("view_purpose")
    if isinstance(view, dict) and view.get("client") == client_id:
        return str(view.get("purpose") or "") or None
    return None


@router.get("/clients/{client_id}", response_class=HTMLResponse)
def client_record(client_id: str, request: Request, user: UserDep) -> Response:
    purpose = _view_purpose(request, client_id)
    g = guard(request, user, purpose)
    settings = main_state(request).settings
    with uow(request) as unit:
        found = everything(unit.session, unit.resources, unit.blind_index, client_id,
                           settings.client_id_system, g.visible(unit))
        # None: no such current client, or nothing in its record may be shown for this
        # purpose. Staff are told which (the notice and the break-glass route need it).
        all_withheld = found is None and _is_current_client(unit.session, client_id)
        if found is None and not all_withheld:
            unit.commit()
            return render(request, "error.html", {
                "title": "Client not found",
                "message": "There is no current client with this id."}, status=404)
        if found is None:  # decided and audited as withheld: the governance reports show it
            found = client_sources(unit.session, unit.resources, client_id)
        shown, withheld = g.filter_found(unit, found, Interaction.READ)
        unit.commit()
    organisations = enforcement(request).policy.organisations
    golden = next((f for f in shown if f.resource.get("resourceType") == "Patient"
                   and f.resource.get("id") == client_id), None)
    sources = [f for f in shown if f.resource.get("resourceType") == "Patient"
               and f.resource.get("id") != client_id]
    items = [_item(f, organisations) for f in shown
             if f.resource.get("resourceType") != "Patient"]
    sections: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:
        sections[item["type"]].append(item)
    for listed in sections.values():
        listed.sort(key=lambda i: i["date"], reverse=True)
    timeline = sorted((i for i in items if i["date"]), key=lambda i: i["date"], reverse=True)
    return render(request, "record.html", {
        "title": (golden and _name((golden.resource.get("name") or [{}])[0])) or "Client record",
        "client_id": client_id, "summary": _summary(golden) if golden else None,
        "demographics": _demographics(sources, organisations),
        "social_care": [(SECTION_TITLES[t], sections[t]) for t in SOCIAL_CARE],
        "nhs": [(SECTION_TITLES[t], sections[t]) for t in NHS],
        "alerts": sections.get("Flag", []), "timeline": timeline[:100],
        "withheld": withheld > 0 or all_withheld, "purpose": purpose or user.purpose,
        "purpose_for_record": purpose is not None and purpose != user.purpose,
        "purpose_choices": purpose_choices(request, user.role),
        "break_glass": _may_break_glass(request, user.role) and purpose != "BTG",
        "reason_error": None})


@router.post("/clients/{client_id}/purpose")
def change_purpose(client_id: str, request: Request, user: UserDep, form: FormDep
                   ) -> Response:
    """View this record for another purpose of use. A purpose the role may not use is
    refused, and the refusal audited, by the enforcement point."""
    chosen = form.get("purpose", "").strip()
    if not chosen:
        return render(request, "error.html", {
            "title": "Select a purpose of use",
            "message": "Go back and select why you are using this record."}, status=400)
    if chosen == "BTG":
        return render(request, "error.html", {
            "title": "Emergency access needs a reason",
            "message": "Use the emergency access form on the record, and give your reason."},
            status=400)
    g = guard(request, user, chosen)
    enforcement(request).check_purpose(g.ctx, Interaction.READ.value)  # AccessRefused: 403
    request.session["view_purpose"] = {"client": client_id, "purpose": chosen}
    display = enforcement(request).policy.purposes[chosen].display
    request.session["flash"] = f"You are now viewing this record for {display} ({chosen})."
    return RedirectResponse(f"/ui/clients/{client_id}", status_code=303)


@router.post("/clients/{client_id}/break-glass")
def break_glass(client_id: str, request: Request, user: UserDep, form: FormDep) -> Response:
    reason = form.get("reason", "").strip()
    if not _may_break_glass(request, user.role):
        return render(request, "error.html", {
            "title": "You cannot use this page",
            "message": "Your role may not use emergency (break-glass) access."}, status=403)
    if not reason:
        return render(request, "error.html", {
            "title": "Give a reason",
            "message": "Emergency access needs a reason. Go back and enter why you need it.",
        }, status=400)
    g = guard(request, user, "BTG")
    with uow(request) as unit:
        try:
            enforcement(request).request_break_glass(unit.session, g.ctx, client_id, reason)
        except AccessRefused:
            unit.commit()
            return render(request, "error.html", {
                "title": "Access refused",
                "message": "Your role may not use emergency access."}, status=403)
        except (ConsentError, BreakGlassError) as exc:
            return render(request, "error.html", {"title": "Emergency access not granted",
                                                  "message": str(exc)}, status=400)
        unit.commit()
    request.session["view_purpose"] = {"client": client_id, "purpose": "BTG"}
    return RedirectResponse(f"/ui/clients/{client_id}", status_code=303)


def _is_current_client(session: Session, client_id: str) -> bool:
    client = session.get(ClientRow, client_id)
    return client is not None and client.status == "active"
