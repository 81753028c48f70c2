"""Linkage quality: the last full run's figures, the review backlog, a histogram of the
match weights of its scored pairs, and precision and recall when the run was scored against
a truth file (`unified-record link --truth`). Counts only, no personal data."""

from __future__ import annotations

import json
import math
from collections import Counter

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from unified_record.api.ui.charts import bar_chart
from unified_record.api.ui.session import WebUser, require_role, uow
from unified_record.api.ui.templating import render
from unified_record.linkage.accuracy import StoredEvaluation, stored_evaluation
from unified_record.linkage.review import review_queue
from unified_record.store.models import LinkagePairRow, LinkageRunRow

__all__ = ["router"]

router = APIRouter()
Allowed = require_role("data_steward", "governance_officer")
LABELS = {"records": "Source records read", "scored": "Active records scored",
          "inactive": "Merged-away records", "too_little": "Too little to match on",
          "links": "Links applied", "review_pairs": "Pairs for review",
          "decisions": "Steward decisions respected", "clients": "Active clients"}


@router.get("/quality", response_class=HTMLResponse)
def quality(request: Request, user: WebUser = Allowed) -> Response:
    with uow(request) as unit:
        run = unit.session.scalars(
            sa.select(LinkageRunRow).where(LinkageRunRow.kind == "full",
                                           LinkageRunRow.status == "completed")
            .order_by(LinkageRunRow.id.desc()).limit(1)).first()
        backlog = len(review_queue(unit.session, limit=100_000))
        weights = list(unit.session.scalars(sa.select(LinkagePairRow.match_weight)))
        about = ({"id": run.id, "finished_at": run.finished_at,
                  "model_version": run.model_version} if run is not None else None)
        counts = json.loads(run.counts or "{}") if run is not None else {}
        evaluation = stored_evaluation(unit.session, run.id) if run is not None else None
    bins: Counter[int] = Counter(math.floor(w / 2) * 2 for w in weights if math.isfinite(w))
    histogram = [(f"{b}", bins[b]) for b in range(min(bins, default=0),
                                                   max(bins, default=0) + 2, 2)]
    return render(request, "quality.html", {
        "title": "Linkage quality", "run": about,
        "figures": [(LABELS[k], counts[k]) for k in LABELS if k in counts],
        "backlog": backlog, "pairs": len(weights), "histogram": histogram,
        "chart": bar_chart(histogram, "Scored pairs by match weight (bins of 2)"),
        "evaluation": _accuracy(evaluation) if evaluation is not None else None})


def _accuracy(stored: StoredEvaluation) -> dict[str, object]:
    """The stored figures as the page shows them: precision, recall and F1 of each pair band
    and of the clients, and how many persons were resolved exactly."""
    f = stored.figures
    bands = [(f"Pairs linked automatically (probability {f['auto_link']['threshold']:g} or "
              "more)", f["auto_link"]),
             (f"Pairs linked or sent for review (probability {f['with_review']['threshold']:g}"
              " or more)", f["with_review"]),
             ("Clients (every pair of records within a client)", f["clusters"])]
    c = f["clusters"]
    return {"truth_file": stored.truth_file, "evaluated_at": stored.evaluated_at,
            "records": f["records"], "true_pairs": f["true_pairs"],
            "bands": [{"label": label, "precision": band["precision"],
                       "recall": band["recall"], "f1": band["f1"]} for label, band in bands],
            "exact": c["exact"], "persons": c["persons"], "exact_rate": c["exact_rate"],
            "false_merges": c["false_merges"], "missed": c["missed"]}
