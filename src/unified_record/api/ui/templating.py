"""Jinja2 templates of the web pages, and the few helpers every page needs."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from unified_record.security.login import DemoUser

__all__ = ["TEMPLATES_DIR", "login_form_token", "render", "render_login_page", "templates"]

TEMPLATES_DIR = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def org_name(code: str | None, organisations: Mapping[str, Any]) -> str:
    if not code:
        return "Unknown source"
    org = organisations.get(code)
    return f"{org.name} ({code})" if org is not None else code


def render(request: Request, name: str, context: dict[str, Any], status: int = 200
           ) -> HTMLResponse:
    """A page: the signed-in user, purpose and CSRF token are added from the session."""
    session = request.scope.get("session") or {}
    user = session.get("user")
    policy = getattr(getattr(request.app.state, "main", request.app).state, "enforcement", None)
    purposes = policy.policy.purposes if policy is not None else {}
    purpose = context.get("purpose") or session.get("purpose")
    base = {"user": user, "purpose": purpose,
            "purpose_display": purposes[purpose].display if purpose in purposes else "",
            "csrf_token": session.get("csrf", ""), "request": request,
            "flash": session.pop("flash", None) if session else None,
            "organisations": policy.policy.organisations if policy is not None else {}}
    response = templates.TemplateResponse(request, name, {**base, **context},
                                          status_code=status)
    _protect(response)
    return response


# Pages use only their own scripts, styles, fonts and images; no framing, forms post here.
CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")


def _protect(response: HTMLResponse) -> None:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"


def login_form_token(request: Request, params: Mapping[str, str]) -> str:
    """The login page's CSRF token: bound to the authorization request it answers."""
    key = hashlib.sha256(b"ui-login-form|" + request.app.state.signing_key.kid.encode()
                         + request.app.state.settings.resolved_public_url.encode()).digest()
    message = "|".join(f"{k}={params.get(k, '')}" for k in sorted(params)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def render_login_page(request: Request, params: Mapping[str, str], users: Sequence[DemoUser],
                      *, error: str | None = None, status: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, "demo_login.html", {
        "params": dict(params), "users": users, "error": error, "user": None,
        "purpose": None, "login_token": login_form_token(request, params)},
        status_code=status)
    _protect(response)
    return response
