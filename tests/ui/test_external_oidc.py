"""Staff sign-in at an external OpenID Connect provider, end to end over real HTTP.

The "council identity provider" is a separate instance of this service's built-in issuer
on its own loopback port (discovery, authorize with its demo users, token, JWKS), which
registers the Unified Record under test as a confidential client. The Unified Record under
test knows the provider only by its issuer URL (`UR_UI_OIDC_ISSUER`). An HTTP client that
follows redirects and keeps cookies plays the browser. A second, rogue provider holding
the same client registration, and a service that names its provider differently from the
provider's own issuer, show that codes and tokens from the wrong issuer are refused; so
are a tampered state and a tampered nonce.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx2
import pytest
from fastapi import FastAPI
from serving_support import free_socket, serving
from ui_support import csrf_of

from unified_record.api import create_app
from unified_record.config import Settings
from unified_record.store import migrate

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("external-oidc")]

CLIENT_ID, SECRET = "council-unified-record", "s3cret-of-the-council-registration-0123"
# The provider's roles are the policy's names here; the map admits only these two, so a
# user whose role it does not name is refused (deny by default).
ROLE_MAP = '{"nhs_clinician": "nhs_clinician", "social_worker": "social_worker"}'


@dataclass
class Sites:
    provider: str  # the council's identity provider
    rogue: str  # another provider holding the same client registration
    service: str  # the Unified Record that signs in at `provider`
    misnamed: str  # one configured with the provider under another name


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    tmp = tmp_path_factory.mktemp("oidc")
    bound = {name: free_socket() for name in ("provider", "rogue", "service", "misnamed")}
    url = {name: base for name, (_sock, base) in bound.items()}
    callbacks = f"{url['service']}/ui/auth/callback,{url['misnamed']}/ui/auth/callback"
    apps: list[FastAPI] = []
    servers = ExitStack()

    def build(name: str, env: dict[str, str], **settings: str) -> None:
        database = f"sqlite:///{tmp / name}.db"
        migrate(database)
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            app = create_app(Settings(database_url=database, data_dir=tmp / name,
                                      public_url=url[name], **settings))  # type: ignore[arg-type]
        apps.append(app)
        servers.enter_context(serving(app, bound[name][0], lifespan="off"))

    try:
        for idp in ("provider", "rogue"):  # each with its own signing key
            build(idp, {}, login_client_id=CLIENT_ID, login_client_secret=SECRET,
                  login_redirect_uris=callbacks)
        relying = {"UR_UI_OIDC_CLIENT_ID": CLIENT_ID, "UR_UI_OIDC_CLIENT_SECRET": SECRET,
                   "UR_UI_SESSION_SECRET": "a-session-secret-of-32-characters-or-more",
                   "UR_UI_ROLE_MAP": ROLE_MAP}
        build("service", {**relying, "UR_UI_OIDC_ISSUER": url["provider"]})
        # The same provider by another name: its tokens say iss=http://127.0.0.1:...
        misnamed = url["provider"].replace("127.0.0.1", "localhost")
        build("misnamed", {**relying, "UR_UI_OIDC_ISSUER": misnamed})
        yield Sites(url["provider"], url["rogue"], url["service"], url["misnamed"])
    finally:
        servers.close()
        for app in apps:
            app.state.engine.dispose()


def _browser() -> httpx2.Client:
    return httpx2.Client(timeout=30, follow_redirects=True)


def _start(web: httpx2.Client, service: str) -> str:
    """The provider's authorization URL the service sends the browser to."""
    answer = web.get(f"{service}/ui/login/start", follow_redirects=False)
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


def _with(authorize: str, **changes: str) -> str:
    """The authorization URL with some parameters (or the provider's address) changed."""
    parts = urlsplit(authorize)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    netloc = changes.pop("netloc", parts.netloc)
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode({**query, **changes}),
                       ""))


def _log_in(web: httpx2.Client, authorize: str, user: str) -> httpx2.Response:
    """Choose a demo user on the provider's login page; follow the redirects back."""
    page = web.get(authorize)
    assert page.status_code == 200 and "Who are you signing in as?" in page.text, page.text
    form = {k: html.unescape(v) for k, v in re.findall(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text)}
    form["user"] = user
    action = urlunsplit(urlsplit(authorize)._replace(query=""))
    return web.post(action, data=form)


def test_discovery_names_the_provider_and_its_endpoints(sites: Sites) -> None:
    with _browser() as web:
        meta = web.get(f"{sites.provider}/.well-known/openid-configuration").json()
        assert meta["issuer"] == sites.provider
        assert meta["authorization_endpoint"] == f"{sites.provider}/oauth/authorize"
        assert meta["token_endpoint"] == f"{sites.provider}/oauth/token"
        assert web.get(meta["jwks_uri"]).json()["keys"]
        assert "client_secret_basic" in meta["token_endpoint_auth_methods_supported"]
        # The token endpoint wants the registered secret.
        refused = web.post(meta["token_endpoint"], auth=(CLIENT_ID, "wrong"), data={
            "grant_type": "authorization_code", "code": "x",
            "redirect_uri": f"{sites.service}/ui/auth/callback", "code_verifier": "v" * 43})
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


def test_sign_in_at_the_external_provider(sites: Sites) -> None:
    with _browser() as web:
        authorize = _start(web, sites.service)
        assert authorize.startswith(f"{sites.provider}/oauth/authorize?")
        asked = parse_qs(urlsplit(authorize).query)
        assert asked["client_id"] == [CLIENT_ID]
        assert asked["redirect_uri"] == [f"{sites.service}/ui/auth/callback"]
        assert {"state", "nonce", "code_challenge"} <= set(asked)

        back = _log_in(web, authorize, "demo-clinician")
        assert str(back.url) == f"{sites.service}/ui/purpose", back.text
        assert "<strong>Chris Clinician</strong>" in back.text  # from the provider's ID token
        assert "(nhs clinician, RZ1)" in back.text
        chosen = web.post(f"{sites.service}/ui/purpose",
                          data={"csrf_token": csrf_of(back.text), "purpose": "TREAT"})
        assert str(chosen.url) == f"{sites.service}/ui/"
        assert 'id="purpose-of-use">TREAT<' in chosen.text
        assert "Chris Clinician" in chosen.text
        assert web.get(f"{sites.service}/ui/clients").status_code == 200
        out = web.post(f"{sites.service}/ui/logout", data={"csrf_token": csrf_of(chosen.text)})
        assert "You have signed out" in out.text


def test_a_role_the_map_does_not_name_is_refused(sites: Sites) -> None:
    with _browser() as web:
        back = _log_in(web, _start(web, sites.service), "demo-governance")
        assert back.status_code == 403 and "Sign-in refused" in back.text
        home = web.get(f"{sites.service}/ui/", follow_redirects=False)
        assert home.status_code == 303 and "/ui/login" in home.headers["location"]


@pytest.mark.parametrize("tamper", ["state", "nonce", "provider"])
def test_a_tampered_state_or_nonce_or_a_code_from_another_provider_is_refused(
        sites: Sites, tamper: str) -> None:
    with _browser() as web:
        authorize = _start(web, sites.service)
        if tamper == "provider":  # the rogue provider's code goes to the council's endpoint
            authorize = _with(authorize, netloc=urlsplit(sites.rogue).netloc)
        else:
            authorize = _with(authorize, **{tamper: "tampered-" + tamper})
        back = _log_in(web, authorize, "demo-clinician")
        assert str(back.url).startswith(f"{sites.service}/ui/auth/callback")
        assert back.status_code == 400 and "Sign-in failed" in back.text
        home = web.get(f"{sites.service}/ui/", follow_redirects=False)
        assert home.status_code == 303 and "/ui/login" in home.headers["location"]


def test_a_token_whose_issuer_is_not_the_configured_one_is_refused(sites: Sites) -> None:
    # The service was configured with http://localhost:<port>; the provider's ID tokens
    # (and its discovery document) say http://127.0.0.1:<port>, another issuer.
    with _browser() as web:
        authorize = _start(web, sites.misnamed)
        assert authorize.startswith(f"{sites.provider}/oauth/authorize?")
        back = _log_in(web, authorize, "demo-clinician")
        assert str(back.url).startswith(f"{sites.misnamed}/ui/auth/callback")
        assert back.status_code == 400 and "Sign-in failed" in back.text
        home = web.get(f"{sites.misnamed}/ui/", follow_redirects=False)
        assert home.status_code == 303


def test_role_from_claim_maps_provider_roles(tmp_path: Path) -> None:
    from unified_record.api.ui.settings import UISettings, role_from_claim

    known = {"social_worker", "nhs_clinician"}
    plain = UISettings()
    assert role_from_claim("social_worker", plain, known) == "social_worker"
    assert role_from_claim(["staff", "nhs_clinician"], plain, known) == "nhs_clinician"
    assert role_from_claim("admin", plain, known) is None
    assert role_from_claim(None, plain, known) is None
    mapped = UISettings(role_map={"CSC-SocialWorkers": "social_worker"})
    assert role_from_claim(["All-Staff", "CSC-SocialWorkers"], mapped, known) == "social_worker"
    assert role_from_claim("social_worker", mapped, known) is None  # the map is the whole list
