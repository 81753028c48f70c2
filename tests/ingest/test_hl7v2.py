"""HL7 v2 parsing, validation and ACKs: realistic ADT, feed variations, errors that name the
field but never the value, and property tests that nothing but Hl7Error ever escapes."""

from __future__ import annotations

import pickle
from datetime import date
from pathlib import Path

import hl7
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unified_record.ingest.hl7v2 import (
    Encoding,
    Hl7Error,
    Hl7Message,
    build_ack,
    escape,
    parse_hl7_date,
    parse_message,
    read_mllp_stream,
    split_messages,
    unescape,
    validate_message,
)

SAMPLE = Path(__file__).resolve().parents[2] / "synthetic_data" / "sample"

MSH_PLAIN = "MSH|^~\\&|PAS|RXX01|UR|COUNCIL|20261124101500||ADT^A01^ADT_A01|MSG0001|P|2.4"
MSH_A01 = ("MSH|^~\\&|PAS|RXX01|UR|COUNCIL|20261124101500||ADT^A01^ADT_A01|MSG0001|P|2.4|||AL|NE"
           "|GBR|8859/1")
A01 = [
    MSH_A01,
    "EVN|A01|20261124101500|||C123^NURSE^ANNE",
    "PID|1||9990000018^^^NHS^NH~M123456^^^RXX01^MR||SMITH^JOHN^PAUL^^MR||19800102|M|||"
    "12 Oak Way^Headingley^Leeds^West Yorkshire^LS6 1AA^GBR^H||0113 496 0000^PRN^PH~"
    "07700 900123^ORN^CP||EN|M||||||A||||||||||01",
    "PD1|||Stanley Health Centre^^Y99018|G8000126^JONES^ANNE^^^DR^^^^^^^GMC",
    "PV1|1|I|WARD5^BED12^^RXX01||||C1234^WHO^DR|||MED||||19|||||V0001^^^RXX01^VN|||||||||||||"
    "||||||||||||20261124101000",
    "ZU1|local^value||",
]
A40 = [
    "MSH|^~\\&|PAS|RXX01|UR|COUNCIL|20261124111500||ADT^A40^ADT_A39|MSG0002|P|2.4",
    "EVN|A40|20261124111500",
    "PID|1||9990000018^^^NHS^NH~M123456^^^RXX01^MR||SMITH^JOHN^PAUL^^MR||19800102|M",
    "MRG|M999999^^^RXX01^MR||V0009",
]
CUSTOM = [
    "MSH#$%@!#PAS#RXX01#UR#COUNCIL#20261124101500##ADT$A01$ADT_A01#MSG0003#P#2.4",
    "EVN#A01",
    "PID#1##9990000018$$$NHS$NH%M123456$$$RXX01!X$MR##SMITH@S@JONES$JOHN|PAUL##19800102#M",
]
ORU = [
    "MSH|^~\\&|LAB|RXX01|UR|COUNCIL|20261124101500||ORU^R01^ORU_R01|LAB0001|P|2.4",
    "OBR|1||X1|CBC",
    "OBX|1|NM|HB||135|g/L",
]


def er7(segments: list[str], sep: str = "\r") -> bytes:
    return (sep.join(segments) + sep).encode("iso8859-1")


def replace(segments: list[str], name: str, new: str | None) -> list[str]:
    result = [new if s.startswith(name + "|") else s for s in segments]
    return [s for s in result if s is not None]


def a01() -> Hl7Message:
    return parse_message(er7(A01))


# --- parsing a realistic ADT^A01 ------------------------------------------------------------


def test_realistic_a01_reads_by_path() -> None:
    m = a01()
    assert m.message_type == ("ADT", "A01")
    assert m.control_id == "MSG0001"
    assert m.version == "2.4"
    assert m.sending_application == "PAS"
    assert m.sending_facility == "RXX01"
    expected = {
        "MSH-1": "|", "MSH-2": "^~\\&", "MSH-9": "ADT", "MSH-9.1": "ADT", "MSH-9.2": "A01",
        "MSH-9.3": "ADT_A01", "MSH-10": "MSG0001", "MSH-18": "8859/1",
        "PID-3.1": "9990000018", "PID-3.5": "NH", "PID-3[2].1": "M123456",
        "PID-3[2].4": "RXX01", "PID-3[2].5": "MR", "PID-5.1": "SMITH", "PID-5.2": "JOHN",
        "PID-5.3": "PAUL", "PID-5.5": "MR", "PID-7": "19800102", "PID-8": "M",
        "PID-11.1": "12 Oak Way", "PID-11.3": "Leeds", "PID-11.5": "LS6 1AA",
        "PID-11.7": "H", "PID-13.1": "0113 496 0000", "PID-13[2].3": "CP", "PID-32": "01",
        "PD1-3.1": "Stanley Health Centre", "PD1-3.3": "Y99018", "PD1-4.1": "G8000126",
        "PD1-4.13": "GMC", "PV1-2": "I", "PV1-3.1": "WARD5", "PV1-3.2": "BED12",
        "PV1-19.1": "V0001", "PV1-44": "20261124101000", "EVN-5.2": "NURSE", "ZU1-1.2": "value",
    }
    assert {path: m.get(path) for path in expected} == expected


def test_absent_and_empty_values_are_none() -> None:
    m = a01()
    for path in ["PID-2", "PID-5.4", "PID-3[3].1", "PID-99", "PD1-1", "NK1-2.1", "ZU1-2",
                 "ZU1-3", "PID[2]-3", "MSH-9.4", "PID-5.1.2"]:
        assert m.get(path) is None, path


def test_repetitions_expose_components() -> None:
    ids = a01().repetitions("PID-3")
    assert [(r.get(1), r.get(4), r.get(5)) for r in ids] == [
        ("9990000018", "NHS", "NH"), ("M123456", "RXX01", "MR")]
    assert a01().repetitions("PID-2") == []
    assert a01().repetitions("NK1-3") == []


def test_segments_and_repr_show_no_patient_data() -> None:
    m = a01()
    assert [s.name for s in m.segments()] == ["MSH", "EVN", "PID", "PD1", "PV1", "ZU1"]
    pid = m.segments("PID")[0]
    assert pid.get(5, 2) == "JOHN" and pid.get(3, 1, repetition=2) == "M123456"
    assert pid.line == 3
    assert m.segments("OBX") == []
    assert "SMITH" not in repr(m) and "SMITH" not in repr(pid)
    assert "9990000018" not in repr(m.repetitions("PID-3"))


def test_bad_paths_are_programming_errors() -> None:
    m = a01()
    for path in ["PID", "pid-3", "PID-0", "PID-3[0]", "PID-3.0", "PID-3(1)"]:
        with pytest.raises(ValueError):
            m.get(path)
    with pytest.raises(ValueError):
        m.repetitions("PID-3.1")


def test_a40_merge() -> None:
    m = parse_message(er7(A40))
    assert m.message_type == ("ADT", "A40")
    assert m.get("MRG-1.1") == "M999999"
    assert m.get("MRG-1.5") == "MR"
    assert m.get("MRG-3") == "V0009"


def test_a40_without_mrg_is_rejected() -> None:
    with pytest.raises(Hl7Error) as err:
        parse_message(er7(replace(A40, "MRG", None)))
    assert err.value.segment == "MRG" and err.value.ack_code == "AR"
    assert str(err.value).startswith("MRG: required segment missing")


@pytest.mark.parametrize("event", ["A01", "A03", "A04", "A08", "A28", "A31", "A40"])
def test_adt_events_need_pid(event: str) -> None:
    segments = [MSH_A01.replace("ADT^A01^ADT_A01", f"ADT^{event}"), f"EVN|{event}"]
    with pytest.raises(Hl7Error) as err:
        parse_message(er7(segments))
    assert err.value.segment == "PID" and err.value.reject


def test_pid_needs_an_identifier() -> None:
    pid = "PID|1||~||SMITH^JOHN||19800102"
    with pytest.raises(Hl7Error) as err:
        parse_message(er7(replace(A01, "PID", pid)))
    assert err.value.field == "PID-3" and err.value.ack_code == "AE"


# --- feed variations --------------------------------------------------------------------------


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n", "\n\r", "\r\r"])
def test_segment_separators(sep: str) -> None:
    m = parse_message(er7(A01, sep))
    assert [s.name for s in m.segments()] == ["MSH", "EVN", "PID", "PD1", "PV1", "ZU1"]
    assert m.get("PID-5.1") == "SMITH" and m.get("ZU1-1.2") == "value"


def test_mixed_separators_leading_whitespace_bom_and_no_final_terminator() -> None:
    raw = b"\xef\xbb\xbf\r\n" + "\r\n".join(A01[:3]).encode() + b"\n" + "\r".join(A01[3:]).encode()
    m = parse_message(raw)
    assert m.get("PV1-3.1") == "WARD5" and m.get("ZU1-1.1") == "local"


def test_escape_sequences_are_decoded() -> None:
    pid = ("PID|1||9990000018^^^NHS^NH||O\\T\\BRIEN^ANNE \\F\\ MARIE^\\S\\\\R\\\\E\\^^MS||"
           "19800102|F|||Flat 1\\.br\\2 High St^\\X4142\\^\\Z99\\^\\H\\Leeds\\N\\^\\Xzz\\^x\\y")
    m = parse_message(er7(replace(A01, "PID", pid)))
    assert m.get("PID-5.1") == "O&BRIEN"
    assert m.get("PID-5.2") == "ANNE | MARIE"
    assert m.get("PID-5.3") == "^~\\"
    assert m.get("PID-11.1") == "Flat 1\n2 High St"
    assert m.get("PID-11.2") == "AB"
    assert m.get("PID-11.3") == "\\Z99\\"  # site-defined escape: kept as written
    assert m.get("PID-11.4") == "Leeds"
    assert m.get("PID-11.5") == "\\Xzz\\"  # not hex: kept
    assert m.get("PID-11.6") == "x\\y"  # unterminated: kept


def test_custom_encoding_characters() -> None:
    m = parse_message(er7(CUSTOM))
    assert m.encoding == Encoding("#", "$", "%", "@", "!")
    assert m.get("MSH-1") == "#" and m.get("MSH-2") == "$%@!"
    assert m.message_type == ("ADT", "A01")
    assert m.get("PID-3[2].1") == "M123456"
    assert m.get("PID-3[2].4") == "RXX01" and m.get("PID-3[2].4.2") == "X"
    assert m.get("PID-5.1") == "SMITH$JONES"
    assert m.get("PID-5.2") == "JOHN|PAUL"  # "|" is data under these delimiters
    ack = parse_message(build_ack(m, b"", "AA"))
    assert ack.get("MSA-2") == "MSG0003" and ack.get("MSH-5") == "PAS"


def test_short_msh2_and_v27_truncation_character() -> None:
    short = parse_message(er7([MSH_A01.replace("^~\\&", "^~\\"), *A01[1:]]))
    assert short.get("PID-3[2].1") == "M123456" and short.encoding.subcomponent == ""
    v27 = parse_message(er7([MSH_A01.replace("^~\\&", "^~\\&#"), *A01[1:]]))
    assert v27.get("PID-5.1") == "SMITH"


def test_z_segments_trailing_empty_fields_and_missing_optional_segments() -> None:
    segments = [A01[0], A01[1], "PID|1||9990000018^^^NHS^NH||SMITH^JOHN||19800102|M||||||||",
                "ZPI|1|custom^data|||", "ZPI|2|second"]
    m = parse_message(er7(segments))
    assert m.get("ZPI-2.2") == "data" and m.get("ZPI[2]-2") == "second"
    assert m.get("PID-20") is None and m.get("PV1-2") is None and m.segments("PD1") == []


def test_version_22_trigger_from_evn() -> None:
    segments = [MSH_A01.replace("ADT^A01^ADT_A01", "ADT").replace("|2.4|", "|2.2|"), *A01[1:]]
    m = parse_message(er7(segments))
    assert m.message_type == ("ADT", "A01")


def test_explicit_null_is_none_but_detectable() -> None:
    m = parse_message(er7(replace(A01, "PD1", 'PD1|||""')))
    assert m.get("PD1-3") is None and m.is_null("PD1-3")
    assert not m.is_null("PID-5") and not m.is_null("PD1-4") and not m.is_null("NK1-1")


def test_non_adt_message_parses_without_adt_rules() -> None:
    m = parse_message(er7(ORU))
    assert m.message_type == ("ORU", "R01")
    assert m.get("OBX-5") == "135" and m.segments("PID") == []


def test_a20_needs_no_pid() -> None:
    msh = MSH_A01.replace("ADT^A01^ADT_A01", "ADT^A20^ADT_A20")
    assert parse_message(er7([msh, "EVN|A20", "NPU|WARD5^BED12"])).message_type[1] == "A20"


# --- character sets ---------------------------------------------------------------------------


def test_default_charset_is_iso_8859_1() -> None:
    raw = er7([MSH_PLAIN, A01[1], "PID|1||9990000018^^^NHS^NH||BRONTË^ZOË||19800102|F"])
    assert parse_message(raw).get("PID-5.1") == "BRONTË"


def test_utf8_declared_in_msh18() -> None:
    msh = MSH_A01.replace("8859/1", "UNICODE UTF-8")
    pid = "PID|1||9990000018^^^NHS^NH||BRONTË^ZOË||19800102|F"
    raw = "\r".join([msh, A01[1], pid]).encode("utf-8")
    m = parse_message(raw)
    assert m.get("PID-5.2") == "ZOË" and m.charset == "utf-8"
    ack = build_ack(m, raw, "AA")
    assert parse_message(ack).get("MSH-18") == "UNICODE UTF-8"


def test_undecodable_bytes_name_the_field_not_the_value() -> None:
    msh = MSH_A01.replace("8859/1", "UNICODE UTF-8")
    raw = "\r".join([msh, A01[1], "PID|1||9990000018^^^NHS^NH||SMITH^JO"]).encode() + b"\xff\r"
    with pytest.raises(Hl7Error) as err:
        parse_message(raw)
    assert err.value.field == "PID-5" and err.value.reject
    assert "not valid UTF-8" in str(err.value) and "SMITH" not in str(err.value)


def test_control_characters_are_rejected() -> None:
    raw = er7(replace(A01, "PID", "PID|1||9990000018^^^NHS^NH||SMITH\x00^JOHN"))
    with pytest.raises(Hl7Error, match="control character") as err:
        parse_message(raw)
    assert err.value.field == "PID-5"
    cp1252 = er7([MSH_PLAIN, A01[1]]) + b"PID|1||9990000018^^^NHS^NH||O\x92BRIEN^JOHN\r"
    with pytest.raises(Hl7Error, match="ISO 8859-1"):
        parse_message(cp1252)
    assert parse_message(cp1252, default_charset="cp1252").get("PID-5.1") == "O’BRIEN"


def test_declared_ascii_is_strict_and_unknown_charsets_rejected() -> None:
    ascii_msh = MSH_A01.replace("8859/1", "ASCII")
    with pytest.raises(Hl7Error, match="ASCII"):
        parse_message(er7([ascii_msh, A01[1], "PID|1||1^^^NHS^NH||BRONTË"]))
    for charset in ["KLINGON", "UNICODE UTF-16"]:
        with pytest.raises(Hl7Error) as err:
            parse_message(er7([MSH_A01.replace("8859/1", charset), *A01[1:]]))
        assert err.value.field == "MSH-18"


# --- errors -----------------------------------------------------------------------------------


def test_missing_control_id_names_the_field() -> None:
    with pytest.raises(Hl7Error) as err:
        parse_message(er7([MSH_A01.replace("|MSG0001|", "||"), *A01[1:]]))
    assert (err.value.segment, err.value.field) == ("MSH", "MSH-10")
    assert str(err.value) == "MSH-10: message control id missing"
    assert err.value.ack_code == "AR"


def test_missing_message_type() -> None:
    with pytest.raises(Hl7Error) as err:
        parse_message(er7([MSH_A01.replace("ADT^A01^ADT_A01", ""), *A01[1:]]))
    assert str(err.value) == "MSH-9: message type missing"
    with pytest.raises(Hl7Error) as err:
        parse_message(er7([MSH_A01.replace("ADT^A01^ADT_A01", "ADT"), *A01[2:]]))
    assert err.value.field == "MSH-9.2"


def test_impossible_date_of_birth() -> None:
    raw = er7(replace(A01, "PID", "PID|1||9990000018^^^NHS^NH||SMITH^JOHN||20230231|M"))
    with pytest.raises(Hl7Error) as err:
        parse_message(raw)
    assert str(err.value) == "PID-7: impossible date"
    assert err.value.ack_code == "AE" and "20230231" not in str(err.value)
    lenient = parse_message(raw, validate=False)  # still readable, for the ACK
    assert lenient.get("PID-7") == "20230231"
    with pytest.raises(Hl7Error):
        validate_message(lenient)


@pytest.mark.parametrize(("raw", "where"), [
    (b"", "MSH"),
    (b"   \r\n", "MSH"),
    (b"PID|1||x\rMSH|^~\\&", "MSH"),
    (b"MSH", "MSH-1"),
    (b"MSHA^~\\&|x", "MSH-1"),
    (b"MSH|abcd|x", "MSH-2"),
    (b"MSH||PAS", "MSH-2"),
    (b"MSH|^^\\&|x", "MSH-2"),
    (b"MSH|^~\\&\\|x", "MSH-2"),
])
def test_broken_headers(raw: bytes, where: str) -> None:
    with pytest.raises(Hl7Error) as err:
        parse_message(raw)
    assert err.value.location == where and err.value.reject


def test_broken_segment_lines_name_the_line() -> None:
    wrapped = [*A01[:2], A01[2][:40], A01[2][40:], *A01[3:]]  # a line break inside PID
    with pytest.raises(Hl7Error, match="line 4 is not a segment"):
        parse_message(er7(wrapped))
    with pytest.raises(Hl7Error, match="line 3 starts a second message"):
        parse_message(er7([*A01[:2], *A40]))


def test_error_survives_pickling() -> None:
    err = Hl7Error("impossible date", field="PID-7", code=102)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.field, copy.segment, copy.reason, copy.code, str(copy)) == (
        "PID-7", "PID", "impossible date", 102, "PID-7: impossible date")


@pytest.mark.parametrize(("value", "expected"), [
    ("19800102", date(1980, 1, 2)),
    ("198001021230", date(1980, 1, 2)),
    ("19800102123059.1234+0100", date(1980, 1, 2)),
    ("2024022912", date(2024, 2, 29)),
    (" 19800102 ", date(1980, 1, 2)),
])
def test_parse_hl7_date(value: str, expected: date) -> None:
    assert parse_hl7_date(value) == expected


@pytest.mark.parametrize(("value", "reason"), [
    ("20230231", "impossible date"),
    ("20231301", "impossible date"),
    ("00000101", "impossible date"),
    ("20230229", "impossible date"),
    ("202301022460", "impossible time"),
    ("20230102+2500", "impossible time"),
    ("1980", "has no day"),
    ("198001", "has no day"),
    ("2023-01-02", "not an HL7 date"),
    ("1980010", "not an HL7 date"),
    ("", "not an HL7 date"),
])
def test_parse_hl7_date_errors(value: str, reason: str) -> None:
    with pytest.raises(Hl7Error, match=reason) as err:
        parse_hl7_date(value, field="PID-7")
    assert err.value.field == "PID-7"


def test_partial_birth_dates_are_valid_dtm() -> None:
    raw = er7(replace(A01, "PID", "PID|1||9990000018^^^NHS^NH||SMITH^JOHN||1980|M"))
    assert parse_message(raw).get("PID-7") == "1980"


# --- splitting files --------------------------------------------------------------------------


def test_split_messages_with_line_numbers() -> None:
    data = (b"\xef\xbb\xbf\r\n"
            + er7(A01, "\r\n") + b"\r\n"
            + er7(A40, "\n")
            + er7(ORU, "\r"))
    parts = split_messages(data)
    assert [line for line, _ in parts] == [2, 9, 13]
    assert [parse_message(raw).control_id for _, raw in parts] == ["MSG0001", "MSG0002",
                                                                   "LAB0001"]
    assert parts[0][1].endswith(b"ZU1|local^value||\r\n")


def test_split_messages_batches_and_stray_lines() -> None:
    data = b"\n".join([b"FHS|^~\\&|PAS", b"BHS|^~\\&|PAS", *[s.encode() for s in A01],
                       b"BTS|1", b"stray text", b"", *[s.encode() for s in A40], b"FTS|1", b""])
    parts = split_messages(data)
    assert [line for line, _ in parts] == [3, 10, 12]
    with pytest.raises(Hl7Error, match="does not start with an MSH"):
        parse_message(parts[1][1])
    assert parse_message(parts[2][1]).control_id == "MSG0002"
    assert split_messages(b"") == [] and split_messages(b"\r\n \n") == []
    assert split_messages(b"MSH|x") == [(1, b"MSH|x")]
    assert split_messages(b"XMSH|x\rMSHA") == [(1, b"XMSH|x\rMSHA")]


def test_sample_feed_parses_and_validates() -> None:
    files = sorted((SAMPLE / "acute_adt").glob("*.hl7"))
    assert files
    ids = set()
    for file in files:
        for _, raw in split_messages(file.read_bytes()):
            m = parse_message(raw)
            assert m.message_type[0] == "ADT"
            ids.add(m.control_id)
    streamed = read_mllp_stream((SAMPLE / "acute_adt.mllp").read_bytes())
    assert {parse_message(raw).control_id for raw in streamed} == ids


# --- ACKs -------------------------------------------------------------------------------------


def test_ack_accepts() -> None:
    m = a01()
    raw = build_ack(m, er7(A01), "AA")
    ack = parse_message(raw)
    assert ack.message_type == ("ACK", "A01") and ack.get("MSH-9.3") == "ACK"
    assert [ack.get(f"MSH-{i}") for i in (3, 4, 5, 6, 11, 12)] == [
        "UR", "COUNCIL", "PAS", "RXX01", "P", "2.4"]
    assert ack.control_id not in (None, "MSG0001")
    assert ack.get("MSA-1") == "AA" and ack.get("MSA-2") == "MSG0001"
    assert ack.segments("ERR") == []
    assert raw.endswith(b"\r") and b"\n" not in raw
    third_party = hl7.parse(raw.decode("iso8859-1"))  # python-hl7 reads it too
    assert str(third_party.segment("MSA")[2]) == "MSG0001"


def test_ack_error_with_location_v24() -> None:
    ack = parse_message(build_ack(a01(), b"", "AE", "PID-7: impossible date", "PID-7",
                                  error_code=102))
    assert ack.get("MSA-1") == "AE" and ack.get("MSA-3") == "PID-7: impossible date"
    assert [ack.get(f"ERR-1.{i}") for i in (1, 2, 3)] == ["PID", "1", "7"]
    assert [ack.get(f"ERR-1.4.{i}") for i in (1, 2, 3)] == ["102", "Data type error", "HL70357"]
    assert ack.get("ERR-3") is None  # ERR-2..4 arrived in v2.5


def test_ack_error_v25_fills_err3_and_severity() -> None:
    m = parse_message(er7([MSH_A01.replace("|2.4|", "|2.5.1|"), *A01[1:]]))
    ack = parse_message(build_ack(m, b"", "AR", "MRG: required segment missing", "MRG"))
    assert ack.get("MSH-12") == "2.5.1"
    assert ack.get("ERR-1.1") == "MRG" and ack.get("ERR-1.4.1") == "207"
    assert ack.get("ERR-2.1") == "MRG" and ack.get("ERR-3.1") == "207"
    assert ack.get("ERR-4") == "E"


def test_ack_escapes_what_it_echoes() -> None:
    msh = ("MSH|^~\\&|PAS\\T\\X^1.2.3^ISO|RXX01|UR|COUNCIL|20261124101500||ADT^A01|"
           "A\\F\\B\\E\\C|T^T|2.4")
    m = parse_message(er7([msh, *A01[1:]]))
    assert m.control_id == "A|B\\C"
    ack = parse_message(build_ack(m, b"", "AE", "bad | thing ^ here\r\nnext"))
    assert ack.get("MSA-2") == "A|B\\C"
    assert ack.get("MSA-3") == "bad | thing ^ here next"
    assert ack.get("MSH-5") == "PAS&X" and ack.get("MSH-5.2") == "1.2.3"
    assert ack.get("MSH-11") == "T" and ack.get("MSH-11.2") == "T"


def test_ack_for_unparseable_message_recovers_control_id() -> None:
    broken = b"MSH|^~\\&|PAS|RXX01|UR|COUNCIL|x||ADT^A01|CTRL9|P|2.3\rPID|\x00\x01\r"
    with pytest.raises(Hl7Error):
        parse_message(broken)
    ack = parse_message(build_ack(None, broken, "AR", "unparseable"))
    assert ack.get("MSA-1") == "AR" and ack.get("MSA-2") == "CTRL9"
    assert ack.get("MSH-5") == "PAS" and ack.get("MSH-12") == "2.3"
    bad_delims = b"MSH|abcd|PAS|RXX01|UR|COUNCIL|x||ADT^A01|CTRL8|P|2.4\r"
    assert parse_message(build_ack(None, bad_delims, "AR")).get("MSA-2") == "CTRL8"
    nothing = parse_message(build_ack(None, b"\x00garbage", "AR", "not HL7"))
    assert nothing.get("MSA-1") == "AR" and nothing.get("MSA-2") is None
    assert nothing.get("ERR-1.4.1") == "207"


def test_ack_rejects_unknown_codes() -> None:
    with pytest.raises(ValueError):
        build_ack(None, b"", "OK")


# --- escaping ---------------------------------------------------------------------------------


@given(st.text())
def test_escape_round_trips(text: str) -> None:
    assert unescape(escape(text)) == text
    custom = Encoding("#", "$", "%", "@", "!")
    assert unescape(escape(text, custom), custom) == text


# --- property tests: nothing but Hl7Error ever escapes -----------------------------------------

UTF8 = "\r".join([MSH_A01.replace("8859/1", "UNICODE UTF-8"), A01[1],
                  A01[2].replace("SMITH", "SMÏTH")]).encode()
VALID = [er7(A01), er7(A40, "\n"), er7(ORU, "\r\n"), er7(CUSTOM), UTF8]


def _parse_or_error(raw: bytes) -> Hl7Message | None:
    try:
        return parse_message(raw)
    except Hl7Error as exc:
        assert str(exc) and exc.ack_code in ("AE", "AR")
        return None


def _check_ack(message: Hl7Message | None, raw: bytes) -> None:
    for code in ("AA", "AE", "AR"):
        ack = parse_message(build_ack(message, raw, code, "reason", "PID-7"))
        assert ack.get("MSA-1") == code
        if message is not None:
            assert ack.get("MSA-2") == message.control_id


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes(raw: bytes) -> None:
    _check_ack(_parse_or_error(raw), raw)
    _check_ack(_parse_or_error(b"MSH" + raw), b"MSH" + raw)


@given(st.sampled_from(VALID), st.data())
def test_single_byte_mutations(raw: bytes, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(raw) - 1))
    value = data.draw(st.integers(0, 255))
    mutated = raw[:position] + bytes([value]) + raw[position + 1:]
    message = _parse_or_error(mutated)
    _check_ack(message, mutated)
    if message is None:
        try:
            message = parse_message(mutated, validate=False)
        except Hl7Error:
            return
        _check_ack(message, mutated)


@given(st.sampled_from(VALID), st.data())
def test_segment_deletions_and_truncations(raw: bytes, data: st.DataObject) -> None:
    lines = raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    keep = data.draw(st.lists(st.booleans(), min_size=len(lines), max_size=len(lines)))
    pruned = b"\r".join(line for line, kept in zip(lines, keep, strict=True) if kept)
    cut = pruned[:data.draw(st.integers(0, len(pruned)))]
    for candidate in (pruned, cut):
        _check_ack(_parse_or_error(candidate), candidate)


@given(st.text(alphabet=st.characters(codec="latin-1"), max_size=40),
       st.sampled_from(["PID-5", "PID-3", "MSH-10", "MSH-4", "PID-7", "EVN-1"]))
def test_any_field_value_keeps_the_message_parseable(value: str, path: str) -> None:
    name, field = path.split("-")
    segments = list(A01)
    index = next(i for i, s in enumerate(segments) if s.startswith(name + "|"))
    fields = segments[index].split("|")
    position = int(field) - (1 if name == "MSH" else 0)
    fields[position] = escape(value)
    segments[index] = "|".join(fields)
    raw = er7(segments)
    message = _parse_or_error(raw)
    _check_ack(message, raw)
    if message is None:
        message = parse_message(raw, validate=False)
    assert message.get(path + ".1") in (None, value)
