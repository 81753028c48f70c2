"""Inbound messages: stored once, exactly, encrypted; outcomes recorded; quarantine listed."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from store_support import patient, provenance

from unified_record.store import InboundMessage, ResourceRow, UnitOfWork
from unified_record.store import messages as messages_module

HL7 = b"MSH|^~\\&|PAS|RXX|UR|UR|20250101120000||ADT^A01|MSG0001|P|2.4\rPID|1||9434765919\r"


def test_add_is_idempotent_on_content(uow: UnitOfWork) -> None:
    with uow:
        first, created = uow.messages.add("acute_adt", HL7, "adt.hl7:1")
        again, created_again = uow.messages.add("acute_adt", HL7, "adt-resent.hl7:1")
        other_feed, created_other = uow.messages.add("community", HL7, "c.hl7:1")
        uow.commit()
    assert created and not created_again and created_other
    assert again.id == first.id != other_feed.id
    assert first.status == "pending" and first.attempts == 0 and first.key_id == "k1"
    with uow:
        count = uow.session.scalar(sa.select(sa.func.count()).select_from(InboundMessage))
    assert count == 2


def test_add_is_idempotent_on_message_control_id(uow: UnitOfWork) -> None:
    with uow:
        first, _ = uow.messages.add("acute_adt", HL7, "adt.hl7:1", message_control_id="MSG0001")
        # an HL7 retry with a fresh timestamp is the same message
        retry = HL7.replace(b"20250101120000", b"20250101120500")
        again, created = uow.messages.add("acute_adt", retry, "adt.hl7:9", "MSG0001")
        other, created_other = uow.messages.add("acute_adt", retry, "adt.hl7:9", "MSG0002")
        uow.commit()
    assert not created and again.id == first.id
    assert created_other and other.id != first.id


def test_raw_bytes_are_exact_and_encrypted(uow: UnitOfWork) -> None:
    with uow:
        message, _ = uow.messages.add("acute_adt", HL7, "adt.hl7:1")
        uow.commit()
    with uow:
        stored = uow.messages.get(message.id)
        assert stored is not None
        assert uow.messages.raw_bytes(stored) == HL7
        assert b"9434765919" not in stored.raw
        assert stored.received_at.utcoffset() is not None
        # the content hash is keyed: the plain SHA-256 of the message is not in the database
        assert stored.content_hash != hashlib.sha256(HL7).hexdigest()
        assert len(stored.content_hash) == 64


def test_raw_is_bound_to_its_message(engine: Engine, uow: UnitOfWork) -> None:
    with uow:
        one, _ = uow.messages.add("acute_adt", b"one", "a:1")
        two, _ = uow.messages.add("acute_adt", b"two", "a:2")
        uow.commit()
    with engine.begin() as conn:
        raw_two = conn.execute(
            sa.text("SELECT raw FROM inbound_message WHERE id = :id"), {"id": two.id}
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE inbound_message SET raw = :raw WHERE id = :id"),
            {"raw": raw_two, "id": one.id},
        )
    with uow:
        stored = uow.messages.get(one.id)
        assert stored is not None
        with pytest.raises(Exception, match="failed authentication"):
            uow.messages.raw_bytes(stored)


def test_mark_and_quarantine_listing(uow: UnitOfWork) -> None:
    with uow:
        ok, _ = uow.messages.add("council_asc", b"row 1", "clients.csv:2")
        bad, _ = uow.messages.add("council_asc", b"row 2", "clients.csv:3")
        bad_elsewhere, _ = uow.messages.add("acute_adt", b"MSH bad", "adt.hl7:1")
        uow.messages.mark(ok, "accepted")
        uow.messages.mark(bad, "quarantined", "clients.csv line 3, field dob: not a date")
        uow.messages.mark(bad_elsewhere, "quarantined", "adt.hl7 line 1, PID-7: not a date")
        uow.commit()
    with uow:
        assert [m.id for m in uow.messages.quarantined()] == [bad.id, bad_elsewhere.id]
        listed = list(uow.messages.quarantined(feed="council_asc"))
        assert [m.id for m in listed] == [bad.id]
        assert listed[0].reason == "clients.csv line 3, field dob: not a date"
        assert listed[0].attempts == 1
        assert listed[0].locator == "clients.csv:3"
        # replay: requeue, then accept; attempts count processing runs only
        uow.messages.mark(listed[0], "pending")
        uow.messages.mark(listed[0], "accepted")
        assert listed[0].attempts == 2 and listed[0].reason is None
        assert list(uow.messages.quarantined(feed="council_asc")) == []
        with pytest.raises(ValueError, match="unknown message status"):
            uow.messages.mark(ok, "lost")


def test_unit_of_work_commits_only_on_request(uow: UnitOfWork) -> None:
    with uow:
        uow.messages.add("council_asc", b"discarded", "a:1")
        uow.resources.put(patient(), **provenance())
    with pytest.raises(RuntimeError), uow:
        uow.messages.add("council_asc", b"failed", "a:2")
        uow.resources.put(patient(), **provenance())
        raise RuntimeError("mapping failed")
    with uow:
        uow.messages.add("council_asc", b"kept", "a:3")
        uow.commit()
    with uow:
        assert uow.session.scalar(sa.select(sa.func.count()).select_from(InboundMessage)) == 1
        assert uow.session.scalar(sa.select(sa.func.count()).select_from(ResourceRow)) == 0


def test_duplicate_race_keeps_the_rest_of_the_transaction(
    uow: UnitOfWork, monkeypatch: pytest.MonkeyPatch
) -> None:
    with uow:
        uow.messages.add("council_asc", b"row 1", "a:1")
        uow.commit()
    # another worker stored the same bytes after this one looked: the insert hits the unique
    # constraint, and only the savepoint is rolled back, not the resource written before it
    with uow:
        uow.resources.put(patient(), **provenance())
        real_find, lookups = uow.messages._find, []

        def late_find(*args: Any) -> InboundMessage | None:
            lookups.append(args)
            return None if len(lookups) == 1 else real_find(*args)

        monkeypatch.setattr(uow.messages, "_find", late_find)
        message, created = uow.messages.add("council_asc", b"row 1", "a:1")
        assert not created and message.locator == "a:1" and len(lookups) == 2
        uow.commit()
    with uow:
        assert uow.resources.get("Patient", "p1") is not None
        rows = uow.session.scalars(
            sa.select(InboundMessage).where(InboundMessage.feed == "council_asc")
        ).all()
        assert len(rows) == 1


def test_message_ids_grow_with_time_and_do_not_repeat(uow: UnitOfWork,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids are appended at the end of the B-trees that hold them (store.messages)."""
    clock = iter([1_700_000_000_000_000_000, 1_700_000_000_000_000_000, 1_700_000_000_002_000_000])
    monkeypatch.setattr(time, "time_ns", lambda: next(clock))
    ids = [messages_module.new_message_id() for _ in range(3)]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert ids[0][:12] == ids[1][:12] == f"{1_700_000_000_000:012x}" and ids[0] != ids[1]
    assert ids[2][:12] == f"{1_700_000_000_002:012x}" and ids[2] > max(ids[:2])
    monkeypatch.undo()
    with uow:
        stored = [uow.messages.add("acute_adt", HL7 + str(n).encode())[0].id for n in range(3)]
        uow.commit()
    times = [i[:12] for i in stored]
    assert times == sorted(times) and len(set(stored)) == 3
