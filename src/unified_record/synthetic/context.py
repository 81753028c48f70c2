"""What a feed writer gets for one chunk: seeded randomness, id ranges and output buffers."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from unified_record.synthetic.population import CHUNK_SIZE, World
from unified_record.synthetic.profile import Profile

IDS_PER_CHUNK = CHUNK_SIZE * 8  # room for every record and message id a chunk can need
ACTIVITY_START = datetime(2023, 1, 1)
ACTIVITY_DAYS = 1400  # activity dates run from 2023 to late 2026


@dataclass
class ChunkContext:
    seed: int
    chunk: int
    profile: Profile
    world: World
    buffers: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _next_ids: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def rng(self, feed: str) -> random.Random:
        return random.Random(f"{self.seed}:{feed}:{self.chunk}")

    def next_id(self, series: str) -> int:
        """A number unique across the whole dataset within one id series."""
        self._next_ids[series] += 1
        if self._next_ids[series] >= IDS_PER_CHUNK:
            raise RuntimeError(f"id series {series} overflowed its chunk range")
        return self.chunk * IDS_PER_CHUNK + self._next_ids[series]

    def emit(self, target: str, line: str) -> None:
        self.buffers[target].append(line)

    def truth(self, source: str, source_record_id: str, person_id: str) -> None:
        self.buffers["truth.csv"].append(f"{source},{source_record_id},{person_id}")
        self.counts[source] += 1

    def sensitive(self, source: str, source_record_id: str, category: str) -> None:
        self.buffers["sensitive.csv"].append(f"{source},{source_record_id},{category}")

    def write(self, parts: Path) -> None:
        for target, lines in self.buffers.items():
            if not lines:
                continue
            path = parts / target
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8", newline="") as fh:
                fh.write("\n".join(lines))
                fh.write("\n")


def csv_line(values: list[str]) -> str:
    """One RFC 4180 CSV line; quotes only the fields that need it."""
    out = []
    for value in values:
        if any(ch in value for ch in ',"\r\n'):
            value = '"' + value.replace('"', '""') + '"'
        out.append(value)
    return ",".join(out)


def activity_date(rng: random.Random, after: date | None = None) -> date:
    start = ACTIVITY_START.date() if after is None else after
    end = ACTIVITY_START.date() + timedelta(days=ACTIVITY_DAYS)
    span = max((end - start).days, 1)
    return start + timedelta(days=rng.randrange(span))


def activity_time(rng: random.Random, after: datetime | None = None) -> datetime:
    start = after or ACTIVITY_START
    end = ACTIVITY_START + timedelta(days=ACTIVITY_DAYS)
    span = max(int((end - start).total_seconds()), 3600)  # near the end: within the hour
    return start + timedelta(seconds=rng.randrange(60, span))
