"""Restarts on the real broker read only the tail a stage's checkpoint lacks (issue 16): the accept stage's
accepted ids and the link stage's index are restored from the worker's state file plus the topic from its
checkpoint on, counted in the worker's log ("restored ... from checkpoint at P: K records replayed"), after a
clean stop and after a SIGKILL, and every report is still accepted exactly once. The union stage restores
from its tables plus the tail ("correlator restored from its tables at ...: K records replayed, S signal
versions loaded"), and writes every signal version once."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import pytest

from adapters.sql.state import SqlStageState, open_state_database
from adapters.sql.tables import SqlTables
from domain.log import TopicPartition
from domain.state_store import Checkpoint, record_digest
from producers.simulate import simulate
from streams.agents.accept_reports import STATE_VERSION
from tests.harness import PARTITIONS, Hub, assert_everything_once, versions_are_gapless

pytestmark = pytest.mark.integration
RESTORED = re.compile(
    r"restored (accepted ids|link index) of (\S+)\[(\d+)\] (?:from checkpoint at (\d+)|from the beginning): "
    r"(\d+) records replayed"
)
BATCH = 500  # the most records one transaction of the accept stage holds (adapters/kafka/transactional.py)
UNION = re.compile(
    r"correlator restored (?:from the beginning|from its tables at (?P<at>[^:]+)): (?P<replayed>\d+) records replayed, "
    r"(?P<versions>\d+) signal versions loaded"
)


@dataclass(frozen=True)
class UnionRestored:
    stored: str | None  # the positions it restored from; None: from the beginning
    replayed: int
    versions: int


def union_restores(log: str) -> list[UnionRestored]:
    return [UnionRestored(m["at"], int(m["replayed"]), int(m["versions"])) for m in UNION.finditer(log)]


def union_inputs(hub: Hub) -> int:
    """How many records the union stage reads: accepted reports, decisions and link batches."""
    return sum(len(hub.read(topic)) for topic in (hub.topics.accepted, hub.topics.decisions, hub.topics.links))


def wait_for_union_tables(hub: Hub, timeout: float = 90.0) -> None:
    """Until the union's tables hold every record of its inputs (it writes them after each commit)."""
    inputs = (hub.topics.accepted, hub.topics.decisions, hub.topics.links)
    deadline = time.monotonic() + timeout
    while True:
        ends: dict[TopicPartition, int] = {}
        for topic in inputs:
            for r in hub.read(topic):
                tp = TopicPartition(topic, r.partition)
                ends[tp] = max(ends.get(tp, 0), r.offset + 1)
        db = open_state_database(hub.settings.state_file)
        try:
            held = SqlTables(db, "correlate").positions()
        finally:
            db.close()
        if all(tp in held and held[tp].position >= end for tp, end in ends.items()):
            return
        assert time.monotonic() < deadline, f"the union's tables never caught up: {held} of {ends}"
        time.sleep(0.5)


@dataclass(frozen=True)
class Restored:
    what: str
    partition: int
    checkpoint: int | None  # None: from the beginning
    replayed: int


def restored(log: str, what: str) -> list[Restored]:
    return [
        Restored(m[1], int(m[3]), None if m[4] is None else int(m[4]), int(m[5]))
        for m in RESTORED.finditer(log)
        if m[1] == what
    ]


def reports(count: int, seed: int) -> list[dict]:
    found = simulate(cases=count // 3 + 10, seed=seed).reports[:count]
    assert len(found) == count
    return found


def test_a_worker_stopped_and_restarted_replays_nothing_its_checkpoints_hold(hub: Hub) -> None:
    first, rest = reports(180, seed=41), reports(240, seed=42)[180:]
    hub.publish(first)
    hub.start_worker()
    hub.wait_for_outcomes(len(first))
    hub.wait_for_quiet()
    assert {r.checkpoint for r in restored(hub.worker_log(), "accepted ids")} == {None}  # a first start
    assert union_restores(hub.worker_log())[0].stored is None
    hub.stop_worker()

    seen = len(hub.worker_log())
    hub.publish(rest)
    hub.start_worker()
    hub.wait_for_outcomes(len(first) + len(rest))
    hub.wait_for_quiet()

    log = hub.worker_log()[seen:]
    accept, link = restored(log, "accepted ids"), restored(log, "link index")
    assert {r.partition for r in accept} == {r.partition for r in link} == set(range(PARTITIONS)), log[-3000:]
    assert all(r.checkpoint is not None for r in accept + link), "restored from the checkpoints, not from 0"
    assert "stored state wiped" not in log, "the checkpoints match the topics (the offsets the runtime reported)"
    assert sum(r.checkpoint or 0 for r in accept) >= len(first)  # the checkpoints cover the first reports
    assert sum(r.replayed for r in accept + link) == 0, "a clean stop leaves no tail to read again"
    union = union_restores(log)[0]
    assert union.stored is not None, "the union restored from its tables, not from the beginning"
    assert (union.replayed, union.versions) == (0, 0), "its tables, written after each commit, are the whole state"
    assert_everything_once(hub, first + rest)
    versions_are_gapless(hub)

    hub.publish(first[:20])  # the stored ids still answer: the same ids again are refused
    _, rejected = hub.wait_for_outcomes(len(first) + len(rest) + 20)
    assert [r["reason"] for r in rejected] == ["duplicate_report_id"] * 20


def roll_back(hub: Hub, lag: int) -> tuple[int, set[str]]:
    """What a SIGKILL at the worst moment of every partition leaves (the records committed on Kafka, their
    ids not yet in the store): each accepted-ids checkpoint moved back `lag` records behind the one it
    held, those ids deleted from the file. Returns how many records the stored state now lacks, and the ids
    deleted."""
    db = open_state_database(hub.settings.state_file)
    state = SqlStageState(db, "accept", STATE_VERSION)
    lacking, dropped = 0, set()
    try:
        for partition in range(PARTITIONS):
            tp = TopicPartition(hub.topics.accepted, partition)
            held = state.checkpoint(tp)
            assert held is not None
            records = [r for r in hub.read(hub.topics.accepted) if r.partition == partition]
            covered = [r for r in records if r.offset < held.position]
            keep, drop = covered[:-lag], covered[-lag:]
            assert len(drop) == lag and keep, "too few reports in a partition for this test"
            db.executemany(
                "DELETE FROM state_entries WHERE stage = 'accept' AND topic = ? AND key = ?",
                [(tp.topic, r.key.decode()) for r in drop],
            )
            last = keep[-1]
            state.commit(tp, [], Checkpoint(last.offset + 1, last.offset, record_digest(last.key, last.value)))
            lacking += len(records) - len(keep)
            dropped |= {r.key.decode() for r in drop}
    finally:
        db.close()
    return lacking, dropped


def test_after_a_sigkill_a_restart_replays_only_the_tail_and_accepts_each_report_once(hub: Hub) -> None:
    everything = reports(360, seed=43)
    first, rest = everything[:240], everything[240:]
    hub.publish(first)
    hub.start_worker()
    hub.wait_for_outcomes(len(first))
    # The union must have run (and so written its tables) before the kill: on a loaded machine it could still be
    # joining its group when accept was through, and a union that never ran has no tables to restore from.
    hub.wait_for_quiet()
    wait_for_union_tables(hub)
    hub.kill_worker()  # SIGKILL: whatever was in flight is left for the next incarnation to fence
    lacking, dropped = roll_back(hub, lag=10)
    history = union_inputs(hub)

    seen = len(hub.worker_log())
    hub.publish(rest)
    hub.start_worker()
    hub.wait_for_outcomes(len(everything), timeout=180)
    hub.wait_for_quiet(timeout=120)

    union = union_restores(hub.worker_log()[seen:])[0]
    assert union.stored is not None, "the union restored from its tables, not from the beginning"
    # Its tables held everything it had committed (waited for above): what it replays is what reached its
    # inputs while it was down and before its group's commit, never the history before the kill.
    assert union.replayed < BATCH and union.replayed < history // 2, (union, history)
    versions_are_gapless(hub)
    accept = restored(hub.worker_log()[seen:], "accepted ids")
    assert {r.partition for r in accept} == set(range(PARTITIONS)) and all(r.checkpoint is not None for r in accept)
    replayed = sum(r.replayed for r in accept)
    assert replayed >= lacking >= 10 * PARTITIONS, "the tail the store lacked was read back"
    assert replayed <= lacking + BATCH * PARTITIONS and replayed < len(first) // 2, "only the tail"
    assert_everything_once(hub, everything)

    again = [r for r in first if r["report_id"] in dropped]  # their ids came back from the tail, not the file
    hub.publish(again)
    _, rejected = hub.wait_for_outcomes(len(everything) + len(again))
    assert len(again) == 10 * PARTITIONS and [r["reason"] for r in rejected] == ["duplicate_report_id"] * len(again)
