"""The application factory: configuration in, a FastAPI app out.

``uvicorn --factory unified_record.api:create_app`` (what `unified-record serve` runs)
calls it once per worker. It refuses to build an app with a production setting that lacks
its secrets or public address, rather than serve with a fallback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from unified_record import __version__
from unified_record.api import fhir, governance, limits, oauth
from unified_record.api.capability import capability_statement, resource_capabilities
from unified_record.api.errors import install_error_handlers
from unified_record.api.ui import mount_ui
from unified_record.config import ConfigError, Settings, load_settings
from unified_record.consent.enforcement import EnforcementPoint
from unified_record.ingest import Pipeline
from unified_record.ingest.mapping import MAPPINGS_DIR
from unified_record.linkage.incremental import IndexMatcher
from unified_record.linkage.index import MODEL_FILE_NAME
from unified_record.security import load_or_create_keys
from unified_record.security.authorization_server import AuthorizationServer
from unified_record.security.jwks import JWKSCache
from unified_record.security.signing_key import load_or_create_signing_key
from unified_record.security.tokens import TokenValidator, builtin_issuer, oidc_issuer
from unified_record.store import OAuthClientRepository, make_engine, make_session_factory

__all__ = ["create_app"]


CONNECTIONS_PER_REQUEST = 2  # its own, and the audit log's (`config.max_concurrent_requests`)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    check_serving_settings(settings)
    base = settings.resolved_public_url
    fhir_base, token_url = f"{base}/fhir", f"{base}/oauth/token"
    signing_key = load_or_create_signing_key(settings)
    keyring, blind_index = load_or_create_keys(settings)
    # Every connection the requests in progress can hold at once stays open (`make_engine`).
    engine = make_engine(settings.database_url,
                         pool_size=CONNECTIONS_PER_REQUEST * settings.max_concurrent_requests)
    enforcement = EnforcementPoint.from_settings(settings, engine, keyring)  # bad policy: stop

    issuers = [builtin_issuer(signing_key, base, fhir_base)]
    if settings.oidc_issuer:
        issuers.append(oidc_issuer(
            settings.oidc_issuer, JWKSCache(settings.oidc_jwks_url), settings.oidc_audience,
            organisation_claim=settings.oidc_organisation_claim,
            role_claim=settings.oidc_role_claim))

    # Partners' Bundles go through the ingest pipeline; new Patients join the index at once.
    pipeline = Pipeline(engine, keyring, blind_index, MAPPINGS_DIR, workers=1)
    pipeline.on_patients = IndexMatcher(
        pipeline.sessions, keyring, blind_index, settings.data_dir / MODEL_FILE_NAME,
        auto_link_threshold=settings.link_auto_threshold,
        review_threshold=settings.link_review_threshold)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        pipeline.close()
        engine.dispose()

    app = FastAPI(
        title="Unified Record",
        version=__version__,
        description="FHIR R4 API of the unified health-and-social-care record, for NHS "
                    "partner systems (SMART on FHIR Backend Services tokens).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = make_session_factory(engine)
    app.state.keyring = keyring
    app.state.blind_index = blind_index
    app.state.enforcement = enforcement
    app.state.pipeline = pipeline
    app.state.signing_key = signing_key
    app.state.jwks_uri = f"{base}/oauth/jwks"
    app.state.authorization_server = AuthorizationServer(
        OAuthClientRepository(make_session_factory(engine)),
        signing_key,
        issuer=base,
        audience=fhir_base,
        token_url=token_url,
        lifetime=settings.token_lifetime,
        allow_client_secret=settings.allow_client_secret,
    )
    app.state.token_validator = TokenValidator(issuers)
    app.state.capability_statement = capability_statement(fhir_base, token_url,
                                                          resource_capabilities())
    install_error_handlers(app)
    limits.install(app, settings)
    app.include_router(oauth.router)
    app.include_router(governance.router)  # before fhir: /fhir/{type} would take its paths
    app.include_router(fhir.router)
    mount_ui(app)  # the web pages under /ui
    return app


def check_serving_settings(settings: Settings) -> None:
    """Production serves only at a configured https address (issuer and audiences use it)."""
    if settings.env == "production" and not settings.public_url.startswith("https://"):
        raise ConfigError("production setting needs UR_PUBLIC_URL, an https:// address")
