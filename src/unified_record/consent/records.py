"""Consent records: FHIR Consent resources (scope patient-privacy) about a unified client.

A person's objection to sharing is a Consent whose provision is ``deny``: all sharing, the
data of one source organisation, one sensitive category, sharing with one organisation or
role, for some purposes or resource types, for a period. An explicit consent is a ``permit``
provision; the policy asks for one where its rule's effect is ``consent``. Provisions may
nest (an exception inside a broader provision); a nested provision inherits every condition
it does not set itself.

The store keeps them like any resource (encrypted, versioned) under source feed "consent",
indexed by client id; withdrawing sets status "inactive" in a new version, so the history of
a person's choices stays readable. How a Consent is written:

* ``patient``: ``Patient/<client id>``;
* ``provision.actor``: ``role`` PRCP (recipient) or CST (custodian: the source of the
  data), ``reference.identifier`` an organisation (ODS system) or a role
  (`ROLE_SYSTEM`; recipients only);
* ``provision.purpose``: v3 ActReason codings; ``provision.class``: FHIR resource types
  (`RESOURCE_TYPES`) or the policy's resource classes (`RESOURCE_CLASS_SYSTEM`);
* ``provision.securityLabel``: the labels of the policy's sensitive categories.

Anything else that would narrow a provision (``data``, ``dataPeriod``, ``code``, ``action``)
is refused rather than ignored, so an objection is never silently widened or narrowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from unified_record.consent.policy import Policy
from unified_record.fhir.security_labels import security_coding
from unified_record.fhir.uk_core import CS_ACT_CODE, ODS_CODE_SYSTEM
from unified_record.fhir.validation import InvalidResource, validate_resource
from unified_record.security.caller import Caller
from unified_record.store.resources import ResourceRepository

__all__ = [
    "CONSENT_FEED",
    "ROLE_SYSTEM",
    "ConsentDirective",
    "ConsentError",
    "Provision",
    "build_consent",
    "list_consents",
    "parse_consent",
    "record_consent",
    "store_consent",
    "withdraw_consent",
]

CONSENT_FEED = "consent"
ROLE_SYSTEM = "https://unified-record.example/CodeSystem/role"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
RESOURCE_CLASS_SYSTEM = "https://unified-record.example/CodeSystem/resource-class"
CS_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CS_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
CS_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
LOINC = "http://loinc.org"
_CLIENT_REF = re.compile(r"Patient/([A-Za-z0-9\-.]{1,32})")
_ORG_CODE = re.compile(r"[A-Za-z0-9]{3,12}")
_UNSUPPORTED = ("data", "dataPeriod", "code", "action")
_STATUSES = ("draft", "proposed", "active", "rejected", "inactive", "entered-in-error")


class ConsentError(ValueError):
    """A Consent this service cannot record or apply; the message names the element."""


@dataclass(frozen=True)
class Provision:
    """One provision, flattened with the conditions it inherits. Empty means any."""

    effect: Literal["permit", "deny"]
    depth: int = 0
    start: datetime | None = None
    end: datetime | None = None
    recipient_orgs: frozenset[str] = frozenset()
    recipient_roles: frozenset[str] = frozenset()
    source_orgs: frozenset[str] = frozenset()
    purposes: frozenset[str] = frozenset()
    resource_types: frozenset[str] = frozenset()
    resource_classes: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()

    @property
    def specificity(self) -> tuple[int, int]:
        """Deeper (an exception) first, then the number of conditions it sets."""
        named = sum(bool(s) for s in (
            self.recipient_orgs | self.recipient_roles, self.source_orgs, self.purposes,
            self.resource_types | self.resource_classes, self.categories))
        return self.depth, named

    def applies(self, caller: Caller, purpose: str, resource_type: str,
                resource_class: str | None, source_org: str | None,
                categories: frozenset[str], now: datetime) -> bool:
        if (self.start and now < self.start) or (self.end and now >= self.end):
            return False
        if (self.recipient_orgs or self.recipient_roles) and not (
                caller.organisation in self.recipient_orgs or caller.role in self.recipient_roles):
            return False
        if self.source_orgs and source_org not in self.source_orgs:
            return False
        if self.purposes and purpose not in self.purposes:
            return False
        if (self.resource_types or self.resource_classes) and not (
                resource_type in self.resource_types or resource_class in self.resource_classes):
            return False
        return not self.categories or bool(self.categories & categories)


@dataclass(frozen=True)
class ConsentDirective:
    """A stored Consent as the engine applies it."""

    id: str
    client_id: str
    status: str
    provisions: tuple[Provision, ...]

    @property
    def active(self) -> bool:
        return self.status == "active"


def build_consent(
    policy: Policy,
    *,
    client_id: str,
    effect: Literal["permit", "deny"],
    purposes: Sequence[str] = (),
    recipient_orgs: Sequence[str] = (),
    recipient_roles: Sequence[str] = (),
    source_orgs: Sequence[str] = (),
    categories: Sequence[str] = (),
    resource_types: Sequence[str] = (),
    resource_classes: Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    recorded_by_org: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A valid Consent resource (not stored): checked against the policy's codes."""
    now = now or datetime.now(UTC)
    provision: dict[str, Any] = {"type": effect}
    if start or end:
        provision["period"] = {k: v.isoformat() for k, v in (("start", start), ("end", end))
                               if v is not None}
    actors = ([_actor("PRCP", ODS_CODE_SYSTEM, org) for org in recipient_orgs]
              + [_actor("PRCP", ROLE_SYSTEM, role) for role in recipient_roles]
              + [_actor("CST", ODS_CODE_SYSTEM, org) for org in source_orgs])
    if actors:
        provision["actor"] = actors
    if purposes:
        provision["purpose"] = [{"system": CS_ACT_REASON, "code": p} for p in purposes]
    classes = ([{"system": RESOURCE_TYPES, "code": t} for t in resource_types]
               + [{"system": RESOURCE_CLASS_SYSTEM, "code": c} for c in resource_classes])
    if classes:
        provision["class"] = classes
    labels = []
    for category in categories:
        if category not in policy.categories:
            raise ConsentError(f"unknown sensitive category {category!r}")
        label = policy.categories[category].labels[0]
        labels.append(security_coding(category) if _ingest_category(category)
                      else {"system": label.system, "code": label.code})
    if labels:
        provision["securityLabel"] = labels
    consent: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": CS_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": LOINC, "code": "59284-0",
                                  "display": "Patient Consent"}]}],
        "patient": {"reference": f"Patient/{client_id}"},
        "dateTime": now.isoformat(),
        "performer": [{"reference": f"Patient/{client_id}"}],
        "policyRule": {"coding": [{"system": CS_ACT_CODE,
                                   "code": "OPTOUT" if effect == "deny" else "OPTIN"}]},
        "provision": provision,
    }
    if recorded_by_org:
        consent["organization"] = [{"identifier": {"system": ODS_CODE_SYSTEM,
                                                   "value": recorded_by_org}}]
    parse_consent(consent, policy)  # the same checks as a Consent posted to the API
    return consent


def parse_consent(resource: dict[str, Any], policy: Policy) -> ConsentDirective:
    """Validate a Consent (FHIR R4 and this service's conventions) and flatten it."""
    if resource.get("resourceType") != "Consent":
        raise ConsentError("resourceType: expected Consent")
    try:
        validate_resource(resource)
    except InvalidResource as exc:
        raise ConsentError(str(exc)) from None
    if resource.get("status") not in _STATUSES:
        raise ConsentError(f"status: expected one of {', '.join(_STATUSES)}")
    scopes = {(c.get("system"), c.get("code"))
              for c in (resource.get("scope") or {}).get("coding") or []}
    if (CS_SCOPE, "patient-privacy") not in scopes:
        raise ConsentError("scope: only patient-privacy Consents are recorded here")
    match = _CLIENT_REF.fullmatch(str((resource.get("patient") or {}).get("reference", "")))
    if match is None:
        raise ConsentError("patient: expected a reference Patient/<client id>")
    if "provision" not in resource:
        raise ConsentError("provision: a Consent here needs a provision (permit or deny)")
    provisions = _flatten(resource["provision"], policy, None, "provision")
    return ConsentDirective(str(resource.get("id", "")), match.group(1),
                            str(resource.get("status")), tuple(provisions))


def store_consent(repository: ResourceRepository, consent: dict[str, Any], policy: Policy,
                  recorded_by_org: str | None = None) -> dict[str, Any]:
    """Check and store a Consent (new, or a new version of an existing id); return it."""
    directive = parse_consent(consent, policy)
    return repository.put(consent, source_feed=CONSENT_FEED, source_org=recorded_by_org,
                          source_record_id=None,
                          index_values=[("patient", directive.client_id)])


def record_consent(repository: ResourceRepository, policy: Policy, *, client_id: str,
                   effect: Literal["permit", "deny"], recorded_by_org: str | None = None,
                   now: datetime | None = None, **conditions: Any) -> dict[str, Any]:
    """Build and store a Consent (see `build_consent` for the conditions); return it.
    The caller commits (and audits: `consent.enforcement` does both)."""
    consent = build_consent(policy, client_id=client_id, effect=effect,
                            recorded_by_org=recorded_by_org, now=now, **conditions)
    return store_consent(repository, consent, policy, recorded_by_org)


def withdraw_consent(repository: ResourceRepository, policy: Policy,
                     consent_id: str) -> dict[str, Any]:
    """Set a Consent's status to inactive (a new version); ConsentError if unknown."""
    current = repository.get("Consent", consent_id)
    if current is None:
        raise ConsentError(f"no Consent {consent_id}")
    if current.get("status") == "inactive":
        return current
    provenance = repository.provenance("Consent", consent_id)
    return store_consent(repository, {**current, "status": "inactive"}, policy,
                         provenance.source_org if provenance else None)


def list_consents(repository: ResourceRepository, client_ids: Iterable[str]
                  ) -> list[dict[str, Any]]:
    """Every current Consent of these clients (active or not), oldest first."""
    found: dict[str, dict[str, Any]] = {}
    for client_id in client_ids:
        for consent_id in repository.search("Consent", "patient", client_id):
            body = repository.get("Consent", consent_id)
            if body is not None:
                found[consent_id] = body
    return sorted(found.values(), key=lambda c: (str(c.get("dateTime", "")), str(c["id"])))


def _flatten(node: Any, policy: Policy, parent: Provision | None, where: str
             ) -> list[Provision]:
    if not isinstance(node, dict):
        raise ConsentError(f"{where}: expected an object")
    for name in _UNSUPPORTED:
        if name in node:
            raise ConsentError(f"{where}.{name}: not supported; state the condition with "
                               "actor, purpose, class or securityLabel")
    effect = node.get("type")
    if effect not in ("permit", "deny"):
        raise ConsentError(f"{where}.type: expected permit or deny")
    base = parent or Provision(effect=effect, depth=-1)
    recipient_orgs: set[str] = set()
    recipient_roles: set[str] = set()
    source_orgs: set[str] = set()
    for index, actor in enumerate(node.get("actor") or []):
        here = f"{where}.actor[{index}]"
        roles = {c.get("code") for c in (actor.get("role") or {}).get("coding") or []
                 if c.get("system") == CS_PARTICIPATION}
        ident = (actor.get("reference") or {}).get("identifier") or {}
        system, value = ident.get("system"), str(ident.get("value", ""))
        if system == ROLE_SYSTEM and roles == {"PRCP"}:
            if value not in policy.roles:
                raise ConsentError(f"{here}: unknown role {value!r}")
            recipient_roles.add(value)
        elif system == ODS_CODE_SYSTEM and roles in ({"PRCP"}, {"CST"}):
            if not _ORG_CODE.fullmatch(value):
                raise ConsentError(f"{here}: not an organisation code")
            (recipient_orgs if roles == {"PRCP"} else source_orgs).add(value)
        else:
            raise ConsentError(f"{here}: expected role PRCP or CST and a reference.identifier "
                               "naming an organisation (ODS) or a role")
    purposes = set()
    for index, coding in enumerate(node.get("purpose") or []):
        if coding.get("system") != CS_ACT_REASON or coding.get("code") not in policy.purposes:
            raise ConsentError(f"{where}.purpose[{index}]: not a purpose of use in the policy")
        purposes.add(str(coding["code"]))
    types: set[str] = set()
    classes: set[str] = set()
    for index, coding in enumerate(node.get("class") or []):
        code = str(coding.get("code", ""))
        if coding.get("system") == RESOURCE_TYPES and policy.class_of(code) is not None:
            types.add(code)
        elif coding.get("system") == RESOURCE_CLASS_SYSTEM and code in policy.resource_classes:
            classes.add(code)
        else:
            raise ConsentError(f"{where}.class[{index}]: not a resource type or class in the "
                               "policy")
    categories = policy.categories_of(node.get("securityLabel") or [])
    if len(categories) != len(node.get("securityLabel") or []):
        raise ConsentError(f"{where}.securityLabel: not a sensitive category label of the "
                           "policy")
    period = node.get("period") or {}
    provision = replace(
        base, effect=effect, depth=base.depth + 1,
        start=_when(period.get("start"), where) or base.start,
        end=_when(period.get("end"), where) or base.end,
        recipient_orgs=frozenset(recipient_orgs) if (recipient_orgs or recipient_roles)
        else base.recipient_orgs,
        recipient_roles=frozenset(recipient_roles) if (recipient_orgs or recipient_roles)
        else base.recipient_roles,
        source_orgs=frozenset(source_orgs) or base.source_orgs,
        purposes=frozenset(purposes) or base.purposes,
        resource_types=frozenset(types) if (types or classes) else base.resource_types,
        resource_classes=frozenset(classes) if (types or classes) else base.resource_classes,
        categories=categories or base.categories,
    )
    found = [provision]
    for index, child in enumerate(node.get("provision") or []):
        found += _flatten(child, policy, provision, f"{where}.provision[{index}]")
    return found


def _when(value: Any, where: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise ConsentError(f"{where}.period: not a date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _actor(role: str, system: str, value: str) -> dict[str, Any]:
    return {"role": {"coding": [{"system": CS_PARTICIPATION, "code": role}]},
            "reference": {"identifier": {"system": system, "value": value}}}


def _ingest_category(category: str) -> bool:
    try:
        security_coding(category)
    except KeyError:
        return False
    return True
