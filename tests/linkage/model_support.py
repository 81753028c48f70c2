"""Test support for the linkage model: feature rows read straight from feed files, and a
scored, clustered, evaluated run.

The feed-file reader lives in bench/feed_features.py (shared with the linkage benchmarks);
its names are re-exported here so the tests import them from one place.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import duckdb

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
from feed_features import (  # noqa: F401  (re-exported for the tests)
    REPO,
    SAMPLE,
    Row,
    load_dataset,
    patient,
    read_feature_rows,
    record_keys,
    store_feature_rows,
)

from unified_record.linkage import model
from unified_record.linkage.evaluate import Evaluation, evaluate, read_truth


def evaluate_run(con: duckdb.DuckDBPyConnection, rows: list[Row], settings: Any,
                 truth_csv: Path = SAMPLE / "truth.csv", table: str = "features",
                 auto_link: float | None = None, review: float | None = None) -> Evaluation:
    """Score `table` with `settings`, cluster at auto-link and evaluate against the truth."""
    auto = model.DEFAULT_AUTO_LINK_THRESHOLD if auto_link is None else auto_link
    low = model.DEFAULT_REVIEW_THRESHOLD if review is None else review
    linker = model.make_linker(con, table, settings)
    predictions = model.predict(linker, low)
    clustered = model.cluster(linker, predictions, auto)
    pairs = con.execute(f"select unique_id_l, unique_id_r, match_probability "
                        f"from {predictions.physical_name}").fetchall()
    clusters = dict(con.execute(
        f"select unique_id, cluster_id from {clustered.physical_name}").fetchall())
    return evaluate(pairs, clusters, record_keys(rows), read_truth(truth_csv),
                    auto_link_threshold=auto, review_threshold=low)
