"""Generate a whole dataset: people in chunks (in parallel), feeds, truth; then merge.

Chunks are generated independently and merged in chunk order, so the bytes depend only on
(people, seed, profile). The dataset is built in a temporary sibling folder and renamed into
place at the end: a failure never leaves half a dataset where a good one was.
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from unified_record.synthetic.context import ChunkContext
from unified_record.synthetic.feeds import HEADERS, WRITERS
from unified_record.synthetic.feeds.acute_adt import TARGET as HL7_PARTS
from unified_record.synthetic.population import CHUNK_SIZE, build_chunk, make_world
from unified_record.synthetic.profile import FEEDS, Profile

MAX_PEOPLE = 5_000_000
MLLP_START, MLLP_END = b"\x0b", b"\x1c\x0d"
GENERATOR_VERSION = 1


class GenerateError(Exception):
    """A bad request (size, seed, output folder); the message is one line."""


@dataclass
class Summary:
    people: int
    seed: int
    profile: str
    out: Path
    source_records: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    hl7_messages: int = 0


ProgressCallback = Callable[[int], None]


def _chunk_job(args: tuple[int, int, int, Profile, int, str]) -> tuple[int, dict[str, int]]:
    seed, chunk, count, profile, people_total, parts_dir = args
    people = build_chunk(seed, chunk, count, profile, people_total)
    ctx = ChunkContext(seed, chunk, profile, make_world(seed, profile, people_total))
    for writer in WRITERS.values():
        writer(ctx, people)
    ctx.write(Path(parts_dir) / f"{chunk:05d}")
    _write_hl7_files(ctx.buffers.get(HL7_PARTS, []), Path(parts_dir).parent / "acute_adt")
    return count, dict(ctx.counts)


def _write_hl7_files(lines: list[str], folder: Path) -> None:
    """One file per message, written by the worker; names sort in time order."""
    folder.mkdir(parents=True, exist_ok=True)
    for line in lines:
        stamp, control, message = line.split("\t", 2)
        (folder / f"{stamp}_{control}.hl7").write_bytes(message.encode("latin-1") + b"\r")


def generate_dataset(people: int, seed: int, out: Path, profile: Profile, *,
                     workers: int | None = None, on_people: ProgressCallback | None = None,
                     on_phase: Callable[[str], None] | None = None) -> Summary:
    """Write every feed and truth.csv for `people` people under `out`."""
    check_request(people, seed, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        summary = Summary(people, seed, profile.name, out)
        parts = tmp / ".parts"
        chunks = [(seed, c, min(CHUNK_SIZE, people - c * CHUNK_SIZE), profile, people, str(parts))
                  for c in range((people + CHUNK_SIZE - 1) // CHUNK_SIZE)]
        counts: Counter[str] = Counter()
        for done, chunk_counts in _run(chunks, workers):
            counts.update(chunk_counts)
            if on_people:
                on_people(done)
        summary.source_records = dict(sorted(counts.items()))
        if on_phase:
            on_phase("merging")
        n_chunks = len(chunks)
        _merge(parts, tmp, n_chunks, summary)
        shutil.rmtree(parts)
        (tmp / "manifest.json").write_text(json.dumps({
            "generator_version": GENERATOR_VERSION, "people": people, "seed": seed,
            "profile": profile.name, "source_records": summary.source_records,
            "hl7_messages": summary.hl7_messages,
        }, indent=2) + "\n", encoding="utf-8")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _run(chunks: list[tuple[int, int, int, Profile, int, str]],
         workers: int | None) -> Iterator[tuple[int, dict[str, int]]]:
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(chunks) == 1:
        yield from map(_chunk_job, chunks)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_chunk_job, chunks)


def check_request(people: int, seed: int, out: Path) -> None:
    """Reject a bad size, seed or output folder before any work starts.

    Only an empty folder or an earlier generated dataset may be replaced.
    """
    if not 1 <= people <= MAX_PEOPLE:
        raise GenerateError(f"--people must be between 1 and {MAX_PEOPLE:,}, got {people}")
    if seed < 0:
        raise GenerateError(f"--seed must be a non-negative integer, got {seed}")
    if out.exists() and not out.is_dir():
        raise GenerateError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise GenerateError(f"--out {out} is not empty and not a generated dataset; "
                            "refusing to replace it")


def _swap_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)


def _merge(parts: Path, dest: Path, n_chunks: int, summary: Summary) -> None:
    chunk_dirs = [parts / f"{c:05d}" for c in range(n_chunks)]
    written = {str(p.relative_to(d)) for d in chunk_dirs if d.exists()
               for p in d.rglob("*") if p.is_file()}
    targets = sorted(written | set(HEADERS))  # every CSV exists, if only with its header
    for feed in FEEDS:
        (dest / feed).mkdir(parents=True, exist_ok=True)
    for target in targets:
        if target == HL7_PARTS:
            continue
        path = dest / target
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            if target in HEADERS:
                out.write(HEADERS[target].encode() + b"\n")
            for d in chunk_dirs:
                part = d / target
                if part.exists():
                    with part.open("rb") as fh:
                        shutil.copyfileobj(fh, out, 1 << 20)
        folder = target.split("/")[0]
        summary.files[folder] = summary.files.get(folder, 0) + 1
    summary.hl7_messages = _merge_hl7(chunk_dirs, dest)
    summary.files["acute_adt"] = summary.hl7_messages


def _merge_hl7(chunk_dirs: list[Path], dest: Path) -> int:
    """The workers wrote one file per message; here the same messages become one
    time-ordered MLLP stream."""
    files = [(d / HL7_PARTS).open("r", encoding="utf-8", newline="\n") for d in chunk_dirs
             if (d / HL7_PARTS).exists()]
    count = 0
    try:
        with (dest / "acute_adt.mllp").open("wb") as stream:
            for line in heapq.merge(*files):
                message = line.rstrip("\n").split("\t", 2)[2]
                stream.write(MLLP_START + message.encode("latin-1") + b"\r" + MLLP_END)
                count += 1
    finally:
        for fh in files:
            fh.close()
    return count
