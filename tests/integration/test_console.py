"""The console, end to end in headless Chromium, one test per role doing that role's real task on a live hub
(a real broker, a real worker, the real gateway over HTTP): an analyst triages and drafts; two officers
consent and approve; the liaison officer sees it and downloads the STIX bundle; the auditor verifies the chain
and finds who saw the person; an agency finds its rejected report and why. Each saves screenshots under
build/artifacts/console-*.png. Every test also checks what the browser did: it called nothing but the
gateway's API and the console's own files, put no token in a URL it sent, and kept nothing in storage."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from adapters.sql.tokens import SIGNIN, token_id_of
from producers.publisher import seal_retraction
from producers.simulate import simulate
from schemas.convert import report_from_json
from schemas.envelope import RETRACTION
from tests.envelopes import EnvelopeKit
from tests.factories import make_report
from tests.integration.test_gateway import Live, live_hub

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "artifacts"
PARTNER = "HSU-TH"
SHARED: dict[str, Any] = {}  # what one role's test leaves for the next (tests of a file run in order, in one process)

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (make test installs them with apt where it can)",
)


@pytest.fixture(scope="module")
def live(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_hub(broker, tmp_path_factory.mktemp("console"), "console", 60, 23) as started:
        yield started


class Browser:
    """Headless Chromium through Selenium, recording every request the page makes."""

    def __init__(self, live: Live, downloads: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1500,1000"):  # fmt: skip
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        self.driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        self.wait = WebDriverWait(self.driver, 60)
        self.live = live
        self.requests: list[str] = []

    def sign_in(self, role: str, subject: str, **acts_for: str) -> str:
        """Open the one-time sign-in link `tiphub up` would print for this person; returns the link."""
        token = self.live.tokens.issue(role, subject, use=SIGNIN, ttl_s=600, **acts_for)
        link = f"{self.live.url}/#signin={token}"
        self.driver.get(link)
        self.until(lambda d: d.find_element("id", "who").text.startswith(subject))
        assert "signin" not in self.driver.current_url  # the token left the address bar
        return link

    def until(self, condition: Callable[[Any], Any]) -> Any:
        return self.wait.until(condition)

    def css(self, selector: str) -> list[Any]:
        return self.driver.find_elements("css selector", selector)

    def text(self, selector: str) -> str:
        """What the elements say (their text content: headings are styled upper-case)."""
        return " ".join(self.texts(selector))

    def texts(self, selector: str) -> list[str]:
        """Each element's text, read in one step in the page (a live table re-renders between two reads)."""
        script = "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)"
        return list(self.driver.execute_script(script, selector))

    def go(self, hash_route: str) -> None:
        self.driver.execute_script("location.hash = arguments[0]", hash_route)

    def click(self, selector: str) -> None:
        self.until(lambda d: self.css(selector))
        self.driver.execute_script("document.querySelector(arguments[0]).click()", selector)

    def accessible(self, name: str) -> None:
        """axe-core (WCAG 2.1 A and AA rules) on the screen as it stands: no serious or critical violation.
        The report goes to build/artifacts/console-a11y-NAME.json."""
        self.driver.execute_script(axe_source())  # through the driver: the page's CSP admits no script of ours
        report = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
            ".then((r) => done({violations: r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,"
            " nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5)}))}), (e) => done({error: String(e)}))"
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"console-a11y-{name}.json").write_text(json.dumps(report, indent=1))
        assert "error" not in report, report
        serious = [v for v in report["violations"] if v["impact"] in ("serious", "critical")]
        assert not serious, json.dumps(serious, indent=1)

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"console-{name}.png"
        assert self.driver.save_screenshot(str(path)) and path.stat().st_size > 20_000

    def collect(self) -> None:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])

    def check_and_quit(self) -> None:
        """The page called only this gateway's API and the console's files, sent no token in a URL, and left
        nothing in the browser's storage; the session cookie is out of the page's reach."""
        try:
            self.collect()
            api_paths = [re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$") for p in self.api_paths()]
            for url in self.requests:
                if url.startswith(("data:", "blob:")):
                    continue
                parts = urlsplit(url)
                assert f"{parts.scheme}://{parts.netloc}" == self.live.url, url
                assert parts.path in ("/", "/console/console.js", "/console/console.css") or any(
                    p.match(parts.path) for p in api_paths
                ), url
                assert "signin=" not in url and "token=" not in url and "eyJ" not in url, url
            if self.driver.current_url.startswith(self.live.url):  # a page of the console, not a blank tab
                script = "return [localStorage.length, sessionStorage.length, document.cookie]"
                assert self.driver.execute_script(script) == [0, 0, ""]
        finally:
            self.driver.quit()

    def api_paths(self) -> list[str]:
        return list(httpx.get(self.live.url + "/openapi.json", timeout=30).json()["paths"])


@pytest.fixture
def browser(live: Live, tmp_path: Path) -> Iterator[Browser]:
    opened = Browser(live, tmp_path)
    try:
        yield opened
    finally:
        opened.check_and_quit()


AXE = Path(__file__).resolve().parents[2] / "build" / "axe"


def axe_source() -> str:
    """axe-core's script, installed by scripts/ensure-axe (pinned in scripts/axe/package-lock.json)."""
    script = AXE / "node_modules" / "axe-core" / "axe.min.js"
    if not script.exists():
        ensured = subprocess.run(
            [str(AXE.parents[1] / "scripts" / "ensure-axe"), str(AXE)], capture_output=True, text=True, timeout=300
        )
        if not script.exists():
            pytest.fail(f"axe-core is not installed: {ensured.stdout.strip() or ensured.stderr.strip()}")
    return script.read_text()


def api(live: Live, method: str, path: str, token: str, **kw: Any) -> Any:
    response = httpx.request(method, live.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=60, **kw)
    assert response.status_code < 300, (path, response.status_code, response.text)
    return response.json()


def draftable_signal(live: Live) -> str:
    """An open IR-1 signal of NZ-NIC of which something may go to the partner."""
    token = live.token("analyst", agency="NZ-NIC")
    page = api(live, "GET", "/v1/signals?limit=500", token)["signals"]
    for signal in sorted({s["signal_id"]: s for s in page}.values(), key=lambda s: s["signal_id"]):
        if (
            signal["requirement_id"] == "IR-1"
            and signal["status"] == "open"
            and api(live, "GET", f"/v1/signals/{signal['signal_id']}/partners/{PARTNER}", token)["partner_signals"]
        ):
            return str(signal["signal_id"])
    raise AssertionError("no signal of this simulation may go to the partner")


@needs_chromium
def test_an_analyst_finds_a_signal_triages_it_and_drafts_a_summary_for_a_partner(live: Live, browser: Browser) -> None:
    target = draftable_signal(live)
    link = browser.sign_in("analyst", "Ana", agency="NZ-NIC")
    browser.until(lambda d: len(browser.css("tr.signal")) >= 5)
    browser.until(lambda d: "live" in browser.text("#live-state"))
    browser.until(lambda d: len(browser.css("tr.coverage")) == 6)
    # Live: new people arrive while the page is open, and their signals appear without a reload.
    before = len(browser.css("tr.signal"))
    live.hub.publish(simulate(12, seed=99).reports)
    browser.until(lambda d: len(browser.css("tr.signal")) > before)
    # Filters: one requirement, then a minor involved.
    browser.driver.execute_script(
        "const s = document.querySelector('select[name=requirement]'); s.value = 'IR-1';"
        "s.dispatchEvent(new Event('input', {bubbles: true}))"
    )
    browser.until(lambda d: browser.css("tr.signal") and all("IR-1" in t for t in browser.texts("tr.signal")))
    browser.shot("analyst-signals")
    browser.accessible("analyst-signals")

    browser.go(f"#/signal/{target}")
    browser.until(lambda d: len(browser.css("#graph g.report")) >= 2)
    assert len(browser.css("ol.timeline li")) == len(browser.css("#graph g.report"))
    assert target in browser.text("#signal-title")
    # Triage with a note: saved, in the history, and the state the API now gives.
    browser.driver.execute_script("document.getElementById('triage-state').value = 'triaged'")
    browser.driver.find_element("id", "triage-note").send_keys("Checked with customs; passport matches.")
    browser.click("form.triage button[type=submit]")
    browser.until(lambda d: "Checked with customs" in browser.text("ul.triage-history"))
    detail = api(live, "GET", f"/v1/signals/{target}", live.token("analyst", agency="NZ-NIC"))
    assert detail["triage"][-1]["state"] == "triaged" and detail["triage"][-1]["actor"] == "analyst:Ana"
    # What the partner would receive, field by field with the rule and clause, then the draft.
    browser.driver.execute_script(f"document.getElementById('partner').value = '{PARTNER}'")
    browser.click("form[aria-label='Draft a summary'] button")
    browser.until(lambda d: browser.css("#partner-view table.fields tr[data-field]"))
    rows = browser.driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#partner-view table.fields tr[data-field]')]"
        ".map((r) => [r.dataset.field, r.textContent]))"
    )
    assert {"requirement_id", "agencies", "elements", "first_seen"} <= set(rows)
    assert all(re.search(r"(share|generalise|drop)", text) for text in rows.values()), rows
    browser.shot("analyst-signal")
    browser.accessible("analyst-signal")
    browser.click("#partner-view button.draft")
    browser.until(lambda d: browser.css("a.drafted"))
    summary_id = browser.text("a.drafted").removeprefix("Drafted: ")
    browser.shot("analyst-drafted")
    drafts = api(live, "GET", "/v1/summaries", live.token("analyst", agency="NZ-NIC"))["summaries"]
    [drafted] = [s for s in drafts if s["summary_id"] == summary_id]
    assert drafted["drafted_by"] == "Ana" and drafted["partner"] == PARTNER and drafted["status"] == "pending"
    SHARED["summary"], SHARED["signal"] = drafted, target

    # A link opened while someone is signed in asks first (a link from anywhere must not swap the person).
    browser.driver.get(link)
    browser.until(lambda d: _alert(d))
    browser.driver.switch_to.alert.dismiss()
    browser.until(lambda d: "still signed in" in browser.text("#status"))
    assert browser.text("#who").startswith("Ana")
    # The sign-in link opened one session: seen again (history, a screen share), it opens nothing.
    browser.driver.delete_all_cookies()
    browser.driver.get(link)
    browser.until(lambda d: _alert(d))
    browser.driver.switch_to.alert.accept()
    browser.until(lambda d: "Sign-in refused" in browser.text("#status"))
    assert not browser.css("#signin[hidden]") and browser.text("#who") == ""
    browser.accessible("signin")


def _alert(driver: Any) -> bool:
    try:
        return bool(driver.switch_to.alert.text)
    except Exception:
        return False


def drafted_summary(live: Live) -> dict[str, Any]:
    """The analyst's draft, or one drafted through the API when this test runs alone."""
    if "summary" not in SHARED:
        SHARED["signal"] = draftable_signal(live)
        SHARED["summary"] = api(
            live, "POST", "/v1/summaries", live.tokens.issue("analyst", "Ana", agency="NZ-NIC"),
            json={"signal_id": SHARED["signal"], "partner": PARTNER},
        )  # fmt: skip
    return dict(SHARED["summary"])


@needs_chromium
def test_two_officers_consent_and_approve_with_the_partners_view_beside_their_own(live: Live, browser: Browser) -> None:
    summary = drafted_summary(live)
    sid = summary["summary_id"]
    for agency in summary["consents_required"]:
        if agency == "NZ-NIC":
            continue
        browser.sign_in("releasing_officer", f"Officer of {agency}", agency=agency)
        browser.until(lambda d: browser.css(f"tr.summary[data-summary='{sid}']"))
        browser.go(f"#/summary/{sid}")
        browser.until(lambda d: browser.css("button.consent"))
        assert "Your agency's part" in browser.text("#view")
        browser.shot(f"officer-consent-{agency}")
        browser.click("button.consent")
        browser.until(lambda d: "Consent:" in browser.text("#status"))
        browser.click("#signout")
        browser.until(lambda d: browser.css("#signin:not([hidden])"))

    # The drafter cannot approve her own draft, whatever her role: the console says so and offers no button.
    browser.sign_in("releasing_officer", "Ana", agency="NZ-NIC")
    browser.go(f"#/summary/{sid}")
    browser.until(lambda d: browser.css("#may-approve"))
    assert "may not approve" in browser.text("#may-approve")
    refused = httpx.post(
        f"{live.url}/v1/summaries/{sid}/approve",
        headers={"Authorization": f"Bearer {live.tokens.issue('releasing_officer', 'Ana', agency='NZ-NIC')}"},
        timeout=30,
    )
    assert refused.status_code == 403
    browser.click("#signout")
    browser.until(lambda d: browser.css("#signin:not([hidden])"))

    browser.sign_in("releasing_officer", "Rangi", agency="NZ-NIC")
    browser.until(lambda d: browser.css(f"tr.summary[data-summary='{sid}']"))
    browser.go(f"#/summary/{sid}")
    browser.until(lambda d: browser.css("button.approve"))
    assert "Ana (NZ-NIC)" in browser.text("#drafted-by") and "may approve" in browser.text("#may-approve")
    assert browser.css("#held-title ~ table tbody tr")  # what the agency holds, beside ...
    assert browser.css("#goes-title ~ table.fields tr[data-field='agencies']")  # ... what the partner receives
    browser.shot("officer-approve")
    browser.accessible("officer-approve")
    browser.click("button.approve")
    browser.until(lambda d: "released" in browser.text("#summary-title"))
    browser.shot("officer-released")
    SHARED["released"] = sid


@needs_chromium
def test_the_liaison_officer_sees_the_release_and_downloads_the_stix_bundle(
    live: Live, browser: Browser, tmp_path: Path
) -> None:
    sid = SHARED.get("released")
    if sid is None:
        pytest.skip("runs after the officers' test, which releases the summary")
    browser.sign_in("liaison", "Somchai", partner=PARTNER)
    browser.until(lambda d: browser.css(f"tr.released-summary[data-summary='{sid}']"))
    row = browser.text(f"tr.released-summary[data-summary='{sid}']")
    assert "released" in row and "IR-1" in row
    assert browser.text("#taxii-address") == f"{live.url}/taxii2/"
    browser.shot("liaison-released")
    browser.accessible("liaison-released")
    browser.click("#stix")
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob("*.stix.json")):
        assert time.monotonic() < deadline, "no bundle was downloaded"
        time.sleep(0.3)
    [bundle_file] = tmp_path.glob("*.stix.json")
    bundle = json.loads(bundle_file.read_text())
    assert bundle["type"] == "bundle" and bundle["objects"]
    from stix2validator import ValidationOptions, validate_instance

    assert validate_instance(bundle, ValidationOptions(version="2.1")).is_valid
    assert any(sid in json.dumps(o) for o in bundle["objects"])

    # Withdrawn by the releasing agency: the partner's console marks it, and shows none of it any more.
    api(live, "POST", f"/v1/summaries/{sid}/withdraw", live.tokens.issue("releasing_officer", "Rangi", agency="NZ-NIC"))
    browser.go("#/")
    browser.go("#/released")
    browser.until(lambda d: "withdrawn" in browser.text(f"tr.released-summary[data-summary='{sid}']"))
    assert "IR-1" not in browser.text(f"tr.released-summary[data-summary='{sid}']")
    browser.shot("liaison-withdrawn")


@needs_chromium
def test_the_auditor_verifies_the_chain_and_finds_who_saw_the_person(live: Live, browser: Browser) -> None:
    drafted_summary(live)
    signal = api(live, "GET", f"/v1/signals/{SHARED['signal']}", live.token("analyst", agency="NZ-NIC"))
    accepted = {r["report_id"]: r for r in live.hub.decoded(live.hub.topics.accepted)}
    token = next(
        ident["linkage_token"]
        for rid in signal["report_ids"]
        for subject in accepted[rid]["subjects"]
        if subject["role"] == "SUSPECTED_VICTIM"
        for ident in subject["identifiers"]
    )
    browser.sign_in("auditor", "Aroha", agency="NZ-NIC")
    browser.until(lambda d: len(browser.css("tr.audit-event")) > 10)
    # The gateway filters the whole trail: disclosures to the analyst Ana, by the beginning of the actor.
    browser.driver.execute_script(
        "document.querySelector('select[name=kind]').value = 'disclosure';"
        "document.querySelector('input[name=actor]').value = 'analyst:Ana';"
        "document.querySelector('form[aria-label=\"Filter the audit trail\"]').requestSubmit()"
    )
    browser.until(lambda d: "match" in browser.text("#status"))
    rows = browser.texts("tr.audit-event")
    assert rows and all("disclosure" in t and "analyst:Ana" in t for t in rows), rows[:3]
    browser.click("#verify")
    browser.until(
        lambda d: "verif" in browser.text("#verify-result") and "Walking" not in browser.text("#verify-result")
    )
    assert "Every chain verifies" in browser.text("#verify-result"), browser.text("#verify-result")
    browser.driver.find_element("id", "subject-token").send_keys(token)
    browser.click("form[aria-label='Who saw this person'] button")
    browser.until(lambda d: browser.css("tr.seen"))
    assert "analyst:Ana" in browser.text("#who-saw")  # the analyst who opened the signal saw this person
    browser.shot("auditor")
    browser.accessible("auditor")


@needs_chromium
def test_an_agency_finds_its_rejected_report_and_the_reason(live: Live, browser: Browser) -> None:
    kit = EnvelopeKit(live.hub.home)
    record = report_from_json(make_report(source_agency="NZ-POLICE"))
    record["subjects"][0]["date_of_birth"] = "1990-02-30"  # the agency's own system skipped the SDK's checks
    live.hub.send_raw([kit.wire(kit.envelope(record))])
    browser.sign_in("publisher", "Mere", agency="NZ-POLICE")
    row = f"tr.rejection[data-report='{record['report_id']}']"
    deadline = time.monotonic() + 60
    while not browser.css(row):
        assert time.monotonic() < deadline, "the rejection never appeared"
        browser.click("#view button.secondary")  # Refresh
        time.sleep(1)
    text = browser.text(row)
    assert "invalid_date" in text and "subjects[0].date_of_birth" in text and "1990-02-30" not in text
    # Publishing from the console: accepted, and its status shown.
    good = make_report(source_agency="NZ-POLICE")
    browser.driver.execute_script("document.getElementById('report-json').value = arguments[0]", json.dumps(good))
    browser.click("form[aria-label='Publish a report'] button")
    browser.until(lambda d: browser.css(f"tr.submission[data-report='{good['report_id']}']"))
    deadline = time.monotonic() + 60
    while "accepted" not in browser.text(f"tr.submission[data-report='{good['report_id']}']"):
        assert time.monotonic() < deadline, browser.text("#view")
        browser.click("#view button.secondary")
        time.sleep(1)
    # Among every accepted report of the agency, and only of the agency.
    while not browser.css(f"tr.accepted-report[data-report='{good['report_id']}']"):
        assert time.monotonic() < deadline, "the accepted report is not among the agency's"
        browser.click("#view button.secondary")
        time.sleep(1)
    police = {r["report_id"] for r in live.hub.decoded(live.hub.topics.accepted) if r["source_agency"] == "NZ-POLICE"}
    shown = set(browser.driver.execute_script(
        "return [...document.querySelectorAll('tr.accepted-report')].map((r) => r.dataset.report)"
    ))  # fmt: skip
    assert shown == police, (len(shown), len(police))
    browser.shot("publisher")
    browser.accessible("publisher")


def test_a_session_cookie_changes_nothing_without_the_consoles_header_and_signs_out_for_good(live: Live) -> None:
    """What a forged form on another site could send: the cookie alone. Refused, and audited."""
    token = live.tokens.issue("analyst", "Ana", agency="NZ-NIC", use=SIGNIN, ttl_s=60)
    console = {"X-Tiphub-Console": "1"}
    with httpx.Client(base_url=live.url, timeout=30) as client:
        # Another site's form cannot sign a browser in as someone else: opening a session needs the header too.
        assert client.post("/v1/session", json={"signin": token}).status_code == 403
        opened = client.post("/v1/session", json={"signin": token}, headers=console)
        assert opened.status_code == 200, opened.text
        # Never longer than the link allowed (60 s), and not an 8-hour token made from a link about to expire.
        assert datetime.fromisoformat(opened.json()["expires_at"]) <= datetime.now(UTC) + timedelta(seconds=65)
        cookie = opened.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert client.get("/v1/session").json()["role"] == "analyst"
        signal = draftable_signal(live)
        forged = client.post(f"/v1/signals/{signal}/triage", json={"state": "closed"})
        assert forged.status_code == 403
        elsewhere = client.post(
            f"/v1/signals/{signal}/triage",
            json={"state": "closed"},
            headers={"X-Tiphub-Console": "1", "Origin": "https://evil.example"},
        )
        assert elsewhere.status_code == 403
        assert client.post("/v1/session", json={"signin": token}, headers=console).status_code == 401  # once only
        session = client.cookies.get("tiphub_session")
        assert client.delete("/v1/session", headers={"X-Tiphub-Console": "1"}).status_code == 200
    replayed = httpx.get(live.url + "/v1/session", cookies={"tiphub_session": session or ""}, timeout=30)
    assert replayed.status_code == 401  # a copied cookie opens nothing after sign-out
    # A pasted token's session is that token: revoking it (a leak) ends the session; no fresh token outlives it.
    pasted = live.tokens.issue("analyst", "Ana", agency="NZ-NIC")
    with httpx.Client(base_url=live.url, timeout=30) as client:
        assert client.post("/v1/session", json={"token": pasted}, headers=console).status_code == 200
        assert client.cookies.get("tiphub_session") == pasted
        live.tokens.revoke(token_id_of(pasted), "leaked")
        assert client.get("/v1/session").status_code == 401
    deadline = time.monotonic() + 60
    while not [d for d in live.denials() if json.loads(d["detail"])["reason"] == "cross_site_request"]:
        assert time.monotonic() < deadline, "the forged request was not audited"
        time.sleep(0.5)


def test_a_summary_shows_the_officer_no_report_its_agency_may_no_longer_see(live: Live) -> None:
    """What the drafting agency holds, beside the partner's view, is what it may see now: a report its agency
    retracted after the draft is listed as no longer visible, with nothing of it."""
    analyst = live.tokens.issue("analyst", "Ana", agency="NZ-NIC")
    token = live.token("analyst", agency="NZ-NIC")
    signals = api(live, "GET", "/v1/signals?limit=500", token)["signals"]
    candidates = sorted({s["signal_id"] for s in signals if s["status"] == "open" and s["requirement_id"] == "IR-1"})
    drafted = None
    for signal_id in candidates:
        if signal_id == SHARED.get("signal"):
            continue
        if api(live, "GET", f"/v1/signals/{signal_id}/partners/{PARTNER}", token)["partner_signals"]:
            drafted = api(live, "POST", "/v1/summaries", analyst, json={"signal_id": signal_id, "partner": PARTNER})
            break
    assert drafted is not None, "no second signal may go to the partner"
    officer = live.tokens.issue("releasing_officer", "Rangi", agency="NZ-NIC")
    before = api(live, "GET", f"/v1/summaries/{drafted['summary_id']}", officer)
    assert before["reports"] and all(r["visible"] for r in before["reports"])
    gone = before["reports"][0]
    kit = EnvelopeKit(live.hub.home)
    retraction = seal_retraction(
        gone["report_id"],
        agency=gone["source_agency"],
        reason="ENTERED_IN_ERROR",
        corrected_by=None,
        agency_key=kit.store.agency_key(gone["source_agency"]),
    )
    live.hub.send_raw([(gone["report_id"].encode(), kit.codec.encode(RETRACTION, retraction))])
    deadline = time.monotonic() + 60
    while True:
        after = api(live, "GET", f"/v1/summaries/{drafted['summary_id']}", officer)
        [row] = [r for r in after["reports"] if r["report_id"] == gone["report_id"]]
        if not row["visible"]:
            break
        assert time.monotonic() < deadline, "the retracted report is still shown"
        time.sleep(0.5)
    assert row == {"report_id": gone["report_id"], "visible": False}
