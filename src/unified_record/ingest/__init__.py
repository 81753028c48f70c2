"""Feed adapters, the declarative mapping engine and the ingest pipeline."""

from unified_record.ingest.mapping import (
    FeedMapping,
    MappingFileError,
    RecordError,
    load_mapping,
    load_mappings,
    map_record,
)
from unified_record.ingest.pipeline import IngestStats, Outcome, Pipeline

__all__ = [
    "FeedMapping",
    "IngestStats",
    "MappingFileError",
    "Outcome",
    "Pipeline",
    "RecordError",
    "load_mapping",
    "load_mappings",
    "map_record",
]
