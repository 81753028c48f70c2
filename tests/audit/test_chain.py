"""The audit chain: appends verify; editing, deleting, inserting or reordering rows directly in
the database, or rewriting the chain with fresh hashes, or forging a signature, is caught."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from audit_support import drop_guards, event, forge, new_signer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from unified_record.audit import AuditLog, AuditSigner, verify_audit_log
from unified_record.audit.log import canonical_json, chain_hash, checkpoint_message
from unified_record.security._base64 import encode_b64
from unified_record.store.governance_models import GENESIS_HASH, AuditCheckpointRow


def _keys(signer: AuditSigner) -> dict[str, Ed25519PublicKey]:
    return {signer.key_id: signer.public_key}


def _fill(log: AuditLog, count: int = 10) -> None:
    for number in range(count):
        log.append(event(number))


def _row(conn: sa.Connection, seq: int) -> sa.Row[tuple[str, str, str]]:
    return conn.execute(sa.text("SELECT event, prev_hash, entry_hash FROM audit_entry "
                                "WHERE seq = :s"), {"s": seq}).one()


def test_appends_chain_and_checkpoints_verify(log: AuditLog, engine: Engine,
                                              signer: AuditSigner) -> None:
    report = verify_audit_log(engine, _keys(signer))
    assert report.ok and report.entries == 0
    _fill(log)
    records = log.entries()
    assert [r.seq for r in records] == list(range(1, 11))
    assert records[0].event["resourceType"] == "AuditEvent"
    prev = GENESIS_HASH
    with engine.connect() as conn:
        for record in records:
            stored, prev_hash, entry_hash = _row(conn, record.seq)
            assert stored.encode() == canonical_json(json.loads(stored))
            assert (prev_hash, entry_hash) == (prev, chain_hash(prev, stored.encode()))
            prev = entry_hash
    assert log.head() == (10, prev)
    report = verify_audit_log(engine, _keys(signer))
    assert report.ok, report.summary()
    assert (report.entries, report.checkpoints, report.last_checkpoint) == (10, 2, 8)
    assert log.checkpoint() == 10
    report = verify_audit_log(engine, _keys(signer))
    assert report.summary() == ("OK: 10 entries, 3 signed checkpoints verified "
                                "(last at entry 10)")


def test_no_one_can_update_or_delete_entries(log: AuditLog, engine: Engine) -> None:
    _fill(log, 4)
    for statement in ("UPDATE audit_entry SET client_id = 'x' WHERE seq = 2",
                      "DELETE FROM audit_entry WHERE seq = 4",
                      "UPDATE audit_checkpoint SET key_id = 'x'",
                      "DELETE FROM audit_checkpoint"):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(statement))


def _alter(conn: sa.Connection) -> None:
    text = _row(conn, 5).event.replace('"returned"', '"withheld"')
    conn.execute(sa.text("UPDATE audit_entry SET event = :e WHERE seq = 5"), {"e": text})


def _alter_column(conn: sa.Connection) -> None:
    conn.execute(sa.text("UPDATE audit_entry SET client_id = 'C999999999999' WHERE seq = 5"))


def _alter_and_rehash(conn: sa.Connection) -> None:
    stored, prev_hash, _ = _row(conn, 5)
    text = stored.replace('"returned"', '"withheld"')
    conn.execute(sa.text("UPDATE audit_entry SET event = :e, entry_hash = :h WHERE seq = 5"),
                 {"e": text, "h": chain_hash(prev_hash, text.encode())})


def _remove(conn: sa.Connection) -> None:
    conn.execute(sa.text("DELETE FROM audit_entry WHERE seq = 5"))


def _remove_last(conn: sa.Connection) -> None:
    conn.execute(sa.text("DELETE FROM audit_entry WHERE seq = 10"))


def _insert(conn: sa.Connection) -> None:
    for seq in range(10, 5, -1):  # make room at 6, as an attacker would
        conn.execute(sa.text("UPDATE audit_entry SET seq = :n WHERE seq = :s"),
                     {"n": seq + 1, "s": seq})
    forge(conn, 6, _row(conn, 5).entry_hash, event(99))


def _append_forged(conn: sa.Connection) -> None:
    forge(conn, 11, _row(conn, 10).entry_hash, event(99))


def _reorder(conn: sa.Connection) -> None:
    conn.execute(sa.text("UPDATE audit_entry SET seq = -1 WHERE seq = 5"))
    conn.execute(sa.text("UPDATE audit_entry SET seq = 5 WHERE seq = 6"))
    conn.execute(sa.text("UPDATE audit_entry SET seq = 6 WHERE seq = -1"))


def _rewrite_from_3(conn: sa.Connection) -> None:
    """Change entry 3 and recompute every later hash, and the head: only checkpoints tell."""
    prev = _row(conn, 2).entry_hash
    for seq in range(3, 11):
        stored = _row(conn, seq).event
        if seq == 3:
            stored = stored.replace('"returned"', '"withheld"')
        new_hash = chain_hash(prev, stored.encode())
        conn.execute(sa.text("UPDATE audit_entry SET event = :e, prev_hash = :p, "
                             "entry_hash = :h WHERE seq = :s"),
                     {"e": stored, "p": prev, "h": new_hash, "s": seq})
        prev = new_hash
    conn.execute(sa.text("UPDATE audit_chain_head SET entry_hash = :h"), {"h": prev})


def _forge_signature(conn: sa.Connection) -> None:
    cp = AuditCheckpointRow
    seq, entry_hash, signed_at, key_id = conn.execute(
        sa.select(cp.seq, cp.entry_hash, cp.signed_at, cp.key_id).where(cp.seq == 8)).one()
    # a forger without the key signs the same message with a key of their own
    signature = new_signer().sign(checkpoint_message(seq, entry_hash, signed_at, key_id))
    conn.execute(sa.text("UPDATE audit_checkpoint SET signature = :s WHERE seq = 8"),
                 {"s": encode_b64(signature)})


def _foreign_key(conn: sa.Connection) -> None:
    conn.execute(sa.text("UPDATE audit_checkpoint SET key_id = 'feedfacefeedface' "
                         "WHERE seq = 4"))


@pytest.mark.parametrize(("tamper", "seq", "kind", "detail"), [
    (_alter, 5, "altered", "content does not match its hash"),
    (_alter_column, 5, "altered", "indexed columns disagree"),
    (_alter_and_rehash, 5, "altered", "hash was recomputed"),
    (_remove, 5, "removed", "no longer in the log"),
    (_remove_last, 10, "removed", "log ends at entry 9 but its head says 10"),
    (_insert, 6, "inserted", "entries 6-6 are not in the chain"),
    (_append_forged, 11, "inserted", "head does not name its last entry"),
    (_reorder, 5, "reordered", "it follows entry 6"),
    (_rewrite_from_3, 4, "altered", "does not match the signed checkpoint"),
    (_forge_signature, 8, "bad-signature", "signature does not verify"),
    (_foreign_key, 4, "bad-signature", "unknown key"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else None)
def test_tampering_is_found_at_the_first_bad_entry(
        log: AuditLog, engine: Engine, signer: AuditSigner,
        tamper: Callable[[sa.Connection], None], seq: int, kind: str, detail: str) -> None:
    _fill(log)
    with engine.begin() as conn:
        drop_guards(conn)
        tamper(conn)
    report = verify_audit_log(engine, _keys(signer))
    assert not report.ok
    first = report.first
    assert first is not None
    assert (first.seq, first.kind) == (seq, kind), report.summary()
    assert detail in first.detail
    assert report.summary().startswith(f"FAILED: entry {seq}: {kind}: ")


def test_a_new_signing_key_still_verifies_old_checkpoints(log: AuditLog, engine: Engine,
                                                          signer: AuditSigner) -> None:
    _fill(log, 4)
    newer = new_signer()
    AuditLog(engine, newer, checkpoint_every=4).append(event(5))
    assert AuditLog(engine, newer).checkpoint() == 5
    both = {signer.key_id: signer.public_key, newer.key_id: newer.public_key}
    assert verify_audit_log(engine, both).ok
    only_new = verify_audit_log(engine, {newer.key_id: newer.public_key})
    assert only_new.first is not None and only_new.first.seq == 4


def test_the_database_hashes_as_the_chain_rule_says(log: AuditLog, engine: Engine,
                                                    signer: AuditSigner) -> None:
    """On PostgreSQL the append hashes in SQL: every entry's hash must be exactly
    `chain_hash(previous, canonical JSON)`, non-ASCII text included."""
    body = event(1)
    body["outcomeDesc"] = "Zoë’s record – withheld: «mental health»"
    log.append(body)
    log.append(event(2))
    with engine.connect() as conn:
        prev = GENESIS_HASH
        for seq in (1, 2):
            stored, prev_hash, entry_hash = _row(conn, seq)
            assert prev_hash == prev
            assert entry_hash == chain_hash(prev, canonical_json(json.loads(stored)))
            prev = entry_hash
    assert verify_audit_log(engine, _keys(signer)).ok


_EVENT_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _EVENT_VALUES, max_size=6))
def test_canonical_json_is_the_bytes_json_wrote(value: dict[str, object]) -> None:
    """Entries and checkpoints written before canonical JSON moved to orjson must hash and
    verify the same: non-ASCII, control characters, big integers, key order, as `json`."""
    assert canonical_json(value) == json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
