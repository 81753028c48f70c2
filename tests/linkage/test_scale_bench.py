"""bench/linkage_scale.py end to end on the committed sample (a few seconds): every stage runs
and gives sane counts, so the 1,000,000-record benchmark cannot rot unnoticed."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest
from linkage_support import REPO, SAMPLE

STAGES = ("features", "train", "predict", "cluster", "index update", "rerun", "evaluate")


def _load_bench() -> ModuleType:
    path = REPO / "bench" / "linkage_scale.py"
    spec = importlib.util.spec_from_file_location("linkage_scale", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and typing look the module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    bench = _load_bench()
    result: dict[str, Any] = bench.run(SAMPLE, store_dir=tmp_path_factory.mktemp("store"),
                                       echo=False)
    return result


def test_every_stage_is_timed_and_measured(report: dict[str, Any]) -> None:
    assert tuple(report["seconds"]) == STAGES
    assert all(seconds >= 0 for seconds in report["seconds"].values())
    assert set(report["peak_gib"]) == set(report["cpu_seconds"]) == set(STAGES)
    assert 0 < report["linkage_peak_gib"] <= report["peak_gib_all"] < 4
    linkage = sum(report["seconds"][s] for s in STAGES[:5])
    assert report["linkage_seconds"] == pytest.approx(linkage, abs=0.05)
    assert report["wall_seconds"] >= report["linkage_seconds"]
    assert set(report["substeps_seconds"]["index update"]) == {"assign_clients", "pairs",
                                                               "commit"}


def test_every_record_is_in_exactly_one_client(report: dict[str, Any]) -> None:
    records = report["source_records"]
    assert records == report["scored"] + report["inactive"]
    assert records == sum(1 for _ in (SAMPLE / "truth.csv").open(encoding="utf-8")) - 1
    index = report["index"]
    assert index["members"] == records  # one member row per record (its primary key)
    assert index["clients"] == index["member_clients"] == report["clusters"]
    assert 0 < index["clients"] < records
    assert index["changes"]["created"] == index["clients"]
    assert index["changes"]["joined"] == records
    assert report["pairs_scored"] == report["links"] + report["review_pairs"]


def test_a_rerun_with_the_same_clusters_changes_nothing(report: dict[str, Any]) -> None:
    assert report["rerun"]["unchanged"]
    assert report["rerun"]["clients"] == report["index"]["clients"]


def test_the_run_is_accurate(report: dict[str, Any]) -> None:
    accuracy = report["accuracy"]
    assert accuracy["truth_records_not_linked"] == 0
    assert accuracy["records_not_in_truth"] == 0
    assert accuracy["auto_link"]["precision"] >= 0.99
    assert accuracy["with_review"]["recall"] >= 0.95
    assert accuracy["clusters"]["precision"] >= 0.99
    assert accuracy["clusters"]["recall"] >= 0.95


def test_the_summary_prints(report: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    _load_bench().print_report(report)
    out = capsys.readouterr().out
    assert "linkage total (1-5)" in out
    assert f"source records: {report['source_records']:,} (>= 1,000,000: NO)" in out
    assert "rerun with the same clusters: no change" in out
