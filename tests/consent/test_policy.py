"""Loading the consent policy: the repository's loads; a broken one names file and rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from consent_support import CONSENT_DIR, policy_copy

from unified_record.consent.policy import PolicyError, load_policy
from unified_record.fhir.security_labels import SENSITIVE_CATEGORIES


def test_the_repository_policy_loads_and_covers_the_ingest_labels() -> None:
    policy = load_policy(CONSENT_DIR)
    assert {"social_worker", "nhs_clinician", "partner_system", "data_steward",
            "governance_officer"} <= set(policy.roles)
    assert {"TREAT", "ETREAT", "BTG", "HOPERAT", "HRESCH"} <= set(policy.purposes)
    assert set(SENSITIVE_CATEGORIES) <= set(policy.categories)
    for category, (system, code, _) in SENSITIVE_CATEGORIES.items():
        assert policy.categories_of([{"system": system, "code": code}]) == {category}
    assert not any(policy.purposes[p].opt_out_applies for p in ("TREAT", "ETREAT", "BTG"))
    assert all(policy.purposes[p].opt_out_applies for p in ("HOPERAT", "HRESCH"))
    assert policy.class_of("Condition") == "clinical"
    assert policy.class_of("Patient") == "demographics"


_RULE = """
rules:
  - id: {id}
    effect: {effect}
    role: {role}
    purpose: {purpose}
    reason: test
"""


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("rules", _RULE.format(id="bad-role", effect="permit", role="janitor", purpose="TREAT"),
     "rules.yaml: rule 'bad-role': unknown role 'janitor'"),
    ("rules", _RULE.format(id="bad-purpose", effect="permit", role="nhs_clinician",
                           purpose="TREATS"),
     "rules.yaml: rule 'bad-purpose': unknown purpose 'TREATS'"),
    ("rules", _RULE.format(id="bad-effect", effect="allow", role="nhs_clinician",
                           purpose="TREAT"),
     "rules.yaml: rule 'bad-effect': effect:"),
    ("rules", _RULE.format(id="never", effect="permit", role="data_steward", purpose="TREAT"),
     "rules.yaml: rule 'never': can never apply"),
    ("rules", "rules:\n  - id: no-reason\n    effect: deny\n",
     "rules.yaml: rule 'no-reason': reason: Field required"),
    ("rules", "rules:\n  - effect: deny\n    reason: x\n", "rules.yaml: rule #1: id:"),
    ("rules", "rules:\n  - id: x\n    effect: deny\n    reason: x\n    colour: red\n",
     "rules.yaml: rule 'x': colour: Extra inputs are not permitted"),
    ("rules", "rules:\n  - id: d\n    effect: deny\n    reason: x\n"
              "    obligations: [mark-restricted]\n",
     "rules.yaml: rule 'd': a deny rule has no obligations"),
    ("rules", "rules:\n  - id: o\n    effect: permit\n    reason: x\n    obligations: [shred]\n",
     "rules.yaml: rule 'o': obligations.0:"),
    ("rules", "rules:\n  - id: c\n    effect: deny\n    reason: x\n    category: tattoos\n",
     "rules.yaml: rule 'c': unknown category 'tattoos'"),
    ("rules", "rules: [\n", "rules.yaml: not valid YAML at line"),
    ("rules", "rulez: []\n", "rules.yaml: unknown section 'rulez'"),
    ("purposes", "purposes:\n  TREAT: {display: care}\n",
     "purposes 'ETREAT' must be defined"),
    ("purposes", "purposes:\n  TREAT: {display: t}\n  ETREAT: {display: e}\n"
                 "  BTG: {display: b, opt_out_applies: true}\n",
     "purposes 'BTG': the National Data Opt-out never applies"),
    ("categories", (CONSENT_DIR / "categories.yaml").read_text().replace("code: HIV", "code: H"),
     "categories.yaml: categories 'hiv': must include the label "
     "http://terminology.hl7.org/CodeSystem/v3-ActCode|HIV"),
    ("resource_classes", "resource_classes:\n  clinical: {description: x, types: [Conditoin]}\n",
     "resource_classes.yaml: resource_classes 'clinical': 'Conditoin' is not a FHIR"),
    ("roles", "roles:\n  nurse: {description: x, purposes: [CARE]}\n",
     "roles.yaml: roles 'nurse': unknown purpose 'CARE'"),
])
def test_an_invalid_policy_names_file_and_rule(tmp_path: Path, name: str, text: str,
                                               expected: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(policy_copy(tmp_path, **{name: text}))
    assert expected in str(info.value)


def test_a_duplicate_across_files_names_both(tmp_path: Path) -> None:
    folder = policy_copy(tmp_path)
    (folder / "zz-local.yaml").write_text(
        "rules:\n  - id: direct-care\n    effect: deny\n    reason: again\n")
    with pytest.raises(PolicyError) as info:
        load_policy(folder)
    assert "zz-local.yaml: rule 'direct-care': id already used in rules.yaml" in str(info.value)


def test_a_missing_folder_says_which_setting(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="UR_CONSENT_DIR"):
        load_policy(tmp_path / "nowhere")
