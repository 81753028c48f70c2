"""The per-worker concurrency limit: no more requests in progress than configured, the rest
wait their turn (and all of them are answered)."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message, Receive, Scope, Send

from unified_record.api.limits import ConcurrencyLimit
from unified_record.config import Settings, load_settings


def test_requests_beyond_the_limit_wait_their_turn() -> None:
    in_progress = 0
    most = 0

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal in_progress, most
        in_progress += 1
        most = max(most, in_progress)
        await asyncio.sleep(0.01)
        in_progress -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = ConcurrencyLimit(app, limit=3)
    answered: list[int] = []

    async def request() -> None:
        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered.append(message["status"])

        await limited({"type": "http", "method": "GET", "path": "/fhir/metadata",
                       "headers": []}, receive, send)

    async def main() -> None:
        await asyncio.gather(*(request() for _ in range(20)))

    asyncio.run(main())
    asyncio.run(main())  # a second event loop gets its own semaphore
    assert most == 3
    assert answered == [200] * 40


def test_limit_comes_from_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().max_concurrent_requests == 7  # half of SQLAlchemy's 5 + 10 pool
    monkeypatch.setenv("UR_MAX_CONCURRENT_REQUESTS", "3")
    assert load_settings().max_concurrent_requests == 3
