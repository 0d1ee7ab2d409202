"""The hub's envelope key of the moment, fetched from the gateway (`GET /v1/hub/keys`) for AgencyPublisher.

The hub offers one X25519 key per epoch and destroys each a while after its epoch (so no copy of a
submitted envelope stays readable): an agency seals every report for the key current when it signs.
This keeps the two keys the gateway offers (this epoch's and the next) and asks again once the later
one's epoch has begun.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey


class HubKeysFromGateway:
    """`hub_key` for AgencyPublisher: a callable returning (key id, public key) for now."""

    def __init__(self, gateway_url: str, token: str, timeout_s: float = 10.0) -> None:
        self.url = gateway_url.rstrip("/") + "/v1/hub/keys"
        self.token = token
        self.timeout_s = timeout_s
        self._keys: list[tuple[datetime, datetime, str, X25519PublicKey]] = []

    def _fetch(self) -> None:
        request = urllib.request.Request(self.url, headers={"Authorization": f"Bearer {self.token}"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
            body = json.load(response)
        self._keys = [
            (
                datetime.fromisoformat(key["not_before"].replace("Z", "+00:00")),
                datetime.fromisoformat(key["not_after"].replace("Z", "+00:00")),
                key["key_id"],
                X25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"])),
            )
            for key in body["keys"]
        ]

    def __call__(self) -> tuple[str, X25519PublicKey]:
        now = datetime.now(UTC)
        if not self._keys or now >= self._keys[-1][0]:  # the later key's epoch has begun: ask again
            self._fetch()
        for not_before, not_after, key_id, public in self._keys:
            if not_before <= now < not_after:
                return key_id, public
        raise RuntimeError("the gateway offered no hub key for now: is this machine's clock right?")
