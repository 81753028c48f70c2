"""Who is calling, and may they: the bearer-token dependencies for FHIR routes.

``Depends(current_caller)`` validates the token and gives the `Caller`;
``Depends(require_scope("Patient", Interaction.READ))`` also checks the SMART scopes.
Routes whose resource type comes from the path call `check_scope` themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from unified_record.api.errors import AuthenticationError, InsufficientScopeError
from unified_record.security.caller import Caller
from unified_record.security.scopes import Interaction
from unified_record.security.tokens import InvalidTokenError, TokenValidator

__all__ = ["CallerDep", "check_scope", "current_caller", "require_scope"]


def current_caller(request: Request) -> Caller:
    """The caller of a valid bearer token, or 401 with a `WWW-Authenticate` challenge.

    A plain (sync) function: FastAPI runs it in a worker thread, where fetching an
    identity provider's keys may block without stalling the event loop.
    """
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationError(None)
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("expected an Authorization: Bearer access token")
    validator: TokenValidator = request.app.state.token_validator
    try:
        return validator.validate(token.strip())
    except InvalidTokenError as exc:
        raise AuthenticationError(str(exc)) from None


CallerDep = Annotated[Caller, Depends(current_caller)]


def check_scope(caller: Caller, resource_type: str, interaction: Interaction) -> None:
    """403 with an OperationOutcome unless the caller's scopes allow this."""
    if not caller.permits(resource_type, interaction):
        raise InsufficientScopeError(resource_type, interaction.value)


def require_scope(resource_type: str, interaction: Interaction) -> Callable[[Caller], Caller]:
    """A dependency giving the caller, once its token and scopes allow the interaction."""

    def dependency(caller: CallerDep) -> Caller:
        check_scope(caller, resource_type, interaction)
        return caller

    return dependency
