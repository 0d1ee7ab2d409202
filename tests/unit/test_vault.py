"""One contract for every KeyVault: SQLite (default), PostgreSQL, and the in-memory twin."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiphub.crypto import DecryptionError
from tiphub.database import Database
from tiphub.vault import InMemoryKeyVault, KeyRequest, KeyVault, SqlKeyVault

POSTGRES_URL = os.environ.get("TIPHUB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_available() -> bool:
    try:
        import psycopg

        psycopg.connect(POSTGRES_URL, connect_timeout=2).close()
        return True
    except Exception:
        return False


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def vault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyVault]:
    if request.param == "memory":
        yield InMemoryKeyVault()
    elif request.param == "sqlite":
        yield SqlKeyVault(Database(f"sqlite:///{tmp_path}/vault.sqlite3"), os.urandom(32))
    else:
        if not _postgres_available():
            pytest.skip(f"no PostgreSQL at {POSTGRES_URL}")
        schema = "t" + uuid.uuid4().hex[:10]
        admin = Database(POSTGRES_URL)
        admin.execute(f"CREATE SCHEMA {schema}")
        db = Database(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
        try:
            yield SqlKeyVault(db, os.urandom(32))
        finally:
            db.close()
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
            admin.close()


def test_get_or_create_makes_one_key_per_id_ever(vault: KeyVault) -> None:
    first = vault.get_or_create_many([KeyRequest("r1/s0", "r1", ("tok-a",)), KeyRequest("r1/r", "r1")])
    again = vault.get_or_create_many([KeyRequest("r1/s0", "r1", ("tok-a", "tok-b"))])
    assert again["r1/s0"] == first["r1/s0"]
    assert first["r1/s0"] != first["r1/r"]
    assert len(first["r1/s0"]) == 32
    assert vault.get("r1/s0") == first["r1/s0"]
    assert vault.get("nope") is None


def test_keys_are_found_by_token_and_deleted_for_good(vault: KeyVault) -> None:
    vault.get_or_create_many(
        [
            KeyRequest("r1/s0", "r1", ("passport",)),
            KeyRequest("r2/s0", "r2", ("passport", "phone")),
            KeyRequest("r3/s0", "r3", ("phone",)),
        ]
    )
    assert sorted(vault.key_ids_for_token("passport")) == ["r1/s0", "r2/s0"]
    assert vault.delete(vault.key_ids_for_token("passport")) == 2
    assert vault.get("r1/s0") is None and vault.get("r2/s0") is None
    assert vault.key_ids_for_token("passport") == []
    assert vault.key_ids_for_token("phone") == ["r3/s0"]
    # A re-delivered report after erasure gets a new key: the old ciphertexts stay unreadable.
    fresh = vault.get_or_create_many([KeyRequest("r1/s0", "r1")])
    assert fresh["r1/s0"] is not None


def test_sqlite_vault_wraps_keys_and_is_private(tmp_path: Path) -> None:
    kek = os.urandom(32)
    vault = SqlKeyVault(Database(f"sqlite:///{tmp_path}/vault.sqlite3"), kek)
    key = vault.get_or_create_many([KeyRequest("r1/s0", "r1")])["r1/s0"]
    raw = (tmp_path / "vault.sqlite3").read_bytes()
    assert key not in raw  # stored wrapped under the KEK, not as is
    assert stat.S_IMODE((tmp_path / "vault.sqlite3").stat().st_mode) == 0o600
    with pytest.raises(DecryptionError):
        SqlKeyVault(Database(f"sqlite:///{tmp_path}/vault.sqlite3"), os.urandom(32)).get("r1/s0")
