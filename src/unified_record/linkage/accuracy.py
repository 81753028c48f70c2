"""The client index scored against a ground-truth file, and the figures kept with the linkage
run they describe, so the linkage quality page can show precision and recall.

Only aggregate figures and the truth file's name are stored: the truth file names source
records and the persons they belong to, and that stays in the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from unified_record.linkage.evaluate import Evaluation, Truth, evaluate
from unified_record.store.models import (
    ClientMemberRow,
    LinkageEvaluationRow,
    LinkagePairRow,
    LinkageRunRow,
    ResourceRow,
)

__all__ = ["StoredEvaluation", "evaluate_index", "last_full_run", "record_evaluation",
           "stored_evaluation"]


@dataclass(frozen=True)
class StoredEvaluation:
    run_id: int
    truth_file: str
    evaluated_at: datetime
    figures: dict[str, Any]  # Evaluation.to_json()


def evaluate_index(session: Session, truth: Truth, *, auto_link_threshold: float,
                   review_threshold: float) -> Evaluation | None:
    """The current index and the last run's scored pairs against `truth`; None when the
    index is empty (nothing was linked yet)."""
    clusters = {uid: cid for uid, cid in session.execute(
        sa.select(ClientMemberRow.unique_id, ClientMemberRow.client_id))}
    if not clusters:
        return None
    keys = {rid: (feed, str(record)) for rid, feed, record in session.execute(
        sa.select(ResourceRow.id, ResourceRow.source_feed, ResourceRow.source_record_id)
        .where(ResourceRow.resource_type == "Patient", ResourceRow.deleted.is_(False),
               ResourceRow.source_record_id.is_not(None)))}
    pairs = [(a, b, float(p)) for a, b, p in session.execute(sa.select(
        LinkagePairRow.unique_id_l, LinkagePairRow.unique_id_r,
        LinkagePairRow.match_probability))]
    return evaluate(pairs, clusters, keys, truth, auto_link_threshold=auto_link_threshold,
                    review_threshold=review_threshold)


def last_full_run(session: Session) -> int | None:
    """The id of the last completed full linkage run (what the quality page shows)."""
    return session.scalar(
        sa.select(LinkageRunRow.id).where(LinkageRunRow.kind == "full",
                                          LinkageRunRow.status == "completed")
        .order_by(LinkageRunRow.id.desc()).limit(1))


def record_evaluation(session: Session, run_id: int, truth_file: str, evaluation: Evaluation,
                      *, now: datetime | None = None) -> StoredEvaluation:
    """Keep `evaluation` with run `run_id`; `truth_file` is the file's name, not its path.
    The caller commits."""
    row = LinkageEvaluationRow(run_id=run_id, truth_file=truth_file[:255],
                               evaluated_at=now or datetime.now(UTC),
                               figures=json.dumps(evaluation.to_json(), sort_keys=True))
    session.add(row)
    session.flush()
    return _stored(row)


def stored_evaluation(session: Session, run_id: int) -> StoredEvaluation | None:
    """The latest evaluation kept with run `run_id`, if a truth file was given for it."""
    row = session.scalars(sa.select(LinkageEvaluationRow)
                          .where(LinkageEvaluationRow.run_id == run_id)
                          .order_by(LinkageEvaluationRow.id.desc()).limit(1)).first()
    return _stored(row) if row is not None else None


def _stored(row: LinkageEvaluationRow) -> StoredEvaluation:
    return StoredEvaluation(run_id=row.run_id, truth_file=row.truth_file,
                            evaluated_at=row.evaluated_at, figures=json.loads(row.figures))
