from hypothesis import given
from hypothesis import strategies as st

from unified_record.fhir.nhs_number import (
    is_valid_nhs_number,
    nhs_check_digit,
    normalise_nhs_number,
)


def test_known_numbers() -> None:
    assert is_valid_nhs_number("9434765919")  # the NHS Data Dictionary's worked example
    assert is_valid_nhs_number("943 476 5919")
    assert not is_valid_nhs_number("9434765918")
    assert not is_valid_nhs_number("94347659")
    assert not is_valid_nhs_number("943476591X")
    assert not is_valid_nhs_number("٩٤٣٤٧٦٥٩١٩")  # non-ASCII digits are not NHS numbers


def test_normalise_strips_spaces_and_hyphens() -> None:
    assert normalise_nhs_number(" 943-476 5919 ") == "9434765919"


nine_digits = st.text(alphabet="0123456789", min_size=9, max_size=9)


@given(nine_digits)
def test_check_digit_makes_a_valid_number(first_nine: str) -> None:
    check = nhs_check_digit(first_nine)
    if check is None:
        assert not any(is_valid_nhs_number(first_nine + str(d)) for d in range(10))
    else:
        assert is_valid_nhs_number(first_nine + str(check))


@given(nine_digits, st.integers(0, 9), st.integers(1, 9))
def test_any_single_digit_substitution_is_detected(first_nine: str, pos: int, delta: int) -> None:
    check = nhs_check_digit(first_nine)
    if check is None:
        return
    number = first_nine + str(check)
    typo = number[:pos] + str((int(number[pos]) + delta) % 10) + number[pos + 1 :]
    assert not is_valid_nhs_number(typo)
