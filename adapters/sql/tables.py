"""The union stage's tables (domain/working_set.py `TableStore`) in a worker's state file (adapters/sql/state.py):
one row per (table, key), and the input positions the tables reflect, written in one transaction.

Text only: a file someone altered can hold wrong state, never run code.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from adapters.sql.database import Database
from adapters.sql.state import chunks, read_checkpoint
from domain.log import TopicPartition
from domain.state_store import Checkpoint


class SqlTables:
    """The tables of stage `stage` (a name of adapters/sql/state.py's `SqlStageState`, whose format check and
    wipe cover them)."""

    def __init__(self, db: Database, stage: str) -> None:
        self.db = db
        self.stage = stage

    def load(self, table: str, keys: Collection[str]) -> dict[str, str]:
        if len(keys) == 1:  # the common case, read key by key as a batch touches them
            (key,) = keys
            rows = self.db.query(
                "SELECT value FROM state_tables WHERE stage = ? AND tbl = ? AND key = ?", (self.stage, table, key)
            )
            return {key: rows[0][0]} if rows else {}
        out: dict[str, str] = {}
        for chunk in chunks(keys):
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT key, value FROM state_tables WHERE stage = ? AND tbl = ? AND key IN ({marks})"  # noqa: S608
            out.update(self.db.query(sql, (self.stage, table, *chunk)))
        return out

    def keys(self, table: str) -> list[str]:
        rows = self.db.query("SELECT key FROM state_tables WHERE stage = ? AND tbl = ?", (self.stage, table))
        return [key for (key,) in rows]

    def keys_below(self, table: str, bound: str) -> list[str]:
        rows = self.db.query(
            "SELECT key FROM state_tables WHERE stage = ? AND tbl = ? AND key < ? ORDER BY key",
            (self.stage, table, bound),
        )
        return [key for (key,) in rows]

    def write(
        self, changes: Sequence[tuple[str, str, str | None]], positions: Mapping[TopicPartition, Checkpoint]
    ) -> None:
        with self.db.transaction():
            self.db.executemany(
                "INSERT INTO state_tables (stage, tbl, key, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (stage, tbl, key) DO UPDATE SET value = excluded.value",
                [(self.stage, table, key, value) for table, key, value in changes if value is not None],
            )
            self.db.executemany(
                "DELETE FROM state_tables WHERE stage = ? AND tbl = ? AND key = ?",
                [(self.stage, table, key) for table, key, value in changes if value is None],
            )
            self.db.execute("DELETE FROM state_table_positions WHERE stage = ?", (self.stage,))
            self.db.executemany(
                "INSERT INTO state_table_positions (stage, topic, partition_id, position, last_offset, last_digest) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (self.stage, tp.topic, tp.partition, c.position, c.last_offset, c.last_digest)
                    for tp, c in sorted(positions.items())
                ],
            )

    def positions(self) -> dict[TopicPartition, Checkpoint]:
        rows = self.db.query(
            "SELECT topic, partition_id, position, last_offset, last_digest FROM state_table_positions WHERE stage = ?",
            (self.stage,),
        )
        out: dict[TopicPartition, Checkpoint] = {}
        for topic, partition, *checkpoint in rows:
            held = read_checkpoint(*checkpoint)
            if held is None or not isinstance(topic, str) or not isinstance(partition, int):
                return {}  # positions that make no sense are none: the state is rebuilt
            out[TopicPartition(topic, partition)] = held
        return out

    def compact_log(self) -> None:
        # TRUNCATE: the log's frames copied into the file and the log emptied; busy (a reader) leaves it as it
        # is until the next erasure's write tries again.
        self.db.query("PRAGMA wal_checkpoint(TRUNCATE)")

    def clear(self) -> None:
        with self.db.transaction():
            self.db.execute("DELETE FROM state_tables WHERE stage = ?", (self.stage,))
            self.db.execute("DELETE FROM state_table_positions WHERE stage = ?", (self.stage,))
