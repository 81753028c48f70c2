"""Limits on what one request may ask of a worker: its body size and its turn.

**Concurrency** (``UR_MAX_CONCURRENT_REQUESTS``, per worker): at most that many requests are
in progress at once; the others wait in the event loop, holding nothing. A request can hold
two database connections at the same time (its unit of work, and the audit log's own short
transaction), so with more requests in flight than half the connection pool, each can hold
one connection while waiting for a second that no one frees until the pool gives up (30 s,
then a 500). Under load that is what happened (issue 6's benchmark: timeouts, not slowness).

**Body size** (``UR_MAX_BODY_BYTES``), enforced before any route reads the body.

A request that declares a larger `Content-Length` is answered 413 at once, without reading
a byte of its body. A body sent without a length (chunked) is counted as it arrives; the
chunk that passes the limit raises a 413 `HTTPException`, which the error handlers turn into
an OperationOutcome under /fhir (and OAuth-style JSON elsewhere). Either way the route never
sees a partial body, so nothing is stored.
"""

from __future__ import annotations

import asyncio
from weakref import WeakKeyDictionary

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from unified_record.api.responses import outcome_response
from unified_record.config import Settings

__all__ = ["BodySizeLimit", "ConcurrencyLimit", "install"]


def install(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(ConcurrencyLimit, limit=settings.max_concurrent_requests)
    # Added last, so outermost: an oversized request is refused without waiting its turn.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)


class ConcurrencyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        # One semaphore per event loop (a test may serve the same app from several loops).
        self._semaphores: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            WeakKeyDictionary())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.limit)
        async with semaphore:
            await self.app(scope, receive, send)


def _too_large(max_bytes: int) -> str:
    return f"the request body is larger than this server accepts ({max_bytes} bytes)"


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, _too_large(self.max_bytes))
            return message

        await self.app(scope, counting_receive, send)

    def _refuse(self, scope: Scope) -> Response:
        path: str = scope.get("path", "")
        path = path.removeprefix(scope.get("root_path", ""))
        # The client may still be sending: ask it to stop rather than read what it sends.
        headers = {"Connection": "close"}
        if path == "/fhir" or path.startswith("/fhir/"):
            return outcome_response(413, "too-costly", _too_large(self.max_bytes), headers)
        return JSONResponse({"error": "invalid_request",
                             "error_description": _too_large(self.max_bytes)},
                            status_code=413, headers=headers)


def _content_length(scope: Scope) -> int | None:
    """The declared length; a malformed one counts as unknown (the body is then counted)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
