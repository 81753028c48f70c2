"""Benchmark: full dedupe-and-link of 1,000,000 source records, time and memory per stage.

    .venv/bin/python bench/linkage_scale.py                      # 720,000 people, seed 11
    .venv/bin/python bench/linkage_scale.py --people 720000 --seed 11 --json
    .venv/bin/python bench/linkage_scale.py --dataset synthetic_data/sample   # any dataset

Target (issue 5): training, prediction, clustering and the index update for 1,000,000 source
records in under 10 minutes and under 12 GiB on this 2-core machine, with DuckDB.

The population is generated once into --data (reused afterwards); 720,000 people give
about 1,019,000 source person records (the generator makes about 1.42 per person), and the
count is printed. The stages, each timed, with the peak memory of the whole process tree
(every process's RSS from /proc, sampled four times a second):

1. features: every source person record read from the feed files (bench/feed_features.py:
   each becomes a FHIR Patient, reduced by the production `linkage.features.patient_features`)
   into an in-memory DuckDB table. The production path reads the ingested store instead
   (`iter_patient_features`); ingesting this population first would take far too long
   for this benchmark (about 1.6 million inbound messages: some 23 minutes at the 1,150
   per second bench/ingest.py measured) and measures ingest, which bench/ingest.py does.
   On the committed sample both give identical features (tests/linkage/test_model.py).
2. train: `linkage.model.train` on the active records (the truth is not consulted).
3. predict: `linker_for` + `predict` at the review threshold; pairs fetched into Python.
4. cluster: `linkage.index.cluster_records` at the auto-link threshold, with the records
   that have too little to match on and the A40-retired records following their survivor,
   as `run_full_linkage` does.
5. index update: `linkage.index.assign_clients` into a fresh migrated SQLite store (a
   temporary directory), in one transaction with the run row and the review-band pairs
   written to `linkage_pair`. `run_full_linkage` does these steps between reading the
   store and committing and offers no way to call them apart, so the few lines are
   reproduced here (`update_index`), not imported.
6. rerun: the index update again with the same clusters, in a second transaction: the
   stable-id path (every cluster inherits its client, nothing written but the pairs).

Then the run is scored against the generator's truth.csv (`linkage.evaluate`): pairwise
precision at auto-link, recall with review, and cluster figures. Stages 1-5 make the
"linkage total" measured against the target; the rerun and the scoring are reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import duckdb
import sqlalchemy as sa
from sqlalchemy.orm import Session

from unified_record.linkage import model as linkage_model
from unified_record.linkage.evaluate import evaluate, read_truth
from unified_record.linkage.features import load_features
from unified_record.linkage.index import (
    IndexChanges,
    assign_clients,
    cluster_records,
    finish_run,
    split_records,
    start_run,
)
from unified_record.store import make_engine, make_session_factory, migrate
from unified_record.store.models import ClientMemberRow, ClientRow, LinkagePairRow
from unified_record.synthetic import generate_dataset, load_profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feed_features import iter_feature_rows
from generate import _tree_rss_bytes

GiB = 2**30
TARGET_SECONDS = 600.0
TARGET_BYTES = 12 * GiB
TARGET_RECORDS = 1_000_000
LINKAGE_STAGES = ("features", "train", "predict", "cluster", "index update")
Pair = tuple[str, str, float, float]


class Stages:
    """Times each stage and samples the process tree's RSS (overall and per-stage peak)."""

    def __init__(self, interval: float = 0.25, echo: bool = True) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}  # this process, all threads (DuckDB's too)
        self.peak_bytes: dict[str, int] = {}
        self.peak = 0
        self._stage_peak = 0
        self._interval = interval
        self._echo = echo
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self._record()
            if self._stopped.wait(self._interval):
                return

    def _record(self) -> None:
        rss = _tree_rss_bytes(os.getpid())
        self.peak = max(self.peak, rss)
        self._stage_peak = max(self._stage_peak, rss)

    def __enter__(self) -> Stages:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopped.set()
        self._thread.join()
        self._record()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self._echo:
            print(f"{name} ...", end=" ", flush=True, file=sys.stderr)
        self._record()
        self._stage_peak = 0
        self._record()
        start, cpu = time.perf_counter(), time.process_time()
        yield
        self.seconds[name] = time.perf_counter() - start
        self.cpu_seconds[name] = time.process_time() - cpu
        self._record()
        self.peak_bytes[name] = self._stage_peak
        if self._echo:
            print(f"{self.seconds[name]:.1f} s, peak {self._stage_peak / GiB:.2f} GiB",
                  flush=True, file=sys.stderr)


def dataset(people: int, seed: int, root: Path) -> Path:
    """The generated population for (people, seed) under `root`, generated on first use."""
    out = root / f"people-{people}-seed-{seed}"
    if not (out / "manifest.json").exists():
        generate_dataset(people, seed, out, load_profile())
    return out


def read_features(con: duckdb.DuckDBPyConnection, data: Path) -> dict[str, Any]:
    """Fill `features` from the feed files, then split the records as `run_full_linkage`
    does: active ones (scored, into table `scored`), A40-retired ones (follow their
    survivor) and those with too little to match on."""
    records = load_features(con, iter_feature_rows(data), "features")
    all_ids, active, replaced, little = split_records(con)
    return {"records": records, "all_ids": all_ids, "active": active, "replaced": replaced,
            "little": little}


def update_index(session: Session, clusters: Mapping[str, str],
                 scores: Mapping[str, tuple[float | None, float | None]],
                 pairs: Sequence[Pair], model_version: str, counts: Mapping[str, object],
                 timings: dict[str, float]) -> tuple[IndexChanges, int]:
    """What `run_full_linkage` does in its one transaction (reproduced; see the docstring):
    a run row, `assign_clients`, the review-band pairs replaced, the run finished; commit.
    Returns the changes and the number of active clients."""
    t = time.perf_counter()
    run_id = start_run(session, model_version)
    changes = assign_clients(session, clusters, run_id, scores=scores,
                             model_version=model_version)
    timings["assign_clients"] = time.perf_counter() - t
    t = time.perf_counter()
    session.execute(sa.delete(LinkagePairRow))
    if pairs:
        session.execute(sa.insert(LinkagePairRow), [
            {"unique_id_l": a, "unique_id_r": b, "run_id": run_id,
             "match_probability": p, "match_weight": w} for a, b, p, w in pairs])
    timings["pairs"] = time.perf_counter() - t
    t = time.perf_counter()
    active_clients = int(session.scalar(
        sa.select(sa.func.count()).select_from(ClientRow).where(ClientRow.status == "active"))
        or 0)
    finish_run(session, run_id, {**counts, "clients": active_clients,
                                 "changes": asdict(changes)})
    session.commit()
    timings["commit"] = time.perf_counter() - t
    return changes, active_clients


def run(data: Path, *, auto_link: float = linkage_model.DEFAULT_AUTO_LINK_THRESHOLD,
        review: float = linkage_model.DEFAULT_REVIEW_THRESHOLD,
        store_dir: Path | None = None, echo: bool = True) -> dict[str, Any]:
    """The benchmark on the dataset at `data`; returns the report (see `main`)."""
    if not 0.0 <= review <= auto_link <= 1.0:
        raise ValueError("need 0 <= review threshold <= auto-link threshold <= 1")
    started = time.perf_counter()
    load_before = os.getloadavg()
    substeps: dict[str, dict[str, float]] = {"index update": {}, "rerun": {}}
    with Stages(echo=echo) as stages, tempfile.TemporaryDirectory(
            prefix="ur-linkage-scale-", dir=store_dir) as tmp:
        con = duckdb.connect()  # in memory, as run_full_linkage
        with stages.stage("features"):
            split = read_features(con, data)
        with stages.stage("train"):
            model = linkage_model.train(con, "scored")
        with stages.stage("predict"):
            pairs: list[Pair] = []
            if len(split["active"]) >= 2:
                linker = linkage_model.linker_for(con, "scored", model)
                predictions = linkage_model.predict(linker, review)
                pairs = [(str(a), str(b), float(p), float(w)) for a, b, p, w in con.execute(
                    "select unique_id_l, unique_id_r, match_probability, match_weight "
                    f"from {predictions.physical_name}").fetchall()]
        keys = {str(uid): (str(src), str(rid)) for uid, src, rid in con.execute(
            "select unique_id, source_dataset, source_record_id from features").fetchall()}
        con.close()
        with stages.stage("cluster"):
            clusters, scores, links, review_pairs = cluster_records(
                split["all_ids"], pairs, auto_link_threshold=auto_link,
                too_little=split["little"], replaced_by=split["replaced"])

        engine = make_engine(f"sqlite:///{tmp}/index.db")
        try:
            migrate(engine)
            sessions = make_session_factory(engine)
            counts = {"records": split["records"], "scored": len(split["active"]),
                      "too_little": len(split["little"]), "links": links,
                      "review_pairs": review_pairs}
            with stages.stage("index update"), sessions() as session:
                changes, clients = update_index(
                    session, clusters, scores, pairs, model.model_version, counts,
                    substeps["index update"])
            with stages.stage("rerun"), sessions() as session:
                rerun_changes, rerun_clients = update_index(
                    session, clusters, scores, pairs, model.model_version, counts,
                    substeps["rerun"])
            with sessions() as session:
                members = int(session.scalar(
                    sa.select(sa.func.count()).select_from(ClientMemberRow)) or 0)
                member_clients = int(session.scalar(
                    sa.select(sa.func.count(sa.distinct(ClientMemberRow.client_id)))) or 0)
        finally:
            engine.dispose()

        with stages.stage("evaluate"):
            result = evaluate([(a, b, p) for a, b, p, _ in pairs], clusters, keys,
                              read_truth(data / "truth.csv"), auto_link_threshold=auto_link,
                              review_threshold=review)
    linkage_seconds = sum(stages.seconds[name] for name in LINKAGE_STAGES)
    linkage_peak = max(stages.peak_bytes[name] for name in LINKAGE_STAGES)
    return {
        "dataset": str(data),
        "source_records": split["records"],
        "scored": len(split["active"]),
        "inactive": split["records"] - len(split["active"]),
        "too_little": len(split["little"]),
        "model_version": model.model_version,
        "training": model.training,
        "thresholds": {"auto_link": auto_link, "review": review},
        "pairs_scored": len(pairs),  # at or above the review threshold
        "links": links,
        "review_pairs": review_pairs,
        "clusters": len(set(clusters.values())),
        "index": {"clients": clients, "members": members, "member_clients": member_clients,
                  "changes": asdict(changes)},
        "rerun": {"clients": rerun_clients, "unchanged": rerun_changes.unchanged,
                  "changes": asdict(rerun_changes)},
        "seconds": {name: round(s, 2) for name, s in stages.seconds.items()},
        "cpu_seconds": {name: round(s, 2) for name, s in stages.cpu_seconds.items()},
        "substeps_seconds": {stage: {k: round(v, 2) for k, v in steps.items()}
                             for stage, steps in substeps.items()},
        "peak_gib": {name: round(b / GiB, 3) for name, b in stages.peak_bytes.items()},
        "linkage_seconds": round(linkage_seconds, 2),
        "linkage_peak_gib": round(linkage_peak / GiB, 3),
        "peak_gib_all": round(stages.peak / GiB, 3),
        "wall_seconds": round(time.perf_counter() - started, 2),
        # The machine is shared: the 1-minute load average before and after the run.
        "load_average": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "targets": {"seconds": TARGET_SECONDS, "gib": TARGET_BYTES / GiB,
                    "records": TARGET_RECORDS,
                    "time_met": linkage_seconds < TARGET_SECONDS,
                    "memory_met": linkage_peak < TARGET_BYTES,
                    "records_met": split["records"] >= TARGET_RECORDS},
        "accuracy": result.to_json(),
    }


def print_report(report: dict[str, Any]) -> None:
    t, acc = report["targets"], report["accuracy"]
    a, r, c = acc["auto_link"], acc["with_review"], acc["clusters"]
    print(f"dataset: {report['dataset']}")
    print(f"source records: {report['source_records']:,} "
          f"(>= {t['records']:,}: {'yes' if t['records_met'] else 'NO'}); scored "
          f"{report['scored']:,}, A40-retired {report['inactive']:,}, too little to match "
          f"{report['too_little']:,}")
    print(f"pairs at p >= {report['thresholds']['review']}: {report['pairs_scored']:,}; "
          f"auto-links applied {report['links']:,}; review band {report['review_pairs']:,}; "
          f"clusters {report['clusters']:,}; active clients {report['index']['clients']:,}")
    print()
    print(f"{'stage':<28}{'seconds':>10}{'CPU s':>10}{'peak GiB':>10}")
    for name, seconds in report["seconds"].items():
        label = name + ("" if name in LINKAGE_STAGES else " *")
        print(f"{label:<28}{seconds:>10.1f}{report['cpu_seconds'][name]:>10.1f}"
              f"{report['peak_gib'][name]:>10.2f}")
        for step, s in report["substeps_seconds"].get(name, {}).items():
            print(f"{'  ' + step:<28}{s:>10.1f}")
    linkage_cpu = sum(report["cpu_seconds"][name] for name in LINKAGE_STAGES)
    print(f"{'linkage total (1-5)':<28}{report['linkage_seconds']:>10.1f}{linkage_cpu:>10.1f}"
          f"{report['linkage_peak_gib']:>10.2f}")
    print(f"{'process wall / peak':<28}{report['wall_seconds']:>10.1f}{'':>10}"
          f"{report['peak_gib_all']:>10.2f}")
    before, after = report["load_average"]
    print(f"* not part of the linkage total; CPU s: this process, all threads; load average "
          f"{before:.1f} before, {after:.1f} after (2 cores, shared)")
    print()
    print(f"targets: under {t['seconds'] / 60:.0f} min: "
          f"{'met' if t['time_met'] else 'NOT met'}; under {t['gib']:.0f} GiB: "
          f"{'met' if t['memory_met'] else 'NOT met'}")
    rerun = report["rerun"]
    print(f"rerun with the same clusters: {'no change' if rerun['unchanged'] else 'CHANGED'} "
          f"({rerun['changes']['history']} history rows)")
    print(f"auto-link  (p >= {a['threshold']}): precision {a['precision']:.5f}  recall "
          f"{a['recall']:.5f}  ({a['true_positives']:,} TP, {a['false_positives']:,} FP)")
    print(f"with review (p >= {r['threshold']}): precision {r['precision']:.5f}  recall "
          f"{r['recall']:.5f}  ({r['true_positives']:,} TP, {r['false_positives']:,} FP, "
          f"{r['false_negatives']:,} FN)")
    print(f"clusters: {c['clusters']:,} for {c['persons']:,} persons; exact {c['exact_rate']:.4f};"
          f" false merges {c['false_merges']:,} ({c['records_in_false_merges']:,} records); "
          f"split persons {c['missed']:,}; cluster-pair precision {c['precision']:.5f} "
          f"recall {c['recall']:.5f}")
    training = report["training"]
    print(f"training: {training['labelled_pairs']:,} NHS-number-labelled pairs, u from "
          f"{training['u_max_pairs']:,.0f} random pairs (u {training['u_seconds']} s, "
          f"m {training['m_seconds']} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=720_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--data", type=Path,
                        default=Path(tempfile.gettempdir()) / "ur-bench-linkage",
                        help="where generated populations are kept (and reused)")
    parser.add_argument("--dataset", type=Path,
                        help="use this generated dataset instead (e.g. synthetic_data/sample)")
    parser.add_argument("--store-dir", type=Path, default=None,
                        help="parent of the temporary SQLite index (default: the system's)")
    parser.add_argument("--auto-link", type=float,
                        default=linkage_model.DEFAULT_AUTO_LINK_THRESHOLD)
    parser.add_argument("--review", type=float, default=linkage_model.DEFAULT_REVIEW_THRESHOLD)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()

    if args.dataset is not None:
        data = args.dataset
    else:
        print("generate (or reuse) population ...", end=" ", flush=True, file=sys.stderr)
        t = time.perf_counter()
        data = dataset(args.people, args.seed, args.data)
        print(f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
    report = run(data, auto_link=args.auto_link, review=args.review, store_dir=args.store_dir)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)


if __name__ == "__main__":
    main()
