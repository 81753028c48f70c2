"""The per-worker concurrency limit: no more requests in progress than configured, the rest
wait their turn (and all of them are answered)."""

from __future__ import annotations

import asyncio

import pytest
from starlette.types import Message, Receive, Scope, Send

from unified_record.api.limits import ConcurrencyLimit
from unified_record.config import Settings, load_settings
from unified_record.store import make_engine


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
    assert Settings().max_concurrent_requests == 7
    monkeypatch.setenv("UR_MAX_CONCURRENT_REQUESTS", "3")
    assert load_settings().max_concurrent_requests == 3


def test_each_worker_keeps_open_every_connection_its_requests_can_hold(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection opened past the pool and closed after one request costs a new PostgreSQL
    backend, which reads the catalog and plans every statement afresh (under load that was
    over a hundred new backends a minute)."""
    from unified_record.api import app as app_module

    asked: dict[str, object] = {}
    real = app_module.make_engine

    def spy(url: str, **kwargs: object) -> object:
        asked.update(kwargs)
        return real(url, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(app_module, "make_engine", spy)
    app = app_module.create_app(settings.model_copy(update={"max_concurrent_requests": 4}))
    app.state.pipeline.close()
    app.state.engine.dispose()
    assert asked["pool_size"] == 8
    postgresql = make_engine("postgresql+psycopg://u@127.0.0.1:1/none", pool_size=8)
    assert (postgresql.pool.size(), postgresql.pool._max_overflow) == (8, 10)  # type: ignore[attr-defined]
    assert make_engine("postgresql+psycopg://u@127.0.0.1:1/none").pool.size() == 5  # type: ignore[attr-defined]
