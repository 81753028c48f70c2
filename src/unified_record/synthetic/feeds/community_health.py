"""Community and mental-health trust referrals export (a RiO-style extract).

Its own conventions on purpose: one "SURNAME, Forename Middle" name column, NHS numbers
written "999 123 4567", dates like 02-Jan-1980, gender as the NHS Data Dictionary person
stated gender code (1, 2, 9, X), and the address in one comma-separated column.
"""

from __future__ import annotations

from datetime import date, timedelta

from unified_record.synthetic.context import ChunkContext, activity_date, csv_line
from unified_record.synthetic.noise import make_view
from unified_record.synthetic.population import Person

FEED = "community_health"
TARGET = f"{FEED}/referrals.csv"
ORG_CODE = "RZ2"
COLUMNS = ("Local Patient ID", "NHS No", "Patient Name", "DOB", "Gender", "Address",
           "Post Code", "Telephone", "Team", "Referral Date", "Discharge Date",
           "Provider Code")
HEADER = csv_line(list(COLUMNS))
GENDER_CODES = {"M": "1", "F": "2"}
TEAMS = (
    ("District Nursing", ""), ("Community Physiotherapy", ""), ("Podiatry", ""),
    ("Speech and Language Therapy", ""), ("Community Matron", ""),
    ("Community Mental Health Team", "mental_health"),
    ("Early Intervention in Psychosis", "mental_health"),
    ("NHS Talking Therapies", "mental_health"),
    ("Drug and Alcohol Service", "substance_misuse"),
)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def rio_date(day: date) -> str:
    """02-Jan-1980, independent of the machine's locale."""
    return f"{day.day:02d}-{MONTHS[day.month - 1]}-{day.year}"


def write(ctx: ChunkContext, people: list[Person]) -> None:
    rng = ctx.rng(FEED)
    profile = ctx.profile.feeds[FEED]
    sensitive = profile.sensitive
    for person in people:
        if rng.random() >= getattr(profile.coverage, person.age_group):
            continue
        copies = 2 if rng.random() < profile.noise.duplicate_record else 1
        for _ in range(copies):
            view = make_view(person, profile.noise, rng)
            local_id = str(50_000_000 + ctx.next_id(FEED))
            ctx.truth(FEED, local_id, person.person_id)
            nhs = view.nhs_number
            if nhs and rng.random() < 0.7:
                nhs = f"{nhs[:3]} {nhs[3:6]} {nhs[6:]}"
            name = f"{view.family.upper()}, {view.given} {view.middle}".strip()
            gender = GENDER_CODES[view.sex] if rng.random() > 0.01 else rng.choice("9X")
            address = (f"{view.address.number} {view.address.street}, {view.address.town}"
                       if view.address else "")
            roll = rng.random()
            mental_health = sensitive.get("mental_health", 0.0)
            if roll < mental_health:
                team, category = rng.choice(TEAMS[5:8])
            elif roll < mental_health + sensitive.get("substance_misuse", 0.0):
                team, category = TEAMS[8]
            else:
                team, category = rng.choice(TEAMS[:5])
            if category:
                ctx.sensitive(FEED, local_id, category)
            for _ in range(rng.choice((1, 1, 2))):
                referred = activity_date(rng)
                discharged = referred + timedelta(days=rng.randint(14, 400))
                ctx.emit(TARGET, csv_line([
                    local_id, nhs, name, rio_date(view.dob), gender, address,
                    view.address.postcode if view.address else "", view.phone, team,
                    rio_date(referred),
                    rio_date(discharged) if discharged.year < 2026 and rng.random() < 0.6 else "",
                    ORG_CODE,
                ]))
