"""The Spark backend: the saved model scores the committed sample on Spark (local mode) as it
does on DuckDB — the same pairs, probabilities and weights, and so the same clients.

One JVM serves the module (one xdist group): first a run through a session of its own, as
`link --backend spark` makes, then one shared session for the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
import pytest
from model_support import load_dataset
from pyspark import SparkContext
from pyspark.sql import SparkSession

from unified_record.linkage import spark as spark_backend
from unified_record.linkage.index import cluster_records, too_little_to_match
from unified_record.linkage.model import (
    DEFAULT_AUTO_LINK_THRESHOLD,
    DEFAULT_REVIEW_THRESHOLD,
    LinkageModel,
    linker_for,
    load_model,
    predict,
    save_model,
    train,
)
from unified_record.linkage.spark import (
    SparkUnavailableError,
    score_pairs_spark,
    spark_session,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark")]

Pair = tuple[str, str, float, float]
# Short runs on two cores: the JIT's first tier only starts the JVM and its first queries
# faster (about a third off this module's time); production sessions keep the default.
FAST_START = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1"}


@dataclass
class Sample:
    features: pa.Table  # the active records, as run_full_linkage scores them
    model: LinkageModel  # trained on DuckDB, saved and loaded again
    duckdb_pairs: list[Pair]  # at the review threshold, as a full run keeps them
    duckdb_candidates: list[Pair]  # every candidate pair (probability >= 0)
    ids: list[str]
    too_little: set[str]
    replaced_by: dict[str, str]


@dataclass
class OwnSessionRun:
    pairs: list[Pair]
    context_left_running: bool
    files_left: list[Path]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    """The committed sample, its model (saved as JSON and loaded) and DuckDB's pairs."""
    con = duckdb.connect()
    try:
        rows = load_dataset(con)
        con.execute("create table scored as select * from features where active is not false")
        path = save_model(train(con, "scored"),
                          tmp_path_factory.mktemp("model") / "linkage-model.json")
        model = load_model(path)

        def duckdb_pairs(min_probability: float) -> list[Pair]:
            predictions = predict(linker_for(con, "scored", model), min_probability)
            return sorted((str(a), str(b), float(p), float(w)) for a, b, p, w in con.execute(
                "select unique_id_l, unique_id_r, match_probability, match_weight "
                f"from {predictions.physical_name}").fetchall())

        pairs, candidates = duckdb_pairs(DEFAULT_REVIEW_THRESHOLD), duckdb_pairs(0.0)
        features = con.sql("select * from scored").to_arrow_table()
    finally:
        con.close()
    active = [r for r in rows if r["active"] is not False]
    return Sample(
        features=features, model=model, duckdb_pairs=pairs, duckdb_candidates=candidates,
        ids=[str(r["unique_id"]) for r in rows],
        too_little={str(r["unique_id"]) for r in active if too_little_to_match(r)},
        replaced_by={str(r["unique_id"]): str(r["replaced_by"]) for r in rows
                     if r["active"] is False and r["replaced_by"]})


@pytest.fixture(scope="module")
def own_session_run(sample: Sample) -> OwnSessionRun:
    """Scoring with a session of its own (the production path: `master=`), before the shared
    session starts (a process runs one SparkContext at a time)."""
    pairs = score_pairs_spark(sample.features, sample.model,
                              min_probability=DEFAULT_REVIEW_THRESHOLD, master="local[2]",
                              config=FAST_START)
    private = spark_backend._private
    assert private is not None
    return OwnSessionRun(pairs=pairs,
                         context_left_running=SparkContext._active_spark_context is not None,
                         files_left=sorted(private.rglob("*")))


@pytest.fixture(scope="module")
def spark(own_session_run: OwnSessionRun) -> Iterator[SparkSession]:
    with spark_session("local[2]", config=FAST_START) as session:
        yield session


@pytest.fixture(scope="module")
def spark_candidates(spark: SparkSession, sample: Sample) -> list[Pair]:
    """Every candidate pair scored on the shared session (probability >= 0)."""
    return score_pairs_spark(sample.features, sample.model, min_probability=0.0, spark=spark)


def assert_same_pairs(spark_pairs: list[Pair], duckdb_pairs: list[Pair]) -> None:
    assert [p[:2] for p in spark_pairs] == [p[:2] for p in duckdb_pairs]
    for (left, right, p_spark, w_spark), (_, _, p_duck, w_duck) in zip(
            spark_pairs, duckdb_pairs, strict=True):
        assert left < right
        assert math.isclose(p_spark, p_duck, rel_tol=1e-9, abs_tol=0.0), (left, right)
        assert abs(w_spark - w_duck) <= 1e-6, (left, right)


def test_spark_scores_every_candidate_pair_as_duckdb_does(
        sample: Sample, spark_candidates: list[Pair]) -> None:
    duck = sample.duckdb_candidates
    # The comparison means something: every candidate pair of the sample, the clear
    # matches and the many that disagree somewhere (nicknames, Jaro-Winkler from Splink's
    # jar, transposed dates and the other custom SQL levels, term frequencies).
    assert len(duck) > 300
    assert sum(p >= DEFAULT_AUTO_LINK_THRESHOLD for _, _, p, _ in duck) > 200
    assert sum(p < DEFAULT_REVIEW_THRESHOLD for _, _, p, _ in duck) > 30
    assert_same_pairs(spark_candidates, duck)


def test_spark_gives_the_same_clients(sample: Sample, own_session_run: OwnSessionRun) -> None:
    spark_pairs = own_session_run.pairs
    def clients(pairs: list[Pair]) -> tuple[dict[str, str], int, int]:
        clusters, _, links, review = cluster_records(
            sample.ids, pairs, auto_link_threshold=DEFAULT_AUTO_LINK_THRESHOLD,
            too_little=sample.too_little, replaced_by=sample.replaced_by)
        return clusters, links, review

    on_duckdb, on_spark = clients(sample.duckdb_pairs), clients(spark_pairs)
    assert on_spark == on_duckdb
    clusters = on_duckdb[0]
    multi = [label for label in set(clusters.values())
             if sum(v == label for v in clusters.values()) > 1]
    assert len(multi) > 100


def test_a_session_of_its_own_scores_alike_and_leaves_nothing(
        sample: Sample, own_session_run: OwnSessionRun) -> None:
    assert_same_pairs(own_session_run.pairs, sample.duckdb_pairs)
    assert not own_session_run.context_left_running
    assert own_session_run.files_left == []  # shuffle, spill and Arrow files all deleted


def test_a_shared_session_is_left_as_it_was(spark: SparkSession,
                                            spark_candidates: list[Pair]) -> None:
    assert spark_candidates
    leftover_views = [t.name for t in spark.catalog.listTables()
                      if t.name.startswith(("__splink__", "__ur_features_"))]
    assert leftover_views == []
    assert spark.sparkContext._jsc.getPersistentRDDs().isEmpty()  # nothing cached
    assert spark.range(3).count() == 3  # still running, for the caller


def test_a_second_session_is_refused(spark: SparkSession) -> None:
    with pytest.raises(SparkUnavailableError, match="already running"), spark_session():
        pass


def test_fewer_than_two_records_need_no_spark(sample: Sample) -> None:
    one = sample.features.slice(0, 1)
    assert score_pairs_spark(one, sample.model, min_probability=0.5) == []
    with pytest.raises(ValueError, match="min_probability"):
        score_pairs_spark(sample.features, sample.model, min_probability=1.5)


@pytest.mark.parametrize(("master", "cores"), [
    ("local", 1), ("local[4]", 4), ("local[2, 3]", 2), ("spark://host:7077", None),
    ("yarn", None), ("k8s://https://host:443", None),
])
def test_local_masters_are_recognised(master: str, cores: int | None) -> None:
    assert spark_backend._local_cores(master) == cores
