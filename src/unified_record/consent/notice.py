"""The "some data was withheld" notice, decided for a client's whole record.

A search that said so only when one of its own matches was withheld would be an oracle:
`Condition?_id=X` (or `?code=<a sensitive code>`) would carry the warning exactly when a
withheld X exists. So the notice a response carries says whether the record of a client it
concerns holds anything withheld from this caller, whatever the query matched.

Decided from provenance and stored security labels alone (no decryption, a few queries),
by the same engine as every access; nothing is audited here (the response's own resources
are, by the enforcement point).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from unified_record.consent.enforcement import AccessContext, EnforcementPoint
from unified_record.consent.engine import ResourceFacts, decide
from unified_record.store.crypto import BlindIndexer
from unified_record.store.models import ClientMemberRow, ResourceRow, SearchIndexRow
from unified_record.store.resources import ResourceRepository

__all__ = ["record_withholds"]


def record_withholds(point: EnforcementPoint, session: Session,
                     repository: ResourceRepository, blind_index: BlindIndexer,
                     ctx: AccessContext, client_ids: Iterable[str]) -> bool:
    """Whether any of these clients' records (source Patients and what refers to them)
    holds a resource the caller may not see for its purpose."""
    clients = sorted(set(client_ids))
    if not clients:
        return False
    now = datetime.now(UTC)
    owner: dict[str, str] = {}
    for uid, client_id in session.execute(
            sa.select(ClientMemberRow.unique_id, ClientMemberRow.client_id)
            .where(ClientMemberRow.client_id.in_(clients))):
        owner[uid] = client_id
    if not owner:
        return False
    digests = {blind_index.digest("patient", f"Patient/{uid}"): uid for uid in owner}
    keys = {("Patient", uid): owner[uid] for uid in owner}
    for rtype, rid, value_hash in session.execute(
            sa.select(SearchIndexRow.resource_type, SearchIndexRow.resource_id,
                      SearchIndexRow.value_hash)
            .where(SearchIndexRow.param == "patient",
                   SearchIndexRow.value_hash.in_(sorted(digests)))):
        keys[(rtype, rid)] = owner[digests[value_hash]]
    states = point.client_states(session, repository, clients, now)
    known = point.policy.categories.keys()
    by_type: dict[str, list[str]] = {}
    for rtype, rid in keys:
        by_type.setdefault(rtype, []).append(rid)
    for rtype, ids in sorted(by_type.items()):
        for start in range(0, len(ids), 500):
            for rid, source_org, labels in session.execute(
                    sa.select(ResourceRow.id, ResourceRow.source_org,
                              ResourceRow.security_labels)
                    .where(ResourceRow.resource_type == rtype,
                           ResourceRow.id.in_(sorted(ids)[start:start + 500]),
                           ResourceRow.deleted.is_(False))):
                client_id = keys[(rtype, rid)]
                state = states[client_id]
                facts = ResourceFacts(rtype, rid, source_org,
                                      frozenset((labels or "").split()) & known)
                if not decide(ctx.caller, ctx.purpose, client_id, facts, point.policy,
                              state.consents, state.opt_out, state.grants, now).permit:
                    return True
    return False
