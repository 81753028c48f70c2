"""HL7 v2 messages: splitting files, a terser-style read view, ADT validation and ACKs.

Built for the standard rather than one sender, because acute trusts' feeds vary: segments may
end in CR, LF or CRLF; the delimiters are whatever MSH-1 and MSH-2 say; escape sequences are
decoded on read; the character set comes from MSH-18 (ISO 8859-1 when absent: the standard's
ASCII default as UK systems actually use it). Errors name the segment and field, never a
value, because the values are patient data.
"""

from __future__ import annotations

import codecs
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

__all__ = [
    "ADT_EVENTS_WITHOUT_PID",
    "ADT_MERGE_EVENTS",
    "APPLICATION_INTERNAL_ERROR",
    "DATA_TYPE_ERROR",
    "DEFAULT_ENCODING",
    "ERROR_TEXTS",
    "REQUIRED_FIELD_MISSING",
    "SEGMENT_SEQUENCE_ERROR",
    "TABLE_VALUE_NOT_FOUND",
    "UNSUPPORTED_EVENT_CODE",
    "UNSUPPORTED_MESSAGE_TYPE",
    "Encoding",
    "Hl7Error",
    "Hl7Message",
    "Repetition",
    "Segment",
    "build_ack",
    "escape",
    "parse_hl7_date",
    "parse_message",
    "read_mllp_stream",
    "split_messages",
    "unescape",
    "validate_message",
]

# HL7 table 0357, message error condition codes: ERR-1.4 (v2.4) and ERR-3 (v2.5+).
SEGMENT_SEQUENCE_ERROR = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
TABLE_VALUE_NOT_FOUND = 103
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT_CODE = 201
APPLICATION_INTERNAL_ERROR = 207
ERROR_TEXTS = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

# v2.4 chapter 3: every ADT event carries PID except A20 (bed status update); these events
# carry MRG (merge, move and change-identifier events).
ADT_EVENTS_WITHOUT_PID = frozenset({"A20"})
ADT_MERGE_EVENTS = frozenset({
    "A18", "A30", "A34", "A35", "A36", "A39", "A40", "A41", "A42",
    "A43", "A44", "A45", "A46", "A47", "A48", "A49", "A50", "A51",
})

# MSH-18 values (HL7 table 0211) for ASCII-compatible character sets, to Python codecs.
_CHARSETS = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "iso8859-1",
    "ISO IR100": "iso8859-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}
_ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})
_ACK_TEXT_MAX = 80  # MSA-3 is ST(80) in v2.4
_BOM = b"\xef\xbb\xbf"
_BATCH_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")
_BOUNDARY = re.compile(rb"(?<![^\r\n])(?:MSH|FHS|BHS|BTS|FTS)(?![A-Za-z0-9\r\n])")
_BYTE_BREAK = re.compile(rb"\r\n?|\n")
_BLANK_LINES = re.compile(rb"(?:[ \t]*(?:\r\n?|\n))*")
_LINE_BREAK = re.compile(r"\r\n?|\n")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}\Z")
_TRIGGER = re.compile(r"[A-Z][0-9]{2}\Z", re.ASCII)
_PATH = re.compile(
    r"([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?-(\d+)(?:\[(\d+)\])?(?:\.(\d+)(?:\.(\d+))?)?\Z",
    re.ASCII)
_FIELD_PATH = re.compile(r"([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?-(\d+)\Z", re.ASCII)
_LOCATION = re.compile(
    r"([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?(?:-(\d+)(?:\[(\d+)\])?(?:\.(\d+)(?:\.(\d+))?)?)?\Z",
    re.ASCII)
_DTM = re.compile(
    r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.\d+)?)?)?)?)?)?"
    r"(?:[+-](\d{2})(\d{2}))?\Z", re.ASCII)
_FORMATTING = {".br": "\n", ".sp": "\n", "H": "", "N": ""}


@dataclass(frozen=True, slots=True)
class Encoding:
    """The delimiters a message declares in MSH-1 and MSH-2 ("" when MSH-2 omits one)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


DEFAULT_ENCODING = Encoding()


# --- files ------------------------------------------------------------------------------------


def split_messages(data: bytes) -> list[tuple[int, bytes]]:
    """Cut a file into (line of its MSH segment, message bytes), so errors can name the line.

    A message starts at each line beginning "MSH"; batch envelopes (FHS/BHS/BTS/FTS) are
    dropped. Anything else outside a message comes back as a chunk of its own, so that it fails
    to parse with its line number instead of vanishing silently.
    """
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    bounds = [m.start() for m in _BOUNDARY.finditer(data)]
    pieces: list[tuple[int, int]] = []
    if not bounds or bounds[0] != 0:
        pieces.append((0, bounds[0] if bounds else len(data)))
    if bounds:
        pieces.extend(zip(bounds, [*bounds[1:], len(data)], strict=True))
    result: list[tuple[int, bytes]] = []
    line, counted = 1, 0
    for start, end in pieces:
        line += len(_BYTE_BREAK.findall(data, counted, start))
        counted = start
        chunk = data[start:end]
        if chunk[:3] in _BATCH_SEGMENTS:
            first_break = _BYTE_BREAK.search(chunk)
            if first_break is None:
                continue
            _append_chunk(result, chunk[first_break.end():], line + 1)
        else:
            _append_chunk(result, chunk, line)
    return result


def read_mllp_stream(data: bytes) -> list[bytes]:
    """The messages of a whole `.mllp` file (framing lives in `ingest.mllp`; here for sources)."""
    from unified_record.ingest.mllp import read_mllp_stream as read_stream

    return read_stream(data)


# --- parsing ----------------------------------------------------------------------------------


def parse_message(raw: bytes, *, validate: bool = True,
                  default_charset: str = "8859/1") -> Hl7Message:
    """Decode and parse one message; with `validate`, also apply `validate_message`.

    `default_charset` (an MSH-18 value or a Python codec name) applies when MSH-18 is empty;
    a feed known to send, say, Windows-1252 without declaring it can be configured with it.
    Raises Hl7Error for anything that is not a well-formed HL7 v2 message.
    """
    if raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    raw = raw.lstrip(b" \t\r\n")
    if not raw:
        raise Hl7Error("empty message", segment="MSH", code=SEGMENT_SEQUENCE_ERROR, reject=True)
    if not raw.startswith(b"MSH"):
        raise Hl7Error("message does not start with an MSH segment", segment="MSH",
                       code=SEGMENT_SEQUENCE_ERROR, reject=True)
    if len(raw) < 4 or not _is_delimiter(chr(raw[3])):
        raise Hl7Error("field separator missing or invalid", field="MSH-1",
                       code=REQUIRED_FIELD_MISSING, reject=True)
    codec = _message_codec(raw, default_charset)
    text = _decode(raw, codec)
    message = _parse_text(text, codec)
    if validate:
        validate_message(message)
    return message


def validate_message(message: Hl7Message) -> None:
    """Check what any receiver needs (MSH-9, MSH-10) and, for ADT, the v2.4 required segments
    and the dates in PID. Structural problems reject (AR); bad content is an error (AE)."""
    msg_type, trigger = message.message_type
    if not msg_type:
        raise Hl7Error("message type missing", field="MSH-9", code=REQUIRED_FIELD_MISSING,
                       reject=True)
    if message.control_id is None:
        raise Hl7Error("message control id missing", field="MSH-10",
                       code=REQUIRED_FIELD_MISSING, reject=True)
    if msg_type != "ADT":
        return
    if not trigger:
        raise Hl7Error("trigger event missing", field="MSH-9.2", code=REQUIRED_FIELD_MISSING,
                       reject=True)
    pids = message.segments("PID")
    # The trigger is echoed only when it looks like one: a corrupt MSH-9 can hold anything.
    event = f"ADT^{trigger}" if _TRIGGER.match(trigger) else "this ADT event"
    if trigger not in ADT_EVENTS_WITHOUT_PID and not pids:
        raise Hl7Error(f"required segment missing for {event}", segment="PID",
                       code=SEGMENT_SEQUENCE_ERROR, reject=True)
    if trigger in ADT_MERGE_EVENTS:
        merges = message.segments("MRG")
        if not merges:
            raise Hl7Error(f"required segment missing for {event}", segment="MRG",
                           code=SEGMENT_SEQUENCE_ERROR, reject=True)
        for number, mrg in enumerate(merges, start=1):
            if mrg.get(1) is None:
                raise Hl7Error("prior patient identifier missing", field=_label("MRG", number, 1),
                               code=REQUIRED_FIELD_MISSING)
    for number, pid in enumerate(pids, start=1):
        if not pid.repetitions(3) or all(r.get(1) is None for r in pid.repetitions(3)):
            raise Hl7Error("patient identifier list missing", field=_label("PID", number, 3),
                           code=REQUIRED_FIELD_MISSING)
        for field in (7, 29):  # date of birth, date of death
            value = pid.get(field)
            if value is not None:
                _check_dtm(value, _label("PID", number, field))


def parse_hl7_date(value: str, *, field: str | None = None) -> date:
    """An HL7 DTM (YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]) with at least a day, as a date.

    Raises Hl7Error (naming `field`, never the value) when the text is not a DTM, the date is
    impossible (20230231), or it has no day.
    """
    year, month, day = _check_dtm(value, field)
    if month is None or day is None:
        raise Hl7Error("date has no day (YYYYMMDD needed)", field=field, code=DATA_TYPE_ERROR)
    return date(year, month, day)


def escape(text: str, encoding: Encoding | None = None) -> str:
    """Text made safe for one HL7 component: delimiters as \\F\\ \\S\\ \\T\\ \\R\\ \\E\\,
    control characters as \\Xhh\\."""
    enc = encoding or DEFAULT_ENCODING
    table = {enc.escape: "E", enc.field: "F", enc.component: "S", enc.subcomponent: "T",
             enc.repetition: "R"}
    table.pop("", None)
    esc = enc.escape or "\\"
    out: list[str] = []
    for ch in text:
        if ch in table:
            out.append(f"{esc}{table[ch]}{esc}")
        elif ch < " " or "\x7f" <= ch <= "\x9f":
            out.append(f"{esc}X{ord(ch):02X}{esc}")
        else:
            out.append(ch)
    return "".join(out)


def unescape(text: str, encoding: Encoding | None = None, charset: str = "iso8859-1") -> str:
    """Decode HL7 escape sequences; unknown or unterminated ones are kept as written.

    \\Xhh..\\ is decoded in `charset` (the message's codec); \\.br\\ becomes a line break;
    highlighting (\\H\\ \\N\\) and character-set switches (\\C..\\ \\M..\\) are dropped.
    """
    enc = encoding or DEFAULT_ENCODING
    esc = enc.escape
    if not esc or esc not in text:
        return text
    delimiters = {"F": enc.field, "S": enc.component, "T": enc.subcomponent,
                  "R": enc.repetition, "E": esc}
    out: list[str] = []
    i = 0
    while i < len(text):
        start = text.find(esc, i)
        if start == -1:
            out.append(text[i:])
            break
        out.append(text[i:start])
        end = text.find(esc, start + 1)
        if end == -1:
            out.append(text[start:])
            break
        sequence = text[start + 1:end]
        out.append(_unescape_one(sequence, delimiters, charset, text[start:end + 1]))
        i = end + 1
    return "".join(out)


# --- acknowledgements -------------------------------------------------------------------------


def build_ack(message: Hl7Message | None, raw: bytes, code: str, text: str = "",
              error_location: str | None = None, *, error_code: int | None = None) -> bytes:
    """An HL7 ACK (original mode) for a message: MSH, MSA and, unless accepted, ERR.

    Sender and receiver are swapped and the version and processing id echoed. When `message`
    is None (too broken to parse), whatever MSH the raw bytes still hold is used, else an
    empty control id, so the sender always gets a well-formed reply. `error_location` is a
    path like "PID-7"; `error_code` an HL7 table 0357 code (default 207).
    """
    if code not in _ACK_CODES:
        raise ValueError(f"not an HL7 acknowledgement code: {code!r}")
    header = message if message is not None else _recover_header(raw)
    enc = DEFAULT_ENCODING
    if header is not None:
        msh = header.segments("MSH")[0]
        codec = header.charset
        control = msh.get(10) or ""
        trigger = header.message_type[1]
        send_app, send_fac = msh.reencoded(5, enc), msh.reencoded(6, enc)
        recv_app, recv_fac = msh.reencoded(3, enc), msh.reencoded(4, enc)
        processing = msh.reencoded(11, enc) or "P"
        version = msh.reencoded(12, enc) or "2.4"
        version_id = msh.get(12) or "2.4"
        declared = msh.get(18) or ""
        same = declared == escape(declared, enc) and _codec_for(declared) == codec
        charset = declared if same else ""
    else:
        codec, control, trigger = "iso8859-1", _recover_control_id(raw) or "", ""
        send_app = send_fac = recv_app = recv_fac = charset = ""
        processing, version = "P", "2.4"
        version_id = version
    msh_fields = [send_app, send_fac, recv_app, recv_fac,
                  datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000"), "",
                  f"ACK^{escape(trigger, enc)}^ACK" if trigger else "ACK",
                  uuid.uuid4().hex[:20].upper(), processing, version]
    if charset:
        msh_fields += ["", "", "", "", "", charset]
    note = " ".join(text.split())[:_ACK_TEXT_MAX]
    segments = ["MSH|^~\\&|" + "|".join(msh_fields),
                "|".join(["MSA", code, escape(control, enc), escape(note, enc)])]
    if code not in ("AA", "CA"):
        segments.append(_err_segment(error_code or APPLICATION_INTERNAL_ERROR, note,
                                     error_location, version_id))
    return ("\r".join(segments) + "\r").encode(codec, errors="replace")


# --- the parsed message -----------------------------------------------------------------------


class Hl7Error(Exception):
    """Why a message was not accepted; safe to log and to send back, as it holds no values.

    `reject` marks structural problems (answered AR) as against content errors (AE);
    `code` is the HL7 table 0357 error code for the ACK's ERR segment.
    """

    def __init__(self, reason: str, *, field: str | None = None, segment: str | None = None,
                 code: int = APPLICATION_INTERNAL_ERROR, reject: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.segment = segment if segment is not None or field is None else field[:3]
        self.code = code
        self.reject = reject

    @property
    def ack_code(self) -> str:
        return "AR" if self.reject else "AE"

    @property
    def location(self) -> str | None:
        """The field (or segment) to name in an ERR segment."""
        return self.field or self.segment

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}" if self.location else self.reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only attributes survive pickling (prepare() runs in a process pool).
        return (self.__class__, (self.reason,), dict(self.__dict__))


class Repetition:
    """One repetition of a field (e.g. one identifier of PID-3), its components readable."""

    __slots__ = ("_charset", "_encoding", "_raw")

    def __init__(self, raw: str, encoding: Encoding, charset: str) -> None:
        self._raw = raw
        self._encoding = encoding
        self._charset = charset

    def get(self, component: int = 1, subcomponent: int = 1) -> str | None:
        """A component (1-based), escapes decoded; None when empty or the HL7 null ""."""
        _check_index(component, subcomponent)
        enc = self._encoding
        text = _nth(_nth(self._raw, enc.component, component), enc.subcomponent, subcomponent)
        return _value(text, enc, self._charset)

    def is_null(self, component: int = 1, subcomponent: int = 1) -> bool:
        """True for the HL7 explicit null "" (which asks the receiver to delete the value)."""
        enc = self._encoding
        return _nth(_nth(self._raw, enc.component, component), enc.subcomponent,
                    subcomponent) == '""'

    def __repr__(self) -> str:  # never the value
        return "<Repetition>"


class Segment:
    """One segment; fields are numbered as in the standard (MSH-1 is the field separator)."""

    __slots__ = ("_charset", "_encoding", "_fields", "line", "name")

    def __init__(self, fields: list[str], encoding: Encoding, charset: str, line: int) -> None:
        self.name = fields[0]
        self.line = line  # line within the message, 1-based
        self._fields = fields
        self._encoding = encoding
        self._charset = charset

    @property
    def field_count(self) -> int:
        return len(self._fields) - 1

    def get(self, field: int, component: int = 1, subcomponent: int = 1, *,
            repetition: int = 1) -> str | None:
        """One value, escapes decoded; None when absent, empty or the HL7 null ""."""
        _check_index(field, component, subcomponent, repetition)
        return self._value_at(field, repetition, component, subcomponent)

    def _value_at(self, field: int, repetition: int, component: int, subcomponent: int
                  ) -> str | None:
        """`get` of positions already checked: a mapping reads a few dozen per message."""
        if field >= len(self._fields):
            return None
        raw = self._fields[field]
        if not raw:
            return None
        if self.name == "MSH" and field <= 2:  # the delimiters themselves, taken literally
            first = (repetition, component, subcomponent) == (1, 1, 1)
            return raw if first else None
        enc = self._encoding
        text = _nth(_nth(_nth(raw, enc.repetition, repetition), enc.component, component),
                    enc.subcomponent, subcomponent)
        return _value(text, enc, self._charset)

    def repetitions(self, field: int) -> list[Repetition]:
        """Every repetition of a field, empty ones included so indexes match `[n]` paths."""
        _check_index(field)
        if field >= len(self._fields) or not self._fields[field]:
            return []
        if self.name == "MSH" and field <= 2:
            return []
        raw = self._fields[field]
        parts = raw.split(self._encoding.repetition) if self._encoding.repetition else [raw]
        return [Repetition(part, self._encoding, self._charset) for part in parts]

    def is_null(self, field: int, component: int = 1, subcomponent: int = 1, *,
                repetition: int = 1) -> bool:
        _check_index(field, component, subcomponent, repetition)
        if field >= len(self._fields) or (self.name == "MSH" and field <= 2):
            return False
        return self._repetition(self._fields[field], repetition).is_null(component, subcomponent)

    def reencoded(self, field: int, encoding: Encoding) -> str:
        """A field's first repetition re-escaped for other delimiters (to echo it in an ACK)."""
        _check_index(field)
        if field >= len(self._fields) or (self.name == "MSH" and field <= 2):
            return ""
        source = self._encoding
        first = _nth(self._fields[field], source.repetition, 1)
        return encoding.component.join(
            encoding.subcomponent.join(escape(unescape(sub, source, self._charset), encoding)
                                       for sub in _split(component, source.subcomponent))
            for component in _split(first, source.component)
        ).rstrip(encoding.component + encoding.subcomponent)

    def _repetition(self, raw: str, number: int) -> Repetition:
        return Repetition(_nth(raw, self._encoding.repetition, number), self._encoding,
                          self._charset)

    def __repr__(self) -> str:
        return f"<Segment {self.name} fields={self.field_count}>"


class Hl7Message:
    """A parsed message read by terser-style paths: `PID-5.1`, `PID-3[2].1`, `NK1[2]-2.1`.

    A path is SEG[occurrence]-field[repetition].component.subcomponent, all 1-based; a path
    without a component reads component 1 (as HAPI's Terser does), so `MSH-9` is "ADT".
    """

    __slots__ = ("_by_name", "_segments", "charset", "encoding")

    def __init__(self, segments: list[Segment], encoding: Encoding, charset: str) -> None:
        self._segments = segments
        self.encoding = encoding
        self.charset = charset  # the Python codec the message was decoded with
        self._by_name: dict[str, list[Segment]] = {}
        for segment in segments:
            self._by_name.setdefault(segment.name, []).append(segment)

    def get(self, path: str) -> str | None:
        """The value at a path, escapes decoded; None when absent or empty."""
        name, occurrence, field, repetition, component, sub = _parse_path(path)  # checked
        segment = self._segment(name, occurrence)
        if segment is None:
            return None
        return segment._value_at(field, repetition, component, sub)

    def repetitions(self, path: str) -> list[Repetition]:
        """The repetitions of a field path such as `PID-3` (no component part)."""
        match = _FIELD_PATH.match(path)
        if match is None:
            raise ValueError(f"not an HL7 field path (like PID-3): {path!r}")
        segment = self._segment(match[1], int(match[2] or 1))
        return segment.repetitions(int(match[3])) if segment is not None else []

    def is_null(self, path: str) -> bool:
        """True when the value at `path` is the HL7 explicit null "" (delete the value)."""
        name, occurrence, field, repetition, component, sub = _parse_path(path)
        segment = self._segment(name, occurrence)
        return segment is not None and segment.is_null(field, component, sub,
                                                       repetition=repetition)

    def segments(self, name: str | None = None) -> list[Segment]:
        """Segments with this name in message order (all segments when name is None)."""
        if name is None:
            return list(self._segments)
        return list(self._by_name.get(name, ()))

    @property
    def message_type(self) -> tuple[str, str]:
        """(type, trigger) from MSH-9, e.g. ("ADT", "A01"); the trigger falls back to EVN-1
        as in v2.2 and earlier. Missing parts are ""."""
        msg_type = (self.get("MSH-9.1") or "").strip()
        trigger = (self.get("MSH-9.2") or self.get("EVN-1") or "").strip()
        return msg_type, trigger

    @property
    def control_id(self) -> str | None:
        return self.get("MSH-10")

    @property
    def version(self) -> str | None:
        return self.get("MSH-12.1")

    @property
    def sending_application(self) -> str | None:
        return self.get("MSH-3.1") or self.get("MSH-3.2")

    @property
    def sending_facility(self) -> str | None:
        """MSH-4 namespace id (in the NHS, the trust's ODS code), else its universal id."""
        return self.get("MSH-4.1") or self.get("MSH-4.2")

    def _segment(self, name: str, occurrence: int) -> Segment | None:
        found = self._by_name.get(name, ())
        return found[occurrence - 1] if occurrence <= len(found) else None

    def __repr__(self) -> str:  # type and control id only: no patient data
        msg_type, trigger = self.message_type
        return (f"<Hl7Message {msg_type}^{trigger} control_id={self.control_id!r} "
                f"segments={len(self._segments)}>")


# --- internals --------------------------------------------------------------------------------


def _append_chunk(result: list[tuple[int, bytes]], chunk: bytes, line: int) -> None:
    skipped = _BLANK_LINES.match(chunk)
    if skipped is not None and skipped.end():
        line += len(_BYTE_BREAK.findall(chunk, 0, skipped.end()))
        chunk = chunk[skipped.end():]
    if not chunk.strip():
        return
    body = len(chunk.rstrip(b"\r\n"))
    tail = _BYTE_BREAK.match(chunk, body)  # keep the last segment's own terminator
    result.append((line, chunk[:tail.end()] if tail else chunk[:body]))


def _is_delimiter(ch: str) -> bool:
    return ch.isascii() and ch.isprintable() and not ch.isalnum() and not ch.isspace()


def _message_codec(raw: bytes, default_charset: str) -> str:
    """The codec named by MSH-18 (first repetition), read from the bytes before decoding."""
    first = _BYTE_BREAK.split(raw, maxsplit=1)[0]
    parts = first.split(raw[3:4])
    declared = b""
    if len(parts) > 17:
        repetition = parts[1][1:2]
        declared = parts[17].split(repetition)[0] if repetition else parts[17]
    if not declared.strip():
        codec = _codec_for(default_charset)
        if codec is None:
            raise ValueError(f"unsupported default character set {default_charset!r}")
        return codec
    try:
        codec = _codec_for(declared.decode("ascii"))
    except UnicodeDecodeError:
        codec = None
    if codec is None:
        raise Hl7Error("character set not supported (use ASCII, 8859/n or UNICODE UTF-8)",
                       field="MSH-18", code=TABLE_VALUE_NOT_FOUND, reject=True)
    return codec


@lru_cache(maxsize=64)
def _codec_for(name: str) -> str | None:
    """Python codec for an MSH-18 value or codec name; None unless ASCII-compatible."""
    if not (name.isascii() and name.isprintable()):
        return None
    key = " ".join(name.upper().split())
    if key in _CHARSETS:
        return _CHARSETS[key]
    try:
        codec = codecs.lookup(key).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return None
    probe = "".join(map(chr, range(0x20, 0x7F))) + "\t\r\n"
    try:
        compatible = probe.encode(codec) == probe.encode("ascii")
    except (UnicodeError, LookupError):
        compatible = False
    return codec if compatible else None


def _decode(raw: bytes, codec: str) -> str:
    sep = chr(raw[3])
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        segment, field = _locate(raw[:exc.start].decode("iso8859-1"), sep)
        raise Hl7Error(f"byte {exc.start} (0x{raw[exc.start]:02X}) is not valid "
                       f"{_codec_label(codec)}", field=field, segment=segment,
                       code=DATA_TYPE_ERROR, reject=True) from None
    control = _CONTROL.search(text)
    if control is not None:
        segment, field = _locate(text[:control.start()], sep)
        raise Hl7Error(f"control character U+{ord(control[0]):04X} at character "
                       f"{control.start()} is not text in {_codec_label(codec)}",
                       field=field, segment=segment, code=DATA_TYPE_ERROR, reject=True)
    return text


def _codec_label(codec: str) -> str:
    return {"iso8859-1": "ISO 8859-1", "ascii": "ASCII", "utf-8": "UTF-8"}.get(codec, codec)


def _locate(prefix: str, sep: str) -> tuple[str | None, str | None]:
    """(segment, field) in which the text following `prefix` lies, for error messages."""
    lines = _LINE_BREAK.split(prefix)
    current = lines[-1]
    name = current[:3]
    if not _SEGMENT_ID.match(name) or (len(current) > 3 and current[3] != sep):
        return None, None
    number = current.count(sep) + (1 if name == "MSH" else 0)
    return name, f"{name}-{number}" if number else None


def _parse_text(text: str, charset: str) -> Hl7Message:
    lines = _LINE_BREAK.split(text)
    first = lines[0]
    sep = first[3]
    msh = first[4:].split(sep)
    encoding = _encoding_from(sep, msh[0])
    segments = [Segment(["MSH", sep, *msh], encoding, charset, 1)]
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name = line[:3]
        if not _SEGMENT_ID.match(name) or (len(line) > 3 and line[3] != sep):
            raise Hl7Error(f"line {number} is not a segment (bad segment id, or a line break "
                           "inside a field)", code=SEGMENT_SEQUENCE_ERROR, reject=True)
        if name == "MSH":
            raise Hl7Error(f"line {number} starts a second message (split files first)",
                           segment="MSH", code=SEGMENT_SEQUENCE_ERROR, reject=True)
        segments.append(Segment(line.split(sep), encoding, charset, number))
    return Hl7Message(segments, encoding, charset)


def _encoding_from(sep: str, chars: str) -> Encoding:
    """Delimiters from MSH-2: 4 characters, a 5th (v2.7 truncation) ignored, and a short
    MSH-2 tolerated by leaving the missing delimiters unused."""
    if (not 1 <= len(chars) <= 5 or not all(_is_delimiter(c) for c in chars)
            or len(set(chars + sep)) != len(chars) + 1):
        raise Hl7Error("encoding characters missing or invalid", field="MSH-2",
                       code=REQUIRED_FIELD_MISSING, reject=True)
    component, repetition, escape_char, subcomponent = [*chars[:4], "", "", ""][:4]
    return Encoding(sep, component, repetition, escape_char, subcomponent)


def _nth(text: str, delimiter: str, number: int) -> str:
    if not delimiter:
        return text if number == 1 else ""
    if number == 1:  # most reads: no list of parts
        end = text.find(delimiter)
        return text if end < 0 else text[:end]
    parts = text.split(delimiter, number)
    return parts[number - 1] if len(parts) >= number else ""


def _value(text: str, encoding: Encoding, charset: str) -> str | None:
    if not text or text == '""':
        return None
    value = unescape(text, encoding, charset)
    return value if value.strip() else None


def _unescape_one(sequence: str, delimiters: dict[str, str], charset: str, written: str) -> str:
    if len(sequence) == 1 and sequence in delimiters:
        return delimiters[sequence] or written
    if sequence in _FORMATTING:
        return _FORMATTING[sequence]
    if sequence[:1] == "X" and len(sequence) > 1:
        try:
            return bytes.fromhex(sequence[1:]).decode(charset, errors="replace")
        except ValueError:
            return written
    if sequence[:3] == ".sp":
        return "\n"
    if sequence[:1] in ("C", "M") or sequence[:3] in (".in", ".ti", ".sk", ".fi", ".nf", ".ce"):
        return ""
    return written  # unknown (including site-defined \Z..\): keep as written


def _check_index(*numbers: int) -> None:
    if min(numbers) < 1:  # not any() over a generator: this runs for every value read
        raise ValueError("HL7 field, repetition and component numbers start at 1")


@lru_cache(maxsize=1024)
def _parse_path(path: str) -> tuple[str, int, int, int, int, int]:
    match = _PATH.match(path)
    if match is None:
        raise ValueError(f"not an HL7 path (like PID-3[2].1): {path!r}")
    name = match[1]
    numbers = tuple(int(match[i] or 1) for i in range(2, 7))
    occurrence, field, repetition, component, sub = numbers
    _check_index(*numbers)
    return name, occurrence, field, repetition, component, sub


def _label(name: str, occurrence: int, field: int) -> str:
    return f"{name}-{field}" if occurrence == 1 else f"{name}[{occurrence}]-{field}"


def _check_dtm(value: str, field: str | None) -> tuple[int, int | None, int | None]:
    """Validate an HL7 DTM of any precision; (year, month, day) with None past the precision."""
    match = _DTM.match(value.strip())
    if match is None:
        raise Hl7Error("not an HL7 date/time (YYYY[MM[DD[HHMM[SS]]]][+/-ZZZZ])", field=field,
                       code=DATA_TYPE_ERROR)
    year, month, day, hour, minute, second, off_h, off_m = match.groups()
    try:
        date(int(year), int(month or 1), int(day or 1))
    except ValueError:
        raise Hl7Error("impossible date", field=field, code=DATA_TYPE_ERROR) from None
    limits = ((hour, 23), (minute, 59), (second, 59), (off_h, 14), (off_m, 59))
    if any(part is not None and int(part) > limit for part, limit in limits):
        raise Hl7Error("impossible time or time zone offset", field=field,
                       code=DATA_TYPE_ERROR)
    return int(year), int(month) if month else None, int(day) if day else None


def _split(text: str, delimiter: str) -> list[str]:
    return text.split(delimiter) if delimiter else [text]


def _recover_header(raw: bytes) -> Hl7Message | None:
    """The MSH segment alone, read leniently (bad bytes replaced, nothing validated)."""
    data = raw[len(_BOM):] if raw.startswith(_BOM) else raw
    first = _BYTE_BREAK.split(data.lstrip(b" \t\r\n"), maxsplit=1)[0]
    if not first.startswith(b"MSH") or len(first) < 4 or not _is_delimiter(chr(first[3])):
        return None
    try:
        codec = _message_codec(first, "8859/1")
    except Hl7Error:
        codec = "iso8859-1"
    try:
        return _parse_text(first.decode(codec, errors="replace"), codec)
    except Hl7Error:
        return None


def _recover_control_id(raw: bytes) -> str | None:
    """MSH-10 by plain splitting, for an MSH whose encoding characters are unusable."""
    data = raw.lstrip(b" \t\r\n")
    if not data.startswith(b"MSH") or len(data) < 4:
        return None
    parts = _BYTE_BREAK.split(data, maxsplit=1)[0].split(data[3:4])
    if len(parts) < 10:
        return None
    value = parts[9].decode("iso8859-1").strip()
    return value if value and value.isprintable() else None


def _err_segment(code: int, text: str, location: str | None, version: str) -> str:
    """ERR-1 (v2.4 ELD: segment^sequence^field^code&text&table); from v2.5 also ERR-2..4."""
    error = f"{code}&{escape(ERROR_TEXTS.get(code, 'Error'))}&HL70357"
    where = _LOCATION.match(location or "")
    parts = [where[i] or ("1" if i == 2 else "") for i in range(1, 7)] if where else []
    eld = "^".join([*parts[:3], error]) if parts else f"^^^{error}"
    fields = ["ERR", eld]
    if _version_tuple(version) >= (2, 5):
        fields += ["^".join(parts), f"{code}^{escape(text or ERROR_TEXTS.get(code, ''))}^HL70357",
                   "E"]
    return "|".join(fields)


def _version_tuple(version: str) -> tuple[int, ...]:
    numbers: list[int] = []
    for part in version.split("."):
        if not (part.isascii() and part.isdigit()):
            break
        numbers.append(int(part))
    return tuple(numbers) or (2, 4)
