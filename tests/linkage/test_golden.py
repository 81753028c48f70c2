"""The golden Patient: survivorship rules on hand-made sources, and from the linked sample."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from linkage_support import sample_store

from unified_record.fhir.uk_core import EXT_NHS_NUMBER_VERIFICATION, NHS_NUMBER_SYSTEM
from unified_record.linkage.golden import (
    SourcePatient,
    assemble_golden,
    golden_patient,
    is_council_org,
)
from unified_record.linkage.index import current_clusters, run_full_linkage
from unified_record.linkage.review import decide
from unified_record.store.models import LinkagePairRow
from unified_record.store.resources import ResourceRepository

NHS = "9434765919"  # a valid (modulus 11) test number
GP, TRUST, COUNCIL = "B82005", "RR8", "E08000035"


def nhs_identifier(verified: bool) -> dict[str, Any]:
    code = "01" if verified else "02"
    return {"system": NHS_NUMBER_SYSTEM, "value": NHS, "extension": [{
        "url": EXT_NHS_NUMBER_VERIFICATION, "valueCodeableConcept": {"coding": [{
            "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-NHSNumberVerificationStatusEngland",
            "code": code}]}}]}


def source(pid: str, org: str, updated: str, **body: Any) -> SourcePatient:
    return SourcePatient({"resourceType": "Patient", "id": pid, **body}, org, updated)


def test_council_codes_are_told_from_ods_codes() -> None:
    assert is_council_org(COUNCIL) and is_council_org("w06000015")
    assert not is_council_org(GP) and not is_council_org(TRUST) and not is_council_org(None)


def test_verified_nhs_demographics_win_and_every_source_is_linked() -> None:
    council = source("p-council", COUNCIL, "2026-11-20T10:00:00+00:00",
                     identifier=[{"system": "https://council.example/Id/case", "value": "A1"}],
                     name=[{"family": "Smyth", "given": ["Jo"]}], birthDate="1980-02-01",
                     address=[{"line": ["9 New Street"], "postalCode": "LS1 1AA"}],
                     meta={"security": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                   "v3-ActCode", "code": "SDV"}]})
    gp = source("p-gp", GP, "2025-01-01T00:00:00+00:00", identifier=[nhs_identifier(True)],
                name=[{"family": "Smith", "given": ["Joanne"]}], gender="female",
                birthDate="1980-01-02")
    acute = source("p-acute", TRUST, "2026-06-01T00:00:00+00:00",
                   identifier=[nhs_identifier(False),
                               {"system": "https://trust.example/Id/mrn", "value": "M7"}],
                   name=[{"family": "SMITH", "given": ["JOANNE"]}],
                   address=[{"line": ["1 Old Road"], "postalCode": "LS2 2BB"}],
                   deceasedDateTime="2026-05-30")
    golden = assemble_golden("C0123456789ab", [council, acute, gp], "https://x.example/client")

    assert golden["id"] == "C0123456789ab" and golden["active"] is True
    assert golden["name"] == [{"family": "Smith", "given": ["Joanne"]}]  # verified NHS first
    assert golden["gender"] == "female" and golden["birthDate"] == "1980-01-02"
    # The GP record has no address: the next source in rank, NHS before council.
    assert golden["address"] == [{"line": ["1 Old Road"], "postalCode": "LS2 2BB"}]
    assert golden["deceasedDateTime"] == "2026-05-30"  # a death recorded anywhere counts
    systems = [(i["system"], i["value"]) for i in golden["identifier"]]
    assert systems[0] == ("https://x.example/client", "C0123456789ab")
    assert systems.count((NHS_NUMBER_SYSTEM, NHS)) == 1
    assert golden["identifier"][1]["extension"][0]["valueCodeableConcept"]["coding"][0][
        "code"] == "01"
    assert ("https://council.example/Id/case", "A1") in systems
    assert ("https://trust.example/Id/mrn", "M7") in systems
    assert [link["other"]["reference"] for link in golden["link"]] == [
        "Patient/p-acute", "Patient/p-council", "Patient/p-gp"]
    assert {link["type"] for link in golden["link"]} == {"seealso"}
    assert golden["meta"]["security"][0]["code"] == "SDV"


def test_without_a_verified_number_nhs_sources_then_the_newest_win() -> None:
    old_gp = source("a", GP, "2024-01-01T00:00:00+00:00", name=[{"family": "Old"}])
    new_trust = source("b", TRUST, "2026-01-01T00:00:00+00:00", name=[{"family": "New"}])
    newest_council = source("c", COUNCIL, "2026-11-01T00:00:00+00:00",
                            name=[{"family": "Council"}], birthDate="1990-03-04")
    merged_away = source("d", TRUST, "2026-11-02T00:00:00+00:00", active=False,
                         name=[{"family": "Merged"}])
    golden = assemble_golden("C1", [old_gp, newest_council, merged_away, new_trust])
    assert golden["name"] == [{"family": "New"}]
    assert golden["birthDate"] == "1990-03-04"  # only the council has it
    assert "deceasedDateTime" not in golden and "deceasedBoolean" not in golden


@pytest.mark.slow
def test_golden_patients_from_the_linked_sample(database_url: str, tmp_path: Path) -> None:
    with sample_store(database_url) as pipeline:
        keyring, blind_index = pipeline.keyring, pipeline.blind_index
        run_full_linkage(pipeline.sessions, keyring, blind_index,
                         model_path=tmp_path / "model.json", auto_link_threshold=0.99999)
        with pipeline.sessions() as session:
            repo = ResourceRepository(session, keyring, blind_index)
            index = current_clusters(session)
            sizes = Counter(index.values())
            # Client ids are random: take a client of three records of which one at least
            # has a birth date (some of the sample's people have none anywhere).
            client = min(c for c, n in sizes.items() if n >= 3 and any(
                (repo.get("Patient", uid) or {}).get("birthDate")
                for uid, owner in index.items() if owner == c))
            golden = golden_patient(session, repo, client)
            assert golden is not None
            members = sorted(uid for uid, c in index.items() if c == client)
            assert sorted(link["other"]["reference"] for link in golden["link"]) == [
                f"Patient/{uid}" for uid in members]
            assert golden["name"] and golden["birthDate"]
            assert golden_patient(session, repo, "C-no-such-client") is None

            # Two clients merged by a steward: the retired id points to the survivor.
            a, b = session.execute(
                sa.select(LinkagePairRow.unique_id_l, LinkagePairRow.unique_id_r)
                .where(LinkagePairRow.match_probability < 0.99999)
                .order_by(LinkagePairRow.match_weight.desc()).limit(1)).one()
            before = {index[a], index[b]}
            outcome = decide(session, keyring, blind_index, "link", a, b, decided_by="s",
                             reason="same person", auto_link_threshold=0.99999)
            session.commit()
            survivor = outcome.clients[a]
            [retired] = before - {survivor}
            gone = golden_patient(session, repo, retired)
            assert gone is not None and gone["active"] is False
            assert gone["link"] == [{"other": {"reference": f"Patient/{survivor}"},
                                     "type": "replaced-by"}]
            merged = golden_patient(session, repo, survivor)
            assert merged is not None
            refs = {link["other"]["reference"] for link in merged["link"]}
            assert {f"Patient/{a}", f"Patient/{b}"} <= refs
