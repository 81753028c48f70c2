"""MLLP framing and the asyncio server over real loopback sockets: ACKs, ordering under
concurrency, and senders that misbehave (garbage, truncated and oversized frames, handlers
that fail) without the server going down."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unified_record.ingest.hl7v2 import Hl7Error, Hl7Message, parse_message
from unified_record.ingest.mllp import (
    END_BLOCK,
    START_BLOCK,
    FrameTooLarge,
    Handler,
    MllpDecoder,
    MllpError,
    frame,
    make_ack_handler,
    read_mllp_stream,
    send_mllp,
    serve_mllp,
)

PID = "PID|1||9990000018^^^NHS^NH~M123456^^^RXX01^MR||SMITH^JOHN^PAUL^^MR||19800102|M"


def adt(control_id: str, *, event: str = "A01", pid: str | None = PID) -> bytes:
    segments = [f"MSH|^~\\&|PAS|RXX01|UR|COUNCIL|20261124101500||ADT^{event}|{control_id}|P|2.4",
                f"EVN|{event}|20261124101500"]
    if pid is not None:
        segments.append(pid)
    return ("\r".join(segments) + "\r").encode()


def validate(raw: bytes) -> None:
    parse_message(raw)


def ack_of(raw: bytes) -> Hl7Message:
    return parse_message(raw)


@contextmanager
def running_server(handler: Handler, **options: Any) -> Iterator[int]:
    """serve_mllp on 127.0.0.1, an ephemeral port, in a thread with its own event loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        serve_mllp(handler, "127.0.0.1", 0, **options), loop).result(5)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        async def shutdown() -> None:
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.wait_closed()
            await loop.shutdown_default_executor()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.fixture
def port() -> Iterator[int]:
    with running_server(make_ack_handler(validate)) as bound:
        yield bound


def recv_frames(sock: socket.socket, count: int) -> list[bytes]:
    decoder = MllpDecoder()
    frames: list[bytes] = []
    while len(frames) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        frames.extend(decoder.feed(chunk))
    return frames


# --- framing ----------------------------------------------------------------------------------


def test_frame() -> None:
    assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\r"
    with pytest.raises(ValueError):
        frame(b"MSH\x1c")


def test_decoder_discards_bytes_outside_frames_and_truncated_frames() -> None:
    decoder = MllpDecoder()
    assert decoder.feed(b"noise\x0bone\x1c\r\r\n\x0bcut short\x0btwo\x1c") == [b"one", b"two"]
    assert decoder.discarded == len(b"noise") + len(b"\r\n") + len(b"cut short")
    assert decoder.truncated == 1
    assert decoder.feed(b"\r\x0bthr") == [] and decoder.in_frame and decoder.buffered == 3
    assert decoder.feed(b"ee\x1c\r") == [b"three"] and not decoder.in_frame
    assert decoder.discarded == 16  # the CR after an end block is part of it


def test_decoder_rejects_oversized_frames_and_carries_on() -> None:
    decoder = MllpDecoder(max_message_bytes=300)
    big = adt("BIG1") + b"Z" * 9000
    with pytest.raises(FrameTooLarge) as err:
        decoder.feed(frame(adt("OK1")) + frame(big) + frame(adt("OK2")))
    assert err.value.messages == [adt("OK1")]
    assert err.value.head.startswith(adt("BIG1")) and len(err.value.head) == 4096
    assert decoder.feed(b"") == [adt("OK2")]
    assert decoder.feed(frame(b"small")) == [b"small"]


@st.composite
def chunked_stream(draw: st.DrawFn) -> tuple[list[bytes], bytes, list[int], int]:
    body = st.binary(max_size=80).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))
    junk = st.binary(max_size=10).map(lambda b: b.translate(None, b"\x0b\x1c\r"))
    messages = draw(st.lists(body, max_size=8))
    gaps = draw(st.lists(junk, min_size=len(messages), max_size=len(messages)))
    stream = b"".join(gap + frame(m) for gap, m in zip(gaps, messages, strict=True))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    return messages, stream, cuts, sum(len(g) for g in gaps)


@given(chunked_stream())
def test_decoder_handles_any_chunk_boundaries(case: tuple[list[bytes], bytes, list[int],
                                                          int]) -> None:
    messages, stream, cuts, junk = case
    decoder = MllpDecoder()
    out: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out.extend(decoder.feed(stream[start:end]))
    assert out == messages
    assert decoder.discarded == junk and not decoder.in_frame


@given(st.binary(max_size=300), st.integers(1, 64))
def test_decoder_never_fails_on_garbage(data: bytes, step: int) -> None:
    decoder = MllpDecoder(max_message_bytes=100)
    for i in range(0, len(data), step):
        with suppress(FrameTooLarge):
            decoder.feed(data[i:i + step])


def test_read_mllp_stream() -> None:
    stream = frame(adt("A")) + b"\n" + frame(adt("B")) + START_BLOCK + adt("C") + b"\x1c"
    assert read_mllp_stream(stream) == [adt("A"), adt("B"), adt("C")]
    assert read_mllp_stream(b"") == [] and read_mllp_stream(b" \r\n") == []


@pytest.mark.parametrize(("stream", "reason"), [
    (frame(b"one") + START_BLOCK + b"MSH|cut", "truncated final frame: frame 2"),
    (START_BLOCK + b"one" + START_BLOCK + b"two" + END_BLOCK, "frame 1 .* no end block"),
    (frame(b"one") + b"MSH|unframed\r", "byte 6: data outside any MLLP frame"),
])
def test_read_mllp_stream_errors(stream: bytes, reason: str) -> None:
    with pytest.raises(MllpError, match=reason) as err:
        read_mllp_stream(stream)
    assert "MSH|" not in str(err.value)


# --- the server -------------------------------------------------------------------------------


def test_good_message_gets_aa(port: int) -> None:
    [raw] = send_mllp("127.0.0.1", port, [adt("MSG0001")])
    ack = ack_of(raw)
    assert ack.get("MSA-1") == "AA" and ack.get("MSA-2") == "MSG0001"
    assert ack.message_type == ("ACK", "A01") and ack.segments("ERR") == []
    assert ack.get("MSH-5") == "PAS" and ack.get("MSH-6") == "RXX01"


def test_structurally_bad_message_gets_ar_with_err(port: int) -> None:
    [raw] = send_mllp("127.0.0.1", port, [adt("MSG0002", pid=None)])
    ack = ack_of(raw)
    assert ack.get("MSA-1") == "AR" and ack.get("MSA-2") == "MSG0002"
    assert ack.get("MSA-3") == "PID: required segment missing for ADT^A01"
    assert ack.get("ERR-1.1") == "PID" and ack.get("ERR-1.4.1") == "100"


def test_bad_content_gets_ae_with_err(port: int) -> None:
    pid = PID.replace("19800102", "20230231")
    [raw] = send_mllp("127.0.0.1", port, [adt("MSG0003", pid=pid)])
    ack = ack_of(raw)
    assert ack.get("MSA-1") == "AE" and ack.get("MSA-2") == "MSG0003"
    assert [ack.get(f"ERR-1.{i}") for i in (1, 2, 3)] == ["PID", "1", "7"]
    assert ack.get("ERR-1.4.1") == "102" and "20230231" not in raw.decode()


def test_garbage_gets_ar_and_the_connection_carries_on(port: int) -> None:
    acks = send_mllp("127.0.0.1", port, [b"not hl7 at all", adt("MSG0004")])
    first, second = (ack_of(a) for a in acks)
    assert first.get("MSA-1") == "AR" and first.get("MSA-2") is None
    assert second.get("MSA-1") == "AA" and second.get("MSA-2") == "MSG0004"


def test_concurrent_connections_get_their_own_acks_in_order() -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def process(raw: bytes) -> None:
        time.sleep(random.random() / 200)
        message = parse_message(raw)
        with lock:
            seen.append(message.control_id or "")

    def client(n: int) -> list[str | None]:
        ids = [f"C{n:02d}M{i}" for i in range(5)]
        acks = send_mllp("127.0.0.1", bound, [adt(i) for i in ids], timeout=10)
        return [ack_of(a).get("MSA-2") for a in acks]

    with running_server(make_ack_handler(process)) as bound, ThreadPoolExecutor(20) as pool:
        results = list(pool.map(client, range(20)))
    assert results == [[f"C{n:02d}M{i}" for i in range(5)] for n in range(20)]
    assert len(seen) == 100
    for n in range(20):  # each connection's messages were processed in the order sent
        mine = [s for s in seen if s.startswith(f"C{n:02d}")]
        assert mine == [f"C{n:02d}M{i}" for i in range(5)]


def test_pipelined_messages_are_acknowledged_in_order(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"junk" + b"".join(frame(adt(f"P{i}")) for i in range(10)))
        acks = recv_frames(sock, 10)
    assert [ack_of(a).get("MSA-2") for a in acks] == [f"P{i}" for i in range(10)]


def test_truncated_frame_then_close_does_not_hurt_the_server(
        port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="unified_record.ingest.mllp")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(START_BLOCK + adt("CUT1")[:40])
    for _ in range(100):
        if "mid-frame" in caplog.text:
            break
        time.sleep(0.02)
    assert "connection closed mid-frame" in caplog.text
    assert "SMITH" not in caplog.text and "RXX01" not in caplog.text
    [raw] = send_mllp("127.0.0.1", port, [adt("AFTER1")])
    assert ack_of(raw).get("MSA-2") == "AFTER1"


def test_abrupt_reset_does_not_hurt_the_server(port: int) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.sendall(frame(adt("RST1")) + START_BLOCK + b"MSH|")
    sock.close()  # RST, possibly before the ACK is written
    [raw] = send_mllp("127.0.0.1", port, [adt("AFTER2")])
    assert ack_of(raw).get("MSA-2") == "AFTER2"


def test_failing_handler_gets_ae_and_logs_no_patient_data(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    def explode(raw: bytes) -> None:
        if b"BOOM" in raw:
            raise RuntimeError(f"cannot store {raw.decode()}")  # quotes patient data

    with running_server(make_ack_handler(explode)) as bound:
        acks = send_mllp("127.0.0.1", bound, [adt("BOOM1"), adt("FINE1")])
    first, second = (ack_of(a) for a in acks)
    assert first.get("MSA-1") == "AE" and first.get("MSA-2") == "BOOM1"
    assert first.get("ERR-1.4.1") == "207"
    assert second.get("MSA-1") == "AA"
    assert "BOOM1" in caplog.text and "RuntimeError" in caplog.text
    assert "SMITH" not in caplog.text and "9990000018" not in caplog.text


def _raises(raw: bytes) -> Any:
    raise ValueError("x")


@pytest.mark.parametrize("bad_handler", [
    _raises,
    lambda raw: "not bytes",
    lambda raw: b"ACK with \x1c inside",
])
def test_raw_handler_failures_get_ae(bad_handler: Callable[[bytes], Any]) -> None:
    async def handler(raw: bytes) -> bytes:
        result: bytes = bad_handler(raw)
        return result

    with running_server(handler) as bound:
        acks = send_mllp("127.0.0.1", bound, [adt("H1"), adt("H2")])
    assert [(ack_of(a).get("MSA-1"), ack_of(a).get("MSA-2")) for a in acks] == [
        ("AE", "H1"), ("AE", "H2")]


def test_application_hl7_error_gets_ae() -> None:
    def unknown_patient(raw: bytes) -> None:
        raise Hl7Error("patient not known", field="MRG-1", code=204)

    with running_server(make_ack_handler(unknown_patient)) as bound:
        [raw] = send_mllp("127.0.0.1", bound, [adt("MRG1", event="A40")])
    ack = ack_of(raw)
    assert ack.get("MSA-1") == "AE" and ack.get("MSA-3") == "MRG-1: patient not known"
    assert ack.get("ERR-1.1") == "MRG" and ack.get("ERR-1.4.1") == "204"


def test_oversized_frame_gets_ar_and_close() -> None:
    with running_server(make_ack_handler(validate), max_message_bytes=1000) as bound:
        with socket.create_connection(("127.0.0.1", bound), timeout=5) as sock:
            sock.sendall(frame(adt("BIG2") + b"NTE|" + b"x" * 5000 + b"\r"))
            acks = recv_frames(sock, 2)
        assert len(acks) == 1
        ack = ack_of(acks[0])
        assert ack.get("MSA-1") == "AR" and ack.get("MSA-2") == "BIG2"
        assert "larger than 1000 bytes" in (ack.get("MSA-3") or "")
        [raw] = send_mllp("127.0.0.1", bound, [adt("SMALL")])
        assert ack_of(raw).get("MSA-1") == "AA"


def test_idle_connections_are_closed() -> None:
    with running_server(make_ack_handler(validate), idle_timeout=0.2) as bound, \
            socket.create_connection(("127.0.0.1", bound), timeout=5) as sock:
        assert sock.recv(10) == b""


def test_send_mllp_reports_a_server_that_hangs_up() -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def hang_up() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.close()

    thread = threading.Thread(target=hang_up)
    thread.start()
    with pytest.raises(MllpError, match="closed before the acknowledgement of message 1"):
        send_mllp("127.0.0.1", listener.getsockname()[1], [adt("X")])
    thread.join(5)
    listener.close()


def test_server_under_asyncio_run() -> None:
    async def scenario() -> list[bytes]:
        server = await serve_mllp(make_ack_handler(validate), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(adt("AS1")) + frame(adt("AS2", pid=None)))
        await writer.drain()
        decoder, acks = MllpDecoder(), list[bytes]()
        while len(acks) < 2:
            acks.extend(decoder.feed(await asyncio.wait_for(reader.read(4096), 5)))
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return acks

    acks = asyncio.run(scenario())
    assert [ack_of(a).get("MSA-1") for a in acks] == ["AA", "AR"]
