"""The gateway's edge: request rate (429) and body size (413), before any route runs; denials audited.

Rate limits are token buckets. One per credential (the bearer token, hashed: raw tokens are never
kept), and one per client address over all its credentials, so rotating garbage tokens earns no
fresh budget. A flood is audited once per episode, at its first refused request (an episode ends
when a request is allowed again): the audit records every flood without becoming the flood's target. Behind a reverse
proxy every client shares the proxy's address: raise or disable the address limit there
(TIPHUB_GATEWAY_ADDRESS_RATE_PER_S=0).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request, cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.callers import TokenError
from gateway.security import SESSION_COOKIE
from gateway.state import started

UNLIMITED_PATHS = frozenset({"/healthz"})  # liveness probes must always get through
MAX_BUCKETS = 100_000


@dataclass
class Bucket:
    tokens: float
    updated: float
    refused: int = 0  # in the current episode of refusals


@dataclass
class RateLimiter:
    """Token buckets by key: `rate` per second, up to `burst` at once. A rate of 0 or less: no limit."""

    rate: float
    burst: int
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def take(self, key: str, now: float) -> tuple[bool, float, Bucket | None]:
        """(allowed, seconds until the next token, the bucket)."""
        if self.rate <= 0:
            return True, 0.0, None
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self._prune(now)
            bucket = self.buckets[key] = Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True, 0.0, bucket
        return False, (1.0 - bucket.tokens) / self.rate, bucket

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled: they hold no state a new bucket would not."""
        full = [k for k, b in self.buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for key in full or list(self.buckets)[: MAX_BUCKETS // 10]:
            del self.buckets[key]


class EdgeLimits:
    """ASGI middleware: rate limits first, then the body size, for every HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        credential_rate: float,
        credential_burst: int,
        address_rate: float,
        address_burst: int,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.credentials = RateLimiter(credential_rate, credential_burst)
        self.addresses = RateLimiter(address_rate, address_burst)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        now = time.monotonic()
        address = (scope.get("client") or ("unknown", 0))[0]
        authorization = headers.get(b"authorization", b"") or _session_as_bearer(headers.get(b"cookie", b""))
        credential = "c:" + hashlib.sha256(authorization).hexdigest()[:32] if authorization else "a:" + address
        for limiter, key in ((self.addresses, "a:" + address), (self.credentials, credential)):
            allowed, wait_s, bucket = limiter.take(key, now)
            if bucket is not None and allowed and bucket.refused:
                bucket.refused = 0  # the episode is over
            if not allowed:
                assert bucket is not None
                bucket.refused += 1
                if bucket.refused == 1:
                    await self._audit(scope, "rate_limited", authorization, {"limited_by": key[:2].strip(":")})
                retry = {"Retry-After": str(max(1, math.ceil(wait_s)))}
                await _answer(send, 429, "too many requests: slow down and retry after Retry-After seconds", retry)
                return

        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._audit(scope, "body_too_large", authorization, {"content_length": length.decode()[:20]})
            await _answer(send, 413, f"the request body is larger than {self.max_body_bytes} bytes")
            return

        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            # Chunked: no length to refuse up front. Read it here, up to the limit, then hand it on;
            # the framework would turn an error raised mid-read into a vague 400.
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                body += message.get("body", b"")
                if len(body) > self.max_body_bytes:
                    await self._audit(scope, "body_too_large", authorization, {"content_length": "chunked"})
                    await _answer(send, 413, f"the request body is larger than {self.max_body_bytes} bytes")
                    return
                if not message.get("more_body", False):
                    break
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)

    async def _audit(self, scope: Scope, reason: str, authorization: bytes, detail: dict[str, Any]) -> None:
        """Who it was, if their token verifies (checked only here, on a denial); anonymous otherwise."""
        state = started(scope["app"])
        if state is None:  # not started yet
            return
        caller = None
        scheme, _, token = authorization.decode(errors="replace").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            try:
                caller = state.tokens.verify(token.strip())
            except TokenError:
                caller = None
        await state.audit.denied(Request(scope), reason, caller, detail)


def _session_as_bearer(cookie: bytes) -> bytes:
    """The console's session cookie as the credential it is (limited and audited like a bearer token)."""
    session = cookie_parser(cookie.decode("latin-1")).get(SESSION_COOKIE)
    return f"Bearer {session}".encode() if session else b""


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
