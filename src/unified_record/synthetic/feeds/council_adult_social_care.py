"""Council adult social care case-system export, one row per event.

Columns and code lists follow the Adult Social Care Client Level Data (CLD) specification,
with the name and address columns a case system adds to its own extracts. Dates are
DD/MM/YYYY as council systems export them.
"""

from __future__ import annotations

import random
from datetime import date, timedelta

from unified_record.synthetic.context import ChunkContext, activity_date, csv_line
from unified_record.synthetic.noise import make_view
from unified_record.synthetic.population import REFERENCE_DATE, Person
from unified_record.synthetic.reference import ETHNIC_CATEGORIES

FEED = "council_adult_social_care"
TARGET = f"{FEED}/asc_events.csv"
LA_CODE = "E08000035"
COLUMNS = (
    "LA Code", "LA Person Unique Identifier", "NHS Number", "Title", "First Name",
    "Middle Names", "Surname", "Date of Birth", "Gender", "Ethnicity", "Address Line 1",
    "Address Line 2", "Town", "Postcode", "Telephone", "Email", "Client Type",
    "Primary Support Reason", "Safeguarding Concern", "Event Type", "Event Reference",
    "Event Start Date", "Event End Date", "Event Outcome", "Request: Route of Access",
    "Assessment Type", "Service Type", "Service Component", "Delivery Mechanism",
)
HEADER = csv_line(list(COLUMNS))

PRIMARY_SUPPORT_REASONS = (
    ("Physical Support: Access & mobility only", ""),
    ("Physical Support: Personal care support", ""),
    ("Physical Support: Personal care support", ""),
    ("Sensory Support: Support for visual impairment", ""),
    ("Sensory Support: Support for hearing impairment", ""),
    ("Support with Memory & Cognition", ""),
    ("Learning Disability Support", ""),
    ("Mental Health Support", "mental_health"),
    ("Social Support: Substance misuse support", "substance_misuse"),
    ("Social Support: Support for Social Isolation/Other", ""),
)
ROUTES = ("Discharge from Hospital", "Diversion from Hospital Services",
          "Community / Other route", "Planned Entry (Transition)",
          "Self-Funder with Depleted Funds")
ASSESSMENT_TYPES = ("Long Term Support Review", "Short Term Support", "Unplanned Review",
                    "Carer Assessment")
SERVICES = (
    ("Long Term Support: Community", "Home Care", "CASSR Managed Personal Budget"),
    ("Long Term Support: Community", "Direct Payment", "Direct Payment"),
    ("Long Term Support: Residential Care", "Residential Care", "CASSR Commissioned Support only"),
    ("Long Term Support: Nursing Care", "Nursing Care", "CASSR Commissioned Support only"),
    ("Short Term Support: ST-Max", "Reablement", "CASSR Commissioned Support only"),
    ("Long Term Support: Community", "Day Care", "CASSR Managed Personal Budget"),
)
OUTCOMES = {
    "Request": ("Progress to Assessment", "NFA - Information & Advice / Signposting only"),
    "Assessment": ("Progress to Support Plan", "NFA - No services provided"),
    "Service": ("Service ended as planned", "Ongoing"),
}
GENDERS = {"M": "Male", "F": "Female"}


def write(ctx: ChunkContext, people: list[Person]) -> None:
    rng = ctx.rng(FEED)
    profile = ctx.profile.feeds[FEED]
    for person in people:
        if rng.random() >= getattr(profile.coverage, person.age_group):
            continue
        copies = 2 if rng.random() < profile.noise.duplicate_record else 1
        for _ in range(copies):
            _client(ctx, rng, person)


def _client(ctx: ChunkContext, rng: random.Random, person: Person) -> None:
    profile = ctx.profile.feeds[FEED]
    view = make_view(person, profile.noise, rng)
    client_id = str(1_000_000 + ctx.next_id(FEED))
    ctx.truth(FEED, client_id, person.person_id)
    psr, category = rng.choice(PRIMARY_SUPPORT_REASONS)
    safeguarding = rng.random() < profile.sensitive.get("safeguarding", 0.0)
    for cat in ([category] if category else []) + (["safeguarding"] if safeguarding else []):
        ctx.sensitive(FEED, client_id, cat)
    gender = GENDERS[view.sex] if rng.random() > 0.01 else "Unknown"
    address = view.address
    street = f"{address.number} {address.street}" if address else ""
    person_cols = [
        LA_CODE, client_id, view.nhs_number, person.title if address else "", view.given,
        view.middle, view.family, view.dob.strftime("%d/%m/%Y"), gender,
        ETHNIC_CATEGORIES[person.ethnicity], street, "", address.town if address else "",
        address.postcode if address else "", view.phone, view.email, "Service User", psr,
        "Y" if safeguarding else "N",
    ]
    low, high = profile.events_per_client
    start = activity_date(rng)
    for n in range(rng.randint(low, high)):
        kind = "Request" if n == 0 else ("Assessment" if n == 1 else "Service")
        end: date | None = start + timedelta(days=rng.randint(1, 200))
        ongoing = kind == "Service" and rng.random() < 0.5
        if ongoing or (end is not None and end > REFERENCE_DATE):
            end = None
        service = rng.choice(SERVICES) if kind == "Service" else ("", "", "")
        ctx.emit(TARGET, csv_line([
            *person_cols, kind, f"EV{ctx.next_id(FEED + ':event')}", start.strftime("%d/%m/%Y"),
            end.strftime("%d/%m/%Y") if end else "", rng.choice(OUTCOMES[kind]),
            rng.choice(ROUTES) if kind == "Request" else "",
            rng.choice(ASSESSMENT_TYPES) if kind == "Assessment" else "",
            *service,
        ]))
        start = end or start + timedelta(days=rng.randint(7, 60))
