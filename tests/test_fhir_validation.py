"""Validation remembers the shapes that passed and then checks only their primitives: it must
give fhir.resources' own verdict on every body, valid or not, whatever changed in it."""

from __future__ import annotations

import copy
import datetime
import itertools
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from unified_record.fhir import validation
from unified_record.fhir.validation import InvalidResource, validate_resource
from unified_record.ingest import load_mappings
from unified_record.ingest.prepare import prepare
from unified_record.ingest.sources import iter_messages

REPO = Path(__file__).resolve().parents[1]
SAMPLE, MAPPINGS = REPO / "synthetic_data" / "sample", REPO / "mappings"

# Bodies the feeds do not produce but FHIR allows: a contained resource, a primitive's
# extension, a choice element, lists of primitives, comments.
HAND_MADE: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1", "active": True, "gender": "female",
     "birthDate": "1970-01-02", "_birthDate": {"extension": [
         {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
          "valueDateTime": "1970-01-02T03:04:05+00:00"}]},
     "deceasedBoolean": False, "multipleBirthInteger": 2,
     "name": [{"use": "official", "family": "Smith", "given": ["Ann", "Bea"],
               "period": {"start": "2000-01-01"}}],
     "telecom": [{"system": "phone", "value": "0123", "rank": 1}],
     "fhir_comments": ["a comment"]},
    {"resourceType": "Observation", "id": "o1", "status": "final",
     "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
     "subject": {"reference": "#p"}, "effectiveDateTime": "2020-05-06T07:08:09Z",
     "valueQuantity": {"value": 70.5, "unit": "kg", "system": "http://unitsofmeasure.org",
                       "code": "kg"},
     "contained": [{"resourceType": "Patient", "id": "p", "name": [{"text": "A B"}]}]},
    {"resourceType": "Flag", "id": "f1", "status": "active",
     "code": {"text": "risk"}, "subject": {"reference": "Patient/p1"},
     "meta": {"versionId": "3", "lastUpdated": "2020-01-01T00:00:00.123+01:00",
              "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                            "code": "R"}]}},
]

TRICKY_STRINGS = [
    "", " ", "a b", "a  b", " a", "a ", "\n", "x" * 65, "2001-02-30", "2001-13-01", "2001",
    "2001-02", "2001-02-03", "2001-02-03T04:05:06Z", "2001-02-03T04:05:06", "24:00:00",
    "12:30:00", "-1", "0", "1.50", "1e3", "01", "true", "urn:uuid:1", "Patient/p1", "#p",
    "http://x y", "abc-1.2", "final", "female", "ÄÖ", "\u0000",
]


@cache
def _feed_bodies() -> tuple[dict[str, Any], ...]:
    bodies = []
    for feed, mapping in sorted(load_mappings(MAPPINGS).items()):
        if not (SAMPLE / feed).exists():
            continue
        for message in itertools.islice(iter_messages(mapping.format, SAMPLE / feed), 8):
            prepared = prepare(mapping, message.raw)
            bodies += [item.resource for item in prepared.resources if item.resource]
    return tuple(bodies)


def _bodies() -> list[dict[str, Any]]:
    return [*_feed_bodies(), *HAND_MADE]


def _fhir_resources_accepts(body: dict[str, Any]) -> bool:
    try:
        model = get_fhir_model_class(str(body.get("resourceType")))
    except (KeyError, ValueError):
        return False  # not a resource type fhir.resources knows
    try:
        model.model_validate(body)
    except (ValidationError, TypeError, KeyError, AttributeError):  # the last: it crashes
        return False
    return True


def _we_accept(body: dict[str, Any]) -> bool:
    try:
        validate_resource(body)
    except InvalidResource:
        return False
    return True


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every element's path, containers and primitives alike."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        yield (*path, key)
        if isinstance(item, dict | list):
            yield from _paths(item, (*path, key))


def _at(body: Any, path: tuple[Any, ...]) -> tuple[Any, Any]:
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    return parent, path[-1]


def _same_type_value(draw: st.DrawFn, old: Any) -> Any:
    if isinstance(old, bool):
        return draw(st.booleans())
    if isinstance(old, int):
        return draw(st.integers(min_value=-2**40, max_value=2**40))
    if isinstance(old, float):
        return draw(st.floats(allow_nan=True, allow_infinity=True))
    return draw(st.sampled_from(TRICKY_STRINGS) | st.text(max_size=12))


@st.composite
def _same_shape(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid body and a copy with one to three primitives changed, keeping their types:
    the copy has the body's shape, so only its primitives are checked."""
    body = draw(st.sampled_from(_bodies()))
    changed = copy.deepcopy(body)
    leaves = [p for p in _paths(body) if p[-1] != "resourceType"
              and not isinstance(_at(body, p)[0][p[-1]], dict | list)]
    for path in draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=3)):
        parent, key = _at(changed, path)
        parent[key] = _same_type_value(draw, parent[key])
    return body, changed


ANY_VALUE = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
             | st.sampled_from(TRICKY_STRINGS) | st.just([]) | st.just({}) | st.just([None])
             | st.just({"text": "x"}) | st.just(["a"]) | st.just({"resourceType": "Patient"}))


@st.composite
def _any_change(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A valid body and a copy changed anywhere: a value replaced by anything, an element
    removed or added, a list unwrapped or a value wrapped in one, a resource type renamed."""
    body = draw(st.sampled_from(_bodies()))
    changed = copy.deepcopy(body)
    for path in draw(st.lists(st.sampled_from(list(_paths(body))), min_size=1, max_size=2)):
        try:
            parent, key = _at(changed, path)
            old = parent[key]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change removed it
        if not isinstance(parent, dict if isinstance(key, str) else list):
            continue  # an earlier change replaced a container on the way
        how = draw(st.sampled_from(["replace", "remove", "add", "wrap", "unwrap", "type"]))
        if how == "replace":
            parent[key] = draw(ANY_VALUE)
        elif how == "remove":
            del parent[key]
        elif how == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["valueString", "_id", "extension", "deceasedBoolean",
                                         "birthDate", "unknownElement", "text"]))] = draw(
                ANY_VALUE)
        elif how == "wrap":
            parent[key] = [old]
        elif how == "unwrap" and isinstance(old, list) and old:
            parent[key] = old[0]
        elif how == "type" and isinstance(parent, dict) and "resourceType" in parent:
            parent["resourceType"] = draw(st.sampled_from(
                ["Patient", "Observation", "Encounter", "HumanName", "Nothing"]))
    return body, changed


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_same_shape())
def test_a_remembered_shape_with_new_primitives_gets_fhir_resources_verdict(
        pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    body, changed = pair
    validate_resource(body)  # remembers its shape
    assert _we_accept(changed) == _fhir_resources_accepts(changed)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_any_change())
def test_any_change_to_a_valid_body_gets_fhir_resources_verdict(
        pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    body, changed = pair
    validate_resource(body)
    expected = _fhir_resources_accepts(changed)
    assert _we_accept(changed) == expected
    assert _we_accept(changed) == expected, "and again, once its shape may be remembered"


def test_every_sample_feed_and_hand_made_body_is_valid() -> None:
    assert len(_feed_bodies()) > 20
    for body in _bodies():
        assert _fhir_resources_accepts(body)
        assert _we_accept(body) and _we_accept(body)


def test_a_body_of_a_remembered_shape_skips_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    first = copy.deepcopy(HAND_MADE[0])
    validate_resource(first)
    patient = get_fhir_model_class("Patient")
    calls: list[Any] = []
    original = patient.model_validate
    monkeypatch.setattr(patient, "model_validate",
                        lambda *a, **k: calls.append(a) or original(*a, **k))
    second = copy.deepcopy(first)
    second["name"][0]["family"], second["birthDate"] = "Jones", "1980-12-31"
    validate_resource(second)
    assert calls == [], "same shape, valid primitives: the model is not run again"
    second["birthDate"] = "1980-02-30"
    with pytest.raises(InvalidResource, match="birthDate"):
        validate_resource(second)
    assert len(calls) == 1, "a primitive failed: the model runs and gives its own reason"


def test_a_primitive_is_checked_as_its_own_field_type() -> None:
    body = copy.deepcopy(HAND_MADE[0])
    validate_resource(body)
    for path, bad in [(("id",), "has space"), (("gender",), "a  b"), (("birthDate",), "2001-13"),
                      (("name", 0, "given", 1), ""), (("telecom", 0, "rank"), -1)]:
        changed = copy.deepcopy(body)
        parent, key = _at(changed, path)
        parent[key] = bad
        assert not _fhir_resources_accepts(changed), path
        with pytest.raises(InvalidResource):
            validate_resource(changed)


def test_an_invalid_body_is_never_remembered_as_valid() -> None:
    bad = {"resourceType": "Patient", "id": "p1", "birthDate": "not a date"}
    for _ in range(2):
        with pytest.raises(InvalidResource):
            validate_resource(bad)
    shape: list[Any] = []
    validation._walk(bad, shape, [])
    assert tuple(shape) not in validation._shapes


def test_an_element_given_as_json_text_is_always_validated_in_full() -> None:
    body = {"resourceType": "Patient", "id": "p1", "maritalStatus": '{"text": "single"}'}
    if not _fhir_resources_accepts(body):
        pytest.fail("fhir.resources no longer parses an element from JSON text: drop this test")
    validate_resource(body)
    shape: list[Any] = []
    validation._walk(body, shape, [])
    assert validation._shapes[tuple(shape)] is None
    worse = {**body, "maritalStatus": '{"text": ""}'}
    assert not _fhir_resources_accepts(worse) and not _we_accept(worse)


def test_values_the_pickle_tells_apart_are_not_confused() -> None:
    """A date object and its ISO string, True and 1: different types, different shapes."""
    as_text = {"resourceType": "Patient", "id": "p1", "birthDate": "2001-02-03", "active": True}
    as_date = {**as_text, "birthDate": datetime.date(2001, 2, 3), "active": 1}
    for body in (as_text, as_date, as_text, as_date):
        assert _we_accept(body) == _fhir_resources_accepts(body)


def test_what_is_remembered_is_bounded() -> None:
    """API callers send bodies too: a huge body's shape and long values are not kept."""
    validation._shapes.clear()
    validation._valid_values.clear()
    many = {"resourceType": "Patient", "id": "big",
            "name": [{"given": [f"n{i}"]} for i in range(validation._MAX_SHAPE_TOKENS)]}
    validate_resource(many)
    assert validation._shapes == {}
    long_text = {"resourceType": "Patient", "id": "p1", "name": [{"text": "x" * 5000}]}
    validate_resource(long_text)
    validate_resource(long_text)  # its shape is remembered now: the leaf is checked
    assert len(validation._shapes) == 1
    assert all(len(str(value)) <= validation._MAX_VALUE_LENGTH
               for _, _, value in validation._valid_values)
    assert ("p1" in {value for _, _, value in validation._valid_values})


@pytest.mark.parametrize("resource_type", [["Patient"], "Nothing", None, {"a": 1}, 3])
def test_a_contained_resource_of_no_known_type_is_a_clear_rejection(resource_type: Any) -> None:
    """fhir.resources itself raises TypeError or KeyError here; ingest must get a reason."""
    body = {"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"text": "x"}, "contained": [{"resourceType": resource_type}]}
    with pytest.raises(InvalidResource, match="Observation invalid"):
        validate_resource(body)


def test_a_bundle_with_such_an_entry_is_quarantined_not_a_crash() -> None:
    mapping = load_mappings(MAPPINGS)["gp_fhir"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "fullUrl": "urn:uuid:1", "request": {"method": "PUT", "url": "Patient/p"},
        "resource": {"resourceType": "Patient", "id": "p",
                     "generalPractitioner": [{"identifier": {"value": "A12345"}}],
                     "contained": [{"resourceType": ["Patient"]}]}}]}
    prepared = prepare(mapping, json.dumps(bundle).encode())
    assert prepared.error is not None and "entry 0: Patient invalid" in prepared.error


def test_an_unhashable_primitive_from_a_python_caller_is_checked_not_kept() -> None:
    body = {"resourceType": "Patient", "id": "p1", "fhir_comments": {"a", "b"}}
    for _ in range(3):  # the second time its shape may be remembered
        assert _we_accept(body) == _fhir_resources_accepts(body)
