"""The key vault: random data keys per (report, subject) and per report, wrapped by the vault KEK.

Deleting a key is crypto-shredding: every sealed copy of what it protected, on any topic and
in any backup of the topics, becomes unreadable. Keys are indexed by the subject's linkage
tokens so that a person can be erased by token. A key may depend on others (a report's own key
on its subjects' keys, a signal's triage-notes key on the keys of the people in it): deleting a
key deletes every key that depends on it, so free text that may name a person goes with them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from adapters.sql.database import Database
from domain.crypto import DecryptionError, new_data_key, seal, unseal
from domain.ports import KeyRequest
from domain.reloading import Reloaded

KEKS_RELOAD_S = 30.0


class SqlKeyVault:
    """KeyVault on SQLite (default) or PostgreSQL. Safe for several workers at once.

    `kek` is the KEK, or a loader of every KEK in use, the current one first (`KeyStore.vault_keks`).
    With a loader, a KEK rotation takes effect without a restart: new keys are wrapped with the
    current KEK, keys wrapped with a previous one still open, and the list is read again every
    KEKS_RELOAD_S and whenever a key opens with none of them (another process re-wrapped it)."""

    def __init__(self, db: Database, kek: bytes | Callable[[], list[bytes]]) -> None:
        if callable(kek):
            load = kek
            self._keks = Reloaded(lambda: self._checked(load()), KEKS_RELOAD_S)
        else:
            self._keks = Reloaded.fixed(self._checked([kek]))
        self.db = db
        blob = db.blob()
        db.execute(
            f"""CREATE TABLE IF NOT EXISTS data_keys (
                key_id TEXT PRIMARY KEY, report_id TEXT NOT NULL, wrapped {blob} NOT NULL,
                created_at DOUBLE PRECISION NOT NULL)"""
        )
        db.execute(
            """CREATE TABLE IF NOT EXISTS key_tokens (
                token TEXT NOT NULL, key_id TEXT NOT NULL, PRIMARY KEY (token, key_id))"""
        )
        db.execute("CREATE INDEX IF NOT EXISTS key_tokens_key ON key_tokens (key_id)")
        db.execute(
            """CREATE TABLE IF NOT EXISTS key_dependencies (
                key_id TEXT NOT NULL, depends_on TEXT NOT NULL, PRIMARY KEY (depends_on, key_id))"""
        )

    @staticmethod
    def _checked(keks: list[bytes]) -> list[bytes]:
        if not keks or any(len(kek) != 32 for kek in keks):
            raise ValueError("vault KEKs must be 32 bytes, the current one first")
        return keks

    def _wrap(self, key_id: str, key: bytes) -> bytes:
        return seal(self._keks.current()[0], key, b"tiphub/vault/v1|" + key_id.encode())

    def _unwrap_with(self, key_id: str, wrapped: bytes) -> tuple[bytes, int]:
        """The key, and the index of the KEK that opened it (0: the current one). If none opens it,
        the KEKs are read again once: another process may have rotated and re-wrapped."""
        aad = b"tiphub/vault/v1|" + key_id.encode()
        for attempt in (1, 2):
            for index, kek in enumerate(self._keks.current()):
                try:
                    return unseal(kek, bytes(wrapped), aad), index
                except DecryptionError:
                    continue
            if attempt == 2 or not self._keks.reload():
                break
        raise DecryptionError(f"data key {key_id} opens with no vault KEK in use")

    def _unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        return self._unwrap_with(key_id, wrapped)[0]

    def rewrap(self, batch: int = 500) -> tuple[int, int]:
        """Wrap every data key with the current KEK. Returns (keys re-wrapped, keys in the vault).

        Run after a KEK rotation, once every process has read the new KEK (KEKS_RELOAD_S): a
        process that has not may still wrap new keys with the previous one, and a later run
        catches those. Idempotent; each batch is one transaction."""
        self._keks.reload()
        rewrapped = total = 0
        after = ""
        while True:
            rows = self.db.query(
                "SELECT key_id, wrapped FROM data_keys WHERE key_id > ? ORDER BY key_id LIMIT ?", (after, batch)
            )
            if not rows:
                return rewrapped, total
            total += len(rows)
            stale = []
            for key_id, wrapped in rows:
                key, index = self._unwrap_with(key_id, wrapped)
                if index != 0:
                    stale.append((self._wrap(key_id, key), key_id))
            if stale:
                with self.db.transaction() as tx:
                    tx.executemany("UPDATE data_keys SET wrapped = ? WHERE key_id = ?", stale)
                rewrapped += len(stale)
            after = rows[-1][0]

    def wrapped_with_previous(self) -> int:
        """How many data keys open only with a previous KEK (0: it can be retired)."""
        self._keks.reload()
        return sum(
            1
            for key_id, wrapped in self.db.query("SELECT key_id, wrapped FROM data_keys")
            if self._unwrap_with(key_id, wrapped)[1]
        )

    def get_or_create_many(self, requests: Sequence[KeyRequest]) -> dict[str, bytes]:
        """One key per key_id, ever: a re-delivered report gets the key its first delivery made."""
        if not requests:
            return {}
        now = time.time()
        with self.db.transaction() as tx:
            tx.executemany(
                "INSERT INTO data_keys (key_id, report_id, wrapped, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key_id) DO NOTHING",
                [(r.key_id, r.report_id, self._wrap(r.key_id, new_data_key()), now) for r in requests],
            )
            tx.executemany(
                "INSERT INTO key_tokens (token, key_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(token, r.key_id) for r in requests for token in r.tokens],
            )
            tx.executemany(
                "INSERT INTO key_dependencies (key_id, depends_on) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(r.key_id, other) for r in requests for other in r.depends_on],
            )
            keys: dict[str, bytes] = {}
            ids = [r.key_id for r in requests]
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key_id, wrapped in tx.query(
                    f"SELECT key_id, wrapped FROM data_keys WHERE key_id IN ({marks})",  # noqa: S608
                    chunk,
                ):
                    keys[key_id] = self._unwrap(key_id, wrapped)
        return keys

    def get(self, key_id: str) -> bytes | None:
        rows = self.db.query("SELECT wrapped FROM data_keys WHERE key_id = ?", (key_id,))
        return self._unwrap(key_id, rows[0][0]) if rows else None

    def key_ids_for_token(self, token: str) -> list[str]:
        return [r[0] for r in self.db.query("SELECT key_id FROM key_tokens WHERE token = ?", (token,))]

    def tokens_for_key(self, key_id: str) -> list[str]:
        return sorted(r[0] for r in self.db.query("SELECT token FROM key_tokens WHERE key_id = ?", (key_id,)))

    def key_ids_of(self, report_id: str) -> list[str]:
        """Every key made for one owner (a report, or the hub's envelope keys)."""
        return sorted(r[0] for r in self.db.query("SELECT key_id FROM data_keys WHERE report_id = ?", (report_id,)))

    def dependents(self, key_ids: Iterable[str]) -> list[str]:
        """Every key that depends, directly or through others, on one of `key_ids` (not those themselves)."""
        found: set[str] = set()
        frontier = set(key_ids)
        seen = set(frontier)
        while frontier:
            step: set[str] = set()
            for key_id in frontier:
                step |= {
                    r[0] for r in self.db.query("SELECT key_id FROM key_dependencies WHERE depends_on = ?", (key_id,))
                }
            frontier = step - seen
            seen |= step
            found |= step
        return sorted(found - set(key_ids))

    def delete(self, key_ids: Iterable[str]) -> int:
        """Delete these keys and every key that depends on them. Returns how many keys existed and went."""
        ids = list(key_ids)
        deleted = 0
        with self.db.transaction() as tx:
            for key_id in [*ids, *self.dependents(ids)]:
                deleted += tx.execute("DELETE FROM data_keys WHERE key_id = ?", (key_id,))
                tx.execute("DELETE FROM key_tokens WHERE key_id = ?", (key_id,))
                tx.execute("DELETE FROM key_dependencies WHERE key_id = ?", (key_id,))
        return deleted
