"""Linkage features: folding and parsing rules on hand-made Patients, and the whole path from
the committed sample through ingest and the encrypted store into DuckDB (SQLite and
PostgreSQL)."""

from __future__ import annotations

from typing import Any, cast

import duckdb
import pytest
import sqlalchemy as sa
from linkage_support import sample_store, truth_pairs

from unified_record.fhir.nhs_number import is_valid_nhs_number
from unified_record.fhir.uk_core import (
    CS_NHS_NUMBER_VERIFICATION,
    EXT_NHS_NUMBER_VERIFICATION,
    NHS_NUMBER_SYSTEM,
)
from unified_record.ingest.search_values import soundex
from unified_record.linkage import (
    FEATURE_COLUMNS,
    iter_patient_features,
    load_features,
    patient_features,
)
from unified_record.linkage import features as features_module
from unified_record.store import ResourceRow, UnitOfWork

EXPECTED_COLUMNS = (
    "unique_id", "source_dataset", "source_record_id", "source_org", "active", "replaced_by",
    "nhs_number", "nhs_verified", "first_name", "middle_names", "surname",
    "first_name_soundex", "surname_soundex", "dob", "dob_year", "sex", "postcode",
    "postcode_sector", "postcode_district", "house_number", "address_line1", "phone", "email",
    "last_updated",
)


def features(**patient: Any) -> dict[str, object]:
    body = {"resourceType": "Patient", "id": "p1", **patient}
    return patient_features(body, source_feed="feed", source_org="ORG",
                            source_record_id="R1")


def nhs_identifier(value: str, status: str | None = None) -> dict[str, Any]:
    ident: dict[str, Any] = {"system": NHS_NUMBER_SYSTEM, "value": value}
    if status:
        ident["extension"] = [{
            "url": EXT_NHS_NUMBER_VERIFICATION,
            "valueCodeableConcept": {"coding": [{"system": CS_NHS_NUMBER_VERIFICATION,
                                                 "code": status}]},
        }]
    return ident


# -- the row shape ---------------------------------------------------------------------------


def test_columns_are_the_contract_in_order() -> None:
    assert FEATURE_COLUMNS == EXPECTED_COLUMNS
    assert tuple(features()) == EXPECTED_COLUMNS


def test_empty_patient_gives_nulls_not_empty_strings() -> None:
    row = patient_features({"resourceType": "Patient", "id": "p1"}, source_feed="feed",
                           source_org="", source_record_id=None)
    assert row["unique_id"] == "p1" and row["source_dataset"] == "feed"
    assert row["active"] is True and row["nhs_verified"] is False
    assert all(row[c] is None for c in EXPECTED_COLUMNS
               if c not in ("unique_id", "source_dataset", "active", "nhs_verified"))


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("family", "surname", "code"), [
    ("O'Brien-Smyth", "obriensmyth", "O165"),
    ("O'RAIHLLY", "oraihlly", "O640"),
    ("Jones-Finch", "jonesfinch", "J521"),
    ("ŚLEZIAK", "sleziak", "S422"),
    ("Długajczyk", "dlugajczyk", "D422"),
    ("Ørsted", "orsted", "O623"),
    ("van der Berg", "vanderberg", "V536"),
    ("  ", None, None),
])
def test_surname_folded_to_lower_ascii_letters(family: str, surname: str | None,
                                               code: str | None) -> None:
    row = features(name=[{"family": family, "given": ["Ann"]}])
    assert row["surname"] == surname
    assert row["surname_soundex"] == code


@pytest.mark.parametrize(("given", "first", "middle"), [
    (["Zoë"], "zoe", None),
    (["Kelly-Marie", "O'Neill"], "kellymarie", "oneill"),
    (["SOPHIE", "LINDA"], "sophie", "linda"),
    (["Georgiana", "Lăcrămioara"], "georgiana", "lacramioara"),
    (["Mary Ann", "Louise"], "mary", "ann louise"),  # one given entry holding two names
    (["Aadi", "Aditya", "Raj"], "aadi", "aditya raj"),
    (["-", "José"], "jose", None),  # nothing left after folding is no name
    ([], None, None),
])
def test_first_and_middle_names(given: list[str], first: str | None,
                                middle: str | None) -> None:
    row = features(name=[{"family": "Smith", "given": given}])
    assert (row["first_name"], row["middle_names"]) == (first, middle)
    assert row["first_name_soundex"] == (soundex(first) if first else None)


def test_official_name_before_usual_before_others() -> None:
    maiden = {"use": "maiden", "family": "Williams", "given": ["Lauren"]}
    usual = {"use": "usual", "family": "Matthews", "given": ["Lauren"]}
    official = {"use": "official", "family": "Matthews-Jones", "given": ["Laura"]}
    assert features(name=[maiden, usual])["surname"] == "matthews"
    assert features(name=[maiden, usual, official])["surname"] == "matthewsjones"
    assert features(name=[maiden, {"family": "Page"}])["surname"] == "williams"


# -- identifiers and merges ------------------------------------------------------------------


def test_nhs_number_kept_only_when_modulus_11_passes() -> None:
    assert features(identifier=[nhs_identifier("999 300 1503")])["nhs_number"] == "9993001503"
    assert features(identifier=[nhs_identifier("9993001504")])["nhs_number"] is None
    assert features(identifier=[nhs_identifier("99930015")])["nhs_number"] is None
    other = {"system": "https://council.example/Id/asc-person", "value": "9993001503"}
    assert features(identifier=[other])["nhs_number"] is None
    # an invalid number is skipped in favour of a valid one later in the list
    row = features(identifier=[nhs_identifier("9993001504", "01"),
                               nhs_identifier("9993001503", "02")])
    assert (row["nhs_number"], row["nhs_verified"]) == ("9993001503", False)


def test_nhs_verified_only_for_status_01() -> None:
    assert features(identifier=[nhs_identifier("9993001503", "01")])["nhs_verified"] is True
    assert features(identifier=[nhs_identifier("9993001503", "02")])["nhs_verified"] is False
    assert features(identifier=[nhs_identifier("9993001503")])["nhs_verified"] is False
    assert features(identifier=[nhs_identifier("9993001504", "01")])["nhs_verified"] is False


def test_patient_retired_by_a40_is_inactive_and_points_to_survivor() -> None:
    retired = features(active=False, name=[{"family": "KENT", "given": ["RHYS"]}],
                       link=[{"other": {"reference": "Patient/survivor-1"},
                              "type": "replaced-by"}])
    assert (retired["active"], retired["replaced_by"]) == (False, "survivor-1")
    assert retired["surname"] == "kent"
    survivor = features(link=[{"other": {"reference": "Patient/retired-1"},
                               "type": "replaces"}])
    assert (survivor["active"], survivor["replaced_by"]) == (True, None)
    assert features(active=True)["active"] is True


# -- dates, sex ------------------------------------------------------------------------------


@pytest.mark.parametrize(("birth", "dob", "year"), [
    ("1980-05-17", "1980-05-17", 1980), ("1980-05", None, 1980), ("1980", None, 1980),
    (None, None, None),
])
def test_birth_date(birth: str | None, dob: str | None, year: int | None) -> None:
    row = features(birthDate=birth)
    assert (row["dob"], row["dob_year"]) == (dob, year)


def test_sex_from_gender() -> None:
    assert [features(gender=g)["sex"] for g in ("male", "female", "other", "unknown", None)] \
        == ["male", "female", "other", "unknown", None]


# -- address and contact ---------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "postcode", "sector", "district"), [
    ("M1 1AE", "M11AE", "M1 1", "M1"),
    ("B33 8TH", "B338TH", "B33 8", "B33"),
    ("CR2 6XH", "CR26XH", "CR2 6", "CR2"),
    ("DN55 1PT", "DN551PT", "DN55 1", "DN55"),
    ("W1A 1HQ", "W1A1HQ", "W1A 1", "W1A"),
    ("EC1A 1BB", "EC1A1BB", "EC1A 1", "EC1A"),
    ("ls6 1aa", "LS61AA", "LS6 1", "LS6"),
    (" LS17  8TW ", "LS178TW", "LS17 8", "LS17"),
    ("LS6", None, None, None),
    ("not a postcode", None, None, None),
    ("", None, None, None),
])
def test_postcode_sector_and_district(raw: str, postcode: str | None, sector: str | None,
                                      district: str | None) -> None:
    row = features(address=[{"use": "home", "postalCode": raw}])
    assert (row["postcode"], row["postcode_sector"], row["postcode_district"]) == \
        (postcode, sector, district)


@pytest.mark.parametrize(("line", "number", "rest"), [
    ("12 Roundhay Avenue", "12", "roundhay avenue"),
    ("12a Roundhay Avenue", "12a", "roundhay avenue"),
    ("12A, Roundhay Avenue", "12a", "roundhay avenue"),
    ("12-14 High Street", "12", "high street"),
    ("221B Baker St.", "221b", "baker st"),
    ("Hollybank House Grange Lane", None, "hollybank house grange lane"),
    ("1st Floor Flat", None, "1st floor flat"),
    ("Flat 3, 12 St. Mary’s Road", None, "flat 3 12 st marys road"),
    ("7 Rue de l'Église", "7", "rue de leglise"),
    ("Ashby-de-la-Zouch Road", None, "ashby de la zouch road"),
    ("  ", None, "chapel allerton"),  # a blank first line: the next line is the first
])
def test_house_number_and_first_line(line: str, number: str | None, rest: str | None) -> None:
    row = features(address=[{"use": "home", "line": [line, "Chapel Allerton"]}])
    assert (row["house_number"], row["address_line1"]) == (number, rest)


def test_current_home_address_chosen() -> None:
    old = {"use": "old", "line": ["1 Old Road"], "postalCode": "LS1 1AA"}
    ended = {"use": "home", "line": ["2 Ended Road"], "postalCode": "LS2 2AA",
             "period": {"end": "2020-01-01"}}
    work = {"use": "work", "line": ["3 Work Road"], "postalCode": "LS3 3AA"}
    home = {"use": "home", "line": ["4 Home Road"], "postalCode": "LS4 4AA"}
    assert features(address=[old, ended, work, home])["postcode"] == "LS44AA"
    assert features(address=[old, work])["postcode"] == "LS33AA"
    assert features(address=[old])["postcode"] == "LS11AA"  # nothing current: the first


@pytest.mark.parametrize(("raw", "phone"), [
    ("0113 496 0529", "01134960529"),
    ("07700 900750", "07700900750"),
    ("+44 113 496 0529", "01134960529"),
    ("+44 (0)113 496 0529", "01134960529"),
    ("+447700900750", "07700900750"),
    ("0044 7700 900750", "07700900750"),
    ("447700900750", "07700900750"),
    ("(0113) 496-0529", "01134960529"),
    ("+33 1 23 45 67 89", "0033123456789"),
    ("ex-directory", None),
])
def test_phone_in_uk_national_digits(raw: str, phone: str | None) -> None:
    assert features(telecom=[{"system": "phone", "value": raw}])["phone"] == phone


def test_contact_points() -> None:
    telecom = [
        {"system": "phone", "use": "old", "value": "0113 000 0000"},
        {"system": "email", "value": " Sam.Stevenson72@Example.COM "},
        {"system": "phone", "use": "mobile", "value": "07700 900400"},
    ]
    row = features(telecom=telecom)
    assert (row["phone"], row["email"]) == ("07700900400", "sam.stevenson72@example.com")
    assert features(telecom=[{"system": "email", "value": "  "}])["email"] is None


def test_last_updated_and_provenance_pass_through() -> None:
    row = patient_features(
        {"resourceType": "Patient", "id": "abc",
         "meta": {"lastUpdated": "2026-01-02T03:04:05.678+00:00"}},
        source_feed="gp_fhir", source_org="Y99002", source_record_id="rec-1")
    assert (row["unique_id"], row["source_dataset"], row["source_org"], row["source_record_id"],
            row["last_updated"]) == ("abc", "gp_fhir", "Y99002", "rec-1",
                                     "2026-01-02T03:04:05.678+00:00")


# -- DuckDB ----------------------------------------------------------------------------------


def test_load_features_types_chunks_and_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features_module, "_LOAD_CHUNK", 2)
    rows = [features(id=f"p{i}", birthDate="1990-01-0" + str(i + 1), active=i != 1)
            for i in range(5)]
    con = duckdb.connect()
    assert load_features(con, iter(rows)) == 5
    described = {r[0]: r[1] for r in con.execute("DESCRIBE features").fetchall()}
    assert list(described) == list(EXPECTED_COLUMNS)
    assert (described["active"], described["dob_year"], described["dob"]) == \
        ("BOOLEAN", "INTEGER", "VARCHAR")
    got = con.execute("SELECT unique_id, active, dob_year FROM features ORDER BY unique_id")
    assert got.fetchall() == [(f"p{i}", i != 1, 1990) for i in range(5)]
    assert load_features(con, rows[:1], table="features") == 1  # replaced, not appended
    assert con.execute("SELECT count(*) FROM features").fetchone() == (1,)
    assert load_features(con, [], table="empty_features") == 0
    assert con.execute("SELECT count(*) FROM empty_features").fetchone() == (0,)
    with pytest.raises(ValueError, match="identifier"):
        load_features(con, rows, table="features; DROP TABLE x")


# -- end to end: sample -> ingest -> store -> features -> DuckDB ----------------------------


def _expected(row: dict[str, object], **want: object) -> None:
    assert {k: row[k] for k in want} == want


def test_sample_store_to_duckdb(database_url: str) -> None:
    with sample_store(database_url) as pipeline, pipeline.uow() as uow:
        stored = {
            (r.source_feed, r.source_record_id): r.id
            for r in uow.session.scalars(
                sa.select(ResourceRow).where(ResourceRow.resource_type == "Patient"))
        }
        # a small batch size, so keyset pagination crosses several pages
        rows = list(iter_patient_features(uow, batch_size=97))
    con = duckdb.connect()
    assert load_features(con, rows) == len(rows) == len(stored)
    by_source = {(r["source_dataset"], r["source_record_id"]): r for r in rows}
    assert len(by_source) == len(rows), "one row per source record"
    assert {(k, v["unique_id"]) for k, v in by_source.items()} == set(stored.items())
    assert truth_pairs() <= set(by_source)
    assert con.execute("SELECT count(DISTINCT unique_id) FROM features").fetchone() == (len(rows),)

    numbers = [n for (n,) in con.execute(
        "SELECT nhs_number FROM features WHERE nhs_number IS NOT NULL").fetchall()]
    assert len(numbers) > 600 and all(is_valid_nhs_number(n) for n in numbers)
    blank = con.execute(
        "SELECT count(*) FROM features WHERE first_name = '' OR surname = '' OR postcode = ''"
    ).fetchone()
    assert blank == (0,)
    assert con.execute("SELECT count(*) FROM features WHERE surname IS NULL OR dob IS NULL"
                       " OR last_updated IS NULL").fetchone() == (0,)

    # community_health/referrals.csv: 50000002,999 897 1403,"CARTER, Mark Stephen",12-Mar-2011,
    # 1,"12 Roundhay Avenue, Leeds",LS18 5YP,0113 496 0593,...,RZ2
    _expected(by_source["community_health", "50000002"], source_org="RZ2",
              nhs_number="9998971403", nhs_verified=False, first_name="mark",
              middle_names="stephen", surname="carter", surname_soundex="C636",
              dob="2011-03-12", dob_year=2011, sex="male", postcode="LS185YP",
              postcode_sector="LS18 5", postcode_district="LS18", house_number="12",
              address_line1="roundhay avenue", phone="01134960593", email=None, active=True)
    # council_adult_social_care/asc_events.csv: E08000035,1000001,9991887539,Mr,Thomas,Luke,
    # Jones,15/02/1939,Male,...,161 Otley Lane,,Leeds,LS6 6AS,07700 900400,,...
    _expected(by_source["council_adult_social_care", "1000001"], source_org="E08000035",
              nhs_number="9991887539", first_name="thomas", middle_names="luke",
              surname="jones", dob="1939-02-15", sex="male", postcode="LS66AS",
              postcode_sector="LS6 6", house_number="161", address_line1="otley lane",
              phone="07700900400", email=None)
    # council_childrens_social_care/csc_children.csv: C0000001,,Teresa,Miller,2017-08-31,2,
    # MWBC,"1 Market Lane, Leeds",LS18 1HG,...
    _expected(by_source["council_childrens_social_care", "C0000001"], source_org="E08000035",
              nhs_number=None, first_name="teresa", middle_names=None, surname="miller",
              dob="2017-08-31", sex="female", postcode="LS181HG", house_number="1",
              address_line1="market lane", phone=None)
    # gp_fhir/Y99002.ndjson: Patient 7b2c85d0-...: usual name Suciu, Georgiana Lăcrămioara
    # (maiden name Oprea), 1974-09-22, 162 Brook Crescent BD10 8DZ, NHS 9999371515 status 01
    _expected(by_source["gp_fhir", "7b2c85d0-38c1-446b-ac0b-8b87b495f6e0"],
              source_org="Y99002", nhs_number="9999371515", nhs_verified=True,
              first_name="georgiana", middle_names="lacramioara", surname="suciu",
              dob="1974-09-22", sex="female", postcode="BD108DZ", postcode_district="BD10",
              house_number="162", address_line1="brook crescent", phone=None, email=None)
    # acute_adt: A28 for MRN K0000081 and K0000082 (WILKINSON^SUSAN^CAROLE, 20210918, F,
    # 45 West Close LS26 2YL, 0113 496 0107, PID-32 01), then A40 merging K0000082 into K0000081
    survivor = by_source["acute_adt", "K0000081"]
    retired = by_source["acute_adt", "K0000082"]
    for row in (survivor, retired):
        _expected(row, source_org="RZ1", nhs_number="9998657679", nhs_verified=True,
                  first_name="susan", middle_names="carole", surname="wilkinson",
                  dob="2021-09-18", sex="female", postcode="LS262YL", house_number="45",
                  address_line1="west close", phone="01134960107")
    assert (survivor["active"], survivor["replaced_by"]) == (True, None)
    assert (retired["active"], retired["replaced_by"]) == (False, survivor["unique_id"])
    retired_count = con.execute("SELECT count(*) FROM features WHERE NOT active").fetchone()
    assert retired_count == (4,), "the sample has four A40 merges"


def test_deleted_and_excluded_patients_are_left_out(database_url: str) -> None:
    with sample_store(database_url, feeds=("community_health", "council_childrens_social_care")
                      ) as pipeline:
        with pipeline.uow() as uow:
            before = list(iter_patient_features(uow, batch_size=10))
            gone = next(r for r in before if r["source_record_id"] == "50000002")
            assert uow.resources.delete("Patient", str(gone["unique_id"])) is not None
            uow.commit()
        with pipeline.uow() as uow:
            after = list(iter_patient_features(uow))
            only_health = list(iter_patient_features(
                uow, exclude_feeds={"council_childrens_social_care"}))
    assert [r["unique_id"] for r in after] == \
        [r["unique_id"] for r in before if r is not gone]
    assert {r["source_dataset"] for r in only_health} == {"community_health"}
    assert len(only_health) == len(after) - 7


def test_batch_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_patient_features(cast(UnitOfWork, None), batch_size=0))
