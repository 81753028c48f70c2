"""Staff sign-in at the built-in issuer: OpenID Connect authorization code flow (with PKCE)
for the web pages, with a login page of demo users, one per role, in the embedded default.

This is a demonstration identity provider, not a real one: it never runs in production,
where the web pages sign in at an external provider named by its issuer URL
(`UR_UI_OIDC_ISSUER`). It implements just what the web pages' OIDC client (Authlib) needs:

* discovery (`/.well-known/openid-configuration`);
* `/oauth/authorize`: the login page; choosing a user answers the redirect URI with a code;
* `grant_type=authorization_code` at `/oauth/token`: the code (a short-lived signed JWT,
  usable once: its id is recorded like a client assertion's `jti`) and the PKCE verifier
  give an ID token (and an access token with no resource scopes).

Besides this service's own pages (a public client, PKCE only) it can sign staff in to one
other service, as a council's identity provider would (`UR_LOGIN_CLIENT_ID`,
`UR_LOGIN_CLIENT_SECRET`, `UR_LOGIN_REDIRECT_URIS`): a confidential client authenticating
with its secret (client_secret_basic or client_secret_post) and PKCE. That lets a second
Unified Record, or a test, use this one as its external OpenID Connect provider.

No web framework here: the API (`api.oauth`) calls it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlencode

from joserfc import jwt
from joserfc.errors import JoseError

from unified_record.security.authorization_server import TokenResponse
from unified_record.security.signing_key import SigningKey
from unified_record.store.oauth_clients import OAuthClientRepository

__all__ = ["DEMO_USERS", "WEB_CLIENT_ID", "DemoUser", "LoginError", "LoginServer",
           "RelyingParty"]

WEB_CLIENT_ID = "unified-record-web"
CODE_LIFETIME = 120
ID_TOKEN_LIFETIME = 300
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class DemoUser:
    sub: str
    name: str
    role: str
    organisation: str
    job: str


# One per role that uses the web pages; organisations as in consent/organisations.yaml.
DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("demo-social-worker", "Sam Social-Worker", "social_worker", "E08000035",
             "Social worker, city council"),
    DemoUser("demo-clinician", "Chris Clinician", "nhs_clinician", "RZ1",
             "Clinician, acute hospital trust"),
    DemoUser("demo-data-steward", "Dee Data-Steward", "data_steward", "E08000035",
             "Data steward, city council"),
    DemoUser("demo-governance", "Gabi Governance", "governance_officer", "E08000035",
             "Information governance officer, city council"),
)


@dataclass(frozen=True)
class RelyingParty:
    """Another service that signs its staff in here, with its secret and redirect URIs."""

    client_id: str
    secret: str
    redirect_uris: tuple[str, ...]


class LoginError(ValueError):
    """An authorization request that must not be answered with a code (bad client or
    redirect URI, unknown user); the message is safe to show."""


class LoginServer:
    """Codes and ID tokens for the web pages' sign-in (see the module docstring)."""

    def __init__(self, signing_key: SigningKey, clients: OAuthClientRepository, *,
                 issuer: str, relying_party: RelyingParty | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.signing_key = signing_key
        self.clients = clients
        self.issuer = issuer
        self.redirect_uri = f"{issuer}/ui/auth/callback"
        self.relying_party = relying_party
        self._clock = clock

    def _redirect_uris(self, client_id: str | None) -> tuple[str, ...]:
        if client_id == WEB_CLIENT_ID:
            return (self.redirect_uri,)
        rp = self.relying_party
        return rp.redirect_uris if rp is not None and client_id == rp.client_id else ()

    def _authenticate(self, form: Mapping[str, str], authorization: str | None) -> str | None:
        """The client id of the token request's client, or None: this service's pages name
        themselves (public, PKCE); the other service proves its secret (basic or post)."""
        rp = self.relying_party
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                return None
            basic_id, _, secret = decoded.partition(":")
            basic_id, secret = unquote(basic_id), unquote(secret)
            if client_id and client_id != basic_id:
                return None
            client_id = basic_id
        if client_id == WEB_CLIENT_ID and secret is None:
            return client_id
        if rp is not None and client_id == rp.client_id and secret is not None and \
                hmac.compare_digest(secret.encode(), rp.secret.encode()):
            return client_id
        return None

    def openid_configuration(self, jwks_uri: str) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/oauth/authorize",
            "token_endpoint": f"{self.issuer}/oauth/token",
            "jwks_uri": jwks_uri,
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [self.signing_key.alg],
            "scopes_supported": ["openid", "profile"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"] + (
                ["client_secret_basic", "client_secret_post"] if self.relying_party else []),
            "claims_supported": ["sub", "name", "role", "organisation"],
        }

    def check_request(self, params: Mapping[str, str]) -> None:
        """LoginError unless this is an authorization request from a known client."""
        redirect_uris = self._redirect_uris(params.get("client_id"))
        if not redirect_uris:
            raise LoginError("unknown client")
        if params.get("redirect_uri") not in redirect_uris:
            raise LoginError("the redirect URI is not registered for this client")
        if params.get("response_type") != "code":
            raise LoginError("only response_type=code is supported")
        if "openid" not in params.get("scope", "").split():
            raise LoginError("the scope must include openid")
        if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
            raise LoginError("PKCE with S256 is required")

    def issue_code(self, params: Mapping[str, str], user_sub: str) -> str:
        """The redirect (with code and state) for the chosen demo user."""
        self.check_request(params)
        user = next((u for u in DEMO_USERS if u.sub == user_sub), None)
        if user is None:
            raise LoginError("unknown user")
        now = int(self._clock())
        claims = {"iss": self.issuer, "aud": f"{self.issuer}/oauth/token", "sub": user.sub,
                  "client_id": params["client_id"], "redirect_uri": params["redirect_uri"],
                  "nonce": params.get("nonce", ""),
                  "code_challenge": params["code_challenge"], "iat": now,
                  "exp": now + CODE_LIFETIME, "jti": secrets.token_urlsafe(16)}
        code = self._sign(claims, "oauth-authz-code+jwt")
        query = {"code": code}
        if params.get("state"):
            query["state"] = params["state"]
        return f"{params['redirect_uri']}?{urlencode(query)}"

    def token_response(self, form: Mapping[str, str], authorization: str | None = None
                       ) -> TokenResponse:
        """Answer `grant_type=authorization_code` (RFC 6749 4.1.3 with PKCE)."""
        client_id = self._authenticate(form, authorization)
        if client_id is None:
            return _error(401, "invalid_client", "unknown client or wrong secret")
        if form.get("redirect_uri") not in self._redirect_uris(client_id):
            return _error(400, "invalid_grant", "redirect_uri does not match")
        try:
            claims = jwt.decode(form.get("code", ""), self.signing_key.key,
                                algorithms=[self.signing_key.alg])
        except (JoseError, ValueError):
            return _error(400, "invalid_grant", "the code is not valid")
        code = claims.claims
        now = int(self._clock())
        if (claims.header.get("typ") != "oauth-authz-code+jwt" or code.get("iss") != self.issuer
                or code.get("client_id") != client_id
                or code.get("redirect_uri") != form.get("redirect_uri")
                or int(code.get("exp", 0)) < now):
            return _error(400, "invalid_grant", "the code is not valid or has expired")
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode("ascii", "replace")).digest()).rstrip(b"=").decode()
        if not verifier or not hmac.compare_digest(challenge, str(code.get("code_challenge"))):
            return _error(400, "invalid_grant", "the code verifier does not match")
        keep = datetime.fromtimestamp(int(code["exp"]) + 60, UTC)
        if not self.clients.use_jti(client_id, f"code:{code['jti']}", keep):
            return _error(400, "invalid_grant", "the code has been used")
        user = next((u for u in DEMO_USERS if u.sub == code.get("sub")), None)
        if user is None:
            return _error(400, "invalid_grant", "unknown user")
        id_claims: dict[str, Any] = {
            "iss": self.issuer, "aud": client_id, "sub": user.sub, "name": user.name,
            "role": user.role, "organisation": user.organisation, "iat": now,
            "auth_time": now, "exp": now + ID_TOKEN_LIFETIME}
        if code.get("nonce"):
            id_claims["nonce"] = code["nonce"]
        access_claims = {"iss": self.issuer, "aud": self.issuer, "sub": user.sub,
                         "client_id": client_id, "scope": "openid profile", "iat": now,
                         "exp": now + ID_TOKEN_LIFETIME, "jti": secrets.token_urlsafe(16)}
        body = {"access_token": self._sign(access_claims, "at+jwt"), "token_type": "Bearer",
                "expires_in": ID_TOKEN_LIFETIME, "scope": "openid profile",
                "id_token": self._sign(id_claims, "JWT")}
        return TokenResponse(200, body, dict(_NO_STORE))

    def _sign(self, claims: dict[str, Any], typ: str) -> str:
        key = self.signing_key
        header = {"alg": key.alg, "kid": key.kid, "typ": typ}
        return jwt.encode(header, claims, key.key, algorithms=[key.alg])


def _error(status: int, error: str, description: str) -> TokenResponse:
    return TokenResponse(status, {"error": error, "error_description": description},
                         dict(_NO_STORE))
