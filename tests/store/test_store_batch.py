"""Bulk writes (ResourceBatch, add_messages, mark_messages) keep the repository's rules."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from store_support import FAMILY, own_bodies, patient, provenance

from unified_record.security import BlindIndex, KeyRing
from unified_record.store import SourceConflictError, UnitOfWork
from unified_record.store import batch as batch_module
from unified_record.store.batch import (
    NewMessage,
    ResourceBatch,
    add_messages,
    mark_messages,
    seal_new,
)
from unified_record.store.models import (
    InboundMessage,
    ResourceRow,
    ResourceVersionRow,
    SearchIndexRow,
)


@pytest.fixture
def batch_of(cipher: KeyRing, blind_index: BlindIndex) -> Callable[[UnitOfWork], ResourceBatch]:
    return lambda uow: ResourceBatch(uow.session, cipher, blind_index)


def test_batch_put_matches_the_repository(
    uow: UnitOfWork, batch_of: Callable[[UnitOfWork], ResourceBatch]
) -> None:
    with uow:
        batch = batch_of(uow)
        batch.load([("Patient", "p1")], [("Patient", "council_asc", "ASC-1")])
        first = batch.put(patient(), **provenance(), index_values=[("family", FAMILY)])
        assert batch.put(patient(), **provenance()) == first, "unchanged body: no new version"
        second = batch.put(patient(gender="female"), **provenance(),
                           security_labels=["safeguarding"], index_values=[("family", "NEW")])
        assert second["meta"]["versionId"] == "2"
        assert batch.get("Patient", "p1") == second
        batch.flush()
        uow.commit()
    with uow:
        assert uow.resources.get("Patient", "p1") == second
        assert [v.version_id for v in uow.resources.versions("Patient", "p1")] == [2, 1]
        assert uow.resources.vread("Patient", "p1", 1) == first
        assert uow.resources.search("Patient", "family", "NEW") == ["p1"]
        assert uow.resources.search("Patient", "family", FAMILY) == []
        prov = uow.resources.provenance("Patient", "p1")
        assert prov is not None and prov.security_labels == ("safeguarding",)


def test_a_later_batch_updates_rows_and_replaces_the_index(
    uow: UnitOfWork, batch_of: Callable[[UnitOfWork], ResourceBatch]
) -> None:
    with uow:
        uow.resources.put(patient(), **provenance(), index_values=[("family", FAMILY)])
        uow.commit()
    with uow:
        batch = batch_of(uow)
        batch.load([("Patient", "p1")])
        assert batch.put(patient(), **provenance())["meta"]["versionId"] == "1"
        batch.put(patient(birthDate="1950-02-04"), **provenance(),
                  index_values=[("birthdate", "1950-02-04")])
        batch.flush()
        uow.commit()
    with uow:
        current = uow.resources.get("Patient", "p1")
        assert current is not None and current["birthDate"] == "1950-02-04"
        assert current["meta"]["versionId"] == "2"
        index = uow.session.scalars(sa.select(SearchIndexRow.param)).all()
        assert index == ["birthdate"]


def test_rollback_to_a_checkpoint_forgets_one_message(
    uow: UnitOfWork, batch_of: Callable[[UnitOfWork], ResourceBatch]
) -> None:
    with uow:
        batch = batch_of(uow)
        batch.put(patient("a"), **provenance(source_record_id="A"))
        mark = batch.checkpoint()
        batch.put(patient("b"), **provenance(source_record_id="B"))
        with pytest.raises(SourceConflictError):
            batch.put(patient("c"), **provenance(source_record_id="A"))
        batch.rollback_to(mark)
        assert batch.get("Patient", "b") is None
        batch.put(patient("b2"), **provenance(source_record_id="B"))  # B is free again
        batch.flush()
        uow.commit()
    with uow:
        ids = uow.session.scalars(sa.select(ResourceVersionRow.id).order_by(
            ResourceVersionRow.id)).all()
        assert ids == ["a", "b2"]


def test_bad_resources_raise_before_anything_is_buffered(
    uow: UnitOfWork, batch_of: Callable[[UnitOfWork], ResourceBatch]
) -> None:
    with uow:
        batch = batch_of(uow)
        with pytest.raises(ValueError, match="resource id"):
            batch.put(patient("bad/id"), **provenance())
        with pytest.raises(ValueError, match="unknown sensitive category"):
            batch.put(patient(), **provenance(), security_labels=["gossip"])
        assert batch.checkpoint() == 0


def test_sealed_in_advance_is_used_for_a_new_resource_and_redone_for_a_new_version(
    uow: UnitOfWork, batch_of: Callable[[UnitOfWork], ResourceBatch], cipher: KeyRing,
    blind_index: BlindIndex
) -> None:
    index = [("family", FAMILY)]
    sealed = seal_new(cipher, blind_index, patient(), ["safeguarding"], index)
    assert sealed is not None
    with uow:
        batch = batch_of(uow)
        batch.put_sealed(sealed, **provenance())
        first = batch.get("Patient", "p1")
        assert first is not None and first["meta"]["versionId"] == "1"
        assert sealed.resource_type == "Patient" and sealed.id == "p1"
        unchanged = seal_new(cipher, blind_index, patient(), ["safeguarding"], index)
        assert unchanged is not None
        batch.put_sealed(unchanged, **provenance())
        assert batch.get("Patient", "p1") == first, "unchanged body: no new version"
        changed = seal_new(cipher, blind_index, patient(gender="female"), ["safeguarding"], index)
        assert changed is not None
        batch.put_sealed(changed, **provenance())
        second = batch.get("Patient", "p1")
        assert second is not None and second["meta"]["versionId"] == "2", (
            "not new after all: sealed again as v2")
        assert second["gender"] == "female"
        batch.flush()
        uow.commit()
    with uow:
        row = uow.session.get(ResourceVersionRow, ("Patient", "p1", 1))
        assert row is not None and row.body == sealed.envelope
        assert uow.resources.vread("Patient", "p1", 1) == first
        assert uow.resources.get("Patient", "p1") == second
        assert [v.version_id for v in uow.resources.versions("Patient", "p1")] == [2, 1]
        assert uow.resources.search("Patient", "family", FAMILY) == ["p1"]
        prov = uow.resources.provenance("Patient", "p1")
        assert prov is not None and prov.security_labels == ("safeguarding",)
        assert prov.last_updated.isoformat(timespec="milliseconds").startswith(
            second["meta"]["lastUpdated"][:23])
    assert seal_new(cipher, blind_index, patient(), ["gossip"]) is None, "put raises instead"
    assert seal_new(cipher, blind_index, patient("bad/id")) is None


def test_add_messages_deduplicates_within_and_across_batches(
    uow: UnitOfWork, cipher: KeyRing, blind_index: BlindIndex
) -> None:
    hasher = blind_index
    with uow:
        first = add_messages(uow.session, cipher, hasher, "adt", [
            NewMessage(b"one", "f:1", "C1"), NewMessage(b"two", "f:2", "C2"),
            NewMessage(b"one", "f:3", "C1"), NewMessage(b"resent", "f:4", "C2")])
        uow.commit()
    assert [m.created for m in first] == [True, True, False, False]
    assert first[2].id == first[0].id and first[3].id == first[1].id
    with uow:
        mark_messages(uow.session, [(first[0].id, "accepted", None),
                                    (first[1].id, "quarantined", "PID-7: impossible date")])
        again = add_messages(uow.session, cipher, hasher, "adt", [NewMessage(b"two", "g:1")])
        uow.commit()
    assert again[0].id == first[1].id and not again[0].created
    with uow:
        rows = {m.id: m for m in uow.session.scalars(sa.select(InboundMessage))}
        assert len(rows) == 2
        assert rows[first[1].id].status == "quarantined"
        assert rows[first[1].id].reason == "PID-7: impossible date"
        assert rows[first[1].id].attempts == 1
        assert uow.messages.raw_bytes(rows[first[0].id]) == b"one"
        assert rows[first[0].id].locator == "f:1"
    with uow, pytest.raises(ValueError, match="unknown message status"):
        mark_messages(uow.session, [(first[0].id, "lost", None)])


def test_a_remembered_unchanged_resource_is_not_opened_and_a_stale_memory_is_harmless(
    uow: UnitOfWork, cipher: KeyRing, blind_index: BlindIndex,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """`known` holds (version, content digest) of what earlier batches committed: a body
    arriving again unchanged is skipped without opening either body; a changed one, or one
    whose stored version moved on since, is compared in full as before."""
    opened: list[int] = []
    real_open = batch_module.open_body
    monkeypatch.setattr(batch_module, "open_body",
                        lambda *a: opened.append(1) or real_open(*a))  # type: ignore[func-returns-value]
    known: dict[tuple[str, str], tuple[int, bytes]] = {}

    def store(body: dict[str, Any], **source: Any) -> ResourceBatch:
        sealed = seal_new(cipher, blind_index, body, [], [("family", FAMILY)])
        assert sealed is not None
        with uow:
            batch = ResourceBatch(uow.session, cipher, blind_index, known)
            batch.put_sealed(sealed, **provenance(**source))
            batch.flush()
            uow.commit()
        known.update(batch.committed)
        return batch

    def versions() -> list[int]:
        with uow:
            return [v.version_id for v in uow.resources.versions("Patient", "p1")]

    store(patient())
    assert known[("Patient", "p1")][0] == 1
    store(patient())
    assert opened == [] and versions() == [1], "unchanged, as remembered: nothing opened"
    store(patient(gender="female"))
    assert opened and versions() == [2, 1], "changed: opened, compared, a new version"
    opened.clear()
    with uow:  # another writer moves it on; the memory says version 2
        uow.resources.put(patient(gender="male"), **provenance())
        uow.commit()
    store(patient(gender="female"))
    assert opened and versions() == [4, 3, 2, 1], "stale memory: compared in full"
    opened.clear()
    store(patient(gender="female"))
    assert opened == [] and versions() == [4, 3, 2, 1]


def test_a_rolled_back_put_is_not_remembered(
    uow: UnitOfWork, cipher: KeyRing, blind_index: BlindIndex
) -> None:
    sealed = seal_new(cipher, blind_index, patient("b"), [], [])
    assert sealed is not None
    with uow:
        batch = ResourceBatch(uow.session, cipher, blind_index, {})
        mark = batch.checkpoint()
        batch.put_sealed(sealed, **provenance(source_record_id="B"))
        assert ("Patient", "b") in batch.committed
        batch.rollback_to(mark)
        assert batch.committed == {}


def test_within_a_batch_an_unchanged_resource_is_not_opened_either(
    uow: UnitOfWork, cipher: KeyRing, blind_index: BlindIndex,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HL7 update often follows its admission within one batch: what this batch wrote
    counts as remembered too."""
    opened: list[int] = []
    real_open = batch_module.open_body
    monkeypatch.setattr(batch_module, "open_body",
                        lambda *a: opened.append(1) or real_open(*a))  # type: ignore[func-returns-value]
    with uow:
        batch = ResourceBatch(uow.session, cipher, blind_index, {})
        for body in (patient(), patient(), patient(gender="female"), patient(gender="female")):
            sealed = seal_new(cipher, blind_index, body, [], [])
            assert sealed is not None
            batch.put_sealed(sealed, **provenance())
        batch.flush()
        uow.commit()
    assert len(opened) == 2, "only the changed body and the version it replaces"
    with uow:
        assert [v.version_id for v in uow.resources.versions("Patient", "p1")] == [2, 1]


def test_a_batch_writes_each_body_once(
    uow: UnitOfWork, batch_of: Callable[[UnitOfWork], ResourceBatch], cipher: KeyRing,
    blind_index: BlindIndex
) -> None:
    """Only `resource` holds a current body. Within one flush a superseded version keeps
    its body in its row; a resource stored before (by an earlier batch or the repository,
    deleted or not) gets the body of what was current moved into that version's row."""
    expected: dict[str, list[dict[str, Any]]] = {}  # versions, oldest first
    with uow:
        uow.resources.put(patient("p4"), **provenance(source_record_id="D"))
        uow.resources.delete("Patient", "p4")
        uow.commit()
    with uow:
        expected["p4"] = uow.resources.history("Patient", "p4")[::-1]
        batch = batch_of(uow)
        batch.load([("Patient", p) for p in ("p1", "p2", "p3")])
        expected["p1"] = [batch.put(patient("p1"), **provenance(source_record_id="A")),
                          batch.put(patient("p1", gender="male"),
                                    **provenance(source_record_id="A"))]
        expected["p2"] = [batch.put(patient("p2"), **provenance(source_record_id="B"))]
        sealed = seal_new(cipher, blind_index, patient("p3"), [], [])
        assert sealed is not None
        batch.put_sealed(sealed, **provenance(source_record_id="C"))
        expected["p3"] = [dict(batch.get("Patient", "p3") or {})]
        batch.flush()
        uow.commit()
    with uow:
        assert {p: own_bodies(uow.session, "Patient", p) for p in ("p1", "p2", "p3")} == {
            "p1": {1: True, 2: False}, "p2": {1: False}, "p3": {1: False}}
        batch = batch_of(uow)
        batch.load([("Patient", p) for p in ("p1", "p2", "p3", "p4")])
        expected["p1"].append(batch.put(patient("p1", gender="female"),
                                        **provenance(source_record_id="A")))
        expected["p2"] += [batch.put(patient("p2", gender="male"),
                                     **provenance(source_record_id="B")),
                           batch.put(patient("p2", gender="female"),
                                     **provenance(source_record_id="B"))]
        batch.put_sealed(sealed, **provenance(source_record_id="C"))  # unchanged: no version
        expected["p4"].append(batch.put(patient("p4"), **provenance(source_record_id="D")))
        batch.flush()
        uow.commit()
    with uow:
        assert {p: own_bodies(uow.session, "Patient", p) for p in expected} == {
            "p1": {1: True, 2: True, 3: False},
            "p2": {1: True, 2: True, 3: False},
            "p3": {1: False},
            "p4": {1: True, 2: True, 3: False},
        }
        assert expected["p4"][1]["meta"]["versionId"] == "2", "the deletion stub"
        for rid, versions in expected.items():
            assert [v["meta"]["versionId"] for v in versions] == [
                str(n) for n in range(1, len(versions) + 1)]
            assert uow.resources.history("Patient", rid) == versions[::-1]
            for number, body in enumerate(versions, start=1):
                assert uow.resources.vread("Patient", rid, number) == body


def test_a_rolled_back_put_leaves_the_stored_versions_as_they_were(
    uow: UnitOfWork, batch_of: Callable[[UnitOfWork], ResourceBatch]
) -> None:
    with uow:
        stored = uow.resources.put(patient("p1"), **provenance(source_record_id="A"))
        older = uow.resources.put(patient("p3"), **provenance(source_record_id="C"))
        uow.commit()
    with uow:
        batch = batch_of(uow)
        batch.load([("Patient", "p1"), ("Patient", "p2"), ("Patient", "p3")])
        mark = batch.checkpoint()
        batch.put(patient("p1", gender="male"), **provenance(source_record_id="A"))
        batch.rollback_to(mark)  # p1 is not touched at all
        kept = batch.put(patient("p2"), **provenance(source_record_id="B"))
        mark = batch.checkpoint()
        batch.put(patient("p2", gender="male"), **provenance(source_record_id="B"))
        batch.rollback_to(mark)  # p2's first version stays the final one
        newer = batch.put(patient("p3", gender="male"), **provenance(source_record_id="C"))
        batch.flush()
        uow.commit()
    with uow:
        assert own_bodies(uow.session, "Patient", "p1") == {1: False}
        assert own_bodies(uow.session, "Patient", "p2") == {1: False}
        assert own_bodies(uow.session, "Patient", "p3") == {1: True, 2: False}
        assert uow.resources.history("Patient", "p1") == [stored]
        assert uow.resources.history("Patient", "p2") == [kept]
        assert uow.resources.history("Patient", "p3") == [newer, older]


def test_raw_inserts_store_exactly_the_values_given(uow: UnitOfWork) -> None:
    """The rows a batch writes through the driver (PostgreSQL: binary COPY) read back as
    the values given: text with tabs, newlines, backslashes and non-ASCII, NULLs, bytes
    with zero bytes, and times in another zone (kept as the same instant, in UTC)."""
    received = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1)))
    reason = 'Zoë\t"quoted"\\back\nslash, 100%'
    raw = b"\x00MSH|^~\\&|\r\n\xff"
    with uow:
        writer = batch_module._RawWriter(uow.session)
        table = InboundMessage.__table__
        assert isinstance(table, sa.Table)
        writer.insert(table, batch_module._MESSAGE_COLUMNS,
                      [("m" * 32, "fééd", received, "h" * 64, None, "quarantined", reason,
                        "x" * 1000, "k1", raw, 7)])
        uow.commit()
    with uow:
        row = uow.session.get(InboundMessage, "m" * 32)
        assert row is not None
        assert (row.feed, row.message_control_id, row.status, row.reason, row.locator,
                row.key_id, row.raw, row.attempts) == (
            "fééd", None, "quarantined", reason, "x" * 1000, "k1", raw, 7)
        assert row.received_at == received and row.received_at.utcoffset() == timedelta(0)


def test_postgresql_copies_every_batch_table_in_binary(uow: UnitOfWork) -> None:
    """SQLite inserts with executemany; PostgreSQL with COPY, binary for every table."""
    with uow:
        writer = batch_module._RawWriter(uow.session)
        tables = [(InboundMessage, batch_module._MESSAGE_COLUMNS),
                  (ResourceRow, batch_module._RESOURCE_COLUMNS),
                  (ResourceVersionRow, batch_module._VERSION_COLUMNS),
                  (SearchIndexRow, batch_module._INDEX_COLUMNS)]
        types = [writer._copy_types(model.__table__, columns)  # type: ignore[arg-type]
                 for model, columns in tables]
        postgresql = uow.session.get_bind().dialect.name == "postgresql"
        assert writer._copy is postgresql
        if postgresql:
            assert [len(t or ()) for t in types] == [len(c) for _, c in tables]
            assert types[1] is not None and (types[1][3], types[1][-1]) == ("timestamptz",
                                                                             "bytea")
