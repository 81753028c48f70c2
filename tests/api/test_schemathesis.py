"""schemathesis against the app's own OpenAPI document: every operation, a bounded number of
generated requests each, valid ones and invalid ones, authenticated as a partner system with
a broad scope, over the committed sample (ingested, not linked). Not one may answer 5xx.

The operations are driven with `APIOperation.as_strategy` under Hypothesis's `@given`
(schemathesis's `from_fixture` lazy loader does not run under pytest 9), so one test per
backend loops over them and reports every server error it saw, not just the first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from api_support import BASE, bearer
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from sample_store import BACKENDS, backend_database, load_sample, register_partner

from unified_record.api import create_app
from unified_record.config import Settings
from unified_record.store import migrate

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 12  # per operation and mode: about 20 s per backend in all
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


@pytest.fixture(scope="module", params=BACKENDS)
def schema_and_headers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                       ) -> Iterator[tuple[Any, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("schemathesis")
    with backend_database(request.param, folder) as url:
        migrate(url)
        config = Settings(database_url=url, data_dir=folder / "var", public_url=BASE)
        load_sample(config, link=False)
        partner = register_partner(config, "system/*.cruds")
        app = create_app(config)
        with TestClient(app, base_url=BASE) as http:
            token = http.post("/oauth/token", data=partner.token_form(f"{BASE}/oauth/token"))
            assert token.status_code == 200, token.text
            headers = bearer(token.json()["access_token"])
            yield schemathesis.openapi.from_asgi("/openapi.json", app), headers


def _path_variants(path: str) -> list[dict[str, str] | None]:
    """Generated path values alone mostly name types not served here (404); fixing the type
    to ones that hold data lets the ids, versions and query parameters go deeper."""
    if "{resource_type}" not in path:
        return [None]
    return [None, {"resource_type": "Patient"}, {"resource_type": "Encounter"}]


def test_no_server_errors(schema_and_headers: tuple[Any, dict[str, str]]) -> None:
    schema, headers = schema_and_headers
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"GET /fhir/metadata", "GET /fhir/{resource_type}", "POST /fhir",
            "GET /fhir/Patient/{client_id}/$everything", "POST /oauth/token"} <= labels
    server_errors: list[str] = []
    calls: list[int] = []

    for operation, fixed, mode in [(op, fixed, mode) for op in operations
                                   for fixed in _path_variants(op.path) for mode in MODES]:
        @given(case=operation.as_strategy(mode, path_parameters=fixed))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def exercise(case: Any) -> None:
            response = case.call(headers=headers)
            calls.append(response.status_code)
            if response.status_code >= 500:
                server_errors.append(f"{response.status_code} {case.method} "
                                     f"{case.formatted_path} query={case.query} "
                                     f"body={str(case.body)[:200]}")

        try:
            exercise()
        except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
            assert mode is schemathesis.GenerationMode.NEGATIVE

    assert len(calls) >= len(operations) * 2
    assert any(400 <= status < 500 for status in calls)  # invalid input was tried
    assert any(status < 300 for status in calls)  # and valid input got through
    assert server_errors == []


def test_openapi_lists_the_fhir_routes_with_examples(api: TestClient) -> None:
    doc = api.get("/openapi.json").json()
    fhir = {(method.upper(), path): op for path, ops in doc["paths"].items()
            for method, op in ops.items() if path.startswith("/fhir")}
    for route in [("GET", "/fhir/metadata"), ("POST", "/fhir"),
                  ("GET", "/fhir/{resource_type}"),
                  ("GET", "/fhir/{resource_type}/{resource_id}"),
                  ("GET", "/fhir/{resource_type}/{resource_id}/_history"),
                  ("GET", "/fhir/{resource_type}/{resource_id}/_history/{version_id}"),
                  ("GET", "/fhir/Patient/{client_id}/$everything")]:
        example = fhir[route]["responses"]["200"]["content"]["application/fhir+json"]["example"]
        assert example["resourceType"] in ("Bundle", "Patient", "CapabilityStatement")
    search = fhir[("GET", "/fhir/{resource_type}")]
    params = {p["name"]: p for p in search["parameters"]}
    assert params["identifier"]["example"].startswith("https://fhir.nhs.uk/Id/nhs-number|")
    assert {"_count", "_page", "birthdate", "patient", "view"} <= set(params)
    outcome = search["responses"]["400"]["content"]["application/fhir+json"]["example"]
    assert outcome["resourceType"] == "OperationOutcome"
    body = fhir[("POST", "/fhir")]["requestBody"]["content"]["application/fhir+json"]
    assert body["example"]["type"] == "transaction"
    assert {"413", "415", "422"} <= set(fhir[("POST", "/fhir")]["responses"])
    assert api.get("/docs").status_code == 200
