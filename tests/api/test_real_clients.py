"""Interoperability with FHIR clients nobody here wrote, used unchanged, over real HTTP.

uvicorn serves the committed sample (ingested and linked) on a loopback port; two libraries
drive it the way a partner system would:

* `fhirpy` (async, aiohttp): it has no OAuth support of its own, so the test fetches the
  token with a plain form POST of a signed JWT assertion (SMART Backend Services) and hands
  it to the client as its `authorization` header.
* `fhirclient` (the SMART on FHIR Python client): its own Backend Services mechanism. It
  reads the CapabilityStatement, finds the token endpoint in the SMART `oauth-uris`
  extension, and posts `client_credentials` with the `jwt_token` (the signed assertion)
  we give it in its settings.

Each reads the CapabilityStatement, searches Patient by NHS number, follows `next` links to
the end of a 400+ client search (no skips, no repeats), fetches `Patient/{id}/$everything`
and posts a transaction Bundle.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from fhirclient import client as smart_client
from fhirclient.models.bundle import Bundle as SmartBundle
from fhirclient.models.capabilitystatement import CapabilityStatement as SmartCapability
from fhirclient.models.patient import Patient as SmartPatient
from fhirpy import AsyncFHIRClient
from sample_store import (
    BACKENDS,
    Partner,
    backend_database,
    load_sample,
    register_partner,
)
from serving_support import free_socket, serving

from unified_record.api import create_app
from unified_record.config import Settings
from unified_record.fhir.nhs_number import is_valid_nhs_number
from unified_record.store import migrate

pytestmark = pytest.mark.slow

NHS = "https://fhir.nhs.uk/Id/nhs-number"
FEED_TAG = "https://unified-record.example/CodeSystem/source-feed"
SCOPE = "system/*.rs system/Patient.c"


@dataclass
class Sample:
    base: str  # the server's address; its FHIR base is {base}/fhir
    index: dict[str, str]  # source Patient id -> client id
    partner: Partner

    @property
    def fhir_base(self) -> str:
        return f"{self.base}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.base}/oauth/token"

    def plain_token(self) -> str:
        """What a client without OAuth support does: POST a signed assertion, keep the token."""
        response = httpx2.post(self.token_url, data=self.partner.token_form(self.token_url),
                               timeout=30)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def clients_by_size(self) -> list[tuple[str, list[str]]]:
        sizes = Counter(self.index.values())
        ordered = sorted(sizes, key=lambda c: (-sizes[c], c))
        return [(c, sorted(u for u, k in self.index.items() if k == c)) for c in ordered]


@pytest.fixture(scope="module", params=BACKENDS)
def sample(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sample]:
    folder = tmp_path_factory.mktemp("real-clients")
    with backend_database(request.param, folder) as url:
        migrate(url)
        sock, base = free_socket()
        settings = Settings(database_url=url, data_dir=folder / "var", public_url=base)
        index = load_sample(settings, link=True)
        partner = register_partner(settings, SCOPE, role="partner_system")
        with serving(create_app(settings), sock):
            yield Sample(base, index, partner)


def _nhs_number(patient: dict[str, Any]) -> str | None:
    return next((i["value"] for i in patient.get("identifier") or []
                 if i.get("system") == NHS), None)


def _new_patient_bundle(family: str, nhs_number: str) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": {
            "resourceType": "Patient",
            "identifier": [{"system": NHS, "value": nhs_number}],
            "name": [{"use": "official", "family": family, "given": ["Ada"]}],
            "gender": "female", "birthDate": "1961-07-14",
            "address": [{"line": ["1 Test Street"], "city": "Leeds", "postalCode": "LS1 4AP"}],
        },
        "request": {"method": "POST", "url": "Patient"}}]}


def _unused_nhs_number(taken: set[str], seed: int) -> str:
    """A valid NHS number (check digit right) outside the sample's 999 range."""
    for stem in range(900_000_000 + seed * 1000, 900_000_000 + seed * 1000 + 1000):
        for check in range(10):
            candidate = f"{stem}{check}"
            if candidate not in taken and is_valid_nhs_number(candidate):
                return candidate
    raise AssertionError("no free NHS number")


def _check_transaction_response(response: dict[str, Any]) -> str:
    assert response["resourceType"] == "Bundle"
    assert response["type"] == "transaction-response"
    (entry,) = response["entry"]
    assert entry["response"]["status"].startswith("201")
    location: str = entry["response"]["location"]
    assert location.startswith("Patient/") and "/_history/1" in location
    return location.split("/_history/")[0]


# -- fhirpy (async) ----------------------------------------------------------------------------


async def _fhirpy_flow(sample: Sample) -> None:
    client = AsyncFHIRClient(sample.fhir_base, authorization=f"Bearer {sample.plain_token()}")

    statement = await client.execute("metadata", method="get")
    assert statement["resourceType"] == "CapabilityStatement"
    patient_caps = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert "identifier" in {p["name"] for p in patient_caps["searchParam"]}

    # A unified client that has an NHS number, read as fhirpy reads a reference.
    for client_id, members in sample.clients_by_size():
        golden = await client.reference("Patient", client_id).to_resource()
        nhs_number = _nhs_number(golden.serialize())
        if nhs_number and len(members) >= 2:
            break
    else:
        raise AssertionError("no linked client with an NHS number")
    found = await client.resources("Patient").search(
        identifier=f"{NHS}|{nhs_number}").fetch_all()
    assert [p.id for p in found] == [client_id]
    assert sorted(link["other"]["reference"] for link in found[0]["link"]) == [
        f"Patient/{m}" for m in members]

    # Paging to the end: fhirpy follows each `next` link until there is none.
    search = client.resources("Patient").search(birthdate="ge1900").sort("-birthdate")
    first_page = await search.limit(100).fetch_raw()
    total = first_page["total"]
    assert total == len(set(sample.index.values())) > 200
    everyone = await search.limit(100).fetch_all()
    ids = [p.id for p in everyone]
    assert len(ids) == len(set(ids)) == total
    assert ids[:100] == [e["resource"]["id"] for e in first_page["entry"]
                        if e["search"]["mode"] == "match"]
    dates = [p["birthDate"] for p in everyone]
    assert dates == sorted(dates, reverse=True)

    everything = await client.reference("Patient", client_id).execute("$everything",
                                                                      method="get")
    assert everything["resourceType"] == "Bundle"
    resources = [e["resource"] for e in everything["entry"]
                 if e["resource"]["resourceType"] != "OperationOutcome"]
    assert resources[0]["id"] == client_id
    assert {r["id"] for r in resources if r["resourceType"] == "Patient"} >= set(members)
    for resource in resources[1:]:
        assert {t["system"] for t in resource["meta"]["tag"]} >= {FEED_TAG}
        assert resource["meta"]["source"].startswith("urn:x-unified-record:org:")

    new_number = _unused_nhs_number({nhs_number}, seed=1)
    response = await client.execute(sample.fhir_base, method="post",
                                    data=_new_patient_bundle("Fhirpyson", new_number))
    created = _check_transaction_response(response)
    stored = await client.get("Patient", created.removeprefix("Patient/"))
    assert stored["name"][0]["family"] == "Fhirpyson"
    by_number = await client.resources("Patient").search(
        identifier=f"{NHS}|{new_number}", view="source").fetch_all()
    assert [p.id for p in by_number] == [created.removeprefix("Patient/")]


def test_fhirpy_async_client(sample: Sample) -> None:
    asyncio.run(_fhirpy_flow(sample))


# -- fhirclient (SMART) ------------------------------------------------------------------------


def test_fhirclient_smart_backend_services(sample: Sample) -> None:
    smart = smart_client.FHIRClient(settings={
        "app_id": sample.partner.client_id,
        "api_base": sample.fhir_base,
        "scope": SCOPE,
        "jwt_token": sample.partner.assertion(sample.token_url),
    })
    # Reads the CapabilityStatement into its R4 models (strict: an element they do not
    # know would raise) and picks OAuth2 from the SMART extension there.
    assert smart.prepare() is False
    statement = smart.server.capabilityStatement
    assert isinstance(statement, SmartCapability) and statement.fhirVersion == "4.0.1"
    assert smart.server.auth.auth_type == "oauth2"
    smart.authorize()  # client_credentials with our signed assertion
    assert smart.ready
    server = smart.server

    for client_id, members in sample.clients_by_size():
        golden = SmartPatient.read(client_id, server)  # parsed into fhirclient's R4 model
        nhs_number = _nhs_number(golden.as_json())
        if nhs_number and len(members) >= 2:
            break
    else:
        raise AssertionError("no linked client with an NHS number")
    found = [r for r in SmartPatient.where(struct={"identifier": f"{NHS}|{nhs_number}"})
             .perform_resources_iter(server) if r.resource_type == "Patient"]
    assert [p.id for p in found] == [client_id]
    assert sorted(link.other.reference for link in found[0].link) == [
        f"Patient/{m}" for m in members]

    # Paging: fhirclient's iterator follows `next` links (absolute URLs) to the end.
    search = SmartPatient.where(struct={"birthdate": "ge1900", "_sort": "birthdate",
                                        "_count": "120"})
    pages = list(search.perform_iter(server))
    total = pages[0].total
    ids = [e.resource.id for page in pages for e in page.entry or []
           if e.search and e.search.mode == "match"]
    assert total == len(set(sample.index.values())) > 200
    assert len(ids) == len(set(ids)) == total and len(pages) == -(-total // 120)
    assert all(page.total == total for page in pages)

    everything = SmartBundle(server.request_json(f"Patient/{client_id}/$everything"))
    resources = [e.resource for e in everything.entry
                 if e.resource.resource_type != "OperationOutcome"]
    assert resources[0].id == client_id
    assert {r.id for r in resources if r.resource_type == "Patient"} >= set(members)
    assert all(r.meta.source and any(t.system == FEED_TAG for t in r.meta.tag)
               for r in resources[1:])

    new_number = _unused_nhs_number({nhs_number}, seed=2)
    transaction = SmartBundle(_new_patient_bundle("Smartson", new_number))
    response = transaction.create(server)  # a transaction Bundle goes to the base URL
    created = _check_transaction_response(response)
    stored = SmartPatient.read(created.removeprefix("Patient/"), server)
    assert stored.name[0].family == "Smartson"
