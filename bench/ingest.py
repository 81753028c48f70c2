"""Benchmark: ingest every feed of a generated population and print source records per second.

A source record is one inbound message: a CSV row, an HL7 v2 message, a FHIR Bundle. Each is
stored raw (encrypted), mapped, validated with fhir.resources and stored encrypted with its
search index, exactly as `unified-record ingest` does.

    .venv/bin/python bench/ingest.py --people 100000                 # SQLite and PostgreSQL
    .venv/bin/python bench/ingest.py --people 100000 --database sqlite
    .venv/bin/python bench/ingest.py --people 20000 --profile        # the main process's time

With a worker pool the workers prepare and store, so `--profile` (cProfile of the main
process) shows reading and raw storage only; for the workers, use
`py-spy record --subprocesses -- .venv/bin/python bench/ingest.py ...`.

The machine's speed is printed beside the rates (`reference_loop_seconds`, a plain Python
loop): the same code has run at half the rate on a slower machine here.

The dataset is generated once into --data and reused; PostgreSQL gets a fresh schema in
UR_BENCH_PG_URL (default: the local `test` database), dropped afterwards.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from unified_record.ingest import IngestStats, Pipeline
from unified_record.ingest.mapping import MAPPINGS_DIR
from unified_record.ingest.pipeline import default_workers
from unified_record.security import BlindIndex, KeyRing
from unified_record.synthetic import generate_dataset, load_profile

PG_URL = os.environ.get("UR_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def dataset(people: int, seed: int, root: Path) -> Path:
    out = root / f"people-{people}-seed-{seed}"
    manifest = out / "manifest.json"
    if not manifest.exists():
        print(f"generating {people:,} people into {out} ...", flush=True)
        generate_dataset(people, seed, out, load_profile())
    return out


def run(url: str, data: Path, workers: int, profile: bool, batch_size: int | None = None
        ) -> tuple[dict[str, IngestStats], float]:
    keyring = KeyRing({"bench": os.urandom(32)}, "bench")
    with Pipeline(url, keyring, BlindIndex(os.urandom(32)), MAPPINGS_DIR,
                  workers=workers, batch_size=batch_size, bulk_load=True) as pipeline:
        # CPU time, not wall time: other work on the machine inflates waits, not CPU.
        profiler = cProfile.Profile(time.process_time) if profile else None
        start, cpu_start = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        results = pipeline.ingest_dataset(data)
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - start
        main_cpu = time.process_time() - cpu_start
        worker_cpu = _cpu_seconds(pipeline)
        pipeline.engine.dispose()
    records = sum(r.messages for r in results.values())
    print(f"CPU per source record: main process {main_cpu / records * 1000:.3f} ms, "
          f"workers (prepare and store) {worker_cpu / records * 1000:.3f} ms "
          "(database server not counted)")
    if profiler:
        print("main process, by own CPU time (preparing and storing run in the workers):")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return results, seconds


def _cpu_seconds(pipeline: Pipeline) -> float:
    """User + system CPU of the pool's worker processes so far (Linux /proc; 0 elsewhere)."""
    pool = pipeline._pool
    total = 0.0
    for pid in list(getattr(pool, "_processes", None) or {}):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def reference_loop_seconds() -> float:
    """Seconds for a plain Python loop of three million additions: this machine's speed at
    the moment. The virtual machines here have run the same code at half the speed, or less,
    from one session to the next and drifted by 15% within one; a rate is comparable only
    with this beside it. Run at module level, as `python3 -c "s=0; for i in ...: s+=i"`
    runs it, the figure docs/benchmarks.md quotes from earlier sessions."""
    start = time.perf_counter()
    exec("s = 0\nfor i in range(3_000_000):\n    s += i\n", {})
    return time.perf_counter() - start


def report(label: str, results: dict[str, IngestStats], seconds: float) -> dict[str, object]:
    total = IngestStats("total")
    print(f"\n{label}: {seconds:.1f} s")
    print(f"  {'feed':32} {'records':>9} {'accepted':>9} {'duplicate':>9} {'resources':>10}")
    for name, stats in [*results.items(), ("total", total)]:
        if stats is not total:
            total.add(stats)
        print(f"  {name:32} {stats.messages:9,} {stats.accepted:9,} {stats.duplicates:9,} "
              f"{stats.resources:10,}")
    rate = total.messages / seconds
    print(f"  {rate:,.0f} source records/s, {total.resources / seconds:,.0f} resources/s")
    return {"database": label, "records": total.messages, "resources": total.resources,
            "seconds": round(seconds, 1), "records_per_second": round(rate),
            "reference_loop_seconds": round(reference_loop_seconds(), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "ur-bench")
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--workers", type=int, default=0, help="prepare processes; 0 = cores")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="messages per batch (default: the pipeline's for bulk loads)")
    parser.add_argument("--profile", action="store_true", help="cProfile the main process")
    parser.add_argument("--plot", type=Path, help="write an SVG bar chart of the rates here")
    args = parser.parse_args()

    data = dataset(args.people, args.seed, args.data)
    workers = args.workers or default_workers()
    print(f"{args.people:,} people, {workers} prepare worker(s), {os.cpu_count()} cores; "
          f"machine speed: a loop of 3,000,000 additions took {reference_loop_seconds():.3f} s")
    summary = []
    if args.database in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            results, seconds = run(f"sqlite:///{tmp}/bench.db", data, workers, args.profile,
                                   args.batch_size)
            summary.append(report("sqlite", results, seconds))
    if args.database in ("postgresql", "both"):
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            sep = "&" if "?" in PG_URL else "?"
            url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
            results, seconds = run(url, data, workers, args.profile, args.batch_size)
            summary.append(report("postgresql", results, seconds))
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    print(json.dumps(summary))
    if args.plot:
        args.plot.write_text(svg_chart(summary, args.people))
        print(f"chart written to {args.plot}")


def svg_chart(summary: list[dict[str, object]], people: int, target: int = 3000) -> str:
    """Records per second per database against the target, as a plain SVG bar chart."""
    width, left, bar, gap = 640, 110, 34, 16
    label_room = 80  # right of the longest bar, for its "12,345/s"
    scale = (width - left - label_room) / max(target * 1.1, *(
        float(str(r["records_per_second"])) for r in summary))
    height = 60 + len(summary) * (bar + gap) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="13">',
             f'<title>Ingest rate, {people:,} people</title>',
             f'<text x="10" y="24" font-size="15">Ingest: source records per second '
             f'({people:,} people, full validation and encryption)</text>']
    for i, row in enumerate(summary):
        y = 44 + i * (bar + gap)
        rate = float(str(row["records_per_second"]))
        parts += [f'<text x="10" y="{y + bar * 0.65:.0f}">{row["database"]}</text>',
                  f'<rect x="{left}" y="{y}" width="{rate * scale:.0f}" height="{bar}" '
                  f'fill="#1d70b8"/>',
                  f'<text x="{left + rate * scale + 6:.0f}" y="{y + bar * 0.65:.0f}">'
                  f'{rate:,.0f}/s</text>']
    x = left + target * scale
    bottom = height - 24
    parts += [f'<line x1="{x:.0f}" y1="36" x2="{x:.0f}" y2="{bottom}" stroke="#d4351c" '
              f'stroke-dasharray="4 3"/>',
              f'<text x="{x - 4:.0f}" y="{bottom + 16}" text-anchor="end" fill="#d4351c">'
              f'target {target:,}/s</text>', "</svg>"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    main()
