"""What a partner system does to get a token: keys, signed assertions, token requests."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi import Depends, FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from unified_record.api.auth import CallerDep, require_scope
from unified_record.security import Caller, Interaction

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
BASE = "http://testserver"
TOKEN_URL = f"{BASE}/oauth/token"


def es384_key(kid: str = "es-1") -> ECKey:
    return ECKey.generate_key("P-384", parameters={"kid": kid})


def rs384_key(kid: str = "rs-1") -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid})


def public_jwks(*keys: ECKey | RSAKey) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


def assertion(key: ECKey | RSAKey, client_id: str, *, token_url: str = TOKEN_URL,
              alg: str | None = None, kid: str | None = None, exp_in: float = 240,
              jti: str | None = None, **claims: Any) -> str:
    """A SMART Backend Services client assertion; keyword claims override the defaults."""
    alg = alg or ("ES384" if isinstance(key, ECKey) else "RS384")
    header = {"alg": alg, "kid": kid or key.kid, "typ": "JWT"}
    body = {"iss": client_id, "sub": client_id, "aud": token_url,
            "exp": int(time.time() + exp_in), "jti": jti or uuid.uuid4().hex, **claims}
    return jwt.encode(header, body, key, algorithms=[alg])


def token_form(signed: str, scope: str | None = "system/Patient.rs") -> dict[str, str]:
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": signed}
    if scope is not None:
        form["scope"] = scope
    return form


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def with_probes(app: FastAPI) -> FastAPI:
    """Routes that exist only in tests: one scope-protected, one that fails, one typed."""

    @app.get("/fhir/_probe/patient")
    def probe_patient(
        caller: Caller = Depends(require_scope("Patient", Interaction.READ)),
    ) -> dict[str, object]:
        return {"client_id": caller.client_id, "sub": caller.sub, "role": caller.role,
                "organisation": caller.organisation, "scope": str(caller.scopes),
                "issuer": caller.issuer}

    @app.get("/fhir/_probe/condition")
    def probe_condition(
        caller: Caller = Depends(require_scope("Condition", Interaction.SEARCH_TYPE)),
    ) -> dict[str, str]:
        return {"client_id": caller.client_id}

    @app.get("/fhir/_probe/anyone")
    def probe_anyone(caller: CallerDep) -> dict[str, str]:
        return {"client_id": caller.client_id}

    @app.get("/fhir/_probe/boom")
    def probe_boom() -> None:
        raise RuntimeError("detail that must not leak: 9434765919")

    @app.get("/fhir/_probe/count")
    def probe_count(count: int) -> dict[str, int]:
        return {"count": count}

    # Ahead of the FHIR routes, whose /fhir/{type}/{id} would take these paths.
    probes = [r for r in app.router.routes if getattr(r, "path", "").startswith("/fhir/_probe")]
    app.router.routes[:] = probes + [r for r in app.router.routes if r not in probes]
    return app


class JWKSServer:
    """Serves one JWKS document at /jwks and counts how often it was fetched."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.fetches = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                body = json.dumps(outer.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
