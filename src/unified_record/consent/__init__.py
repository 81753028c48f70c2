"""Consent: the policy (consent/*.yaml), consent records, the National Data Opt-out,
break-glass, the decision engine and the enforcement point the API calls
(see docs/governance.md)."""

from unified_record.consent.breakglass import BreakGlassError, BreakGlassGrant, BreakGlassReview
from unified_record.consent.enforcement import (
    AccessContext,
    AccessRefused,
    EnforcementPoint,
    ReadResult,
)
from unified_record.consent.engine import (
    Candidate,
    ClientState,
    Decision,
    Filtered,
    ResourceFacts,
    check_purpose,
    decide,
    filter_permitted,
)
from unified_record.consent.policy import Policy, PolicyError, load_policy
from unified_record.consent.records import (
    ConsentDirective,
    ConsentError,
    build_consent,
    parse_consent,
    record_consent,
)
from unified_record.consent.redaction import apply_obligations

__all__ = [
    "AccessContext",
    "AccessRefused",
    "BreakGlassError",
    "BreakGlassGrant",
    "BreakGlassReview",
    "Candidate",
    "ClientState",
    "ConsentDirective",
    "ConsentError",
    "Decision",
    "EnforcementPoint",
    "Filtered",
    "Policy",
    "PolicyError",
    "ReadResult",
    "ResourceFacts",
    "apply_obligations",
    "build_consent",
    "check_purpose",
    "decide",
    "filter_permitted",
    "load_policy",
    "parse_consent",
    "record_consent",
]
