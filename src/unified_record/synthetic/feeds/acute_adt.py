"""Acute trust PAS: HL7 v2.4 ADT messages (A01, A03, A08, A28, A31, A40).

PID-3 carries the NHS number (assigning authority NHS, type NH) and the hospital MRN (type MR);
PID-32 the NHS number status; PD1 the registered GP practice. Some patients are registered
twice by mistake (a second MRN); most of those are later merged with an A40.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from unified_record.fhir.nhs_number import is_valid_nhs_number
from unified_record.synthetic.context import ChunkContext, activity_time
from unified_record.synthetic.noise import View, make_view
from unified_record.synthetic.population import Address, Person
from unified_record.synthetic.reference import fold

FEED = "acute_adt"
TARGET = f"{FEED}/messages.part"  # merged into one file per message plus an MLLP stream
TRUST = "RZ1"
SERVICES = ("GEN", "GEN", "CAR", "GER", "RES", "TRA", "SUR", "ORT")
SENSITIVE_SERVICES = {"sexual_health": "GUM", "mental_health": "PSY"}


def escape(text: str) -> str:
    """HL7 v2 escape sequences for the delimiters; diacritics folded as the PAS stores ASCII."""
    return (fold(text).replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
            .replace("&", "\\T\\").replace("~", "\\R\\"))


def write(ctx: ChunkContext, people: list[Person]) -> None:
    rng = ctx.rng(FEED)
    profile = ctx.profile.feeds[FEED]
    for person in people:
        if rng.random() >= getattr(profile.coverage, person.age_group):
            continue
        _patient(ctx, rng, person)
    ctx.buffers[TARGET].sort()  # time order within the chunk; chunks are merged by time


def _patient(ctx: ChunkContext, rng: random.Random, person: Person) -> None:
    profile = ctx.profile.feeds[FEED]
    mrn = f"K{ctx.next_id(FEED):07d}"
    view = make_view(person, profile.noise, rng)
    ctx.truth(FEED, mrn, person.person_id)
    when = activity_time(rng)
    service = "GEN" if person.age >= 16 else "PAE"
    roll = rng.random()
    for category, code in SENSITIVE_SERVICES.items():
        chance = profile.sensitive.get(category, 0.0)
        if roll < chance:
            service = code
            ctx.sensitive(FEED, mrn, category)
            break
        roll -= chance
    for n in range(rng.choice((1, 1, 2, 3))):
        if n or service in SENSITIVE_SERVICES.values():
            visit_service = service if n == 0 else rng.choice(SERVICES)
        else:
            visit_service = service
        sensitive_visit = n == 0 and service in SENSITIVE_SERVICES.values()
        if rng.random() < 0.35 and not sensitive_visit:  # a sensitive record has its visit
            _emit(ctx, rng, "A28", when, mrn, view, person)
            if rng.random() < 0.3:
                when = activity_time(rng, when)
                _emit(ctx, rng, "A31", when, mrn, view, person)
        else:
            visit = f"V{ctx.next_id(FEED + ':visit')}"
            _emit(ctx, rng, "A01", when, mrn, view, person, visit, visit_service, "I")
            admitted = when
            when = when + timedelta(hours=rng.randint(4, 24 * 14))
            _emit(ctx, rng, "A03", when, mrn, view, person, visit, visit_service, "I",
                  admitted=admitted)
        when = activity_time(rng, when)
    if view.address is not None and view.address != person.address and rng.random() < 0.5:
        view.address = person.address  # the patient tells reception they have moved
        _emit(ctx, rng, "A08", activity_time(rng, when), mrn, view, person)
    if rng.random() < profile.noise.duplicate_record:
        duplicate = f"K{ctx.next_id(FEED):07d}"
        dup_view = make_view(person, profile.noise, rng)
        ctx.truth(FEED, duplicate, person.person_id)
        dup_when = activity_time(rng, when)
        _emit(ctx, rng, "A28", dup_when, duplicate, dup_view, person)
        if rng.random() < profile.merge:
            _emit(ctx, rng, "A40", activity_time(rng, dup_when), mrn, view, person,
                  merged_mrn=duplicate)


def _emit(ctx: ChunkContext, rng: random.Random, trigger: str, when: datetime, mrn: str,
          view: View, person: Person, visit: str = "", service: str = "", patient_class: str = "",
          merged_mrn: str = "", admitted: datetime | None = None) -> None:
    stamp = when.strftime("%Y%m%d%H%M%S")
    control = f"{TRUST}{ctx.next_id(FEED + ':msg'):010d}"
    structure = {"A01": "ADT_A01", "A03": "ADT_A03", "A08": "ADT_A01", "A28": "ADT_A05",
                 "A31": "ADT_A05", "A40": "ADT_A39"}[trigger]
    segments = [
        f"MSH|^~\\&|PAS|{TRUST}|UNIFIED_RECORD|COUNCIL|{stamp}||ADT^{trigger}^{structure}|"
        f"{control}|P|2.4|||AL|NE|GBR|8859/1",
        f"EVN|{trigger}|{stamp}",
        _pid(view, mrn, person),
    ]
    practice_code, practice_name = ctx.world.practices[person.gp_practice]
    if trigger != "A40":
        segments.append(f"PD1|||{escape(practice_name)}^^{practice_code}|"
                        f"G{8_000_000 + person.gp_practice * 7:07d}^^^^^^^^^^^^GMC")
    if trigger == "A40":
        segments.append(f"MRG|{merged_mrn}^^^{TRUST}^MR")
    elif visit:
        segments.append(_pv1(patient_class, f"{service}WARD{rng.randint(1, 9)}", service, visit,
                             admitted=(admitted or when).strftime("%Y%m%d%H%M%S"),
                             discharged=stamp if trigger == "A03" else ""))
    else:
        segments.append("PV1|1|N")
    ctx.emit(TARGET, f"{stamp}\t{control}\t" + "\r".join(segments))


def _pv1(patient_class: str, ward: str, service: str, visit: str, admitted: str,
         discharged: str) -> str:
    fields = [""] * 46
    fields[0], fields[1], fields[2] = "PV1", "1", patient_class
    fields[3] = f"{ward}^^^{TRUST}"
    fields[10] = service  # hospital service: GUM (sexual health) and PSY are sensitive
    fields[19] = f"{visit}^^^{TRUST}^VN"
    fields[44], fields[45] = admitted, discharged
    return "|".join(fields).rstrip("|")


def _pid(view: View, mrn: str, person: Person) -> str:
    ids = [f"{mrn}^^^{TRUST}^MR"]
    status = ""
    if view.nhs_number:
        ids.insert(0, f"{view.nhs_number}^^^NHS^NH")
        status = "01" if is_valid_nhs_number(view.nhs_number) else "02"
    name = f"{escape(view.family.upper())}^{escape(view.given.upper())}^" \
           f"{escape(view.middle.upper())}^^{person.title.upper()}"
    sex = view.sex
    address = _address(view.address)
    phone = f"{view.phone}^PRN^PH" if view.phone else ""
    # PID fields 1..32; 32 is the NHS number status (Identity Reliability Code).
    fields = ["PID", "1", "", "~".join(ids), "", name, "", view.dob.strftime("%Y%m%d"), sex,
              "", "", address, "", phone] + [""] * 18 + [status]
    return "|".join(fields).rstrip("|")


def _address(address: Address | None) -> str:
    if address is None:
        return ""
    return (f"{escape(address.number)} {escape(address.street)}^^{escape(address.town)}^^"
            f"{address.postcode}^GBR^H")
