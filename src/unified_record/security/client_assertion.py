"""The client side of SMART Backend Services: sign an assertion, exchange it for a token.

For operators and the demo (`unified-record clients token`); partner systems use their own
SMART client. Standard library HTTP only, so it works wherever the CLI does.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

__all__ = ["ASSERTION_TYPE", "TokenRequestError", "request_token", "sign_assertion"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class TokenRequestError(RuntimeError):
    """The token endpoint refused, or could not be reached."""


def sign_assertion(private_jwk: dict[str, Any], client_id: str, token_url: str,
                   lifetime: int = 240) -> str:
    """A client assertion (iss = sub = client id, aud = token URL, short exp, fresh jti)."""
    key: ECKey | RSAKey = (ECKey if private_jwk.get("kty") == "EC" else RSAKey).import_key(
        private_jwk)
    alg = "ES384" if isinstance(key, ECKey) else "RS384"
    header = {"alg": alg, "kid": key.kid, "typ": "JWT"}
    claims = {"iss": client_id, "sub": client_id, "aud": token_url,
              "exp": int(time.time()) + lifetime, "jti": uuid.uuid4().hex}
    return jwt.encode(header, claims, key, algorithms=[alg])


def request_token(token_url: str, assertion: str, scope: str) -> dict[str, Any]:
    """POST the client_credentials grant; the token response as a dict."""
    form = urllib.parse.urlencode({
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}).encode()
    request = urllib.request.Request(token_url, data=form, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise TokenRequestError(f"token endpoint answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise TokenRequestError(f"cannot reach {token_url}: {exc}") from None
