"""The hidden true population: people in households at addresses in and around the city.

Generation is split into fixed-size chunks, each seeded from (seed, chunk index), so the output
is the same bytes whatever the number of worker processes. The shared "world" (streets, care
homes, GP practices, the NHS-number permutation) depends on the seed only.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache

from unified_record.fhir.nhs_number import nhs_check_digit
from unified_record.synthetic.profile import Profile
from unified_record.synthetic.reference import (
    CARE_HOME_WORDS,
    DISTRICTS,
    ETHNIC_CATEGORIES,
    NAME_POOLS,
    STREET_SUFFIXES,
    STREET_WORDS,
    UNIT_LETTERS,
)

CHUNK_SIZE = 5_000  # part of the determinism contract: changing it changes every dataset
REFERENCE_DATE = date(2026, 11, 1)  # "today" for ages, so output doesn't depend on the clock
ORIGIN_ETHNICITY = {
    "british": ("A", "A", "A", "A", "D", "F", "M", "N", "Z"),
    "irish": ("B", "A"),
    "south_asian": ("H", "J", "K", "J"),
    "polish": ("C",),
    "romanian": ("C",),
}


@dataclass(frozen=True, slots=True)
class Address:
    number: str  # house number or care-home name
    street: str
    town: str
    postcode: str


@dataclass(slots=True)
class Person:
    person_id: str
    nhs_number: str  # "" when the person has none
    sex: str  # "M" or "F"
    title: str
    given: str
    middle: str
    family: str
    birth_family: str  # surname at birth; differs after a married-name change
    dob: date
    ethnicity: str  # NHS ethnic category code
    address: Address
    previous_address: Address | None
    phone: str
    email: str
    gp_practice: int
    care_home: bool = False
    twin: bool = False
    flags: set[str] = field(default_factory=set)

    @property
    def age(self) -> int:
        years = REFERENCE_DATE.year - self.dob.year
        return years - ((REFERENCE_DATE.month, REFERENCE_DATE.day) < (self.dob.month, self.dob.day))

    @property
    def age_group(self) -> str:
        age = self.age
        if age < 18:
            return "child"
        if age < 65:
            return "adult"
        return "older" if age < 75 else "elderly"


@dataclass(frozen=True)
class World:
    """Seed-wide shared places: streets (with postcode units), care homes, GP practices."""

    streets: tuple[tuple[str, str, str], ...]  # (street name, town, outward code + sector)
    care_homes: tuple[Address, ...]
    practices: tuple[tuple[str, str], ...]  # (ODS code, practice name)
    nhs_multiplier: int
    nhs_offset: int


_worlds: dict[tuple[int, int, str], World] = {}


def make_world(seed: int, profile: Profile, people: int) -> World:
    """The shared world for a seed, cached per process (workers build it once)."""
    key = (seed, people, profile.model_dump_json())
    if key not in _worlds:
        _worlds[key] = _build_world(seed, profile, people)
    return _worlds[key]


def _build_world(seed: int, profile: Profile, people: int) -> World:
    rng = random.Random(f"{seed}:world")
    n_streets = max(50, people // 120)
    streets = []
    for _ in range(n_streets):
        district, town = rng.choice(DISTRICTS)
        name = f"{rng.choice(STREET_WORDS)} {rng.choice(STREET_SUFFIXES)}"
        streets.append((name, town, f"{district} {rng.randint(1, 9)}"))
    care_homes = []
    for i in range(profile.population.care_homes):
        street, town, sector = streets[rng.randrange(len(streets))]
        home = f"{CARE_HOME_WORDS[i % len(CARE_HOME_WORDS)]} Care Home"
        if i >= len(CARE_HOME_WORDS):
            home = f"{CARE_HOME_WORDS[i % len(CARE_HOME_WORDS)]} House"
        unit = f"{rng.randint(1, 9)}{rng.choice(UNIT_LETTERS)}{rng.choice(UNIT_LETTERS)}"
        care_homes.append(Address(home, street, town, f"{sector.split()[0]} {unit}"))
    practices = tuple(
        (f"Y9{9000 + i:04d}"[-6:], f"{rng.choice(STREET_WORDS)} {suffix}")
        for i, suffix in enumerate(
            rng.choice(("Medical Centre", "Surgery", "Health Centre", "Medical Practice"))
            for _ in range(profile.population.gp_practices)
        )
    )
    valid = _valid_nhs_prefixes()
    multiplier = rng.randrange(1, len(valid))
    while _gcd(multiplier, len(valid)) != 1:
        multiplier += 1
    offset = rng.randrange(len(valid))
    return World(tuple(streets), tuple(care_homes), practices, multiplier, offset)


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


@lru_cache(maxsize=1)
def _valid_nhs_prefixes() -> tuple[int, ...]:
    """Every 999xxxxxx prefix that has a check digit (about 909,000 of the 1,000,000)."""
    return tuple(n for n in range(1_000_000) if nhs_check_digit(f"999{n:06d}") is not None)


def nhs_number_for(world: World, index: int) -> str:
    """A unique test-range NHS number per person index (a permutation of the valid ones)."""
    valid = _valid_nhs_prefixes()
    if index >= len(valid):
        return ""  # the 999 test range is exhausted above ~909,000 people
    nine = f"999{valid[(index * world.nhs_multiplier + world.nhs_offset) % len(valid)]:06d}"
    return nine + str(nhs_check_digit(nine))


class ChunkBuilder:
    """Builds the people of one chunk, household by household."""

    def __init__(self, seed: int, chunk: int, profile: Profile, world: World) -> None:
        self.rng = random.Random(f"{seed}:people:{chunk}")
        self.profile = profile
        self.pop = profile.population
        self.world = world
        self.first_index = chunk * CHUNK_SIZE
        self.people: list[Person] = []
        origins = self.pop.name_origins
        self.origin_names = list(origins)
        self.origin_cum = _cumulative(list(origins.values()))
        mix = profile.households
        self.household_kinds = ["single", "couple", "family", "care_home"]
        self.household_cum = _cumulative([mix.single, mix.couple, mix.family, mix.care_home])

    def build(self, count: int) -> list[Person]:
        while len(self.people) < count:
            kind = self.household_kinds[_pick(self.rng, self.household_cum)]
            getattr(self, f"_{kind}")()
        del self.people[count:]
        return self.people

    # --- households -------------------------------------------------------------------------

    def _single(self) -> None:
        self._add(self._origin(), self.rng.choice("MF"), self._birth(18, 90), self._home(), "")

    def _couple(self) -> None:
        origin, home = self._origin(), self._home()
        dob = self._birth(20, 92)
        surname = self._surname(origin)
        self._add(origin, "M", dob, home, surname)
        self._add(origin, "F", _shift(dob, self.rng.randint(-2500, 2500)), home, surname,
                  partner=True)

    def _family(self) -> None:
        rng = self.rng
        origin, home = self._origin(), self._home()
        surname = self._surname(origin)
        if rng.random() < self.pop.hyphenated_surname:
            surname = f"{surname}-{self._surname(origin)}"
        parent_dob = self._birth(24, 55)
        self._add(origin, "M" if rng.random() < 0.85 else "F", parent_dob, home, surname)
        if rng.random() < 0.7:
            self._add(origin, "F", _shift(parent_dob, rng.randint(-1800, 1800)), home, surname,
                      partner=True)
        youngest = max(REFERENCE_DATE.year - 17, parent_dob.year + 18)
        for _ in range(rng.choice((1, 1, 1, 2, 2, 2, 3))):
            dob = self._birth_between(youngest, REFERENCE_DATE.year)
            self._add(origin, rng.choice("MF"), dob, home, surname)
            if rng.random() < self.pop.twins:
                self._add(origin, rng.choice("MF"), dob, home, surname)
                self.people[-1].twin = self.people[-2].twin = True

    def _care_home(self) -> None:
        rng = self.rng
        if rng.random() >= self.pop.care_home_over_75 * 3:  # most 75+ live at home
            self._add(self._origin(), rng.choice("MF"), self._birth(75, 100), self._home(), "")
            return
        home = rng.choice(self.world.care_homes)
        self._add(self._origin(), "F" if rng.random() < 0.7 else "M", self._birth(75, 102),
                  home, "", care_home=True)

    # --- people -----------------------------------------------------------------------------

    def _add(self, origin: str, sex: str, dob: date, home: Address, surname: str,
             partner: bool = False, care_home: bool = False) -> None:
        rng, pop = self.rng, self.pop
        pool = NAME_POOLS[origin]
        names, cum = (pool.male, pool.male_cum) if sex == "M" else (pool.female, pool.female_cum)
        given = names[_pick(rng, cum)]
        middle = ""
        if rng.random() < pop.middle_name:
            while (middle := names[_pick(rng, cum)]) == given:
                pass
        family = surname or self._surname(origin)
        birth_family = family
        if partner and rng.random() < pop.married_name_change:
            birth_family = self._surname(origin)
        index = self.first_index + len(self.people)
        age = REFERENCE_DATE.year - dob.year
        previous = self._home() if (not care_home and rng.random() < pop.moved_house) else None
        has_nhs = rng.random() >= pop.no_nhs_number
        self.people.append(Person(
            person_id=f"P{index:07d}",
            nhs_number=nhs_number_for(self.world, index) if has_nhs else "",
            sex=sex,
            title=_title(rng, sex, age, partner),
            given=given,
            middle=middle,
            family=family,
            birth_family=birth_family,
            dob=dob,
            ethnicity=rng.choice(ORIGIN_ETHNICITY.get(origin, tuple(ETHNIC_CATEGORIES))),
            address=home,
            previous_address=previous,
            phone=_phone(rng) if rng.random() < pop.phone else "",
            email=_email(rng, given, family) if age >= 16 and rng.random() < pop.email else "",
            gp_practice=rng.randrange(len(self.world.practices)),
            care_home=care_home,
        ))

    def _origin(self) -> str:
        return self.origin_names[_pick(self.rng, self.origin_cum)]

    def _surname(self, origin: str) -> str:
        pool = NAME_POOLS[origin]
        return pool.surnames[_pick(self.rng, pool.surname_cum)]

    def _home(self) -> Address:
        rng = self.rng
        street, town, sector = self.world.streets[rng.randrange(len(self.world.streets))]
        number = rng.randint(1, 240)
        # Houses on the same stretch of a street share a postcode unit, as in real postcodes.
        unit_rng = random.Random(f"{street}|{sector}|{number // 16}")
        unit = f"{sector[-1]}{unit_rng.choice(UNIT_LETTERS)}{unit_rng.choice(UNIT_LETTERS)}"
        return Address(str(number), street, town, f"{sector.split()[0]} {unit}")

    def _birth(self, min_age: int, max_age: int) -> date:
        return self._birth_between(REFERENCE_DATE.year - max_age, REFERENCE_DATE.year - min_age)

    def _birth_between(self, first_year: int, last_year: int) -> date:
        start = date(first_year, 1, 1)
        span = (min(date(last_year, 12, 31), REFERENCE_DATE) - start).days
        return start + timedelta(days=self.rng.randint(0, max(span, 0)))


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for w in weights:
        total += w
        out.append(total)
    return out


def _pick(rng: random.Random, cum: list[float] | tuple[float, ...]) -> int:
    return min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(cum) - 1)


def _shift(day: date, days: int) -> date:
    return min(day + timedelta(days=days), REFERENCE_DATE - timedelta(days=18 * 366))


def _title(rng: random.Random, sex: str, age: int, partner: bool) -> str:
    if age < 16:
        return "Master" if sex == "M" and age < 12 and rng.random() < 0.3 else ""
    if rng.random() < 0.03:
        return "Dr"
    if sex == "M":
        return "Mr"
    return "Mrs" if partner else rng.choice(("Miss", "Ms", "Mrs"))


def _phone(rng: random.Random) -> str:
    # Ofcom's ranges reserved for drama: never a real subscriber.
    if rng.random() < 0.6:
        return f"07700 900{rng.randint(0, 999):03d}"
    return f"0113 496 0{rng.randint(0, 999):03d}"


def _email(rng: random.Random, given: str, family: str) -> str:
    local = f"{given}.{family}".lower().replace(" ", "").replace("'", "")
    return f"{local}{rng.randint(1, 99)}@example.com"


def build_chunk(
    seed: int, chunk: int, count: int, profile: Profile, people_total: int
) -> list[Person]:
    """The true people of one chunk."""
    world = make_world(seed, profile, people_total)
    return ChunkBuilder(seed, chunk, profile, world).build(count)
