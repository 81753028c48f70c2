"""Reading a feed's files into inbound messages, by format.

CSV: one message per row. HL7 v2: `.hl7` files of one or more messages (in file-name order)
and `.mllp` streams. FHIR: `.json` files of one Bundle and `.ndjson` files of a Bundle a line.
Every message carries a locator (file name and line) so a reason can point at it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from unified_record.ingest.csv_adapter import iter_csv_messages

SUFFIXES = {"csv": (".csv",), "hl7v2": (".hl7", ".mllp"), "fhir": (".json", ".ndjson")}


@dataclass(frozen=True)
class SourceMessage:
    raw: bytes
    locator: str
    control_id: str | None = None  # HL7 MSH-10, for idempotency beyond the content hash


def feed_files(fmt: str, path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES[fmt])


def iter_messages(fmt: str, path: Path) -> Iterator[SourceMessage]:
    for file in feed_files(fmt, path):
        if fmt == "csv":
            for message in iter_csv_messages(file):
                yield SourceMessage(message.raw, f"{file.name}:{message.line}")
        elif fmt == "fhir":
            yield from _fhir_messages(file)
        else:
            yield from _hl7_messages(file)


def _fhir_messages(file: Path) -> Iterator[SourceMessage]:
    if file.suffix == ".json":
        yield SourceMessage(file.read_bytes(), f"{file.name}:1")
        return
    with file.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                yield SourceMessage(line.rstrip(b"\r\n"), f"{file.name}:{number}")


def _hl7_messages(file: Path) -> Iterator[SourceMessage]:
    from unified_record.ingest.hl7v2 import read_mllp_stream, split_messages

    data = file.read_bytes()
    if file.suffix == ".mllp":
        for number, raw in enumerate(read_mllp_stream(data), start=1):
            yield SourceMessage(raw, f"{file.name}#{number}", control_id_of(raw))
        return
    for line, raw in split_messages(data):
        yield SourceMessage(raw, f"{file.name}:{line}", control_id_of(raw))


def control_id_of(raw: bytes) -> str | None:
    """MSH-10 read cheaply from the first segment (None when absent)."""
    if not raw.startswith(b"MSH") or len(raw) < 4:
        return None
    first = raw.replace(b"\n", b"\r").split(b"\r", 1)[0]
    fields = first.split(raw[3:4])
    value = fields[9].decode("latin-1").strip() if len(fields) > 9 else ""
    return value or None
