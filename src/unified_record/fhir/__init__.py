"""FHIR R4 / UK Core helpers shared by every layer."""

from unified_record.fhir.nhs_number import (
    is_valid_nhs_number,
    nhs_check_digit,
    normalise_nhs_number,
)

__all__ = ["is_valid_nhs_number", "nhs_check_digit", "normalise_nhs_number"]
