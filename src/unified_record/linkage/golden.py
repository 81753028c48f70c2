"""The golden Patient of a unified client: one FHIR Patient assembled from its source records.

It is built on demand from the current source Patients of the client (nothing extra is
stored, so it can never drift from the index), by these survivorship rules:

1. Sources are ranked: active records before ones a source system merged away (HL7 A40);
   then a record whose NHS number is *verified* (UK Core verification status
   "01") first; then NHS-sourced records (source organisation an ODS code) before council
   ones (a local authority's ONS GSS code such as E08000035); then the most recently
   updated; then by id, so the order is total and repeatable.
2. Name, gender, birth date, address and telecom each come from the highest-ranked source
   that has that element: the element is taken whole from one source (never a given name
   from one record and a family name from another).
3. The NHS number is the highest-ranked valid one (modulus 11), with its verification status.
   Every other identifier of every source is kept (deduplicated by system and value), so a
   local case number or hospital number finds the client too.
4. Death: if any source records a death, the golden record carries it (the most recent
   source's value); a death recorded anywhere must not be hidden by another source.
5. Security labels: the union of the sources' labels, because the golden record draws on
   all of them.

The result has the client id as its id and as an identifier (`Settings.client_id_system`),
`Patient.link` of type `seealso` to every source Patient, and is validated with
fhir.resources. A retired client id gives an inactive Patient whose `link` (type
`replaced-by`) names the client that absorbed it.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from unified_record.fhir.nhs_number import is_valid_nhs_number
from unified_record.fhir.uk_core import NHS_NUMBER_SYSTEM, PROFILE_PATIENT
from unified_record.fhir.validation import validate_resource
from unified_record.linkage.features import patient_features
from unified_record.store.models import ClientMemberRow, ClientRow, ResourceRow
from unified_record.store.resources import ResourceRepository

__all__ = ["DEFAULT_CLIENT_SYSTEM", "SourcePatient", "assemble_golden", "golden_patient",
           "is_council_org"]

DEFAULT_CLIENT_SYSTEM = "https://unified-record.example/Id/client"
_GSS_CODE = re.compile(r"^[EWSN]\d{8}$")  # ONS GSS code: the local authorities' identifiers
_DEMOGRAPHICS = ("name", "gender", "birthDate", "address", "telecom")


def is_council_org(code: str | None) -> bool:
    """Whether an organisation code is a local authority's (GSS) rather than an NHS ODS code."""
    return bool(code and _GSS_CODE.match(code.strip().upper()))


@dataclass(frozen=True)
class SourcePatient:
    """A source Patient body and what ranks it."""

    body: Mapping[str, Any]
    source_org: str | None
    last_updated: str  # ISO 8601, for ordering

    @property
    def id(self) -> str:
        return str(self.body.get("id", ""))

    def rank(self) -> tuple[bool, bool, bool, str, str]:
        features = patient_features(dict(self.body), source_feed="", source_org=self.source_org,
                                    source_record_id=None)
        verified = bool(features["nhs_number"]) and features["nhs_verified"] is True
        return (self.body.get("active") is False, not verified, is_council_org(self.source_org),
                _desc(self.last_updated), self.id)


def _desc(text: str) -> str:
    """A key that sorts ISO timestamps newest first."""
    return "".join(chr(0x10FFFF - ord(ch)) for ch in text)


def assemble_golden(client_id: str, sources: Iterable[SourcePatient],
                    client_system: str = DEFAULT_CLIENT_SYSTEM) -> dict[str, Any]:
    """The golden Patient of an active client from its source Patients (rules above)."""
    ranked = sorted(sources, key=SourcePatient.rank)
    golden: dict[str, Any] = {
        "resourceType": "Patient",
        "id": client_id,
        "meta": {"profile": [PROFILE_PATIENT]},
        "identifier": [{"use": "official", "system": client_system, "value": client_id}],
        "active": True,
    }
    nhs = next((ident for s in ranked for ident in s.body.get("identifier") or []
                if ident.get("system") == NHS_NUMBER_SYSTEM
                and is_valid_nhs_number(str(ident.get("value", "")))), None)
    if nhs is not None:
        golden["identifier"].append(copy.deepcopy(nhs))
    seen = {(client_system, client_id)}
    if nhs is not None:
        seen.add((NHS_NUMBER_SYSTEM, str(nhs.get("value"))))
    for source in ranked:
        for ident in source.body.get("identifier") or []:
            key = (ident.get("system"), ident.get("value"))
            if ident.get("system") == NHS_NUMBER_SYSTEM or key in seen or not key[1]:
                continue
            seen.add(key)
            golden["identifier"].append(copy.deepcopy(ident))

    for element in _DEMOGRAPHICS:
        chosen = next((s.body[element] for s in ranked if s.body.get(element)), None)
        if chosen is not None:
            golden[element] = copy.deepcopy(chosen)
    by_recency = sorted(ranked, key=lambda s: (_desc(s.last_updated), s.id))
    for source in by_recency:
        if source.body.get("deceasedDateTime"):
            golden["deceasedDateTime"] = source.body["deceasedDateTime"]
            break
        if source.body.get("deceasedBoolean") is True:
            golden["deceasedBoolean"] = True
            break

    labels: dict[tuple[str, str], dict[str, Any]] = {}
    for source in ranked:
        for label in (source.body.get("meta") or {}).get("security") or []:
            labels.setdefault((label.get("system"), label.get("code")), copy.deepcopy(label))
    if labels:
        golden["meta"]["security"] = [labels[key] for key in sorted(labels)]
    golden["link"] = [{"other": {"reference": f"Patient/{s.id}"}, "type": "seealso"}
                      for s in sorted(ranked, key=lambda s: s.id)]
    validate_resource(golden)
    return golden


def golden_patient(session: Session, repository: ResourceRepository, client_id: str,
                   client_system: str = DEFAULT_CLIENT_SYSTEM) -> dict[str, Any] | None:
    """The golden Patient of `client_id` from the store, or None for an unknown id.

    A retired client gives an inactive Patient pointing at its successor (`replaced-by`).
    """
    client = session.get(ClientRow, client_id)
    if client is None:
        return None
    if client.status != "active":
        retired: dict[str, Any] = {
            "resourceType": "Patient", "id": client_id, "active": False,
            "identifier": [{"use": "old", "system": client_system, "value": client_id}]}
        if client.replaced_by:
            retired["link"] = [{"other": {"reference": f"Patient/{client.replaced_by}"},
                                "type": "replaced-by"}]
        validate_resource(retired)
        return retired
    ids = list(session.scalars(sa.select(ClientMemberRow.unique_id)
                               .where(ClientMemberRow.client_id == client_id)))
    sources: list[SourcePatient] = []
    for row in session.scalars(sa.select(ResourceRow).where(
            ResourceRow.resource_type == "Patient", ResourceRow.id.in_(ids))):
        body = repository.get("Patient", row.id)  # in the identity map: no query
        if body is not None:
            sources.append(SourcePatient(body, row.source_org, row.last_updated.isoformat()))
    return assemble_golden(client_id, sources, client_system)
