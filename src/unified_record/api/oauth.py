"""The built-in authorization server's endpoints: token, keys, and SMART discovery."""

from __future__ import annotations

import urllib.parse

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from unified_record.security.authorization_server import ASSERTION_TYPE, AuthorizationServer
from unified_record.security.signing_key import SigningKey

__all__ = ["router"]

router = APIRouter(tags=["OAuth"])

MAX_TOKEN_REQUEST_BYTES = 64 * 1024
_FORM = "application/x-www-form-urlencoded"
_TOKEN_REQUEST_DOC = {
    "requestBody": {
        "required": True,
        "content": {_FORM: {"schema": {
            "type": "object",
            "required": ["grant_type"],
            "properties": {
                "grant_type": {"type": "string", "enum": ["client_credentials"]},
                "scope": {"type": "string", "example": "system/Patient.rs"},
                "client_assertion_type": {"type": "string", "enum": [ASSERTION_TYPE]},
                "client_assertion": {"type": "string",
                                     "description": "JWT signed with RS384 or ES384"},
            },
        }}},
    },
}


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status,
                        headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@router.post(
    "/oauth/token",
    summary="Get an access token (client_credentials)",
    description="SMART Backend Services: authenticate with a signed JWT assertion "
                "(private_key_jwt). Errors follow RFC 6749 section 5.2.",
    openapi_extra=_TOKEN_REQUEST_DOC,
)
async def token(request: Request) -> JSONResponse:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _FORM:
        return _oauth_error(400, "invalid_request", f"the request body must be {_FORM}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_TOKEN_REQUEST_BYTES:
            return _oauth_error(400, "invalid_request", "the request body is too large")
    try:
        form = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                      max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return _oauth_error(400, "invalid_request", "the request body is not a valid form")
    server: AuthorizationServer = request.app.state.authorization_server
    result = await run_in_threadpool(server.token_response, form,
                                     request.headers.get("authorization"))
    return JSONResponse(result.body, status_code=result.status, headers=result.headers)


@router.get("/oauth/jwks", summary="The token issuer's public keys (JWKS)")
def jwks(request: Request) -> JSONResponse:
    key: SigningKey = request.app.state.signing_key
    return JSONResponse(key.public_jwks(), headers={"Cache-Control": "public, max-age=300"})


@router.get("/.well-known/smart-configuration", summary="SMART on FHIR discovery")
@router.get("/fhir/.well-known/smart-configuration", include_in_schema=False)
def smart_configuration(request: Request) -> JSONResponse:
    server: AuthorizationServer = request.app.state.authorization_server
    return JSONResponse(server.smart_configuration(request.app.state.jwks_uri))
