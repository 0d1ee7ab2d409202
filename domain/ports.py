"""The ports: what the hub's rules need of the world, as Protocols. Adapters fill them (adapters/sql,
adapters/kafka, adapters/memory); one contract suite per port runs against every adapter."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from domain.audit_chain import Anchor
from domain.signing import RegisteredKey


@dataclass(frozen=True)
class KeyRequest:
    """A data key to get or create, with the linkage tokens that index it for erasure."""

    key_id: str
    report_id: str
    tokens: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()  # deleted with any of these keys


class KeyVault(Protocol):
    """Data keys per (report, subject) and per report; deleting one is crypto-shredding (adapters/sql/vault.py)."""

    def get_or_create_many(self, requests: Sequence[KeyRequest]) -> dict[str, bytes]: ...

    def get(self, key_id: str) -> bytes | None: ...

    def key_ids_for_token(self, token: str) -> list[str]: ...

    def tokens_for_key(self, key_id: str) -> list[str]: ...

    def dependents(self, key_ids: Iterable[str]) -> list[str]: ...

    def key_ids_of(self, report_id: str) -> list[str]: ...

    def delete(self, key_ids: Iterable[str]) -> int: ...


class SigningKeys(Protocol):
    """The agency signing keys the hub trusts, with revocation (adapters/sql/registry.py)."""

    def get(self, key_id: str) -> RegisteredKey | None: ...

    def all(self) -> list[RegisteredKey]: ...


class AuditAnchors(Protocol):
    """The latest signed head of every audit partition, kept outside Kafka (adapters/sql/anchors.py)."""

    def advance(self, anchor: Anchor) -> None: ...

    def all(self, topic: str) -> dict[int, Anchor]: ...
