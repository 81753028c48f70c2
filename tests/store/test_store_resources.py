"""Resources: versioning, idempotent puts, logical delete, provenance and blind search."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from store_support import FAMILY, NHS_NUMBER, POSTCODE, own_bodies, patient, provenance

from unified_record.fhir.security_labels import security_coding
from unified_record.store import (
    CorruptStoreError,
    SearchIndexRow,
    SourceConflictError,
    UnitOfWork,
)

INDEX = [("identifier", NHS_NUMBER), ("name", FAMILY.upper()), ("postcode", "ZZ993QX")]


def test_put_get_vread_history(uow: UnitOfWork) -> None:
    with uow:
        first = uow.resources.put(patient(), **provenance(), security_labels=["mental_health"])
        second = uow.resources.put(
            patient(gender="female"), **provenance(), security_labels=["safeguarding"]
        )
        uow.commit()
    assert first["meta"]["versionId"] == "1"
    assert second["meta"]["versionId"] == "2"
    # labels describe each version: the caller's labels plus any the sender put on the body
    assert first["meta"]["security"] == [security_coding("mental_health")]
    assert second["meta"]["security"] == [security_coding("safeguarding")]
    assert datetime.fromisoformat(second["meta"]["lastUpdated"]).utcoffset() is not None

    with uow:
        current = uow.resources.get("Patient", "p1")
        assert current == second
        assert uow.resources.vread("Patient", "p1", 1) == first
        assert uow.resources.vread("Patient", "p1", 3) is None
        assert [v["meta"]["versionId"] for v in uow.resources.history("Patient", "p1")] == [
            "2",
            "1",
        ]
        assert uow.resources.get("Patient", "nope") is None


def test_identical_put_is_a_no_op(uow: UnitOfWork) -> None:
    with uow:
        first = uow.resources.put(patient(), **provenance())
        uow.commit()
    with uow:
        # same content, stale meta from the sender: still the same version
        resent = patient(meta={"versionId": "9", "lastUpdated": "2001-01-01T00:00:00Z"})
        again = uow.resources.put(resent, **provenance())
        uow.commit()
    assert again == first
    with uow:
        assert len(uow.resources.history("Patient", "p1")) == 1


def test_put_without_id_reuses_the_source_records_resource(uow: UnitOfWork) -> None:
    with uow:
        created = uow.resources.put(patient(resource_id=None), **provenance())
        updated = uow.resources.put(patient(resource_id=None, gender="male"), **provenance())
        other = uow.resources.put(patient(resource_id=None), **provenance(source_record_id=None))
        unsourced = uow.resources.put(
            patient(resource_id=None), **provenance(source_record_id=None)
        )
        uow.commit()
    assert updated["id"] == created["id"] and updated["meta"]["versionId"] == "2"
    assert len({created["id"], other["id"], unsourced["id"]}) == 3
    with uow:
        found = uow.resources.find_by_source("Patient", "council_asc", "ASC-1")
        assert found == updated
        assert uow.resources.find_by_source("Patient", "council_asc", "ASC-2") is None
        with pytest.raises(SourceConflictError):
            uow.resources.put(patient(resource_id="someone-else"), **provenance())


def test_logical_delete_keeps_history(uow: UnitOfWork) -> None:
    with uow:
        uow.resources.put(patient(), **provenance(), index_values=INDEX)
        assert uow.resources.delete("Patient", "p1") == 2
        assert uow.resources.delete("Patient", "p1") is None  # already deleted
        assert uow.resources.delete("Patient", "missing") is None
        uow.commit()
    with uow:
        assert uow.resources.get("Patient", "p1") is None
        assert uow.resources.find_by_source("Patient", "council_asc", "ASC-1") is None
        assert uow.resources.search("Patient", "identifier", NHS_NUMBER) == []
        assert [v.deleted for v in uow.resources.versions("Patient", "p1")] == [True, False]
        stub = uow.resources.vread("Patient", "p1", 2)
        assert stub is not None and FAMILY not in str(stub)
        assert uow.resources.vread("Patient", "p1", 1) is not None
        prov = uow.resources.provenance("Patient", "p1")
        assert prov is not None and prov.deleted and prov.version_id == 2
        # writing it again brings it back as a new version
        back = uow.resources.put(patient(), **provenance())
        assert back["meta"]["versionId"] == "3"


def test_each_body_is_stored_once_and_every_version_still_reads(uow: UnitOfWork) -> None:
    """Only `resource` holds the current body; a new version (an update, a deletion, a put
    after a deletion) moves the body it replaces into its version row."""
    with uow:  # two versions in one transaction, read in between
        first = uow.resources.put(patient(), **provenance())
        assert uow.resources.vread("Patient", "p1", 1) == first
        second = uow.resources.put(patient(gender="female"), **provenance(),
                                   security_labels=["safeguarding"])
        assert uow.resources.vread("Patient", "p1", 1) == first
        assert uow.resources.history("Patient", "p1") == [second, first]
        uow.commit()
    with uow:
        assert own_bodies(uow.session, "Patient", "p1") == {1: True, 2: False}
        assert uow.resources.delete("Patient", "p1") == 3
        uow.commit()
    with uow:
        assert own_bodies(uow.session, "Patient", "p1") == {1: True, 2: True, 3: False}
        stub = uow.resources.vread("Patient", "p1", 3)
        assert stub is not None
        assert stub == {"resourceType": "Patient", "id": "p1", "meta": {
            "security": [security_coding("safeguarding")], "versionId": "3",
            "lastUpdated": stub["meta"]["lastUpdated"]}}
        assert uow.resources.vread("Patient", "p1", 1) == first
        assert uow.resources.vread("Patient", "p1", 2) == second
        assert uow.resources.history("Patient", "p1") == [stub, second, first]
        back = uow.resources.put(patient(), **provenance())
        uow.commit()
    with uow:
        assert own_bodies(uow.session, "Patient", "p1") == {1: True, 2: True, 3: True, 4: False}
        assert uow.resources.history("Patient", "p1") == [back, stub, second, first]
        assert [uow.resources.vread("Patient", "p1", v) for v in (4, 3, 2, 1)] == [
            back, stub, second, first]


def test_a_version_without_a_body_that_is_not_current_is_an_error(
    engine: Engine, uow: UnitOfWork
) -> None:
    with uow:
        uow.resources.put(patient(), **provenance())
        uow.resources.put(patient(gender="male"), **provenance())
        uow.commit()
    with engine.begin() as conn:  # version 1's body lost
        conn.execute(sa.text("UPDATE resource_version SET body = NULL, key_id = NULL "
                             "WHERE version_id = 1"))
    with uow, pytest.raises(CorruptStoreError, match="Patient/p1 version 1"):
        uow.resources.vread("Patient", "p1", 1)
    with uow, pytest.raises(CorruptStoreError):
        uow.resources.history("Patient", "p1")


def test_search_by_blind_index_and_no_plaintext_in_index(uow: UnitOfWork) -> None:
    with uow:
        uow.resources.put(patient(), **provenance(), index_values=INDEX)
        uow.resources.put(
            patient("p2", gender="male"),
            **provenance(source_record_id="ASC-2"),
            index_values=[("identifier", "9000000009"), ("postcode", "ZZ993QX")],
        )
        uow.commit()
    with uow:
        assert uow.resources.search("Patient", "identifier", NHS_NUMBER) == ["p1"]
        assert uow.resources.search("Patient", "postcode", "ZZ993QX") == ["p1", "p2"]
        assert uow.resources.search("Patient", "name", NHS_NUMBER) == []  # kinds are separate
        assert uow.resources.search("Observation", "identifier", NHS_NUMBER) == []
        stored = " ".join(
            f"{r.param} {r.value_hash}" for r in uow.session.scalars(sa.select(SearchIndexRow))
        )
    for secret in (NHS_NUMBER, FAMILY, FAMILY.upper(), "ZZ993QX", POSTCODE):
        assert secret not in stored


def test_new_version_replaces_index_values(uow: UnitOfWork) -> None:
    with uow:
        uow.resources.put(patient(), **provenance(), index_values=INDEX)
        uow.resources.put(
            patient(address=[{"postalCode": "ZZ1 1ZZ"}]),
            **provenance(),
            index_values=[("postcode", "ZZ11ZZ")],
        )
        uow.commit()
    with uow:
        assert uow.resources.search("Patient", "postcode", "ZZ993QX") == []
        assert uow.resources.search("Patient", "postcode", "ZZ11ZZ") == ["p1"]


def test_provenance(uow: UnitOfWork) -> None:
    with uow:
        message, _ = uow.messages.add("council_asc", b"row 1", "clients.csv:2")
        uow.resources.put(
            patient(),
            **provenance(),
            inbound_message_id=message.id,
            security_labels=["safeguarding", "mental_health"],
        )
        uow.commit()
    with uow:
        prov = uow.resources.provenance("Patient", "p1")
        assert uow.resources.provenance("Patient", "missing") is None
    assert prov is not None
    assert (prov.source_feed, prov.source_org, prov.source_record_id) == (
        "council_asc",
        "E08000026",
        "ASC-1",
    )
    assert prov.inbound_message_id == message.id
    assert prov.received_at == message.received_at
    assert prov.security_labels == ("mental_health", "safeguarding")
    assert not prov.deleted and prov.version_id == 1


def test_bodies_are_bound_to_their_rows(engine: Engine, uow: UnitOfWork) -> None:
    with uow:
        uow.resources.put(patient("p1"), **provenance())
        uow.resources.put(patient("p1", gender="male"), **provenance())
        uow.resources.put(patient("p2"), **provenance(source_record_id="ASC-2"))
        uow.commit()
    with engine.begin() as conn:  # an attacker with database access swaps the two bodies
        bodies = {
            row.id: row.body for row in conn.execute(sa.text("SELECT id, body FROM resource"))
        }
        for rid, other in (("p1", "p2"), ("p2", "p1")):
            conn.execute(
                sa.text("UPDATE resource SET body = :body WHERE id = :id"),
                {"body": bodies[other], "id": rid},
            )
    with uow, pytest.raises(Exception, match="failed authentication"):
        uow.resources.get("Patient", "p1")
    with uow, pytest.raises(Exception, match="failed authentication"):
        uow.resources.vread("Patient", "p1", 2)  # the current version's body is resource's
    with uow:  # an older version's body, in the version table, was not touched: it opens
        assert uow.resources.vread("Patient", "p1", 1) is not None


def test_rejects_bad_input(uow: UnitOfWork) -> None:
    with uow:
        with pytest.raises(ValueError, match="resourceType"):
            uow.resources.put({"id": "x"}, **provenance())
        with pytest.raises(ValueError, match="resource id"):
            uow.resources.put(patient("a/b"), **provenance())
        with pytest.raises(ValueError, match="unknown sensitive category"):
            uow.resources.put(patient(), **provenance(), security_labels=["two words"])


def test_sender_security_labels_are_kept(uow: UnitOfWork) -> None:
    confidentiality = {
        "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
        "code": "R",
    }
    sent = patient(
        meta={"security": [confidentiality, security_coding("hiv")]}
    )
    with uow:
        stored = uow.resources.put(sent, **provenance(), security_labels=["safeguarding"])
        prov = uow.resources.provenance("Patient", "p1")
    assert stored["meta"]["security"] == [
        confidentiality,
        security_coding("hiv"),
        security_coding("safeguarding"),
    ]
    assert prov is not None and prov.security_labels == ("hiv", "safeguarding")
