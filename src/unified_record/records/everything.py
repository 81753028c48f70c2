"""`Patient/$everything` for a unified client: its golden Patient, every linked source
Patient, and every stored resource that refers to one of them, each with its provenance."""

from __future__ import annotations

from dataclasses import replace

import sqlalchemy as sa
from sqlalchemy.orm import Session

from unified_record.linkage.golden import DEFAULT_CLIENT_SYSTEM
from unified_record.records.search import (
    Found,
    Visible,
    client_sources,
    golden_found,
    load_found,
)
from unified_record.store.crypto import BlindIndexer
from unified_record.store.models import ClientRow, SearchIndexRow
from unified_record.store.resources import ResourceRepository

__all__ = ["everything"]


def everything(session: Session, repository: ResourceRepository, blind_index: BlindIndexer,
               client_id: str, client_system: str = DEFAULT_CLIENT_SYSTEM,
               visible: Visible | None = None) -> list[Found] | None:
    """All about `client_id` (golden Patient first, assembled from the source Patients
    `visible` lets the caller see), or None if it is not an active client or none of its
    records is visible (it then answers as an unknown client does)."""
    client = session.get(ClientRow, client_id)
    if client is None or client.status != "active":
        return None
    sources = client_sources(session, repository, client_id)
    shown = sources if visible is None else [
        replace(f, resource=body) for f, body in zip(sources, visible(sources), strict=True)
        if body is not None]
    if not shown:
        return None
    refs = [blind_index.digest("patient", f"Patient/{f.resource['id']}") for f in sources]
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
    head = golden_found(client_id, shown, client_system)
    newest = max((f.last_updated for f in (*sources, *linked)), default=head.last_updated)
    return [replace(head, last_updated=newest), *sources, *linked]
