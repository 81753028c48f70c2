"""NHS number rules: ten digits whose last is a modulus-11 check digit.

Numbers beginning 999 are reserved for testing and never issued to real people, which is why
the synthetic data uses only that range.
"""

from __future__ import annotations

_WEIGHTS = (10, 9, 8, 7, 6, 5, 4, 3, 2)


def nhs_check_digit(first_nine: str) -> int | None:
    """Check digit for nine digits, or None when no valid number starts with them."""
    total = sum(int(d) * w for d, w in zip(first_nine, _WEIGHTS, strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def normalise_nhs_number(value: str) -> str:
    """Strip the spaces and hyphens people type ("999 123 4567", "999-123-4567")."""
    return "".join(ch for ch in value if ch not in " -\t")


def is_valid_nhs_number(value: str) -> bool:
    """True for ten digits with a correct check digit (after normalisation)."""
    digits = normalise_nhs_number(value)
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return False
    return nhs_check_digit(digits[:9]) == int(digits[9])
