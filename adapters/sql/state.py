"""The stage state store on SQLite (domain/state_store.py): one file per worker instance, every stage's
partitions in it, each partition's entries and checkpoint written in one transaction.

The file holds text only (no pickle): a file someone altered can hold wrong state, never run code. A file
this release cannot read (not a database, another layout, another stage format) is not trusted: it is wiped,
and the stages rebuild their state from the topics, as on a first start.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from adapters.sql.database import Database
from domain.log import TopicPartition
from domain.state_store import NO_RECORD, Checkpoint, Entry

log = logging.getLogger(__name__)
LAYOUT = "1"  # the tables below; another value in a file means: drop them all and start again
# Losing the last transactions on a power cut leaves the state behind the topics, which a restore reads on
# from; a SIGKILL loses nothing committed. So no fsync on every commit, on every thread's connection.
STATE_PRAGMAS = ("synchronous=NORMAL",)
CHUNK = 500  # keys per IN (...) query, well under SQLite's limit on parameters
PAGE_SIZE = 16384  # bytes per page of a new state file (`_create`)
# What makes a state file one to remove and rebuild: SQLite's primary codes, so that the extended ones
# (SQLITE_CORRUPT_INDEX, ...) count too.
UNREADABLE = (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)
TABLES = (
    "state_entries",
    "state_checkpoints",
    "state_tables",
    "state_table_positions",
    "state_meta",
)
SCOPE = "WHERE stage = ? AND topic = ? AND partition_id = ?"


def open_state_database(path: Path) -> Database:
    """The worker's state file, created if missing; a file that is not a readable SQLite database is removed
    (with its journal) and created again: everything in it can be rebuilt from the topics."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _create(path)
    db = Database(f"sqlite:///{path}", pragmas=STATE_PRAGMAS)
    try:
        _ensure_layout(db)
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in UNREADABLE:
            raise  # locked by another process, a full disk, an I/O error: not the file's fault, and not to delete
        log.warning(
            "state file %s is unreadable (%s): removing it; stages rebuild their state from the topics", path, exc
        )
        db.close()
        for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
        _create(path)
        db = Database(f"sqlite:///{path}", pragmas=STATE_PRAGMAS)
        _ensure_layout(db)
    return db


def _create(path: Path) -> None:
    """A new file with PAGE_SIZE pages (fixed once the first table is written, and before WAL is on). The union's
    rows are JSON of about a kilobyte under random keys: on SQLite's 4 KB pages a table of them took 2.2 times
    its content (rows split across pages, pages half full), on 16 KB pages 1.2 times, and a batch cost 6% less
    (benchmarks.correlator_tables at 2,000 reports). A file made before keeps its pages (`VACUUM` with the worker
    stopped, or removing it, which the topics rebuild, changes them)."""
    try:
        # Made 0600 from its first moment: a descriptor opened before a chmod would keep reading what comes later.
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        return
    made = sqlite3.connect(path)
    try:
        made.execute(f"PRAGMA page_size={PAGE_SIZE}")
        made.execute("CREATE TABLE IF NOT EXISTS state_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        made.commit()
    finally:
        made.close()


def _ensure_layout(db: Database) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS state_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    held = db.query("SELECT value FROM state_meta WHERE name = 'layout'")
    if held and held[0][0] != LAYOUT:
        log.warning("state file layout %r is not this release's (%s): wiping it", held[0][0], LAYOUT)
        with db.transaction():
            for table in TABLES:
                db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute("CREATE TABLE state_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    with db.transaction():
        db.execute(
            """CREATE TABLE IF NOT EXISTS state_entries (
                stage TEXT NOT NULL, topic TEXT NOT NULL, partition_id INTEGER NOT NULL,
                key TEXT NOT NULL, item TEXT NOT NULL, value TEXT NOT NULL, tag TEXT NOT NULL,
                PRIMARY KEY (stage, topic, partition_id, key, item)) WITHOUT ROWID"""
        )
        db.execute("CREATE INDEX IF NOT EXISTS state_entries_tag ON state_entries (stage, tag) WHERE tag != ''")
        db.execute(
            """CREATE TABLE IF NOT EXISTS state_checkpoints (
                stage TEXT NOT NULL, topic TEXT NOT NULL, partition_id INTEGER NOT NULL,
                position INTEGER NOT NULL, last_offset INTEGER NOT NULL, last_digest TEXT NOT NULL,
                PRIMARY KEY (stage, topic, partition_id))"""
        )
        # The union stage kept its state as one snapshot until its tables (stage format 2): a file of that
        # release loses them here (secure_delete overwrites their pages).
        db.execute("DROP TABLE IF EXISTS state_snapshots")
        db.execute("DROP TABLE IF EXISTS state_snapshot_positions")
        # A stage whose state is tables of text worked on through a cache (domain/working_set.py), with the
        # positions the tables reflect (adapters/sql/tables.py). Added to layout 1 without a new layout number.
        db.execute(
            """CREATE TABLE IF NOT EXISTS state_tables (
                stage TEXT NOT NULL, tbl TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                PRIMARY KEY (stage, tbl, key)) WITHOUT ROWID"""
        )
        db.execute(
            """CREATE TABLE IF NOT EXISTS state_table_positions (
                stage TEXT NOT NULL, topic TEXT NOT NULL, partition_id INTEGER NOT NULL,
                position INTEGER NOT NULL, last_offset INTEGER NOT NULL, last_digest TEXT NOT NULL,
                PRIMARY KEY (stage, topic, partition_id))"""
        )
        db.execute("INSERT INTO state_meta (name, value) VALUES ('layout', ?) ON CONFLICT (name) DO NOTHING", (LAYOUT,))


def read_checkpoint(position: object, last_offset: object, digest: object) -> Checkpoint | None:
    """A checkpoint row read back, or None if it makes no sense."""
    if (
        isinstance(position, int)
        and isinstance(last_offset, int)
        and isinstance(digest, str)
        and position >= 0
        and NO_RECORD <= last_offset < position
    ):
        return Checkpoint(position, last_offset, digest)
    return None


def chunks(values: Collection[str]) -> Iterator[list[str]]:
    values = list(values)
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


class SqlStageState:
    """domain.state_store.StageState of stage `stage` in a worker's state file, whose entries are in format
    `version` (the stage's own number: a stage that changes what it files raises it, and the old entries are
    wiped rather than misread)."""

    def __init__(self, db: Database, stage: str, version: int) -> None:
        self.db = db
        self.stage = stage
        # Losing the last transactions on a power cut leaves the store behind the topics, which a restore
        # reads on from; a SIGKILL loses nothing committed. So no fsync on every commit.
        db.execute("PRAGMA synchronous=NORMAL")
        name = f"format:{stage}"
        held = db.query("SELECT value FROM state_meta WHERE name = ?", (name,))
        if held and held[0][0] != str(version):
            log.warning("state of stage %s is in format %r, not %d: wiping it", stage, held[0][0], version)
            self._wipe_stage()
        db.execute(
            "INSERT INTO state_meta (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, str(version)),
        )

    def _wipe_stage(self) -> None:
        with self.db.transaction():
            self.db.execute("DELETE FROM state_entries WHERE stage = ?", (self.stage,))
            self.db.execute("DELETE FROM state_checkpoints WHERE stage = ?", (self.stage,))
            self.db.execute("DELETE FROM state_tables WHERE stage = ?", (self.stage,))
            self.db.execute("DELETE FROM state_table_positions WHERE stage = ?", (self.stage,))

    def checkpoint(self, tp: TopicPartition) -> Checkpoint | None:
        rows = self.db.query(
            "SELECT position, last_offset, last_digest FROM state_checkpoints "
            "WHERE stage = ? AND topic = ? AND partition_id = ?",
            (self.stage, tp.topic, tp.partition),
        )
        if not rows:
            return None
        checkpoint = read_checkpoint(*rows[0])
        if checkpoint is None:
            log.warning("checkpoint of %s %s[%d] is not valid: wiping the partition", self.stage, *tp)
            self.wipe(tp)
        return checkpoint

    def get(self, tp: TopicPartition, keys: Collection[str]) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for chunk in chunks(set(keys)):
            marks = ", ".join("?" * len(chunk))
            sql = f"SELECT key, item, value FROM state_entries {SCOPE} AND key IN ({marks})"  # noqa: S608
            for key, item, value in self.db.query(sql, (self.stage, tp.topic, tp.partition, *chunk)):
                out.setdefault(key, {})[item] = value
        return out

    def commit(self, tp: TopicPartition, entries: Sequence[Entry], checkpoint: Checkpoint) -> None:
        scope = (self.stage, tp.topic, tp.partition)
        with self.db.transaction():
            self.db.executemany(
                "INSERT INTO state_entries (stage, topic, partition_id, key, item, value, tag) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [(*scope, e.key, e.item, e.value, e.tag) for e in entries],
            )
            self.db.execute(
                "INSERT INTO state_checkpoints (stage, topic, partition_id, position, last_offset, last_digest) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (stage, topic, partition_id) DO UPDATE SET "
                "position = excluded.position, last_offset = excluded.last_offset, last_digest = excluded.last_digest",
                (*scope, checkpoint.position, checkpoint.last_offset, checkpoint.last_digest),
            )

    def delete_tagged(self, tags: Collection[str]) -> int:
        deleted = 0
        with self.db.transaction():
            for chunk in chunks({t for t in tags if t}):
                marks = ", ".join("?" * len(chunk))
                deleted += self.db.execute(
                    f"DELETE FROM state_entries WHERE stage = ? AND tag IN ({marks})",  # noqa: S608 (placeholders only)
                    (self.stage, *chunk),
                )
        return deleted

    def wipe(self, tp: TopicPartition) -> None:
        scope = (self.stage, tp.topic, tp.partition)
        with self.db.transaction():
            self.db.execute("DELETE FROM state_entries WHERE stage = ? AND topic = ? AND partition_id = ?", scope)
            self.db.execute("DELETE FROM state_checkpoints WHERE stage = ? AND topic = ? AND partition_id = ?", scope)

    def size(self, tp: TopicPartition) -> int:
        rows = self.db.query(
            "SELECT COUNT(*) FROM state_entries WHERE stage = ? AND topic = ? AND partition_id = ?",
            (self.stage, tp.topic, tp.partition),
        )
        return int(rows[0][0])
