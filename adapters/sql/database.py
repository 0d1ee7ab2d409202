"""A thin relational adapter: SQLite (embedded default, secure_delete on) or PostgreSQL by URL."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

NUL_STORED_AS = "\ufffd"  # a NUL in text, on PostgreSQL (Database._params)


class Database:
    """Runs parameterised SQL written with `?` placeholders on either engine."""

    def __init__(self, url: str, pragmas: Sequence[str] = ()) -> None:
        """`pragmas`: SQLite settings for every connection (each thread has its own), e.g. synchronous=NORMAL."""
        self.url = url
        self.pragmas = tuple(pragmas)
        self._local = threading.local()
        if url.startswith("sqlite:///"):
            self.engine = "sqlite"
            self.path = Path(url.removeprefix("sqlite:///"))
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif url.startswith(("postgresql://", "postgres://")):
            self.engine = "postgres"
        else:
            raise ValueError("database URL must start with sqlite:/// or postgresql://")

    def _connect(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self.engine == "sqlite":
            with suppress(FileExistsError):  # made 0600 from its first moment (a chmod after leaves a window)
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA secure_delete=ON")  # erased keys are overwritten, not just unlinked
            conn.execute("PRAGMA busy_timeout=30000")
            for pragma in self.pragmas:
                conn.execute(f"PRAGMA {pragma}")
            self.path.chmod(0o600)
        else:
            import psycopg

            conn = psycopg.connect(self.url, autocommit=True)
        self._local.conn = conn
        return conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.engine == "postgres" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._lost_connection_dropped() as conn:
            cursor = conn.execute(self._sql(sql), self._params(params))
            return int(cursor.rowcount or 0)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        with self._lost_connection_dropped() as conn:
            if self.engine == "sqlite":
                conn.executemany(sql, rows)
            else:
                with conn.cursor() as cursor:
                    cursor.executemany(self._sql(sql), [self._params(row) for row in rows])

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.engine == "sqlite":  # no connection to lose; the short path (the union reads key by key)
            return list(self._connect().execute(sql, params).fetchall())
        with self._lost_connection_dropped() as conn:
            return list(conn.execute(self._sql(sql), self._params(params)).fetchall())

    def _params(self, params: Sequence[Any]) -> Sequence[Any]:
        """PostgreSQL's text holds no NUL: one in a string the hub stores (a report id or an agency an untrusted
        writer chose) is stored, and looked up, as U+FFFD. Refused, it stopped whatever stored it for good."""
        if self.engine != "postgres" or not any(isinstance(p, str) and "\x00" in p for p in params):
            return params
        return [p.replace("\x00", NUL_STORED_AS) if isinstance(p, str) else p for p in params]

    @contextmanager
    def _lost_connection_dropped(self) -> Iterator[Any]:
        """This thread's connection; dropped when a statement finds it broken (PostgreSQL restarted, the
        network cut), so that the caller's next try connects again instead of failing forever. The error
        still reaches the caller: a transaction it was part of is gone."""
        conn = self._connect()
        try:
            yield conn
        except Exception:
            if self.engine == "postgres" and (conn.closed or getattr(conn, "broken", False)):
                self._local.conn = None
                with suppress(Exception):
                    conn.close()
            raise

    def transaction(self, immediate: bool = False) -> _Transaction:
        """A transaction; `immediate` takes SQLite's write lock at its start, so that two writers of one file
        (two gateways) wait for each other instead of one failing when it turns from reading to writing."""
        return _Transaction(self, "BEGIN IMMEDIATE" if immediate and self.engine == "sqlite" else "BEGIN")

    def blob(self) -> str:
        return "BLOB" if self.engine == "sqlite" else "BYTEA"

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class _Transaction:
    def __init__(self, db: Database, begin: str = "BEGIN") -> None:
        self.db = db
        self.begin = begin

    def __enter__(self) -> Database:
        self.db.execute(self.begin)
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
