"""Who is signed in to the web pages, why (purpose of use), and CSRF protection.

The session is a signed cookie (Starlette's SessionMiddleware: HttpOnly, SameSite=Lax,
Secure when the service is served over https) holding the staff user (id, name, role,
organisation, issuer), the purpose of use they chose, and a random CSRF token that every
form carries back.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from unified_record.api.guard import Guard
from unified_record.consent.enforcement import AccessContext, EnforcementPoint
from unified_record.security.caller import Caller
from unified_record.security.login import WEB_CLIENT_ID
from unified_record.security.scopes import ScopeSet
from unified_record.store.unit_of_work import UnitOfWork

__all__ = ["CSRFError", "Forbidden", "NotSignedIn", "WebUser", "check_csrf", "current_user",
           "new_csrf", "purpose_choices", "require_role"]

# A signed-in person reads through the same enforcement point as the API; scopes for
# the whole record (what they may see is the consent policy's decision for their role).
WEB_SCOPES = ScopeSet.parse("user/*.rs")


class NotSignedIn(Exception):
    """The page needs a signed-in user: redirect to the sign-in page."""


class Forbidden(Exception):
    """The user's role may not use this page."""


class CSRFError(Exception):
    """A form came back without the session's CSRF token."""


@dataclass(frozen=True)
class WebUser:
    sub: str
    name: str
    role: str
    organisation: str
    issuer: str
    purpose: str | None

    def caller(self, purpose: str | None = None) -> Caller:
        return Caller(client_id=WEB_CLIENT_ID, sub=self.sub, organisation=self.organisation,
                      role=self.role, scopes=WEB_SCOPES, issuer=self.issuer,
                      purpose_of_use=purpose or self.purpose)


def main_state(request: Request) -> Any:
    return request.app.state.main.state


def enforcement(request: Request) -> EnforcementPoint:
    point: EnforcementPoint = main_state(request).enforcement
    return point


def uow(request: Request) -> UnitOfWork:
    state = main_state(request)
    return UnitOfWork(state.sessions, state.keyring, state.blind_index)


def purpose_choices(request: Request, role: str) -> list[tuple[str, str]]:
    """(code, display) of the purposes of use the role may choose, at sign-in or for one
    record. Break-glass is not among them: it needs its own form with a reason."""
    policy = enforcement(request).policy
    return [(code, policy.purposes[code].display) for code in policy.roles[role].purposes
            if code != "BTG"]


def guard(request: Request, user: WebUser, purpose: str | None = None) -> Guard:
    host = request.client.host if request.client else None
    chosen = purpose or user.purpose
    return Guard(enforcement(request), AccessContext(user.caller(chosen), chosen, host))


def current_user(request: Request) -> WebUser:
    data = request.session.get("user")
    if not isinstance(data, dict):
        raise NotSignedIn()
    return WebUser(sub=data["sub"], name=data["name"], role=data["role"],
                   organisation=data["organisation"], issuer=data["issuer"],
                   purpose=request.session.get("purpose"))


UserDep = Annotated[WebUser, Depends(current_user)]


def require_role(*roles: str) -> Any:
    def dependency(user: UserDep) -> WebUser:
        if user.role not in roles:
            raise Forbidden()
        return user

    return Depends(dependency)


def new_csrf(request: Request) -> str:
    token = secrets.token_urlsafe(32)
    request.session["csrf"] = token
    return token


async def check_csrf(request: Request) -> dict[str, str]:
    """The posted form, once its CSRF token matches the session's; else CSRFError."""
    form = await request.form()
    sent = str(form.get("csrf_token", ""))
    expected = str(request.session.get("csrf", ""))
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CSRFError()
    return {k: str(v) for k, v in form.items()}


FormDep = Annotated[dict[str, str], Depends(check_csrf)]
