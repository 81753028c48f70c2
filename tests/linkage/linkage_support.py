"""Paths, keys and a store holding the ingested sample, for linkage tests (importable by name,
unlike conftest)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from unified_record.ingest import Pipeline
from unified_record.security import BlindIndex, KeyRing

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "synthetic_data" / "sample"
MAPPINGS = REPO / "mappings"


def make_keys() -> tuple[KeyRing, BlindIndex]:
    return KeyRing({"k1": os.urandom(32)}, "k1"), BlindIndex(os.urandom(32))


@contextmanager
def sample_store(database_url: str, feeds: tuple[str, ...] = ()) -> Iterator[Pipeline]:
    """A pipeline whose store holds the committed sample (every feed, or only `feeds`)."""
    keyring, blind_index = make_keys()
    with Pipeline(database_url, keyring, blind_index, MAPPINGS, workers=1) as pipeline:
        if feeds:
            for feed in feeds:
                pipeline.ingest_path(feed, SAMPLE / feed)
        else:
            pipeline.ingest_dataset(SAMPLE)
        try:
            yield pipeline
        finally:
            pipeline.engine.dispose()


def truth_pairs() -> set[tuple[str, str]]:
    """(source feed, source record id) of every source person record in the sample."""
    with (SAMPLE / "truth.csv").open(encoding="utf-8", newline="") as fh:
        return {(r["source"], r["source_record_id"]) for r in csv.DictReader(fh)}
