"""One contract for the stage state store (domain/state_store.py): the in-memory twin and SQLite answer alike.
Then what only a file can show: it survives the process, a SIGKILL in the middle of a commit leaves the
previous checkpoint whole, and a file this release cannot trust is wiped, never read."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.memory.state import InMemoryStageState
from adapters.sql.state import SqlStageState, open_state_database
from adapters.sql.tables import SqlTables
from domain.log import TopicPartition
from domain.state_store import ORIGIN, Checkpoint, Entry, StageState, record_digest

P0 = TopicPartition("t.accepted", 0)
P1 = TopicPartition("t.accepted", 1)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StageState]:
    if request.param == "memory":
        yield InMemoryStageState()
    else:
        db = open_state_database(tmp_path / "state" / "worker-0.sqlite3")
        yield SqlStageState(db, "accept", 1)
        db.close()


def test_entries_and_their_checkpoint_are_read_back_by_key_per_partition(store: StageState) -> None:
    assert store.checkpoint(P0) is None and store.get(P0, ["a"]) == {}
    at = Checkpoint(7, 5, record_digest(b"a", b"x"))
    store.commit(P0, [Entry("a", "NZ-POLICE"), Entry("k", "s1", item="o1"), Entry("k", "s2", item="o2")], at)
    store.commit(P1, [Entry("a", "AU-AFP")], Checkpoint(1, 0, "d"))

    assert store.checkpoint(P0) == at
    assert store.get(P0, ["a", "k", "missing"]) == {"a": {"": "NZ-POLICE"}, "k": {"o1": "s1", "o2": "s2"}}
    assert store.get(P1, ["a"]) == {"a": {"": "AU-AFP"}}  # each partition its own
    assert store.size(P0) == 3 and store.size(P1) == 1
    # A key and item already held keep their first value (the first accepted submission owns an id).
    store.commit(P0, [Entry("a", "AU-AFP")], Checkpoint(9, 8, "e"))
    assert store.get(P0, ["a"]) == {"a": {"": "NZ-POLICE"}} and store.checkpoint(P0) == Checkpoint(9, 8, "e")


def test_many_keys_are_looked_up_in_one_call(store: StageState) -> None:
    store.commit(P0, [Entry(f"id-{n}", "A") for n in range(1200)], Checkpoint(1200, 1199, "d"))
    found = store.get(P0, [f"id-{n}" for n in range(0, 2400, 2)])
    assert len(found) == 600 and store.size(P0) == 1200


def test_an_erasure_deletes_the_tagged_entries_of_every_partition(store: StageState) -> None:
    store.commit(P0, [Entry("k", "v", item="o1", tag="subject-1"), Entry("k", "v", item="o2", tag="subject-2")], ORIGIN)
    store.commit(P1, [Entry("j", "v", item="o3", tag="subject-1")], ORIGIN)
    assert store.delete_tagged(["subject-1", ""]) == 2
    assert store.get(P0, ["k"]) == {"k": {"o2": "v"}} and store.get(P1, ["j"]) == {}


def test_a_wiped_partition_starts_again_from_nothing_and_the_others_keep_theirs(store: StageState) -> None:
    store.commit(P0, [Entry("a", "A")], Checkpoint(3, 2, "d"))
    store.commit(P1, [Entry("b", "B")], Checkpoint(4, 3, "d"))
    store.wipe(P0)
    assert store.checkpoint(P0) is None and store.size(P0) == 0
    assert store.checkpoint(P1) == Checkpoint(4, 3, "d") and store.size(P1) == 1


def test_a_commit_that_fails_changes_nothing(store: StageState) -> None:
    store.commit(P0, [Entry("a", "A")], Checkpoint(3, 2, "d"))
    with pytest.raises((TypeError, sqlite3.Error)):
        store.commit(P0, [Entry("b", "B"), Entry("c", None)], Checkpoint(9, 8, "e"))  # type: ignore[arg-type]
    assert store.checkpoint(P0) == Checkpoint(3, 2, "d") and store.get(P0, ["a", "b"]) == {"a": {"": "A"}}


def test_a_record_digest_tells_records_apart_by_key_and_value() -> None:
    assert record_digest(b"a", b"b") == record_digest(b"a", b"b")
    assert (
        len(
            {
                record_digest(b"a", b"b"),
                record_digest(b"ab", b""),
                record_digest(None, b"ab"),
                record_digest(b"a", None),
            }
        )
        == 4
    )


# -- the SQLite file ------------------------------------------------------------------------------------------
def test_the_state_survives_the_process_and_each_stage_keeps_its_own(tmp_path: Path) -> None:
    path = tmp_path / "state" / "worker-0.sqlite3"
    db = open_state_database(path)
    SqlStageState(db, "accept", 1).commit(P0, [Entry("a", "A")], Checkpoint(1, 0, "d"))
    SqlStageState(db, "link", 1).commit(P0, [Entry("a", "L")], Checkpoint(5, 4, "e"))
    db.close()
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700

    db = open_state_database(path)
    assert SqlStageState(db, "accept", 1).get(P0, ["a"]) == {"a": {"": "A"}}
    assert SqlStageState(db, "link", 1).checkpoint(P0) == Checkpoint(5, 4, "e")


def test_a_stage_whose_format_changed_is_wiped_and_the_others_are_kept(tmp_path: Path) -> None:
    db = open_state_database(tmp_path / "s.sqlite3")
    SqlStageState(db, "accept", 1).commit(P0, [Entry("a", "A")], Checkpoint(1, 0, "d"))
    SqlStageState(db, "link", 1).commit(P0, [Entry("a", "L")], Checkpoint(1, 0, "d"))
    accept = SqlStageState(db, "accept", 2)  # a release that files something else under the same stage
    assert accept.checkpoint(P0) is None and accept.size(P0) == 0
    assert SqlStageState(db, "link", 1).size(P0) == 1


def test_a_file_of_an_unknown_layout_is_wiped_not_read(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    db = open_state_database(path)
    SqlStageState(db, "accept", 1).commit(P0, [Entry("a", "A")], Checkpoint(1, 0, "d"))
    db.execute("UPDATE state_meta SET value = '99' WHERE name = 'layout'")
    db.close()
    db = open_state_database(path)
    assert SqlStageState(db, "accept", 1).checkpoint(P0) is None


def test_a_file_that_is_not_a_database_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"\x80\x04\x95 not a database, perhaps a pickle" * 100)
    state = SqlStageState(open_state_database(path), "accept", 1)
    assert state.checkpoint(P0) is None
    state.commit(P0, [Entry("a", "A")], Checkpoint(1, 0, "d"))
    assert state.size(P0) == 1


def test_a_checkpoint_row_that_makes_no_sense_is_wiped(tmp_path: Path) -> None:
    db = open_state_database(tmp_path / "s.sqlite3")
    state = SqlStageState(db, "accept", 1)
    state.commit(P0, [Entry("a", "A")], Checkpoint(1, 0, "d"))
    db.execute("UPDATE state_checkpoints SET position = 'import os'")
    assert state.checkpoint(P0) is None and state.size(P0) == 0


def test_the_snapshot_a_release_before_kept_is_dropped_from_the_file_on_opening(tmp_path: Path) -> None:
    """Until the union kept tables, its state was one snapshot: opening a file of that release drops it (it may
    hold an erased person's occurrences) and overwrites its pages."""
    path = tmp_path / "s.sqlite3"
    db = open_state_database(path)
    db.execute("CREATE TABLE state_snapshots (stage TEXT PRIMARY KEY, data TEXT NOT NULL)")
    db.execute("INSERT INTO state_snapshots VALUES ('correlate', ?)", ('{"occ": "' + "old-snapshot-" * 4000 + '"}',))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    assert b"old-snapshot-" in path.read_bytes()
    db = open_state_database(path)
    assert db.query("SELECT name FROM sqlite_master WHERE name = 'state_snapshots'") == []
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    assert b"old-snapshot-" not in path.read_bytes()


def test_a_rewritten_or_deleted_table_row_leaves_no_trace_in_the_file(tmp_path: Path) -> None:
    """An erasure rewrites the union's rows that held the person (and deletes some): their old bytes are
    overwritten (secure_delete), not left in free pages."""
    path = tmp_path / "s.sqlite3"
    db = open_state_database(path)
    tables = SqlTables(db, "correlate")
    tables.write(
        [
            ("hub/reports", "r1", '"' + "erased-subject-occurrence-" * 4000 + '"'),
            ("hub/x", "gone", '"' + "deleted-row-" * 4000 + '"'),
        ],
        {},
    )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert b"erased-subject-occurrence-" in path.read_bytes() and b"deleted-row-" in path.read_bytes()
    tables.write([("hub/reports", "r1", '"kept"'), ("hub/x", "gone", None)], {})
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    assert b"erased-subject-occurrence-" not in path.read_bytes() and b"deleted-row-" not in path.read_bytes()
    wal = path.with_name(path.name + "-wal")
    assert not wal.exists() or b"erased-subject" not in wal.read_bytes()


def test_compacting_the_log_after_an_erasure_leaves_no_deleted_row_in_it(tmp_path: Path) -> None:
    """secure_delete overwrites a deleted row in the file, but SQLite's write-ahead log keeps the frames that
    held it until it is checkpointed and truncated: the union does so after writing an erasure (found by a
    review: a PASSIVE checkpoint left the marker in the -wal file)."""
    path = tmp_path / "s.sqlite3"
    db = open_state_database(path)
    tables = SqlTables(db, "correlate")
    tables.write([("hub/reports", "r1", '"' + "erased-subject-occurrence-" * 2000 + '"')], {})
    tables.write([("hub/reports", "r1", None), ("hub/reports", "r2", '"kept"')], {})
    wal = path.with_name(path.name + "-wal")
    assert b"erased-subject-occurrence-" in wal.read_bytes()
    tables.compact_log()
    assert b"erased-subject-occurrence-" not in wal.read_bytes() + path.read_bytes()
    assert tables.load("hub/reports", ["r1", "r2"]) == {"r2": '"kept"'}
    db.close()


WRITER = """
import sys
from adapters.sql.state import SqlStageState, open_state_database
from domain.log import TopicPartition
from domain.state_store import Checkpoint, Entry
state = SqlStageState(open_state_database(__import__("pathlib").Path(sys.argv[1])), "accept", 1)
tp, n = TopicPartition("t", 0), 0
while True:
    state.commit(tp, [Entry(f"id-{n + i}", "A") for i in range(200)], Checkpoint(n + 200, n + 199, "d"))
    n += 200
    if n == 2000:
        print("ready", flush=True)
"""


def test_a_sigkill_in_the_middle_of_commits_leaves_entries_and_checkpoint_in_step(tmp_path: Path) -> None:
    """Each commit adds 200 entries and moves the checkpoint to the count: after a SIGKILL at any moment the
    file holds exactly as many entries as its checkpoint says, never a half-written commit."""
    path = tmp_path / "s.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    time.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    state = SqlStageState(open_state_database(path), "accept", 1)
    checkpoint = state.checkpoint(TopicPartition("t", 0))
    assert checkpoint is not None and checkpoint.position >= 2000
    assert state.size(TopicPartition("t", 0)) == checkpoint.position


def test_a_new_state_file_holds_the_unions_tables_in_little_more_than_their_size(tmp_path: Path) -> None:
    """The union's tables (300 simulated reports correlated as the stage does, benchmarks/correlator_tables.py):
    JSON of about a kilobyte under random keys, rewritten as entities grow. On SQLite's 4 KB pages the file took
    2.1 times its content (a hub of 10^4 reports: 775 MB of file for 240 MB of state); a new file has 16 KB
    pages and takes 1.2 times."""
    from benchmarks.correlator_tables import fold, history

    facts = history(300, tmp_path / "home")
    path = tmp_path / "worker-0.sqlite3"
    db = open_state_database(path)
    fold(facts, SqlTables(db, "correlate"))
    db.query("PRAGMA wal_checkpoint(TRUNCATE)")
    assert db.query("PRAGMA journal_mode")[0][0] == "wal"
    content = db.query("SELECT sum(length(stage) + length(tbl) + length(key) + length(value)) FROM state_tables")[0][0]
    db.close()
    assert path.stat().st_size <= 1.5 * content, (path.stat().st_size, content)
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_new_state_file_is_0600_before_sqlite_writes_a_byte_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite creates a missing file 0644 (less the umask), and a chmod after it leaves a moment in which another
    local user can open it and keep reading all the state written later (shown by an outside review)."""
    real_connect = sqlite3.connect
    modes: list[int] = []

    def connect(path: Any, *args: Any, **kwargs: Any) -> sqlite3.Connection:
        modes.append(Path(path).stat().st_mode & 0o777)  # FileNotFoundError: SQLite would make it
        return real_connect(path, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)
    old_umask = os.umask(0o022)
    try:
        open_state_database(tmp_path / "state" / "worker-0.sqlite3").close()
    finally:
        os.umask(old_umask)
    assert modes and set(modes) == {0o600}
