"""Key rotation re-encrypts every row under the new key, in batches, losing nothing."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from store_support import KEY_1, KEY_2, patient, provenance

from unified_record.security import BlindIndex, KeyRing
from unified_record.store import InboundMessage, UnitOfWork, make_session_factory, rotate_keys

TABLES = {"resource": "body", "resource_version": "body", "inbound_message": "raw"}


def snapshot(uow: UnitOfWork) -> dict[str, Any]:
    """Everything readable through the repositories, to compare before and after."""
    with uow:
        result: dict[str, Any] = {}
        for rid in ("p1", "p2", "p3"):
            result[rid] = (uow.resources.get("Patient", rid), uow.resources.history("Patient", rid))
        for message in uow.session.scalars(sa.select(InboundMessage)):
            result[message.id] = uow.messages.raw_bytes(message)
        return result


def key_ids(engine: Engine) -> dict[str, set[tuple[str, str]]]:
    """Per table: the key_id column and the key id inside each envelope (of the rows that
    hold one: a current version's resource_version row has no body and no key id)."""
    with engine.connect() as conn:
        return {
            table: {
                (row.key_id, KeyRing.key_id_of(row.blob))
                for row in conn.execute(sa.text(
                    f"SELECT key_id, {column} AS blob FROM {table} WHERE {column} IS NOT NULL"))
            }
            for table, column in TABLES.items()
        }


def bodiless_versions(engine: Engine) -> list[tuple[str, int, str | None]]:
    """(id, version, key id) of the version rows without a body of their own."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, version_id, key_id FROM resource_version "
                                    "WHERE body IS NULL ORDER BY id"))
        return [(row.id, row.version_id, row.key_id) for row in rows]


def test_rotation_moves_every_row_to_the_new_key(
    engine: Engine, cipher: KeyRing, blind_index: BlindIndex
) -> None:
    ring_a = UnitOfWork(engine, cipher, blind_index)
    with ring_a:
        for n, rid in enumerate(("p1", "p2", "p3"), start=1):
            message, _ = ring_a.messages.add("council_asc", f"row {n}".encode(), f"c.csv:{n}")
            ring_a.resources.put(
                patient(rid), **provenance(source_record_id=rid), inbound_message_id=message.id
            )
            ring_a.resources.put(patient(rid, gender="other"), **provenance(source_record_id=rid))
        ring_a.resources.delete("Patient", "p3")
        ring_a.commit()
    before = snapshot(ring_a)
    assert key_ids(engine) == {table: {("k1", "k1")} for table in TABLES}
    current = [("p1", 2, None), ("p2", 2, None), ("p3", 3, None)]
    assert bodiless_versions(engine) == current

    ring_b = KeyRing({"k2": KEY_2, "k1": KEY_1}, "k2")
    factory = make_session_factory(engine)
    # 3 current bodies (resource) + 4 older versions' bodies (p1 v1, p2 v1, p3 v1 and v2:
    # of the 7 versions, the 3 current ones' rows hold none, theirs is the resource's)
    # + 3 messages, in batches of 2
    assert rotate_keys(factory, ring_b, batch_size=2) == 10
    assert key_ids(engine) == {table: {("k2", "k2")} for table in TABLES}
    assert bodiless_versions(engine) == current

    only_k2 = KeyRing({"k2": KEY_2}, "k2")  # k1 can now be retired
    assert snapshot(UnitOfWork(engine, only_k2, blind_index)) == before
    assert rotate_keys(factory, ring_b) == 0


def test_rotation_leaves_newer_writes_alone(
    engine: Engine, cipher: KeyRing, blind_index: BlindIndex
) -> None:
    ring_b = KeyRing({"k2": KEY_2, "k1": KEY_1}, "k2")
    with UnitOfWork(engine, cipher, blind_index) as uow:
        uow.resources.put(patient("p1"), **provenance())
        uow.commit()
    # a service already on the new ring writes between rotation runs: mixed keys still read
    with UnitOfWork(engine, ring_b, blind_index) as uow:
        uow.resources.put(patient("p1", gender="male"), **provenance())
        uow.commit()
        assert [v["meta"]["versionId"] for v in uow.resources.history("Patient", "p1")] == [
            "2",
            "1",
        ]
    assert rotate_keys(make_session_factory(engine), ring_b) == 1  # only version 1 was on k1
