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

from sqlalchemy.orm import Session

from unified_record.consent.enforcement import AccessContext, EnforcementPoint
from unified_record.consent.engine import ResourceFacts, decide
from unified_record.store.resources import ResourceRepository

__all__ = ["record_withholds"]


def record_withholds(point: EnforcementPoint, session: Session,
                     repository: ResourceRepository, ctx: AccessContext,
                     client_ids: Iterable[str]) -> bool:
    """Whether any of these clients' records (source Patients and what refers to them)
    holds a resource the caller may not see for its purpose. Decided on each distinct
    (type, source organisation, labels) of the records (`EnforcementPoint.record_facts`,
    read with the clients' states when the request said it would ask)."""
    clients = sorted(set(client_ids))
    if not clients:
        return False
    now = datetime.now(UTC)
    facts = point.record_facts(session, repository, clients)
    states = point.client_states(session, repository, clients, now)
    categories = point.policy.categories.keys()
    for client_id in clients:
        state = states[client_id]
        for rtype, source_org, labels in facts[client_id]:
            found = ResourceFacts(rtype, "-", source_org,
                                  frozenset(labels.split()) & categories)
            if not decide(ctx.caller, ctx.purpose, client_id, found, point.policy,
                          state.consents, state.opt_out, state.grants, now).permit:
                return True
    return False
