"""HL7 v2 ADT into the store: files, the MLLP stream, A40 merges, bad messages, and the
`unified-record mllp` listener over a real socket on both databases."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from ingest_support import SAMPLE

from unified_record.fhir.validation import validate_resource
from unified_record.ingest import Pipeline
from unified_record.ingest.hl7_record import Hl7Record, parse_hl7_record
from unified_record.ingest.hl7v2 import parse_message
from unified_record.ingest.mapping import RecordError, resource_id
from unified_record.ingest.mllp import send_mllp
from unified_record.ingest.sources import SourceMessage
from unified_record.store.models import InboundMessage, ResourceRow

FEED = "acute_adt"
MSH = "MSH|^~\\&|PAS|RZ1|UR|COUNCIL|20240101120000||ADT^{event}|{control}|P|2.4|||AL|NE|GBR"
PID = ("PID|1||9434765919^^^NHS^NH~K{mrn}^^^RZ1^MR||TESTER^ANNA^MAY^^MS||19800229|F|||"
       "1 Test Street^^Leeds^^ls1 1aa^GBR^H||0113 496 0000^PRN^PH")


def adt(control: str, event: str = "A28", mrn: str = "9000001", *extra: str,
        pid: str | None = None) -> bytes:
    segments = [MSH.format(event=event, control=control), f"EVN|{event}|20240101120000",
                pid if pid is not None else PID.format(mrn=mrn), *extra]
    return "\r".join(s for s in segments if s).encode()


def pv1(visit: str, service: str = "GEN", admitted: str = "20240101120000",
        discharged: str = "") -> str:
    fields = [""] * 46
    fields[:3] = ["PV1", "1", "I"]
    fields[3], fields[10], fields[19] = "WARD1^^^RZ1", service, f"{visit}^^^RZ1^VN"
    fields[44], fields[45] = admitted, discharged
    return "|".join(fields).rstrip("|")


def stored(pipeline: Pipeline, resource_type: str, key: str) -> dict | None:  # type: ignore[type-arg]
    with pipeline.uow() as uow:
        return uow.resources.get(resource_type, resource_id(FEED, resource_type, key))


def test_filtered_paths_pick_the_identifier_by_type() -> None:
    record = Hl7Record(parse_message(adt("C1")))
    assert record.get("PID-3[5=MR].1") == "K9000001"
    assert record.get("PID-3[5=NH].1") == "9434765919"
    assert record.get("PID-3[5=NH].4") == "NHS"
    assert record.get("PID-3[5=XX].1") is None
    assert record.get("PID-5.2") == "ANNA"
    assert record.get("PID-99") is None


def test_each_path_is_read_from_the_message_once() -> None:
    """A mapping reads some paths several times per message; the record keeps each value."""
    message = parse_message(adt("C1"))
    reads: list[str] = []

    class Counted:
        def get(self, path: str) -> str | None:
            reads.append(path)
            return message.get(path)

    record = Hl7Record(Counted())  # type: ignore[arg-type]
    for _ in range(3):
        assert record.get("PID-5.2") == "ANNA"
        assert record.get("PID-5.1") != "ANNA"
        assert record.get("PID-99") is None
    assert reads == ["PID-5.2", "PID-5.1", "PID-99"]


def test_broken_messages_are_record_errors_naming_the_segment_or_field() -> None:
    with pytest.raises(RecordError, match="PID"):
        parse_hl7_record(adt("C1", pid=""))
    with pytest.raises(RecordError, match="PID-7"):
        parse_hl7_record(adt("C1", pid=PID.format(mrn="1").replace("19800229", "19810229")))
    with pytest.raises(RecordError, match="MSH"):
        parse_hl7_record(b"EVN|A01\rPID|1")


def test_sample_acute_feed_round_trip(pipeline: Pipeline) -> None:
    stats = pipeline.ingest_path(FEED, SAMPLE / FEED)
    assert stats.messages == len(list((SAMPLE / FEED).glob("*.hl7")))
    assert stats.accepted == stats.messages
    with (SAMPLE / "truth.csv").open() as fh:
        mrns = {r["source_record_id"] for r in csv.DictReader(fh) if r["source"] == FEED}
    with pipeline.uow() as uow:
        rows = list(uow.session.scalars(sa.select(ResourceRow).where(
            ResourceRow.source_feed == FEED)))
        assert {r.source_record_id for r in rows if r.resource_type == "Patient"} == mrns
        assert any(r.resource_type == "Encounter" for r in rows)
        for row in rows:
            assert row.source_org == "RZ1" and row.inbound_message_id
            body = uow.resources.get(row.resource_type, row.id)
            assert body is not None
            validate_resource(body)
    # The MLLP stream holds the same messages: all duplicates (by control id and content).
    again = pipeline.ingest_path(FEED, SAMPLE / "acute_adt.mllp")
    assert again.duplicates == stats.messages and again.accepted == 0


def test_sensitive_hospital_services_are_labelled(pipeline: Pipeline) -> None:
    pipeline.ingest_path(FEED, SAMPLE / FEED)
    with (SAMPLE / "sensitive.csv").open() as fh:
        expected = {(r["source_record_id"], r["category"]) for r in csv.DictReader(fh)
                    if r["source"] == FEED}
    found = set()
    with pipeline.uow() as uow:
        for row in uow.session.scalars(sa.select(ResourceRow).where(
                ResourceRow.resource_type == "Encounter", ResourceRow.source_feed == FEED)):
            if row.security_labels:
                body = uow.resources.get("Encounter", row.id)
                assert body is not None
                patient = uow.resources.provenance("Patient",
                                                   body["subject"]["reference"].split("/")[1])
                assert patient is not None
                found.update((patient.source_record_id, label)
                              for label in row.security_labels.split())
    assert expected and expected <= found


def test_patient_mapping(pipeline: Pipeline) -> None:
    outcome = pipeline.process_one(FEED, SourceMessage(adt("C1"), "t"))
    assert outcome.status == "accepted"
    patient = stored(pipeline, "Patient", "K9000001")
    assert patient is not None
    assert patient["name"][0] == {"use": "official", "family": "TESTER", "given": ["ANNA", "MAY"],
                                  "prefix": ["MS"]}
    assert patient["birthDate"] == "1980-02-29" and patient["gender"] == "female"
    assert patient["address"][0]["postalCode"] == "LS1 1AA"
    assert {i["system"]: i["value"] for i in patient["identifier"]} == {
        "https://fhir.nhs.uk/Id/nhs-number": "9434765919",
        "https://acute-trust.example/Id/mrn": "K9000001"}


def test_admission_then_discharge_updates_one_encounter(pipeline: Pipeline) -> None:
    pipeline.process_one(FEED, SourceMessage(adt("C1", "A01", "1", pv1("V1", "PSY")), "t"))
    first = stored(pipeline, "Encounter", "V1")
    assert first is not None and first["status"] == "in-progress"
    discharge = pv1("V1", "PSY", discharged="20240105093000")
    pipeline.process_one(FEED, SourceMessage(adt("C2", "A03", "1", discharge), "t"))
    encounter = stored(pipeline, "Encounter", "V1")
    assert encounter is not None and encounter["meta"]["versionId"] == "2"
    assert encounter["status"] == "finished"
    assert encounter["period"] == {"start": "2024-01-01T12:00:00+00:00",
                                   "end": "2024-01-05T09:30:00+00:00"}
    assert encounter["class"]["code"] == "IMP"
    with pipeline.uow() as uow:
        row = uow.session.get(ResourceRow, ("Encounter", encounter["id"]))
        assert row is not None and row.security_labels == "mental_health"


def test_a40_merge_links_the_two_records(pipeline: Pipeline) -> None:
    pipeline.process_one(FEED, SourceMessage(adt("C1", "A28", "1"), "t"))
    pipeline.process_one(FEED, SourceMessage(adt("C2", "A28", "2"), "t"))
    merge = adt("C3", "A40", "1", "MRG|K2^^^RZ1^MR")
    assert pipeline.process_one(FEED, SourceMessage(merge, "t")).status == "accepted"
    survivor, retired = stored(pipeline, "Patient", "K1"), stored(pipeline, "Patient", "K2")
    assert survivor is not None and retired is not None
    assert retired["active"] is False
    validate_resource(survivor)
    validate_resource(retired)
    assert retired["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"},
                                "type": "replaced-by"}]
    assert {"other": {"reference": f"Patient/{retired['id']}"}, "type": "replaces"} in \
        survivor["link"]
    # A later update of the survivor keeps the merge link.
    pipeline.process_one(FEED, SourceMessage(adt("C4", "A08", "1"), "t"))
    updated = stored(pipeline, "Patient", "K1")
    assert updated is not None and updated["link"] == survivor["link"]


@pytest.mark.parametrize(("raw", "reason"), [
    (adt("B1", pid=""), "PID"),
    (adt("B2", "A40", "1"), "MRG"),
    (adt("B3", pid=PID.format(mrn="1").replace("19800229", "19801340")), "PID-7"),
    (adt("B4", "A01", "1", pv1("V9", admitted="2024130112")), "PV1-44"),
    (b"MSH|^~\\&|PAS|RZ1\rPID|1", "MSH-9"),
    (adt("B6", pid="PID|1||^^^RZ1^MR||X^Y||19800101|F"), "PID-3"),
    (adt("B7", pid="PID|1||K5^^^RZ1^MR||X^Y||19800101|Q"), "PID-8"),
])
def test_bad_messages_are_quarantined_and_kept(pipeline: Pipeline, raw: bytes,
                                               reason: str) -> None:
    outcome = pipeline.process_one(FEED, SourceMessage(raw, "bad.hl7:1"))
    assert outcome.status == "quarantined"
    assert outcome.reason is not None and reason in outcome.reason
    with pipeline.uow() as uow:
        (message,) = uow.messages.quarantined(FEED)
        assert uow.messages.raw_bytes(message) == raw
        assert "TESTER" not in (message.reason or "")


# --- the listener, as a real process on a real socket ----------------------------------------


@pytest.fixture
def listener(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    env = dict(os.environ, UR_DATABASE_URL=database_url, UR_DATA_DIR=str(tmp_path / "var"))
    proc = subprocess.Popen([sys.executable, "-m", "unified_record", "mllp", "--port", "0"],
                            env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = ""
    try:
        while not (match := re.search(r"MLLP listener .*:(\d+) ", seen)):
            line = proc.stderr.readline()
            assert line, f"listener did not start: {seen}"
            seen += line
        yield int(match.group(1))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_mllp_listener_acks_stores_and_naks(listener: int, database_url: str) -> None:
    good = adt("L1", "A01", "1", pv1("V1"))
    acks = send_mllp("127.0.0.1", listener, [good, adt("L2", pid=""), good,
                                             adt("L3", pid=PID.format(mrn="3").replace(
                                                 "19800229", "19801340"))])
    msa = [parse_message(a, validate=False).segments("MSA")[0] for a in acks]
    assert [s.get(1) for s in msa] == ["AA", "AR", "AA", "AE"]
    assert [s.get(2) for s in msa] == ["L1", "L2", "L1", "L3"]
    assert "PID" in (msa[1].get(3) or "") and "PID-7" in (msa[3].get(3) or "")
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.select(InboundMessage.message_control_id,
                                               InboundMessage.status)).all())
        types = sorted(conn.execute(sa.select(ResourceRow.resource_type)).scalars())
    engine.dispose()
    assert statuses == {"L1": "accepted", "L2": "quarantined", "L3": "quarantined"}
    assert types == ["Encounter", "Patient"]


def test_mllp_listener_serves_concurrent_senders(listener: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def sender(n: int) -> list[str]:
        messages = [adt(f"S{n}-{i}", "A28", f"{n}{i:03d}") for i in range(5)]
        return [parse_message(a, validate=False).get("MSA-1") or ""
                for a in send_mllp("127.0.0.1", listener, messages, timeout=30)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(sender, range(8)))
    assert results == [["AA"] * 5] * 8


def test_a_message_without_the_record_key_is_quarantined(pipeline: Pipeline) -> None:
    no_mrn = adt("K1", "A01", "1", pv1("V5"),
                 pid="PID|1||9434765919^^^NHS^NH||TESTER^ANNA||19800229|F")
    outcome = pipeline.process_one(FEED, SourceMessage(no_mrn, "t"))
    assert outcome.status == "quarantined"
    assert outcome.reason == "source record key missing (field 'PID-3[5=MR].1')"
    assert stored(pipeline, "Encounter", "V5") is None
