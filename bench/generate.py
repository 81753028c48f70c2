"""Benchmark: generate a population with all feeds and print people and records per second.

    .venv/bin/python bench/generate.py --people 1000000 --out /tmp/ur-bench
    /usr/bin/time -v .venv/bin/python bench/generate.py --people 1000000   # peak memory
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from unified_record.synthetic import generate_dataset, load_profile


def _tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc (Linux)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/status") as fh:
                total += next(int(line.split()[1]) * 1024 for line in fh
                              if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (OSError, StopIteration):
            continue
    return total


class PeakMemory(threading.Thread):
    """Samples the whole process tree's RSS twice a second and keeps the peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            self.peak = max(self.peak, _tree_rss_bytes(os.getpid()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--workers", type=int, default=0, help="0 = one per core")
    parser.add_argument("--out", type=Path, default=None, help="kept if given, else removed")
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="ur-bench-")) / "ds"
    memory = PeakMemory()
    memory.start()
    start = time.perf_counter()
    summary = generate_dataset(args.people, args.seed, out, load_profile(),
                               workers=args.workers or None)
    seconds = time.perf_counter() - start
    memory.stopped.set()
    records = sum(summary.source_records.values())
    # du, not Path.rglob: listing a folder of 900,000 files in Python costs ~0.7 GiB itself.
    size = int(subprocess.run(["du", "-sb", str(out)], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    print(f"people            {args.people:,}")
    print(f"source records    {records:,}  ({summary.source_records})")
    print(f"hl7 messages      {summary.hl7_messages:,}")
    print(f"output size       {size / 2**30:.2f} GiB")
    print(f"wall time         {seconds:.1f} s")
    print(f"people/s          {args.people / seconds:,.0f}")
    print(f"source records/s  {records / seconds:,.0f}")
    print(f"peak RSS, all processes  {memory.peak / 2**30:.2f} GiB")
    if args.out is None:
        shutil.rmtree(out.parent)


if __name__ == "__main__":
    main()
