"""Property tests for the feed adapters: whatever bytes arrive, prepare() answers.

Random bytes and realistic corruptions of the sample feeds (flipped bytes, truncation, lost or
doubled delimiters, swapped segments and cells, Latin-1 bytes in UTF-8, BOMs, NULs) go through
the CSV, HL7 v2 and FHIR Bundle adapters and the real mappings. Every message must come back
as a Prepared that either has a reason or has only valid FHIR resources, nothing but the
documented exceptions may escape the splitting functions, and no reason or warning may quote
a personal value (name, NHS number, date of birth, address, phone) of the message.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unified_record.fhir.validation import validate_resource
from unified_record.ingest.csv_adapter import iter_csv_messages
from unified_record.ingest.hl7v2 import (
    Hl7Error,
    escape,
    parse_message,
    read_mllp_stream,
    split_messages,
)
from unified_record.ingest.mapping import FeedMapping, MappingFileError, load_mapping
from unified_record.ingest.mllp import MllpError
from unified_record.ingest.prepare import Prepared, prepare

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "synthetic_data" / "sample"
MAPPINGS = REPO / "mappings"

CSV_FEEDS = {  # feed: (sample file, columns holding personal values)
    "council_adult_social_care": (
        "asc_events.csv",
        ["NHS Number", "First Name", "Middle Names", "Surname", "Date of Birth",
         "Address Line 1", "Postcode", "Telephone", "Email"]),
    "council_childrens_social_care": (
        "csc_children.csv",
        ["NHS Number", "Forename", "Surname", "Date of Birth", "Address", "Postcode"]),
    "community_health": (
        "referrals.csv",
        ["NHS No", "Patient Name", "DOB", "Address", "Post Code", "Telephone"]),
}
HL7_PERSONAL = ["PID-3[5=NH].1", "PID-3[5=MR].1", "PID-5.1", "PID-5.2", "PID-7", "PID-11.1",
                "PID-11.5", "PID-13.1"]

MAPPING: dict[str, FeedMapping] = {
    feed: load_mapping(MAPPINGS / f"{feed}.yaml")
    for feed in [*CSV_FEEDS, "acute_adt", "gp_fhir"]
}
MAPPING_TEXT = {feed: (MAPPINGS / f"{feed}.yaml").read_text(encoding="utf-8")
                for feed in MAPPING}

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


# --- what every outcome must satisfy ----------------------------------------------------------


def personal_values(values: Iterable[str | None], feed: str) -> list[str]:
    """Values worth looking for in reasons: long enough not to occur by chance, and not words
    the mapping itself uses (a surname 'Service' would be no leak in 'Service Type')."""
    found = set()
    for value in values:
        text = (value or "").strip()
        for part in {text, *re.split(r"[,^]", text)}:
            part = part.strip()
            if len(part) >= 4 and part not in MAPPING_TEXT[feed]:
                found.add(part)
    return sorted(found)


def check(prepared: Prepared, secrets: Iterable[str] = ()) -> None:
    assert isinstance(prepared, Prepared)
    if prepared.error is not None:
        assert isinstance(prepared.error, str) and prepared.error.strip()
        assert not prepared.resources
    else:
        assert isinstance(prepared.source_org, str) and prepared.source_org
        for item in prepared.resources:
            validate_resource(item.resource)
            assert item.resource["id"] and item.source_record_id
    for text in [prepared.error or "", *prepared.warnings]:
        for secret in secrets:
            assert secret not in text, f"personal value {secret!r} in reason {text!r}"


# --- mutations ----------------------------------------------------------------------------------

DELIMITERS = b'|^~\\&,"\r\n'
JUNK = [
    b"\x00", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xe9", b"\xa3", b"\xc3", b"\xff",
    b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\x0b", b"\x1c", b"\x1c\r", b"\x7f",
    b"\xc2\x85", "\u2028".encode(), b"\r", b"\n", b"\r\n", b'"', b'""', b"\\", b"|", b"^",
    b"~", b"&", b",", b"\t", b" ", b"{", b"}", b"[", b"]", b":", b"\\F\\", b"\\X0D\\",
]
LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


def _lines(data: bytes) -> list[bytes]:
    return LINE.findall(data)


@st.composite
def mutated(draw: st.DrawFn, raw: bytes, max_steps: int = 3) -> bytes:
    """`raw` with one to `max_steps` realistic corruptions."""
    data = bytes(raw)
    for _ in range(draw(st.integers(1, max_steps))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "truncate", "drop_delim",
                                   "double_delim", "swap_lines", "double_line", "drop_line",
                                   "line_ends", "bom", "latin1"]))
        size = len(data)
        at = draw(st.integers(0, max(size - 1, 0)))
        if op == "flip" and size:
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
        elif op == "insert":
            junk = draw(st.sampled_from(JUNK) | st.binary(min_size=1, max_size=6))
            data = data[:at] + junk + data[at:]
        elif op == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 12)):]
        elif op == "cut":  # a long span gone: fields run into one another
            data = data[:at] + data[draw(st.integers(at, size)):]
        elif op == "truncate":
            data = data[:at]
        elif op in ("drop_delim", "double_delim"):
            places = [i for i, b in enumerate(data) if b in DELIMITERS]
            if places:
                i = draw(st.sampled_from(places))
                kept = data[i:i + 1] * 2 if op == "double_delim" else b""
                data = data[:i] + kept + data[i + 1:]
        elif op in ("swap_lines", "double_line", "drop_line"):
            lines = _lines(data)
            if lines:
                i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
                if op == "swap_lines":
                    lines[i], lines[j] = lines[j], lines[i]
                elif op == "double_line":
                    lines.insert(j, lines[i])
                else:
                    del lines[i]
                data = b"".join(lines)
        elif op == "line_ends":
            ending = draw(st.sampled_from([b"\r", b"\n", b"\r\n", b"\n\r", b""]))
            data = re.sub(rb"\r\n|\r|\n", ending, data)
        elif op == "bom":
            bom = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]))
            data = bom + data if draw(st.booleans()) else data[:at] + bom + data[at:]
        elif op == "latin1":  # one accented letter as ISO 8859-1, in a UTF-8 message
            letter = draw(st.sampled_from("éèüöñçÅØß£"))
            data = data[:at] + letter.encode("latin-1") + data[at:]
    return data


# --- CSV ----------------------------------------------------------------------------------------


def _csv_sample(feed: str, rows: int = 25) -> tuple[bytes, list[bytes]]:
    """The header line and the first rows of a feed's sample file, as raw bytes."""
    path = SAMPLE / feed / CSV_FEEDS[feed][0]
    messages = list(iter_csv_messages(path))[:rows]
    header = path.read_bytes().split(b"\n", 1)[0] + b"\n"
    return header, [m.raw[len(header):] for m in messages]


CSV_SAMPLES = {feed: _csv_sample(feed) for feed in CSV_FEEDS}


def _csv_record(raw: bytes) -> dict[str, str]:
    header, row = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    return dict(zip(header, row, strict=True))


def csv_secrets(feed: str, rows: Iterable[bytes]) -> list[str]:
    header = CSV_SAMPLES[feed][0]
    values: list[str] = []
    for row in rows:
        record = _csv_record(header + row)
        values.extend(record[c] for c in CSV_FEEDS[feed][1])
    return personal_values(values, feed)


def prepare_csv_file(path: Path, data: bytes, feeds: Iterable[str],
                     secrets: Iterable[str] = ()) -> list[Prepared]:
    """Write `data` as a file, split it, and prepare every message with every feed given."""
    path.write_bytes(data)
    messages = list(iter_csv_messages(path))
    _check_split(data, messages)
    secrets = list(secrets)
    results = []
    for message in messages:
        for feed in feeds:
            prepared = prepare(MAPPING[feed], message.raw)
            check(prepared, secrets)
            results.append(prepared)
    return results


def _check_split(data: bytes, messages: list[Any]) -> None:
    """Messages start with the header, in line order, and together hold every row byte."""
    header, _, body = data.partition(b"\n")
    header += b"\n"
    lines = [m.line for m in messages]
    assert lines == sorted(set(lines)) and all(n >= 2 for n in lines)
    assert all(m.raw.startswith(header) for m in messages)
    kept = b"".join(m.raw[len(header):] for m in messages)
    assert re.sub(rb"\s", b"", kept) == re.sub(rb"\s", b"", body)


def test_sample_rows_are_accepted() -> None:
    """The harness is sound: unmodified sample messages all map to valid resources."""
    for feed, (header, rows) in CSV_SAMPLES.items():
        for row in rows:
            prepared = prepare(MAPPING[feed], header + row)
            assert prepared.error is None, (feed, prepared.error)
            check(prepared)
    for raw in HL7_SAMPLES:
        assert prepare(MAPPING["acute_adt"], raw).error is None
    for raw in FHIR_SAMPLES:
        assert prepare(MAPPING["gp_fhir"], raw).error is None


@FAST
@given(st.binary(max_size=400))
def test_csv_random_bytes(tmp_path: Path, data: bytes) -> None:
    prepare_csv_file(tmp_path / "feed.csv", data, CSV_FEEDS)


@FAST
@given(st.sampled_from(sorted(CSV_FEEDS)), st.data())
def test_csv_mutated_rows(tmp_path: Path, feed: str, data: st.DataObject) -> None:
    header, rows = CSV_SAMPLES[feed]
    start = data.draw(st.integers(0, len(rows) - 3))
    chosen = rows[start:start + 3]
    original = header + b"".join(chosen)
    corrupted = data.draw(mutated(original))
    prepare_csv_file(tmp_path / "feed.csv", corrupted, [feed], csv_secrets(feed, chosen))


@FAST
@given(st.sampled_from(sorted(CSV_FEEDS)), st.data())
def test_csv_misaligned_cells(tmp_path: Path, feed: str, data: st.DataObject) -> None:
    """A system that exports cells in the wrong place: values land in date, code and
    NHS-number columns, or a row loses or gains a cell."""
    header, rows = CSV_SAMPLES[feed]
    row = data.draw(st.sampled_from(rows))
    record = _csv_record(header + row)
    names = list(record)
    cells = list(record.values())
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["swap", "copy", "shift", "drop", "add", "quote"]))
        i, j = (data.draw(st.integers(0, len(cells) - 1)) for _ in range(2))
        if op == "swap":
            cells[i], cells[j] = cells[j], cells[i]
        elif op == "copy":
            cells[j] = cells[i]
        elif op == "shift":
            cells.insert(i, cells.pop(j))
        elif op == "drop":
            del cells[i]
        elif op == "add":
            cells.insert(i, data.draw(st.sampled_from(cells)))
        else:  # quotes and delimiters inside a value, written out correctly
            glue = data.draw(st.sampled_from(['"', '""', ",", "\n", "\r\n", " ", ""]))
            cells[i] = glue.join([cells[i], cells[j]])
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(names)
    writer.writerow(cells)
    secrets = personal_values([record[c] for c in CSV_FEEDS[feed][1]], feed)
    prepare_csv_file(tmp_path / "feed.csv", out.getvalue().encode("utf-8"), [feed], secrets)


def test_csv_latin1_row_rejects_only_that_row(tmp_path: Path) -> None:
    feed = "council_adult_social_care"
    header, rows = CSV_SAMPLES[feed]
    surname = _csv_record(header + rows[1])["Surname"]
    bad = rows[1].replace(f",{surname},".encode(), f",{surname}é,".encode("latin-1"))
    assert bad != rows[1]
    results = prepare_csv_file(tmp_path / "feed.csv", header + rows[0] + bad + rows[2],
                               [feed], csv_secrets(feed, rows[:3]))
    assert [r.error is None for r in results] == [True, False, True]
    assert results[1].error is not None and "not valid utf-8" in results[1].error


@pytest.mark.parametrize("feed", sorted(CSV_FEEDS))
def test_csv_personal_value_in_every_column(tmp_path: Path, feed: str) -> None:
    """Each column in turn holds another column's personal value (or junk around it)."""
    header, rows = CSV_SAMPLES[feed]
    record = _csv_record(header + rows[0])
    secrets = personal_values([record[c] for c in CSV_FEEDS[feed][1]], feed)
    for column in record:
        for secret in secrets:
            for value in (secret, f"{secret}\x00", f" {secret}?", f"{secret}\ufffd"):
                out = io.StringIO(newline="")
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow(record)
                writer.writerow({**record, column: value}.values())
                for prepared in prepare_csv_file(tmp_path / "feed.csv",
                                                 out.getvalue().encode(), [feed], secrets):
                    check(prepared, secrets)


# --- HL7 v2 -------------------------------------------------------------------------------------


def _hl7_samples(limit: int = 30) -> list[bytes]:
    files = sorted((SAMPLE / "acute_adt").glob("*.hl7"))[:limit]
    return [raw for file in files for _, raw in split_messages(file.read_bytes())]


HL7_SAMPLES = _hl7_samples()
MLLP_SAMPLE = (SAMPLE / "acute_adt.mllp").read_bytes()


def hl7_secrets(raw: bytes) -> list[str]:
    record = parse_message(raw)
    values = [record.get(p) for p in HL7_PERSONAL if "[" not in p]
    for repetition in record.repetitions("PID-3"):
        values.append(repetition.get(1))
    return personal_values(values, "acute_adt")


@FAST
@given(st.binary(max_size=400))
def test_hl7_random_bytes(data: bytes) -> None:
    check(prepare(MAPPING["acute_adt"], data))
    for line, raw in split_messages(data):
        assert line >= 1 and raw.strip()
        check(prepare(MAPPING["acute_adt"], raw))
    try:
        frames = read_mllp_stream(data)
    except MllpError:
        frames = []
    for frame in frames:
        check(prepare(MAPPING["acute_adt"], frame))


@FAST
@given(st.binary(max_size=300).map(lambda b: b"MSH|^~\\&|" + b))
def test_hl7_random_bytes_after_an_msh(data: bytes) -> None:
    check(prepare(MAPPING["acute_adt"], data))
    try:
        parse_message(data)
    except Hl7Error as exc:
        assert str(exc).strip()


@FAST
@given(st.sampled_from(HL7_SAMPLES), st.data())
def test_hl7_mutated_messages(raw: bytes, data: st.DataObject) -> None:
    corrupted = data.draw(mutated(raw))
    secrets = hl7_secrets(raw)
    check(prepare(MAPPING["acute_adt"], corrupted), secrets)
    for _, message in split_messages(corrupted):
        check(prepare(MAPPING["acute_adt"], message), secrets)
    try:
        parse_message(corrupted)
    except Hl7Error as exc:
        assert all(secret not in str(exc) for secret in secrets)


@FAST
@given(st.data())
def test_mllp_mutated_stream(data: st.DataObject) -> None:
    frames = MLLP_SAMPLE.split(b"\x1c\r")
    start = data.draw(st.integers(0, len(frames) - 4))
    stream = b"\x1c\r".join(frames[start:start + 3]) + b"\x1c\r"
    secrets = [s for frame in frames[start:start + 3]
               for s in hl7_secrets(frame.lstrip(b" \r\n").removeprefix(b"\x0b"))]
    try:
        messages = read_mllp_stream(data.draw(mutated(stream)))
    except MllpError as exc:
        assert all(secret not in str(exc) for secret in secrets)
        return
    for message in messages:
        check(prepare(MAPPING["acute_adt"], message), secrets)


def _segments(raw: bytes) -> list[list[str]]:
    return [line.split("|") for line in raw.decode("latin-1").rstrip("\r\n").split("\r")]


def _message(segments: list[list[str]]) -> bytes:
    return ("\r".join("|".join(s) for s in segments) + "\r").encode("latin-1")


@FAST
@given(st.sampled_from(HL7_SAMPLES), st.data())
def test_hl7_misplaced_fields(raw: bytes, data: st.DataObject) -> None:
    """A sender puts fields in the wrong place: personal values end up in MSH-9, dates,
    code fields and identifiers, and segments go missing or repeat."""
    secrets = hl7_secrets(raw)
    segments = _segments(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["move", "swap", "drop_segment", "double_segment"]))
        if op in ("move", "swap"):
            s1, s2 = (data.draw(st.integers(0, len(segments) - 1)) for _ in range(2))
            f1 = data.draw(st.integers(1, max(len(segments[s1]) - 1, 1)))
            f2 = data.draw(st.integers(1, max(len(segments[s2]) - 1, 1)))
            if (0, 1) in ((s1, f1), (s2, f2)):
                continue  # MSH-2, the encoding characters, is covered by byte mutations
            segments[s1] += [""] * (f1 + 1 - len(segments[s1]))
            segments[s2] += [""] * (f2 + 1 - len(segments[s2]))
            if op == "swap":
                segments[s1][f1], segments[s2][f2] = segments[s2][f2], segments[s1][f1]
            else:
                segments[s2][f2] = segments[s1][f1]
        elif len(segments) > 1:
            i = data.draw(st.integers(1, len(segments) - 1))
            if op == "drop_segment":
                del segments[i]
            else:
                segments.insert(i, segments[i])
    check(prepare(MAPPING["acute_adt"], _message(segments)), secrets)


def test_hl7_personal_value_in_every_field() -> None:
    """Each field and component of each segment in turn holds the patient's surname, NHS
    number or date of birth: whatever is rejected, the reason does not quote it."""
    raw = HL7_SAMPLES[0]
    secrets = hl7_secrets(raw)
    segments = _segments(raw)
    for s, segment in enumerate(segments):
        for f in range(2 if s == 0 else 1, max(len(segment), 46)):
            for secret in secrets:
                for value in (escape(secret), f"{escape(secret)}^{escape(secret)}"):
                    changed = [list(seg) for seg in segments]
                    changed[s] += [""] * (f + 1 - len(changed[s]))
                    changed[s][f] = value
                    check(prepare(MAPPING["acute_adt"], _message(changed)), secrets)


def test_hl7_trigger_is_not_quoted_when_it_holds_data() -> None:
    raw = HL7_SAMPLES[0]
    surname = parse_message(raw).get("PID-5.1")
    assert surname
    segments = [s for s in _segments(raw) if s[0] != "PID"]
    segments[0][8] = f"ADT^{surname}^ADT_A01"
    prepared = prepare(MAPPING["acute_adt"], _message(segments))
    assert prepared.error == "PID: required segment missing for this ADT event"
    segments[0][8] = "ADT^A01^ADT_A01"
    assert prepare(MAPPING["acute_adt"], _message(segments)).error == (
        "PID: required segment missing for ADT^A01")


@pytest.mark.parametrize(("value", "reason"), [
    ("20230105101804+9999", "impossible time zone offset"),
    ("20230105101804-2400", "impossible time zone offset"),
    ("202313", "impossible date/time"),
    ("٢٠٢٣٠١٠٥", "not an HL7 date/time"),
])
def test_hl7_bad_visit_times_are_reasons_not_crashes(value: str, reason: str) -> None:
    raw = HL7_SAMPLES[0].decode("latin-1")
    segments = [s.split("|") for s in raw.rstrip("\r").split("\r")]
    pv1 = next(s for s in segments if s[0] == "PV1")
    pv1 += [""] * (45 - len(pv1))
    pv1[44] = value
    segments[0][17] = "UNICODE UTF-8"
    message = ("\r".join("|".join(s) for s in segments) + "\r").encode("utf-8")
    assert prepare(MAPPING["acute_adt"], message).error == f"field 'PV1-44': {reason}"


# --- FHIR Bundles -------------------------------------------------------------------------------


def _fhir_samples(files: int = 6, lines: int = 3) -> list[bytes]:
    paths = sorted((SAMPLE / "gp_fhir").glob("*.ndjson"))[:files]
    return [line for p in paths for line in p.read_bytes().splitlines()[:lines] if line.strip()]


FHIR_SAMPLES = _fhir_samples()
# The shortest Bundle with a Patient and something about them, for the exhaustive tests.
SMALL_BUNDLE = min((b for b in FHIR_SAMPLES if len(json.loads(b)["entry"]) >= 3), key=len)


def fhir_secrets(raw: bytes) -> list[str]:
    values: list[str] = []
    for entry in json.loads(raw)["entry"]:
        patient = entry["resource"]
        if patient["resourceType"] != "Patient":
            continue
        values.append(patient.get("birthDate"))
        values.extend(i.get("value") for i in patient.get("identifier", []))
        values.extend(t.get("value") for t in patient.get("telecom", []))
        for name in patient.get("name", []):
            values.extend([name.get("family"), *name.get("given", [])])
        for address in patient.get("address", []):
            values.extend([*address.get("line", []), address.get("postalCode")])
    return personal_values(values, "gp_fhir")


def _nodes(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _nodes(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _nodes(value, (*path, i))


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


def _delete(doc: Any, path: tuple[Any, ...]) -> Any:
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    del parent[path[-1]]
    return doc


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["", "Patient", "Condition", "Bundle", "PUT", "DELETE", "urn:uuid:x",
                       "Patient/x", "2020-13-45", "http://x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=6,
)


@FAST
@given(st.binary(max_size=400))
def test_fhir_random_bytes(data: bytes) -> None:
    check(prepare(MAPPING["gp_fhir"], data))


@FAST
@given(st.sampled_from(FHIR_SAMPLES), st.data())
def test_fhir_mutated_lines(raw: bytes, data: st.DataObject) -> None:
    check(prepare(MAPPING["gp_fhir"], data.draw(mutated(raw))), fhir_secrets(raw))


@FAST
@given(st.sampled_from(FHIR_SAMPLES), st.data())
def test_fhir_mutated_structure(raw: bytes, data: st.DataObject) -> None:
    """Well-formed JSON, wrong content: any node replaced (by junk, another type or one of
    the patient's own values), removed, or wrapped in a list."""
    doc = json.loads(raw)
    secrets = fhir_secrets(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = list(_nodes(doc))
        path = data.draw(st.sampled_from(paths))
        op = data.draw(st.sampled_from(["junk", "secret", "delete", "wrap"]))
        if op == "junk":
            doc = _replace(doc, path, data.draw(JSON_VALUES))
        elif op == "secret" and secrets:
            doc = _replace(doc, path, data.draw(st.sampled_from(secrets)))
        elif op == "delete" and path:
            doc = _delete(doc, path)
        elif op == "wrap":
            doc = _replace(doc, path, [_get(doc, path)])
    if data.draw(st.booleans()) and isinstance(doc, dict) and doc.get("type") == "transaction":
        doc["type"] = "batch"  # each entry on its own: reasons become warnings
    check(prepare(MAPPING["gp_fhir"], json.dumps(doc).encode()), secrets)


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


@pytest.mark.parametrize("bundle_type", ["transaction", "batch"])
def test_fhir_personal_value_in_every_string(bundle_type: str) -> None:
    """Every string in the Bundle in turn replaced by a personal value of the patient."""
    doc = json.loads(SMALL_BUNDLE)
    doc["type"] = bundle_type
    secrets = fhir_secrets(SMALL_BUNDLE)
    paths = [p for p in _nodes(doc) if isinstance(_get(doc, p), str) and p != ("type",)]
    for path in paths:
        for secret in secrets:
            changed = _replace(json.loads(json.dumps(doc)), path, secret)
            check(prepare(MAPPING["gp_fhir"], json.dumps(changed).encode()), secrets)


def test_fhir_malformed_entries_are_reasons_not_crashes() -> None:
    doc = json.loads(SMALL_BUNDLE)
    birth_date = next(e["resource"]["birthDate"] for e in doc["entry"]
                      if e["resource"]["resourceType"] == "Patient")
    cases = {
        "resourceType missing": lambda d: d["entry"][-1]["resource"].pop("resourceType"),
        "resourceType a date": lambda d: d["entry"][-1]["resource"].update(
            resourceType=birth_date),
        "resourceType a datatype": lambda d: d["entry"][-1]["resource"].update(
            resourceType="HumanName"),
        "resourceType not a model": lambda d: d["entry"][-1]["resource"].update(
            resourceType="fhirtypes"),
        "request not an object": lambda d: d["entry"][-1].update(request="PUT"),
        "method is data": lambda d: d["entry"][-1].update(request={"method": birth_date}),
    }
    for name, change in cases.items():
        for bundle_type in ("transaction", "batch"):
            changed = json.loads(json.dumps(doc))
            changed["type"] = bundle_type
            change(changed)
            prepared = prepare(MAPPING["gp_fhir"], json.dumps(changed).encode())
            check(prepared, [birth_date])
            assert prepared.error or prepared.warnings, name
    for depth in (150, 995, 5000):
        nested = b'{"resourceType":"Bundle","type":"batch","entry":' + b"[" * depth
        prepared = prepare(MAPPING["gp_fhir"], nested + b"]" * depth + b"}")
        assert prepared.error == "JSON nested more than 100 levels deep"
    prepared = prepare(MAPPING["gp_fhir"], b'{"resourceType":"Bundle","n":' + b"9" * 5000 + b"}")
    assert prepared.error == "not valid JSON"


def test_a_long_integer_in_a_bundle_is_kept_exact() -> None:
    doc = json.loads(SMALL_BUNDLE)
    observation = {"resourceType": "Observation", "id": "big", "status": "final",
                   "code": {"text": "count"}, "valueQuantity": {"value": 2**70}}
    doc["entry"].append({"resource": observation, "request": {"method": "PUT",
                                                              "url": "Observation/big"}})
    prepared = prepare(MAPPING["gp_fhir"], json.dumps(doc).encode())
    assert prepared.error is None
    stored = next(r.resource for r in prepared.resources
                  if r.resource and r.resource["resourceType"] == "Observation")
    assert stored["valueQuantity"]["value"] == 2**70
    assert type(stored["valueQuantity"]["value"]) is int


def _with_null_given(extension: bool) -> bytes:
    doc = json.loads(SMALL_BUNDLE)
    patient = next(e["resource"] for e in doc["entry"]
                   if e["resource"]["resourceType"] == "Patient")
    name = patient["name"][0]
    name["given"] = [None, *name.get("given", ["Kim"])]
    if extension:
        name["_given"] = [{"extension": [{"url": "https://example.org/x", "valueString": "y"}]},
                          *[None] * (len(name["given"]) - 1)]
    return json.dumps(doc).encode()


def test_fhir_null_in_primitive_array_needs_an_extension() -> None:
    prepared = prepare(MAPPING["gp_fhir"], _with_null_given(extension=False))
    assert prepared.error == (
        "entry 0: Patient invalid: name.0.given.0: null without an extension in _given")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32-le", "utf-8-sig"])
def test_fhir_null_is_found_in_any_json_encoding(encoding: str) -> None:
    """The null walk is skipped only for UTF-8 text without the token `null`: a Bundle in
    UTF-16 or UTF-32 (which JSON allows) holds no such bytes, yet may hold a null."""
    text = _with_null_given(extension=False).decode()
    prepared = prepare(MAPPING["gp_fhir"], text.encode(encoding))
    assert prepared.error == (
        "entry 0: Patient invalid: name.0.given.0: null without an extension in _given")


def test_fhir_bundle_without_nulls_is_not_changed_by_skipping_the_walk() -> None:
    """A value that merely contains the letters "null" takes the full walk, and passes."""
    doc = json.loads(SMALL_BUNDLE)
    patient = next(e["resource"] for e in doc["entry"]
                   if e["resource"]["resourceType"] == "Patient")
    patient["name"][0]["family"] = "Nullwood"
    prepared = prepare(MAPPING["gp_fhir"], json.dumps(doc).encode())
    assert prepared.error is None
    check(prepared)


def test_fhir_null_given_with_its_extension_is_accepted() -> None:
    prepared = prepare(MAPPING["gp_fhir"], _with_null_given(extension=True))
    assert prepared.error is None
    check(prepared)


@pytest.mark.parametrize(("where", "value", "path"), [
    ("identifier", [{"value": "1"}, {"type": {"coding": [None]}}],
     "identifier.1.type.coding.0"),
    ("extension", [{"url": "https://example.org/x",
                    "extension": [{"url": "y", "valueCodeableConcept": {"coding": [{}, None]}}]}],
     "extension.0.extension.0.valueCodeableConcept.coding.1"),
    ("_birthDate", {"extension": [None]}, "_birthDate.extension.0"),
])
def test_fhir_null_deep_inside_a_resource_is_found_and_named(where: str, value: Any,
                                                              path: str) -> None:
    """The null check walks every object and array, however nested (and `_x` twins too)."""
    doc = json.loads(SMALL_BUNDLE)
    patient = next(e["resource"] for e in doc["entry"]
                   if e["resource"]["resourceType"] == "Patient")
    patient[where] = value
    prepared = prepare(MAPPING["gp_fhir"], json.dumps(doc).encode())
    assert prepared.error is not None and f"{path}: null without an extension" in prepared.error


# --- mapping mistakes fail when the mapping loads, not on every message ---------------------


@pytest.mark.parametrize(("feed", "old", "new", "reason"), [
    ("acute_adt", "{$: PID-8,", "{$: PID.8,", "'PID.8' is not an HL7 path"),
    ("acute_adt", '{$: "MRG-1[5=MR].1"}', '{$: "MRG-1[0=MR].1"}', "merge.retired: 'MRG-1[0="),
    ("acute_adt", "{$: PV1-19.1}", '{$template: "{PV1-19.1}/{PV1-19.0}"}',
     "'PV1-19.0' is not an HL7 path"),
    ("community_health", '{split: {sep: ",", index: 0}}', '{split: ","}',
     "transform 'split': the argument must be {sep: <text>, index: <number>}"),
    ("community_health", "{name_part: family}", "{name_part: surname}",
     "transform 'name_part': the argument must be family, given or middle"),
    ("community_health", '{date: "%d-%b-%Y"}', "{date: 1}",
     "transform 'date': the argument must be text"),
    ("gp_fhir", '{in: ["86406008", "165816005"]}', '{in: "86406008"}',
     "transform 'in': the argument must be a list"),
])
def test_mapping_mistakes_fail_on_load(tmp_path: Path, feed: str, old: str, new: str,
                                       reason: str) -> None:
    text = MAPPING_TEXT[feed]
    assert old in text
    path = tmp_path / f"{feed}.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(MappingFileError, match=re.escape(reason)):
        load_mapping(path)
