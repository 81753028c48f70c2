"""The web pages in headless Debian Chromium (Playwright, no browser download) against a
live uvicorn on loopback with the linked sample: each role signs in and does its core
tasks, with JavaScript off for the social worker's and the steward's (the pages must work
without it); axe-core checks every page (no serious or critical violation); screenshots of
the main pages go to docs/screenshots/."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from serving_support import free_socket, serving
from sqlalchemy.orm import Session
from ui_support import REPO, SAMPLE, build_sample

from unified_record.api import create_app
from unified_record.linkage import evaluate_index, read_truth, record_evaluation
from unified_record.linkage.accuracy import last_full_run
from unified_record.store.models import LinkagePairRow, LinkageRunRow

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
SHOTS = REPO / "docs" / "screenshots"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("browser"),
    pytest.mark.usefixtures("browser_prerequisites"),
]


@pytest.fixture(scope="module")
def browser_prerequisites() -> None:
    """Fail, never skip, without them: `.ci/run` installs chromium and `make` installs
    axe-core, so a missing one is a broken set-up that a skip would hide."""
    missing = [what for what, path in (("Debian's chromium (apt-get install -y chromium)",
                                        CHROMIUM),
                                       ("npm's axe-core (make installs it)", AXE))
               if not path.exists()]
    if missing:
        pytest.fail("browser tests need " + " and ".join(missing))


class Live:
    def __init__(self, base: str, index: dict[str, str], engine: Any) -> None:
        self.base, self.index, self.engine = base, index, engine
        self.checked: list[str] = []
        self.checker: Any = None


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("browser")
    sock, base = free_socket()
    sample = build_sample(f"sqlite:///{tmp / 'ui.db'}", tmp / "var", base)
    app = create_app(sample.settings)
    with Session(app.state.engine) as session:  # scored against its truth, as the demo is
        run_id = last_full_run(session)
        scored = evaluate_index(session, read_truth(SAMPLE / "truth.csv"),
                                auto_link_threshold=sample.settings.link_auto_threshold,
                                review_threshold=sample.settings.link_review_threshold)
        assert run_id is not None and scored is not None
        record_evaluation(session, run_id, "truth.csv", scored)
        session.commit()
    try:
        with serving(app, sock, lifespan="off"):
            yield Live(base, sample.index, app.state.engine)
    finally:
        app.state.engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


@pytest.fixture(autouse=True)
def checker(browser: Any, live: Live) -> Iterator[None]:
    # The checker alone bypasses the pages' Content-Security-Policy, to inject axe-core.
    context = browser.new_context(viewport={"width": 1100, "height": 900}, bypass_csp=True)
    live.checker = context.new_page()
    yield
    context.close()


def axe_check(page: Any, live: Live) -> None:
    """No serious or critical WCAG 2.x A/AA violation on the page as it stands.

    The page's HTML is checked in a JavaScript-enabled page of the same origin (so its
    styles apply): the pages under test may have JavaScript off, where axe cannot run."""
    html = page.content()
    checker = live.checker
    checker.goto(f"{live.base}/ui/signed-out")
    checker.set_content(html, wait_until="load")
    checker.add_script_tag(path=str(AXE))
    result = checker.evaluate("""async () => await axe.run(document, {runOnly: {type: 'tag',
        values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']}})""")
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
           for v in result["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, f"{page.url}: {bad}"
    live.checked.append(page.url)


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(browser: Any, live: Live, user_label: str, purpose: str, *,
            javascript: bool = True, screenshots: bool = False) -> Any:
    context = browser.new_context(java_script_enabled=javascript,
                                  viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.goto(f"{live.base}/ui/")
    assert "/ui/login" in page.url
    axe_check(page, live)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/oauth/authorize**")
    axe_check(page, live)
    if screenshots:
        shot(page, "01-demo-sign-in")
    page.get_by_label(user_label).check()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/ui/purpose")
    axe_check(page, live)
    page.locator(f'input[name="purpose"][value="{purpose}"]').check()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/ui/")
    assert page.locator("#purpose-of-use").inner_text() == purpose
    axe_check(page, live)
    return page


def big_client(live: Live) -> str:
    sizes = Counter(live.index.values())
    return min(c for c, n in sizes.items() if n >= 3)


def test_social_worker_without_javascript(browser: Any, live: Live) -> None:
    page = sign_in(browser, live, "Sam Social-Worker", "TREAT", javascript=False,
                   screenshots=True)
    client = big_client(live)
    page.goto(f"{live.base}/ui/clients/{client}")
    family = page.locator("h1").inner_text().split()[-1]
    page.locator("#navigation").get_by_role("link", name="Find a client").click()
    page.get_by_label("Name", exact=True).fill(family)
    page.get_by_role("button", name="Search").click()
    playwright_sync.expect(page.locator("#results-heading")).to_be_visible()
    axe_check(page, live)
    shot(page, "02-find-a-client")
    page.locator(f'a[href="/ui/clients/{client}"]').click()
    page.wait_for_url(f"**/ui/clients/{client}")
    assert page.get_by_role("heading", name="Demographics and their sources").is_visible()
    axe_check(page, live)
    shot(page, "03-unified-record")
    # View this record for another purpose of use (a form, no JavaScript needed).
    page.get_by_label("Emergency treatment (ETREAT)").check()
    page.get_by_role("button", name="View with this purpose").click()
    page.get_by_text("You are now viewing this record for emergency treatment").wait_for()
    assert page.locator("#purpose-of-use").inner_text() == "ETREAT"
    assert "for this record" in page.locator("#user-bar").inner_text()
    axe_check(page, live)
    page.get_by_label("Treatment (direct care) (TREAT)").check()
    page.get_by_role("button", name="View with this purpose").click()
    page.get_by_text("You are now viewing this record for treatment").wait_for()
    assert page.locator("#purpose-of-use").inner_text() == "TREAT"
    page.get_by_label("Why do you need emergency access?").fill("Missing person, at risk")
    page.get_by_role("button", name="Get emergency access").click()
    page.get_by_text("You are viewing this record under break-glass").wait_for()
    assert page.locator("#purpose-of-use").inner_text() == "BTG"
    axe_check(page, live)
    page.get_by_role("button", name="Sign out").click()
    playwright_sync.expect(page.get_by_role("heading", name="You have signed out")).to_be_visible()
    axe_check(page, live)
    page.goto(f"{live.base}/ui/clients/{client}")
    assert "/ui/login" in page.url
    page.context.close()


def test_clinician_sees_nhs_records(browser: Any, live: Live) -> None:
    page = sign_in(browser, live, "Chris Clinician", "TREAT")
    page.goto(f"{live.base}/ui/clients/{big_client(live)}")
    assert page.get_by_role("heading", name="NHS records").is_visible()
    assert page.locator("#nhs-2 tbody tr").count() >= 1
    axe_check(page, live)
    page.context.close()


def test_data_steward_without_javascript(browser: Any, live: Live) -> None:
    singles = sorted(uid for uid, c in live.index.items()
                     if Counter(live.index.values())[c] == 1)
    left, right = singles[2], singles[3]
    with Session(live.engine) as session:  # a possible match (the sample has none)
        run_id = session.scalar(sa.select(sa.func.max(LinkageRunRow.id)))
        session.add(LinkagePairRow(unique_id_l=left, unique_id_r=right, run_id=run_id,
                                   match_probability=0.8, match_weight=2.0))
        session.commit()
    page = sign_in(browser, live, "Dee Data-Steward", "RECORDMGT", javascript=False)
    page.locator("#navigation").get_by_role("link", name="Possible matches").click()
    axe_check(page, live)
    shot(page, "04-review-queue")
    page.get_by_role("link", name=f"Review {left} and {right}").click()
    assert page.locator("figure svg").count() == 1
    axe_check(page, live)
    shot(page, "05-review-pair")
    page.get_by_role("button", name="Record decision").click()
    playwright_sync.expect(page.locator(".govuk-error-summary")).to_be_visible()
    axe_check(page, live)
    page.get_by_label("They are different people: not a match").check()
    page.get_by_label("Reason for your decision").fill("Different dates of birth")
    page.get_by_role("button", name="Record decision").click()
    page.wait_for_url("**/ui/review")
    playwright_sync.expect(page.get_by_text("Decision recorded")).to_be_visible()
    page.locator("#navigation").get_by_role("link", name="Linkage quality").click()
    # precision and recall, from the truth file (expect waits for the page, is_visible not)
    playwright_sync.expect(page.locator("#evaluation")).to_be_visible()
    assert "truth.csv" in page.locator("#evaluation").inner_text()
    axe_check(page, live)
    shot(page, "06-linkage-quality")
    page.goto(f"{live.base}/ui/governance")
    assert page.get_by_role("heading", name="You cannot use this page").is_visible()
    page.context.close()


def test_governance_officer(browser: Any, live: Live) -> None:
    page = sign_in(browser, live, "Gabi Governance", "HCOMPL")
    page.locator("#navigation").get_by_role("link", name="Governance", exact=True).click()
    assert page.locator("#audit-status").inner_text().strip().startswith("Verified")
    axe_check(page, live)
    shot(page, "07-governance-dashboard")
    client = sorted(set(live.index.values()))[5]
    page.get_by_label("Consents and access log of a client (client id)").fill(client)
    page.get_by_role("button", name="Open").click()
    page.get_by_label("objects to sharing").check()
    page.get_by_role("button", name="Record", exact=True).click()
    playwright_sync.expect(page.get_by_text("Consent recorded.")).to_be_visible()
    axe_check(page, live)
    shot(page, "08-consents-and-access")
    page.locator("#navigation").get_by_role("link", name="Break-glass reviews").click()
    axe_check(page, live)
    shot(page, "09-break-glass-reviews")
    if page.locator(".govuk-summary-card").count():
        card = page.locator(".govuk-summary-card").first
        card.get_by_label("appropriate", exact=True).check()
        card.get_by_role("button", name="Close review").click()
        playwright_sync.expect(page.get_by_text("Review closed.")).to_be_visible()
    page.locator("#navigation").get_by_role("link", name="Denied access").click()
    axe_check(page, live)
    page.locator("#navigation").get_by_role("link", name="Linkage quality").click()
    axe_check(page, live)
    page.context.close()
