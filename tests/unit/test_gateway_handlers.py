"""Every refusal a route or dependency raises gets the gateway's one answer for it (status, body, headers),
and every security denial among them is audited, naming the caller as far as the request authenticated."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient

from adapters.sql.database import Database
from adapters.sql.tokens import TokenAuthority
from domain.release import ActionRefused
from gateway.cursors import CursorSealer
from gateway.deps import AnalystCaller
from gateway.errors import NotPermitted, NotVisible
from gateway.handlers import setup_exception_handlers
from gateway.security import AuditSink
from gateway.taxii import TAXII, CollectionNotFound, TaxiiBadRequest
from schemas.codec import WireCodec
from streams.topics import Topics


class MemoryPublisher:
    """The in-memory twin of the gateway's producer: what it was asked to write, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, int | None]] = []

    async def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        self.sent.append((topic, key, value, partition))


class Gateway:
    def __init__(self, tmp_path: Path) -> None:
        key = Ed25519PrivateKey.generate()
        self.tokens = TokenAuthority(key, key.public_key(), Database(f"sqlite:///{tmp_path / 'tokens.db'}"))
        self.publisher = MemoryPublisher()
        self.topics = Topics()
        self.app = FastAPI()
        setup_exception_handlers(self.app)
        # a started gateway as far as refusals need one: its audit sink, its token authority, read models ready
        ready = asyncio.Event()
        ready.set()
        self.app.state.gateway = SimpleNamespace(
            audit=AuditSink(self.publisher, self.topics), tokens=self.tokens, tail=SimpleNamespace(ready=ready)
        )
        self.client = TestClient(self.app)

    def denials(self) -> list[dict[str, Any]]:
        codec = WireCodec()
        events = [
            codec.decode(value)[1] for topic, _, value, _ in self.publisher.sent if topic == self.topics.audit_intake
        ]
        return [
            {"actor": e["actor"], "recipient": e["recipient"], **json.loads(e["detail"])}
            for e in events
            if e["kind"] == "denial"
        ]

    def token(self, role: str = "analyst", subject: str = "ana") -> dict[str, str]:
        issued = self.tokens.issue(
            role, subject, **({"partner": "HSU-TH"} if role == "liaison" else {"agency": "NZ-NIC"})
        )
        return {"authorization": f"Bearer {issued}"}


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    gateway = Gateway(tmp_path)
    app = gateway.app
    raised: dict[str, Exception] = {
        "hidden": NotVisible("no such signal visible to this caller"),
        "other": NotPermitted("other_partner", "a liaison officer sees only their own partner's"),
        "late": ActionRefused("not_pending", "summary is released", kind="wrong_state"),
        "drafter": ActionRefused("drafter_cannot_approve", "the drafter of a summary cannot approve it"),
        "bad-query": TaxiiBadRequest("limit: must be a positive integer"),
        "no-collection": CollectionNotFound("x"),
    }

    @app.get("/refuse/{what}")
    async def refuse(what: str, caller: AnalystCaller) -> None:
        raise raised[what]

    @app.get("/page")
    async def page(caller: AnalystCaller, after: str | None = None) -> list[int]:
        return CursorSealer(b"k" * 32).open("signals", caller.acts_for, after, 1)

    return gateway


def test_no_token_or_a_bad_one_is_401_with_its_challenge_and_audited_as_anonymous(gateway: Gateway) -> None:
    missing = gateway.client.get("/refuse/hidden")
    assert missing.status_code == 401 and missing.json() == {"detail": "a bearer token is required"}
    assert missing.headers["www-authenticate"] == "Bearer"
    forged = gateway.client.get("/refuse/hidden", headers={"authorization": "Bearer not.a.token"})
    assert forged.status_code == 401 and forged.json()["detail"].startswith("the token is not valid")
    assert forged.headers["www-authenticate"] == 'Bearer error="invalid_token", reason="malformed_token"'
    assert [(d["actor"], d["reason"], d["path"]) for d in gateway.denials()] == [
        ("anonymous", "no_token", "/refuse/hidden"),
        ("anonymous", "malformed_token", "/refuse/hidden"),
    ]


def test_a_wrong_role_is_403_and_audited_naming_the_caller(gateway: Gateway) -> None:
    answer = gateway.client.get("/refuse/hidden", headers=gateway.token("liaison", "lee"))
    assert answer.status_code == 403 and answer.json() == {"detail": "this needs the role analyst"}
    assert gateway.denials() == [
        {
            "actor": "liaison:lee",
            "recipient": "HSU-TH",
            "reason": "wrong_role",
            "method": "GET",
            "path": "/refuse/hidden",
        }
    ]


@pytest.mark.parametrize(
    ("what", "status", "detail", "reason"),
    [
        ("hidden", 404, "no such signal visible to this caller", "not_found"),
        ("other", 403, "a liaison officer sees only their own partner's", "other_partner"),
        ("late", 409, "summary is released", "not_pending"),
        ("drafter", 403, "the drafter of a summary cannot approve it", "drafter_cannot_approve"),
    ],
)
def test_each_refusal_has_its_status_and_is_audited_with_its_reason(
    gateway: Gateway, what: str, status: int, detail: str, reason: str
) -> None:
    answer = gateway.client.get(f"/refuse/{what}", headers=gateway.token())
    assert (answer.status_code, answer.json()) == (status, {"detail": detail})
    assert [(d["actor"], d["recipient"], d["reason"]) for d in gateway.denials()] == [("analyst:ana", "NZ-NIC", reason)]


def test_taxii_refusals_answer_in_taxii_and_are_audited(gateway: Gateway) -> None:
    bad = gateway.client.get("/refuse/bad-query", headers=gateway.token())
    assert bad.status_code == 400 and bad.headers["content-type"] == TAXII
    assert bad.json() == {
        "title": "Bad request",
        "description": "limit: must be a positive integer",
        "http_status": "400",
    }
    missing = gateway.client.get("/refuse/no-collection", headers=gateway.token())
    assert missing.status_code == 404 and missing.headers["content-type"] == TAXII
    assert missing.json() == {"title": "Collection not found", "http_status": "404"}
    assert [d["reason"] for d in gateway.denials()] == ["bad_request", "not_found"]


def test_a_cursor_not_issued_to_the_caller_is_a_422_on_after_and_no_denial(gateway: Gateway) -> None:
    assert gateway.client.get("/page", headers=gateway.token()).json() == [0]
    answer = gateway.client.get("/page", params={"after": "forged"}, headers=gateway.token())
    assert answer.status_code == 422
    assert answer.json() == {
        "detail": [
            {
                "loc": ["query", "after"],
                "msg": "not a cursor this gateway issued to you for this feed",
                "type": "value_error",
            }
        ]
    }
    assert gateway.denials() == []
