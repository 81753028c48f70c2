"""Reference data for the synthetic population: names, nicknames, streets and clinical codes.

Names come from Faker's locale lists (public word lists, not people); everything else here is
invented or public terminology. Nothing describes a real person.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

from faker.providers.person.en_GB import Provider as EnGb
from faker.providers.person.en_IE import Provider as EnIe
from faker.providers.person.en_IN import Provider as EnIn
from faker.providers.person.pl_PL import Provider as PlPl
from faker.providers.person.ro_RO import Provider as RoRo


@dataclass(frozen=True)
class NamePool:
    """Names of one origin, most common first, with Zipf-like cumulative weights."""

    male: tuple[str, ...]
    female: tuple[str, ...]
    surnames: tuple[str, ...]
    male_cum: tuple[float, ...]
    female_cum: tuple[float, ...]
    surname_cum: tuple[float, ...]


def _zipf_cum(n: int, offset: float = 8.0) -> tuple[float, ...]:
    total, out = 0.0, []
    for rank in range(n):
        total += 1.0 / (rank + offset)
        out.append(total)
    return tuple(out)


def _unique(names: object) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for name in names:  # type: ignore[attr-defined]
        if isinstance(name, str) and name.isprintable() and " " not in name:
            seen.setdefault(name, None)
    return tuple(seen)


def _stable_order(names: tuple[str, ...]) -> tuple[str, ...]:
    """Alphabetical lists get a fixed pseudo-random order so Zipf weights don't favour 'A'."""
    return tuple(sorted(names, key=lambda n: hashlib.md5(n.encode()).hexdigest()))


def _pool(male: object, female: object, surnames: object, ranked: bool = False) -> NamePool:
    m, f, s = _unique(male), _unique(female), _unique(surnames)
    if not ranked:
        m, f, s = _stable_order(m), _stable_order(f), _stable_order(s)
    return NamePool(m, f, s, _zipf_cum(len(m)), _zipf_cum(len(f)), _zipf_cum(len(s), 3.0))


def _gb_surnames() -> tuple[str, ...]:
    ranked = sorted(EnGb.last_names.items(), key=lambda item: (-item[1], item[0]))
    return tuple(name for name, _ in ranked)


NAME_POOLS: dict[str, NamePool] = {
    "british": _pool(
        EnGb.first_names_male, EnGb.first_names_female, _gb_surnames(), ranked=True
    ),
    "irish": _pool(EnIe.first_names_male, EnIe.first_names_female, EnIe.last_names),
    "south_asian": _pool(EnIn.first_names_male, EnIn.first_names_female, EnIn.last_names),
    "polish": _pool(PlPl.first_names_male, PlPl.first_names_female, PlPl.unisex_last_names),
    "romanian": _pool(RoRo.first_names_male, RoRo.first_names_female, RoRo.last_names),
}

# Formal name -> nicknames people are known by (Bob for Robert).
NICKNAMES: dict[str, tuple[str, ...]] = {
    "Robert": ("Bob", "Rob", "Bobby"), "William": ("Bill", "Will", "Billy"),
    "Richard": ("Rick", "Dick", "Richie"), "James": ("Jim", "Jimmy", "Jamie"),
    "Thomas": ("Tom", "Tommy"), "Michael": ("Mike", "Mick"), "Christopher": ("Chris",),
    "Anthony": ("Tony",), "Edward": ("Ed", "Eddie", "Ted"), "Joseph": ("Joe",),
    "Daniel": ("Dan", "Danny"), "David": ("Dave",), "Andrew": ("Andy", "Drew"),
    "Stephen": ("Steve",), "Steven": ("Steve",), "Matthew": ("Matt",), "Peter": ("Pete",),
    "Samuel": ("Sam",), "Benjamin": ("Ben",), "Alexander": ("Alex", "Sandy"),
    "Nicholas": ("Nick",), "Jonathan": ("Jon",), "Timothy": ("Tim",), "Kenneth": ("Ken",),
    "Ronald": ("Ron",), "Gerald": ("Gerry",), "Charles": ("Charlie", "Chas"),
    "Harry": ("Hal",), "Henry": ("Harry", "Hal"), "Frederick": ("Fred", "Freddie"),
    "Elizabeth": ("Liz", "Beth", "Lizzie", "Betty"), "Margaret": ("Maggie", "Peggy", "Meg"),
    "Katherine": ("Kate", "Kath", "Katie"), "Catherine": ("Cathy", "Kate"),
    "Jennifer": ("Jenny", "Jen"), "Rebecca": ("Becky", "Becca"), "Victoria": ("Vicky", "Tori"),
    "Susan": ("Sue", "Susie"), "Deborah": ("Debbie", "Deb"), "Patricia": ("Pat", "Trish"),
    "Alexandra": ("Alex", "Lexie"), "Samantha": ("Sam", "Sammy"), "Christine": ("Chris",),
    "Jacqueline": ("Jackie",), "Kimberley": ("Kim",), "Abigail": ("Abbie", "Abby"),
    "Eleanor": ("Ellie", "Nell"), "Charlotte": ("Charlie", "Lottie"), "Amanda": ("Mandy",),
    "Dorothy": ("Dot", "Dottie"), "Gillian": ("Gill",), "Josephine": ("Jo", "Josie"),
    "Joanne": ("Jo",), "Lucy": ("Lou",), "Natalie": ("Nat",), "Stephanie": ("Steph",),
}

# Derived "world" vocabulary for streets in and around a UK city.
STREET_WORDS = (
    "Church", "Station", "Victoria", "Park", "Mill", "High", "Manor", "Queens", "Kings",
    "Albert", "Chapel", "School", "Grange", "Springfield", "Highfield", "Mount", "North",
    "South", "West", "East", "Cross", "Green", "Moor", "Bank", "Hall", "Wood", "Oak", "Ash",
    "Elm", "Beech", "Cedar", "Willow", "Meadow", "Brook", "Riverside", "Canal", "Market",
    "Castle", "Abbey", "Priory", "Stanley", "Clarence", "Cavendish", "Harrogate", "Otley",
    "Wakefield", "Bradford", "York", "Crown", "Orchard", "Hollin", "Kirkstall", "Headingley",
    "Roundhay", "Chapeltown", "Beeston", "Armley", "Bramley", "Horsforth", "Garforth",
)
STREET_SUFFIXES = (
    "Road", "Street", "Lane", "Avenue", "Close", "Grove", "Terrace", "Crescent", "Drive",
    "Way", "Place", "Gardens", "View", "Court", "Mount", "Walk",
)
# Postcode districts of the city and its neighbours, with the town used in addresses.
DISTRICTS: tuple[tuple[str, str], ...] = tuple(
    [(f"LS{n}", "Leeds") for n in range(1, 30) if n not in (20, 21, 22, 23, 24)]
    + [("LS20", "Guiseley"), ("LS21", "Otley"), ("LS22", "Wetherby"), ("LS25", "Garforth")]
    + [(f"BD{n}", "Bradford") for n in (1, 2, 3, 4, 5, 10, 11)]
    + [(f"WF{n}", "Wakefield") for n in (1, 2, 3)]
)
UNIT_LETTERS = "ABDEFGHJLNPQRSTUWXYZ"  # letters used in the inward code of real postcodes
CARE_HOME_WORDS = ("Oakwood", "Meadowbank", "Ashfield", "Rosewood", "Beechcroft", "Larchmont",
                   "Willowbrook", "Heathfield", "Elmhurst", "Cedar Lodge", "Fernlea", "Hollybank")

# NHS ethnic category codes (Data Dictionary) with their CLD/case-system wording.
ETHNIC_CATEGORIES: dict[str, str] = {
    "A": "White: English, Welsh, Scottish, Northern Irish or British",
    "B": "White: Irish", "C": "White: Any other White background",
    "D": "Mixed: White and Black Caribbean", "F": "Mixed: White and Asian",
    "H": "Asian or Asian British: Indian", "J": "Asian or Asian British: Pakistani",
    "K": "Asian or Asian British: Bangladeshi", "M": "Black or Black British: Caribbean",
    "N": "Black or Black British: African", "R": "Other: Chinese",
    "S": "Other: Any other ethnic group", "Z": "Not stated",
}

# (SNOMED code, display, sensitive category or "") for GP problem lists.
CONDITIONS: tuple[tuple[str, str, str], ...] = (
    ("44054006", "Type 2 diabetes mellitus", ""),
    ("38341003", "Hypertensive disorder", ""),
    ("195967001", "Asthma", ""),
    ("13645005", "Chronic obstructive lung disease", ""),
    ("69896004", "Rheumatoid arthritis", ""),
    ("22298006", "Myocardial infarction", ""),
    ("26929004", "Alzheimer's disease", ""),
    ("230690007", "Cerebrovascular accident", ""),
    ("35489007", "Depressive disorder", "mental_health"),
    ("58214004", "Schizophrenia", "mental_health"),
    ("7200002", "Alcoholism", "substance_misuse"),
    ("191816009", "Drug dependence", "substance_misuse"),
    ("86406008", "Human immunodeficiency virus infection", "sexual_health"),
)
# (SNOMED/dm+d code, display) of common repeat medications; illustrative codes.
MEDICATIONS: tuple[tuple[str, str], ...] = (
    ("325278007", "Metformin 500mg tablets"),
    ("319283006", "Amlodipine 5mg tablets"),
    ("320176004", "Salbutamol 100micrograms/dose inhaler CFC free"),
    ("320000009", "Atorvastatin 20mg tablets"),
    ("321958004", "Sertraline 50mg tablets"),
    ("318135000", "Omeprazole 20mg gastro-resistant capsules"),
)
ALLERGIES: tuple[tuple[str, str], ...] = (
    ("91936005", "Allergy to penicillin"),
    ("300913006", "Shellfish allergy"),
    ("91935009", "Allergy to peanuts"),
    ("294505008", "Allergy to aspirin"),
)


def fold(text: str) -> str:
    """ASCII-fold a string (Łukasz -> Lukasz); some older systems cannot store diacritics."""
    text = text.replace("Ł", "L").replace("ł", "l")
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
