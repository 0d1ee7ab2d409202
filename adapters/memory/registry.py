"""The agency signing-key registry's in-memory twin."""

from __future__ import annotations

import time
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from domain.signing import RegisteredKey, agency_key_id


class InMemorySigningKeys:
    def __init__(self) -> None:
        self.keys: dict[str, RegisteredKey] = {}

    def register(self, agency: str, public: Ed25519PublicKey) -> str:
        key_id = agency_key_id(agency, public)
        self.keys.setdefault(key_id, RegisteredKey(key_id, agency, public, time.time(), None))
        return key_id

    def revoke(self, key_id: str, at: float | None = None) -> bool:
        key = self.keys.get(key_id)
        if key is None or key.revoked_at is not None:
            return False
        self.keys[key_id] = replace(key, revoked_at=time.time() if at is None else at)
        return True

    def all(self) -> list[RegisteredKey]:
        return list(self.keys.values())

    def get(self, key_id: str) -> RegisteredKey | None:
        return self.keys.get(key_id)
