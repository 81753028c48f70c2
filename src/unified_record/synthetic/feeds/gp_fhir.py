"""GP practices: one FHIR R4 transaction Bundle per registered patient, one NDJSON file per
practice (named by its ODS code).

Patients follow UK Core (NHS number identifier with its verification status, ethnic
category); the problem list, repeat medication, allergies and recent consultations come with
them. Sensitive conditions are ordinary SNOMED codes: it is the receiver's job to label them.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import timedelta
from typing import Any

from unified_record.fhir import uk_core
from unified_record.synthetic.context import ChunkContext, activity_date
from unified_record.synthetic.noise import View, make_view
from unified_record.synthetic.population import REFERENCE_DATE, Person
from unified_record.synthetic.reference import ALLERGIES, CONDITIONS, ETHNIC_CATEGORIES, MEDICATIONS

FEED = "gp_fhir"
GENDER = {"M": "male", "F": "female"}
SENSITIVE_CONDITIONS = {
    category: [c for c in CONDITIONS if c[2] == category]
    for category in ("mental_health", "substance_misuse", "sexual_health")
}
ORDINARY_CONDITIONS = [c for c in CONDITIONS if not c[2]]


def write(ctx: ChunkContext, people: list[Person]) -> None:
    rng = ctx.rng(FEED)
    profile = ctx.profile.feeds[FEED]
    for person in people:
        if rng.random() >= getattr(profile.coverage, person.age_group):
            continue
        practices = [person.gp_practice]
        if rng.random() < profile.noise.duplicate_record:  # an old registration elsewhere
            practices.append((person.gp_practice + rng.randrange(1, 7)) % len(ctx.world.practices))
        for practice in practices:
            view = make_view(person, profile.noise, rng)
            bundle, patient_id = _bundle(ctx, rng, person, view, practice)
            ctx.truth(FEED, patient_id, person.person_id)
            ctx.emit(f"{FEED}/{ctx.world.practices[practice][0]}.ndjson",
                     json.dumps(bundle, separators=(",", ":"), ensure_ascii=False))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _bundle(ctx: ChunkContext, rng: random.Random, person: Person, view: View,
            practice: int) -> tuple[dict[str, Any], str]:
    ods, _ = ctx.world.practices[practice]
    patient_id = _uuid(rng)
    entries = [_entry("Patient", patient_id, _patient(rng, person, view, patient_id, ods))]
    subject = {"reference": f"urn:uuid:{patient_id}"}
    profile = ctx.profile.feeds[FEED]
    conditions = rng.sample(ORDINARY_CONDITIONS, k=min(len(ORDINARY_CONDITIONS),
                                                       rng.choice((0, 0, 1, 1, 2, 3))))
    for category, options in SENSITIVE_CONDITIONS.items():
        if rng.random() < profile.sensitive.get(category, 0.0):
            conditions.append(rng.choice(options))
            ctx.sensitive(FEED, patient_id, category)
    for code, display, _ in conditions:
        cid = _uuid(rng)
        onset = activity_date(rng, after=person.dob) if person.dob.year > 2023 else \
            person.dob + timedelta(days=rng.randrange(max((REFERENCE_DATE - person.dob).days, 1)))
        entries.append(_entry("Condition", cid, {
            "resourceType": "Condition", "id": cid,
            "meta": {"profile": [uk_core.PROFILE_CONDITION]},
            "clinicalStatus": {"coding": [{"system": uk_core.CS_CONDITION_CLINICAL,
                                           "code": "active"}]},
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                "code": "problem-list-item"}]}],
            "code": {"coding": [{"system": uk_core.SNOMED, "code": code, "display": display}]},
            "subject": subject, "onsetDateTime": onset.isoformat(),
        }))
    for code, display in rng.sample(MEDICATIONS, k=rng.choice((0, 0, 1, 2))):
        mid = _uuid(rng)
        entries.append(_entry("MedicationStatement", mid, {
            "resourceType": "MedicationStatement", "id": mid,
            "meta": {"profile": [uk_core.PROFILE_MEDICATION_STATEMENT]},
            "status": "active",
            "medicationCodeableConcept": {"coding": [{"system": uk_core.SNOMED, "code": code,
                                                      "display": display}]},
            "subject": subject, "effectiveDateTime": activity_date(rng).isoformat(),
        }))
    if rng.random() < 0.15:
        code, display = rng.choice(ALLERGIES)
        aid = _uuid(rng)
        entries.append(_entry("AllergyIntolerance", aid, {
            "resourceType": "AllergyIntolerance", "id": aid,
            "meta": {"profile": [uk_core.PROFILE_ALLERGY_INTOLERANCE]},
            "clinicalStatus": {"coding": [{"system": uk_core.CS_ALLERGY_CLINICAL,
                                           "code": "active"}]},
            "code": {"coding": [{"system": uk_core.SNOMED, "code": code, "display": display}]},
            "patient": subject, "recordedDate": activity_date(rng).isoformat(),
        }))
    for _ in range(rng.choice((0, 1, 1, 2))):
        eid = _uuid(rng)
        day = activity_date(rng)
        entries.append(_entry("Encounter", eid, {
            "resourceType": "Encounter", "id": eid,
            "meta": {"profile": [uk_core.PROFILE_ENCOUNTER]},
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB", "display": "ambulatory"},
            "type": [{"coding": [{"system": uk_core.SNOMED, "code": "11429006",
                                  "display": "Consultation"}]}],
            "subject": subject, "period": {"start": day.isoformat(), "end": day.isoformat()},
            "serviceProvider": {"identifier": {"system": uk_core.ODS_CODE_SYSTEM, "value": ods}},
        }))
    bundle = {"resourceType": "Bundle", "id": _uuid(rng), "type": "transaction",
              "meta": {"source": f"urn:ods:{ods}"}, "entry": entries}
    return bundle, patient_id


def _entry(resource_type: str, rid: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{rid}", "resource": resource,
            "request": {"method": "PUT", "url": f"{resource_type}/{rid}"}}


def _patient(rng: random.Random, person: Person, view: View, patient_id: str,
             ods: str) -> dict[str, Any]:
    identifiers: list[dict[str, Any]] = []
    if view.nhs_number:
        status = "01" if rng.random() < 0.97 else "02"
        identifiers.append({
            "extension": [{"url": uk_core.EXT_NHS_NUMBER_VERIFICATION, "valueCodeableConcept": {
                "coding": [{"system": uk_core.CS_NHS_NUMBER_VERIFICATION, "code": status,
                            "display": uk_core.NHS_NUMBER_VERIFICATION_DISPLAY[status]}]}}],
            "system": uk_core.NHS_NUMBER_SYSTEM, "value": view.nhs_number,
        })
    name: dict[str, Any] = {"use": "usual", "family": view.family,
                            "given": [view.given] + ([view.middle] if view.middle else [])}
    if person.title:
        name["prefix"] = [person.title]
    names = [name]
    if view.family != person.birth_family and rng.random() < 0.5:
        names.append({"use": "maiden", "family": person.birth_family, "given": [view.given]})
    patient: dict[str, Any] = {
        "resourceType": "Patient", "id": patient_id,
        "meta": {"profile": [uk_core.PROFILE_PATIENT]},
        "extension": [{"url": uk_core.EXT_ETHNIC_CATEGORY, "valueCodeableConcept": {"coding": [{
            "system": uk_core.CS_ETHNIC_CATEGORY, "code": person.ethnicity,
            "display": ETHNIC_CATEGORIES[person.ethnicity]}]}}],
        "identifier": identifiers, "name": names, "gender": GENDER[view.sex],
        "birthDate": view.dob.isoformat(),
        "generalPractitioner": [{"identifier": {"system": uk_core.ODS_CODE_SYSTEM, "value": ods}}],
    }
    if not identifiers:
        del patient["identifier"]
    telecom = []
    if view.phone:
        telecom.append({"system": "phone", "value": view.phone,
                        "use": "mobile" if view.phone.startswith("07") else "home"})
    if view.email:
        telecom.append({"system": "email", "value": view.email, "use": "home"})
    if telecom:
        patient["telecom"] = telecom
    address = view.address
    if address is not None:
        patient["address"] = [{"use": "home", "line": [f"{address.number} {address.street}"],
                               "city": address.town, "postalCode": address.postcode,
                               "country": "GB"}]
    return patient


