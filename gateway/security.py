"""The gateway's keys, and the audit of every denial and disclosure.

Each denial is written to tip.audit.intake (the chain stage links it into tip.audit) before the
response goes out: gateway/handlers.py does so for every refusal a route or dependency raises
(gateway/errors.py), gateway/limits.py for what the edge refuses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from fastapi import Request
from fastapi.exceptions import RequestValidationError

from domain.callers import Caller
from domain.log import Publisher
from schemas.codec import WireCodec
from streams.audit_events import AUDIT_EVENT, audit_event
from streams.topics import Topics

log = logging.getLogger(__name__)

SESSION_COOKIE = "tiphub_session"  # the console's session: an access token, HttpOnly, SameSite=Strict
CONSOLE_HEADER = "x-tiphub-console"  # a header no other site's page can make a browser send here


@dataclass(frozen=True)
class GatewayKeys:
    """The key material the gateway uses, read once at start (never an agency's private key)."""

    relay: Ed25519PrivateKey
    relay_key_id: str
    hub_public: X25519PublicKey
    hub_key_id: str
    hub_signing_public: Ed25519PublicKey
    audit_mac: bytes  # to tell the chaining stage's audit entries from records anyone else wrote to tip.audit
    cursors: bytes
    vault_keks: Callable[[], list[bytes]]  # read at start, again every 30 s and when a key will not open


class AuditSink:
    """Audit events, each acknowledged by the brokers before the response goes out."""

    def __init__(self, publisher: Publisher, topics: Topics) -> None:
        self.publisher = publisher
        self.topics = topics
        self.codec = WireCodec()

    async def write(self, kind: str, actor: str, outcome: str, **fields: Any) -> None:
        event = audit_event(kind, actor, outcome, **fields)
        await self.publisher.send(
            self.topics.audit_intake, event["event_id"].encode(), self.codec.encode(AUDIT_EVENT, event)
        )

    async def denied(
        self, request: Request, reason: str, caller: Caller | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        actor = f"{caller.role}:{caller.subject}" if caller else "anonymous"
        await self.write(
            "denial",
            actor,
            "denied",
            recipient=caller.acts_for if caller else None,
            detail={"reason": reason, "method": request.method, "path": request.url.path, **(detail or {})},
        )
        log.info("denied %s %s to %s: %s", request.method, request.url.path, actor, reason)

    async def disclosed(self, caller: Caller, item_id: str, detail: dict[str, Any]) -> None:
        await self.write(
            "disclosure",
            f"{caller.role}:{caller.subject}",
            "disclosed",
            item_id=item_id,
            recipient=caller.acts_for,
            detail=detail,
        )


def invalid(*errors: tuple[tuple[str | int, ...], str, str]) -> RequestValidationError:
    """A 422 in FastAPI's documented shape: each error is (location, message, type), e.g.
    (("query", "after"), "not a cursor this gateway issued", "value_error")."""
    return RequestValidationError([{"loc": loc, "msg": msg, "type": kind} for loc, msg, kind in errors])
