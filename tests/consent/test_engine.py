"""The decision engine, table-driven over the repository's policy: roles, purposes,
categories, consents, the National Data Opt-out and break-glass."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from consent_support import CLIENT, CONSENT_DIR, NOW, caller, consent, grant, policy, policy_copy

from unified_record.consent.engine import (
    Candidate,
    ClientState,
    ResourceFacts,
    _best_rule,
    _winning_rule,
    decide,
    filter_permitted,
)
from unified_record.consent.policy import load_policy
from unified_record.consent.records import ConsentDirective

SW, DOC, PARTNER = "social_worker", "nhs_clinician", "partner_system"
STEWARD, GOV, ANALYST, RESEARCHER = "data_steward", "governance_officer", "analyst", "researcher"
R = ["mark-restricted"]


@dataclass
class Case:
    name: str
    role: str | None
    purpose: str | None
    resource_type: str
    permit: bool
    obligations: list[str] = field(default_factory=list)
    categories: tuple[str, ...] = ()
    source_org: str | None = "RZ1"
    org: str | None = "RZ1"
    consents: tuple[ConsentDirective, ...] = ()
    opt_out: bool = False
    break_glass: str | None = None  # "active", "expired", "other-user", "other-client"
    client_id: str | None = CLIENT
    reason: str | None = None  # a fragment one of the reasons must contain


def _cases() -> list[Case]:
    mh, sg, ad = ("mental_health",), ("safeguarding",), ("adoption",)
    return [
        # direct care
        Case("clinician treats: clinical", DOC, "TREAT", "Condition", True,
             reason="rule direct-care permits"),
        Case("clinician emergency: clinical", DOC, "ETREAT", "Condition", True),
        Case("social worker: social care", SW, "TREAT", "EpisodeOfCare", True),
        Case("social worker: clinical", SW, "TREAT", "Condition", True),
        Case("social worker: alerts", SW, "TREAT", "Flag", True),
        Case("partner system: clinical", PARTNER, "TREAT", "Observation", True),
        # purposes
        Case("partner system may not break the glass", PARTNER, "BTG", "Condition", False,
             reason="may not use purpose BTG"),
        Case("no purpose is not direct care", DOC, None, "Condition", False,
             reason="no purpose of use"),
        Case("unknown purpose", DOC, "XYZ", "Condition", False, reason="not in the policy"),
        Case("clinician may not do research", DOC, "HRESCH", "Condition", False),
        Case("no role", None, "TREAT", "Condition", False, reason="role (none)"),
        Case("unknown role", "janitor", "TREAT", "Condition", False),
        # data steward
        Case("steward: demographics only", STEWARD, "RECORDMGT", "Patient", True,
             ["demographics-only"]),
        Case("steward: never clinical", STEWARD, "RECORDMGT", "Condition", False,
             reason="rule steward-no-clinical denies"),
        Case("steward: labelled Patient", STEWARD, "RECORDMGT", "Patient", True,
             ["demographics-only"], categories=mh + sg),
        Case("steward: never alerts", STEWARD, "RECORDMGT", "Flag", False),
        Case("steward: never social care", STEWARD, "RECORDMGT", "CarePlan", False),
        Case("steward may not claim direct care", STEWARD, "TREAT", "Patient", False),
        Case("steward: labelled clinical", STEWARD, "RECORDMGT", "Condition", False,
             categories=mh),
        # governance officer
        Case("governance: consent records", GOV, "HCOMPL", "Consent", True),
        Case("governance: audit trail", GOV, "HCOMPL", "AuditEvent", True),
        Case("governance: no clinical", GOV, "HCOMPL", "Condition", False,
             reason="rule governance-no-clinical denies"),
        Case("governance: no social care", GOV, "PATRQT", "EpisodeOfCare", False),
        Case("governance: who the person is", GOV, "PATRQT", "Patient", True,
             ["demographics-only"]),
        Case("governance: no sensitive clinical", GOV, "HCOMPL", "Condition", False,
             categories=mh),
        # sensitive categories
        Case("clinician: mental health, restricted", DOC, "TREAT", "Condition", True, R,
             categories=mh, reason="rule sensitive-health-clinical-care permits"),
        Case("social worker: mental health needs consent", SW, "TREAT", "Condition", False,
             categories=mh, reason="no explicit consent"),
        Case("social worker: mental health with consent", SW, "TREAT", "Condition", True, R,
             categories=mh, consents=(consent("permit", categories=["mental_health"]),),
             reason="explicit consent on record"),
        Case("social worker: consent for another category does not do", SW, "TREAT",
             "Condition", False, categories=mh,
             consents=(consent("permit", categories=["hiv"]),)),
        Case("social worker emergency: mental health withheld", SW, "ETREAT", "Condition",
             False, categories=mh, reason="rule sensitive-health-withheld denies"),
        Case("partner: HIV, restricted", PARTNER, "TREAT", "Condition", True, R,
             categories=("hiv",)),
        Case("social worker: safeguarding", SW, "TREAT", "Flag", True, R, categories=sg),
        Case("partner: safeguarding withheld", PARTNER, "TREAT", "Flag", False,
             categories=sg),
        Case("clinician: adoption withheld", DOC, "TREAT", "EpisodeOfCare", False,
             categories=ad, reason="rule adoption-withheld denies"),
        Case("social worker: adoption needs consent", SW, "TREAT", "EpisodeOfCare", False,
             categories=ad),
        Case("social worker: adoption with consent", SW, "TREAT", "EpisodeOfCare", True, R,
             categories=ad, consents=(consent("permit", categories=["adoption"]),)),
        Case("every category must permit: clinician", DOC, "TREAT", "Condition", True, R,
             categories=mh + sg),
        Case("every category must permit: social worker", SW, "TREAT", "Condition", False,
             categories=mh + sg),
        Case("labelled Patient: who the person is, for care", PARTNER, "TREAT", "Patient",
             True, categories=(*ad, "gender_identity")),
        Case("unclassified resource type: default deny", DOC, "TREAT", "Basic", False,
             reason="no rule applies"),
        # beyond individual care, National Data Opt-out
        Case("analyst: operations without notes", ANALYST, "HOPERAT", "Condition", True,
             ["redact-notes"]),
        Case("analyst: opted out", ANALYST, "HOPERAT", "Condition", False, opt_out=True,
             reason="National Data Opt-out"),
        Case("analyst: planning, unlinked record", ANALYST, "PUBHLTH", "Condition", False,
             client_id=None, reason="not linked to a client"),
        Case("analyst: sensitive withheld", ANALYST, "HOPERAT", "Condition", False,
             categories=mh),
        Case("analyst: no demographics", ANALYST, "HOPERAT", "Patient", False),
        Case("researcher: needs consent", RESEARCHER, "HRESCH", "Condition", False),
        Case("researcher: with consent", RESEARCHER, "HRESCH", "Condition", True,
             ["redact-notes"], consents=(consent("permit", purposes=["HRESCH"]),)),
        Case("researcher: consent but opted out", RESEARCHER, "HRESCH", "Condition", False,
             consents=(consent("permit", purposes=["HRESCH"]),), opt_out=True),
        Case("opt-out never blocks TREAT", DOC, "TREAT", "Condition", True, opt_out=True),
        Case("opt-out never blocks ETREAT", DOC, "ETREAT", "Condition", True, opt_out=True),
        Case("opt-out never blocks BTG", DOC, "BTG", "Condition", True, R, opt_out=True,
             break_glass="active"),
        # break-glass
        Case("break-glass without a grant", DOC, "BTG", "Condition", False,
             reason="no active break-glass grant"),
        Case("break-glass grant expired", DOC, "BTG", "Condition", False,
             break_glass="expired"),
        Case("break-glass grant of another user", DOC, "BTG", "Condition", False,
             break_glass="other-user"),
        Case("break-glass grant for another client", DOC, "BTG", "Condition", False,
             break_glass="other-client"),
        Case("break-glass: sensitive, restricted", SW, "BTG", "Condition", True, R,
             categories=mh, break_glass="active", reason="break-glass grant g1"),
        Case("break-glass overrides an objection", DOC, "BTG", "Condition", True, R,
             consents=(consent(),), break_glass="active", reason="does not apply"),
        Case("break-glass: adoption stays with social care", DOC, "BTG", "EpisodeOfCare",
             False, categories=ad, break_glass="active"),
        # objections (deny Consents)
        Case("objection to all sharing", DOC, "TREAT", "Condition", False,
             consents=(consent(),), reason="consent k1: the person objected"),
        Case("objection to one source organisation: its data", DOC, "TREAT", "Condition",
             False, source_org="RZ2", consents=(consent(source_orgs=["RZ2"]),)),
        Case("objection to one source organisation: other data", DOC, "TREAT", "Condition",
             True, source_org="RZ1", consents=(consent(source_orgs=["RZ2"]),)),
        Case("objection to one category: that category", DOC, "TREAT", "Condition", False,
             categories=mh, consents=(consent(categories=["mental_health"]),)),
        Case("objection to one category: other data", DOC, "TREAT", "Condition", True,
             consents=(consent(categories=["mental_health"]),)),
        Case("objection to one recipient organisation", DOC, "TREAT", "Condition", False,
             org="RZ1", consents=(consent(recipient_orgs=["RZ1"]),)),
        Case("objection to another recipient organisation", DOC, "TREAT", "Condition", True,
             org="RZ2", consents=(consent(recipient_orgs=["RZ1"]),)),
        Case("objection to a role: that role", SW, "TREAT", "Condition", False,
             consents=(consent(recipient_roles=["social_worker"]),)),
        Case("objection to a role: another role", DOC, "TREAT", "Condition", True,
             consents=(consent(recipient_roles=["social_worker"]),)),
        Case("objection to research only", DOC, "TREAT", "Condition", True,
             consents=(consent(purposes=["HRESCH"]),)),
        Case("objection to one resource type", DOC, "TREAT", "MedicationStatement", False,
             consents=(consent(resource_types=["MedicationStatement"]),)),
        Case("objection that has ended", DOC, "TREAT", "Condition", True,
             consents=(consent(end=NOW - timedelta(days=1)),)),
        Case("objection not yet started", DOC, "TREAT", "Condition", True,
             consents=(consent(start=NOW + timedelta(days=1)),)),
        Case("objection in its period", DOC, "TREAT", "Condition", False,
             consents=(consent(start=NOW - timedelta(days=1), end=NOW + timedelta(days=1)),)),
        Case("withdrawn objection", DOC, "TREAT", "Condition", True,
             consents=(consent(status="inactive"),)),
        Case("objection with a more specific permit", DOC, "TREAT", "Condition", True,
             consents=(consent(), consent("permit", consent_id="k2",
                                          recipient_orgs=["RZ1"]))),
        Case("equally specific deny beats permit", DOC, "TREAT", "Condition", False,
             consents=(consent("permit", consent_id="k2", recipient_orgs=["RZ1"]),
                       consent(recipient_orgs=["RZ1"]))),
        Case("objection does not stop matching", STEWARD, "RECORDMGT", "Patient", True,
             ["demographics-only"], consents=(consent(),)),
        Case("objection does not hide the consent record", GOV, "HCOMPL", "Consent", True,
             consents=(consent(),)),
        Case("consent never permits what policy denies", STEWARD, "RECORDMGT", "Condition",
             False, consents=(consent("permit"),)),
    ]


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decision(case: Case) -> None:
    who = caller(case.role, org=case.org)
    grants = {
        None: [],
        "active": [grant(who)],
        "expired": [grant(who, started=NOW - timedelta(minutes=90))],
        "other-user": [grant(caller(case.role, org=case.org, sub="user-2"))],
        "other-client": [grant(who, client_id="Cffffffffffff")],
    }[case.break_glass]
    resource = ResourceFacts(case.resource_type, "r1", case.source_org,
                             frozenset(case.categories))
    decision = decide(who, case.purpose, case.client_id, resource, policy(), case.consents,
                      case.opt_out, grants, NOW)
    assert decision.permit is case.permit, decision.reasons
    assert decision.obligations == (case.obligations if case.permit else [])
    assert decision.reasons
    if case.reason:
        assert any(case.reason in reason for reason in decision.reasons), decision.reasons


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 40


def test_decide_needs_now() -> None:
    with pytest.raises(ValueError, match="now"):
        decide(caller(DOC), "TREAT", CLIENT, ResourceFacts("Condition", "r1"), policy())


_SPECIFIC = """
rules:
  - id: care-permit
    effect: permit
    role: nhs_clinician
    purpose: TREAT
    resource_class: clinical
    reason: broad permit naming role, purpose and class
  - id: category-deny
    effect: deny
    category: hiv
    reason: a rule naming only a category
  - id: tie-permit
    effect: permit
    role: social_worker
    purpose: TREAT
    reason: permit
  - id: tie-deny
    effect: deny
    role: social_worker
    purpose: TREAT
    reason: deny, equally specific
  - id: purpose-over-class
    effect: permit
    role: analyst
    purpose: HOPERAT
    reason: names a purpose
  - id: class-deny
    effect: deny
    role: analyst
    resource_class: clinical
    reason: names a class
"""


@pytest.fixture
def small_policy(tmp_path: Path) -> Any:
    return load_policy(policy_copy(tmp_path, rules=_SPECIFIC))


@pytest.mark.parametrize(("role", "purpose", "categories", "permit", "rule"), [
    ("nhs_clinician", "TREAT", (), True, "care-permit"),
    ("nhs_clinician", "TREAT", ("hiv",), False, "category-deny"),  # category beats the rest
    ("social_worker", "TREAT", (), False, "tie-deny"),  # deny beats permit at a tie
    ("analyst", "HOPERAT", (), True, "purpose-over-class"),  # purpose beats class
    ("nhs_clinician", "ETREAT", (), False, "no rule applies"),  # no rule: deny
])
def test_specificity(small_policy: Any, role: str, purpose: str, categories: tuple[str, ...],
                     permit: bool, rule: str) -> None:
    decision = decide(caller(role), purpose, CLIENT,
                      ResourceFacts("Condition", "r1", "RZ1", frozenset(categories)),
                      small_policy, now=NOW)
    assert decision.permit is permit
    assert any(rule in reason for reason in decision.reasons), decision.reasons


def test_filter_keeps_order_counts_withheld_and_redacts() -> None:
    def body(rtype: str, rid: str, **extra: Any) -> dict[str, Any]:
        return {"resourceType": rtype, "id": rid, "note": [{"text": "free text"}],
                "text": {"status": "generated", "div": "<div>x</div>"}, **extra}

    candidates = [
        Candidate(CLIENT, ResourceFacts("Condition", "a"), body("Condition", "a")),
        Candidate(CLIENT, ResourceFacts("Condition", "b", categories=frozenset({"hiv"})),
                  body("Condition", "b")),
        Candidate("C2", ResourceFacts("Condition", "c"), body("Condition", "c")),
        Candidate(None, ResourceFacts("Condition", "d"), body("Condition", "d")),
    ]
    states = {"C2": ClientState(opt_out=True)}
    shown = filter_permitted(caller(ANALYST), "HOPERAT", candidates, policy(), states, NOW)
    assert [r["id"] for r in shown.permitted] == ["a"]
    assert shown.withheld == 3
    kept = shown.permitted[0]
    assert "note" not in kept and "text" not in kept
    assert {"code": "REDACTED"}.items() <= kept["meta"]["security"][0].items()
    assert "note" in candidates[0].body  # the input is never changed


def test_filter_decides_each_client_source_and_category_apart() -> None:
    """Candidates share a decision only where everything a decision reads agrees: the
    client, the type, the source organisation and the categories (ids never count)."""
    def candidate(client: str, rid: str, org: str, *categories: str) -> Candidate:
        return Candidate(client, ResourceFacts("Condition", rid, org, frozenset(categories)),
                         {"resourceType": "Condition", "id": rid})

    candidates = [
        candidate(CLIENT, "a", "RZ1"),
        candidate(CLIENT, "b", "RZ2"),  # the person objects to sharing from RZ2
        candidate(CLIENT, "c", "RZ1"),
        candidate(CLIENT, "d", "RZ1", "safeguarding"),  # withheld from partner systems
        candidate("C2", "e", "RZ2"),  # another client: no objection on record
        candidate(CLIENT, "f", "RZ2"),
    ]
    states = {CLIENT: ClientState(consents=(consent(source_orgs=["RZ2"]),))}
    shown = filter_permitted(caller(PARTNER), "TREAT", candidates, policy(), states, NOW)
    assert [r["id"] for r in shown.permitted] == ["a", "c", "e"]
    assert shown.withheld == 3
    by_id = {c.facts.id: d for c, d in shown.decisions}
    assert any("k1" in reason for reason in by_id["b"].reasons)
    assert any("safeguarding" in reason for reason in by_id["d"].reasons)


def test_reasons_never_carry_content() -> None:
    secret = "Ermintrude-Quixblatterwick"
    resource = ResourceFacts("Condition", "r1", "RZ1", frozenset({"mental_health"}))
    for role, purpose in ((SW, "TREAT"), (STEWARD, "RECORDMGT"), (DOC, "TREAT")):
        decision = decide(caller(role), purpose, CLIENT, resource, policy(),
                          (consent(categories=["mental_health"]),), now=NOW)
        assert secret not in " ".join(decision.reasons)
        assert all("rule " in r or "consent " in r or "purpose" in r for r in decision.reasons)


def test_each_rule_is_worked_out_once_and_the_same_in_any_order() -> None:
    """The winning rule is remembered per (role, purpose, class, category): asked in any
    order, each combination gets what working it out afresh gives, and is kept apart."""
    shared = load_policy(CONSENT_DIR)
    keys = [(role, purpose, resource_class, category)
            for role in shared.roles for purpose in shared.purposes
            for resource_class in (*shared.resource_classes, None)
            for category in (*shared.categories, None)]
    winners = set()
    for key in (*keys, *reversed(keys)):
        _, rule = _winning_rule(shared, *key)
        assert rule == _best_rule(shared, *key)
        winners.add(rule.id if rule else None)
    assert len(shared.rule_memo) == len(keys)
    assert len(winners) > 5  # the combinations do not all share one answer
