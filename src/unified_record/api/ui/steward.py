"""The data steward's pages: the review queue of possible matches, each pair side by side
with the model's explanation (a waterfall of match weights), and the decision form.

The two records are read through the access guard (the steward's purpose RECORDMGT gives
demographics only); a decision is taken by `linkage.review.decide` and audited in the same
transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from unified_record.api.ui.charts import BLUE, GREEN, RED, Bar, waterfall
from unified_record.api.ui.records import _demographics
from unified_record.api.ui.session import (
    FormDep,
    WebUser,
    enforcement,
    guard,
    main_state,
    require_role,
    uow,
)
from unified_record.api.ui.templating import render
from unified_record.audit.events import Entity, audit_event
from unified_record.linkage.explain import ExplainError, Explanation, explain_pair
from unified_record.linkage.index import MODEL_FILE_NAME
from unified_record.linkage.model import ModelError, load_model
from unified_record.linkage.review import DecisionError, decide, review_queue
from unified_record.records.search import load_found
from unified_record.security.scopes import Interaction

__all__ = ["router"]

router = APIRouter(prefix="/review")
Steward = require_role("data_steward")
DECISIONS = {"link": "They are the same person: link them",
             "not_a_match": "They are different people: not a match",
             "unlink_left": "Take the first record out of its client (unlink)",
             "unlink_right": "Take the second record out of its client (unlink)"}


@router.get("", response_class=HTMLResponse)
def queue(request: Request, user: WebUser = Steward, page: int = 1) -> Response:
    page = max(page, 1)
    with uow(request) as unit:
        items = review_queue(unit.session, limit=26, offset=(page - 1) * 25)
    return render(request, "review_queue.html", {
        "title": "Possible matches to review", "items": items[:25], "page": page,
        "more": len(items) > 25})


def _explanation(request: Request, left: str, right: str) -> Explanation | None:
    state = main_state(request)
    path = state.settings.data_dir / MODEL_FILE_NAME
    if not path.is_file():
        return None
    try:
        model = load_model(path)
        with Session(state.engine) as session:
            return explain_pair(session, model, state.keyring, state.blind_index, left, right)
    except (ExplainError, ModelError):
        return None


def _chart(expl: Explanation) -> str:
    bars = [Bar("Prior (starting weight)", 0.0, expl.prior_weight, BLUE)]
    total = expl.prior_weight
    for step in expl.steps:
        if step.term_frequency_adjustment and step.match_weight == 0:
            continue
        start, total = total, total + step.match_weight
        bars.append(Bar(f"{step.comparison}: {step.label}", start, total,
                        GREEN if step.match_weight >= 0 else RED))
    bars.append(Bar("Final match weight", 0.0, expl.match_weight, BLUE))
    return waterfall(bars, f"Match weight of records {expl.id_a} and {expl.id_b}, step by "
                           "step (the table below has the same numbers)")


@router.get("/{left}/{right}", response_class=HTMLResponse)
async def pair(left: str, right: str, request: Request, user: WebUser = Steward) -> Response:
    return await run_in_threadpool(_pair_page, request, user, left, right, None, {}, 200)


def _pair_page(request: Request, user: WebUser, left: str, right: str,
               error: str | None, form: dict[str, str], status: int) -> Response:
    g = guard(request, user)
    organisations = enforcement(request).policy.organisations
    with uow(request) as unit:
        found = load_found(unit.session, unit.resources, "Patient", [left, right], ())
        shown, _withheld = g.filter_found(unit, found, Interaction.READ)
        unit.commit()
    by_id = {f.resource["id"]: f for f in shown}
    if left not in by_id or right not in by_id:
        return render(request, "error.html", {
            "title": "Records not available",
            "message": "One of these records does not exist or you may not see it."},
            status=404)
    expl = _explanation(request, left, right)
    context: dict[str, Any] = {
        "title": "Review a possible match", "left": left, "right": right,
        "columns": [_demographics([by_id[left]], organisations),
                    _demographics([by_id[right]], organisations)],
        "explanation": expl, "chart": _chart(expl) if expl else None,
        "decisions": DECISIONS, "error": error, "form": form}
    return render(request, "review_pair.html", context, status=status)


@router.post("/{left}/{right}")
def decide_pair(left: str, right: str, request: Request, form: FormDep,
                user: WebUser = Steward) -> Response:
    choice, reason = form.get("decision", ""), form.get("reason", "").strip()
    errors = []
    if choice not in DECISIONS:
        errors.append("Select a decision")
    if not reason:
        errors.append("Enter the reason for your decision")
    if errors:
        return _pair_page(request, user, left, right, "; ".join(errors), form, 400)
    state = main_state(request)
    kind, record, other = {"link": ("link", left, right),
                           "not_a_match": ("not_a_match", left, right),
                           "unlink_left": ("unlink", left, None),
                           "unlink_right": ("unlink", right, None)}[choice]
    g = guard(request, user)
    point = enforcement(request)
    point.check_purpose(g.ctx, "link-decision")  # refused and audited for a wrong purpose
    with uow(request) as unit:
        try:
            outcome = decide(unit.session, state.keyring, state.blind_index, kind,  # type: ignore[arg-type]
                             record, other, decided_by=user.sub, reason=reason,
                             auto_link_threshold=state.settings.link_auto_threshold)
        except DecisionError as exc:
            return _pair_page(request, user, left, right, str(exc), form, 400)
        # The decision and its audit entry commit together (ids only; the reason is kept,
        # encrypted, with the decision).
        point.audit.append(audit_event(
            subtype="link-decision", agent=g.ctx.agent, recorded=datetime.now(UTC),
            purpose=g.ctx.purpose, client_id=outcome.clients.get(record),
            entities=[Entity(f"Patient/{uid}", outcome=kind)
                      for uid in (record, other) if uid is not None],
            source_address=g.ctx.source_address,
            outcome_desc=f"steward decision {outcome.decision_id} ({kind})"),
            session=unit.session)
        unit.commit()
    request.session["flash"] = (f"Decision recorded ({kind.replace('_', ' ')}); "
                                f"{outcome.changes.created} client(s) created, "
                                f"{outcome.changes.retired} retired.")
    return RedirectResponse("/ui/review", status_code=303)
