"""An HL7 v2 message as a mapping SourceRecord.

Paths are terser-style (`PID-5.1`, `PID-3[2].1`, `MSH-9.2`) plus one filter that real ADT
feeds need: `PID-3[5=MR].1` reads component 1 of the first repetition whose component 5 is
`MR`, because senders order PID-3 identifiers differently.
"""

from __future__ import annotations

import re

from unified_record.ingest.hl7v2 import Hl7Error, Hl7Message, parse_message
from unified_record.ingest.mapping import RecordError

_FILTERED = re.compile(r"([A-Z][A-Z0-9]{2}(?:\[\d+\])?-\d+)\[(\d+)=([^\]]*)\](?:\.(\d+))?\Z")
_N = r"0*[1-9][0-9]*"  # positions are 1-based
_PATH = re.compile(rf"[A-Z][A-Z0-9]{{2}}(?:\[{_N}\])?-{_N}(?:\[{_N}\])?(?:\.{_N}(?:\.{_N})?)?\Z")
_FILTERED_PATH = re.compile(
    rf"[A-Z][A-Z0-9]{{2}}(?:\[{_N}\])?-{_N}\[{_N}=[^\]]*\](?:\.{_N})?\Z")


def is_path(path: str) -> bool:
    """True for a path `Hl7Record.get` reads (mapping files are checked with it on load)."""
    return bool(_PATH.match(path) or _FILTERED_PATH.match(path))


class Hl7Record:
    """Read view for the mapping engine; blank values and HL7 nulls read as absent.

    Each path's value is kept once read: a mapping reads some paths several times (an ADT
    message: 34 reads of 26 paths), and the message does not change."""

    __slots__ = ("_read", "message")

    def __init__(self, message: Hl7Message) -> None:
        self.message = message
        self._read: dict[str, str | None] = {}

    def get(self, path: str) -> str | None:
        try:
            return self._read[path]
        except KeyError:
            value = self._read[path] = self._get(path)
            return value

    def _get(self, path: str) -> str | None:
        filtered = _FILTERED.match(path)
        if filtered is None:
            value = self.message.get(path)
        else:
            field, comp, expected, want = filtered.groups()
            value = None
            for repetition in self.message.repetitions(field):
                if (repetition.get(int(comp)) or "") == expected:
                    value = repetition.get(int(want or 1))
                    break
        if value is None or not value.strip():
            return None
        return value


def parse_hl7_record(raw: bytes) -> Hl7Record:
    """Parse and check one message; an Hl7Error becomes a RecordError naming the field."""
    try:
        return Hl7Record(parse_message(raw))
    except Hl7Error as exc:
        raise RecordError(str(exc)) from None
