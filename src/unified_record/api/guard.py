"""The API's access guard: every resource a route returns passes the consent enforcement
point (`consent.enforcement`), which decides and writes the audit log.

The purpose of use comes from the `X-Purpose-Of-Use` header (a v3 ActReason code such as
TREAT, ETREAT, BTG, HOPERAT, HRESCH), else from the token (`purpose_of_use`: the built-in
issuer puts the one registered for the client, `clients add --purpose`). No purpose means
none, never direct care: the request is refused (403) and audited. The policy decides
whether the caller's role may use the purpose at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from fastapi import Request

from unified_record.api.errors import AUDIT_NOT_WRITTEN, FHIRError
from unified_record.audit.log import AuditWriteError
from unified_record.consent.enforcement import AccessContext, AccessRefused, EnforcementPoint
from unified_record.records.search import Found, SearchRequest, Visible, included
from unified_record.security.caller import Caller
from unified_record.security.scopes import Interaction
from unified_record.store.unit_of_work import UnitOfWork

__all__ = ["PURPOSE_HEADER", "Guard", "refusals"]

PURPOSE_HEADER = "X-Purpose-Of-Use"


@contextmanager
def refusals() -> Iterator[None]:
    """AccessRefused -> 403; an audit log that cannot be written -> fail closed (500)."""
    try:
        yield
    except AccessRefused:
        raise FHIRError(403, "forbidden", "this purpose of use is not allowed for the "
                        "caller's role") from None
    except AuditWriteError:
        raise FHIRError(500, "exception", AUDIT_NOT_WRITTEN) from None


@dataclass
class Guard:
    point: EnforcementPoint
    ctx: AccessContext

    @classmethod
    def of(cls, request: Request, caller: Caller) -> Guard:
        given = request.headers.get(PURPOSE_HEADER) or caller.purpose_of_use
        purpose = given.strip().upper() if given else None
        host = request.client.host if request.client else None
        return cls(request.app.state.enforcement, AccessContext(caller, purpose, host))

    def read(self, uow: UnitOfWork, resource_type: str, resource_id: str,
             version_id: int | None = None) -> dict[str, Any] | None:
        with refusals():
            return self.point.authorize_read(uow.session, uow.resources, self.ctx,
                                             resource_type, resource_id, version_id,
                                             audit_at_commit=True).resource

    def assembled(self, uow: UnitOfWork, body: dict[str, Any],
                  interaction: Interaction) -> dict[str, Any] | None:
        with refusals():
            return self.point.authorize_resource(uow.session, uow.resources, self.ctx, body,
                                                 interaction.value,
                                                 audit_at_commit=True).resource

    def may_know_deleted(self, uow: UnitOfWork, resource_type: str, resource_id: str) -> bool:
        """410 only for a caller who could have read the last version before the deletion;
        anyone else gets the 404 of an unknown resource."""
        live = [v for v in uow.resources.versions(resource_type, resource_id) if not v.deleted]
        if not live:
            return False
        body = uow.resources.vread(resource_type, resource_id, live[0].version_id)
        if body is None:
            return False
        with refusals():
            shown = self.point.filter_resources(uow.session, uow.resources, self.ctx, [body],
                                                interaction="read")
        return bool(shown.permitted)

    def filter(self, uow: UnitOfWork, bodies: Sequence[dict[str, Any]],
               interaction: Interaction,
               known: dict[tuple[str, str], tuple[str | None, str]] | None = None
               ) -> tuple[list[dict[str, Any]], int]:
        with refusals():
            shown = self.point.filter_resources(uow.session, uow.resources, self.ctx,
                                                list(bodies), interaction=interaction.value,
                                                known=known, audit_at_commit=True)
        return shown.permitted, shown.withheld

    def filter_found(self, uow: UnitOfWork, found: Sequence[Found],
                     interaction: Interaction) -> tuple[list[Found], int]:
        """The permitted matches, in order, each with its (possibly redacted) body."""
        permitted, withheld = self.filter(uow, [f.resource for f in found], interaction,
                                          _facts(found))
        by_key = {(f.resource.get("resourceType"), f.resource.get("id")): f for f in found}
        kept = [replace(by_key[(body.get("resourceType"), body.get("id"))], resource=body)
                for body in permitted]
        return kept, withheld

    def visible(self, uow: UnitOfWork) -> Visible:
        """For assembling a golden Patient: each source Patient as the caller may see it,
        or None (decided, not audited; the golden Patient is, when returned)."""
        def decide(found: Sequence[Found]) -> list[dict[str, Any] | None]:
            with refusals():
                return self.point.visible(uow.session, uow.resources, self.ctx,
                                          [f.resource for f in found], known=_facts(found))
        return decide

    def included(self, uow: UnitOfWork, request: SearchRequest,
                 page: Sequence[Found]) -> list[Found]:
        extra = included(uow.session, uow.resources, uow.blind_index, request, page)
        if not extra:  # nothing to decide, so no audit entry (the matches have theirs)
            return []
        kept, _ = self.filter_found(uow, extra, Interaction.SEARCH_TYPE)
        return kept


def _facts(found: Sequence[Found]) -> dict[tuple[str, str], tuple[str | None, str]]:
    """The provenance and labels a search read with each match, for the engine as they are
    (a golden Patient is not stored: no source organisation, its own labels)."""
    return {(str(f.resource.get("resourceType")), str(f.resource.get("id"))):
            (f.source_org, " ".join(f.security_labels)) for f in found}
