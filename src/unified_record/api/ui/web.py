"""The /ui sub-application: session middleware, static assets, sign-in and the pages.

`mount_ui(app)` is all the app factory calls. The GOV.UK Frontend files come from the npm
package installed by `make` (node_modules, never committed); the app serves them itself.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
from authlib.integrations.starlette_client import OAuth, OAuthError
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from joserfc.errors import JoseError
from starlette.middleware.sessions import SessionMiddleware

from unified_record.api.errors import FHIRError
from unified_record.api.ui import governance, quality, records, steward
from unified_record.api.ui.session import (
    CSRFError,
    Forbidden,
    FormDep,
    NotSignedIn,
    UserDep,
    enforcement,
    new_csrf,
    purpose_choices,
)
from unified_record.api.ui.settings import UISettings, load_ui_settings, role_from_claim
from unified_record.api.ui.templating import render
from unified_record.config import Settings
from unified_record.consent.enforcement import AccessRefused
from unified_record.security.login import WEB_CLIENT_ID

__all__ = ["mount_ui"]

STATIC_DIR = Path(__file__).parent / "static"
router = APIRouter()


def mount_ui(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    ui_settings = load_ui_settings(settings)
    ui = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    ui.state.main = app
    ui.state.ui_settings = ui_settings
    ui.state.oauth = _oauth_client(app, settings, ui_settings)
    secret = ui_settings.session_secret or hashlib.sha256(
        b"unified-record ui session|" + app.state.signing_key.key.as_pem(private=True)
    ).hexdigest()
    ui.add_middleware(SessionMiddleware, secret_key=secret, session_cookie="ur_session",
                      max_age=ui_settings.session_minutes * 60, path="/ui", same_site="lax",
                      https_only=settings.resolved_public_url.startswith("https://"))
    assets = ui_settings.resolved_assets_dir / "govuk-frontend" / "dist" / "govuk"
    if (assets / "assets").is_dir():
        ui.mount("/assets", StaticFiles(directory=assets / "assets"), name="assets")
    ui.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    ui.include_router(router)
    for module in (records, steward, governance, quality):
        ui.include_router(module.router)
    _install_handlers(ui)
    app.mount("/ui", ui)


def _oauth_client(app: FastAPI, settings: Settings, ui: UISettings) -> Any:
    oauth = OAuth()
    if ui.oidc_issuer:
        oauth.register(
            "issuer", client_id=ui.oidc_client_id, client_secret=ui.oidc_client_secret,
            server_metadata_url=f"{ui.oidc_issuer.rstrip('/')}/.well-known/openid-configuration",
            client_kwargs={"scope": ui.oidc_scope, "code_challenge_method": "S256"})
    else:
        # The built-in issuer is this very app: talk to it in process, not over the network.
        base = settings.resolved_public_url
        oauth.register(
            "issuer", client_id=WEB_CLIENT_ID,
            server_metadata_url=f"{base}/.well-known/openid-configuration",
            client_kwargs={"scope": "openid profile", "code_challenge_method": "S256",
                           "token_endpoint_auth_method": "none",
                           "transport": httpx2.ASGITransport(app=app)})
    return oauth.create_client("issuer")


def _install_handlers(ui: FastAPI) -> None:
    @ui.exception_handler(NotSignedIn)
    async def not_signed_in(request: Request, _exc: NotSignedIn) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)

    @ui.exception_handler(Forbidden)
    async def forbidden(request: Request, _exc: Forbidden) -> Response:
        return render(request, "error.html", {
            "title": "You cannot use this page",
            "message": "Your role does not give access to this page."}, status=403)

    @ui.exception_handler(CSRFError)
    async def csrf(request: Request, _exc: CSRFError) -> Response:
        return render(request, "error.html", {
            "title": "The form could not be accepted",
            "message": "The form had expired or did not come from this service. Go back, "
                       "reload the page and try again."}, status=403)

    @ui.exception_handler(AccessRefused)
    async def purpose_refused(request: Request, _exc: AccessRefused) -> Response:
        return render(request, "error.html", {
            "title": "Access refused",
            "message": "Your role may not do this for the purpose of use you chose. Change "
                       "the purpose of use, or ask information governance."}, status=403)

    @ui.exception_handler(FHIRError)
    async def refused(request: Request, exc: FHIRError) -> Response:
        status = getattr(exc, "status", 500)
        message = ("Your role may not use the purpose of use you chose for this. Change the "
                   "purpose of use, or ask information governance." if status == 403 else
                   "Something went wrong; no data is shown.")
        return render(request, "error.html", {"title": "Access refused" if status == 403
                                              else "Sorry, there is a problem",
                                              "message": message}, status=status)


# -- static files -------------------------------------------------------------------------


@cache
def _govuk_css(path: Path) -> str:
    """GOV.UK Frontend's stylesheet with its asset URLs under /ui/assets."""
    return path.read_text("utf-8").replace("url(/assets/", "url(/ui/assets/")


@router.get("/govuk/govuk-frontend.min.css", include_in_schema=False)
def govuk_css(request: Request) -> Response:
    path = (request.app.state.ui_settings.resolved_assets_dir / "govuk-frontend" / "dist"
            / "govuk" / "govuk-frontend.min.css")
    if not path.is_file():
        return Response("/* govuk-frontend is not installed: run make */", media_type="text/css")
    return Response(_govuk_css(path), media_type="text/css",
                    headers={"Cache-Control": "public, max-age=3600"})


@router.get("/govuk/govuk-frontend.min.js", include_in_schema=False)
def govuk_js(request: Request) -> Response:
    path = (request.app.state.ui_settings.resolved_assets_dir / "govuk-frontend" / "dist"
            / "govuk" / "govuk-frontend.min.js")
    if not path.is_file():
        return Response("", media_type="text/javascript")
    return FileResponse(path, media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=3600"})


# -- sign-in, purpose of use, sign-out ------------------------------------------------------


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/ui/") and not target.startswith("//") \
        else "/ui/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    if isinstance(request.session.get("user"), dict):
        return RedirectResponse(_safe_next(next), status_code=303)
    request.session["next"] = _safe_next(next)
    return render(request, "login.html", {"title": "Sign in"})


@router.get("/login/start")
async def login_start(request: Request) -> Response:
    base = request.app.state.main.state.settings.resolved_public_url
    client = request.app.state.oauth
    response: Response = await client.authorize_redirect(request, f"{base}/ui/auth/callback")
    return response


@router.get("/auth/callback")
async def auth_callback(request: Request) -> Response:
    client = request.app.state.oauth
    ui: UISettings = request.app.state.ui_settings
    try:
        # Checks the state, the code (at the provider), and the ID token: signature (the
        # provider's JWKS), issuer, audience, expiry and nonce.
        token = await client.authorize_access_token(request)
    except (OAuthError, JoseError, httpx2.HTTPError, ValueError):
        return _sign_in_failed(request)
    info = token.get("userinfo") or {}
    # The token must come from the provider configured here, not merely from whatever
    # issuer its discovery document names (OpenID Connect Discovery 4.3, Core 3.1.3.7).
    if str(info.get("iss", "")).rstrip("/") != _issuer(request):
        return _sign_in_failed(request)
    policy = enforcement(request).policy
    role = role_from_claim(info.get(ui.role_claim), ui, policy.roles)
    organisation = info.get(ui.organisation_claim)
    if not info.get("sub") or role is None:
        return render(request, "error.html", {
            "title": "Sign-in refused",
            "message": "Your account has no role that this service knows."}, status=403)
    next_page = _safe_next(request.session.get("next"))
    request.session.clear()
    request.session["user"] = {"sub": str(info["sub"]), "name": str(info.get("name") or
                                                                      info["sub"]),
                               "role": str(role), "organisation": str(organisation or ""),
                               "issuer": str(info.get("iss", ""))}
    new_csrf(request)
    request.session["next"] = next_page
    return RedirectResponse("/ui/purpose", status_code=303)


def _sign_in_failed(request: Request) -> Response:
    return render(request, "error.html", {
        "title": "Sign-in failed",
        "message": "The sign-in could not be completed. Try again."}, status=400)


def _issuer(request: Request) -> str:
    """The staff sign-in provider's issuer URL: the external one, else this service."""
    ui: UISettings = request.app.state.ui_settings
    return (ui.oidc_issuer or request.app.state.main.state.settings.resolved_public_url
            ).rstrip("/")


@router.get("/purpose", response_class=HTMLResponse)
def purpose_page(request: Request, user: UserDep) -> Response:
    return render(request, "purpose.html", {"title": "Purpose of use",
                                            "choices": purpose_choices(request, user.role),
                                            "error": None})


@router.post("/purpose")
def purpose_choose(request: Request, user: UserDep, form: FormDep) -> Response:
    chosen = form.get("purpose", "")
    choices = purpose_choices(request, user.role)
    if chosen not in {code for code, _ in choices}:
        return render(request, "purpose.html", {
            "title": "Purpose of use", "choices": choices,
            "error": "Select why you are using the record"}, status=400)
    request.session["purpose"] = chosen
    request.session.pop("view_purpose", None)  # a new choice applies to every record again
    return RedirectResponse(_safe_next(request.session.pop("next", None)), status_code=303)


@router.post("/logout")
def logout(request: Request, _user: UserDep, _form: FormDep) -> Response:
    request.session.clear()
    return RedirectResponse("/ui/signed-out", status_code=303)


@router.get("/signed-out", response_class=HTMLResponse)
def signed_out(request: Request) -> Response:
    return render(request, "signed_out.html", {"title": "You have signed out"})


@router.get("/", response_class=HTMLResponse)
def home(request: Request, user: UserDep) -> Response:
    if not user.purpose:
        return RedirectResponse("/ui/purpose", status_code=303)
    return render(request, "home.html", {"title": "Unified Record"})
