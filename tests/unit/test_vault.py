"""One contract for every KeyVault: SQLite (default), PostgreSQL, and the in-memory twin."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.memory.vault import InMemoryKeyVault
from adapters.sql.database import Database
from adapters.sql.vault import SqlKeyVault
from domain.crypto import DecryptionError
from domain.ports import KeyRequest, KeyVault
from tiphub.keys import KeyStore


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def vault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyVault]:
    if request.param == "memory":
        yield InMemoryKeyVault()
    elif request.param == "sqlite":
        yield SqlKeyVault(Database(f"sqlite:///{tmp_path}/vault.sqlite3"), os.urandom(32))
    else:
        yield SqlKeyVault(request.getfixturevalue("postgres_schema"), os.urandom(32))


def test_get_or_create_makes_one_key_per_id_ever(vault: KeyVault) -> None:
    first = vault.get_or_create_many([KeyRequest("r1/s0", "r1", ("tok-a",)), KeyRequest("r1/r", "r1")])
    again = vault.get_or_create_many([KeyRequest("r1/s0", "r1", ("tok-a", "tok-b"))])
    assert again["r1/s0"] == first["r1/s0"]
    assert first["r1/s0"] != first["r1/r"]
    assert len(first["r1/s0"]) == 32
    assert vault.get("r1/s0") == first["r1/s0"]
    assert vault.get("nope") is None
    assert vault.key_ids_of("r1") == ["r1/r", "r1/s0"] and vault.key_ids_of("r2") == []


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


def test_a_key_goes_with_every_key_it_depends_on(vault: KeyVault) -> None:
    """A report's key depends on each of its subjects' keys, a notes key on the people of a signal: erasing
    any one of those people shreds the free text that may name them."""
    vault.get_or_create_many(
        [
            KeyRequest("r1/s0", "r1", ("passport-a",)),
            KeyRequest("r1/s1", "r1", ("passport-b",)),
            KeyRequest("r1/r", "r1", (), ("r1/s0", "r1/s1")),
            KeyRequest("note/sig-1", "sig-1", (), ("r1/s1", "r2/s0")),
            KeyRequest("r2/s0", "r2", ("passport-c",)),
        ]
    )
    vault.get_or_create_many([KeyRequest("r1/r", "r1", (), ("r1/s0",))])  # asked again: changes nothing
    assert vault.dependents(["r1/s1"]) == ["note/sig-1", "r1/r"]
    assert vault.dependents(["r2/s0"]) == ["note/sig-1"]
    assert vault.delete(vault.key_ids_for_token("passport-b")) == 3
    assert [vault.get(k) is None for k in ("r1/s1", "r1/r", "note/sig-1")] == [True, True, True]
    assert vault.get("r1/s0") is not None and vault.get("r2/s0") is not None
    assert vault.dependents(["r1/s0"]) == []  # the report key went, and with it its dependency
    assert vault.delete(["r2/s0"]) == 1


def test_sqlite_vault_wraps_keys_and_is_private(tmp_path: Path) -> None:
    kek = os.urandom(32)
    vault = SqlKeyVault(Database(f"sqlite:///{tmp_path}/vault.sqlite3"), kek)
    key = vault.get_or_create_many([KeyRequest("r1/s0", "r1")])["r1/s0"]
    raw = (tmp_path / "vault.sqlite3").read_bytes()
    assert key not in raw  # stored wrapped under the KEK, not as is
    assert stat.S_IMODE((tmp_path / "vault.sqlite3").stat().st_mode) == 0o600
    with pytest.raises(DecryptionError):
        SqlKeyVault(Database(f"sqlite:///{tmp_path}/vault.sqlite3"), os.urandom(32)).get("r1/s0")


# -- rotation of the vault KEK ------------------------------------------------------------------
def tiphub(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tiphub", *args, "--home", str(home)], capture_output=True, text=True, timeout=60
    )


def test_the_vault_kek_rotates_while_processes_run_and_the_old_one_retires_once_nothing_needs_it(
    tmp_path: Path,
) -> None:
    store = KeyStore(tmp_path)
    store.init(agencies=())
    url = f"sqlite:///{tmp_path}/vault.sqlite3"
    worker = SqlKeyVault(Database(url), store.vault_keks)  # a running process, loaded before the rotation
    before = worker.get_or_create_many([KeyRequest("r1/s0", "r1", ("lk1.a",))])["r1/s0"]

    rotated = tiphub(tmp_path, "keys", "rotate-vault-kek")
    assert rotated.returncode == 0, rotated.stderr
    old_id = rotated.stdout.split("; ")[1].split(" ")[0]
    assert old_id.startswith("kek/") and old_id != store.kek_id(store.vault_kek())

    gateway = SqlKeyVault(Database(url), store.vault_keks)  # started after the rotation
    assert gateway.get("r1/s0") == before  # wrapped with the previous KEK: still opens
    after = gateway.get_or_create_many([KeyRequest("r2/s0", "r2")])["r2/s0"]  # wrapped with the new one
    assert worker.get("r2/s0") == after  # opens with none it holds: it reads the KEKs again

    refused = tiphub(tmp_path, "keys", "retire-vault-kek", old_id)
    assert refused.returncode == 1 and "still wrapped with a previous KEK" in refused.stderr

    rewrapped = tiphub(tmp_path, "keys", "rewrap-vault")
    assert rewrapped.returncode == 0, rewrapped.stderr
    assert "re-wrapped 1 of 2 data key(s); 0 still wrapped" in " ".join(rewrapped.stdout.split())

    retired = tiphub(tmp_path, "keys", "retire-vault-kek", old_id)
    assert retired.returncode == 0, retired.stderr
    assert len(store.vault_keks()) == 1
    assert SqlKeyVault(Database(url), store.vault_keks).get("r1/s0") == before  # nothing lost
    assert gateway.key_ids_for_token("lk1.a") == ["r1/s0"]  # the erasure index is untouched


def test_a_vault_backup_wrapped_with_a_retired_kek_no_longer_opens(tmp_path: Path) -> None:
    """Retiring the KEK also shreds backups taken before the rewrap: erased people stay erased."""
    store = KeyStore(tmp_path)
    store.init(agencies=())
    url = f"sqlite:///{tmp_path}/vault.sqlite3"
    SqlKeyVault(Database(url), store.vault_keks).get_or_create_many([KeyRequest("r1/s0", "r1")])
    backup = tmp_path / "backup.sqlite3"
    with sqlite3.connect(tmp_path / "vault.sqlite3") as live, sqlite3.connect(backup) as copy:
        live.backup(copy)  # SQLite's online backup, as docs/operations.md says
    old_id, _ = store.rotate_vault_kek()
    SqlKeyVault(Database(url), store.vault_keks).rewrap()
    assert SqlKeyVault(Database(f"sqlite:///{backup}"), store.vault_keks).get("r1/s0") is not None  # until retired
    store.retire_vault_kek(old_id)
    with pytest.raises(DecryptionError):
        SqlKeyVault(Database(f"sqlite:///{backup}"), store.vault_keks).get("r1/s0")
