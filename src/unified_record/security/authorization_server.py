"""The built-in authorization server: SMART Backend Services tokens for partner systems.

One grant, ``client_credentials``, with two ways for a client to prove who it is:

* ``private_key_jwt`` (RFC 7523, SMART Backend Services): the client signs an assertion
  with its private key; we check it against the public key it registered (a JWKS, or
  the URL where it publishes one). ``iss`` = ``sub`` = client id, ``aud`` = our token URL,
  ``exp`` at most five minutes ahead, a ``kid`` we know, RS384 or ES384, and a ``jti``
  never seen before (kept in the database, so the rule holds across workers and restarts).
* ``client_secret_basic``, only when ``UR_ALLOW_CLIENT_SECRET`` is set (development).

Tokens are short-lived signed JWTs (RFC 9068 ``at+jwt``) carrying the granted scopes, the
client, its organisation and role. Errors follow RFC 6749 section 5.2 (Authlib's error
types), with descriptions that never repeat what the client sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnsupportedGrantTypeError,
)
from joserfc import jws, jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import Key

from unified_record.security.jwks import JWKSCache, JWKSError, fetch_jwks, key_set_from_jwks
from unified_record.security.scopes import grant_scopes
from unified_record.security.signing_key import SigningKey
from unified_record.store.oauth_clients import OAuthClient, OAuthClientRepository

__all__ = [
    "ASSERTION_ALGORITHMS",
    "ASSERTION_TYPE",
    "AuthorizationServer",
    "TokenResponse",
    "hash_client_secret",
]

logger = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ("RS384", "ES384")
MAX_ASSERTION_LIFETIME = 300  # seconds ahead an assertion's exp may be (SMART: five minutes)
CLOCK_SKEW = 30  # seconds of disagreement tolerated between our clock and a client's
MAX_JTI_LENGTH = 255
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class TokenResponse:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def hash_client_secret(secret: str) -> str:
    """SHA-256: enough for a secret of 32 random bytes (no dictionary to guess from)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class AuthorizationServer:
    """The token endpoint's logic, free of any web framework: form in, response out."""

    def __init__(
        self,
        clients: OAuthClientRepository,
        signing_key: SigningKey,
        *,
        issuer: str,
        audience: str,
        token_url: str,
        lifetime: int = 300,
        allow_client_secret: bool = False,
        clock: Callable[[], float] = time.time,
        fetch: Callable[[str], dict[str, Any]] = fetch_jwks,
    ) -> None:
        self.clients = clients
        self.signing_key = signing_key
        self.issuer = issuer
        self.audience = audience
        self.token_url = token_url
        self.lifetime = min(lifetime, 300)
        self.allow_client_secret = allow_client_secret
        self._clock = clock
        self._fetch = fetch
        self._jwks_caches: dict[str, JWKSCache] = {}

    def smart_configuration(self, jwks_uri: str) -> dict[str, Any]:
        """The SMART App Launch 2.0 discovery document (`.well-known/smart-configuration`)."""
        methods = ["private_key_jwt"]
        capabilities = ["client-confidential-asymmetric", "permission-v1", "permission-v2"]
        if self.allow_client_secret:
            methods.append("client_secret_basic")
            capabilities.append("client-confidential-symmetric")
        return {
            "issuer": self.issuer,
            "jwks_uri": jwks_uri,
            "token_endpoint": self.token_url,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": methods,
            "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
            "scopes_supported": [
                f"{context}/*.{perms}" for context in ("system", "user", "patient")
                for perms in ("cruds", "rs", "read", "write", "*")
            ],
            "capabilities": capabilities,
        }

    def token_response(self, form: Sequence[tuple[str, str]],
                       authorization: str | None = None) -> TokenResponse:
        """Answer a token request (the form fields in order, and the Authorization header)."""
        try:
            client, scope = self._grant(form, authorization)
        except OAuth2Error as error:
            status, body, headers = error()
            logger.info("token request refused: %s (%s)", body.get("error"),
                        body.get("error_description", ""))
            return TokenResponse(status, body, {**dict(headers), **_NO_STORE})
        token = self.issue(client, scope)
        logger.info("issued a token to client %s", client.client_id)
        body = {"access_token": token, "token_type": "bearer", "expires_in": self.lifetime,
                "scope": scope}
        return TokenResponse(200, body, dict(_NO_STORE))

    def issue(self, client: OAuthClient, scope: str, *, now: float | None = None) -> str:
        """A signed access token for `client` with exactly `scope`."""
        issued = int(self._clock() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": client.client_id,
            "aud": self.audience,
            "client_id": client.client_id,
            "scope": scope,
            "organisation": client.organisation,
            "iat": issued,
            "nbf": issued,
            "exp": issued + self.lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        if client.role:
            claims["role"] = client.role
        if client.purpose_of_use:
            claims["purpose_of_use"] = client.purpose_of_use
        key = self.signing_key
        header = {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}
        return jwt.encode(header, claims, key.key, algorithms=[key.alg])

    # -- the grant ---------------------------------------------------------------------------

    def _grant(self, form: Sequence[tuple[str, str]],
               authorization: str | None) -> tuple[OAuthClient, str]:
        params: dict[str, str] = {}
        for name, value in form:
            if name in params:
                raise InvalidRequestError(f"parameter {_safe(name)} is repeated")
            params[name] = value
        grant_type = params.get("grant_type")
        if not grant_type:
            raise InvalidRequestError("grant_type is required")
        if grant_type != "client_credentials":
            raise UnsupportedGrantTypeError("only client_credentials is supported")

        scheme = (authorization or "").split(" ", 1)[0].lower()
        uses_assertion = "client_assertion" in params or "client_assertion_type" in params
        if scheme == "basic" and uses_assertion:
            raise InvalidRequestError("use one client authentication method, not two")
        if authorization and scheme == "basic":
            client = self._client_by_secret(authorization)
        elif uses_assertion:
            client = self._client_by_assertion(params)
        else:
            raise InvalidClientError(
                "client authentication is required (private_key_jwt)", status_code=401)
        if "client_id" in params and params["client_id"] != client.client_id:
            raise InvalidClientError("client_id does not match the authenticated client")

        scope = " ".join(grant_scopes(params.get("scope"), client.scopes))
        if not scope:
            raise InvalidScopeError("none of the requested scopes is allowed for this client")
        return client, scope

    def _client_by_assertion(self, params: dict[str, str]) -> OAuthClient:
        if params.get("client_assertion_type") != ASSERTION_TYPE:
            raise InvalidClientError(f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = params.get("client_assertion", "")
        header, claims = _peek(assertion)
        alg = header.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            raise InvalidClientError("client assertion alg must be RS384 or ES384")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidClientError("client assertion header needs a kid")
        client_id = claims.get("iss")
        if not isinstance(client_id, str) or claims.get("sub") != client_id:
            raise InvalidClientError("client assertion iss and sub must both be the client id")

        client = self.clients.get(client_id)
        if client is None or not client.active:
            raise InvalidClientError("unknown or inactive client")
        key = self._client_key(client, kid)
        if key is None:
            raise InvalidClientError("no key registered for this client with that kid")
        try:
            jwt.decode(assertion, key, algorithms=[alg])
        except JoseError:
            raise InvalidClientError("client assertion signature does not verify") from None

        now = self._clock()
        registry = jwt.JWTClaimsRegistry(
            now=int(now),
            leeway=CLOCK_SKEW,
            aud={"essential": True, "value": self.token_url},
            exp={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise InvalidClientError("client assertion has expired") from None
        except JoseError as exc:
            if getattr(exc, "claim", None) == "aud":
                raise InvalidClientError(
                    f"client assertion aud must be the token URL {self.token_url}") from None
            raise InvalidClientError(f"client assertion: {_safe(exc.description)}") from None
        exp = claims["exp"]
        if exp > now + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
            raise InvalidClientError("client assertion exp is more than five minutes ahead")
        jti = claims["jti"]
        if len(jti) > MAX_JTI_LENGTH:
            raise InvalidClientError(f"client assertion jti is longer than {MAX_JTI_LENGTH}")
        keep_until = datetime.fromtimestamp(exp + CLOCK_SKEW, UTC)
        if not self.clients.use_jti(client.client_id, jti, keep_until):
            raise InvalidClientError("client assertion jti has been used before")
        return client

    def _client_key(self, client: OAuthClient, kid: str) -> Key | None:
        try:
            if client.jwks is not None:
                keys = key_set_from_jwks(client.jwks, "registered JWKS")
                return next((k for k in keys if k.kid == kid), None)
            if client.jwks_url:
                cache = self._jwks_caches.get(client.jwks_url)
                if cache is None:
                    if len(self._jwks_caches) > 1000:
                        self._jwks_caches.clear()
                    cache = JWKSCache(client.jwks_url, fetch=self._fetch)
                    self._jwks_caches[client.jwks_url] = cache
                return cache.get(kid)
        except JWKSError as exc:
            logger.warning("client %s keys unusable: %s", client.client_id, exc)
            raise InvalidClientError("the client's registered keys cannot be read") from None
        return None

    def _client_by_secret(self, authorization: str) -> OAuthClient:
        if not self.allow_client_secret:
            raise InvalidClientError(
                "client_secret_basic is for development only; use private_key_jwt",
                status_code=401)
        try:
            decoded = base64.b64decode(authorization.split(" ", 1)[1].strip(),
                                       validate=True).decode("utf-8")
        except (IndexError, ValueError, binascii.Error):
            raise InvalidClientError("malformed Basic credentials", status_code=401) from None
        raw_id, sep, raw_secret = decoded.partition(":")
        client_id = urllib.parse.unquote_plus(raw_id)
        secret = urllib.parse.unquote_plus(raw_secret)
        client = self.clients.get(client_id) if sep else None
        if (client is None or not client.active or client.secret_hash is None
                or not hmac.compare_digest(client.secret_hash, hash_client_secret(secret))):
            raise InvalidClientError("invalid client credentials", status_code=401)
        return client


def _peek(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims before verification: they say which client and key to check with."""
    try:
        compact = jws.extract_compact(assertion.encode("ascii"))
        claims = json.loads(compact.payload)
    except (JoseError, ValueError, UnicodeError):
        raise InvalidClientError("client_assertion is not a signed JWT") from None
    if not isinstance(claims, dict):
        raise InvalidClientError("client_assertion is not a signed JWT")
    return dict(compact.headers()), claims


def _safe(text: str) -> str:
    """Only the characters RFC 6749 allows in an error description."""
    return "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "?" for c in text)[:200]
