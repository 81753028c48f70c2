"""Benchmark: incremental matching of one new record against a built client index.

    .venv/bin/python bench/match_one.py                    # 100,000 people
    .venv/bin/python bench/match_one.py --people 20000 --held 500

Generates the population once into --data (reused afterwards), holds back --held gp_fhir
bundles (spread over the feed's files), ingests the rest into a SQLite store
(`Pipeline(bulk_load=True, workers=2)`) and runs a full linkage (`run_full_linkage`, which
trains and saves the model). The built index is cached in --data and copied for each run,
so a second run only measures matching. Then the held-back bundles are ingested and each
new Patient is placed with `linkage.incremental.match_new_record`, one transaction each;
the time of the call (not the commit) is measured. Target (issue 5): p95 < 50 ms at
100,000 clients.

Keys are fixed bench-only keys (the data is synthetic), so a cached store opens again.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from unified_record.ingest import Pipeline
from unified_record.linkage.incremental import match_new_record, scorer_for
from unified_record.linkage.index import run_full_linkage
from unified_record.linkage.model import load_model
from unified_record.security import BlindIndex, KeyRing
from unified_record.store.models import ClientMemberRow, ClientRow, ResourceRow
from unified_record.synthetic import generate_dataset, load_profile

REPO = Path(__file__).resolve().parents[1]
MAPPINGS = REPO / "mappings"


def keys() -> tuple[KeyRing, BlindIndex]:
    data = hashlib.sha256(b"ur-bench-match-one data key").digest()
    index = hashlib.sha256(b"ur-bench-match-one index key").digest()
    return KeyRing({"bench1": data}, "bench1"), BlindIndex(index)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def dataset(people: int, seed: int, root: Path) -> Path:
    out = root / f"people-{people}-seed-{seed}"
    if not (out / "manifest.json").exists():
        say(f"generating {people:,} people into {out} ...")
        generate_dataset(people, seed, out, load_profile())
    return out


def split(data: Path, held: int, out: Path) -> tuple[Path, Path]:
    """`out/main` (the dataset without `held` gp_fhir bundles) and `out/held/gp_fhir`."""
    main, held_dir = out / "main", out / "held" / "gp_fhir"
    if (held_dir / "held.ndjson").exists():
        return main, held_dir
    shutil.rmtree(out, ignore_errors=True)
    main.mkdir(parents=True)
    held_dir.mkdir(parents=True)
    for entry in data.iterdir():
        if entry.name != "gp_fhir":
            (main / entry.name).symlink_to(entry.resolve())
    (main / "gp_fhir").mkdir()
    files = sorted((data / "gp_fhir").glob("*.ndjson"))
    per_file, extra = divmod(held, len(files))
    kept: list[str] = []
    for index, path in enumerate(files):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        cut = per_file + (index < extra)
        kept += lines[:cut]
        (main / "gp_fhir" / path.name).write_text("".join(lines[cut:]), encoding="utf-8")
    (held_dir / "held.ndjson").write_text("".join(kept), encoding="utf-8")
    return main, held_dir


def build_index(main: Path, db: Path, model_path: Path, workers: int) -> None:
    keyring, blind_index = keys()
    tmp_db = db.with_name(db.name + ".building")
    tmp_db.unlink(missing_ok=True)
    model_path.unlink(missing_ok=True)
    url = f"sqlite:///{tmp_db}"
    start = time.perf_counter()
    with Pipeline(url, keyring, blind_index, MAPPINGS, workers=workers,
                  bulk_load=True) as pipeline:
        pipeline.ingest_dataset(main)
        say(f"ingest: {time.perf_counter() - start:.1f} s")
        t = time.perf_counter()
        report = run_full_linkage(pipeline.sessions, keyring, blind_index,
                                  model_path=model_path, progress=lambda s: say(f"  {s}"))
        say(f"full linkage: {time.perf_counter() - t:.1f} s ({report.records:,} records, "
            f"{report.clients:,} clients)")
        pipeline.engine.dispose()
    tmp_db.replace(db)


def read_truth(path: Path) -> dict[tuple[str, str], str]:
    with path.open(encoding="utf-8", newline="") as fh:
        return {(r["source"], r["source_record_id"]): r["person_id"] for r in csv.DictReader(fh)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--held", type=int, default=500, help="records matched one by one")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path,
                        default=Path(tempfile.gettempdir()) / "ur-bench-match-one")
    parser.add_argument("--max-candidates", type=int, default=200)
    args = parser.parse_args()

    data = dataset(args.people, args.seed, args.data)
    work = args.data / f"split-{args.people}-{args.seed}-{args.held}"
    main_dir, held_dir = split(data, args.held, work)
    db, model_path = work / "index.db", work / "model.json"
    if not db.exists() or not model_path.exists():
        say("building the index (cached for later runs) ...")
        build_index(main_dir, db, model_path, args.workers)
    model = load_model(model_path)
    keyring, blind_index = keys()
    start = time.perf_counter()
    scorer_for(model)  # once per process and model: checks its levels against linkage.model
    compile_ms = (time.perf_counter() - start) * 1000

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "index.db"
        shutil.copyfile(db, copy)
        with Pipeline(f"sqlite:///{copy}", keyring, blind_index, MAPPINGS,
                      workers=1) as pipeline:
            with pipeline.sessions() as session:
                clients = session.scalar(sa.select(sa.func.count()).select_from(ClientRow)
                                         .where(ClientRow.status == "active")) or 0
                members = session.scalar(
                    sa.select(sa.func.count()).select_from(ClientMemberRow)) or 0
            pipeline.ingest_path("gp_fhir", held_dir)
            with pipeline.sessions() as session:
                index = {uid: cid for uid, cid in session.execute(
                    sa.select(ClientMemberRow.unique_id, ClientMemberRow.client_id))}
                indexed = set(index)
                source = {rid: (feed, str(srid)) for rid, feed, srid in session.execute(
                    sa.select(ResourceRow.id, ResourceRow.source_feed,
                              ResourceRow.source_record_id)
                    .where(ResourceRow.resource_type == "Patient"))}
                new_ids = sorted(set(session.scalars(sa.select(ResourceRow.id).where(
                    ResourceRow.resource_type == "Patient"))) - indexed)
            times: list[float] = []
            commits: list[float] = []
            stages: dict[str, list[float]] = {}
            decisions: Counter[str] = Counter()
            candidates: list[int] = []
            truth = read_truth(data / "truth.csv")
            person_of = {rid: truth.get(key) for rid, key in source.items()}
            clients_of: dict[str, Counter[str]] = {}
            for rid, cid in index.items():
                if (person := person_of.get(rid)) is not None:
                    clients_of.setdefault(person, Counter())[cid] += 1
            known = known_right = unknown = unknown_right = 0
            for uid in new_ids:
                with pipeline.sessions() as session:
                    start = time.perf_counter()
                    outcome = match_new_record(session, model, keyring, blind_index, uid,
                                               max_candidates=args.max_candidates)
                    times.append((time.perf_counter() - start) * 1000)
                    start = time.perf_counter()
                    session.commit()
                    commits.append((time.perf_counter() - start) * 1000)
                decisions[outcome.decision] += 1
                seen = clients_of.get(person_of.get(uid) or "")
                if seen:
                    known += 1
                    known_right += outcome.decision == "joined" and \
                        outcome.client_id == seen.most_common(1)[0][0]
                else:
                    unknown += 1
                    unknown_right += outcome.decision != "joined"
                if (person := person_of.get(uid)) is not None:  # later records may join it
                    clients_of.setdefault(person, Counter())[outcome.client_id] += 1
                candidates.append(outcome.candidates)
                for name, ms in outcome.timings_ms.items():
                    stages.setdefault(name, []).append(ms)
            pipeline.engine.dispose()

    print(f"index: {args.people:,} people (seed {args.seed}), {members:,} source records in "
          f"{clients:,} active clients (SQLite)")
    print(f"matched {len(times)} new records: p50 {percentile(times, 0.5):.1f} ms, "
          f"p95 {percentile(times, 0.95):.1f} ms, max {max(times):.1f} ms "
          f"(mean {statistics.fmean(times):.1f} ms); commit p50 "
          f"{percentile(commits, 0.5):.1f} ms")
    print(f"one-time model compile (not in the figures above): {compile_ms:.0f} ms")
    print("decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(decisions.items())))
    print(f"against truth.csv (scoring only): {known_right}/{known} records of people already "
          f"in the index (or matched before) joined their client; {unknown_right}/{unknown} "
          "records of people not seen before did not join any")
    print(f"candidates per record: p50 {percentile([float(c) for c in candidates], 0.5):.0f}, "
          f"max {max(candidates)}")
    print("stage p50/p95 ms: " + ", ".join(
        f"{name} {percentile(v, 0.5):.2f}/{percentile(v, 0.95):.2f}"
        for name, v in stages.items()))
    print(f"target p95 < 50 ms: {'met' if percentile(times, 0.95) < 50 else 'NOT met'}")


if __name__ == "__main__":
    main()
