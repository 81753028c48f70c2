"""Council children's social care export, one row per child.

Code lists follow the Department for Education's returns: Children in Need census (category
of need N1-N9) and SSDA903 for looked-after children (legal status, reason for new episode,
reason episode ceased, placement type, ethnicity codes). Dates are ISO (YYYY-MM-DD).
"""

from __future__ import annotations

from datetime import timedelta

from unified_record.synthetic.context import ChunkContext, activity_date, csv_line
from unified_record.synthetic.noise import make_view
from unified_record.synthetic.population import Person

FEED = "council_childrens_social_care"
TARGET = f"{FEED}/csc_children.csv"
COLUMNS = (
    "Child ID", "NHS Number", "Forename", "Surname", "Date of Birth", "Sex", "Ethnicity",
    "Address", "Postcode", "Category of Need", "Referral Date", "CIN Closure Date",
    "Child Protection Plan", "CPP Start Date", "Looked After", "Legal Status",
    "Episode Start Date", "Reason for New Episode", "Placement Type", "Episode End Date",
    "Reason Episode Ceased",
)
HEADER = csv_line(list(COLUMNS))
SEX_903 = {"M": "1", "F": "2"}
ETHNICITY_903 = {"A": "WBRI", "B": "WIRI", "C": "WOTH", "D": "MWBC", "F": "MWAS", "H": "AIND",
                 "J": "APKN", "K": "ABAN", "M": "BCRB", "N": "BAFR", "R": "CHNE", "S": "OOTH",
                 "Z": "NOBT"}
CATEGORIES_OF_NEED = ("N1", "N1", "N1", "N2", "N3", "N4", "N5", "N6", "N7", "N8", "N9")
LEGAL_STATUSES = ("C2", "C2", "C1", "E1", "J2", "L1", "V2")
REASONS_NEW_EPISODE = ("S", "L", "P", "T", "U")
PLACEMENTS = ("U1", "U3", "U4", "U5", "U6", "R1", "K2", "P1")
REASONS_CEASED = ("E11", "E12", "E13", "E4A", "E41", "E8")


def write(ctx: ChunkContext, people: list[Person]) -> None:
    rng = ctx.rng(FEED)
    profile = ctx.profile.feeds[FEED]
    for person in people:
        if rng.random() >= getattr(profile.coverage, person.age_group):
            continue
        copies = 2 if rng.random() < profile.noise.duplicate_record else 1
        for _ in range(copies):
            view = make_view(person, profile.noise, rng)
            child_id = f"C{ctx.next_id(FEED):07d}"
            ctx.truth(FEED, child_id, person.person_id)
            referral = activity_date(rng, after=max(person.dob, activity_date(rng)))
            closed = referral + timedelta(days=rng.randint(30, 700))
            closure = closed.isoformat() if rng.random() < 0.4 and closed.year < 2026 else ""
            protection = rng.random() < profile.sensitive.get("safeguarding", 0.0)
            if protection:
                ctx.sensitive(FEED, child_id, "safeguarding")
            row = [
                child_id, view.nhs_number, view.given, view.family, view.dob.isoformat(),
                SEX_903[view.sex], ETHNICITY_903[person.ethnicity],
                f"{view.address.number} {view.address.street}, {view.address.town}"
                if view.address else "",
                view.address.postcode if view.address else "",
                rng.choice(CATEGORIES_OF_NEED), referral.isoformat(), closure,
                "Y" if protection else "N",
                (referral + timedelta(days=rng.randint(5, 60))).isoformat() if protection else "",
            ]
            if rng.random() < profile.looked_after:
                start = referral + timedelta(days=rng.randint(0, 120))
                ended = rng.random() < 0.3
                row += ["Y", rng.choice(LEGAL_STATUSES), start.isoformat(),
                        rng.choice(REASONS_NEW_EPISODE), rng.choice(PLACEMENTS),
                        (start + timedelta(days=rng.randint(20, 400))).isoformat() if ended else "",
                        rng.choice(REASONS_CEASED) if ended else ""]
            else:
                row += ["N", "", "", "", "", "", ""]
            ctx.emit(TARGET, csv_line(row))
