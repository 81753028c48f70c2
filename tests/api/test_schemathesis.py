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


def test_no_server_errors(schema_and_headers: tuple[Any, dict[str, str]]) -> None:
    schema, headers = schema_and_headers
    operations = [result.ok() for result in schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"GET /fhir/metadata", "GET /fhir/{resource_type}", "POST /fhir",
            "GET /fhir/Patient/{client_id}/$everything", "POST /oauth/token"} <= labels
    server_errors: list[str] = []
    calls: list[int] = []

    for operation in operations:
        for mode in MODES:
            @given(case=operation.as_strategy(mode))
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
