"""A request-body size limit (``UR_MAX_BODY_BYTES``), enforced before any route reads it.

A request that declares a larger `Content-Length` is answered 413 at once, without reading
a byte of its body. A body sent without a length (chunked) is counted as it arrives; the
chunk that passes the limit raises a 413 `HTTPException`, which the error handlers turn into
an OperationOutcome under /fhir (and OAuth-style JSON elsewhere). Either way the route never
sees a partial body, so nothing is stored.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from unified_record.api.responses import outcome_response

__all__ = ["BodySizeLimit", "install"]


def install(app: FastAPI, max_bytes: int) -> None:
    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)


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
