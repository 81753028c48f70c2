"""Adversarial: a partner system tries to learn of a resource withheld from it by consent,
through every access path of issue 7 point 4, and must learn nothing.

Two worlds are served side by side, identical but for one thing: in `withheld` the
client's record holds the target (a Condition, or a source Patient, from RZ2, an
organisation the person objected to sharing from); in `missing` it does not exist at all.
Every request is sent to both and the answers compared whole: status, headers and body
(timestamps aside, since the worlds were built a moment apart). Any difference is an
oracle.

Both worlds hold one other withheld record (`cond-decoy`, also from RZ2). The answer that
"some data was withheld" (issue 7: an OperationOutcome warning, never saying what) is
about the client's record as a whole, so it is there in both worlds; without a decoy it
would say that this client has something withheld, which is what it is for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from api_world import World, condition, patient, serve_world
from consent_support import policy
from pg_support import pg_schema

from unified_record.consent.records import build_consent
from unified_record.fhir.validation import validate_resource
from unified_record.store import ResourceRepository

C1 = "C000000000001"
TARGET = "cond-target"
SECRET_CODE = "86406008"  # the target's code: HIV, say
SECRET_DATE = "2023-07-14"


def _build(w: World, with_target: bool, target_patient: bool) -> None:
    w.put(patient("p-acute"))  # RZ1
    w.put(condition("cond-visible", "p-acute", onset="2024-03-01"))
    w.put(condition("cond-visible-2", "p-acute", onset="2024-05-01"))
    w.put(condition("cond-decoy", "p-acute", code="73211009", onset="2022-01-01"), org="RZ2")
    members = ["p-acute"]
    if with_target:
        if target_patient:
            w.put(patient("p-rz2", "Hiddenname"), org="RZ2")
            members.append("p-rz2")
        else:
            w.put(condition(TARGET, "p-acute", code=SECRET_CODE, onset=SECRET_DATE),
                  org="RZ2")
            w.put(condition(TARGET, "p-acute", code=SECRET_CODE, onset=SECRET_DATE)
                  | {"note": [{"text": "v2"}]}, org="RZ2")
    w.client(C1, members)
    point = w.api.app.state.enforcement  # type: ignore[attr-defined]
    objection = build_consent(policy(), client_id=C1, effect="deny", source_orgs=["RZ2"])
    objection["id"] = "objection-1"
    objection["dateTime"] = "2024-01-01T00:00:00+00:00"
    keyring, blind_index = w.repo_keys
    with w.sessions() as session:
        point.record_consent(session, ResourceRepository(session, keyring, blind_index),
                             "officer-7", objection)
        session.commit()


@pytest.fixture(params=["condition", "patient"])
def twins(request: pytest.FixtureRequest, database_url: str, tmp_path: Path,
          ) -> Iterator[tuple[World, World, str]]:
    """(withheld world, missing world, what the target is)."""
    kind = request.param
    other = database_url
    if database_url.startswith("sqlite"):
        other = f"sqlite:///{tmp_path / 'twin.db'}"
        with serve_world(database_url, tmp_path / "a") as a, \
                serve_world(other, tmp_path / "b") as b:
            _build(a, True, kind == "patient")
            _build(b, False, kind == "patient")
            yield a, b, kind
        return
    base, _, _ = database_url.partition("?options=")
    with pg_schema(base) as other, serve_world(database_url, tmp_path / "a") as a, \
            serve_world(other, tmp_path / "b") as b:
        _build(a, True, kind == "patient")
        _build(b, False, kind == "patient")
        yield a, b, kind


def _scrub(value: Any) -> Any:
    """The answer without what differs between worlds built a moment apart."""
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k != "lastUpdated"}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _answer(w: World, headers: dict[str, str], url: str) -> tuple[int, dict[str, str], Any]:
    response = w.get(url, headers)
    kept = {k: v for k, v in response.headers.items() if k.lower() not in ("date",)}
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    return response.status_code, kept, _scrub(body)


def _same(twins: tuple[World, World, str], url: str) -> tuple[int, Any]:
    """Ask both worlds (each with its own partner token); the answers must be identical."""
    withheld, missing, _ = twins
    a = _answer(withheld, _tokens[id(withheld)], url)
    b = _answer(missing, _tokens[id(missing)], url)
    assert a == b, f"{url} tells the worlds apart:\n{a}\n{b}"
    return a[0], a[2]


_tokens: dict[int, dict[str, str]] = {}


@pytest.fixture
def ask(twins: tuple[World, World, str]) -> Any:
    for w in twins[:2]:
        _tokens[id(w)] = w.token()  # a partner system, direct care (TREAT)
    yield lambda url: _same(twins, url)
    _tokens.clear()
    # Audit events are built from a fixed template and not validated as they are written
    # (it was a tenth of a request's time): every one these paths wrote must be valid R4.
    for w in twins[:2]:
        entries = w.api.app.state.enforcement.audit.entries()  # type: ignore[attr-defined]
        assert entries
        for record in entries:
            validate_resource(record.event)


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") == mode]


def test_read_and_vread_look_like_missing(twins: tuple[World, World, str], ask: Any) -> None:
    target = "Condition/cond-target" if twins[2] == "condition" else "Patient/p-rz2"
    for url in (f"/fhir/{target}", f"/fhir/{target}/_history/1", f"/fhir/{target}/_history/2",
                f"/fhir/{target}/_history/3", f"/fhir/{target}/_history"):
        status, body = ask(url)
        assert status == 404 and body["resourceType"] == "OperationOutcome", url
    assert ask("/fhir/Condition/cond-visible")[0] == 200
    assert ask("/fhir/Condition/cond-decoy")[0] == 404


def test_searches_counts_and_totals(
        twins: tuple[World, World, str], ask: Any) -> None:
    searches = [
        f"/fhir/Condition?patient={C1}", "/fhir/Condition?patient=p-acute",
        f"/fhir/Condition?patient=Patient/{C1}&_summary=count",
        f"/fhir/Condition?_id={TARGET}", f"/fhir/Condition?_id={TARGET},cond-visible",
        f"/fhir/Condition?_id={TARGET}&_summary=count",
        f"/fhir/Condition?code={SECRET_CODE}", f"/fhir/Condition?code={SECRET_CODE}"
        "&_summary=count", f"/fhir/Condition?patient={C1}&code={SECRET_CODE}",
        f"/fhir/Condition?patient={C1}&date={SECRET_DATE}",
        f"/fhir/Condition?patient={C1}&date=le{SECRET_DATE}&_sort=-date",
        f"/fhir/Condition?patient={C1}&status=active&_sort=date",
        "/fhir/Patient?family=Hiddenname", "/fhir/Patient?family=Hiddenname&view=source",
        "/fhir/Patient?family=Quixblatterwick", "/fhir/Patient?_id=p-rz2&view=source",
        f"/fhir/Patient?_id={C1}", "/fhir/Patient?birthdate=1970-01-02&_summary=count",
    ]
    for url in searches:
        status, body = ask(url)
        assert status == 200, url
        if "_summary=count" in url:
            assert "entry" not in body or all(e["search"]["mode"] == "outcome"
                                              for e in body["entry"])
    status, body = ask(f"/fhir/Condition?patient={C1}")
    assert set(_ids(body)) == {"cond-visible", "cond-visible-2"} and body["total"] == 2
    assert [e for e in body["entry"] if e["search"]["mode"] == "outcome"]  # the notice


def test_paging_links_and_page_sizes(twins: tuple[World, World, str], ask: Any) -> None:
    for count in (0, 1, 2, 3):
        for order in ("", "&_sort=date", "&_sort=-date", "&_sort=_id"):
            url = f"/fhir/Condition?patient={C1}&_count={count}{order}"
            seen = 0
            while url:
                status, body = ask(url)
                assert status == 200, url
                seen += len(_ids(body))
                nxt = [link["url"] for link in body.get("link", [])
                       if link["relation"] == "next"]
                parts = urlsplit(nxt[0]) if nxt else None
                url = f"{parts.path}?{parts.query}" if parts else ""
            assert seen == (2 if count else 0)


def test_include_and_revinclude(
        twins: tuple[World, World, str], ask: Any) -> None:
    for url in (f"/fhir/Condition?patient={C1}&_include=Condition:subject",
                f"/fhir/Condition?patient={C1}&_include=Condition:patient&_count=1",
                f"/fhir/Patient?_id={C1}&_revinclude=Condition:subject",
                f"/fhir/Patient?_id={C1}&_revinclude=Condition:patient&_count=1",
                "/fhir/Patient?_id=p-acute&view=source&_revinclude=Condition:subject",
                "/fhir/Patient?family=Hiddenname&_revinclude=Condition:subject"):
        assert ask(url)[0] == 200, url


def test_has_chains_elements_and_totals_are_refused_alike(
        twins: tuple[World, World, str], ask: Any) -> None:
    """Unsupported parameters are refused before any data is read: the refusal is the same
    whether or not something matching exists."""
    for url in (f"/fhir/Patient?_has:Condition:patient:code={SECRET_CODE}",
                f"/fhir/Patient?_has:Condition:subject:_id={TARGET}",
                "/fhir/Condition?patient.name=Hiddenname",
                "/fhir/Condition?subject:Patient.family=Hiddenname",
                "/fhir/Condition?patient:Patient.identifier=p-rz2",
                f"/fhir/Condition?patient={C1}&_elements=id",
                f"/fhir/Condition?_id={TARGET}&_elements=code",
                f"/fhir/Condition?patient={C1}&_total=accurate",
                f"/fhir/Condition?code:not={SECRET_CODE}",
                f"/fhir/Condition?_id={TARGET}&_summary=true",
                f"/fhir/Condition/{TARGET}?_elements=code",
                f"/fhir/Patient/{C1}/$everything?_type=Condition"):
        status, body = ask(url)
        if "/fhir/Condition/" in url or "$everything" in url:
            continue  # answered as without the parameter; compared all the same
        assert status == 400 and body["issue"][0]["severity"] == "error", url


def test_everything_and_the_unified_client(
        twins: tuple[World, World, str], ask: Any) -> None:
    assert ask(f"/fhir/Patient/{C1}/$everything")[0] == 200
    status, golden = ask(f"/fhir/Patient/{C1}")
    assert status == 200 and golden["id"] == C1
    assert ask(f"/fhir/Patient/{C1}/_history")[0] in (200, 404)
