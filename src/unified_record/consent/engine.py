"""The consent decision engine: one pure function from a request to a decision.

`decide` answers whether `caller` may see one resource for `purpose`, in this order:

1. The purpose: given, known, and one the caller's role may use. (The API refuses the whole
   request with 403 when this fails; the engine says so for each resource too.)
2. Break-glass (purpose BTG) needs a grant covering this caller and client, now.
3. The National Data Opt-out denies the purposes the policy marks ``opt_out_applies``;
   so does not knowing the client (an unlinked record cannot be checked).
4. The policy's rules, once per sensitive category the resource carries (or once, if none):
   the most specific matching rule wins (category, then role, then purpose, then resource
   class), deny beats permit at equal specificity, no matching rule means deny. Every
   category must permit. An effect ``consent`` permits only with an explicit consent.
5. The person's Consents, active now: the most specific matching provision wins (nested
   exceptions first, then the number of conditions), deny beats permit at equal
   specificity. A winning deny is an objection and denies the request, unless the policy
   says objections do not apply to the purpose (``objections_apply: false``: break-glass,
   records management, governance); a winning permit is the explicit consent step 4 may
   need. Consents never permit what the policy denies.

Reasons name rules, consents, grants and purposes, never resource content; they are for
the audit log and governance officers. `filter_permitted` applies `decide` to a list
(search, history, $everything) before any paging or counting, and redacts what it keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from unified_record.consent.breakglass import BreakGlassGrant
from unified_record.consent.policy import BREAK_GLASS, OBLIGATIONS, Policy, Rule
from unified_record.consent.records import ConsentDirective, Provision
from unified_record.consent.redaction import apply_obligations
from unified_record.security.caller import Caller

__all__ = [
    "Candidate",
    "ClientState",
    "Decision",
    "Filtered",
    "ResourceFacts",
    "check_purpose",
    "decide",
    "filter_permitted",
]


@dataclass(frozen=True)
class ResourceFacts:
    """What the engine may know about a resource: type, id, provenance and categories."""

    resource_type: str
    id: str
    source_org: str | None = None
    categories: frozenset[str] = frozenset()

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"


@dataclass(frozen=True)
class Decision:
    permit: bool
    reasons: list[str] = field(default_factory=list)
    obligations: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ClientState:
    """What is on record for one client: consents, opt-out, break-glass grants."""

    consents: tuple[ConsentDirective, ...] = ()
    opt_out: bool = False
    grants: tuple[BreakGlassGrant, ...] = ()


@dataclass(frozen=True)
class Candidate:
    client_id: str | None
    facts: ResourceFacts
    body: Mapping[str, Any]


@dataclass
class Filtered:
    """Permitted resources (redacted as their obligations say) and how many were withheld."""

    permitted: list[dict[str, Any]]
    withheld: int
    decisions: list[tuple[Candidate, Decision]]


def check_purpose(caller: Caller, purpose: str | None, policy: Policy) -> Decision:
    """Step 1 alone: may this caller's role ask for this purpose at all?"""
    if not purpose:
        return Decision(False, ["no purpose of use given (a missing purpose is not direct "
                                "care)"])
    if purpose not in policy.purposes:
        return Decision(False, [f"purpose {purpose} is not in the policy"])
    if not caller.role or caller.role not in policy.roles:
        return Decision(False, [f"role {caller.role or '(none)'} is not in the policy"])
    if not policy.may_use(caller.role, purpose):
        return Decision(False, [f"role {caller.role} may not use purpose {purpose}"])
    return Decision(True, [f"role {caller.role} may use purpose {purpose}"])


def decide(
    caller: Caller,
    purpose: str | None,
    client_id: str | None,
    resource: ResourceFacts,
    policy: Policy,
    consents: Sequence[ConsentDirective] = (),
    opt_out: bool = False,
    break_glass_grants: Sequence[BreakGlassGrant] = (),
    now: datetime | None = None,
) -> Decision:
    """Whether `caller` may see `resource` (of client `client_id`) for `purpose`, and why.
    `now` (timezone-aware) is required: the engine never reads the clock."""
    if now is None:
        raise ValueError("decide needs `now`")
    allowed = check_purpose(caller, purpose, policy)
    if not allowed.permit:
        return allowed
    assert purpose is not None and caller.role is not None
    reasons: list[str] = []
    if purpose == BREAK_GLASS:
        grant = next((g for g in break_glass_grants if g.covers(caller, client_id, now)), None)
        if grant is None:
            return Decision(False, ["no active break-glass grant for this caller and client"])
        reasons.append(f"break-glass grant {grant.id} active until "
                       f"{grant.expires_at.isoformat(timespec='seconds')}")
    if policy.purposes[purpose].opt_out_applies:
        if client_id is None:
            return Decision(False, [f"purpose {purpose} needs the National Data Opt-out "
                                    "checked, and the record is not linked to a client"])
        if opt_out:
            return Decision(False, [f"National Data Opt-out: purpose {purpose} is beyond "
                                    "individual care"])

    resource_class = policy.class_of(resource.resource_type)
    categories: list[str | None] = [*sorted(resource.categories & policy.categories.keys())]
    winners = [_winning_rule(policy, caller.role, purpose, resource_class, category)
               for category in categories or [None]]
    denied = [(category, rule) for category, rule in winners
              if rule is None or rule.effect == "deny"]
    if denied:
        return Decision(False, [*reasons, *(_rule_reason(category, rule, resource_class)
                                            for category, rule in denied)])
    reasons += [_rule_reason(category, rule, resource_class) for category, rule in winners]

    provision, consent_id = _winning_provision(
        consents, caller, purpose, resource, resource_class, now)
    if provision is not None and provision.effect == "deny":
        if policy.purposes[purpose].objections_apply:
            return Decision(False, [*reasons, f"consent {consent_id}: the person objected "
                                                 "to this sharing"])
        reasons.append(f"consent {consent_id}: the person's objection does not apply to "
                       f"purpose {purpose}")
    needs_consent = any(rule is not None and rule.effect == "consent" for _, rule in winners)
    if needs_consent:
        if provision is None or provision.effect != "permit":
            return Decision(False, [*reasons, "no explicit consent on record, which the "
                                                 "policy requires here"])
        reasons.append(f"consent {consent_id}: explicit consent on record")
    obligations = {o for _, rule in winners if rule is not None for o in rule.obligations}
    return Decision(True, reasons, [o for o in OBLIGATIONS if o in obligations])


def filter_permitted(
    caller: Caller,
    purpose: str | None,
    candidates: Iterable[Candidate],
    policy: Policy,
    states: Mapping[str | None, ClientState] | Callable[[str | None], ClientState],
    now: datetime,
) -> Filtered:
    """Decide every candidate; keep the permitted ones, redacted, in the given order.

    A decision depends on a resource's type, source organisation and categories, never on
    its id, so candidates of one client that agree on those share one decision (most of a
    `$everything` does: deciding each took a tenth of the consent engine's cost)."""
    state_of = states if callable(states) else (lambda cid: states.get(cid, ClientState()))
    permitted: list[dict[str, Any]] = []
    decisions: list[tuple[Candidate, Decision]] = []
    decided: dict[tuple[str | None, str, str | None, frozenset[str]], Decision] = {}
    for candidate in candidates:
        facts = candidate.facts
        key = (candidate.client_id, facts.resource_type, facts.source_org, facts.categories)
        decision = decided.get(key)
        if decision is None:
            state = state_of(candidate.client_id)
            decision = decided[key] = decide(caller, purpose, candidate.client_id, facts,
                                             policy, state.consents, state.opt_out,
                                             state.grants, now)
        decisions.append((candidate, decision))
        if decision.permit:
            permitted.append(apply_obligations(candidate.body, decision.obligations))
    return Filtered(permitted, len(decisions) - len(permitted), decisions)


def _winning_rule(policy: Policy, role: str, purpose: str, resource_class: str | None,
                  category: str | None) -> tuple[str | None, Rule | None]:
    key = (role, purpose, resource_class, category)
    if key not in policy.rule_memo:
        policy.rule_memo[key] = _best_rule(policy, *key)
    return category, policy.rule_memo[key]


def _best_rule(policy: Policy, role: str, purpose: str, resource_class: str | None,
               category: str | None) -> Rule | None:
    best: Rule | None = None
    for rule in policy.rules:
        if not (_names(rule.role, role) and _names(rule.purpose, purpose)
                and _names(rule.resource_class, resource_class)):
            continue
        if rule.category is not None and (category is None or category not in rule.category):
            continue
        if best is None or rule.specificity > best.specificity or (
                rule.specificity == best.specificity and rule.effect == "deny"
                and best.effect != "deny"):
            best = rule
    return best


def _names(values: tuple[str, ...] | None, value: str | None) -> bool:
    return values is None or (value is not None and value in values)


def _rule_reason(category: str | None, rule: Rule | None, resource_class: str | None) -> str:
    about = f"category {category}" if category else f"class {resource_class or '(none)'}"
    if rule is None:
        return f"no rule applies ({about}): denied by default"
    effect = {"permit": "permits", "deny": "denies", "consent": "permits with consent"}
    return f"rule {rule.id} {effect[rule.effect]} ({about}): {rule.reason}"


def _winning_provision(consents: Sequence[ConsentDirective], caller: Caller, purpose: str,
                       resource: ResourceFacts, resource_class: str | None, now: datetime
                       ) -> tuple[Provision | None, str | None]:
    best: tuple[Provision, str] | None = None
    for directive in consents:
        if not directive.active:
            continue
        for provision in directive.provisions:
            if not provision.applies(caller, purpose, resource.resource_type, resource_class,
                                     resource.source_org, resource.categories, now):
                continue
            if best is None or provision.specificity > best[0].specificity or (
                    provision.specificity == best[0].specificity
                    and provision.effect == "deny" and best[0].effect != "deny"):
                best = (provision, directive.id)
    return (best[0], best[1]) if best else (None, None)
