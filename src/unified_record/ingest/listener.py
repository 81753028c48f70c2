"""The MLLP listener wired to the ingest pipeline: every message stored, then acknowledged.

The ACK is sent only after the raw message is committed, so an AA, AE or AR always means the
message is safely kept. Structural problems are answered AR, content problems (a mapping or
FHIR validation failure, an impossible date) AE with the reason; a re-sent message that is
already stored gets AA again, so a sender that lost an ACK can simply retry.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable

from unified_record.ingest.hl7v2 import DATA_TYPE_ERROR, Hl7Error, parse_message
from unified_record.ingest.mllp import serve_mllp
from unified_record.ingest.pipeline import Pipeline
from unified_record.ingest.sources import SourceMessage, control_id_of

log = logging.getLogger(__name__)


def pipeline_processor(pipeline: Pipeline, feed: str) -> Callable[[bytes], object]:
    """`process(raw)` for `make_ack_handler`: ingest one message, raise Hl7Error if it was
    not accepted. Messages are processed one at a time (one writer, any number of senders)."""
    pipeline.mapping(feed)  # fail now, not on the first message
    lock = threading.Lock()

    def process(raw: bytes) -> object:
        with lock:
            outcome = pipeline.process_one(feed, SourceMessage(raw, "mllp", control_id_of(raw)))
        if outcome.status != "quarantined":
            return outcome
        parse_message(raw)  # raises the HL7 reason (AR or AE, with the field) when there is one
        raise Hl7Error(outcome.reason or "not accepted", code=DATA_TYPE_ERROR)

    return process


async def run_listener(pipeline: Pipeline, feed: str, host: str, port: int,
                       on_ready: Callable[[int], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then stop accepting and let open work finish."""
    from unified_record.ingest.mllp import make_ack_handler

    server = await serve_mllp(make_ack_handler(pipeline_processor(pipeline, feed)), host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    log.info("MLLP listener for feed %s on %s:%s", feed, host, bound)
    if on_ready:
        on_ready(bound)
    async with server:
        await stop.wait()
        server.close()
        await server.wait_closed()
