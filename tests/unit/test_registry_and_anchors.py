"""One contract each for the signing-key registry and the audit anchors: the in-memory twin, SQLite and
PostgreSQL answer alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.memory.anchors import InMemoryAnchors
from adapters.memory.registry import InMemorySigningKeys
from adapters.sql.anchors import AnchorStore
from adapters.sql.database import Database
from adapters.sql.registry import KeyRegistry
from domain.audit_chain import Anchor


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A factory of empty databases of the parametrised kind (None: the in-memory twin)."""
    kind = request.param
    if kind == "memory":
        yield None
    elif kind == "sqlite":
        yield Database(f"sqlite:///{tmp_path}/store.sqlite3")
    else:
        yield request.getfixturevalue("postgres_schema")


KINDS = pytest.mark.parametrize("database", ["memory", "sqlite", "postgres"], indirect=True)


def registry_on(db: Database | None) -> InMemorySigningKeys | KeyRegistry:
    return InMemorySigningKeys() if db is None else KeyRegistry(db, ttl=0.0)


def anchors_on(db: Database | None) -> InMemoryAnchors | AnchorStore:
    return InMemoryAnchors() if db is None else AnchorStore(db)


@KINDS
def test_a_key_is_registered_once_for_its_agency_and_revoked_once(database: Database | None) -> None:
    registry = registry_on(database)
    public = Ed25519PrivateKey.generate().public_key()
    key_id = registry.register("NZ-CUSTOMS", public)
    assert registry.register("NZ-CUSTOMS", public) == key_id and key_id.startswith("NZ-CUSTOMS/")
    assert registry.register("NZ-POLICE", public) != key_id  # the same key named for another agency is another id
    key = registry.get(key_id)
    assert key is not None and key.agency == "NZ-CUSTOMS" and key.revoked_at is None
    assert key.public_key.public_bytes_raw() == public.public_bytes_raw()
    assert registry.get("NZ-CUSTOMS/unknown") is None
    assert sorted(k.agency for k in registry.all()) == ["NZ-CUSTOMS", "NZ-POLICE"]

    assert registry.revoke(key_id, at=1000.0) and not registry.revoke(key_id, at=2000.0)
    revoked = registry.get(key_id)
    assert revoked is not None and revoked.revoked_at == 1000.0
    assert revoked.revoked_by(1000.0) and not revoked.revoked_by(999.0)
    assert not registry.revoke("NZ-CUSTOMS/unknown")


@KINDS
def test_an_anchor_moves_forward_only_and_per_partition(database: Database | None) -> None:
    anchors = anchors_on(database)
    head = bytes(32)
    anchors.advance(Anchor("tip.audit", 0, 5, head, b"sig5"))
    anchors.advance(Anchor("tip.audit", 0, 3, head, b"sig3"))  # a late writer: ignored
    anchors.advance(Anchor("tip.audit", 1, 1, head, b"sig1"))
    anchors.advance(Anchor("other.audit", 0, 9, head, b"sig9"))
    held = anchors.all("tip.audit")
    assert {p: (a.seq, a.signature) for p, a in held.items()} == {0: (5, b"sig5"), 1: (1, b"sig1")}
    anchors.advance(Anchor("tip.audit", 0, 6, b"\x01" * 32, b"sig6"))
    assert anchors.all("tip.audit")[0] == Anchor("tip.audit", 0, 6, b"\x01" * 32, b"sig6")
    assert anchors.all("none") == {}
