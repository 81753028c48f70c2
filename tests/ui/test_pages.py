"""The web pages in process (TestClient) over the linked sample, on both databases: sign-in
through the built-in OpenID Connect issuer, purpose of use, what each role may and may not
see, break-glass, the steward's decisions, governance, CSRF and signed-out refusals."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from ui_support import SAMPLE, Sample, build_sample, csrf_of

from unified_record.api import create_app
from unified_record.linkage import evaluate_index, read_truth, record_evaluation
from unified_record.linkage.accuracy import last_full_run
from unified_record.linkage.index import current_clusters
from unified_record.security.login import DEMO_USERS, WEB_CLIENT_ID
from unified_record.store import UnitOfWork
from unified_record.store.models import LinkagePairRow, LinkageRunRow, ResourceRow

BASE = "http://testserver"
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui-pages")]  # one sample build
USERS = {u.role: u.sub for u in DEMO_USERS}


class Site:
    def __init__(self, app: FastAPI, sample: Sample) -> None:
        self.app, self.sample = app, sample

    def anonymous(self) -> TestClient:
        return TestClient(self.app, base_url=BASE)

    def sign_in(self, role: str, purpose: str | None = None) -> TestClient:
        web = self.anonymous()
        start = web.get("/ui/login/start", follow_redirects=False)
        assert start.status_code == 302
        page = web.get(start.headers["location"])
        assert page.status_code == 200 and "Who are you signing in as?" in page.text
        form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"',
                               page.text))
        form["user"] = USERS[role]
        back = web.post("/oauth/authorize", data=form, follow_redirects=False)
        assert back.status_code == 303
        done = web.get(back.headers["location"], follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == "/ui/purpose", done.text
        choose = web.get("/ui/purpose")
        chosen = purpose or re.findall(r'name="purpose" type="radio" value="([A-Z]+)"',
                                       choose.text)[0]
        answer = web.post("/ui/purpose", data={"csrf_token": csrf_of(choose.text),
                                               "purpose": chosen})
        assert answer.status_code == 200, answer.text
        return web

    def big_client(self) -> str:
        sizes = Counter(self.sample.index.values())
        return min(c for c, n in sizes.items() if n >= 3)


@pytest.fixture(scope="module")
def site(sample_db: tuple[str, Path]) -> Iterator[Site]:
    url, data_dir = sample_db
    sample = build_sample(url, data_dir, BASE)
    app = create_app(sample.settings)
    yield Site(app, sample)
    app.state.engine.dispose()


def test_signed_out_pages_redirect_to_sign_in(site: Site) -> None:
    web = site.anonymous()
    for path in ("/ui/", "/ui/clients", f"/ui/clients/{site.big_client()}", "/ui/review",
                 "/ui/governance", "/ui/quality"):
        answer = web.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/ui/login?next=")
    assert web.post("/ui/logout", follow_redirects=False).status_code == 303
    login = web.get("/ui/login")
    assert login.status_code == 200 and 'href="/ui/login/start"' in login.text
    assert web.get("/ui/govuk/govuk-frontend.min.css").text.count("url(/ui/assets/") > 0


def test_each_role_signs_in_with_its_purposes_and_signs_out(site: Site) -> None:
    allowed = {"social_worker": {"TREAT", "ETREAT"}, "nhs_clinician": {"TREAT", "ETREAT"},
               "data_steward": {"RECORDMGT"}, "governance_officer": {"HCOMPL", "PATRQT"}}
    for role, purposes in allowed.items():
        web = site.sign_in(role)
        page = web.get("/ui/purpose").text
        assert set(re.findall(r'type="radio" value="([A-Z]+)"', page)) == purposes
        refused = web.post("/ui/purpose", data={"csrf_token": csrf_of(page),
                                                "purpose": "HRESCH"})
        assert refused.status_code == 400 and "govuk-error-summary" in refused.text
        home = web.get("/ui/")
        assert home.status_code == 200 and 'id="purpose-of-use"' in home.text
        cookie = web.cookies.get("ur_session")
        assert cookie
        out = web.post("/ui/logout", data={"csrf_token": csrf_of(home.text)})
        assert out.status_code == 200 and "You have signed out" in out.text
        assert web.get("/ui/", follow_redirects=False).status_code == 303


def test_session_cookie_flags_and_csrf(site: Site) -> None:
    web = site.sign_in("social_worker")
    home = web.get("/ui/")
    start = site.anonymous().get("/ui/login/start", follow_redirects=False)
    assert "frame-ancestors 'none'" in home.headers["content-security-policy"]
    assert home.headers["cache-control"] == "no-store"
    cookie = start.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/ui" in cookie
    assert "secure" not in cookie  # plain http in tests; https_only behind TLS
    for data in ({}, {"csrf_token": "forged"}):
        refused = web.post("/ui/logout", data=data)
        assert refused.status_code == 403 and "could not be accepted" in refused.text
        refused = web.post(f"/ui/clients/{site.big_client()}/break-glass",
                           data={**data, "reason": "test"})
        assert refused.status_code == 403
    assert web.get("/ui/", follow_redirects=False).status_code == 200  # still signed in
    assert csrf_of(home.text)


def test_demo_login_checks_the_request_and_codes_are_single_use(site: Site) -> None:
    web = site.anonymous()
    bad = web.get("/oauth/authorize", params={
        "response_type": "code", "client_id": WEB_CLIENT_ID, "scope": "openid",
        "redirect_uri": "https://elsewhere.example/cb", "code_challenge": "x",
        "code_challenge_method": "S256"})
    assert bad.status_code == 400 and "redirect URI" in bad.text
    login = site.app.state.login_server
    import base64
    import hashlib

    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()
                                         ).rstrip(b"=").decode()
    params = {"response_type": "code", "client_id": WEB_CLIENT_ID, "scope": "openid",
              "redirect_uri": login.redirect_uri, "code_challenge": challenge,
              "code_challenge_method": "S256", "state": "s", "nonce": "n"}
    target = login.issue_code(params, USERS["nhs_clinician"])
    code = parse_qs(urlsplit(target).query)["code"][0]
    form = {"grant_type": "authorization_code", "client_id": WEB_CLIENT_ID, "code": code,
            "redirect_uri": login.redirect_uri}
    assert web.post("/oauth/token", data={**form, "code_verifier": "w" * 50}
                    ).json()["error"] == "invalid_grant"
    first = web.post("/oauth/token", data={**form, "code_verifier": verifier})
    assert first.status_code == 200 and "id_token" in first.json()
    again = web.post("/oauth/token", data={**form, "code_verifier": verifier})
    assert again.status_code == 400 and "used" in again.json()["error_description"]
    form_page = web.post("/oauth/authorize", data={**params, "user": USERS["data_steward"],
                                                   "csrf_token": "forged"})
    assert form_page.status_code == 400


def test_social_worker_finds_a_client_and_reads_the_record(site: Site) -> None:
    web = site.sign_in("social_worker", "TREAT")
    client = site.big_client()
    record = web.get(f"/ui/clients/{client}")
    assert record.status_code == 200
    name = re.search(r'<h1 class="govuk-heading-l">([^<]+)</h1>', record.text)
    assert name and "Demographics and their sources" in record.text
    assert "Get emergency access" in record.text  # social workers may break the glass
    family = name.group(1).split()[-1]
    dob = re.search(r"Date of birth</dt><dd class=\"govuk-summary-list__value\">([0-9-]+)<",
                    record.text)
    assert dob
    year, month, day = dob.group(1).split("-")
    found = web.get("/ui/clients", params={"name": family, "dob": f"{day}/{month}/{year}"})
    assert found.status_code == 200 and f'href="/ui/clients/{client}"' in found.text
    row = found.text.split(f'href="/ui/clients/{client}"', 1)[1].split("</tr>", 1)[0]
    members = Counter(site.sample.index.values())[client]
    assert f"({members} records)" in row  # who holds them, and how many
    fuzzy = family[0] + family[1:].replace("a", "e", 1).replace("o", "u", 1)
    sounds = web.get("/ui/clients", params={"name": fuzzy, "fuzzy": "on"})
    assert f'href="/ui/clients/{client}"' in sounds.text
    local = re.search(r"Local id</dt>.*?<li>([^ <]+)", record.text, re.DOTALL)
    assert local, "the record shows its local ids"
    by_local = web.get("/ui/clients", params={"local_id": local.group(1)})
    assert f'href="/ui/clients/{client}"' in by_local.text
    by_id = web.get("/ui/clients", params={"local_id": client})
    assert f'href="/ui/clients/{client}"' in by_id.text
    bad = web.get("/ui/clients", params={"dob": "31/2/2001"})
    assert bad.status_code == 400 and "govuk-error-summary" in bad.text
    assert web.get("/ui/clients", params={"nhs": "12"}).status_code == 400
    assert web.get("/ui/clients/no-such-client").status_code == 404
    assert web.get("/ui/review").status_code == 403
    assert web.get("/ui/governance").status_code == 403
    events = site.app.state.enforcement.audit.entries(client_id=client)
    assert any(e.event["agent"][0]["who"]["identifier"]["value"] == USERS["social_worker"]
               for e in events if e.event.get("agent"))


def test_steward_and_governance_see_no_clinical_content(site: Site) -> None:
    client = site.big_client()
    clinician = site.sign_in("nhs_clinician", "TREAT").get(f"/ui/clients/{client}").text
    assert clinician.count("govuk-table__row") > 0
    for role in ("data_steward", "governance_officer"):
        page = site.sign_in(role).get(f"/ui/clients/{client}")
        assert page.status_code == 200
        assert 'id="withheld-notice"' in page.text
        assert "Get emergency access" not in page.text
        for section in ("social-care-1", "nhs-1", "nhs-2", "nhs-3"):
            table = page.text.split(f'id="{section}"', 1)[1].split("</table>", 1)[0]
            assert "None shown." in table, (role, section)


def test_break_glass_then_governance_review(site: Site) -> None:
    client = site.big_client()
    web = site.sign_in("nhs_clinician", "TREAT")
    page = web.get(f"/ui/clients/{client}")
    token = csrf_of(page.text)
    empty = web.post(f"/ui/clients/{client}/break-glass", data={"csrf_token": token,
                                                                 "reason": " "})
    assert empty.status_code == 400
    granted = web.post(f"/ui/clients/{client}/break-glass",
                       data={"csrf_token": token, "reason": "Unconscious in A&E"})
    assert granted.status_code == 200 and "Emergency access" in granted.text
    assert str(granted.url).endswith(f"/ui/clients/{client}")
    assert 'id="purpose-of-use">BTG<' in granted.text
    steward = site.sign_in("data_steward")
    assert steward.get("/ui/governance/break-glass").status_code == 403

    officer = site.sign_in("governance_officer", "HCOMPL")
    queue = officer.get("/ui/governance/break-glass")
    assert "Unconscious in A&amp;E" in queue.text
    grant_id = re.search(r'action="/ui/governance/break-glass/([^"]+)"', queue.text)
    assert grant_id
    missing = officer.post(f"/ui/governance/break-glass/{grant_id.group(1)}",
                           data={"csrf_token": csrf_of(queue.text)})
    assert missing.status_code == 400
    closed = officer.post(f"/ui/governance/break-glass/{grant_id.group(1)}",
                          data={"csrf_token": csrf_of(queue.text), "outcome": "appropriate",
                                "note": "checked"})
    assert closed.status_code == 200 and "Review closed." in closed.text
    assert "Unconscious" not in closed.text
    who = officer.get(f"/ui/governance/clients/{client}")
    assert USERS["nhs_clinician"] in who.text and "Break-glass" in who.text


def test_governance_consents_objection_and_reports(site: Site) -> None:
    client = sorted(set(site.sample.index.values()))[1]
    officer = site.sign_in("governance_officer", "HCOMPL")
    page = officer.get(f"/ui/governance/clients/{client}")
    assert page.status_code == 200 and "No consent or objection records." in page.text
    token = csrf_of(page.text)
    assert officer.post(f"/ui/governance/clients/{client}/consents",
                        data={"csrf_token": token}).status_code == 400
    added = officer.post(f"/ui/governance/clients/{client}/consents",
                         data={"csrf_token": token, "effect": "deny"})
    assert added.status_code == 200 and "Consent recorded." in added.text
    assert "Objects" in added.text

    worker = site.sign_in("social_worker", "TREAT")
    record = worker.get(f"/ui/clients/{client}")
    assert 'id="withheld-notice"' in record.text

    consent_id = re.search(r"/consents/([^/]+)/withdraw", added.text)
    assert consent_id
    withdrawn = officer.post(f"/ui/governance/clients/{client}/consents/{consent_id.group(1)}"
                             "/withdraw", data={"csrf_token": token})
    assert withdrawn.status_code == 200 and "inactive" in withdrawn.text
    opted = officer.post(f"/ui/governance/clients/{client}/opt-out",
                         data={"csrf_token": token, "opt_out": "yes"})
    assert "This person has opted out" in opted.text

    denied = officer.get("/ui/governance/denied")
    assert denied.status_code == 200 and f"/ui/governance/clients/{client}" in denied.text
    dashboard = officer.get("/ui/governance")
    assert dashboard.status_code == 200 and "Verified" in dashboard.text
    assert dashboard.text.count("<svg") == 2
    quality = officer.get("/ui/quality")
    assert quality.status_code == 200 and "Active clients" in quality.text
    worker_home = worker.get("/ui/quality")
    assert worker_home.status_code == 403


def _possible_match(site: Site) -> tuple[str, str]:
    """The sample links cleanly (no pair in the review band): add one such pair, as a run
    that scored two records of different clients at probability 0.8 would."""
    singles = sorted(uid for uid, c in site.sample.index.items()
                     if Counter(site.sample.index.values())[c] == 1)
    left, right = singles[0], singles[1]
    with Session(site.app.state.engine) as session:
        run_id = session.scalar(sa.select(sa.func.max(LinkageRunRow.id)))
        session.add(LinkagePairRow(unique_id_l=left, unique_id_r=right, run_id=run_id,
                                   match_probability=0.8, match_weight=2.0))
        session.commit()
    return left, right


def test_steward_reviews_a_possible_match(site: Site) -> None:
    left, right = _possible_match(site)
    steward = site.sign_in("data_steward", "RECORDMGT")
    queue = steward.get("/ui/review")
    assert queue.status_code == 200
    assert f'href="/ui/review/{left}/{right}"' in queue.text
    page = steward.get(f"/ui/review/{left}/{right}")
    assert page.status_code == 200
    assert "<svg" in page.text and "Match weight, step by step" in page.text
    token = csrf_of(page.text)
    missing = steward.post(f"/ui/review/{left}/{right}", data={"csrf_token": token,
                                                               "decision": "link"})
    assert missing.status_code == 400 and "Enter the reason" in missing.text
    done = steward.post(f"/ui/review/{left}/{right}", data={
        "csrf_token": token, "decision": "not_a_match", "reason": "different mothers"})
    assert done.status_code == 200 and "Decision recorded" in done.text
    audited = [r.event for r in site.app.state.enforcement.audit.entries()
               if r.event["subtype"][0]["code"] == "link-decision"]
    assert audited and {e["what"]["reference"] for e in audited[-1]["entity"]} >= {
        f"Patient/{left}", f"Patient/{right}"}
    assert f"/ui/review/{left}/{right}" not in done.text
    assert steward.get("/ui/quality").status_code == 200

    sizes = Counter(site.sample.index.values())
    pair_client = max(c for c, n in sizes.items() if n >= 2 and c != site.big_client())
    first, second = sorted(u for u, c in site.sample.index.items() if c == pair_client)[:2]
    page = steward.get(f"/ui/review/{first}/{second}")
    unlinked = steward.post(f"/ui/review/{first}/{second}", data={
        "csrf_token": csrf_of(page.text), "decision": "unlink_left",
        "reason": "linked by mistake"})
    assert unlinked.status_code == 200 and "Decision recorded (unlink)" in unlinked.text
    with Session(site.app.state.engine) as session:
        after = current_clusters(session)
    assert after[first] != after[second]
    worker = site.sign_in("social_worker")
    assert worker.get(f"/ui/review/{left}/{right}").status_code == 403


def test_quality_page_shows_precision_and_recall_when_a_truth_file_was_given(site: Site
                                                                             ) -> None:
    steward = site.sign_in("data_steward", "RECORDMGT")
    before = steward.get("/ui/quality")
    assert before.status_code == 200
    assert 'id="no-evaluation"' in before.text and "no truth file was given" in before.text
    assert 'id="evaluation"' not in before.text

    settings = site.sample.settings
    with Session(site.app.state.engine) as session:
        run_id = last_full_run(session)
        assert run_id is not None
        result = evaluate_index(session, read_truth(SAMPLE / "truth.csv"),
                                auto_link_threshold=settings.link_auto_threshold,
                                review_threshold=settings.link_review_threshold)
        assert result is not None
        stored = record_evaluation(session, run_id, "truth.csv", result)
        session.commit()
    officer = site.sign_in("governance_officer", "HCOMPL")
    for web in (steward, officer):
        page = web.get("/ui/quality")
        assert page.status_code == 200 and 'id="no-evaluation"' not in page.text
        shown = page.text.split('id="evaluation"', 1)[1].split("</dl>", 1)[0]
        assert "truth.csv" in shown
        assert stored.evaluated_at.strftime("%Y-%m-%d %H:%M") in shown
        for band in (result.auto_link, result.with_review, result.clusters):
            assert (f"precision {band.precision:.4f}, recall {band.recall:.4f}, "
                    f"F1 {band.f1:.4f}") in shown
        assert f"{result.clusters.exact:,} of {result.clusters.persons:,}" in shown


def _client_with_mental_health_condition(site: Site) -> str:
    state = site.app.state
    with UnitOfWork(state.sessions, state.keyring, state.blind_index) as unit:
        ids = unit.session.scalars(sa.select(ResourceRow.id).where(
            ResourceRow.resource_type == "Condition",
            ResourceRow.security_labels == "mental_health").order_by(ResourceRow.id)).all()
        for rid in ids:
            body = unit.resources.get("Condition", rid) or {}
            patient = str(body["subject"]["reference"]).removeprefix("Patient/")
            if patient in site.sample.index:
                return site.sample.index[patient]
    raise AssertionError("the sample has no mental-health Condition")


def _nhs_rows(page: str) -> int:
    return sum(page.split(f'id="nhs-{n}"', 1)[1].split("</table>", 1)[0].count(
        'class="govuk-table__cell">') for n in range(1, 6))


def test_purpose_of_use_per_view_changes_what_is_shown_and_is_audited(site: Site) -> None:
    client = _client_with_mental_health_condition(site)
    officer = site.sign_in("governance_officer", "HCOMPL")
    page = officer.get(f"/ui/governance/clients/{client}")
    added = officer.post(f"/ui/governance/clients/{client}/consents", data={
        "csrf_token": csrf_of(page.text), "effect": "permit", "category": "mental_health"})
    assert added.status_code == 200 and "Consent recorded." in added.text

    # Under TREAT a social worker sees mental-health records the person consented to share.
    worker = site.sign_in("social_worker", "TREAT")
    treat = worker.get(f"/ui/clients/{client}")
    assert 'id="purpose-of-use">TREAT<' in treat.text and "Restricted" in treat.text
    form = treat.text.split('id="view-purpose"', 1)[1].split("</form>", 1)[0]
    assert set(re.findall(r'name="purpose" type="radio" value="([A-Z]+)"', form)) == {
        "TREAT", "ETREAT"}  # the role's purposes, break-glass aside
    assert 'value="TREAT" checked' in form

    # For emergency treatment the policy withholds them: fewer rows, the notice shows.
    changed = worker.post(f"/ui/clients/{client}/purpose",
                          data={"csrf_token": csrf_of(treat.text), "purpose": "ETREAT"},
                          follow_redirects=False)
    assert changed.status_code == 303 and changed.headers["location"] == f"/ui/clients/{client}"
    etreat = worker.get(f"/ui/clients/{client}")
    assert 'id="purpose-of-use">ETREAT<' in etreat.text
    assert "Purpose of use for this record:" in etreat.text
    assert "You are now viewing this record for emergency treatment (ETREAT)." in etreat.text
    assert "Restricted" not in etreat.text and 'id="withheld-notice"' in etreat.text
    assert _nhs_rows(etreat.text) < _nhs_rows(treat.text)
    audit = site.app.state.enforcement.audit
    purposes = [e.event["purposeOfEvent"][0]["coding"][0]["code"]
                for e in audit.entries(client_id=client) if e.event.get("purposeOfEvent")]
    assert purposes[-1] == "ETREAT" and "TREAT" in purposes

    # Other pages, and other records, keep the purpose chosen at sign-in.
    assert 'id="purpose-of-use">TREAT<' in worker.get("/ui/clients").text
    other = next(c for c in sorted(set(site.sample.index.values())) if c != client)
    assert 'id="purpose-of-use">TREAT<' in worker.get(f"/ui/clients/{other}").text

    # A purpose the role may not use is refused (and audited); so is break-glass without
    # its reason form, and a form without the CSRF token.
    token = csrf_of(etreat.text)
    refused = worker.post(f"/ui/clients/{client}/purpose",
                          data={"csrf_token": token, "purpose": "HOPERAT"})
    assert refused.status_code == 403 and "Access refused" in refused.text
    denied = [e.event for e in audit.entries(client_id=None)
              if e.event.get("purposeOfEvent")
              and e.event["purposeOfEvent"][0]["coding"][0]["code"] == "HOPERAT"]
    assert denied and denied[-1]["outcome"] != "0"
    assert worker.post(f"/ui/clients/{client}/purpose",
                       data={"csrf_token": token, "purpose": "BTG"}).status_code == 400
    assert worker.post(f"/ui/clients/{client}/purpose",
                       data={"csrf_token": token}).status_code == 400
    assert worker.post(f"/ui/clients/{client}/purpose",
                       data={"purpose": "TREAT"}).status_code == 403
    assert 'id="purpose-of-use">ETREAT<' in worker.get(f"/ui/clients/{client}").text

    # Choosing the purpose again at /ui/purpose applies it to every record.
    choose = worker.get("/ui/purpose")
    worker.post("/ui/purpose", data={"csrf_token": csrf_of(choose.text), "purpose": "TREAT"})
    assert 'id="purpose-of-use">TREAT<' in worker.get(f"/ui/clients/{client}").text
