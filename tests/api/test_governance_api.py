"""The governance tools over the API (api/governance.py): who accessed a record, the audit
trail export (CSV and FHIR Bundle), consent history, the break-glass review queue and the
denied-access report. Governance officers only; every call is audited."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from api_world import COUNCIL, World, condition, patient, serve_world

from unified_record.audit.reports import access_line
from unified_record.consent.enforcement import AccessContext
from unified_record.consent.records import build_consent
from unified_record.fhir.validation import validate_resource
from unified_record.store import ResourceRepository

C1, C2 = "C000000000001", "C000000000002"
OFFICER_SCOPE = "system/AuditEvent.rs system/Consent.cruds"


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    with serve_world(database_url, tmp_path) as w:
        w.put(patient("p-acute"))
        w.put(patient("p-council"), org=COUNCIL)
        w.put(patient("p-two", "Other"))
        w.put(condition("cond-1", "p-acute"))
        w.put(condition("cond-2", "p-two"))
        w.client(C1, ["p-acute", "p-council"])
        w.client(C2, ["p-two"])
        yield w


def officer(world: World, purpose: str = "HCOMPL") -> dict[str, str]:
    return world.token(role="governance_officer", scope=OFFICER_SCOPE, org=COUNCIL,
                       purpose=purpose)


def _fhir(response: Any, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    return body


def _events(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", [])]


def test_who_accessed_a_record(world: World) -> None:
    partner = world.token()
    assert world.get(f"/fhir/Patient/{C1}", partner).status_code == 200
    assert world.get("/fhir/Condition/cond-1", partner).status_code == 200
    assert world.get("/fhir/Condition/cond-2", partner).status_code == 200  # client C2

    found = _fhir(world.get(f"/fhir/AuditEvent?patient={C1}", officer(world)))
    assert found["type"] == "searchset" and found["total"] == len(found["entry"]) == 2
    events = _events(found)
    assert [e["subtype"][0]["code"] for e in events] == ["read", "read"]
    for event in events:  # who, from where, when, why: and only about C1
        assert event["resourceType"] == "AuditEvent" and event["recorded"]
        assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
        assert any(a.get("requestor") for a in event["agent"])
        assert f"Patient/{C1}" in [e["what"].get("reference") for e in event["entity"]]
    assert any(e["what"].get("reference", "").startswith("Condition/cond-1")
               for e in events[1]["entity"])
    # Patient/<id> works as the parameter's value too; an unknown client is a 404.
    again = _fhir(world.get(f"/fhir/AuditEvent?patient=Patient/{C1}", officer(world)))
    assert again["total"] >= 2
    assert _fhir(world.get("/fhir/AuditEvent?patient=Cnope", officer(world)), 404)[
        "resourceType"] == "OperationOutcome"


def test_audit_trail_csv_and_bundle_match(world: World) -> None:
    partner = world.token()
    world.get(f"/fhir/Patient/{C1}", partner)
    world.get(f"/fhir/Condition?patient={C1}", partner)
    headers = officer(world)

    bundle = _fhir(world.get(f"/fhir/Patient/{C1}/$audit-trail", headers))
    validate_resource(bundle)  # valid R4
    assert bundle["type"] == "collection"
    response = world.get(f"/fhir/Patient/{C1}/$audit-trail?_format=csv", headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith(
        "text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    events = _events(bundle)
    # The CSV was made after the Bundle: it also lists the officer's Bundle export.
    assert len(rows) == len(events) + 1 and len(events) >= 2
    for row, event in zip(rows, events, strict=False):
        recorded = datetime.fromisoformat(event["recorded"]).replace(microsecond=0)
        assert datetime.fromisoformat(row["recorded"]) == recorded
        assert row["event"] == event["subtype"][0]["code"]
        assert row["client_id"] == C1
        assert row["purpose"] == ",".join(c["code"] for p in event["purposeOfEvent"]
                                          for c in p["coding"])
        assert row["user"] in {((a.get("who") or {}).get("identifier") or {}).get("value")
                               for a in event["agent"]}
    assert rows[-1]["event"] == "operation" and rows[-1]["role"] == "governance_officer"
    bad = world.get(f"/fhir/Patient/{C1}/$audit-trail?_format=xml", headers)
    assert _fhir(bad, 400)["issue"][0]["severity"] == "error"


def test_consent_history(world: World) -> None:
    headers = officer(world)
    policy = world.api.app.state.enforcement.policy  # type: ignore[attr-defined]
    posted = []
    for effect, conditions in (("deny", {"source_orgs": ["RZ1"]}),
                               ("permit", {"categories": ["mental_health"]})):
        body = build_consent(policy, client_id=C1, effect=effect, **conditions)
        created = world.api.post("/fhir/Consent", json=body, headers={
            **headers, "Content-Type": "application/fhir+json"})
        posted.append(_fhir(created, 201)["id"])
    point = world.api.app.state.enforcement  # type: ignore[attr-defined]
    keyring, blind_index = world.repo_keys
    with world.sessions() as session:  # withdrawn from the command line, say
        point.withdraw_consent(session, ResourceRepository(session, keyring, blind_index),
                               "officer-7", posted[0])
        session.commit()

    found = _fhir(world.get(f"/fhir/Consent?patient={C1}", headers))
    assert found["total"] == 2
    by_id = {c["id"]: c for c in _events(found)}
    assert set(by_id) == set(posted)
    assert by_id[posted[0]]["status"] == "inactive"
    assert by_id[posted[0]]["meta"]["versionId"] == "2"
    assert by_id[posted[1]]["status"] == "active"
    history = _fhir(world.get(f"/fhir/Consent/{posted[0]}/_history", headers))
    assert [e["resource"]["status"] for e in history["entry"]] == ["inactive", "active"]
    assert _fhir(world.get(f"/fhir/Consent?patient={C2}", headers))["total"] == 0
    assert _fhir(world.get("/fhir/Consent", headers), 400)["issue"][0]["code"] == "required"
    assert _fhir(world.get(f"/fhir/Consent?patient={C1}&status=active", headers), 400)


def _break_glass(world: World, reason: str) -> str:
    from unified_record.security.caller import Caller
    from unified_record.security.scopes import ScopeSet

    point = world.api.app.state.enforcement  # type: ignore[attr-defined]
    worker = Caller(client_id="ui", sub="worker-1", organisation=COUNCIL,
                    role="social_worker", scopes=ScopeSet.parse("system/*.rs"),
                    issuer="https://issuer.example")
    with world.sessions() as session:
        grant = point.request_break_glass(session, AccessContext(worker, "BTG"), C1, reason)
        session.commit()
    return str(grant.id)


def test_break_glass_queue_and_closing(world: World) -> None:
    first = _break_glass(world, "unconscious in A&E")
    second = _break_glass(world, "safeguarding emergency")
    headers = officer(world)

    queue = world.get("/governance/break-glass", headers)
    assert queue.status_code == 200, queue.text
    grants = queue.json()["grants"]
    assert [g["id"] for g in grants] == [first, second]
    assert grants[0]["reason"] == "unconscious in A&E"
    assert grants[0]["status"] == "awaiting-review" and grants[0]["user"] == "worker-1"

    closed = world.api.post(f"/governance/break-glass/{first}/close", headers=headers,
                            json={"outcome": "appropriate", "note": "checked with ward"})
    assert closed.status_code == 200, closed.text
    assert closed.json()["outcome"] == "appropriate"
    assert closed.json()["note"] == "checked with ward"
    left = world.get("/governance/break-glass", headers).json()["grants"]
    assert [g["id"] for g in left] == [second]
    everything = world.get("/governance/break-glass?all=true", headers).json()["grants"]
    assert [g["status"] for g in everything] == ["closed", "awaiting-review"]
    assert world.get(f"/governance/break-glass?client={C2}", headers).json()["grants"] == []

    again = world.api.post(f"/governance/break-glass/{first}/close", headers=headers,
                           json={"outcome": "appropriate"})
    assert _fhir(again, 409)["issue"][0]["code"] == "conflict"
    unknown = world.api.post("/governance/break-glass/no-such-grant/close", headers=headers,
                             json={"outcome": "appropriate"})
    _fhir(unknown, 404)
    bad = world.api.post(f"/governance/break-glass/{second}/close", headers=headers,
                         json={"outcome": "fine"})
    _fhir(bad, 422)
    _fhir(world.api.post(f"/governance/break-glass/{second}/close", headers=headers,
                         content=b"{nope"), 400)
    _fhir(world.get("/governance/break-glass?all=maybe", headers), 400)
    _fhir(world.get("/governance/break-glass?client=not%20an%20id", headers), 400)
    _fhir(world.get("/fhir/AuditEvent?patient=%00", headers), 400)


def test_denied_report(world: World) -> None:
    partner = world.token()
    refused = world.api.get(f"/fhir/Patient/{C1}",
                            headers={**partner, "X-Purpose-Of-Use": "HRESCH"})
    assert refused.status_code == 403
    headers = officer(world)
    report = world.get("/governance/denied", headers)
    assert report.status_code == 200, report.text
    entries = report.json()["entries"]
    assert len(entries) == 1 and entries[0]["decision"] == "deny"
    assert entries[0]["event"] == "read" and entries[0]["role"] == "partner_system"
    assert world.get("/governance/denied?since=2999-01-01", headers).json()["entries"] == []
    assert len(world.get("/governance/denied?since=2000-01-01T00:00:00Z",
                         headers).json()["entries"]) == 1
    _fhir(world.get("/governance/denied?since=yesterday", headers), 400)
    _fhir(world.get("/governance/denied?client=C1", headers), 400)


GOVERNANCE_READS = (f"/fhir/AuditEvent?patient={C1}", f"/fhir/Patient/{C1}/$audit-trail",
                    f"/fhir/Consent?patient={C1}", "/governance/break-glass",
                    "/governance/denied")


def test_only_governance_officers(world: World) -> None:
    grant = _break_glass(world, "emergency")
    callers = {
        "partner": world.token(scope=f"system/*.rs {OFFICER_SCOPE}"),
        "social worker": world.token(role="social_worker", scope=f"system/*.rs "
                                     f"{OFFICER_SCOPE}", org=COUNCIL),
        "data steward": world.token(role="data_steward", scope=OFFICER_SCOPE,
                                    purpose="RECORDMGT"),
        "officer, wrong purpose": officer(world, purpose="TREAT"),
    }
    for who, headers in callers.items():
        for url in GOVERNANCE_READS:
            refused = _fhir(world.get(url, headers), 403)
            assert refused["issue"][0]["code"] == "forbidden", (who, url)
        closing = world.api.post(f"/governance/break-glass/{grant}/close", headers=headers,
                                 json={"outcome": "appropriate"})
        assert _fhir(closing, 403)["resourceType"] == "OperationOutcome", who
    no_scope = world.token(role="governance_officer", scope="system/Patient.rs",
                           purpose="HCOMPL")
    for url in GOVERNANCE_READS:
        _fhir(world.get(url, no_scope), 403)
        _fhir(world.get(url, {}), 401)
    # Every refusal was audited, and the queue is untouched.
    point = world.api.app.state.enforcement  # type: ignore[attr-defined]
    denied = [access_line(r) for r in point.audit.entries(decision="deny")]
    assert len(denied) == len(callers) * (len(GOVERNANCE_READS) + 1)
    assert [g["id"] for g in world.get("/governance/break-glass", officer(world))
            .json()["grants"]] == [grant]


def test_governance_reads_are_audited(world: World) -> None:
    point = world.api.app.state.enforcement  # type: ignore[attr-defined]
    headers = officer(world)
    for url in GOVERNANCE_READS:
        before = point.audit.head()[0]
        assert world.get(url, headers).status_code == 200, url
        after = point.audit.entries()[before:]
        assert after, f"{url} was not audited"
        line = access_line(after[-1])
        assert line.role == "governance_officer" and line.purpose == "HCOMPL", url
        assert line.decision == "permit"
        if "C000" in url:
            assert line.client_id == C1, url
    # The audit log is never written through the resource API.
    writer = world.token(role="governance_officer", scope="system/*.cruds", org=COUNCIL,
                         purpose="HCOMPL")
    event = _events(_fhir(world.get(f"/fhir/Patient/{C1}/$audit-trail", headers)))[0]
    for method, url in (("POST", "/fhir/AuditEvent"), ("PUT", f"/fhir/AuditEvent/{event['id']}"),
                        ("DELETE", f"/fhir/AuditEvent/{event['id']}")):
        response = world.api.request(method, url, json=event, headers={
            **writer, "Content-Type": "application/fhir+json"})
        assert response.status_code in (404, 405), (method, response.text)
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": event, "request": {"method": "POST", "url": "AuditEvent"}}]}
    stored = world.api.post("/fhir", json=bundle, headers={
        **writer, "Content-Type": "application/fhir+json"})
    assert stored.status_code in (403, 422), stored.text


def test_capability_statement_lists_the_fhir_ones(world: World) -> None:
    statement = _fhir(world.get("/fhir/metadata", {}))
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert [i["code"] for i in resources["AuditEvent"]["interaction"]] == ["search-type"]
    assert [p["name"] for p in resources["AuditEvent"]["searchParam"]] == ["patient"]
    consent = resources["Consent"]
    assert {i["code"] for i in consent["interaction"]} >= {"create", "search-type", "read"}
    assert [p["name"] for p in consent["searchParam"]] == ["patient"]
    operations = [o["name"] for o in resources["Patient"]["operation"]]
    assert operations == ["everything", "audit-trail"]
