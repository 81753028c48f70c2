"""OperationOutcome: how every FHIR error is answered (and never with a stack trace)."""

from __future__ import annotations

from typing import Any

__all__ = ["operation_outcome"]


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    """One issue; `code` from the FHIR issue-type value set (invalid, not-found, forbidden...).

    Callers keep personal data out of `diagnostics`: it is shown to the caller and logged.
    """
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }
