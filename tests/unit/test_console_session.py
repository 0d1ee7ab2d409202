"""The console session's request rule (gateway/deps.py `credential`), as a function of the request: the cookie
alone reads; a change needs the console's header and, if the browser names an Origin, the gateway's own, which
behind a proxy that terminates TLS is the configured public origin."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

import gateway.deps
from gateway.deps import credential
from gateway.errors import NoToken, NotPermitted


def request(method: str, headers: dict[str, str], scheme: str = "http", host: str = "hub.internal:8700") -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()] + [(b"host", host.encode())]
    return Request({"type": "http", "method": method, "scheme": scheme, "path": "/v1/x", "headers": raw, "app": None})


@pytest.fixture
def public(monkeypatch: pytest.MonkeyPatch) -> Any:
    def configure(origin: str | None) -> None:
        settings = SimpleNamespace(gateway_public_origin=origin)
        monkeypatch.setattr(gateway.deps, "started", lambda app: SimpleNamespace(settings=settings))

    configure(None)
    return configure


def test_a_cookie_reads_and_changes_only_with_the_consoles_header_from_the_gateways_own_origin(public: Any) -> None:
    cookie = {"Cookie": "tiphub_session=T"}
    assert credential(request("GET", cookie)) == "T"
    with pytest.raises(NotPermitted):
        credential(request("POST", cookie))  # a forged form: no header
    console = {**cookie, "X-Tiphub-Console": "1"}
    assert credential(request("POST", console)) == "T"
    assert credential(request("POST", {**console, "Origin": "http://hub.internal:8700"})) == "T"
    for origin in ("https://evil.example", "null"):
        with pytest.raises(NotPermitted):
            credential(request("POST", {**console, "Origin": origin}))
    with pytest.raises(NoToken):
        credential(request("GET", {}))
    assert credential(request("POST", {"Authorization": "Bearer B"})) == "B"  # a bearer token: no cookie rule


def test_behind_a_proxy_that_terminates_tls_the_origin_is_the_configured_public_one(public: Any) -> None:
    public("https://hub.example.org")
    console = {"Cookie": "tiphub_session=T", "X-Tiphub-Console": "1"}
    assert credential(request("POST", {**console, "Origin": "https://hub.example.org"})) == "T"
    with pytest.raises(NotPermitted):  # what the gateway itself sees (http, its internal name) is not the origin
        credential(request("POST", {**console, "Origin": "http://hub.internal:8700"}))


def test_the_public_origin_is_kept_as_browsers_name_it() -> None:
    from tiphub.settings import Settings

    assert (
        Settings(gateway_public_origin="https://Hub.Example.org:443").gateway_public_origin == "https://hub.example.org"
    )
    assert Settings(gateway_public_origin="http://hub:8080").gateway_public_origin == "http://hub:8080"
