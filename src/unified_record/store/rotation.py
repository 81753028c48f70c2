"""Key rotation: re-encrypt everything not under the active key, while the service runs.

Each batch is its own short transaction, and each row is updated only if it is still the
version that was read (compare-and-set), so concurrent writers are never overwritten and an
interrupted rotation simply resumes on the next run.

The current version's `resource_version` row has no body and so no key id (NULL), which
`key_id != active` never selects: that body is `resource.body`, rotated as `resource`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from unified_record.store.crypto import (
    Cipher,
    body_aad,
    break_glass_aad,
    decision_aad,
    raw_aad,
    review_aad,
)
from unified_record.store.models import Base

__all__ = ["rotate_keys"]

_RETRIES = 5  # a batch that loses a SQLite write race is simply tried again


@dataclass(frozen=True, slots=True)
class _Target:
    table: str
    key: tuple[str, ...]  # primary key, for paging
    column: str  # the encrypted column
    guard: tuple[str, ...]  # columns that must be unchanged for the update to apply
    aad: Callable[[sa.RowMapping], bytes]


_TARGETS = (
    _Target(
        "resource",
        ("resource_type", "id"),
        "body",
        ("version_id", "key_id"),
        lambda r: body_aad(r["resource_type"], r["id"], r["version_id"]),
    ),
    _Target(
        "resource_version",
        ("resource_type", "id", "version_id"),
        "body",
        ("key_id",),
        lambda r: body_aad(r["resource_type"], r["id"], r["version_id"]),
    ),
    _Target("inbound_message", ("id",), "raw", ("key_id",), lambda r: raw_aad(r["id"])),
    _Target("link_decision", ("id",), "reason", ("key_id",), lambda r: decision_aad(r["id"])),
    _Target("break_glass_grant", ("id",), "reason", ("key_id",),
            lambda r: break_glass_aad(r["id"])),
    _Target("break_glass_review", ("grant_id",), "note", ("key_id",),
            lambda r: review_aad(r["grant_id"])),
)


def rotate_keys(
    session_factory: Callable[[], Session], cipher: Cipher, batch_size: int = 500
) -> int:
    """Re-encrypt every row whose key id is not `cipher.active_kid`; return how many."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    return sum(_rotate(session_factory, cipher, target, batch_size) for target in _TARGETS)


def _rotate(
    session_factory: Callable[[], Session], cipher: Cipher, target: _Target, batch_size: int
) -> int:
    table = Base.metadata.tables[target.table]
    after: Sequence[Any] | None = None
    rotated = 0
    while True:
        for attempt in range(_RETRIES):
            try:
                count, after = _batch(session_factory, cipher, table, target, after, batch_size)
                break
            except OperationalError:
                if attempt == _RETRIES - 1:
                    raise
        if after is None:
            return rotated
        rotated += count


def _batch(
    session_factory: Callable[[], Session],
    cipher: Cipher,
    table: sa.Table,
    target: _Target,
    after: Sequence[Any] | None,
    batch_size: int,
) -> tuple[int, Sequence[Any] | None]:
    """Rotate one page of rows after `after`; return (count, last key) or (0, None) at the end."""
    key = [table.c[name] for name in target.key]
    columns = {*target.key, *target.guard, "version_id", target.column} & set(table.c.keys())
    stmt = sa.select(*(table.c[name] for name in sorted(columns))).where(
        table.c.key_id != cipher.active_kid
    )
    if after is not None:
        stmt = stmt.where(sa.tuple_(*key) > sa.tuple_(*after))
    stmt = stmt.order_by(*key).limit(batch_size)
    with session_factory() as session, session.begin():
        rows = session.execute(stmt).mappings().all()
        count = 0
        for row in rows:
            aad = target.aad(row)
            envelope = cipher.encrypt(cipher.decrypt(row[target.column], aad), aad)
            update = (
                sa.update(table)
                .where(*(table.c[name] == row[name] for name in (*target.key, *target.guard)))
                .values({target.column: envelope, "key_id": cipher.key_id_of(envelope)})
            )
            count += cast(sa.CursorResult[Any], session.execute(update)).rowcount
    if not rows:
        return 0, None
    return count, tuple(rows[-1][name] for name in target.key)
