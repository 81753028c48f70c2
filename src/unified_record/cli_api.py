"""Commands of the API side: OAuth clients and the server (registered on the main app)."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from pathlib import Path
from typing import Any, NoReturn

import typer

from unified_record.config import ConfigError, Settings, load_settings

__all__ = ["register"]

_ORG_RE = re.compile(r"[A-Za-z0-9]{3,12}")
_ROLE_RE = re.compile(r"[A-Za-z0-9._:-]{1,100}")
MIN_RSA_BITS = 2048

clients_app = typer.Typer(no_args_is_help=True, help="Partner systems allowed to get tokens.")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `unified-record` app."""
    app.add_typer(clients_app, name="clients")
    app.command()(serve)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(str(exc))


@clients_app.command("add")
def clients_add(
    name: str = typer.Option(..., "--name", help="The partner system's name."),
    scope: str = typer.Option(..., "--scope",
                              help='SMART scopes it may be granted, e.g. "system/Patient.rs".'),
    org: str = typer.Option(..., "--org", help="Its organisation's ODS (or council) code."),
    role: str | None = typer.Option(None, "--role", help="The role its tokens carry."),
    purpose: str | None = typer.Option(
        None, "--purpose", help="The purpose of use its tokens carry (v3 ActReason, e.g. "
        "TREAT); without it every request must send X-Purpose-Of-Use."),
    jwks_file: Path | None = typer.Option(
        None, "--jwks-file", help="JWKS file with its public keys (RS384 / ES384)."),
    jwks_url: str | None = typer.Option(
        None, "--jwks-url", help="Or: the https URL where it publishes its JWKS."),
    with_secret: bool = typer.Option(
        False, "--with-secret",
        help="Also make a client secret (client_secret_basic; development only)."),
) -> None:
    """Register a client; its client id is the last line printed."""
    from unified_record.security.authorization_server import hash_client_secret
    from unified_record.security.scopes import parse_scope
    from unified_record.store import OAuthClientRepository, make_engine, migrate
    from unified_record.store.db import make_session_factory

    settings = _settings()
    if not name.strip() or len(name) > 200:
        _fail("--name must be 1-200 characters")
    if not _ORG_RE.fullmatch(org):
        _fail("--org must be an ODS or council code (3-12 letters and digits)")
    if role is not None and not _ROLE_RE.fullmatch(role):
        _fail("--role must be 1-100 characters of A-Z a-z 0-9 . _ : -")
    if purpose is not None and not re.fullmatch(r"[A-Z]{2,20}", purpose.upper()):
        _fail("--purpose must be a v3 ActReason code such as TREAT")
    scopes = scope.split()
    if not scopes:
        _fail("--scope needs at least one SMART scope")
    for value in scopes:
        try:
            parse_scope(value)
        except ValueError as exc:
            _fail(f"--scope: {exc}")
    if jwks_file is not None and jwks_url is not None:
        _fail("give --jwks-file or --jwks-url, not both")
    if jwks_file is None and jwks_url is None and not with_secret:
        _fail("give the client's public keys: --jwks-file FILE or --jwks-url URL")
    if jwks_url is not None and not jwks_url.startswith(("https://", "http://")):
        _fail("--jwks-url must be an http(s) URL")
    if with_secret and settings.env == "production":
        _fail("--with-secret is for development only; use --jwks-file or --jwks-url")
    jwks = _read_jwks(jwks_file) if jwks_file is not None else None

    secret = secrets.token_urlsafe(32) if with_secret else None
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        client = OAuthClientRepository(make_session_factory(engine)).add(
            name=name.strip(), organisation=org.upper(), role=role, scopes=" ".join(scopes),
            jwks=jwks, jwks_url=jwks_url,
            secret_hash=hash_client_secret(secret) if secret else None,
            purpose_of_use=purpose.upper() if purpose else None)
    finally:
        engine.dispose()
    typer.echo(f"registered client {name.strip()!r} for {org.upper()}: {' '.join(scopes)}")
    if secret:
        typer.echo(f"client secret (development only; shown once): {secret}")
    typer.echo(client.client_id)


def _read_jwks(path: Path) -> dict[str, Any]:
    """A JWKS file of public keys that can sign RS384 (RSA 2048+) or ES384 (EC P-384)."""
    from joserfc.jwk import RSAKey

    from unified_record.security.jwks import JWKSError, key_set_from_jwks

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        _fail(f"{path}: cannot read ({exc.strerror})")
    except ValueError:
        _fail(f"{path}: not valid JSON")
    try:
        keys = key_set_from_jwks(document, str(path))
    except JWKSError as exc:
        _fail(str(exc))
    kids: set[str] = set()
    for number, (key, entry) in enumerate(zip(keys, document["keys"], strict=True), start=1):
        kid = entry.get("kid")  # as written: the library would make one up
        if not isinstance(kid, str) or not kid or kid in kids:
            _fail(f"{path}: key {number} needs a kid of its own")
        kids.add(kid)
        if key.key_type == "EC" and key.get("crv") == "P-384":
            continue
        if isinstance(key, RSAKey) and key.public_key.key_size >= MIN_RSA_BITS:
            continue
        _fail(f"{path}: key {kid!r} cannot sign RS384 or ES384 "
              f"(needs RSA of {MIN_RSA_BITS}+ bits or EC P-384)")
    return {"keys": [key.as_dict(private=False) for key in keys]}


@clients_app.command("token")
def clients_token(
    client_id: str = typer.Argument(..., help="The registered client's id."),
    key: Path = typer.Option(..., "--key", help="The client's private key (a JWK file)."),
    scope: str = typer.Option("system/*.rs", "--scope", help="Scopes to ask for."),
) -> None:
    """Get an access token the SMART Backend Services way (sign an assertion with the
    client's private key, exchange it at the token endpoint); prints the token."""
    from unified_record.security.client_assertion import (
        TokenRequestError,
        request_token,
        sign_assertion,
    )

    settings = _settings()
    token_url = f"{settings.resolved_public_url}/oauth/token"
    try:
        private = json.loads(key.read_text(encoding="utf-8"))
        answer = request_token(token_url, sign_assertion(private, client_id, token_url), scope)
    except (OSError, ValueError) as exc:
        _fail(f"{key}: not a private JWK ({type(exc).__name__})")
    except TokenRequestError as exc:
        _fail(str(exc))
    typer.echo(answer["access_token"])


def serve() -> None:
    """Serve the API under uvicorn (UR_HOST, UR_PORT, UR_WORKERS)."""
    import uvicorn

    from unified_record.api.app import check_serving_settings
    from unified_record.security.signing_key import load_or_create_signing_key
    from unified_record.store import migrate

    settings = _settings()
    try:
        check_serving_settings(settings)
        load_or_create_signing_key(settings)  # refuse now, not in every worker
    except ConfigError as exc:
        _fail(str(exc))
    migrate(settings.database_url)  # once, before the workers start
    base = settings.resolved_public_url
    typer.echo(f"serving {base}/fhir (token endpoint {base}/oauth/token) "
               f"on {settings.host}:{settings.port} with {settings.workers} worker(s)")
    uvicorn.run("unified_record.api:create_app", factory=True, host=settings.host,
                port=settings.port, workers=settings.workers, server_header=False,
                timeout_keep_alive=settings.keep_alive_seconds)


DEMO_SCOPES = "system/*.rs"


def serve_demo(settings: Settings, *, block: bool = True) -> str:
    """The demo's last step: register a demo partner system (its private key in a 0600 file),
    serve the API, get it a token the SMART way, and print what to try. Returns the token.

    With `block` it serves until interrupted (Ctrl-C); without, it stops after printing.
    """
    import threading
    import time

    import sqlalchemy as sa
    import uvicorn
    from joserfc.jwk import ECKey

    from unified_record.api import create_app
    from unified_record.security._private_file import write_private_file
    from unified_record.security.client_assertion import request_token, sign_assertion
    from unified_record.store import OAuthClientRepository, make_engine, make_session_factory
    from unified_record.store.models import ClientRow

    key = ECKey.generate_key("P-384", parameters={"kid": "demo-partner"})
    key_file = settings.data_dir / "demo-partner-key.json"
    write_private_file(key_file, json.dumps(key.as_dict(private=True)).encode(), replace=True)
    engine = make_engine(settings.database_url)
    try:
        client = OAuthClientRepository(make_session_factory(engine)).add(
            name="Demo partner system", organisation="A81001", role="partner_system",
            scopes=DEMO_SCOPES, jwks={"keys": [key.as_dict(private=False)]},
            purpose_of_use="TREAT")
        with engine.connect() as conn:
            sample_client = conn.scalar(sa.select(ClientRow.id).where(
                ClientRow.status == "active").order_by(ClientRow.id).limit(1))
    finally:
        engine.dispose()

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.host,
                                           port=settings.port, log_level="warning",
                                           server_header=False,
                                           timeout_keep_alive=settings.keep_alive_seconds))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    if not thread.is_alive():
        _fail(f"could not serve on {settings.host}:{settings.port} (in use?)")
    base = settings.resolved_public_url
    token_url = f"{base}/oauth/token"
    token = request_token(token_url, sign_assertion(key.as_dict(private=True),
                                                    client.client_id, token_url),
                          DEMO_SCOPES)["access_token"]
    auth = '-H "Authorization: Bearer $TOKEN"'
    typer.echo(f"""
The FHIR API is serving at {base}/fhir (web pages at {base}/ui).
Demo partner system: client id {client.client_id}, private key {key_file}
A token for the next 5 minutes (a fresh one: unified-record clients token \
  {client.client_id} --key {key_file}):

TOKEN={token}

Try:
  curl {base}/fhir/metadata
  curl {auth} '{base}/fhir/Patient?birthdate=ge1950&_count=5'
  curl {auth} '{base}/fhir/Patient/{sample_client}/$everything'
""")
    if block:
        with contextlib.suppress(KeyboardInterrupt):
            thread.join()
    server.should_exit = True
    thread.join(timeout=10)
    return str(token)
