"""CSV exports, streamed row by row, any size.

Each row becomes one inbound message whose raw bytes are the header line plus the row's own
lines exactly as received, so a message is self-contained and can be replayed alone. Bytes
that are not valid in the declared encoding reject only their row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from unified_record.ingest.mapping import CsvOptions, DictRecord, RecordError


@dataclass(frozen=True)
class CsvMessage:
    line: int  # first line of the row in the file, 1-based
    raw: bytes  # header line + the row's lines, as received


def iter_csv_messages(path: Path) -> Iterator[CsvMessage]:
    """Split a CSV file into per-row messages without decoding it (quoted newlines kept)."""
    with path.open("rb") as fh:
        header = fh.readline()
        if not header:
            return
        if not header.endswith(b"\n"):
            header += b"\n"
        line_no = 1
        pending: list[bytes] = []
        start = 2
        quotes = 0
        for line in fh:
            line_no += 1
            if not pending:
                start = line_no
            pending.append(line)
            quotes += line.count(b'"')
            if quotes % 2 == 0:  # not inside a quoted field: the row is complete
                row = b"".join(pending)
                pending, quotes = [], 0
                if row.strip():
                    yield CsvMessage(start, header + row)
        if pending:
            yield CsvMessage(start, header + b"".join(pending))  # unterminated quote: reject later


def parse_csv_message(raw: bytes, options: CsvOptions) -> DictRecord:
    """Parse a header+row message into a record; RecordError says what is wrong."""
    try:
        text = raw.decode(options.encoding)
    except UnicodeDecodeError as exc:
        raise RecordError(f"not valid {options.encoding} (byte {exc.start} of the row)") from None
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=options.delimiter,
                               strict=True))
    except csv.Error as exc:
        raise RecordError(f"malformed CSV row: {exc}") from None
    if len(rows) != 2:
        raise RecordError("malformed CSV row: expected one row after the header")
    header, row = rows
    if len(row) != len(header):
        raise RecordError(f"malformed CSV row: {len(row)} fields where the header has "
                          f"{len(header)}")
    missing = [c for c in options.required_columns if c not in header]
    if missing:
        raise RecordError(f"header lacks required column(s) {missing}")
    record = dict(zip(header, row, strict=True))
    empty = [c for c in options.required_columns if not record[c].strip()]
    if empty:
        raise RecordError(f"required field(s) {empty} empty")
    return DictRecord(record)
