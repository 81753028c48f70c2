"""Errors as the API answers them: OperationOutcome under /fhir, OAuth JSON elsewhere.

Nothing reaches a caller as a stack trace: an unexpected exception becomes a bare 500,
and the log gets its type and where it was raised, not its message (which may quote data).
"""

from __future__ import annotations

import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from unified_record.api.responses import outcome_response
from unified_record.audit.log import AuditWriteError

__all__ = [
    "AUDIT_NOT_WRITTEN",
    "REALM",
    "AuthenticationError",
    "FHIRError",
    "InsufficientScopeError",
    "install_error_handlers",
]

logger = logging.getLogger(__name__)

REALM = "unified-record"
AUDIT_NOT_WRITTEN = "the audit log could not be written; no data is returned"

# HTTP status -> FHIR issue type, for errors raised by the framework itself.
_ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found",
                405: "not-supported", 406: "not-supported", 409: "conflict", 410: "deleted",
                413: "too-costly", 415: "not-supported", 422: "processing",
                429: "throttled"}


class FHIRError(Exception):
    """Raise anywhere under /fhir to answer with an OperationOutcome."""

    def __init__(self, status: int, code: str, diagnostics: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.headers = headers


class AuthenticationError(FHIRError):
    """401: no token, or one that failed validation (RFC 6750 challenge attached)."""

    def __init__(self, reason: str | None) -> None:
        if reason is None:  # no credentials at all: RFC 6750 says no error code
            challenge = f'Bearer realm="{REALM}"'
            reason = "a Bearer access token is required"
        else:
            challenge = (f'Bearer realm="{REALM}", error="invalid_token", '
                         f'error_description="{reason}"')
        super().__init__(401, "login", reason, {"WWW-Authenticate": challenge})


class InsufficientScopeError(FHIRError):
    """403: a valid token whose scopes do not cover the interaction."""

    def __init__(self, resource_type: str, interaction: str) -> None:
        reason = f"the token's scopes do not allow {interaction} on {resource_type}"
        challenge = (f'Bearer realm="{REALM}", error="insufficient_scope", '
                     f'error_description="{reason}"')
        super().__init__(403, "forbidden", reason, {"WWW-Authenticate": challenge})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(FHIRError, _fhir_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(AuditWriteError, _audit_unwritable)  # type: ignore[arg-type]
    app.add_middleware(CatchAll)


def is_fhir_path(request: Request) -> bool:
    """Under /fhir, or the governance API (/governance): errors as OperationOutcome."""
    path = request.url.path.removeprefix(request.scope.get("root_path", ""))
    return path in ("/fhir", "/governance") or path.startswith(("/fhir/", "/governance/"))


async def _fhir_error(_request: Request, exc: FHIRError) -> Response:
    return outcome_response(exc.status, exc.code, exc.diagnostics, exc.headers)


async def _audit_unwritable(request: Request, _exc: AuditWriteError) -> Response:
    """The audit entries of an answer commit with it (`AuditLog.append_at_commit`): if they
    could not be written, the request fails closed, whichever step noticed."""
    logger.error("audit log not written on %s %s: request failed closed", request.method,
                 request.url.path)
    if not is_fhir_path(request):
        return JSONResponse({"error": "server_error"}, status_code=500)
    return outcome_response(500, "exception", AUDIT_NOT_WRITTEN)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if not is_fhir_path(request):
        return await http_exception_handler(request, exc)
    code = _ISSUE_CODES.get(exc.status_code, "processing")
    diagnostics = "no such FHIR endpoint" if exc.status_code == 404 else str(exc.detail)
    return outcome_response(exc.status_code, code, diagnostics, dict(exc.headers or {}))


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    if not is_fhir_path(request):
        return await request_validation_exception_handler(request, exc)
    errors = exc.errors()
    # A body that parsed but is not acceptable is 422 (unprocessable); anything else is 400.
    in_body = all(e["loc"][:1] == ("body",) and e["type"] != "json_invalid" for e in errors)
    status = 422 if errors and in_body else 400
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return outcome_response(status, "invalid" if status == 400 else "processing",
                            f"{where}: {first['msg']}{more}")


class CatchAll:
    """Outermost-but-one layer: turn an unhandled exception into a generic 500.

    Starlette's own error middleware answers 500 but then re-raises, and the server logs
    the whole traceback with the exception's message; this layer stops the exception first.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            frames = traceback.extract_tb(exc.__traceback__)[-3:]
            where = " <- ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                                for f in reversed(frames))
            logger.error("unhandled %s on %s %s at %s", type(exc).__name__,
                         scope.get("method"), scope.get("path"), where)
            if started:
                return
            request = Request(scope)
            response: Response
            if is_fhir_path(request):
                response = outcome_response(500, "exception", "internal server error")
            else:
                response = JSONResponse({"error": "server_error"}, status_code=500)
            await response(scope, receive, send)
