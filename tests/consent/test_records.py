"""Consent records: FHIR Consent resources built, checked, stored, versioned, withdrawn."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from consent_support import C1, C_OLD, NOW, caller, policy
from sqlalchemy.orm import Session

from unified_record.consent import AccessContext, ConsentError, EnforcementPoint
from unified_record.consent.records import (
    build_consent,
    list_consents,
    parse_consent,
    record_consent,
    withdraw_consent,
)
from unified_record.fhir.validation import validate_resource
from unified_record.store import ResourceRepository

DOC = AccessContext(caller("nhs_clinician"), "TREAT")


def test_an_objection_is_a_valid_patient_privacy_consent() -> None:
    body = build_consent(policy(), client_id=C1, effect="deny", source_orgs=["RZ2"],
                         categories=["mental_health", "adoption"], purposes=["TREAT"],
                         recipient_roles=["social_worker"], resource_types=["Condition"],
                         start=NOW, now=NOW)
    validate_resource(body)
    assert body["scope"]["coding"][0]["code"] == "patient-privacy"
    assert body["policyRule"]["coding"][0]["code"] == "OPTOUT"
    directive = parse_consent(body, policy())
    [provision] = directive.provisions
    assert (directive.client_id, provision.effect) == (C1, "deny")
    assert provision.source_orgs == {"RZ2"}
    assert provision.categories == {"mental_health", "adoption"}
    assert provision.recipient_roles == {"social_worker"}
    assert provision.start == NOW


def test_nested_provisions_inherit_what_they_do_not_set() -> None:
    body = build_consent(policy(), client_id=C1, effect="deny", purposes=["TREAT"], now=NOW)
    body["provision"]["provision"] = [{
        "type": "permit",
        "actor": [{"role": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "PRCP"}]},
            "reference": {"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code",
                                        "value": "RZ1"}}}]}]
    base, exception = parse_consent(body, policy()).provisions
    assert exception.effect == "permit" and exception.depth == 1
    assert exception.purposes == {"TREAT"} and exception.recipient_orgs == {"RZ1"}
    assert exception.specificity > base.specificity


def _with(**changes: Any) -> dict[str, Any]:
    body = build_consent(policy(), client_id=C1, effect="deny", now=NOW)
    body = copy.deepcopy(body)
    for path, value in changes.items():
        target = body
        *parents, last = path.split("__")
        for part in parents:
            target = target[part]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return body


@pytest.mark.parametrize(("changes", "message"), [
    ({"scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                            "code": "research"}]}}, "scope: only patient-privacy"),
    ({"patient": {"reference": "Group/1"}}, "patient: expected a reference Patient/"),
    ({"provision": None}, "provision: a Consent here needs a provision"),
    ({"provision__type": "maybe"}, "provision.type: expected permit or deny"),
    ({"provision__data": [{"meaning": "instance", "reference": {"reference": "Condition/1"}}]},
     "provision.data: not supported"),
    ({"provision__purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                              "code": "MARKETING"}]}, "provision.purpose[0]: not a purpose"),
    ({"provision__class": [{"system": "http://hl7.org/fhir/resource-types",
                            "code": "Basic"}]}, "provision.class[0]"),
    ({"provision__securityLabel": [{"system": "x", "code": "y"}]}, "provision.securityLabel"),
    ({"status": "bogus"}, "status: expected one of"),
    ({"category": None}, "Consent invalid: category"),
])
def test_a_malformed_consent_is_refused_naming_the_element(changes: dict[str, Any],
                                                           message: str) -> None:
    with pytest.raises(ConsentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_consent(_with(**changes), policy())


def test_unknown_codes_are_refused_when_building() -> None:
    with pytest.raises(ConsentError, match="category"):
        build_consent(policy(), client_id=C1, effect="deny", categories=["tattoos"])
    with pytest.raises(ConsentError, match="role"):
        build_consent(policy(), client_id=C1, effect="deny", recipient_roles=["janitor"])


def test_consents_are_stored_versioned_and_withdrawn(session: Session,
                                                     repo: ResourceRepository) -> None:
    stored = record_consent(repo, policy(), client_id=C1, effect="deny",
                            recorded_by_org="E08000035", categories=["mental_health"])
    session.commit()
    assert stored["meta"]["versionId"] == "1"
    assert [c["id"] for c in list_consents(repo, [C1])] == [stored["id"]]
    withdrawn = withdraw_consent(repo, policy(), stored["id"])
    session.commit()
    assert (withdrawn["status"], withdrawn["meta"]["versionId"]) == ("inactive", "2")
    history = repo.history("Consent", stored["id"])
    assert [v["status"] for v in history] == ["inactive", "active"]
    provenance = repo.provenance("Consent", stored["id"])
    assert provenance is not None and provenance.source_feed == "consent"
    assert provenance.source_org == "E08000035"
    with pytest.raises(ConsentError, match="no Consent"):
        withdraw_consent(repo, policy(), "nope")


def test_an_objection_under_a_merged_id_still_counts(
        point: EnforcementPoint, session: Session, repo: ResourceRepository) -> None:
    assert point.authorize_read(session, repo, DOC, "Condition", "cond-plain").resource
    session.rollback()
    body = build_consent(policy(), client_id=C_OLD, effect="deny", now=NOW)
    point.record_consent(session, repo, "officer-1", body)
    session.commit()
    assert point.authorize_read(session, repo, DOC, "Condition", "cond-plain").resource is None
    kinds = [(e.client_id, e.event["subtype"][0]["code"]) for e in point.audit.entries()]
    assert (C_OLD, "consent-recorded") in kinds


def test_withdrawing_an_objection_restores_sharing(
        point: EnforcementPoint, session: Session, repo: ResourceRepository) -> None:
    body = build_consent(policy(), client_id=C1, effect="deny", source_orgs=["RZ2"], now=NOW)
    stored = point.record_consent(session, repo, "officer-1", body)
    session.commit()
    assert point.authorize_read(session, repo, DOC, "Condition", "cond-rz2").resource is None
    assert point.authorize_read(session, repo, DOC, "Condition", "cond-plain").resource
    session.rollback()
    point.withdraw_consent(session, repo, "officer-1", stored["id"])
    session.commit()
    assert point.authorize_read(session, repo, DOC, "Condition", "cond-rz2").resource
