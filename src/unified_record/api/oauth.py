"""The built-in authorization server's endpoints: token, keys, SMART discovery, and (embedded
default only) the staff sign-in of the web pages: OpenID Connect discovery and the
authorization endpoint with its demo-user login page (`security.login`)."""

from __future__ import annotations

import urllib.parse

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from unified_record.security.authorization_server import ASSERTION_TYPE, AuthorizationServer
from unified_record.security.login import DEMO_USERS, LoginError, LoginServer, RelyingParty
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
    if dict(form).get("grant_type") == "authorization_code":
        login = login_server(request)
        if login is None:
            return _oauth_error(400, "unsupported_grant_type",
                                "authorization_code is not offered here")
        result = await run_in_threadpool(login.token_response, dict(form),
                                         request.headers.get("authorization"))
        return JSONResponse(result.body, status_code=result.status, headers=result.headers)
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


# -- staff sign-in for the web pages (embedded default only) --------------------------------


def login_server(request: Request) -> LoginServer | None:
    """The demo identity provider, or None in production (an external provider signs in)."""
    state = request.app.state
    if state.settings.env == "production":
        return None
    if getattr(state, "login_server", None) is None:
        server: AuthorizationServer = state.authorization_server
        settings = state.settings
        other = RelyingParty(settings.login_client_id, settings.login_client_secret, tuple(
            uri.strip() for uri in settings.login_redirect_uris.split(",") if uri.strip())
        ) if settings.login_client_id else None
        state.login_server = LoginServer(state.signing_key, server.clients,
                                         issuer=settings.resolved_public_url,
                                         relying_party=other)
    login: LoginServer = state.login_server
    return login


_AUTHORIZE_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
                     "code_challenge", "code_challenge_method")


@router.get("/.well-known/openid-configuration", include_in_schema=False)
def openid_configuration(request: Request) -> Response:
    login = login_server(request)
    if login is None:
        return Response(status_code=404)
    return JSONResponse(login.openid_configuration(request.app.state.jwks_uri))


@router.get("/oauth/authorize", include_in_schema=False)
def authorize_page(request: Request) -> Response:
    from unified_record.api.ui.templating import render_login_page

    login = login_server(request)
    if login is None:
        return Response("Not found", status_code=404)
    params = {k: v for k, v in request.query_params.items() if k in _AUTHORIZE_PARAMS}
    try:
        login.check_request(params)
    except LoginError as exc:
        return render_login_page(request, params, DEMO_USERS, error=str(exc), status=400)
    return render_login_page(request, params, DEMO_USERS)


@router.post("/oauth/authorize", include_in_schema=False)
async def authorize_choose(request: Request) -> Response:
    from unified_record.api.ui.templating import login_form_token

    login = login_server(request)
    if login is None:
        return Response("Not found", status_code=404)
    form = await request.form()
    params = {k: str(v) for k, v in form.items() if k in _AUTHORIZE_PARAMS}
    if not hmac_equal(str(form.get("csrf_token", "")), login_form_token(request, params)):
        return HTMLResponse("The form has expired; go back and sign in again.", 400)
    try:
        target = login.issue_code(params, str(form.get("user", "")))
    except LoginError as exc:
        return HTMLResponse(f"Sign-in refused: {exc}", 400)
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})


def hmac_equal(a: str, b: str) -> bool:
    import hmac

    return bool(a) and hmac.compare_digest(a.encode(), b.encode())
