"""Sensitive categories and the security labels (`meta.security`) that carry them.

The category names are this service's; the codings use HL7 v3 ActCode information
sensitivity codes where one fits, and a local code system where none does.
"""

from __future__ import annotations

CS_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CS_LOCAL_SENSITIVITY = "https://unified-record.example/CodeSystem/sensitivity"

SENSITIVE_CATEGORIES: dict[str, tuple[str, str, str]] = {
    # category: (system, code, display)
    "mental_health": (CS_ACT_CODE, "PSY", "psychiatry disorder information sensitivity"),
    "substance_misuse": (CS_ACT_CODE, "ETH", "substance abuse information sensitivity"),
    "sexual_health": (CS_ACT_CODE, "SEX", "sexuality and reproductive health information"),
    "hiv": (CS_ACT_CODE, "HIV", "HIV/AIDS information sensitivity"),
    "safeguarding": (CS_LOCAL_SENSITIVITY, "safeguarding", "safeguarding concern"),
    "gender_identity": (CS_LOCAL_SENSITIVITY, "gender-identity", "gender identity"),
    "adoption": (CS_LOCAL_SENSITIVITY, "adoption", "adoption"),
}


def security_coding(category: str) -> dict[str, str]:
    """The meta.security Coding for a category; KeyError names an unknown category."""
    system, code, display = SENSITIVE_CATEGORIES[category]
    return {"system": system, "code": code, "display": display}


def category_of(system: str, code: str) -> str | None:
    for category, (sys_, code_, _) in SENSITIVE_CATEGORIES.items():
        if sys_ == system and code_ == code:
            return category
    return None
