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
from unified_record.store.membership import Membership
from unified_record.store.models import ClientMemberRow, ResourceRow, SearchIndexRow
from unified_record.store.resources import ResourceRepository

__all__ = ["record_withholds"]


def record_withholds(point: EnforcementPoint, session: Session,
                     repository: ResourceRepository, blind_index: BlindIndexer,
                     ctx: AccessContext, client_ids: Iterable[str]) -> bool:
    """Whether any of these clients' records (source Patients and what refers to them)
    holds a resource the caller may not see for its purpose. Two queries: the clients'
    members (unless the request has read them already), then the distinct (type, source
    organisation, labels) of their records, which is all a decision needs."""
    clients = sorted(set(client_ids))
    if not clients:
        return False
    now = datetime.now(UTC)
    known = Membership.of(session).members  # members the request has read already
    owner = {uid: client_id for client_id in clients for uid in known.get(client_id, ())}
    unread = [c for c in clients if c not in known]
    if unread:
        for uid, client_id in session.execute(
                sa.select(ClientMemberRow.unique_id, ClientMemberRow.client_id)
                .where(ClientMemberRow.client_id.in_(unread))):
            owner[uid] = client_id
    if not owner:
        return False
    states = point.client_states(session, repository, clients, now)
    categories = point.policy.categories.keys()
    uids = sorted(owner)
    for start in range(0, len(uids), 500):
        chunk = uids[start:start + 500]
        digests = {blind_index.digest("patient", f"Patient/{uid}"): uid for uid in chunk}
        for key, rtype, source_org, labels in session.execute(
                _FACTS, {"digests": sorted(digests), "uids": chunk}):
            client_id = owner[digests.get(key, key)]
            state = states[client_id]
            facts = ResourceFacts(rtype, "-", source_org,
                                  frozenset((labels or "").split()) & categories)
            if not decide(ctx.caller, ctx.purpose, client_id, facts, point.policy,
                          state.consents, state.opt_out, state.grants, now).permit:
                return True
    return False


# (source Patient id or the hash of a reference to it, type, source organisation, labels),
# distinct: every live resource that refers to one of the source Patients, and the source
# Patients themselves. Built once; the lists are bound per call.
_FACTS = sa.union(
    sa.select(SearchIndexRow.value_hash, ResourceRow.resource_type, ResourceRow.source_org,
              ResourceRow.security_labels)
    .join(ResourceRow, sa.and_(ResourceRow.resource_type == SearchIndexRow.resource_type,
                               ResourceRow.id == SearchIndexRow.resource_id))
    .where(SearchIndexRow.param == "patient",
           SearchIndexRow.value_hash.in_(sa.bindparam("digests", expanding=True)),
           ResourceRow.deleted.is_(False))
    .distinct(),
    sa.select(ResourceRow.id, ResourceRow.resource_type, ResourceRow.source_org,
              ResourceRow.security_labels)
    .where(ResourceRow.resource_type == "Patient",
           ResourceRow.id.in_(sa.bindparam("uids", expanding=True)),
           ResourceRow.deleted.is_(False)))
