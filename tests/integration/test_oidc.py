"""The console's OpenID Connect sign-in against a real OpenID Provider (panva's oidc-provider, run by
scripts/oidc-provider/provider.mjs): a browser's whole round trip through the provider's login and consent
pages, the session it ends in, and every way a sign-in is refused (audited, no session opened)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from adapters.kafka.embedded import free_port
from tests.harness import Hub
from tests.integration.test_gateway import start_gateway

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_DIR = ROOT / "build" / "oidc-provider"
CLIENT_ID, CLIENT_SECRET = "tiphub-console", "console-secret-for-tests"
OTHER_CLIENT = "another-app"
ROLE_MAP = {"tip-analysts": "analyst", "tip-liaisons": "liaison", "tip-officers": "releasing_officer"}
# The identity provider's users: role by group membership, agency or partner by claims of their own; a name
# and an email the hub must never write down.
USERS: dict[str, dict[str, Any]] = {
    "aroha": {"groups": ["staff", "tip-analysts"], "tiphub_agency": "NZ-NIC"},
    "somchai": {"groups": ["tip-liaisons"], "tiphub_partner": "HSU-TH"},
    "no-role": {"groups": ["staff"], "tiphub_agency": "NZ-NIC"},
    "liaison-no-partner": {"groups": ["tip-liaisons"], "tiphub_agency": "NZ-NIC"},
    "stranger": {"groups": ["tip-analysts"], "tiphub_agency": "XX-NOBODY"},
}
for login, claims in USERS.items():
    claims.update(name=f"Person {login.title()}", email=f"{login}@idp.example")

JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")


@dataclass
class Provider:
    issuer: str
    process: subprocess.Popen[bytes]

    def next_id_token(self, id_token: str) -> None:
        """The provider's next token response carries this ID token (its test hook)."""
        httpx.post(self.issuer + "/__test/next-id-token", json={"id_token": id_token}, timeout=10).raise_for_status()


@dataclass
class Signin:
    gateway: str
    provider: Provider
    hub: Hub

    def denials(self, reason: str) -> list[dict[str, Any]]:
        """Denials with this reason on the audit's intake topic (the gateway writes them before it answers)."""
        events = self.hub.decoded(self.hub.topics.audit_intake)
        return [e for e in events if e["kind"] == "denial" and json.loads(e["detail"])["reason"] == reason]

    def sign_ins(self) -> list[dict[str, Any]]:
        return [e for e in self.hub.decoded(self.hub.topics.audit_intake) if e["kind"] == "sign_in"]


@dataclass
class Browser:
    """A browser as far as a sign-in needs: cookies, redirects followed one by one (each URL kept), and the
    provider's login and consent forms submitted."""

    signin: Signin
    client: httpx.Client = field(default_factory=lambda: httpx.Client(follow_redirects=False, timeout=30))
    urls: list[str] = field(default_factory=list)

    def go(self, url: str, data: dict[str, str] | None = None) -> httpx.Response:
        self.urls.append(url)
        return self.client.post(url, data=data) if data is not None else self.client.get(url)

    def to_callback(self, login: str, start: str | None = None, cancel: bool = False) -> tuple[str, httpx.Response]:
        """Start a sign-in, sign in at the provider as `login` and consent (or cancel at its login page): the
        callback URL the provider sends the browser to, not yet followed, and the start's answer."""
        started = response = self.go(start or self.signin.gateway + "/v1/session/oidc/start")
        for _ in range(20):
            if response.is_redirect:
                location = str(response.url.join(response.headers["location"]))
                if location.startswith(self.signin.gateway) or "/cb?" in location:
                    return location, started
                response = self.go(location)
                continue
            assert response.status_code == 200, response.text
            page = response.text
            if cancel:
                response = self.go(str(response.url.join(re.search(r'href="([^"]+)">\[ Cancel \]', page)[1])))
                continue
            action = re.search(r'<form[^>]* action="([^"]+)"', page)[1]
            form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
            if form.get("prompt") == "login":
                form.update(login=login, password="any password")  # the development login takes any password
            response = self.go(str(response.url.join(action)), form)
        raise AssertionError(f"no way back to the client: {self.urls}")

    def sign_in(self, login: str) -> httpx.Response:
        callback, _ = self.to_callback(login)
        return self.go(callback)

    def session(self) -> httpx.Response:
        return self.client.get(self.signin.gateway + "/v1/session")


Browsers = Callable[[], Browser]


@pytest.fixture(scope="module")
def signin(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signin]:
    ensured = subprocess.run(
        [str(ROOT / "scripts" / "ensure-oidc-provider"), str(PROVIDER_DIR)], capture_output=True, text=True, timeout=300
    )
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.skip(ensured.stdout.strip() or "scripts/ensure-oidc-provider could not install oidc-provider")
    tmp = tmp_path_factory.mktemp("oidc")
    provider_port, gateway_port = free_port(), free_port()
    issuer, gateway = f"http://127.0.0.1:{provider_port}", f"http://127.0.0.1:{gateway_port}"
    config = {
        "issuer": issuer,
        "port": provider_port,
        "clients": [
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [gateway + "/v1/session/oidc/callback"],
                "response_types": ["code"],
                "grant_types": ["authorization_code"],
            },
            {
                "client_id": OTHER_CLIENT,
                "client_secret": "another-secret",
                "redirect_uris": ["http://127.0.0.1:9/cb"],
                "response_types": ["code"],
                "grant_types": ["authorization_code"],
            },
        ],
        "claims": {"tiphub": ["groups", "tiphub_agency", "tiphub_partner"], "profile": ["name", "email"]},
        "users": USERS,
        "test_hooks": True,
    }
    (tmp / "provider.json").write_text(json.dumps(config))
    (tmp / "client-secret").write_text(CLIENT_SECRET + "\n")
    with (tmp / "provider.log").open("wb") as log:
        process = subprocess.Popen(
            ["node", str(PROVIDER_DIR / "provider.mjs"), str(tmp / "provider.json")], stdout=log, stderr=log
        )
    provider = Provider(issuer, process)
    try:
        deadline = time.monotonic() + 30
        while "listening" not in (tmp / "provider.log").read_text():
            assert process.poll() is None and time.monotonic() < deadline, (tmp / "provider.log").read_text()
            time.sleep(0.1)
        with Hub.create(broker, tmp, "oidc") as hub:
            gateway_process, url = start_gateway(
                hub,
                gateway_port,
                TIPHUB_OIDC_ISSUER=issuer,
                TIPHUB_OIDC_CLIENT_ID=CLIENT_ID,
                TIPHUB_OIDC_CLIENT_SECRET_FILE=str(tmp / "client-secret"),
                TIPHUB_OIDC_SCOPES="openid tiphub profile",
                TIPHUB_OIDC_ROLE_CLAIM="groups",
                TIPHUB_OIDC_ROLE_MAP=json.dumps(ROLE_MAP),
            )
            try:
                yield Signin(url, provider, hub)
            finally:
                gateway_process.terminate()
                gateway_process.wait(20)
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def new_browser(signin: Signin) -> Iterator[Browsers]:
    """New browsers for a test, each with its own cookies; closed after it."""
    made: list[Browser] = []

    def new() -> Browser:
        made.append(Browser(signin))
        return made[-1]

    yield new
    for each in made:
        each.client.close()


def set_cookie(response: httpx.Response, name: str) -> str | None:
    """The Set-Cookie header for `name` in a response, if any."""
    return next((h for h in response.headers.get_list("set-cookie") if h.startswith(name + "=")), None)


def test_the_console_offers_the_identity_provider(signin: Signin) -> None:
    assert httpx.get(signin.gateway + "/v1/session/oidc").json() == {
        "enabled": True,
        "start": "/v1/session/oidc/start",
    }


@pytest.mark.parametrize(
    ("login", "role", "agency", "partner"),
    [("aroha", "analyst", "NZ-NIC", None), ("somchai", "liaison", None, "HSU-TH")],
)
def test_a_person_signs_in_at_the_identity_provider_and_the_console_knows_their_role(
    signin: Signin, new_browser: Browsers, login: str, role: str, agency: str | None, partner: str | None
) -> None:
    actor = f"{role}:oidc:{login}"
    before = [e for e in signin.sign_ins() if e["actor"] == actor]
    browser = new_browser()
    callback, started = browser.to_callback(login)
    pending = set_cookie(started, "tiphub_oidc_pending") or ""
    assert "HttpOnly" in pending and "SameSite=lax" in pending and "Path=/v1/session/oidc" in pending, pending
    location = httpx.URL(started.headers["location"])
    assert location.params["code_challenge_method"] == "S256" and location.params["client_id"] == CLIENT_ID
    answer = browser.go(callback)
    assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text
    session_cookie = set_cookie(answer, "tiphub_session") or ""
    assert "HttpOnly" in session_cookie and "SameSite=strict" in session_cookie, session_cookie
    assert "tiphub_oidc_pending" not in browser.client.cookies  # used once, then gone

    me = browser.session()
    assert me.status_code == 200, me.text
    assert me.json() | {"expires_at": None} == {
        "subject": f"oidc:{login}",
        "role": role,
        "agency": agency,
        "partner": partner,
        "expires_at": None,
    }
    # No token in any address the browser went to (histories and Referer headers keep those).
    session_token = browser.client.cookies["tiphub_session"]
    for url in browser.urls:
        assert session_token not in url and not JWT.search(url), url
        assert "id_token" not in url and "access_token" not in url, url

    events = [e for e in signin.sign_ins() if e["actor"] == actor]
    assert [json.loads(e["detail"]) for e in events[len(before) :]] == [{"with": "oidc"}]
    # The ID token carried the person's name and email (scope profile); neither is written down anywhere.
    written = json.dumps(signin.hub.decoded(signin.hub.topics.audit_intake), default=str)
    written += (signin.hub.home / "gateway.log").read_text(errors="replace")
    for personal in (USERS[login]["name"], USERS[login]["email"]):
        assert personal not in written  # neither the audit nor the gateway's log names the person


def refused(signin: Signin, response: httpx.Response, reason: str, before: int) -> None:
    """A refusal as the browser and the audit see it: a 403 naming why, the pending sign-in forgotten, no
    session, and a denial with the stable reason on the audit."""
    assert response.status_code == 403, (response.status_code, response.text)
    assert set_cookie(response, "tiphub_session") is None
    forgotten = set_cookie(response, "tiphub_oidc_pending")
    assert forgotten is not None and "Max-Age=0" in forgotten, forgotten
    deadline = time.monotonic() + 30
    while len(denials := signin.denials(reason)) <= before:
        assert time.monotonic() < deadline, f"no denial {reason} on the audit"
        time.sleep(0.3)
    assert denials[-1]["actor"] == "anonymous"
    assert json.loads(denials[-1]["detail"])["path"] == "/v1/session/oidc/callback"


@pytest.mark.parametrize(
    ("login", "reason"),
    [
        ("no-role", "oidc_no_role"),
        ("liaison-no-partner", "oidc_no_partner"),
        ("stranger", "oidc_unknown_agency"),
    ],
)
def test_claims_that_map_to_no_identity_the_hub_knows_are_refused(
    signin: Signin, new_browser: Browsers, login: str, reason: str
) -> None:
    before = len(signin.denials(reason))
    browser = new_browser()
    refused(signin, browser.sign_in(login), reason, before)
    assert browser.session().status_code == 401


def test_an_answer_for_another_sign_in_or_another_browser_is_refused(signin: Signin, new_browser: Browsers) -> None:
    before = len(signin.denials("oidc_state_mismatch"))
    browser = new_browser()
    callback, _ = browser.to_callback("aroha")
    forged = httpx.URL(callback).copy_set_param("state", "a-state-this-browser-never-had")
    refused(signin, browser.go(str(forged)), "oidc_state_mismatch", before)
    assert browser.session().status_code == 401

    before = len(signin.denials("oidc_no_pending_sign_in"))
    elsewhere = new_browser()  # a genuine answer, in a browser that started no sign-in
    callback, _ = new_browser().to_callback("aroha")
    refused(signin, elsewhere.go(callback), "oidc_no_pending_sign_in", before)
    assert elsewhere.session().status_code == 401


def test_a_callback_replayed_with_its_cookie_opens_nothing(signin: Signin, new_browser: Browsers) -> None:
    browser = new_browser()
    callback, _ = browser.to_callback("aroha")
    pending = browser.client.cookies["tiphub_oidc_pending"]
    assert browser.go(callback).status_code == 303
    before = len(signin.denials("oidc_token_exchange_failed"))
    replay = new_browser()
    replay.client.cookies.set("tiphub_oidc_pending", pending, domain="127.0.0.1", path="/v1/session/oidc")
    refused(signin, replay.go(callback), "oidc_token_exchange_failed", before)  # the provider takes a code once
    assert replay.session().status_code == 401


def test_an_id_token_issued_to_another_client_is_refused(signin: Signin, new_browser: Browsers) -> None:
    """A genuine ID token of the same provider, for another application: the gateway's exchange is answered
    with it (the provider's test hook), and the gateway refuses it for its audience."""
    import base64
    import hashlib

    verifier = "v" * 64
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    start = str(
        httpx.URL(signin.provider.issuer + "/auth").copy_merge_params(
            {
                "client_id": OTHER_CLIENT,
                "response_type": "code",
                "scope": "openid tiphub profile",
                "redirect_uri": "http://127.0.0.1:9/cb",
                "state": "s",
                "nonce": "n",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
    )
    callback, _ = new_browser().to_callback("aroha", start=start)
    tokens = httpx.post(
        signin.provider.issuer + "/token",
        data={
            "grant_type": "authorization_code",
            "code": httpx.URL(callback).params["code"],
            "redirect_uri": "http://127.0.0.1:9/cb",
            "code_verifier": verifier,
        },
        auth=(OTHER_CLIENT, "another-secret"),
    )
    assert tokens.status_code == 200, tokens.text
    other = jwt.decode(tokens.json()["id_token"], options={"verify_signature": False})
    assert other["aud"] == OTHER_CLIENT and other["email"] == USERS["aroha"]["email"]  # names travel in ID tokens

    before = len(signin.denials("oidc_id_token_wrong_audience"))
    signin.provider.next_id_token(tokens.json()["id_token"])
    browser = new_browser()
    refused(signin, browser.sign_in("aroha"), "oidc_id_token_wrong_audience", before)
    assert browser.session().status_code == 401


def test_a_sign_in_cancelled_at_the_identity_provider_is_refused(signin: Signin, new_browser: Browsers) -> None:
    before = len(signin.denials("oidc_provider_error"))
    browser = new_browser()
    callback, _ = browser.to_callback("aroha", cancel=True)
    assert httpx.URL(callback).params["error"] == "access_denied"
    answer = browser.go(callback)
    refused(signin, answer, "oidc_provider_error", before)
    assert "access_denied" in answer.json()["detail"]
