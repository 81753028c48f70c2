"""The API with the consent engine and the audit log taken out: the baseline that
`bench/api_load.py --without-consent` compares against (issue 7: consent checks must cost
less than 20%). For measurement only. It lives here, not in the package, so that the
service itself has no switch that turns consent or auditing off.

    PYTHONPATH=bench uvicorn serve_unguarded:create_app --factory --workers 2
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy.orm import Session

from unified_record.api import create_app as create_guarded_app
from unified_record.api import fhir as fhir_routes
from unified_record.consent.enforcement import AccessContext, EnforcementPoint
from unified_record.consent.engine import Candidate, Decision, Filtered, ResourceFacts
from unified_record.store.resources import ResourceRepository

PERMIT = Decision(True, ["consent and audit switched off for a benchmark"])


class PermitAll(EnforcementPoint):
    """Every purpose allowed, every resource returned as stored, nothing audited."""

    def check_purpose(self, ctx: AccessContext, interaction: str) -> Decision:
        return PERMIT

    def filter_resources(self, session: Session, repository: ResourceRepository,
                         ctx: AccessContext, bodies: Sequence[Mapping[str, Any]], *,
                         interaction: str = "search-type", parameters: Iterable[str] = (),
                         known: Mapping[tuple[str, str], tuple[str | None, str]] | None = None,
                         audit_at_commit: bool = False) -> Filtered:
        permitted = [dict(body) for body in bodies]
        facts = [Candidate(None, ResourceFacts(str(b.get("resourceType")), str(b.get("id"))), b)
                 for b in bodies]
        return Filtered(permitted, 0, [(c, PERMIT) for c in facts])

    def visible(self, session: Session, repository: ResourceRepository, ctx: AccessContext,
                bodies: Sequence[Mapping[str, Any]], *, interaction: str = "read",
                known: Mapping[tuple[str, str], tuple[str | None, str]] | None = None
                ) -> list[dict[str, Any] | None]:
        return [dict(body) for body in bodies]

    def _append(self, *args: Any, **kwargs: Any) -> None:
        return None


def take_out_consent(app: FastAPI) -> Callable[[], None]:
    """Swap `app`'s enforcement point for PermitAll and drop the withheld notice; return
    the function that puts them back."""
    guarded: EnforcementPoint = app.state.enforcement
    notice = fhir_routes.record_withholds  # type: ignore[attr-defined]
    app.state.enforcement = PermitAll(guarded.policy, guarded.audit, guarded._cipher)
    fhir_routes.record_withholds = lambda *_, **__: False  # type: ignore[attr-defined]

    def put_back() -> None:
        app.state.enforcement = guarded
        fhir_routes.record_withholds = notice  # type: ignore[attr-defined]
    return put_back


@contextmanager
def consent_off(app: FastAPI) -> Iterator[None]:
    """`take_out_consent` for one block (bench/api_inprocess.py switches per request)."""
    put_back = take_out_consent(app)
    try:
        yield
    finally:
        put_back()


def create_app() -> FastAPI:
    app = create_guarded_app()
    take_out_consent(app)  # for the server's whole life
    return app
