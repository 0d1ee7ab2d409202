"""The agency public-key registry in SQL."""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from adapters.sql.database import Database
from domain.crypto import public_bytes
from domain.signing import RegisteredKey, agency_key_id


class KeyRegistry:
    """Agency signing keys the hub trusts, with revocation. Readers cache for `ttl` seconds."""

    def __init__(self, db: Database, ttl: float = 2.0) -> None:
        self.db = db
        self.ttl = ttl
        self._cache: dict[str, RegisteredKey] = {}
        self._loaded_at = float("-inf")
        db.execute(
            f"""CREATE TABLE IF NOT EXISTS agency_keys (
                key_id TEXT PRIMARY KEY, agency TEXT NOT NULL, public_key {db.blob()} NOT NULL,
                created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION)"""
        )

    def register(self, agency: str, public: Ed25519PublicKey) -> str:
        key_id = agency_key_id(agency, public)
        self.db.execute(
            "INSERT INTO agency_keys (key_id, agency, public_key, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key_id) DO NOTHING",
            (key_id, agency, public_bytes(public), time.time()),
        )
        self._loaded_at = float("-inf")
        return key_id

    def revoke(self, key_id: str, at: float | None = None) -> bool:
        changed = self.db.execute(
            "UPDATE agency_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
            (time.time() if at is None else at, key_id),
        )
        self._loaded_at = float("-inf")
        return changed > 0

    def all(self) -> list[RegisteredKey]:
        rows = self.db.query("SELECT key_id, agency, public_key, created_at, revoked_at FROM agency_keys")
        return [RegisteredKey(r[0], r[1], Ed25519PublicKey.from_public_bytes(bytes(r[2])), r[3], r[4]) for r in rows]

    def get(self, key_id: str) -> RegisteredKey | None:
        now = time.monotonic()
        stale = now - self._loaded_at > self.ttl
        # An unknown id reloads at most every 0.2 s, so a flood of bogus ids cannot hammer the store.
        if stale or (key_id not in self._cache and now - self._loaded_at > 0.2):
            self._cache = {key.key_id: key for key in self.all()}
            self._loaded_at = now
        return self._cache.get(key_id)
