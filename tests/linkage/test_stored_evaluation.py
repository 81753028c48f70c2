"""`unified-record link --truth` scores the run against a ground-truth file and keeps the
figures with the run (aggregate numbers and the file's name only) for the linkage quality
page; `link evaluate --truth` keeps its figures with the last full run. Both databases."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cli_support import run
from linkage_support import SAMPLE
from sqlalchemy.orm import Session

from unified_record.config import Settings
from unified_record.linkage import evaluate_index, read_truth, stored_evaluation
from unified_record.linkage.accuracy import last_full_run
from unified_record.store.models import LinkageEvaluationRow, LinkageRunRow


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    return [value]


def test_link_with_truth_keeps_what_evaluate_computes(env: Path) -> None:
    truth = SAMPLE / "truth.csv"
    code, out = run("link", "--truth", str(env / "nope.csv"))
    assert code == 2 and "nope.csv: no such file" in out  # refused before any run
    code, out = run("ingest", str(SAMPLE), "--workers", "1", "--quiet")
    assert code == 0, out

    code, out = run("link", "--truth", str(truth))
    assert code == 0, out
    assert "active clients" in out and "linkage against truth.csv" in out
    assert "persons resolved exactly" in out

    engine = sa.create_engine(os.environ["UR_DATABASE_URL"])
    try:
        with Session(engine) as session:
            run_id = last_full_run(session)
            assert run_id is not None
            stored = stored_evaluation(session, run_id)
            assert stored is not None and stored.truth_file == "truth.csv"
            settings = Settings()
            expected = evaluate_index(session, read_truth(truth),
                                      auto_link_threshold=settings.link_auto_threshold,
                                      review_threshold=settings.link_review_threshold)
            assert expected is not None
            assert stored.figures == expected.to_json()
            assert stored.figures["with_review"]["recall"] >= 0.9
            # Aggregate figures only: every stored value is a number, never an identifier.
            assert all(isinstance(v, int | float) for v in _leaves(stored.figures))

        # `link evaluate` prints the same figures and keeps them with the last full run.
        code, out = run("link", "evaluate", "--truth", str(truth), "--json")
        assert code == 0, out
        assert json.loads(out) == stored.figures
        with Session(engine) as session:
            kept = session.scalars(sa.select(LinkageEvaluationRow)
                                   .order_by(LinkageEvaluationRow.id)).all()
            assert [row.run_id for row in kept] == [run_id, run_id]

        # A run without a truth file has no figures of its own.
        code, out = run("link", "--quiet")
        assert code == 0, out
        with Session(engine) as session:
            latest = last_full_run(session)
            assert latest is not None and latest != run_id
            assert stored_evaluation(session, latest) is None
            assert session.scalar(sa.select(sa.func.count()).select_from(LinkageRunRow)) >= 2
    finally:
        engine.dispose()
