"""Named value transforms that mapping files chain: dates, codes, NHS numbers, postcodes, names.

Each transform takes the current value (a string, a list of strings, or None) and its
argument from the mapping file, and returns the new value, or raises FieldError. Error
reasons describe the problem, never the value: the value may be personal data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from unified_record.fhir.nhs_number import is_valid_nhs_number, normalise_nhs_number

Value = Any  # str | list[str] | bool | None
Transform = Callable[[Value, Any], Value]
LONDON = ZoneInfo("Europe/London")
_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)([0-9][A-Z]{2})$")
_HL7_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$",
                      re.ASCII)


class FieldError(ValueError):
    """A value could not be transformed; `reason` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _text(value: Value) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError("expected text")
    return value


def trim(value: Value, _: Any = None) -> Value:
    text = _text(value)
    return text.strip() or None if text is not None else None


def upper(value: Value, _: Any = None) -> Value:
    text = _text(value)
    return text.upper() if text else None


def lower(value: Value, _: Any = None) -> Value:
    text = _text(value)
    return text.lower() if text else None


def parse_date(value: Value, fmt: str) -> Value:
    """A date in the given strptime format (e.g. %d/%m/%Y) -> ISO YYYY-MM-DD."""
    text = _text(value)
    if not text:
        return None
    try:
        return datetime.strptime(text.strip(), fmt).date().isoformat()
    except ValueError:
        raise FieldError(f"not a valid date in format {fmt}") from None


def hl7_date(value: Value, _: Any = None) -> Value:
    """HL7 v2 DTM (YYYY[MM[DD...]]) -> ISO date; impossible dates are errors."""
    text = _text(value)
    if not text:
        return None
    match = _HL7_DTM.match(text.strip())
    if not match or not match.group(3):
        raise FieldError("not an HL7 date (YYYYMMDD)")
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3))).isoformat()
    except ValueError:
        raise FieldError("impossible date") from None


def hl7_datetime(value: Value, _: Any = None) -> Value:
    """HL7 v2 DTM -> FHIR dateTime; local UK time when the message gives no offset."""
    text = _text(value)
    if not text:
        return None
    match = _HL7_DTM.match(text.strip())
    if not match:
        raise FieldError("not an HL7 date/time")
    year, month, day, hour, minute, second, offset = match.groups()
    if month and not 1 <= int(month) <= 12:
        raise FieldError("impossible date/time")
    if not month or not day:
        return year if not month else f"{year}-{month}"
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                          int(second or 0))
    except ValueError:
        raise FieldError("impossible date/time") from None
    if offset:
        if int(offset[1:3]) > 14 or int(offset[3:5]) > 59:  # as hl7v2 checks PID dates
            raise FieldError("impossible time zone offset")
        sign = 1 if offset[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
        return moment.replace(tzinfo=tz).isoformat()
    return moment.replace(tzinfo=LONDON).isoformat()


def nhs_number(value: Value, _: Any = None) -> Value:
    """Spaces and hyphens removed; a number failing the modulus-11 check is an error."""
    text = _text(value)
    if not text or not text.strip():
        return None
    digits = normalise_nhs_number(text.strip())
    if not is_valid_nhs_number(digits):
        raise FieldError("NHS number fails the modulus-11 check")
    return digits


def postcode(value: Value, _: Any = None) -> Value:
    """UK postcode normalised to upper case with one space ('ls61aa' -> 'LS6 1AA')."""
    text = _text(value)
    if not text:
        return None
    compact = re.sub(r"\s+", "", text.upper())
    if not compact:
        return None
    match = _POSTCODE.match(compact)
    if not match:
        raise FieldError("not a UK postcode")
    return f"{match.group(1)} {match.group(2)}"


def split(value: Value, arg: Any) -> Value:
    """Split on a separator and take one part: {sep: ',', index: 0}. Missing part -> None."""
    text = _text(value)
    if not text:
        return None
    parts = [p.strip() for p in text.split(arg.get("sep", ","))]
    index = int(arg.get("index", 0))
    try:
        return parts[index] or None
    except IndexError:
        return None


def words(value: Value, _: Any = None) -> Value:
    """Whitespace-separated words as a list (for several given names in one field)."""
    text = _text(value)
    return text.split() or None if text else None


def name_part(value: Value, part: str) -> Value:
    """From 'FAMILY, Given Middle Names': 'family', 'given' (first) or 'middle' (list)."""
    text = _text(value)
    if not text:
        return None
    family, sep, forenames = text.partition(",")
    if not sep:
        raise FieldError("expected 'FAMILY, Given' name")
    names = forenames.split()
    if part == "family":
        return family.strip() or None
    if part == "given":
        return names[0] if names else None
    if part == "middle":
        return names[1:] or None
    raise FieldError(f"unknown name part {part}")


def equals(value: Value, expected: Any) -> Value:
    """True when the value equals the argument (e.g. a 'Y' flag), else None."""
    return True if value == expected else None


def is_in(value: Value, options: Any) -> Value:
    return True if value in options else None


def default(value: Value, fallback: Any) -> Value:
    return fallback if value in (None, "", []) else value


def prefix(value: Value, text: Any) -> Value:
    return f"{text}{value}" if value not in (None, "") else None


TRANSFORMS: dict[str, Transform] = {
    "trim": trim,
    "upper": upper,
    "lower": lower,
    "date": parse_date,
    "hl7_date": hl7_date,
    "hl7_datetime": hl7_datetime,
    "nhs_number": nhs_number,
    "postcode": postcode,
    "split": split,
    "words": words,
    "name_part": name_part,
    "equals": equals,
    "in": is_in,
    "default": default,
    "prefix": prefix,
}
# Transforms that need an argument in the mapping file.
NEEDS_ARGUMENT = {"date", "split", "name_part", "equals", "in", "default", "prefix", "map"}


def argument_problem(name: str, arg: Any) -> str | None:
    """What is wrong with a transform's argument in a mapping file (None when nothing is), so
    that a mistake fails when the mapping loads rather than on every record."""
    if name == "date" and not isinstance(arg, str):
        return "the argument must be text"
    if name == "split" and not (
            isinstance(arg, dict) and set(arg) <= {"sep", "index"}
            and isinstance(arg.get("sep", ","), str) and arg.get("sep", ",")
            and isinstance(arg.get("index", 0), int)):
        return "the argument must be {sep: <text>, index: <number>}"
    if name == "name_part" and arg not in ("family", "given", "middle"):
        return "the argument must be family, given or middle"
    if name == "in" and not isinstance(arg, list):
        return "the argument must be a list"
    return None
