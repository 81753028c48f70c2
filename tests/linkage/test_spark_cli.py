"""`unified-record link --backend spark` in its own process gives the same clients as the
DuckDB run, on the committed sample (same saved model, same store contents)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_support import run
from linkage_support import SAMPLE

from unified_record.store.models import ClientMemberRow, ResourceRow

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark")]


def _partition(url: str) -> set[frozenset[tuple[str, str]]]:
    """The clients as sets of (feed, source record id): comparable across two stores."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(ClientMemberRow.client_id, ResourceRow.source_feed,
                                      ResourceRow.source_record_id)
                            .join(ResourceRow, sa.and_(
                                ResourceRow.resource_type == "Patient",
                                ResourceRow.id == ClientMemberRow.unique_id)))
        groups: dict[str, set[tuple[str, str]]] = {}
        for client_id, feed, record in rows:
            groups.setdefault(client_id, set()).add((feed, str(record)))
    engine.dispose()
    return {frozenset(g) for g in groups.values()}


def test_link_backend_spark_matches_duckdb(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite only: the comparison is of scoring backends, not databases.
    duck_url = f"sqlite:///{tmp_path / 'duckdb.db'}"
    monkeypatch.setenv("UR_DATABASE_URL", duck_url)
    monkeypatch.setenv("UR_DATA_DIR", str(tmp_path / "var"))
    assert run("ingest", str(SAMPLE), "--workers", "1", "--quiet")[0] == 0
    code, out = run("link", "--quiet")
    assert code == 0, out

    spark_url = f"sqlite:///{tmp_path / 'spark.db'}"
    environment = {**os.environ, "UR_DATABASE_URL": spark_url}
    command = [sys.executable, "-m", "unified_record"]
    subprocess.run([*command, "ingest", str(SAMPLE), "--workers", "1", "--quiet"],
                   env=environment, check=True, capture_output=True)
    done = subprocess.run([*command, "link", "--backend", "spark"], env=environment,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained" not in done.stdout  # the DuckDB run's saved model, not a new one

    duck, spark = _partition(duck_url), _partition(spark_url)
    assert sum(len(g) > 1 for g in duck) > 100
    assert spark == duck

    code, out = run("link", "--backend", "flink")
    assert code == 2 and "unknown backend 'flink'" in out
