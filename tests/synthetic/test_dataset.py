"""The generated dataset: layout, validity of every message, truth coverage."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import hl7
import pytest
from feed_reader import Record, gp_bundles, parse_hl7_file
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.patient import Patient

from unified_record.fhir.nhs_number import is_valid_nhs_number
from unified_record.synthetic import FEEDS, generate_dataset, load_profile
from unified_record.synthetic.population import Person


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path: Path) -> None:
    profile = load_profile()
    generate_dataset(7_000, 5, tmp_path / "a", profile, workers=1)
    generate_dataset(7_000, 5, tmp_path / "b", profile, workers=2)
    generate_dataset(7_000, 6, tmp_path / "c", profile, workers=1)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(a) > 100
    assert a == b
    assert a["truth.csv"] != c["truth.csv"]


def test_layout_has_a_folder_per_feed_and_truth(dataset_20k: Path) -> None:
    for feed in FEEDS:
        assert (dataset_20k / feed).is_dir(), feed
    assert (dataset_20k / "acute_adt.mllp").is_file()
    with (dataset_20k / "truth.csv").open() as fh:
        assert next(csv.reader(fh)) == ["source", "source_record_id", "person_id"]


def test_truth_covers_every_source_record_exactly_once(
    dataset_20k: Path, records_20k: list[Record]
) -> None:
    with (dataset_20k / "truth.csv").open() as fh:
        truth = [(r["source"], r["source_record_id"]) for r in csv.DictReader(fh)]
    assert len(truth) == len(set(truth))
    records = {(r.source, r.record_id) for r in records_20k}
    assert records == set(truth)
    assert set(Counter(s for s, _ in truth)) == set(FEEDS)


def test_every_gp_bundle_validates_as_fhir_r4(dataset_20k: Path) -> None:
    bundles = gp_bundles(dataset_20k)
    assert len(bundles) > 18_000
    kinds: Counter[str] = Counter()
    for raw in bundles:
        bundle = Bundle.model_validate(raw)
        assert bundle.type == "transaction"
        for entry in bundle.entry or []:
            kinds[entry.resource.get_resource_type()] += 1
        patient = bundle.entry[0].resource
        assert isinstance(patient, Patient)
        assert patient.meta.profile == [
            "https://fhir.hl7.org.uk/StructureDefinition/UKCore-Patient"]
    assert {"Patient", "Condition", "MedicationStatement", "AllergyIntolerance",
            "Encounter"} <= set(kinds)


def test_every_hl7_message_parses_and_matches_the_mllp_stream(dataset_20k: Path) -> None:
    files = sorted((dataset_20k / "acute_adt").glob("*.hl7"))
    stream = (dataset_20k / "acute_adt.mllp").read_bytes()
    frames = stream.split(b"\x1c\x0d")
    assert frames[-1] == b""
    frames = frames[:-1]
    assert len(frames) == len(files)
    triggers: Counter[str] = Counter()
    for path, frame in zip(files, frames, strict=True):
        raw = path.read_bytes()
        assert frame == b"\x0b" + raw
        assert raw.startswith(b"MSH|^~\\&|") and b"\n" not in raw
        message = parse_hl7_file(path)
        assert isinstance(message, hl7.Message)
        assert str(message.segment("MSH")[12]) == "2.4"
        assert str(message.segment("MSH")[10]) == path.stem.split("_")[1]
        trigger = str(message.segment("MSH")[9][0][1])
        triggers[trigger] += 1
        if trigger == "A40":
            assert str(message.segment("MRG")[1][0][0]).startswith("K")
    assert set(triggers) == {"A01", "A03", "A08", "A28", "A31", "A40"}


def test_nhs_numbers_are_test_range_and_invalid_only_through_profiled_typos(
    records_20k: list[Record], true_people: dict[str, Person]
) -> None:
    truth_nhs = {p.nhs_number for p in true_people.values()}
    assert all(n.startswith("999") and is_valid_nhs_number(n) for n in truth_nhs if n)
    profile = load_profile()
    for source in FEEDS:
        present = [r.nhs for r in records_20k if r.source == source and r.nhs]
        invalid = [n for n in present if not is_valid_nhs_number(n)]
        if profile.feeds[source].noise.nhs_number_typo == 0:
            assert invalid == [], source
        assert all(n.isdigit() and len(n) == 10 for n in present)


@pytest.mark.parametrize("people", [1, 4_999, 5_001])
def test_chunk_edges_give_exactly_the_requested_people(tmp_path: Path, people: int) -> None:
    summary = generate_dataset(people, 1, tmp_path / "d", load_profile(), workers=1)
    with (tmp_path / "d" / "truth.csv").open() as fh:
        persons = {r["person_id"] for r in csv.DictReader(fh)}
    assert len(persons) <= people
    assert max(int(p[1:]) for p in persons) < people
    assert summary.people == people
