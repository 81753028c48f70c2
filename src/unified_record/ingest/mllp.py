"""MLLP, the framing HL7 v2 travels in over TCP: framing, an asyncio server, a small client.

A frame is 0x0B, the message, 0x1C 0x0D. The server acknowledges every message it receives,
in order, on the connection it came on; nothing a sender does (garbage, truncated frames,
oversized frames, a failing handler) stops it serving the others. Logs name the peer and the
message control id, never message content, which is patient data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

from unified_record.ingest.hl7v2 import (
    APPLICATION_INTERNAL_ERROR,
    Hl7Error,
    build_ack,
    parse_message,
)

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "END_BLOCK",
    "START_BLOCK",
    "FrameTooLarge",
    "Handler",
    "MllpDecoder",
    "MllpError",
    "frame",
    "make_ack_handler",
    "read_mllp_stream",
    "send_mllp",
    "serve_mllp",
]

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024
DEFAULT_IDLE_TIMEOUT = 300.0  # seconds; senders reconnect, and dead peers free their slot
Handler = Callable[[bytes], Awaitable[bytes]]

log = logging.getLogger(__name__)
_START, _END, _CR = 0x0B, 0x1C, 0x0D
_HEAD_BYTES = 4096  # kept of an oversized frame, to answer it with its own MSH-10
_READ_SIZE = 64 * 1024


def frame(message: bytes) -> bytes:
    """The message wrapped in MLLP start and end blocks."""
    if b"\x0b" in message or b"\x1c" in message:
        raise ValueError("an MLLP message cannot contain the block characters 0x0B or 0x1C")
    return START_BLOCK + message + END_BLOCK


def read_mllp_stream(data: bytes) -> list[bytes]:
    """The messages of a whole `.mllp` file, strictly: a file is complete or it is wrong.

    Whitespace between frames is allowed and a missing 0x0D after 0x1C tolerated; anything
    else outside a frame, a frame cut off by the next start block, or a final frame with no
    end block (the file was cut short) raises MllpError naming the frame and byte offset.
    """
    messages: list[bytes] = []
    pos = 0
    while True:
        start = data.find(START_BLOCK, pos)
        gap = data[pos:start if start != -1 else len(data)]
        if gap.strip(b" \t\r\n"):
            offset = pos + len(gap) - len(gap.lstrip(b" \t\r\n"))
            raise MllpError(f"byte {offset}: data outside any MLLP frame (after frame "
                            f"{len(messages)}); not an MLLP stream, or corrupted")
        if start == -1:
            return messages
        number = len(messages) + 1
        end = data.find(b"\x1c", start + 1)
        if end == -1:
            raise MllpError(f"truncated final frame: frame {number} starting at byte {start} "
                            "has no end block (0x1C 0x0D); the stream was cut short")
        body = data[start + 1:end]
        if START_BLOCK in body:
            raise MllpError(f"frame {number} starting at byte {start} has no end block before "
                            "the next start block (truncated frame)")
        messages.append(body)
        pos = end + 1
        if data[pos:pos + 1] == b"\r":
            pos += 1


async def serve_mllp(handler: Handler, host: str = "127.0.0.1", port: int = 2575, *,
                     max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                     idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT) -> asyncio.Server:
    """Start an MLLP listener; `handler` gets each message's bytes and returns its ACK.

    Connections are served concurrently, each one's messages strictly in order. A handler
    that raises gets the sender an AE ACK; a frame over `max_message_bytes` an AR ACK and a
    closed connection; a connection silent for `idle_timeout` seconds (None: never) is closed.
    """

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cancelled at shutdown: end quietly (3.11 logs a cancelled connection task as an error).
        with contextlib.suppress(asyncio.CancelledError):
            await _serve_connection(reader, writer, handler, max_message_bytes, idle_timeout)

    return await asyncio.start_server(on_connection, host, port)


def make_ack_handler(process: Callable[[bytes], object]) -> Handler:
    """A handler that runs `process(raw)` in a worker thread and acknowledges the outcome.

    AA when it returns; when it raises Hl7Error, AR for a structural rejection
    (`Hl7Error.reject`) or AE for an application error, with the reason and its location in
    MSA-3 and ERR. Any other exception propagates, and the server answers AE.
    """

    async def handle(raw: bytes) -> bytes:
        return await asyncio.to_thread(_process_and_ack, process, raw)

    return handle


def send_mllp(host: str, port: int, messages: list[bytes], timeout: float = 5.0) -> list[bytes]:
    """Send messages one at a time on one connection, each waiting for its ACK; the ACKs."""
    acks: list[bytes] = []
    decoder = MllpDecoder()
    received: list[bytes] = []
    with socket.create_connection((host, port), timeout=timeout) as sock:
        for message in messages:
            sock.sendall(frame(message))
            while not received:
                chunk = sock.recv(_READ_SIZE)
                if not chunk:
                    raise MllpError(f"connection closed before the acknowledgement of message "
                                    f"{len(acks) + 1}")
                received.extend(decoder.feed(chunk))
            acks.append(received.pop(0))
    return acks


class MllpError(Exception):
    """A stream that is not valid MLLP; the message says where, never what."""


class FrameTooLarge(MllpError):
    """A frame grew past the size limit. `messages` completed before it in the same feed;
    `head` is the frame's first bytes, enough to read its MSH for the rejection."""

    def __init__(self, messages: list[bytes], head: bytes, limit: int) -> None:
        super().__init__(f"MLLP frame larger than {limit} bytes")
        self.messages = messages
        self.head = head
        self.limit = limit


class MllpDecoder:
    """Incremental deframer: feed bytes as they arrive, get back each complete message.

    Bytes outside frames are dropped and counted in `discarded`; a frame cut off by a new
    start block is dropped and counted in `truncated`. A frame over the size limit raises
    FrameTooLarge; feeding on afterwards skips the rest of it and carries on.
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self.discarded = 0
        self.truncated = 0
        self._frame = bytearray()
        self._in_frame = False
        self._skipping = False  # inside a frame already rejected as too large
        self._after_end = False  # just saw 0x1C: a following 0x0D belongs to it
        self._pending = b""  # input left unread when FrameTooLarge was raised

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not ended (a close now truncates it)."""
        return self._in_frame

    @property
    def buffered(self) -> int:
        """Bytes held of the frame in progress."""
        return len(self._frame)

    def feed(self, data: bytes) -> list[bytes]:
        if self._pending:
            data, self._pending = self._pending + data, b""
        messages: list[bytes] = []
        i, n = 0, len(data)
        while i < n:
            if not self._in_frame:
                if self._after_end:
                    self._after_end = False
                    if data[i] == _CR:
                        i += 1
                        continue
                start = data.find(START_BLOCK, i)
                self.discarded += (n if start == -1 else start) - i
                if start == -1:
                    break
                self._in_frame, i = True, start + 1
                continue
            end = _find_block(data, i)
            stop = n if end == -1 else end
            if not self._skipping:
                if len(self._frame) + stop - i > self.max_message_bytes:
                    head = (bytes(self._frame[:_HEAD_BYTES]) + data[i:i + _HEAD_BYTES])
                    self._frame.clear()
                    self._skipping, self._pending = True, data[i:]
                    raise FrameTooLarge(messages, head[:_HEAD_BYTES], self.max_message_bytes)
                self._frame += data[i:stop]
            if end == -1:
                break
            if data[end] == _END:
                if not self._skipping:
                    messages.append(bytes(self._frame))
                self._in_frame, self._after_end = False, True
            else:  # a start block inside a frame: the sender gave up on the previous one
                self.truncated += 1
                self.discarded += len(self._frame)
            self._frame.clear()
            self._skipping = False
            i = end + 1
        return messages


# --- internals --------------------------------------------------------------------------------


def _find_block(data: bytes, start: int) -> int:
    """Index of the first 0x1C or 0x0B at or after `start`, or -1."""
    end = data.find(b"\x1c", start)
    restart = data.find(START_BLOCK, start, end if end != -1 else len(data))
    return restart if restart != -1 else end


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            handler: Handler, max_message_bytes: int,
                            idle_timeout: float | None) -> None:
    peer = _peer(writer)
    decoder = MllpDecoder(max_message_bytes)
    log.debug("MLLP %s: connected", peer)
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(_READ_SIZE), idle_timeout)
            except TimeoutError:
                log.info("MLLP %s: idle for %s s, closing", peer, idle_timeout)
                break
            if not chunk:
                if decoder.in_frame:
                    log.warning("MLLP %s: connection closed mid-frame; truncated message of "
                                "%d bytes dropped", peer, decoder.buffered)
                break
            try:
                messages, too_large = decoder.feed(chunk), None
            except FrameTooLarge as exc:
                messages, too_large = exc.messages, exc
            for raw in messages:
                writer.write(await _acknowledge(handler, raw, peer))
                await writer.drain()
            if too_large is not None:
                log.warning("MLLP %s: frame over %d bytes rejected; closing", peer,
                            too_large.limit)
                ack = build_ack(None, too_large.head, "AR",
                                f"message larger than {too_large.limit} bytes",
                                error_code=APPLICATION_INTERNAL_ERROR)
                writer.write(frame(ack))
                await writer.drain()
                break
        if decoder.discarded or decoder.truncated:
            log.warning("MLLP %s: %d bytes outside frames and %d truncated frames dropped",
                        peer, decoder.discarded, decoder.truncated)
    except (ConnectionError, OSError) as exc:
        log.info("MLLP %s: connection lost (%s)", peer, type(exc).__name__)
    except Exception as exc:  # never let one connection's failure reach the server
        log.error("MLLP %s: connection failed (%s)", peer, type(exc).__name__)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
        log.debug("MLLP %s: closed", peer)


async def _acknowledge(handler: Handler, raw: bytes, peer: str) -> bytes:
    """The framed ACK for one message; AE when the handler fails or returns no usable ACK."""
    try:
        ack = await handler(raw)
        if not isinstance(ack, bytes):
            raise TypeError("handler returned no bytes")
        return frame(ack)
    except Exception as exc:
        # The exception text may quote the message; log its type and the control id only.
        log.error("MLLP %s: handler failed on message %s (%s); answering AE", peer,
                  _control_id(raw), type(exc).__name__)
        return frame(_ack(raw, "AE", "internal error", None, APPLICATION_INTERNAL_ERROR))


def _process_and_ack(process: Callable[[bytes], object], raw: bytes) -> bytes:
    try:
        process(raw)
    except Hl7Error as exc:
        log.info("message %s: %s %s", _control_id(raw), exc.ack_code, exc)  # Hl7Error: no values
        return _ack(raw, exc.ack_code, str(exc), exc.location, exc.code)
    return _ack(raw, "AA", "", None, None)


def _ack(raw: bytes, code: str, text: str, location: str | None,
         error_code: int | None) -> bytes:
    try:
        message = parse_message(raw, validate=False)
    except Hl7Error:
        message = None
    return build_ack(message, raw, code, text, location, error_code=error_code)


def _control_id(raw: bytes) -> str:
    """MSH-10 for logs (a message id, not patient data)."""
    try:
        control_id = parse_message(raw, validate=False).control_id
    except Hl7Error:
        control_id = None
    return repr(control_id) if control_id else "(no control id)"


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
