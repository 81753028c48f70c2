"""Read a generated dataset back into one comparable record per source person record.

Test-only code: it parses the feeds the way an outside reader would (csv, python-hl7, JSON),
so the noise tests measure what was really written, not what the generator meant to write.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import hl7

from unified_record.synthetic.reference import fold


@dataclass
class Record:
    source: str
    record_id: str
    nhs: str
    given: str
    middle: str
    family: str
    dob: date
    has_address: bool


def _norm(name: str) -> str:
    return fold(name).lower()


def read_all(root: Path) -> list[Record]:
    return (_asc(root) + _csc(root) + _community(root) + _acute(root) + _gp(root))


def _asc(root: Path) -> list[Record]:
    out: dict[str, Record] = {}
    with (root / "council_adult_social_care" / "asc_events.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["LA Person Unique Identifier"], Record(
                "council_adult_social_care", row["LA Person Unique Identifier"], row["NHS Number"],
                _norm(row["First Name"]), _norm(row["Middle Names"]), _norm(row["Surname"]),
                datetime.strptime(row["Date of Birth"], "%d/%m/%Y").date(), bool(row["Postcode"])))
    return list(out.values())


def _csc(root: Path) -> list[Record]:
    with (root / "council_childrens_social_care" / "csc_children.csv").open(encoding="utf-8") as fh:
        return [Record("council_childrens_social_care", r["Child ID"], r["NHS Number"],
                       _norm(r["Forename"]), "", _norm(r["Surname"]),
                       date.fromisoformat(r["Date of Birth"]), bool(r["Postcode"]))
                for r in csv.DictReader(fh)]


def _community(root: Path) -> list[Record]:
    out: dict[str, Record] = {}
    with (root / "community_health" / "referrals.csv").open(encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            family, _, forenames = r["Patient Name"].partition(", ")
            given, _, middle = forenames.partition(" ")
            out.setdefault(r["Local Patient ID"], Record(
                "community_health", r["Local Patient ID"], r["NHS No"].replace(" ", ""),
                _norm(given), _norm(middle), _norm(family),
                datetime.strptime(r["DOB"], "%d-%b-%Y").date(), bool(r["Post Code"])))
    return list(out.values())


def parse_hl7_file(path: Path) -> hl7.Message:
    return hl7.parse(path.read_bytes().decode("latin-1"))


def _acute(root: Path) -> list[Record]:
    out: dict[str, Record] = {}
    for path in sorted((root / "acute_adt").glob("*.hl7")):
        msg = parse_hl7_file(path)
        if str(msg.segment("MSH")[9][0][1]) == "A40":
            continue
        pid = msg.segment("PID")
        nhs, mrn = "", ""
        for rep in pid[3]:
            kind = str(rep[4])
            if kind == "NH":
                nhs = str(rep[0])
            elif kind == "MR":
                mrn = str(rep[0])
        name = pid[5][0]
        middle = str(name[2]) if len(name) > 2 else ""
        out.setdefault(mrn, Record(
            "acute_adt", mrn, nhs, _norm(str(name[1])), _norm(middle), _norm(str(name[0])),
            datetime.strptime(str(pid[7]), "%Y%m%d").date(), len(pid) > 11 and bool(str(pid[11]))))
    return list(out.values())


def gp_bundles(root: Path) -> list[dict[str, object]]:
    bundles = []
    for path in sorted((root / "gp_fhir").glob("*.ndjson")):
        with path.open(encoding="utf-8") as fh:
            bundles.extend(json.loads(line) for line in fh if line.strip())
    return bundles


def _gp(root: Path) -> list[Record]:
    out = []
    for bundle in gp_bundles(root):
        patient = bundle["entry"][0]["resource"]  # type: ignore[index]
        nhs = next((i["value"] for i in patient.get("identifier", [])
                    if i["system"] == "https://fhir.nhs.uk/Id/nhs-number"), "")
        name = patient["name"][0]
        given = name["given"] + [""]
        out.append(Record("gp_fhir", patient["id"], nhs, _norm(given[0]), _norm(given[1]),
                          _norm(name["family"]), date.fromisoformat(patient["birthDate"]),
                          "address" in patient))
    return out
