"""The hub's envelope key of the moment, fetched from the gateway (`GET /v1/hub/keys`) for AgencyPublisher.

The hub offers one X25519 key per epoch and destroys each a while after its epoch (so no copy of a
submitted envelope stays readable): an agency seals every report for the key current when it signs.
This keeps the two keys the gateway offers (this epoch's and the next) and asks again once the later
one's epoch has begun.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey


class HubKeysFromGateway:
    """`hub_key` for AgencyPublisher: a callable returning (key id, public key) for now.

    It asks the gateway again once the later key's epoch has begun, and goes on with a key it holds for
    now if the gateway does not answer (asking again at most every `retry_s`): a gateway that is away
    stops publishing only once no key held covers the time."""

    def __init__(self, gateway_url: str, token: str, timeout_s: float = 10.0, retry_s: float = 30.0) -> None:
        self.url = gateway_url.rstrip("/") + "/v1/hub/keys"
        self.token = token
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._keys: list[tuple[datetime, datetime, str, X25519PublicKey]] = []
        self._next_try = 0.0

    def _fetch(self) -> None:
        request = urllib.request.Request(self.url, headers={"Authorization": f"Bearer {self.token}"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
            body = json.load(response)
        self._keys = sorted(
            (
                datetime.fromisoformat(key["not_before"].replace("Z", "+00:00")),
                datetime.fromisoformat(key["not_after"].replace("Z", "+00:00")),
                key["key_id"],
                X25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"])),
            )
            for key in body["keys"]
        )

    def _held(self, now: datetime) -> tuple[str, X25519PublicKey] | None:
        for not_before, not_after, key_id, public in self._keys:
            if not_before <= now < not_after:
                return key_id, public
        return None

    def __call__(self) -> tuple[str, X25519PublicKey]:
        now = datetime.now(UTC)
        stale = not self._keys or now >= self._keys[-1][0]  # the later key's epoch has begun
        if stale and time.monotonic() >= self._next_try:
            try:
                self._fetch()
            except OSError:
                self._next_try = time.monotonic() + self.retry_s
                if self._held(now) is None:
                    raise
        held = self._held(now)
        if held is None:
            raise RuntimeError("the gateway offered no hub key for now: is this machine's clock right?")
        return held
