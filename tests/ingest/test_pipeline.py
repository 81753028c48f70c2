"""The ingest pipeline end to end on SQLite and PostgreSQL: every sample feed, provenance,
validity, idempotency, quarantine and replay, and onboarding a feed by mapping file alone."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from ingest_support import MAPPINGS, SAMPLE, make_keys

from unified_record.fhir.validation import validate_resource
from unified_record.ingest import Pipeline
from unified_record.ingest import prepare as prepare_module
from unified_record.ingest.pipeline import BATCH_SIZE, BULK_BATCH_SIZE
from unified_record.ingest.search_values import fold_name
from unified_record.store import migrate
from unified_record.store.db import deferred_for_bulk_load
from unified_record.store.models import InboundMessage, ResourceRow, ResourceVersionRow

CSV_AND_FHIR = ["council_adult_social_care", "council_childrens_social_care",
                "community_health", "gp_fhir"]


def truth_ids(feed: str) -> set[str]:
    with (SAMPLE / "truth.csv").open() as fh:
        return {r["source_record_id"] for r in csv.DictReader(fh) if r["source"] == feed}


def count(pipeline: Pipeline, stmt: sa.Select[tuple[int]]) -> int:
    with pipeline.engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


@pytest.mark.parametrize("feed", CSV_AND_FHIR)
def test_sample_feed_round_trip(pipeline: Pipeline, feed: str) -> None:
    stats = pipeline.ingest_path(feed, SAMPLE / feed)
    assert stats.messages > 0
    assert stats.accepted == stats.messages, "every sample message is accepted"
    with pipeline.uow() as uow:
        rows = uow.session.scalars(sa.select(ResourceRow).where(ResourceRow.source_feed == feed))
        rows = list(rows)
        patients = {r.source_record_id for r in rows if r.resource_type == "Patient"}
        assert patients == truth_ids(feed), "one Patient per source person record"
        for row in rows:
            assert row.source_org and row.source_record_id and row.inbound_message_id
            body = uow.resources.get(row.resource_type, row.id)
            assert body is not None
            validate_resource(body)
            assert body["meta"]["versionId"] == "1"
            prov = uow.resources.provenance(row.resource_type, row.id)
            assert prov is not None and prov.received_at is not None


def test_security_labels_follow_the_mapping(pipeline: Pipeline) -> None:
    pipeline.ingest_path("community_health", SAMPLE / "community_health")
    with (SAMPLE / "sensitive.csv").open() as fh:
        sensitive = {r["source_record_id"]: r["category"] for r in csv.DictReader(fh)
                     if r["source"] == "community_health"}
    with pipeline.uow() as uow:
        episodes = list(uow.session.scalars(sa.select(ResourceRow).where(
            ResourceRow.resource_type == "EpisodeOfCare")))
        labelled = {}
        for row in episodes:
            patient_ref = uow.resources.get("EpisodeOfCare", row.id)["patient"]["reference"]  # type: ignore[index]
            prov = uow.resources.provenance("Patient", patient_ref.split("/")[1])
            assert prov is not None
            if row.security_labels:
                labelled[prov.source_record_id] = row.security_labels
    assert sensitive, "the sample has sensitive community records"
    assert {k: v for k, v in labelled.items()} == sensitive


def test_same_feed_twice_changes_nothing(pipeline: Pipeline) -> None:
    first = pipeline.ingest_path("gp_fhir", SAMPLE / "gp_fhir")
    versions = count(pipeline, sa.select(sa.func.count()).select_from(ResourceVersionRow))
    again = pipeline.ingest_path("gp_fhir", SAMPLE / "gp_fhir")
    assert again.duplicates == first.messages and again.accepted == 0
    assert count(pipeline, sa.select(sa.func.count()).select_from(ResourceVersionRow)) == versions
    assert count(pipeline, sa.select(sa.func.count()).select_from(InboundMessage)) == \
        first.messages


def test_parallel_workers_give_the_same_store(database_url: str, tmp_path: Path) -> None:
    keyring, blind_index = make_keys()
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, workers=2, batch_size=40) as p:
        stats = p.ingest_path("council_adult_social_care", SAMPLE / "council_adult_social_care")
        assert stats.accepted == stats.messages
        with p.uow() as uow:
            ids = set(uow.session.scalars(sa.select(ResourceRow.source_record_id).where(
                ResourceRow.resource_type == "Patient")))
    p.engine.dispose()
    assert ids == truth_ids("council_adult_social_care")



def test_bulk_loads_take_larger_batches_and_a_batch_holds_a_message(database_url: str) -> None:
    """A bulk load commits every BULK_BATCH_SIZE messages (fewer pages written per message,
    docs/benchmarks.md); a feed of a few messages still goes in batches of the size given."""
    keyring, blind_index = make_keys()
    sizes = {}
    for bulk_load in (False, True):
        with Pipeline(database_url, keyring, blind_index, MAPPINGS, bulk_load=bulk_load) as p:
            sizes[bulk_load] = p.batch_size
        p.engine.dispose()
    assert sizes == {False: BATCH_SIZE, True: BULK_BATCH_SIZE}
    assert BULK_BATCH_SIZE > BATCH_SIZE
    batches: list[int] = []
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, bulk_load=True,
                  batch_size=7) as p:
        stats = p.ingest_path("community_health", SAMPLE / "community_health", batches.append)
    p.engine.dispose()
    assert stats.accepted == stats.messages == sum(batches)
    assert batches[:-1] == [7] * (len(batches) - 1) and 0 < batches[-1] <= 7
    with pytest.raises(ValueError, match="batch_size"):
        Pipeline(database_url, keyring, blind_index, MAPPINGS, batch_size=0)


def test_planner_statistics_are_refreshed_as_tables_grow(database_url: str) -> None:
    """PostgreSQL plans batch lookups badly on tables without statistics (see
    store.db.refresh_statistics); the pipeline analyses after batch 1, 2, 4, ..."""
    keyring, blind_index = make_keys()
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, batch_size=20) as p:
        p.ingest_path("community_health", SAMPLE / "community_health")
        assert p._batches_stored >= 2
        if p.engine.dialect.name == "postgresql":
            with p.engine.connect() as conn:
                analysed = conn.execute(sa.text(
                    "SELECT relname FROM pg_stat_user_tables WHERE schemaname = current_schema()"
                    " AND last_analyze IS NOT NULL")).scalars().all()
                sampled = {(str(table), str(column)) for table, column in conn.execute(sa.text(
                    "SELECT tablename, attname FROM pg_stats"
                    " WHERE schemaname = current_schema()"))}
            assert {"resource", "inbound_message", "search_index"} <= set(analysed)
            # what lookups select by, not the encrypted bodies (read back from TOAST to no use)
            assert {("resource", "id"), ("resource", "source_record_id"),
                    ("inbound_message", "content_hash"), ("search_index", "value_hash"),
                    ("resource_version", "inbound_message_id")} <= sampled
            assert not {("resource", "body"), ("resource_version", "body"),
                        ("inbound_message", "raw")} & sampled
    p.engine.dispose()

BAD_CSV = (
    "LA Code,LA Person Unique Identifier,NHS Number,Title,First Name,Middle Names,Surname,"
    "Date of Birth,Gender,Ethnicity,Address Line 1,Address Line 2,Town,Postcode,Telephone,Email,"
    "Client Type,Primary Support Reason,Safeguarding Concern,Event Type,Event Reference,"
    "Event Start Date,Event End Date,Event Outcome,Request: Route of Access,Assessment Type,"
    "Service Type,Service Component,Delivery Mechanism\n"
    "E08000035,900001,9434765919,Ms,Ada,,Lovelace,10/12/1985,Female,Not stated,1 A St,,Leeds,"
    "LS1 1AA,,,Service User,Support with Memory & Cognition,N,Request,EVX1,01/02/2025,,"
    "Ongoing,Community / Other route,,,,\n"
    "E08000035,900002,9434765918,Mr,Alan,,Turing,31/02/1980,Male,Not stated,2 B St,,Leeds,"
    "LS1 1AB,,,Service User,Support with Memory & Cognition,N,Request,EVX2,01/02/2025,,"
    "Ongoing,Community / Other route,,,,\n"
    "E08000035,900003,not-a-number,Dr,Grace,,Hopper,09/12/1986,Female,Not stated,3 C St,,Leeds,"
    "NOT A POSTCODE,,,Service User,Support with Memory & Cognition,N,Request,EVX3,01/02/2025,,"
    "Ongoing,Community / Other route,,,,\n"
    "E08000035,900004,too,few,fields\n"
)


def test_bad_rows_are_quarantined_with_file_line_and_field(pipeline: Pipeline,
                                                           tmp_path: Path) -> None:
    feed_file = tmp_path / "asc.csv"
    feed_file.write_text(BAD_CSV, encoding="utf-8")
    stats = pipeline.ingest_path("council_adult_social_care", feed_file)
    assert (stats.messages, stats.accepted, stats.quarantined) == (4, 2, 2)
    with pipeline.uow() as uow:
        reasons = {m.locator: m.reason for m in uow.messages.quarantined()}
        accepted = {m.locator: m.reason for m in uow.messages.with_status("accepted")}
        # every raw message is kept, exactly as received
        raws = [uow.messages.raw_bytes(m) for m in uow.messages.with_status("quarantined")]
    assert set(reasons) == {"asc.csv:3", "asc.csv:5"}
    assert "Date of Birth" in reasons["asc.csv:3"] and "not a valid date" in reasons["asc.csv:3"]
    assert "5 fields where the header has 29" in reasons["asc.csv:5"]
    assert "31/02/1980" not in reasons["asc.csv:3"], "reasons never echo the data"
    # an invalid NHS number or postcode is left out with a warning; the record is kept
    assert "modulus-11" in accepted["asc.csv:4"] and "postcode" in accepted["asc.csv:4"]
    assert any(raw.endswith(b"too,few,fields\n") for raw in raws)


def test_replay_after_a_mapping_fix(database_url: str, tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, mappings)
    asc = mappings / "council_adult_social_care.yaml"
    good = asc.read_text()
    asc.write_text(good.replace('birthDate: {$: Date of Birth, transform: [{date: "%d/%m/%Y"}]}',
                                'birthDate: {$: Date of Birth, transform: [{date: "%Y-%m-%d"}]}'))
    keyring, blind_index = make_keys()
    feed = SAMPLE / "council_adult_social_care"
    with Pipeline(database_url, keyring, blind_index, mappings) as broken:
        stats = broken.ingest_path("council_adult_social_care", feed)
        assert stats.quarantined == stats.messages > 0
    broken.engine.dispose()
    asc.write_text(good)
    with Pipeline(database_url, keyring, blind_index, mappings) as fixed:
        replayed = fixed.replay("council_adult_social_care")["council_adult_social_care"]
        assert replayed.accepted == stats.messages and replayed.quarantined == 0
        assert fixed.replay() == {}
        with fixed.uow() as uow:
            assert list(uow.messages.quarantined()) == []
    fixed.engine.dispose()


NEW_FEED_MAPPING = """
feed: hospice_referrals
format: csv
source_org: {$const: XHOS1}
record_key: {$: RefNo}
csv: {delimiter: ";", required_columns: [RefNo, FamilyName]}
maps:
  sex: {M: male, F: female}
resources:
  - resource: Patient
    key: {$: RefNo}
    template:
      identifier:
        - system: https://fhir.nhs.uk/Id/nhs-number
          value: {$: NHSNo, transform: [nhs_number], on_error: drop}
      name:
        - family: {$: FamilyName, transform: [trim]}
          given: [{$: Forenames, transform: [words]}]
      gender: {$: Sex, transform: [{map: sex}]}
      birthDate: {$: "DOB(yyyymmdd)", transform: [{date: "%Y%m%d"}]}
      address:
        - postalCode: {$: PC, transform: [postcode], on_error: drop}
"""


def test_a_new_csv_feed_needs_only_a_mapping_file(database_url: str, tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    (mappings / "hospice_referrals.yaml").write_text(NEW_FEED_MAPPING)
    feed = tmp_path / "hospice.csv"
    feed.write_text("RefNo;NHSNo;FamilyName;Forenames;Sex;DOB(yyyymmdd);PC\n"
                    "H1;943 476 5919;Nightingale;Florence Mary;F;19200512;ls29 9zz\n")
    keyring, blind_index = make_keys()
    with Pipeline(database_url, keyring, blind_index, mappings) as p:
        assert p.ingest_path("hospice_referrals", feed).accepted == 1
        with p.uow() as uow:
            patient = uow.resources.find_by_source("Patient", "hospice_referrals", "H1")
            found = uow.resources.search("Patient", "postcode", "LS299ZZ")
    p.engine.dispose()
    assert patient is not None
    assert patient["name"] == [{"family": "Nightingale", "given": ["Florence", "Mary"]}]
    assert patient["identifier"][0]["value"] == "9434765919"
    assert (patient["gender"], patient["birthDate"]) == ("female", "1920-05-12")
    assert patient["address"] == [{"postalCode": "LS29 9ZZ"}]
    assert found == [patient["id"]]


def test_no_personal_data_in_the_database_file(tmp_path: Path) -> None:
    db = tmp_path / "ur.db"
    keyring, blind_index = make_keys()
    with Pipeline(f"sqlite:///{db}", keyring, blind_index, MAPPINGS) as p:
        for feed in CSV_AND_FHIR:
            p.ingest_path(feed, SAMPLE / feed)
    p.engine.dispose()
    data = b"".join(f.read_bytes() for f in tmp_path.iterdir() if f.name.startswith("ur.db"))
    with (SAMPLE / "council_adult_social_care" / "asc_events.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    needles = set()
    for row in rows:
        needles |= {row["Surname"], row["Postcode"], row["NHS Number"], row["Date of Birth"]}
    needles = {n.encode() for n in needles if n and len(n) >= 5}
    assert len(needles) > 20
    leaked = [n for n in needles if n in data]
    assert leaked == []


def test_a_message_that_trips_a_fault_is_quarantined_and_the_rest_go_on(
        pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fhir.resources raised TypeError on a contained resource whose resourceType is a
    list, which stopped the whole ingest; any fault while preparing one message now
    quarantines that message alone, with the fault's type and place but no data."""
    good = (SAMPLE / "gp_fhir" / "Y99000.ndjson").read_text().splitlines()[:2]
    bundle = json.loads(good[0])
    bundle["entry"][0]["resource"]["contained"] = [{"resourceType": ["Patient"]}]
    feed_file = tmp_path / "gp.ndjson"
    feed_file.write_text("\n".join([json.dumps(bundle), good[1]]) + "\n")
    stats = pipeline.ingest_path("gp_fhir", feed_file)
    assert (stats.messages, stats.accepted, stats.quarantined) == (2, 1, 1)
    with pipeline.uow() as uow:
        [reason] = [m.reason for m in uow.messages.quarantined()]
    assert reason is not None and "entry 0: Patient invalid" in reason

    def broken(*_args: object) -> None:
        raise RuntimeError("Grace Hopper 9434765919")  # data in a message must never show

    monkeypatch.setattr(prepare_module, "map_bundle", broken)
    again = tmp_path / "gp2.ndjson"
    again.write_text(good[0] + "\n")
    stats = pipeline.ingest_path("gp_fhir", again)
    assert (stats.messages, stats.quarantined) == (1, 1)
    with pipeline.uow() as uow:
        reasons = [m.reason or "" for m in uow.messages.quarantined()]
    assert any("could not be prepared: RuntimeError at test_pipeline.py:" in r for r in reasons)
    assert not any("Grace" in r or "9434765919" in r for r in reasons)


def _has_lookup_index(engine: sa.Engine) -> bool:
    return "ix_search_index_param_value_hash" in {
        i["name"] for i in sa.inspect(engine).get_indexes("search_index")}


def _message_references(engine: sa.Engine) -> int:
    """How many of the resource tables' foreign keys to inbound_message exist."""
    inspector = sa.inspect(engine)
    return sum(f["referred_table"] == "inbound_message"
               for table in ("resource", "resource_version")
               for f in inspector.get_foreign_keys(table))


def _deferred_in_place(engine: sa.Engine) -> tuple[bool, int]:
    return _has_lookup_index(engine), _message_references(engine)


def test_a_bulk_load_into_an_empty_store_builds_the_deferred_index_and_keys_at_its_end(
        database_url: str) -> None:
    """The blind index's (param, value hash) index, and on PostgreSQL the resource tables'
    foreign keys to their message, are left out while a bulk load fills an empty store
    (store.db.deferred_for_bulk_load) and built once it ends; a load into a store that
    holds resources, or one that is not a bulk load, keeps them all along. Searches find
    what the load stored either way, and the keys are enforced again afterwards."""
    keyring, blind_index = make_keys()
    seen: list[tuple[bool, int]] = []
    postgresql = database_url.startswith("postgresql")
    # SQLite declares its foreign keys in the table itself: they stay, and are enforced
    both = (True, 2)
    for bulk_load, feed in [(True, "community_health"), (True, "council_adult_social_care"),
                            (False, "council_childrens_social_care")]:
        with Pipeline(database_url, keyring, blind_index, MAPPINGS, bulk_load=bulk_load,
                      batch_size=20) as p:
            seen.clear()
            p.on_patients = lambda _ids: seen.append(_deferred_in_place(p.engine))
            p.ingest_path(feed, SAMPLE / feed)
            assert seen and seen == [seen[0]] * len(seen)
            deferred = (False, 0 if postgresql else 2)
            assert seen[0] == (deferred if feed == "community_health" else both), \
                f"{feed}: only the first defers"
            assert _deferred_in_place(p.engine) == both
            with p.uow() as uow:
                patient = uow.session.scalars(sa.select(ResourceRow.id).where(
                    ResourceRow.source_feed == feed,
                    ResourceRow.resource_type == "Patient").limit(1)).one()
                body = uow.resources.get("Patient", patient)
                assert body is not None
                family = fold_name(body["name"][0]["family"])
                assert patient in uow.resources.search("Patient", "family", family)
            with pytest.raises(sa.exc.IntegrityError), p.engine.begin() as conn:
                conn.execute(sa.update(ResourceVersionRow).values(inbound_message_id="0" * 32))
        p.engine.dispose()


def test_migrate_restores_what_a_killed_bulk_load_left_out(database_url: str) -> None:
    """A load killed inside deferred_for_bulk_load never reaches its end: the next migrate
    (every command runs it at start) builds the index and adds the keys, checking rows."""
    keyring, blind_index = make_keys()
    with Pipeline(database_url, keyring, blind_index, MAPPINGS) as p:  # defers nothing itself
        with deferred_for_bulk_load(p.engine):
            p.ingest_path("community_health", SAMPLE / "community_health")
            left_out = _deferred_in_place(p.engine)
            p.engine.dispose()
            migrate(database_url)
            assert _deferred_in_place(p.engine) == (True, 2)
        assert left_out == (False, 0 if database_url.startswith("postgresql") else 2)
        assert _deferred_in_place(p.engine) == (True, 2)
        with pytest.raises(sa.exc.IntegrityError), p.engine.begin() as conn:
            conn.execute(sa.update(ResourceRow).values(inbound_message_id="0" * 32))
    p.engine.dispose()


def test_a_failed_bulk_load_still_builds_the_lookup_index(database_url: str) -> None:
    keyring, blind_index = make_keys()

    def fail(_ids: list[str]) -> None:
        raise RuntimeError("the matcher failed")

    with Pipeline(database_url, keyring, blind_index, MAPPINGS, bulk_load=True,
                  batch_size=20, on_patients=fail) as p:
        with pytest.raises(RuntimeError, match="matcher"):
            p.ingest_path("community_health", SAMPLE / "community_health")
        assert _has_lookup_index(p.engine)
    p.engine.dispose()
