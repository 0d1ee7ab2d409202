"""The key vault's in-memory twin."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from domain.crypto import new_data_key
from domain.ports import KeyRequest


class InMemoryKeyVault:
    """The in-memory twin, for unit tests of pure logic only."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}
        self.owners: dict[str, str] = {}
        self.tokens: dict[str, set[str]] = {}
        self.depending: dict[str, set[str]] = {}  # key -> keys that depend on it

    def get_or_create_many(self, requests: Sequence[KeyRequest]) -> dict[str, bytes]:
        for r in requests:
            self.keys.setdefault(r.key_id, new_data_key())
            self.owners.setdefault(r.key_id, r.report_id)
            for token in r.tokens:
                self.tokens.setdefault(token, set()).add(r.key_id)
            for other in r.depends_on:
                self.depending.setdefault(other, set()).add(r.key_id)
        return {r.key_id: self.keys[r.key_id] for r in requests}

    def get(self, key_id: str) -> bytes | None:
        return self.keys.get(key_id)

    def key_ids_for_token(self, token: str) -> list[str]:
        return sorted(self.tokens.get(token, ()))

    def tokens_for_key(self, key_id: str) -> list[str]:
        return sorted(token for token, ids in self.tokens.items() if key_id in ids)

    def key_ids_of(self, report_id: str) -> list[str]:
        return sorted(k for k, owner in self.owners.items() if owner == report_id and k in self.keys)

    def dependents(self, key_ids: Iterable[str]) -> list[str]:
        start = set(key_ids)
        found: set[str] = set()
        frontier = set(start)
        while frontier:
            step = {d for key_id in frontier for d in self.depending.get(key_id, ())} - found - start
            found |= step
            frontier = step
        return sorted(found)

    def delete(self, key_ids: Iterable[str]) -> int:
        ids = list(key_ids)
        deleted = 0
        for key_id in [*ids, *self.dependents(ids)]:
            deleted += self.keys.pop(key_id, None) is not None
            for ids_of_token in self.tokens.values():
                ids_of_token.discard(key_id)
            for depending in self.depending.values():
                depending.discard(key_id)
        return deleted
