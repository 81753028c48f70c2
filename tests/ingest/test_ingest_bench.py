"""bench/ingest.py end to end on a small population, so that the issue 4 figure cannot rot
unnoticed: it generates, ingests with a worker pool, counts every record, prints the rate
and draws its chart with every label inside the picture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest
from pg_support import PG_URL, needs_pg

REPO = Path(__file__).resolve().parents[2]

sys.path.append(str(REPO / "bench"))
import ingest as ingest_bench  # noqa: E402  (bench/ is scripts, not a package)

_SVG = "{http://www.w3.org/2000/svg}"
_CHAR_WIDTH = 8  # generous for 13px sans-serif digits


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=needs_pg)])
def test_the_ingest_bench_stores_every_record_and_prints_the_rate(
        database: str, tmp_path: Path) -> None:
    env = {**os.environ, "UR_BENCH_PG_URL": PG_URL} if PG_URL else dict(os.environ)
    chart = tmp_path / "rate.svg"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "ingest.py"), "--people", "150",
         "--database", database, "--workers", "2", "--data", str(tmp_path / "data"),
         "--plot", str(chart)],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads([line for line in run.stdout.splitlines()
                          if line.startswith("[{")][-1])
    (row,) = summary
    assert row["database"] == database
    assert row["records"] > 150 and row["resources"] > row["records"]
    total = next(line.split() for line in run.stdout.splitlines()
                 if line.split()[:1] == ["total"])
    records, accepted, duplicates, resources = (int(v.replace(",", "")) for v in total[1:])
    assert (records, resources) == (row["records"], row["resources"])
    assert accepted + duplicates == records, "the generated feeds hold nothing to quarantine"
    assert row["records_per_second"] > 0
    assert 0 < row["reference_loop_seconds"] < 60, "the machine's speed beside the rate"
    assert "machine speed: a loop of 3,000,000 additions took" in run.stdout
    assert f"{row['records_per_second']:,} source records/s" in run.stdout
    svg = ElementTree.fromstring(chart.read_text())
    assert database in [t.text for t in svg.iter(f"{_SVG}text")]


def test_the_chart_keeps_every_label_inside_the_picture() -> None:
    """Rates above the target made the longest bar's label run off the right edge."""
    summary = [{"database": "sqlite", "records_per_second": 3307},
               {"database": "postgresql", "records_per_second": 3167},
               {"database": "fast", "records_per_second": 12345}]
    svg = ElementTree.fromstring(ingest_bench.svg_chart(summary, 100_000))
    width = float(svg.attrib["width"])
    texts = list(svg.iter(f"{_SVG}text"))
    labels = [t for t in texts if (t.text or "").endswith("/s") and "target" not in (t.text or "")]
    assert [t.text for t in labels] == ["3,307/s", "3,167/s", "12,345/s"]
    for label in labels:
        assert float(label.attrib["x"]) + _CHAR_WIDTH * len(label.text or "") <= width
    bars = [float(r.attrib["width"]) for r in svg.iter(f"{_SVG}rect")]
    assert bars[2] > bars[0] > bars[1] > 0
    target = next(svg.iter(f"{_SVG}line"))
    assert abs(float(target.attrib["x1"]) - 110 - bars[0] * 3000 / 3307) < 1.5
