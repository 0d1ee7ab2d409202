"""The SDK's hub key source against a real HTTP server standing in for the gateway's /v1/hub/keys."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from producers.hub_keys import HubKeysFromGateway


class Gateway:
    def __init__(self) -> None:
        self.keys: list[dict[str, str]] = []
        self.up = True
        self.requests = 0
        self.authorizations: list[str] = []

    def offer(self, key_id: str, not_before: datetime, not_after: datetime) -> None:
        raw = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.keys.append(
            {
                "key_id": key_id,
                "public_key": base64.b64encode(raw).decode(),
                "not_before": not_before.isoformat().replace("+00:00", "Z"),
                "not_after": not_after.isoformat().replace("+00:00", "Z"),
            }
        )


@pytest.fixture
def gateway() -> Iterator[tuple[Gateway, str]]:
    state = Gateway()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            state.authorizations.append(self.headers.get("Authorization", ""))
            body = json.dumps({"keys": state.keys}).encode() if state.up else b'{"detail": "unavailable"}'
            self.send_response(200 if state.up else 503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_it_seals_for_the_key_of_now_and_asks_again_only_when_the_next_epoch_begins(
    gateway: tuple[Gateway, str],
) -> None:
    state, url = gateway
    now = datetime.now(UTC)
    state.offer("hub-epoch/1/a", now - timedelta(minutes=10), now + timedelta(minutes=50))
    state.offer("hub-epoch/2/b", now + timedelta(minutes=50), now + timedelta(minutes=110))
    keys = HubKeysFromGateway(url, "publisher-token")
    assert keys()[0] == keys()[0] == "hub-epoch/1/a"
    assert state.requests == 1 and state.authorizations == ["Bearer publisher-token"]


def test_a_gateway_that_is_away_does_not_stop_publishing_while_a_held_key_covers_now(
    gateway: tuple[Gateway, str],
) -> None:
    state, url = gateway
    now = datetime.now(UTC)
    # The next epoch has begun (its key is held too): the source asks again, and the gateway is away.
    state.offer("hub-epoch/1/a", now - timedelta(minutes=61), now - timedelta(seconds=1))
    state.offer("hub-epoch/2/b", now - timedelta(seconds=1), now + timedelta(minutes=59))
    keys = HubKeysFromGateway(url, "publisher-token", retry_s=3600)
    assert keys()[0] == "hub-epoch/2/b" and state.requests == 1
    state.up = False
    assert keys()[0] == keys()[0] == "hub-epoch/2/b"
    assert state.requests == 2  # one more try, then not again before retry_s


def test_with_no_key_for_now_and_the_gateway_away_the_publish_fails_clearly(gateway: tuple[Gateway, str]) -> None:
    state, url = gateway
    state.up = False
    with pytest.raises(urllib.error.HTTPError):
        HubKeysFromGateway(url, "publisher-token")()
