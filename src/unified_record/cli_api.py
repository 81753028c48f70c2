"""Commands of the API side: OAuth clients and the server (registered on the main app)."""

from __future__ import annotations

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
            secret_hash=hash_client_secret(secret) if secret else None)
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
                port=settings.port, workers=settings.workers, server_header=False)
