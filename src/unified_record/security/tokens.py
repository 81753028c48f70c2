"""Access-token validation: the built-in issuer's tokens and an external OpenID Connect
provider's (a council IdP, NHS CIS2), each checked against its own keys.

A token is trusted only if its ``iss`` is one of the configured issuers, its ``alg`` is on
that issuer's allow-list (asymmetric only: never ``none``, never an HMAC algorithm that
could be "verified" with a public key), the signature verifies with the issuer's key of
that ``kid``, the audience is ours, and ``exp`` / ``nbf`` / ``iat`` hold (with a little
clock skew). The error message says which check failed, never what the token contained.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import Key

from unified_record.security.caller import Caller
from unified_record.security.jwks import JWKSCache, JWKSError
from unified_record.security.scopes import ScopeSet
from unified_record.security.signing_key import SigningKey

__all__ = [
    "EXTERNAL_ALGORITHMS",
    "InvalidTokenError",
    "TokenValidator",
    "TrustedIssuer",
    "builtin_issuer",
    "oidc_issuer",
]

EXTERNAL_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                       "ES256", "ES384", "ES512")
CLOCK_SKEW = 30
MAX_TOKEN_LENGTH = 16 * 1024


class InvalidTokenError(Exception):
    """The bearer token is not acceptable; the message is safe to send back."""


@dataclass(frozen=True)
class TrustedIssuer:
    issuer: str
    audience: str
    key_for: Callable[[str | None], Key | None]  # key id -> key (None if unknown)
    algorithms: tuple[str, ...]
    token_type: str | None = None  # the `typ` header every token must carry, if any
    organisation_claim: str = "organisation"
    role_claim: str = "role"


def builtin_issuer(signing_key: SigningKey, issuer: str, audience: str) -> TrustedIssuer:
    """Our own tokens: our one key, its one algorithm, and the RFC 9068 type."""
    keys = signing_key.public_key_set()

    def key_for(kid: str | None) -> Key | None:
        return next((k for k in keys if k.kid == kid), None)

    return TrustedIssuer(issuer, audience, key_for, (signing_key.alg,), token_type="at+jwt")


def oidc_issuer(issuer: str, jwks: JWKSCache, audience: str, *,
                organisation_claim: str = "organisation",
                role_claim: str = "role") -> TrustedIssuer:
    """An external provider's tokens, checked against its published (cached) JWKS."""
    return TrustedIssuer(issuer, audience, jwks.get, EXTERNAL_ALGORITHMS,
                         organisation_claim=organisation_claim, role_claim=role_claim)


class TokenValidator:
    def __init__(self, issuers: Iterable[TrustedIssuer], *,
                 clock: Callable[[], float] = time.time) -> None:
        self._issuers = {i.issuer: i for i in issuers}
        self._clock = clock

    def validate(self, token: str) -> Caller:
        """The caller a token speaks for, or InvalidTokenError saying which check failed."""
        header, unverified = _peek(token)
        iss = unverified.get("iss")
        trusted = self._issuers.get(iss) if isinstance(iss, str) else None
        if trusted is None:
            raise InvalidTokenError("token issuer is not trusted")
        alg = header.get("alg")
        if alg not in trusted.algorithms:
            raise InvalidTokenError("token algorithm is not allowed")
        typ = header.get("typ")
        if trusted.token_type and (not isinstance(typ, str) or typ.lower().removeprefix(
                "application/") != trusted.token_type):
            raise InvalidTokenError(f"token type must be {trusted.token_type}")
        kid = header.get("kid")
        try:
            key = trusted.key_for(kid if isinstance(kid, str) else None)
        except JWKSError:
            raise InvalidTokenError("the issuer's keys cannot be fetched") from None
        if key is None:
            raise InvalidTokenError("token signing key is unknown")
        try:
            claims = jwt.decode(token, key, algorithms=[alg]).claims
        except JoseError:
            raise InvalidTokenError("token signature does not verify") from None

        registry = jwt.JWTClaimsRegistry(
            now=int(self._clock()),
            leeway=CLOCK_SKEW,
            iss={"essential": True, "value": trusted.issuer},
            aud={"essential": True, "value": trusted.audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise InvalidTokenError("token has expired") from None
        except JoseError as exc:
            claim = getattr(exc, "claim", "")
            if claim in ("nbf", "iat"):  # issued in the future, or not usable before a time
                raise InvalidTokenError("token is not valid yet") from None
            raise InvalidTokenError(f"token claim {claim or '?'} is missing or invalid") \
                from None
        return _caller(claims, trusted)


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidTokenError("token is too long")
    try:
        compact = jws.extract_compact(token.encode("ascii"))
        claims = json.loads(compact.payload)
    except (JoseError, ValueError, UnicodeError):
        raise InvalidTokenError("token is not a signed JWT") from None
    if not isinstance(claims, dict):
        raise InvalidTokenError("token is not a signed JWT")
    return dict(compact.headers()), claims


def _caller(claims: dict[str, Any], trusted: TrustedIssuer) -> Caller:
    def text(name: str) -> str | None:
        value = claims.get(name)
        return value if isinstance(value, str) and value else None

    scope = claims.get("scope", claims.get("scp", ""))
    if not isinstance(scope, str | list):
        raise InvalidTokenError("token claim scope is invalid")
    sub = claims["sub"]
    return Caller(
        client_id=text("client_id") or text("azp") or sub,
        sub=sub,
        organisation=text(trusted.organisation_claim),
        role=text(trusted.role_claim),
        scopes=ScopeSet.parse([str(s) for s in scope] if isinstance(scope, list) else scope),
        issuer=trusted.issuer,
        token_id=text("jti"),
        patient=text("patient"),
        purpose_of_use=text("purpose_of_use"),
    )
