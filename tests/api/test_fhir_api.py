"""The FHIR REST API over the linked sample: read, vread, history, search (Patient as unified
clients or source records, clinical types by patient/date/code/status), paging, includes,
$everything with provenance, and consent filtering before paging and totals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from api_support import BASE, assertion, bearer, es384_key, public_jwks, token_form
from fastapi.testclient import TestClient

from unified_record.api import create_app
from unified_record.config import Settings
from unified_record.ingest import Pipeline
from unified_record.linkage.index import current_clusters, run_full_linkage
from unified_record.security import load_or_create_keys
from unified_record.store import OAuthClientRepository, make_engine, make_session_factory
from unified_record.store.models import ResourceRow

REPO = Path(__file__).resolve().parents[2]
SAMPLE, MAPPINGS = REPO / "synthetic_data" / "sample", REPO / "mappings"
ALL_READ = "system/*.rs"

pytestmark = pytest.mark.slow


@dataclass
class Linked:
    api: TestClient
    settings: Settings
    index: dict[str, str]  # source Patient id -> client id
    clients: OAuthClientRepository

    def token(self, role: str = "partner_system", scope: str = ALL_READ,
              org: str = "A81001", purpose: str | None = "TREAT") -> dict[str, str]:
        key = es384_key()
        client = self.clients.add(name=f"test {role}", organisation=org, role=role,
                                  scopes=scope, jwks=public_jwks(key), purpose_of_use=purpose)
        response = self.api.post("/oauth/token",
                                 data=token_form(assertion(key, client.client_id), scope))
        assert response.status_code == 200, response.text
        return bearer(response.json()["access_token"])

    def get(self, url: str, headers: dict[str, str], status: int = 200) -> dict[str, Any]:
        response = self.api.get(url, headers=headers)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/fhir+json")
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def linked(tmp_path: Path, database_url: str) -> Iterator[Linked]:
    settings = Settings(database_url=database_url, data_dir=tmp_path / "var", public_url=BASE)
    keyring, blind_index = load_or_create_keys(settings)
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, workers=1) as pipeline:
        pipeline.ingest_dataset(SAMPLE)
        run_full_linkage(pipeline.sessions, keyring, blind_index,
                         model_path=settings.data_dir / "linkage-model.json")
        with pipeline.sessions() as session:
            index = current_clusters(session)
        pipeline.engine.dispose()
    engine = make_engine(database_url)
    with TestClient(create_app(settings), base_url=BASE) as api:
        yield Linked(api, settings, index, OAuthClientRepository(make_session_factory(engine)))
    engine.dispose()


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") == mode]


def _big_client(linked: Linked) -> tuple[str, list[str]]:
    sizes = Counter(linked.index.values())
    client = min(c for c, n in sizes.items() if n >= 3)
    return client, sorted(uid for uid, c in linked.index.items() if c == client)


def _searchable_client(linked: Linked, headers: dict[str, str]
                       ) -> tuple[str, list[str], dict[str, Any]]:
    """A client of three or more records whose golden Patient has a family name, a birth
    date and a postcode to search by (client ids are random, and some clients' records
    carry no birth date)."""
    sizes = Counter(linked.index.values())
    for client in sorted(c for c, n in sizes.items() if n >= 3):
        golden = linked.get(f"/fhir/Patient/{client}", headers)
        if golden.get("birthDate") and (golden.get("name") or [{}])[0].get("family") \
                and (golden.get("address") or [{}])[0].get("postalCode"):
            members = sorted(uid for uid, c in linked.index.items() if c == client)
            return client, members, golden
    raise AssertionError("the sample has no client of three records with those details")


def test_read_vread_history_and_unknowns(linked: Linked) -> None:
    headers = linked.token()
    client, members = _big_client(linked)
    golden = linked.get(f"/fhir/Patient/{client}", headers)
    assert golden["id"] == client
    assert sorted(link["other"]["reference"] for link in golden["link"]) == [
        f"Patient/{m}" for m in members]

    source = linked.get(f"/fhir/Patient/{members[0]}", headers)
    version = int(source["meta"]["versionId"])  # later messages may have updated it
    assert source["id"] == members[0] and version >= 1
    first = linked.get(f"/fhir/Patient/{members[0]}/_history/1", headers)
    assert first["id"] == members[0] and first["meta"]["versionId"] == "1"
    history = linked.get(f"/fhir/Patient/{members[0]}/_history", headers)
    assert history["type"] == "history" and history["total"] == version
    assert history["entry"][0]["resource"]["meta"]["versionId"] == str(version)

    missing = linked.get("/fhir/Patient/no-such-id", headers, 404)
    assert missing["resourceType"] == "OperationOutcome"
    linked.get(f"/fhir/Patient/{members[0]}/_history/{version + 1}", headers, 404)
    linked.get("/fhir/Patient", {}, 401)
    narrow = linked.token(scope="system/Observation.rs")
    assert linked.get("/fhir/Patient", narrow, 403)["issue"][0]["code"] == "forbidden"

    statement = linked.get("/fhir/metadata", {})
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert {p["name"] for p in patient["searchParam"]} >= {"family", "birthdate", "view"}
    assert patient["operation"][0]["name"] == "everything"


def test_patient_search_returns_unified_clients(linked: Linked) -> None:
    headers = linked.token()
    client, members, golden = _searchable_client(linked, headers)
    family, birth = golden["name"][0]["family"], golden["birthDate"]

    found = linked.get(f"/fhir/Patient?family={family.upper()}&birthdate={birth}", headers)
    assert client in _ids(found) and found["total"] == len(_ids(found))
    assert all(e["resource"]["identifier"][0]["value"] == e["resource"]["id"]
               for e in found["entry"])
    sources = linked.get(f"/fhir/Patient?family={family}&birthdate={birth}&view=source",
                         headers)
    assert set(members) & set(_ids(sources))

    nhs = next((i["value"] for i in golden["identifier"]
                if i["system"] == "https://fhir.nhs.uk/Id/nhs-number"), None)
    if nhs:
        by_nhs = linked.get(f"/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{nhs}",
                            headers)
        assert _ids(by_nhs) == [client]
    year = birth[:4]
    in_year = linked.get(f"/fhir/Patient?birthdate=ge{year}-01-01&birthdate=lt"
                         f"{int(year) + 1}&_count=200", headers)
    assert client in _ids(in_year)
    assert all(e["resource"]["birthDate"].startswith(year) for e in in_year["entry"])
    postcode = golden["address"][0]["postalCode"]
    assert client in _ids(linked.get(f"/fhir/Patient?address-postalcode="
                                     f"{postcode.replace(' ', '').lower()}", headers))
    other = "male" if golden["gender"] == "female" else "female"
    assert client not in _ids(linked.get(f"/fhir/Patient?family={family}&gender={other}",
                                         headers))
    count = linked.get(f"/fhir/Patient?family={family}&birthdate={birth}&_summary=count",
                       headers)
    assert count["total"] == found["total"] and "entry" not in count

    bad = linked.get("/fhir/Patient?favourite-colour=blue", headers, 400)
    assert "favourite-colour" in bad["issue"][0]["diagnostics"]
    linked.get("/fhir/Patient?birthdate=yesterday", headers, 400)
    linked.get("/fhir/Patient?family:contains=Sm", headers, 400)


def test_paging_is_stable_and_complete(linked: Linked) -> None:
    headers = linked.token()
    query = "/fhir/Patient?birthdate=ge1900&_sort=-birthdate"
    first = linked.get(f"{query}&_count=200", headers)
    total = first["total"]
    assert total == len(set(linked.index.values())) > 200  # every client has a birth date
    seen: list[str] = []
    dates: list[str] = []
    url: str | None = f"{query}&_count=100"
    pages = 0
    while url:
        page = linked.get(url, headers)
        assert page["total"] == total
        seen += _ids(page)
        dates += [e["resource"]["birthDate"] for e in page["entry"]
                  if e["search"]["mode"] == "match"]
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        url = None
        if following:
            parts = urlsplit(following[0])
            url = f"{parts.path}?{parts.query}"
        pages += 1
    assert len(seen) == len(set(seen)) == total and pages == -(-total // 100)
    assert seen[:200] == _ids(first)
    assert dates == sorted(dates, reverse=True)
    linked.get("/fhir/Patient?_page=not-a-cursor", headers, 400)


def _encounter_patient(linked: Linked, headers: dict[str, str]) -> tuple[str, str]:
    """A client and one of its source Patients that has Encounters."""
    engine = sa.create_engine(linked.settings.database_url)
    with engine.connect() as conn:
        encounters = conn.execute(sa.select(sa.func.count()).select_from(ResourceRow).where(
            ResourceRow.resource_type == "Encounter")).scalar_one()
    engine.dispose()
    assert encounters > 0
    for uid, client in sorted(linked.index.items()):
        bundle = linked.api.get(f"/fhir/Encounter?patient={uid}&_count=1",
                                headers=headers).json()
        if bundle["total"]:
            return client, uid
    raise AssertionError("no Patient with Encounters")


def test_clinical_search_includes_and_everything(linked: Linked) -> None:
    headers = linked.token()
    client, uid = _encounter_patient(linked, headers)
    mine = linked.get(f"/fhir/Encounter?patient={uid}&_count=200", headers)
    for_client = linked.get(f"/fhir/Encounter?patient=Patient/{client}&_count=200", headers)
    assert set(_ids(mine)) <= set(_ids(for_client))
    first = mine["entry"][0]["resource"]
    start = first["period"]["start"][:10]
    dated = linked.get(f"/fhir/Encounter?patient={uid}&date={start}&_count=200", headers)
    assert first["id"] in _ids(dated)
    later = linked.get(f"/fhir/Encounter?patient={uid}&date=gt{start}&_count=200", headers)
    assert first["id"] not in _ids(later)
    status = first["status"]
    assert first["id"] in _ids(linked.get(f"/fhir/Encounter?patient={uid}&status={status}",
                                          headers))
    included = linked.get(f"/fhir/Encounter?patient={uid}&_include=Encounter:subject",
                          headers)
    assert _ids(included, "include") == [uid]
    rev = linked.get(f"/fhir/Patient?_id={client}&_revinclude=Encounter:subject", headers)
    assert set(_ids(mine)) <= set(_ids(rev, "include"))

    everything = linked.get(f"/fhir/Patient/{client}/$everything", headers)
    entries = [e["resource"] for e in everything["entry"] if e["resource"]["resourceType"]
               != "OperationOutcome"]
    assert entries[0]["id"] == client
    members = sorted(u for u, c in linked.index.items() if c == client)
    assert {r["id"] for r in entries if r["resourceType"] == "Patient"} >= set(members)
    assert set(_ids(for_client)) <= {r["id"] for r in entries if r["resourceType"] ==
                                     "Encounter"}
    for resource in entries[1:]:
        tags = {t["system"]: t["code"] for t in resource["meta"]["tag"]}
        assert tags["https://unified-record.example/CodeSystem/source-feed"]
        assert resource["meta"]["source"].startswith("urn:x-unified-record:org:")
    linked.get("/fhir/Patient/no-such-client/$everything", headers, 404)


def test_consent_filters_before_paging_and_totals(linked: Linked) -> None:
    """A partner system never gets safeguarding content; the total counts only what it may
    see, and a warning says something was withheld without saying what."""
    partner = linked.token()
    social_worker = linked.token(role="social_worker", org="E08000035")
    flagged = None
    for client in sorted(set(linked.index.values())):
        worker_view = linked.get(f"/fhir/Flag?patient={client}&_count=200", social_worker)
        if worker_view["total"]:
            flagged = (client, worker_view)
            break
    assert flagged is not None, "the sample has safeguarding flags"
    client, worker_view = flagged
    partner_view = linked.get(f"/fhir/Flag?patient={client}&_count=200", partner)
    assert partner_view["total"] < worker_view["total"]
    assert partner_view["total"] == len(_ids(partner_view))
    warning = [e for e in partner_view["entry"] if e["search"]["mode"] == "outcome"]
    assert warning and warning[0]["resource"]["issue"][0]["severity"] == "warning"
    hidden = next(i for i in _ids(worker_view) if i not in _ids(partner_view))
    linked.get(f"/fhir/Flag/{hidden}", partner, 404)  # withheld looks like missing

    steward = linked.token(role="data_steward")
    demographics = linked.api.get(f"/fhir/Patient/{client}",
                                  headers={**steward, "X-Purpose-Of-Use": "RECORDMGT"})
    assert demographics.status_code == 200
    refused = linked.api.get(f"/fhir/Flag?patient={client}",
                             headers={**steward, "X-Purpose-Of-Use": "RECORDMGT"}).json()
    assert refused["total"] == 0
    wrong_purpose = linked.api.get(f"/fhir/Patient/{client}",
                                   headers={**steward, "X-Purpose-Of-Use": "TREAT"})
    assert wrong_purpose.status_code == 403

    # No purpose, neither registered nor sent, is no purpose: never taken as direct care.
    silent = linked.token(purpose=None)
    assert linked.api.get(f"/fhir/Patient/{client}", headers=silent).status_code == 403
    said = linked.api.get(f"/fhir/Patient/{client}",
                          headers={**silent, "X-Purpose-Of-Use": "TREAT"})
    assert said.status_code == 200


def _bundle(kind: str, patient: dict[str, Any], condition_code: str = "38341003"
            ) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [
        {"fullUrl": "urn:uuid:7f8c0a52-1111-4b7e-9c1e-000000000001", "resource": patient,
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:7f8c0a52-1111-4b7e-9c1e-000000000002",
         "resource": {"resourceType": "Condition",
                      "subject": {"reference": "urn:uuid:7f8c0a52-1111-4b7e-9c1e-000000000001"},
                      "code": {"coding": [{"system": "http://snomed.info/sct",
                                           "code": condition_code}]}},
         "request": {"method": "POST", "url": "Condition"}}]}


def test_partner_transaction_is_stored_matched_and_answered(linked: Linked) -> None:
    reader = linked.token()
    writer = linked.token(scope="system/*.cruds", org="RR8")
    client, _ = _big_client(linked)
    golden = linked.get(f"/fhir/Patient/{client}", reader)
    nhs = next(i for i in golden["identifier"]
               if i["system"] == "https://fhir.nhs.uk/Id/nhs-number")
    patient = {"resourceType": "Patient", "identifier": [{"system": nhs["system"],
                                                         "value": nhs["value"]}],
               "name": golden["name"], "birthDate": golden["birthDate"],
               "gender": golden["gender"], "address": golden.get("address", [])}
    bundle = _bundle("transaction", patient)
    headers = {**writer, "Content-Type": "application/fhir+json"}

    response = linked.api.post("/fhir", json=bundle, headers=headers)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    patient_location = answer["entry"][0]["response"]["location"]
    assert patient_location.startswith("Patient/") and patient_location.endswith("/_history/1")
    new_id = patient_location.split("/")[1]
    stored = linked.get(f"/fhir/Patient/{new_id}", reader)
    assert stored["birthDate"] == golden["birthDate"]
    condition = linked.get(f"/fhir/{answer['entry'][1]['response']['location']}", reader)
    assert condition["subject"]["reference"] == f"Patient/{new_id}"

    # Matched on arrival: it joined the client, whose $everything now has it, from RR8.
    everything = linked.get(f"/fhir/Patient/{client}/$everything", reader)
    mine = [e["resource"] for e in everything["entry"] if e["resource"]["id"] == new_id]
    assert mine and mine[0]["meta"]["source"].endswith(":RR8")

    again = linked.api.post("/fhir", json=bundle, headers=headers).json()
    assert [e["response"]["status"] for e in again["entry"]] == ["200 OK", "200 OK"]

    # A transaction with a bad entry stores nothing; a batch stores the good entries.
    broken = _bundle("transaction", {**patient, "birthDate": "not-a-date"})
    refused = linked.api.post("/fhir", json=broken, headers=headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"
    batch = _bundle("batch", {**patient, "id": "p-batch", "birthDate": "31/02/1990"})
    batch["entry"].append({"resource": {"resourceType": "Observation", "status": "final",
                                        "code": {"text": "pulse"}},
                           "request": {"method": "POST", "url": "Observation"}})
    answered = linked.api.post("/fhir", json=batch, headers=headers).json()
    assert answered.get("type") == "batch-response", answered
    codes = [e["response"]["status"][:3] for e in answered["entry"]]
    assert codes[0] == "400" and codes[2] == "201" and len(codes) == 3, codes

    assert linked.api.post("/fhir", json=bundle, headers={**reader, "Content-Type":
                           "application/fhir+json"}).status_code == 403
    assert linked.api.post("/fhir", content=b"{nope", headers=headers).status_code == 400
    assert linked.api.post("/fhir", content=b"<xml/>", headers={
        **writer, "Content-Type": "application/xml"}).status_code == 415


def test_a_consent_posted_by_governance_is_enforced_at_once(linked: Linked) -> None:
    from unified_record.consent.policy import load_policy
    from unified_record.consent.records import build_consent

    partner = linked.token()
    officer = {**linked.token(role="governance_officer", scope="system/Consent.cruds",
                              org="E08000035"), "X-Purpose-Of-Use": "HCOMPL"}
    headers = linked.token()
    client, _ = _encounter_patient(linked, headers)
    before = linked.get(f"/fhir/Encounter?patient={client}", partner)
    assert before["total"] > 0

    policy = load_policy(linked.settings.resolved_consent_dir)
    objection = build_consent(policy, client_id=client, effect="deny")
    created = linked.api.post("/fhir/Consent", json=objection,
                              headers={**officer, "Content-Type": "application/fhir+json"})
    assert created.status_code == 201, created.text
    assert created.headers["Location"].endswith("/_history/1")
    consent_id = created.json()["id"]

    after = linked.get(f"/fhir/Encounter?patient={client}", partner)
    assert after["total"] == 0
    assert any(e["search"]["mode"] == "outcome" for e in after["entry"])

    # Only governance roles record consents; a malformed one is a 422, nothing stored.
    writer = linked.token(scope="system/*.cruds")
    refused = linked.api.post("/fhir/Consent", json=objection,
                              headers={**writer, "Content-Type": "application/fhir+json"})
    assert refused.status_code == 403, refused.text
    broken = {**objection, "patient": {"reference": "Patient/no-such-client"}}
    bad = linked.api.post("/fhir/Consent", json=broken,
                          headers={**officer, "Content-Type": "application/fhir+json"})
    assert bad.status_code == 422, bad.text
    kept = linked.get(f"/fhir/Consent/{consent_id}", officer)
    assert kept["provision"]["type"] == "deny"


def test_every_answer_is_audited_and_none_is_sent_if_its_audit_entry_fails(
        linked: Linked) -> None:
    """Search, $everything and read each write their entries (with the request's own commit
    on PostgreSQL); once the log cannot be written, each fails closed with a 500
    OperationOutcome and no data."""
    partner = linked.token()
    client = sorted(set(linked.index.values()))[0]
    engine = make_engine(linked.settings.database_url)

    def entries() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar_one())

    requests = [f"/fhir/Patient?_id={client}", f"/fhir/Patient/{client}/$everything",
                f"/fhir/Patient/{client}"]
    for url in requests:
        before = entries()
        linked.get(url, partner)
        assert entries() > before, url
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_chain_head"))
    written = entries()
    for url in requests:
        refused = linked.get(url, partner, 500)
        assert refused["resourceType"] == "OperationOutcome"
        assert "audit log could not be written" in refused["issue"][0]["diagnostics"]
        assert client not in str(refused)
    assert entries() == written
    engine.dispose()
