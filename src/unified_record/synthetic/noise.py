"""How a source system's record of a person differs from the truth.

Each feed sees a person through its own noise profile: missing or mistyped NHS numbers,
typos, nicknames, swapped names, transposed dates, old surnames and old addresses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from unified_record.synthetic.population import Address, Person
from unified_record.synthetic.profile import Noise
from unified_record.synthetic.reference import NICKNAMES

_KEYBOARD_NEIGHBOURS = {
    "a": "qsz", "b": "vgn", "c": "xdv", "d": "sfe", "e": "wrd", "f": "dgr", "g": "fht",
    "h": "gjy", "i": "uok", "j": "hku", "k": "jli", "l": "kop", "m": "nj", "n": "bmh",
    "o": "ipl", "p": "ol", "q": "wa", "r": "etf", "s": "adw", "t": "ryg", "u": "yij",
    "v": "cbf", "w": "qes", "x": "zcs", "y": "tuh", "z": "xa",
}


@dataclass(slots=True)
class View:
    """One source record's version of a person."""

    nhs_number: str
    given: str
    middle: str
    family: str
    dob: date
    sex: str
    address: Address | None
    phone: str
    email: str


def make_view(person: Person, noise: Noise, rng: random.Random) -> View:
    """Apply a feed's noise profile to a person."""
    r = rng.random
    nhs = person.nhs_number
    if nhs and r() < noise.nhs_number_missing:
        nhs = ""
    elif nhs and r() < noise.nhs_number_typo:
        nhs = mistype_nhs_number(nhs, rng)

    given, middle = person.given, person.middle
    if given in NICKNAMES and r() < noise.nickname:
        given = rng.choice(NICKNAMES[given])
    if middle and r() < noise.first_middle_swap:
        given, middle = middle, given

    family = person.family
    if person.birth_family != person.family and r() < noise.old_surname:
        family = person.birth_family
    if "-" in family and r() < noise.hyphen_part_only:
        parts = family.split("-")
        family = rng.choice((parts[0], parts[-1], " ".join(parts)))
    if r() < noise.name_typo:
        if r() < 0.5:
            given = typo(given, rng)
        else:
            family = typo(family, rng)

    dob = person.dob
    if dob.day <= 12 and dob.day != dob.month and r() < noise.dob_day_month_swap:
        dob = date(dob.year, dob.day, dob.month)
    elif r() < noise.dob_digit_off:
        dob = digit_off(dob, rng)

    address: Address | None = person.address
    if person.previous_address is not None and r() < noise.old_address:
        address = person.previous_address
    phone, email = person.phone, person.email
    if r() < noise.name_dob_only:
        nhs, address, phone, email = "", None, "", ""
    return View(nhs, given, middle, family, dob, person.sex, address, phone, email)


def mistype_nhs_number(nhs: str, rng: random.Random) -> str:
    """Change one digit. A single substitution always breaks the modulus-11 check."""
    pos = rng.randrange(10)
    digit = str((int(nhs[pos]) + rng.randint(1, 9)) % 10)
    return nhs[:pos] + digit + nhs[pos + 1 :]


def typo(word: str, rng: random.Random) -> str:
    """One keyboard slip: substitution by a neighbouring key, deletion, insertion or swap."""
    if len(word) < 3:
        return word
    pos = rng.randrange(1, len(word) - 1)  # keep the first letter, as people mostly do
    ch = word[pos]
    kind = rng.randrange(4)
    if kind == 0:
        near = _KEYBOARD_NEIGHBOURS.get(ch.lower())
        if near:
            return word[:pos] + rng.choice(near) + word[pos + 1 :]
        kind = 1
    if kind == 1:
        return word[:pos] + word[pos + 1 :]
    if kind == 2:
        return word[:pos] + ch + word[pos:]
    if word[pos] == word[pos + 1]:
        return word[:pos] + word[pos + 1 :]
    return word[:pos] + word[pos + 1] + word[pos] + word[pos + 2 :]


def digit_off(dob: date, rng: random.Random) -> date:
    """A date one digit out: the last digit of the year or the day."""
    if rng.random() < 0.5:
        year = dob.year + rng.choice((-1, 1))
        try:
            return dob.replace(year=year)
        except ValueError:  # 29 February
            return dob.replace(year=year, day=28)
    shifted = dob + timedelta(days=rng.choice((-1, 1)))
    return shifted if shifted.month == dob.month else dob - timedelta(days=1)
