"""`Patient/$everything` for a unified client: its golden Patient, every linked source
Patient, and every stored resource that refers to one of them, each with its provenance."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from unified_record.linkage.golden import DEFAULT_CLIENT_SYSTEM, golden_patient
from unified_record.records.search import Found, load_found
from unified_record.store.crypto import BlindIndexer
from unified_record.store.models import ClientMemberRow, SearchIndexRow
from unified_record.store.resources import ResourceRepository

__all__ = ["everything"]


def everything(session: Session, repository: ResourceRepository, blind_index: BlindIndexer,
               client_id: str, client_system: str = DEFAULT_CLIENT_SYSTEM
               ) -> list[Found] | None:
    """All about `client_id` (golden Patient first), or None if it is not an active client."""
    golden = golden_patient(session, repository, client_id, client_system)
    if golden is None or golden.get("active") is False:
        return None
    members = sorted(session.scalars(sa.select(ClientMemberRow.unique_id)
                                     .where(ClientMemberRow.client_id == client_id)))
    sources = load_found(session, repository, "Patient", members, ())
    refs = [blind_index.digest("patient", f"Patient/{uid}") for uid in members]
    by_type: dict[str, set[str]] = {}
    if refs:
        for rtype, rid in session.execute(
                sa.select(SearchIndexRow.resource_type, SearchIndexRow.resource_id).where(
                    SearchIndexRow.param == "patient", SearchIndexRow.value_hash.in_(refs))):
            by_type.setdefault(rtype, set()).add(rid)
    linked: list[Found] = []
    for rtype in sorted(by_type):
        linked += sorted(load_found(session, repository, rtype, by_type[rtype], ()),
                         key=lambda f: str(f.resource.get("id")))
    labels = tuple(sorted({c.get("code", "") for c in
                           (golden.get("meta") or {}).get("security") or []}))
    newest = max((f.last_updated for f in (*sources, *linked)),
                 default=datetime(1970, 1, 1, tzinfo=UTC))
    head = Found(golden, "unified-record", None, labels, newest)
    return [head, *sorted(sources, key=lambda f: str(f.resource.get("id"))), *linked]
