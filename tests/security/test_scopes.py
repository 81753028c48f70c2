"""SMART scopes: parsing v2 and v1 forms, enforcement per interaction, and what a client is
granted from what it asks for and what it was registered with."""

from __future__ import annotations

import pytest

from unified_record.security import Caller, Interaction, ScopeSet, grant_scopes, parse_scope

Op = Interaction


@pytest.mark.parametrize(("text", "context", "rtype", "perms"), [
    ("system/Patient.rs", "system", "Patient", "rs"),
    ("user/*.rs", "user", "*", "rs"),
    ("patient/Observation.r", "patient", "Observation", "r"),
    ("system/*.cruds", "system", "*", "cruds"),
    ("system/Encounter.cud", "system", "Encounter", "cud"),
    ("user/Patient.read", "user", "Patient", "rs"),
    ("user/Patient.write", "user", "Patient", "cud"),
    ("system/*.*", "system", "*", "cruds"),
])
def test_parse(text: str, context: str, rtype: str, perms: str) -> None:
    scope = parse_scope(text)
    assert (scope.context, scope.resource_type) == (context, rtype)
    assert scope.permissions == frozenset(perms)
    assert str(scope) == text


@pytest.mark.parametrize("text", [
    "system/Patient.", "system/Patient.sr", "system/Patient.rr", "admin/Patient.rs",
    "system/patient.rs", "Patient.read", "system/Patient.rs extra", "system/Patient.x",
    "user/Patient.read?category=x", "openid", "",
])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_scope(text)


@pytest.mark.parametrize(("scopes", "rtype", "interaction", "allowed"), [
    ("system/Patient.rs", "Patient", Op.READ, True),
    ("system/Patient.rs", "Patient", Op.VREAD, True),
    ("system/Patient.rs", "Patient", Op.HISTORY_INSTANCE, True),
    ("system/Patient.rs", "Patient", Op.SEARCH_TYPE, True),
    ("system/Patient.rs", "Patient", Op.HISTORY_TYPE, True),
    ("system/Patient.r", "Patient", Op.SEARCH_TYPE, False),
    ("system/Patient.s", "Patient", Op.READ, False),
    ("system/Patient.rs", "Patient", Op.CREATE, False),
    ("system/Patient.rs", "Observation", Op.READ, False),
    ("system/*.rs", "Observation", Op.READ, True),
    ("system/*.c", "Bundle", Op.CREATE, True),
    ("system/*.cruds", "Condition", Op.DELETE, True),
    ("system/Patient.cu", "Patient", Op.UPDATE, True),
    ("system/Patient.cu", "Patient", Op.PATCH, True),
    ("user/Patient.read", "Patient", Op.SEARCH_TYPE, True),
    ("user/Patient.read", "Patient", Op.CREATE, False),
    ("user/Patient.write", "Patient", Op.CREATE, True),
    ("user/Patient.write", "Patient", Op.READ, False),
    ("system/*.*", "Encounter", Op.DELETE, True),
    ("system/Observation.rs?category=laboratory", "Observation", Op.READ, False),
    ("openid fhirUser", "Patient", Op.READ, False),
    ("", "Patient", Op.READ, False),
])
def test_enforcement(scopes: str, rtype: str, interaction: Interaction, allowed: bool) -> None:
    assert ScopeSet.parse(scopes).permits(rtype, interaction) is allowed


def _caller(scopes: str, patient: str | None = None) -> Caller:
    return Caller(client_id="c", sub="c", organisation="A81001", role=None,
                  scopes=ScopeSet.parse(scopes), issuer="http://x", patient=patient)


def test_patient_scopes_need_a_patient_context() -> None:
    assert not _caller("patient/Patient.rs").permits("Patient", Op.READ)
    assert _caller("patient/Patient.rs", patient="p1").permits("Patient", Op.READ)
    assert _caller("user/Patient.rs patient/Patient.rs").permits("Patient", Op.READ)
    assert ScopeSet.parse("patient/*.rs user/Observation.rs").contexts_permitting(
        "Observation", Op.SEARCH_TYPE) == {"patient", "user"}


def test_scope_set_keeps_other_values_apart() -> None:
    scopes = ScopeSet.parse(["openid", "system/Patient.rs"])
    assert [str(s) for s in scopes] == ["system/Patient.rs"]
    assert scopes.other == ("openid",)


@pytest.mark.parametrize(("requested", "registered", "granted"), [
    ("system/Patient.rs", "system/Patient.rs", ["system/Patient.rs"]),
    ("system/Patient.read", "system/Patient.rs", ["system/Patient.read"]),
    ("system/Patient.cruds", "system/Patient.rs", ["system/Patient.rs"]),
    ("system/Patient.rs", "system/*.rs", ["system/Patient.rs"]),
    ("system/*.rs", "system/Patient.rs system/Encounter.r",
     ["system/Patient.rs", "system/Encounter.r"]),
    ("system/*.write", "system/Patient.rs", []),
    ("user/Patient.rs", "system/Patient.rs", []),
    ("system/Observation.rs?category=laboratory", "system/Observation.rs",
     ["system/Observation.rs?category=laboratory"]),
    ("system/Observation.rs", "system/Observation.rs?category=laboratory", []),
    ("openid system/Patient.rs", "system/Patient.rs", ["system/Patient.rs"]),
    ("not-a-scope", "system/Patient.rs", []),
    (None, "system/Patient.rs user/*.read", ["system/Patient.rs", "user/*.read"]),
    ("", "system/Patient.rs", ["system/Patient.rs"]),
])
def test_grant(requested: str | None, registered: str, granted: list[str]) -> None:
    assert grant_scopes(requested, registered) == granted


def test_granted_never_exceeds_registered() -> None:
    registered = "system/Patient.rs user/Observation.r"
    granted = ScopeSet.parse(" ".join(grant_scopes("system/*.* user/*.* patient/*.*",
                                                   registered)))
    allowed = ScopeSet.parse(registered)
    for rtype in ("Patient", "Observation", "Condition"):
        for interaction in Interaction:
            if granted.permits(rtype, interaction):
                assert allowed.permits(rtype, interaction)
