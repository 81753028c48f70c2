"""Verification of the audit log: the chain, the indexed columns, the head and the checkpoints.

Walking the entries in seq order, each must hash to its stored hash, name the previous
entry's hash, and agree with its indexed columns. The first break is classified:

* **reordered**: the hash it names belongs to an entry that now sits after it;
* **inserted**: the chain holds without it (the next entry names the one before it), or the
  entry it names sits further back (those in between were inserted);
* **removed**: the entry it names is gone (a gap in seq, or the log ends before the head
  or a checkpoint says it does);
* **altered**: its content no longer matches its hash, its columns disagree with its event,
  or (hash recomputed) the next entry still names the old hash.

A chain rewritten from some point on with fresh hashes is consistent in itself; the signed
checkpoints catch it, since the entry at a checkpoint's seq no longer has the signed hash.
Entries after the last checkpoint are protected by the chain and the head only; write a
checkpoint (`AuditLog.checkpoint`) before exporting or archiving the log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Engine

from unified_record.audit.events import derive_columns
from unified_record.audit.log import chain_hash, checkpoint_message
from unified_record.audit.signing import verify_signature
from unified_record.security._base64 import decode_b64
from unified_record.store.governance_models import (
    GENESIS_HASH,
    AuditChainHeadRow,
    AuditCheckpointRow,
    AuditEntryRow,
)

__all__ = ["Problem", "VerifyReport", "verify_audit_log"]


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: str  # altered | inserted | removed | reordered | bad-signature
    detail: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.kind}: {self.detail}"


@dataclass
class VerifyReport:
    entries: int = 0
    checkpoints: int = 0
    last_checkpoint: int = 0
    head_seq: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return min(self.problems, key=lambda p: p.seq) if self.problems else None

    def summary(self) -> str:
        if self.first is not None:
            more = len(self.problems) - 1
            return f"FAILED: {self.first}" + (f" (and {more} more)" if more else "")
        return (f"OK: {self.entries} entries, {self.checkpoints} signed checkpoints verified "
                f"(last at entry {self.last_checkpoint})")


@dataclass(frozen=True)
class _Row:
    seq: int
    recorded: datetime
    client_id: str | None
    decision: str
    break_glass: bool
    event: str
    prev_hash: str
    entry_hash: str


def verify_audit_log(engine: Engine, keys: Mapping[str, Ed25519PublicKey]) -> VerifyReport:
    """Check the whole log; `keys` are the trusted public keys by key id
    (`audit.signing.load_verify_keys`)."""
    report = VerifyReport()
    with engine.connect() as conn:
        head_seq, head_hash = conn.execute(
            sa.select(AuditChainHeadRow.seq, AuditChainHeadRow.entry_hash)
            .where(AuditChainHeadRow.id == 1)).one()
        report.head_seq = head_seq
        hashes: dict[int, str] = {}  # entry hashes at checkpoint seqs, filled by the walk
        checkpoints = list(conn.execute(sa.select(AuditCheckpointRow)
                                        .order_by(AuditCheckpointRow.seq)))
        wanted = {cp.seq for cp in checkpoints}
        last = _walk(engine, conn, report, wanted, hashes)
    last_seq, last_hash = last
    if report.ok:
        if head_seq > last_seq:
            report.problems.append(Problem(last_seq + 1, "removed", (
                f"the log ends at entry {last_seq} but its head says {head_seq}")))
        elif head_seq < last_seq or head_hash != last_hash:
            report.problems.append(Problem(head_seq + 1 if head_seq < last_seq else last_seq,
                                           "inserted" if head_seq < last_seq else "altered",
                                           "the log's head does not name its last entry"))
    for cp in checkpoints:
        report.checkpoints += 1
        why = verify_signature(keys, cp.key_id, _signature(cp.signature),
                               checkpoint_message(cp.seq, cp.entry_hash, cp.signed_at,
                                                  cp.key_id))
        if why is not None:
            report.problems.append(Problem(cp.seq, "bad-signature", f"checkpoint {why}"))
        elif cp.seq > last_seq:
            report.problems.append(Problem(last_seq + 1, "removed", (
                f"a signed checkpoint covers entry {cp.seq} but the log ends at {last_seq}")))
        elif hashes.get(cp.seq) != cp.entry_hash:
            report.problems.append(Problem(cp.seq, "altered", (
                "does not match the signed checkpoint: entries up to here were rewritten")))
        else:
            report.last_checkpoint = cp.seq
    return report


def _walk(engine: Engine, conn: sa.Connection, report: VerifyReport, wanted: set[int],
          hashes: dict[int, str]) -> tuple[int, str]:
    """Walk the chain; record the first break; return the last (seq, hash) read."""

    def seq_named(entry_hash: str) -> int | None:  # another connection: `rows` is streaming
        with engine.connect() as other:
            return other.execute(sa.select(AuditEntryRow.seq)
                                 .where(AuditEntryRow.entry_hash == entry_hash)).scalar()

    rows = _rows(conn)
    previous: _Row | None = None
    current = next(rows, None)
    while current is not None:
        following = next(rows, None)
        report.entries += 1
        if current.seq in wanted:
            hashes[current.seq] = current.entry_hash
        if report.ok:
            problem = _check(seq_named, previous, current, following)
            if problem is not None:
                report.problems.append(problem)
        previous, current = current, following
    return (previous.seq, previous.entry_hash) if previous else (0, GENESIS_HASH)


def _check(seq_named: Callable[[str], int | None], previous: _Row | None, row: _Row,
           following: _Row | None) -> Problem | None:
    expected_prev = previous.entry_hash if previous else GENESIS_HASH
    expected_seq = previous.seq + 1 if previous else 1
    if chain_hash(row.prev_hash, row.event.encode("utf-8")) != row.entry_hash:
        return Problem(row.seq, "altered", "its content does not match its hash")
    if not _columns_agree(row):
        return Problem(row.seq, "altered", "its indexed columns disagree with its event")
    if row.prev_hash != expected_prev:
        named = seq_named(row.prev_hash)
        if named is not None and named > row.seq:
            return Problem(row.seq, "reordered", f"it follows entry {named}, which now sits "
                           "after it")
        if following is not None and following.prev_hash == expected_prev:
            return Problem(row.seq, "inserted", "the chain holds without it")
        if named is not None and previous is not None and named < previous.seq:
            return Problem(named + 1, "inserted", f"entries {named + 1}-{previous.seq} are "
                           "not in the chain")
        if named is None and previous is not None and row.seq == expected_seq:
            return Problem(previous.seq, "altered", "its hash was recomputed; the next "
                           "entry names the original")
        return Problem(expected_seq, "removed", f"entry {row.seq} follows an entry that is "
                       "no longer in the log")
    if row.seq != expected_seq:
        return Problem(expected_seq, "altered", f"sequence numbers jump to {row.seq} with "
                       "the chain intact")
    return None


def _columns_agree(row: _Row) -> bool:
    try:
        event: dict[str, Any] = json.loads(row.event)
        client_id, recorded, decision, break_glass = derive_columns(event)
        recorded_at = datetime.fromisoformat(recorded)
    except (ValueError, TypeError, AttributeError):
        return False
    return (client_id, recorded_at, decision, break_glass) == (
        row.client_id, row.recorded, row.decision, row.break_glass)


def _rows(conn: sa.Connection) -> Iterator[_Row]:
    table = AuditEntryRow.__table__
    stmt = sa.select(*(table.c[name] for name in _Row.__dataclass_fields__)).order_by(
        table.c.seq)
    for row in conn.execution_options(yield_per=1000).execute(stmt):
        yield _Row(**row._asdict())


def _signature(text: str) -> bytes:
    try:
        return decode_b64(text)
    except ValueError:
        return b""
