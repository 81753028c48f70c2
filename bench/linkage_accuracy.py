"""Benchmark: accuracy of the linkage model on a generated population, with stage times.

    .venv/bin/python bench/linkage_accuracy.py --people 100000 --seed 11
    .venv/bin/python bench/linkage_accuracy.py --people 20000 --seed 3 --json

Generates the population once into --data (reused afterwards), builds the feature table,
trains the model (the truth is not consulted), scores candidate pairs, clusters at the
auto-link threshold and scores pairs and clusters against the generator's truth.csv.
Targets (issue 5): pairwise precision >= 0.999 at auto-link, recall >= 0.98 with review.

By default features are read straight from the feed files (bench/feed_features.py:
each source record becomes a FHIR Patient and goes through `linkage.features.patient_features`)
rather than from an ingested store: ingesting 100,000 people first takes several minutes and
measures ingest, which bench/ingest.py does. On the committed sample both paths give
identical features (tests/linkage/test_model.py). `--via-store` takes the production path
instead: ingest into a temporary SQLite store, then `iter_patient_features`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from unified_record.ingest.pipeline import default_workers
from unified_record.linkage import model as linkage_model
from unified_record.linkage.evaluate import evaluate, read_truth
from unified_record.linkage.features import load_features
from unified_record.synthetic import generate_dataset, load_profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feed_features import load_dataset, record_keys, store_feature_rows

STAGES: dict[str, float] = {}


@contextmanager
def stage(name: str) -> Iterator[None]:
    print(f"{name} ...", end=" ", flush=True, file=sys.stderr)
    start = time.perf_counter()
    yield
    STAGES[name] = time.perf_counter() - start
    print(f"{STAGES[name]:.1f} s", flush=True, file=sys.stderr)


def dataset(people: int, seed: int, root: Path) -> Path:
    out = root / f"people-{people}-seed-{seed}"
    if not (out / "manifest.json").exists():
        generate_dataset(people, seed, out, load_profile())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--data", type=Path,
                        default=Path(tempfile.gettempdir()) / "ur-bench-linkage")
    parser.add_argument("--auto-link", type=float,
                        default=linkage_model.DEFAULT_AUTO_LINK_THRESHOLD)
    parser.add_argument("--review", type=float, default=linkage_model.DEFAULT_REVIEW_THRESHOLD)
    parser.add_argument("--u-max-pairs", type=float, default=None)
    parser.add_argument("--em", action="store_true",
                        help="add the optional EM pass (to compare with the default)")
    parser.add_argument("--save-model", type=Path, help="write the trained model JSON here")
    parser.add_argument("--via-store", action="store_true",
                        help="ingest into a temporary SQLite store and read features from it")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()

    with stage("generate (or reuse) population"):
        data = dataset(args.people, args.seed, args.data)
    con = duckdb.connect()
    if args.via_store:
        with tempfile.TemporaryDirectory() as tmp, stage("ingest + features (from store)"):
            rows = store_feature_rows(data, f"sqlite:///{tmp}/bench.db",
                                      workers=default_workers())
            load_features(con, rows, "features")
        source = "ingested into SQLite, read back with linkage.features.iter_patient_features"
    else:
        with stage("features (from feed files)"):
            rows = load_dataset(con, data, "features")
        source = "read from feed files via bench/feed_features.py"
    options = linkage_model.TrainingOptions(
        u_max_pairs=args.u_max_pairs,
        em_blocking_rules=linkage_model.EM_BLOCKING_RULES if args.em else ())
    with stage("train"):
        model = linkage_model.train(con, "features", options)
    if args.save_model:
        linkage_model.save_model(model, args.save_model)
    linker = linkage_model.linker_for(con, "features", model)
    with stage("predict"):
        predictions = linkage_model.predict(linker, min(args.review, args.auto_link))
    with stage("cluster"):
        clustered = linkage_model.cluster(linker, predictions, args.auto_link)
    with stage("evaluate"):
        pairs = con.execute(
            f"select unique_id_l, unique_id_r, match_probability "
            f"from {predictions.physical_name}").fetchall()
        clusters = dict(con.execute(
            f"select unique_id, cluster_id from {clustered.physical_name}").fetchall())
        result = evaluate(pairs, clusters, record_keys(rows), read_truth(data / "truth.csv"),
                          auto_link_threshold=args.auto_link, review_threshold=args.review)

    report = {
        "people": args.people, "seed": args.seed, "source_records": len(rows),
        "features": source,
        "model_version": model.model_version, "training": model.training,
        "scored_pairs": len(pairs), **result.to_json(),
        "seconds": {name: round(s, 2) for name, s in STAGES.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    a, r, c = result.auto_link, result.with_review, result.clusters
    print(f"population: {args.people:,} people (seed {args.seed}), {len(rows):,} source "
          f"records, {result.true_pairs:,} true pairs; features {source}")
    print(f"model {model.model_version}: prior {model.probability_two_random_records_match:.3g}"
          f", {model.training['labelled_pairs']:,} NHS-number-labelled pairs, "
          f"u from {model.training['u_max_pairs']:,.0f} random pairs")
    print(f"auto-link  (p >= {a.threshold}): precision {a.precision:.5f}  recall "
          f"{a.recall:.5f}  F1 {a.f1:.5f}  ({a.true_positives:,} TP, {a.false_positives:,} FP,"
          f" {a.false_negatives:,} FN)")
    print(f"with review (p >= {r.threshold}): precision {r.precision:.5f}  recall "
          f"{r.recall:.5f}  F1 {r.f1:.5f}  ({r.true_positives:,} TP, {r.false_positives:,} FP,"
          f" {r.false_negatives:,} FN)")
    print(f"clusters: {c.clusters:,} for {c.persons:,} persons; exact {c.exact:,} "
          f"({c.exact_rate:.4f}); false merges {c.false_merges:,} "
          f"({c.records_in_false_merges:,} records); missed (split persons) {c.missed:,}; "
          f"cluster-pair precision {c.precision:.5f} recall {c.recall:.5f}")
    print("targets: precision >= 0.999 at auto-link: "
          f"{'met' if a.precision >= 0.999 else 'NOT met'}; recall >= 0.98 with review: "
          f"{'met' if r.recall >= 0.98 else 'NOT met'}")
    print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in STAGES.items()))


if __name__ == "__main__":
    main()
