"""AuditEvents (FHIR R4, IHE Basic Audit Log Patterns where they fit), built from ids only.

An event names who (OAuth client, user, organisation, role), why (purpose of use), about
whom (the unified client, as ``Patient/<client id>``), what (resource references with
whether each was returned or withheld, and why), when, from where (network address), and
how it ended. It never holds names, NHS numbers or resource content; search parameters are
recorded by name only, since their values can be personal data.

The decision of an access event rides in an extension (`DECISION_URL`), and break-glass
events carry the BTG security label, so `derive_columns` can recompute the indexed columns
of an audit entry from its event alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from unified_record.fhir.uk_core import ODS_CODE_SYSTEM

__all__ = [
    "DECISION_URL",
    "Agent",
    "Decision",
    "Entity",
    "audit_event",
    "break_glass_entity",
    "derive_columns",
]

Decision = Literal["permit", "deny", "none"]

DECISION_URL = "https://unified-record.example/StructureDefinition/access-decision"
CS_AUDIT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
CS_RESTFUL = "http://hl7.org/fhir/restful-interaction"
CS_LOCAL_EVENT = "https://unified-record.example/CodeSystem/audit-event"
CS_DCM = "http://dicom.nema.org/resources/ontology/DCM"
CS_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
CS_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
CS_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
CS_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
CS_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CS_ROLE = "https://unified-record.example/CodeSystem/role"
CS_AGENT = "https://unified-record.example/CodeSystem/audit-agent"
ID_OAUTH_CLIENT = "https://unified-record.example/Id/oauth-client"
ID_OPERATOR = "https://unified-record.example/Id/operator"
ID_BREAK_GLASS = "https://unified-record.example/Id/break-glass-grant"

_RESTFUL = frozenset({
    "read", "vread", "update", "patch", "delete", "history", "history-instance",
    "history-type", "history-system", "create", "search", "search-type", "search-system",
    "capabilities", "transaction", "batch", "operation"})
_ACTIONS = {"create": "C", "update": "U", "patch": "U", "delete": "D", "read": "R",
            "vread": "R", "history": "R", "history-instance": "R", "history-type": "R",
            "history-system": "R"}  # searches, operations and the rest: E (execute)
_OUTCOMES = {"permit": "0", "none": "0", "deny": "4"}


@dataclass(frozen=True)
class Agent:
    """Who acted: a user through an OAuth client, or an operator at the command line."""

    user: str
    user_system: str
    organisation: str | None = None
    role: str | None = None
    oauth_client_id: str | None = None

    @classmethod
    def operator(cls, name: str, role: str | None = None) -> Agent:
        return cls(user=name, user_system=ID_OPERATOR, role=role)


@dataclass(frozen=True)
class Entity:
    """A resource (by reference) or record (by identifier) the event is about; `outcome`
    says if it was returned or withheld."""

    reference: str | None = None  # "Type/id" or "Type/id/_history/n"
    identifier: tuple[str, str] | None = None  # (system, value)
    outcome: str | None = None  # returned | withheld | created | updated | ...
    reason: str | None = None  # rule and consent ids, never content
    role: str = "4"  # object-role: 4 domain resource, 13 security resource, 24 query
    detail: tuple[tuple[str, str], ...] = field(default=())


def break_glass_entity(grant_id: str, outcome: str | None = None) -> Entity:
    return Entity(identifier=(ID_BREAK_GLASS, grant_id), outcome=outcome, role="13")


def audit_event(
    *,
    subtype: str,
    agent: Agent,
    recorded: datetime,
    decision: Decision = "none",
    purpose: str | None = None,
    client_id: str | None = None,
    entities: Sequence[Entity] = (),
    source_address: str | None = None,
    outcome_desc: str | None = None,
    break_glass: bool = False,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A valid AuditEvent. `subtype` is a FHIR RESTful interaction (read, search-type, ...)
    or one of this service's governance events (consent-recorded, opt-out-set, ...).

    Not validated with fhir.resources on the way: the template is fixed and the values are
    ids and codes, and validating took a tenth of a request's time. The tests validate
    every event that the API's access paths and the governance tools write."""
    restful = subtype in _RESTFUL
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event_id or uuid.uuid4().hex,
        "type": ({"system": CS_AUDIT_TYPE, "code": "rest", "display": "RESTful Operation"}
                 if restful else
                 {"system": CS_DCM, "code": "110110", "display": "Patient Record"}
                 if client_id else
                 {"system": CS_DCM, "code": "110113", "display": "Security Alert"}),
        "subtype": [{"system": CS_RESTFUL if restful else CS_LOCAL_EVENT, "code": subtype}],
        "action": _ACTIONS.get(subtype, "E"),
        "recorded": recorded.isoformat(timespec="microseconds"),
        "outcome": _OUTCOMES[decision],
        "agent": _agents(agent, purpose, source_address),
        "source": {"observer": {"display": "unified-record"},
                   "type": [{"system": CS_SOURCE_TYPE, "code": "4",
                             "display": "Application Server"}]},
    }
    if decision != "none":
        event["extension"] = [{"url": DECISION_URL, "valueCode": decision}]
    if break_glass:
        event["meta"] = {"security": [{"system": CS_ACT_REASON, "code": "BTG",
                                       "display": "break the glass"}]}
    if outcome_desc:
        event["outcomeDesc"] = outcome_desc
    if purpose:
        event["purposeOfEvent"] = [{"coding": [{"system": CS_ACT_REASON, "code": purpose}]}]
    entity_list = []
    if client_id:
        entity_list.append({
            "what": {"reference": f"Patient/{client_id}"},
            "type": {"system": CS_ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": CS_OBJECT_ROLE, "code": "1", "display": "Patient"}})
    entity_list += [_entity(e) for e in entities]
    if entity_list:
        event["entity"] = entity_list
    return event


def derive_columns(event: dict[str, Any]) -> tuple[str | None, str, Decision, bool]:
    """(client id, recorded, decision, break-glass) as the audit entry's columns hold them."""
    client_id = None
    for entity in event.get("entity") or []:
        if (entity.get("role") or {}).get("code") == "1":
            client_id = str((entity.get("what") or {}).get("reference", "")).partition("/")[2]
            break
    decision: Decision = "none"
    for extension in event.get("extension") or []:
        if extension.get("url") == DECISION_URL:
            decision = extension.get("valueCode")
    break_glass = any(label.get("system") == CS_ACT_REASON and label.get("code") == "BTG"
                      for label in (event.get("meta") or {}).get("security") or [])
    return client_id, str(event.get("recorded")), decision, break_glass


def _agents(agent: Agent, purpose: str | None, source_address: str | None
            ) -> list[dict[str, Any]]:
    user: dict[str, Any] = {
        "type": {"coding": [{"system": CS_PARTICIPATION, "code": "IRCP",
                             "display": "information recipient"}]},
        "who": {"identifier": {"system": agent.user_system, "value": agent.user}},
        "requestor": True,
    }
    if agent.role:
        user["role"] = [{"coding": [{"system": CS_ROLE, "code": agent.role}]}]
    if purpose:
        user["purposeOfUse"] = [{"coding": [{"system": CS_ACT_REASON, "code": purpose}]}]
    agents = [user]
    if agent.organisation:
        agents.append({
            "type": {"coding": [{"system": CS_AGENT, "code": "organisation",
                                 "display": "the user's organisation"}]},
            "who": {"identifier": {"system": ODS_CODE_SYSTEM, "value": agent.organisation}},
            "requestor": False})
    if agent.oauth_client_id:
        client: dict[str, Any] = {
            "type": {"coding": [{"system": CS_DCM, "code": "110153",
                                 "display": "Source Role ID"}]},
            "who": {"identifier": {"system": ID_OAUTH_CLIENT, "value": agent.oauth_client_id}},
            "requestor": False}
        if source_address:
            client["network"] = {"address": source_address, "type": "2"}
        agents.append(client)
        agents.append({
            "type": {"coding": [{"system": CS_DCM, "code": "110152",
                                 "display": "Destination Role ID"}]},
            "who": {"display": "unified-record"},
            "requestor": False})
    return agents


def _entity(entity: Entity) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": {"system": CS_ENTITY_TYPE, "code": "2", "display": "System Object"},
        "role": {"system": CS_OBJECT_ROLE, "code": entity.role},
    }
    if entity.identifier is not None:
        out["what"] = {"identifier": {"system": entity.identifier[0],
                                      "value": entity.identifier[1]}}
    elif entity.reference is not None:
        out["what"] = {"reference": entity.reference}
    details = list(entity.detail)
    if entity.outcome:
        details.append(("outcome", entity.outcome))
    if entity.reason:
        details.append(("reason", entity.reason))
    if details:
        out["detail"] = [{"type": kind, "valueString": value} for kind, value in details]
    return out
