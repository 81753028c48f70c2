"""Bad input over real HTTP: every malformed, oversized, unknown or hostile request gets a 4xx
OperationOutcome (OAuth JSON at the token endpoint), nothing crashes, nothing is stored.

The store holds the committed sample (ingested, not linked: `view=source` searches see it),
so a search that an injected `OR 1=1` would widen has something to find. A name with an
apostrophe is a legitimate value (O'Brien), so SQL-looking *names* are valid searches that
must match nothing; values that cannot be what they claim (ids, dates, counts, genders,
cursors) are refused with 400.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa
from api_support import bearer
from sample_store import (
    BACKENDS,
    backend_database,
    load_sample,
    register_partner,
)
from serving_support import free_socket, serving

from unified_record.api import create_app
from unified_record.config import ConfigError, Settings, load_settings
from unified_record.store import migrate

pytestmark = pytest.mark.slow

LIMIT = 64 * 1024
FHIR_JSON = "application/fhir+json"
STORED_TABLES = ("inbound_message", "resource", "resource_version", "search_index")


@dataclass
class Served:
    http: httpx2.Client
    settings: Settings
    headers: dict[str, str]

    def counts(self) -> dict[str, int]:
        engine = sa.create_engine(self.settings.database_url)
        try:
            with engine.connect() as conn:
                return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                        for t in STORED_TABLES}
        finally:
            engine.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("bad-input")
    with backend_database(request.param, folder) as url:
        migrate(url)
        sock, base = free_socket()
        settings = Settings(database_url=url, data_dir=folder / "var", public_url=base,
                            max_body_bytes=LIMIT)
        load_sample(settings, link=False)
        partner = register_partner(settings, "system/*.cruds")
        with serving(create_app(settings), sock), \
                httpx2.Client(base_url=base, timeout=30) as http:
            token = http.post("/oauth/token", data=partner.token_form(f"{base}/oauth/token"))
            assert token.status_code == 200, token.text
            yield Served(http, settings, bearer(token.json()["access_token"]))


@pytest.fixture(autouse=True)
def no_unhandled_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The catch-all logs every exception it had to stop: there must be none."""
    with caplog.at_level(logging.ERROR, logger="unified_record.api.errors"):
        yield
    assert not [r for r in caplog.records if r.name == "unified_record.api.errors"]


def outcome(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "error" and body["issue"][0]["diagnostics"]
    return body


BAD_REQUESTS = [
    # unknown or unsupported parameters, modifiers and resource types
    ("/fhir/Patient", {"favourite-colour": "blue"}, 400),
    ("/fhir/Patient", {"family:contains": "Sm"}, 400),
    ("/fhir/Patient", {"_include": "Encounter:subject"}, 400),
    ("/fhir/Encounter", {"family": "Smith"}, 400),
    ("/fhir/Nope", {}, 404),
    ("/fhir/Nope/1", {}, 404),
    ("/fhir/Provenance", {"_id": "1"}, 404),
    ("/fhir/AuditEvent", {"_id": "1"}, 400),  # only ?patient= (governance officers)
    ("/fhir/Patient/x/$nope", {}, 404),
    # invalid dates
    ("/fhir/Patient", {"birthdate": "2001-13-45"}, 400),
    ("/fhir/Patient", {"birthdate": "yesterday"}, 400),
    ("/fhir/Patient", {"birthdate": "9999-12-31"}, 400),
    ("/fhir/Patient", {"birthdate": "ge"}, 400),
    ("/fhir/Patient", {"birthdate": "2001-01-01T10:00:00+99:99"}, 400),
    ("/fhir/Encounter", {"date": "gt"}, 400),
    ("/fhir/Encounter", {"date": "2024-02-30"}, 400),
    # counts, sorts, cursors
    ("/fhir/Patient", {"_count": "-1"}, 400),
    ("/fhir/Patient", {"_count": "ten"}, 400),
    ("/fhir/Patient", {"_count": "1; DROP TABLE resource"}, 400),
    ("/fhir/Patient", {"_count": "\u00b9"}, 400),  # a superscript one: a digit, not a number
    ("/fhir/Patient", {"_sort": "password"}, 400),
    ("/fhir/Patient", {"_summary": "true"}, 400),
    ("/fhir/Patient", {"_page": "not-a-cursor"}, 400),
    ("/fhir/Patient", {"_page": "WzFd", "view": "source"}, 400),  # [1]: not our cursor
    # values that cannot be what they claim
    ("/fhir/Patient", {"gender": "' OR 1=1 --"}, 400),
    ("/fhir/Patient", {"view": "everything"}, 400),
    ("/fhir/Patient", {"_id": "\x00"}, 400),
    ("/fhir/Patient", {"identifier": "a\x00b"}, 400),
    ("/fhir/Patient", {"family": ""}, 400),
    ("/fhir/Patient/%00", {}, 400),
    ("/fhir/Patient/1' OR '1'='1", {}, 400),
    ("/fhir/Patient/" + "x" * 65, {}, 400),
    ("/fhir/Patient/%00/$everything", {}, 400),
    ("/fhir/Encounter/1;DROP/_history", {}, 400),
    ("/fhir/Encounter/abc/_history/one", {}, 404),
    ("/fhir/Encounter/abc/_history/\u00b9", {}, 404),  # found by schemathesis: was a 500
]


@pytest.mark.parametrize(("path", "params", "status"), BAD_REQUESTS,
                         ids=[f"{p} {q}" for p, q, _ in BAD_REQUESTS])
def test_bad_requests_get_an_operation_outcome(served: Served, path: str,
                                               params: dict[str, str], status: int) -> None:
    before = served.counts()
    outcome(served.http.get(path, params=params, headers=served.headers), status)
    assert served.counts() == before


SQL_LOOKING = ["' OR 1=1 --", "x'; DROP TABLE resource; --", '" OR ""="',
               "1 UNION SELECT value_hash FROM search_index", "%' OR '%'='", "O'Brien"]


@pytest.mark.parametrize("param", ["family", "given", "name", "identifier",
                                   "address-postalcode", "_id"])
def test_sql_looking_values_match_nothing(served: Served, param: str) -> None:
    every = served.http.get("/fhir/Patient", params={"view": "source", "_summary": "count"},
                            headers=served.headers).json()
    assert every["total"] > 100  # the sample is there: an `OR 1=1` would find it
    before = served.counts()
    for value in SQL_LOOKING:
        response = served.http.get("/fhir/Patient", params={param: value, "view": "source"},
                                   headers=served.headers)
        assert response.status_code == 200, response.text
        assert response.json()["total"] == 0, (param, value)
        clinical = served.http.get("/fhir/Encounter", params={"patient": value},
                                   headers=served.headers)
        assert clinical.status_code == 200 and clinical.json()["total"] == 0
    assert served.counts() == before
    again = served.http.get("/fhir/Patient", params={"view": "source", "_summary": "count"},
                            headers=served.headers).json()
    assert again["total"] == every["total"]


def test_huge_count_is_capped(served: Served) -> None:
    page = served.http.get("/fhir/Patient", params={"view": "source", "_count": "10" * 12},
                           headers=served.headers)
    assert page.status_code == 200
    body = page.json()
    entries = [e for e in body["entry"] if e["search"]["mode"] == "match"]
    assert body["total"] > 200 and len(entries) == 200  # MAX_COUNT
    assert [link["relation"] for link in body["link"]] == ["self", "next"]
    none = served.http.get("/fhir/Patient", params={"view": "source", "_count": "0"},
                           headers=served.headers).json()
    assert none["total"] == body["total"] and not none.get("entry")


def _post(served: Served, body: bytes | Iterator[bytes], content_type: str | None = FHIR_JSON,
          path: str = "/fhir") -> httpx2.Response:
    headers = dict(served.headers)
    if content_type:
        headers["Content-Type"] = content_type
    return served.http.post(path, content=body, headers=headers)


def _bundle(n: int = 1) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
         "resource": {"resourceType": "Patient", "gender": "female",
                      "name": [{"family": "Bundleton", "given": ["Ada"]}]},
         "request": {"method": "POST", "url": "Patient"}} for i in range(n)]}


def test_oversized_bodies_are_refused_before_reading(served: Served) -> None:
    before = served.counts()
    big = json.dumps(_bundle(LIMIT // 100)).encode()
    assert len(big) > LIMIT
    body = outcome(_post(served, big), 413)
    assert body["issue"][0]["code"] == "too-costly"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]

    outcome(_post(served, chunks()), 413)
    token = served.http.post("/oauth/token", content=b"a=" + b"b" * LIMIT,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert token.status_code == 413 and token.json()["error"] == "invalid_request"
    assert served.counts() == before
    assert served.http.get("/fhir/metadata").status_code == 200


# JSON that is not a resource at all: 400 (malformed) or 422 (not a Bundle) are both fair.
NOT_A_BUNDLE = (400, 422)
BAD_BODIES = [
    ("malformed JSON", b'{"resourceType": "Bundle", "type": ', FHIR_JSON, (400,)),
    ("not UTF-8", b'{"resourceType": "Bundle\xff\xfe"}', FHIR_JSON, (400,)),
    ("empty", b"", FHIR_JSON, (400,)),
    ("deeply nested", b'{"a":' * 5000 + b"1" + b"}" * 5000, FHIR_JSON, (400,)),
    ("a JSON array", b"[]", FHIR_JSON, NOT_A_BUNDLE),
    ("a JSON string", b'"Bundle"', FHIR_JSON, NOT_A_BUNDLE),
    ("a Patient", b'{"resourceType": "Patient"}', FHIR_JSON, NOT_A_BUNDLE),
    ("a collection", json.dumps({**_bundle(), "type": "collection"}).encode(), FHIR_JSON,
     NOT_A_BUNDLE),
    ("entries not a list", b'{"resourceType": "Bundle", "type": "batch", "entry": {}}',
     FHIR_JSON, NOT_A_BUNDLE),
    ("text/plain", json.dumps(_bundle()).encode(), "text/plain", (415,)),
    ("XML", b"<Bundle xmlns='http://hl7.org/fhir'/>", "application/fhir+xml", (415,)),
    ("a form", b"resourceType=Bundle", "application/x-www-form-urlencoded", (415,)),
    ("no content type", json.dumps(_bundle()).encode(), None, (415,)),
]


@pytest.mark.parametrize(("body", "content_type", "statuses"),
                         [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_malformed_bodies_and_wrong_content_types(served: Served, body: bytes,
                                                  content_type: str | None,
                                                  statuses: tuple[int, ...]) -> None:
    before = served.counts()
    response = _post(served, body, content_type)
    assert response.status_code in statuses, (response.status_code, response.text)
    outcome(response, response.status_code)
    assert served.counts() == before


def test_bundles_whose_entries_cannot_be_stored(served: Served) -> None:
    """Well-formed transactions the pipeline refuses: nothing of them becomes a resource.
    (The raw Bundle itself is kept as a quarantined inbound message, encrypted, for review
    and replay: that is the pipeline's rule for every feed.)"""
    before = served.counts()
    unknown = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Spaceship", "id": "x"},
         "request": {"method": "POST", "url": "Spaceship"}}]}
    invalid = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:6f1c5e0a-1111-4000-8000-000000000001",
         "resource": {"resourceType": "Patient", "gender": "robot", "birthDate": "yesterday"},
         "request": {"method": "POST", "url": "Patient"}}]}
    for body in (unknown, invalid):
        response = _post(served, json.dumps(body).encode())
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["resourceType"] == "OperationOutcome"
    after = served.counts()
    assert {t: after[t] for t in STORED_TABLES if t != "inbound_message"} == {
        t: before[t] for t in STORED_TABLES if t != "inbound_message"}


def test_methods_that_are_not_served(served: Served) -> None:
    before = served.counts()
    body = json.dumps({"resourceType": "Patient"}).encode()
    outcome(_post(served, body, path="/fhir/Patient/abc"), 405)
    outcome(served.http.put("/fhir/Patient/abc", content=body,
                            headers={**served.headers, "Content-Type": FHIR_JSON}), 405)
    outcome(served.http.delete("/fhir/Patient/abc", headers=served.headers), 405)
    outcome(served.http.get("/fhir/Patient/abc/_history/1/extra", headers=served.headers), 404)
    assert served.counts() == before


def test_body_limit_comes_from_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_body_bytes == 4 * 1024 * 1024
    monkeypatch.setenv("UR_MAX_BODY_BYTES", "2048")
    assert load_settings().max_body_bytes == 2048
    monkeypatch.setenv("UR_MAX_BODY_BYTES", "10")
    with pytest.raises(ConfigError, match="UR_MAX_BODY_BYTES"):
        load_settings()
