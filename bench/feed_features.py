"""Feature rows read straight from a generated dataset's feed files, for benchmarks and tests.

Reads a generated dataset (`synthetic_data/sample` or the output of `unified-record generate`)
directly from its files — CSV, HL7 v2 and FHIR NDJSON — without ingest and the store: each
source person record becomes a minimal FHIR Patient (the GP feed's own Patient as it is), and
`unified_record.linkage.features.patient_features` turns it into the standard feature row, so
the normalisation is the production one. Only what linkage reads is carried over.
`store_feature_rows` takes the production path instead (ingest, store, read back); on the
committed sample both give identical features (tests/linkage/test_model.py).

Acute: the latest message per MRN gives its demographics (A08 updates the address); an A40
retires the MRN in MRG-1 (`active` false, `replaced_by` the surviving Patient).

Used by bench/linkage_accuracy.py, bench/linkage_scale.py and the linkage tests
(tests/linkage/model_support.py); `bench/` is not a package, so callers put this folder on
`sys.path` and import it as `feed_features`.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb

from unified_record.fhir.uk_core import (
    CS_NHS_NUMBER_VERIFICATION,
    EXT_NHS_NUMBER_VERIFICATION,
    NHS_NUMBER_SYSTEM,
)
from unified_record.ingest import Pipeline
from unified_record.ingest.mapping import resource_id
from unified_record.linkage.features import (
    iter_patient_features,
    load_features,
    patient_features,
)
from unified_record.security import BlindIndex, KeyRing

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "synthetic_data" / "sample"
Row = dict[str, object]

_GENDERS = {"male": "male", "m": "male", "1": "male", "female": "female", "f": "female",
            "2": "female", "9": "unknown", "x": "unknown", "0": "unknown"}


def iter_feature_rows(root: Path = SAMPLE) -> Iterator[Row]:
    """Every source person record of a generated dataset as a feature row, one at a time
    (feeds in a fixed order: adult and children's social care, community, acute, GP)."""
    for feed in (_asc, _csc, _community, _acute, _gp):
        yield from feed(root)


def read_feature_rows(root: Path = SAMPLE) -> list[Row]:
    """Every source person record of a generated dataset as a feature row."""
    return list(iter_feature_rows(root))


def load_dataset(con: duckdb.DuckDBPyConnection, root: Path = SAMPLE,
                 table: str = "features") -> list[Row]:
    """Read `root` into feature table `table` of `con`; returns the rows."""
    rows = read_feature_rows(root)
    load_features(con, rows, table)
    return rows


def store_feature_rows(root: Path, database_url: str, workers: int = 1) -> list[Row]:
    """Ingest `root` into the store at `database_url`, then read the features back from it
    (the production path: adapters, mapping, encrypted store, `iter_patient_features`)."""
    keyring = KeyRing({"k1": os.urandom(32)}, "k1")
    with Pipeline(database_url, keyring, BlindIndex(os.urandom(32)), REPO / "mappings",
                  workers=workers) as pipeline:
        try:
            pipeline.ingest_dataset(root)
            with pipeline.uow() as uow:
                return list(iter_patient_features(uow))
        finally:
            pipeline.engine.dispose()


def record_keys(rows: list[Row]) -> dict[str, tuple[str, str]]:
    """unique_id -> (source, source_record_id), as the evaluation needs it."""
    return {str(r["unique_id"]): (str(r["source_dataset"]), str(r["source_record_id"]))
            for r in rows}


def patient(*, feed: str, record_id: str, nhs: str = "", verified: bool = False,
            given: str = "", middle: str = "", family: str = "", dob: date | None = None,
            gender: str = "", line1: str = "", postcode: str = "", phone: str = "",
            email: str = "", active: bool = True, replaced_by: str | None = None
            ) -> dict[str, Any]:
    """A minimal FHIR Patient carrying what linkage reads."""
    body: dict[str, Any] = {"resourceType": "Patient",
                            "id": resource_id(feed, "Patient", record_id), "active": active}
    if nhs:
        ident: dict[str, Any] = {"system": NHS_NUMBER_SYSTEM, "value": nhs.replace(" ", "")}
        if verified:
            ident["extension"] = [{"url": EXT_NHS_NUMBER_VERIFICATION, "valueCodeableConcept": {
                "coding": [{"system": CS_NHS_NUMBER_VERIFICATION, "code": "01"}]}}]
        body["identifier"] = [ident]
    body["name"] = [{"use": "official", "family": family,
                     "given": [g for g in (given, *middle.split()) if g]}]
    if gender:
        body["gender"] = _GENDERS.get(gender.strip().lower(), "unknown")
    if dob:
        body["birthDate"] = dob.isoformat()
    if line1 or postcode:
        body["address"] = [{"use": "home", "line": [line1] if line1 else [],
                            "postalCode": postcode}]
    telecom = [{"system": s, "value": v} for s, v in (("phone", phone), ("email", email)) if v]
    if telecom:
        body["telecom"] = telecom
    if replaced_by:
        body["link"] = [{"type": "replaced-by", "other": {"reference": f"Patient/{replaced_by}"}}]
    return body


def _row(body: dict[str, Any], feed: str, org: str | None, record_id: str) -> Row:
    return patient_features(body, source_feed=feed, source_org=org, source_record_id=record_id)


def _csv_rows(path: Path) -> Iterator[dict[str, str]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8", newline="") as fh:
        yield from csv.DictReader(fh)


def _asc(root: Path) -> Iterator[Row]:
    feed, seen = "council_adult_social_care", set()
    for r in _csv_rows(root / feed / "asc_events.csv"):
        rid = r["LA Person Unique Identifier"]
        if rid in seen:
            continue
        seen.add(rid)
        body = patient(feed=feed, record_id=rid, nhs=r["NHS Number"], given=r["First Name"],
                       middle=r["Middle Names"], family=r["Surname"],
                       dob=datetime.strptime(r["Date of Birth"], "%d/%m/%Y").date(),
                       gender=r["Gender"], line1=r["Address Line 1"], postcode=r["Postcode"],
                       phone=r["Telephone"], email=r["Email"])
        yield _row(body, feed, r["LA Code"], rid)


def _csc(root: Path) -> Iterator[Row]:
    feed = "council_childrens_social_care"
    for r in _csv_rows(root / feed / "csc_children.csv"):
        body = patient(feed=feed, record_id=r["Child ID"], nhs=r["NHS Number"],
                       given=r["Forename"], family=r["Surname"],
                       dob=date.fromisoformat(r["Date of Birth"]), gender=r["Sex"],
                       line1=r["Address"].split(",")[0], postcode=r["Postcode"])
        yield _row(body, feed, None, r["Child ID"])


def _community(root: Path) -> Iterator[Row]:
    feed, seen = "community_health", set()
    for r in _csv_rows(root / feed / "referrals.csv"):
        rid = r["Local Patient ID"]
        if rid in seen:
            continue
        seen.add(rid)
        family, _, forenames = r["Patient Name"].partition(", ")
        given, _, middle = forenames.partition(" ")
        body = patient(feed=feed, record_id=rid, nhs=r["NHS No"], given=given, middle=middle,
                       family=family, dob=datetime.strptime(r["DOB"], "%d-%b-%Y").date(),
                       gender=r["Gender"], line1=r["Address"].split(",")[0],
                       postcode=r["Post Code"], phone=r["Telephone"])
        yield _row(body, feed, r["Provider Code"], rid)


def _field(segment: list[str], index: int) -> str:
    return segment[index] if len(segment) > index else ""


def _unescape(text: str) -> str:
    return (text.replace("\\F\\", "|").replace("\\S\\", "^").replace("\\T\\", "&")
            .replace("\\R\\", "~").replace("\\E\\", "\\"))


def _acute(root: Path) -> Iterator[Row]:
    """One row per MRN from its latest message (files in name order, which is time order).

    At 1,000,000 records this reads some 650,000 files, so it does only what it must per
    message: the file names are listed as strings (not globbed into Paths), only the PID
    and MRG segments are split, and the PID of each MRN's latest message is kept and
    turned into a Patient once, at the end."""
    feed, folder = "acute_adt", root / "acute_adt"
    latest: dict[str, list[str]] = {}  # MRN -> PID segment of its latest message
    merged: dict[str, str] = {}
    names = sorted(n for n in os.listdir(folder) if n.endswith(".hl7")) \
        if folder.is_dir() else []
    for name in names:
        with open(os.path.join(folder, name), "rb") as fh:
            text = fh.read().decode("latin-1")
        pid = mrg = None
        for line in text.split("\r"):
            if pid is None and line.startswith("PID|"):
                pid = line.split("|")
            elif mrg is None and line.startswith("MRG|"):
                mrg = line.split("|")
        if pid is None:
            raise ValueError(f"acute_adt/{name}: no PID segment")
        mrn = _identifiers(pid)[1]
        latest[mrn] = pid
        if mrg is not None:
            merged[_field(mrg, 1).split("^")[0]] = mrn
    for mrn, pid in latest.items():
        survivor = merged.get(mrn)
        nhs = _identifiers(pid)[0]
        name_parts = [*(_unescape(c) for c in _field(pid, 5).split("^")), "", "", ""]
        addr = [*(_unescape(c) for c in _field(pid, 11).split("^")), "", "", "", "", ""]
        body = patient(
            feed=feed, record_id=mrn, active=survivor is None,
            replaced_by=resource_id(feed, "Patient", survivor) if survivor else None,
            nhs=nhs, verified=_field(pid, 32) == "01", given=name_parts[1],
            middle=name_parts[2], family=name_parts[0],
            dob=datetime.strptime(_field(pid, 7), "%Y%m%d").date(), gender=_field(pid, 8),
            line1=addr[0], postcode=addr[4], phone=_field(pid, 13).split("^")[0])
        yield _row(body, feed, "RZ1", mrn)


def _identifiers(pid: list[str]) -> tuple[str, str]:
    """(NHS number, MRN) from PID-3 (the last of each kind wins)."""
    nhs = mrn = ""
    for rep in _field(pid, 3).split("~"):
        comps = [*rep.split("^"), "", "", "", "", ""]
        if comps[4] == "NH":
            nhs = comps[0]
        elif comps[4] == "MR":
            mrn = comps[0]
    return nhs, mrn


def _gp(root: Path) -> Iterator[Row]:
    feed, folder = "gp_fhir", root / "gp_fhir"
    for path in sorted(folder.glob("*.ndjson")) if folder.exists() else []:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    body = _first_resource(line)
                    yield _row(body, feed, path.stem, body["id"])


_DECODER = json.JSONDecoder()
_RESOURCE_KEY = re.compile(r'"resource"\s*:\s*')


def _first_resource(line: str) -> dict[str, Any]:
    """`entry[0].resource` of a Bundle line: the Patient.

    Only that object is decoded (found after `"entry":`), not the conditions, medications
    and encounters after it: at 700,000 Bundles that halves the time. Anything unexpected
    falls back to decoding the whole line."""
    entry = line.find('"entry":')
    found = _RESOURCE_KEY.search(line, entry) if entry >= 0 else None
    if found is not None:
        try:
            body, _ = _DECODER.raw_decode(line, found.end())
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("resourceType") == "Patient":
            return body
    resource: dict[str, Any] = json.loads(line)["entry"][0]["resource"]
    return resource
