"""The normalised values a resource is findable by, for the store's blind index.

Only keyed hashes of these values are stored, never the values.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_NON_ALPHA = re.compile(r"[^A-Z]")
_SOUNDEX = str.maketrans("BFPVCGJKQSXZDTLMNR", "111122222222334556")


def fold_name(name: str) -> str:
    """Upper case, diacritics folded, only letters: "O'Brien-Smyth" -> "OBRIENSMYTH"."""
    text = unicodedata.normalize("NFKD", name.replace("Ł", "L").replace("ł", "l"))
    return _NON_ALPHA.sub("", text.encode("ascii", "ignore").decode("ascii").upper())


def soundex(name: str) -> str:
    """American Soundex of a folded name (a phonetic key for fuzzy name search)."""
    letters = fold_name(name)
    if not letters:
        return ""
    digits = letters.translate(_SOUNDEX)
    code, last = letters[0], digits[0] if not digits[0].isalpha() else ""
    for letter, digit in zip(letters[1:], digits[1:], strict=True):
        if digit.isdigit():
            if digit != last:
                code += digit
            last = digit
        elif letter not in "HW":
            last = ""
    return (code + "000")[:4]


def postcode_key(value: str) -> str:
    return re.sub(r"\s+", "", value.upper())


_NOT_DIGIT = re.compile(r"[^0-9]")


def phone_key(value: str | None) -> str | None:
    """Digits in UK national format: "+44 (0)113 496 0529" -> "01134960529"."""
    if value is None:
        return None
    digits = _NOT_DIGIT.sub("", value)
    if value.lstrip().startswith("+"):
        international = digits
    elif digits.startswith("00"):
        international = digits[2:]
    elif digits.startswith("44") and len(digits) == 12:  # 44 written without the plus
        international = digits
    else:
        return digits or None
    if not international.startswith("44"):
        return "00" + international if international else None  # abroad: keep it distinct
    national = international[2:]
    national = national.removeprefix("0")  # the "(0)" people write after +44
    return "0" + national if national else None


def email_key(value: str | None) -> str | None:
    return (value.strip().lower() or None) if value else None


def index_values(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """(param, normalised value) pairs for the blind index."""
    values: list[tuple[str, str]] = []
    if resource.get("resourceType") == "Patient":
        for ident in resource.get("identifier") or []:
            if ident.get("system") and ident.get("value"):
                values.append(("identifier", f"{ident['system']}|{ident['value'].strip()}"))
        for name in resource.get("name") or []:
            if family := fold_name(name.get("family") or ""):
                values.append(("family", family))
                values.append(("phonetic", soundex(family)))
            for given in name.get("given") or []:
                if isinstance(given, str) and (folded := fold_name(given)):  # null: extension only
                    values.append(("given", folded))
        if birth := resource.get("birthDate"):
            values.append(("birthdate", birth))
            values.append(("birthyear", str(birth)[:4]))
        for telecom in resource.get("telecom") or []:
            value = telecom.get("value") if isinstance(telecom, dict) else None
            if not isinstance(value, str):
                continue
            if telecom.get("system") == "phone" and (phone := phone_key(value)):
                values.append(("phone", phone))
            elif telecom.get("system") == "email" and (email := email_key(value)):
                values.append(("email", email))
        for address in resource.get("address") or []:
            if code := address.get("postalCode"):
                values.append(("postcode", postcode_key(code)))
    for field in ("subject", "patient"):
        ref = resource.get(field)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            values.append(("patient", ref["reference"]))
    return sorted(set(values))
