"""bench/api_load.py end to end on the committed sample (PostgreSQL, under a minute): the
load bench serves, registers its client, drives both scenarios with consent and audit on
and off, and counts no errors, so the issue 6 and 7 figures cannot rot unnoticed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pg_support import PG_URL, pg_schema

REPO = Path(__file__).resolve().parents[2]

sys.path.append(str(REPO / "bench"))
import api_load  # noqa: E402  (bench/ is scripts, not a package)

needs_pg = pytest.mark.skipif(not PG_URL, reason="the API load bench needs PostgreSQL "
                              "(UR_TEST_DATABASE_URL; .ci/run sets it)")


@pytest.fixture
def population(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The committed sample, ingested and linked in a PostgreSQL schema of its own."""
    with pg_schema() as url:
        env = {**os.environ, "UR_DATABASE_URL": url, "UR_DATA_DIR": str(tmp_path / "var")}
        for command in (["ingest", str(REPO / "synthetic_data" / "sample")], ["link"]):
            subprocess.run([sys.executable, "-m", "unified_record", *command], env=env,
                           check=True, capture_output=True, timeout=300)
        yield env


@needs_pg
def test_the_bench_drives_both_scenarios_with_consent_on_and_off(
        population: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "api_load.py"), "--concurrency", "3",
         "--duration", "2", "--warmup", "0.5", "--think-time", "0.05", "--sample", "20",
         "--consent", "both", "--rounds", "2"], env=population, capture_output=True,
        text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(round 2 of 2)" in done.stderr and "in 2 alternating rounds" in done.stdout
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines()
            if line.startswith("| GET")]
    names = [row[0].strip() for row in rows]
    assert names == ["GET /fhir/Patient?identifier=…", "GET /fhir/Patient/{id}/$everything",
                     "GET /fhir/Patient?identifier=… (consent and audit off)",
                     "GET /fhir/Patient/{id}/$everything (consent and audit off)"]
    for row in rows:
        requests, errors = int(row[1].replace(",", "")), row[7].strip()
        assert requests > 0 and errors == "0", row  # else "N (what they were)"
        assert float(row[9]) > 0, row  # server CPU per request: the app and its backends
    assert "50 concurrent" not in done.stdout and "3 concurrent users" in done.stdout


@needs_pg
def test_the_in_process_bench_pairs_each_request_with_consent_on_and_off(
        population: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "api_inprocess.py"), "--pairs", "20",
         "--sample", "20"], env=population, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1]
            for line in done.stdout.splitlines() if line.startswith(("| search", "| $every"))}
    assert set(rows) == {"search", "$everything"}
    for cells in rows.values():
        on, off = (float(cell.split("/")[0]) for cell in cells[:2])
        assert on > 0 and off > 0 and float(cells[3]) > 0, cells
    assert "20 pairs of requests per kind" in done.stdout


def test_cpu_used_is_counted_per_process_and_never_negative() -> None:
    # a backend that used 500 ticks and then closed must not be subtracted (CI once
    # printed -1.39 ms per request); one that opened meanwhile counts from zero
    before = {10: 100, 11: 500, 12: 40}
    after = {10: 130, 12: 40, 13: 25}
    assert api_load.cpu_between(before, after) == 55 / os.sysconf("SC_CLK_TCK")
    assert api_load.cpu_between(before, {}) == 0


@needs_pg
def test_the_server_cpu_leaves_out_other_clients_of_the_same_database() -> None:
    """Tests running beside the bench use the same database: their backends' CPU must not be
    counted as the server's, and the server's backends (named by libpq's PGAPPNAME) must."""
    server = api_load.Server(dict(os.environ), workers=1, log=None)
    server.process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    burn = sa.text("SELECT count(*) FROM generate_series(1, 3000000)")
    try:
        others = sa.create_engine(PG_URL, connect_args={"application_name": "someone-else"})
        ours = sa.create_engine(PG_URL, connect_args={
            "application_name": server.application_name})
        with others.connect() as other, ours.connect() as own:
            other.execute(sa.text("SELECT 1"))
            own.execute(sa.text("SELECT 1"))
            before = api_load.server_cpu_ticks(server, PG_URL)
            other.execute(burn)
            between_others = api_load.cpu_between(
                before, api_load.server_cpu_ticks(server, PG_URL))
            before = api_load.server_cpu_ticks(server, PG_URL)
            own.execute(burn)
            between_ours = api_load.cpu_between(
                before, api_load.server_cpu_ticks(server, PG_URL))
        others.dispose()
        ours.dispose()
    finally:
        server.process.kill()
        server.process.wait()
    assert between_others < 0.05, between_others
    assert between_ours > 0.1, between_ours
