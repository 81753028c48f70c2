"""Scoring candidate pairs on Splink's Spark backend (scale-out; local mode in tests).

The same saved model scores the same feature rows as on DuckDB: `LinkageModel.settings_for`
rebuilds it for Spark from the dialect-neutral comparisons in `linkage.model` with the saved
m and u values, Splink translates the custom SQL levels with sqlglot, and Splink's bundled
Scala UDF jar supplies `jaro_winkler` (Spark's own `levenshtein` serves the Levenshtein
levels). On the committed sample both backends give the same pairs, probabilities equal to
1e-9 relative and weights to 1e-6, so the same clients (tests/linkage/test_spark.py).

How it is meant to be called, from `index.run_full_linkage`, where the active records are
in the in-memory DuckDB table `scored`::

    features = con.sql("select * from scored").to_arrow_table()
    pairs = score_pairs_spark(features, model, min_probability=review_threshold,
                              master=spark_master or DEFAULT_MASTER)

The result has exactly the shape the DuckDB path builds from Splink's predictions:
(unique_id_l, unique_id_r, match_probability, match_weight) for every candidate pair at or
above `min_probability`, with unique_id_l < unique_id_r as Splink orders them (sorted here,
so the list is the same on every run). Feed it to `index.cluster_records` unchanged.

Sessions. Without `spark=`, the call starts its own session (`spark_session`) on `master`
— "local[2]" by default, or a cluster URL such as "spark://host:7077" — and stops it
before returning. A caller that scores several times (the tests) opens one session with
`spark_session` and passes it as `spark=`; it is then left running, and only the tables
this call created are dropped. Only one SparkContext can run in a process, so starting a
session while another one is active is refused.

Personal data. The feature rows are plaintext. A session from `spark_session` puts
everything Spark writes on the driver — the Arrow batches handed to the JVM, shuffle and
spill files, the checkpoint and warehouse directories — under one private temporary
directory (mode 0700) that is deleted when the session stops. Splink's intermediate tables
are persisted in Spark's block manager (memory, spilling to those local directories), never
written as Parquet to a shared checkpoint location. On a cluster the executors spill to
their own configured local directories, which the cluster manager cleans up.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa  # type: ignore[import-untyped]  # no stubs; a dependency of Splink

from unified_record.linkage.model import LinkageModel

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "DEFAULT_MASTER",
    "SparkUnavailableError",
    "score_pairs_spark",
    "spark_session",
]

DEFAULT_MASTER = "local[2]"
APP_NAME = "unified-record-linkage"
Pair = tuple[str, str, float, float]

_LOCAL_MASTER = re.compile(r"^local(?:\[(\*|\d+)(?:,\s*\d+)?\])?$")
# The driver's log4j2 configuration for sessions we start: errors only, on stderr (Spark's
# default prints every WARN and INFO from the JVM into the command's output). Spark 4.0 and
# 4.1 cannot compile the generated code of the model's longest expressions (over 64 KB),
# log it as an error and evaluate them interpreted (spark.sql.codegen.fallback): same
# results, so that message is not shown.
_LOG4J2 = """\
rootLogger.level = error
logger.codegen.name = org.apache.spark.sql.catalyst.expressions.codegen.CodeGenerator
logger.codegen.level = off
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
"""
# Settings of a local-mode session: reachable on loopback only, and no web UI (the UI shows
# query plans, which name the model's literal values; nobody needs it for a local run).
_LOCAL_SETTINGS = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
}


class SparkUnavailableError(RuntimeError):
    """Spark cannot be used: pyspark missing, another session active, or no Splink UDFs."""


def _local_cores(master: str) -> int | None:
    """Cores of a local master ("local" -> 1, "local[4]" -> 4, "local[*]" -> all), else None."""
    match = _LOCAL_MASTER.match(master.strip())
    if match is None:
        return None
    cores = match.group(1)
    if cores is None:
        return 1
    if cores == "*":
        return os.cpu_count() or 1
    return max(int(cores), 1)


def _require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise SparkUnavailableError(
            "the Spark backend needs pyspark: pip install 'unified-record[spark]'") from None


_private: Path | None = None


def _private_root() -> Path:
    """This process's private temporary directory for Spark (mode 0700), removed at exit.

    One per process, not one per session: the JVM fixes its local directories the first
    time a session asks for them, so a later session in the same process writes under
    the first session's `spark.local.dir` whatever it is told.
    """
    global _private
    if _private is None:
        _private = Path(tempfile.mkdtemp(prefix="ur-spark-"))
        atexit.register(shutil.rmtree, _private, ignore_errors=True)
    _private.mkdir(mode=0o700, exist_ok=True)
    return _private


def _empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


@contextmanager
def spark_session(master: str = DEFAULT_MASTER, *, config: Mapping[str, str] | None = None,
                  app_name: str = APP_NAME) -> Iterator[SparkSession]:
    """A Spark session set up for Splink, stopped (and its temporary files deleted) on exit.

    `master` is "local[N]" (or "local[*]") for local mode, otherwise a cluster URL;
    `config` adds or overrides Spark settings (executor memory, say). Splink's similarity
    UDF jar is on the session's classpath (Spark ships it to executors); a local session
    gets as many shuffle partitions as cores (Spark's 200 are for clusters), binds to
    loopback only and has no web UI. Logging is quiet (errors only).
    """
    _require_pyspark()
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    from splink.backends.spark import similarity_jar_location

    if SparkContext._active_spark_context is not None:
        raise SparkUnavailableError(
            "a Spark session is already running in this process: pass it as spark=")
    root = _private_root()
    try:
        log_config = root / "log4j2.properties"
        log_config.write_text(_LOG4J2, encoding="utf-8")
        settings = {
            "spark.jars": similarity_jar_location(),
            "spark.local.dir": str(root / "local"),
            "spark.sql.warehouse.dir": str(root / "warehouse"),
            "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={log_config.as_uri()}",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.session.timeZone": "UTC",
        }
        cores = _local_cores(master)
        if cores is not None:
            settings.update(_LOCAL_SETTINGS)
            settings["spark.sql.shuffle.partitions"] = str(cores)
            settings["spark.default.parallelism"] = str(cores)
        extra = dict(config or {})
        java_options = extra.pop("spark.driver.extraJavaOptions", "")
        settings.update(extra)
        settings["spark.driver.extraJavaOptions"] = (
            f"{settings['spark.driver.extraJavaOptions']} {java_options}".strip())
        builder = SparkSession.builder.master(master).appName(app_name)
        for key, value in settings.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        try:
            session.sparkContext.setLogLevel("ERROR")
            session.sparkContext.setCheckpointDir(str(root / "checkpoints"))
            yield session
        finally:
            session.stop()
    finally:
        _empty(root)


def score_pairs_spark(
    features: pa.Table,
    model: LinkageModel,
    *,
    min_probability: float,
    master: str = DEFAULT_MASTER,
    config: Mapping[str, str] | None = None,
    spark: SparkSession | None = None,
) -> list[Pair]:
    """Score every candidate pair of `features` with `model` on Spark.

    `features`: feature rows (`linkage.features.FEATURE_COLUMNS`) of the records to score,
    as an Arrow table. Returns (unique_id_l, unique_id_r, match_probability, match_weight)
    for each pair at or above `min_probability`, sorted by the two ids. With `spark=None`
    a session is started on `master` (with the extra Spark settings `config`, see
    `spark_session`) and stopped afterwards; a given session is used and left running.
    """
    if not 0.0 <= min_probability <= 1.0:
        raise ValueError("min_probability must be between 0 and 1")
    if features.num_rows < 2:
        return []
    if spark is None:
        with spark_session(master, config=config) as session:
            return _score(session, features, model, min_probability)
    _require_pyspark()
    return _score(spark, features, model, min_probability)


def _score(spark: SparkSession, features: pa.Table, model: LinkageModel,
           min_probability: float) -> list[Pair]:
    from splink import Linker

    local = _local_cores(spark.sparkContext.master or "") is not None
    db_api = _tracking_api()(
        spark_session=spark,
        break_lineage_method="persist",
        num_partitions_on_repartition=spark.sparkContext.defaultParallelism if local else None,
    )
    if not spark.catalog.functionExists("jaro_winkler"):
        raise SparkUnavailableError(
            "Splink's Spark UDFs are not registered: start the session with "
            "spark.jars set to splink.backends.spark.similarity_jar_location()")
    views_before = _temp_views(spark)
    input_name = f"__ur_features_{uuid.uuid4().hex}"
    try:
        frame = spark.createDataFrame(features)
        linker = Linker(db_api.register(frame, table_name=input_name),
                        model.settings_for("spark"), log_level=logging.WARNING)
        predictions = linker.inference.predict(
            threshold_match_probability=min_probability, warning_mode="never")
        rows: list[Any] = (
            predictions.as_spark_dataframe()
            .select("unique_id_l", "unique_id_r", "match_probability", "match_weight")
            .collect()
        )
    finally:
        # Leave the session as it was: unpersist every table Splink persisted (they hold
        # feature rows) and drop the views this call made (Splink drops only some).
        db_api.unpersist_all()
        for name in sorted(_temp_views(spark) - views_before):
            if name == input_name or name.startswith("__splink__"):
                spark.catalog.dropTempView(name)
        db_api.delete_tables_created_by_splink_from_db()
    pairs = [(str(left), str(right), float(probability), float(weight))
             for left, right, probability, weight in rows]
    pairs.sort()
    return pairs


def _temp_views(spark: SparkSession) -> set[str]:
    return {table.name for table in spark.catalog.listTables() if table.isTemporary}


@cache
def _tracking_api() -> type[Any]:
    """Splink's SparkAPI, remembering the frames it persists so they can be released.

    With `break_lineage_method="persist"` Splink persists intermediate tables (some under a
    further repartition, so dropping their views does not uncache them) and never releases
    them; in a session that outlives the call they would keep feature rows in memory.
    """
    from splink.backends.spark import SparkAPI

    class TrackingSparkAPI(SparkAPI):
        def __init__(self, **kwargs: Any) -> None:
            self._frames: list[Any] = []
            super().__init__(**kwargs)  # type: ignore[no-untyped-call]

        def _repartition_if_needed(self, spark_df: Any, templated_name: str) -> Any:
            frame = super()._repartition_if_needed(  # type: ignore[no-untyped-call]
                spark_df, templated_name)
            self._frames.append(frame)  # the frame Splink then persists, if it does
            return frame

        def unpersist_all(self) -> None:
            for frame in self._frames:
                if frame.is_cached:
                    frame.unpersist()
            self._frames.clear()

    return TrackingSparkAPI
