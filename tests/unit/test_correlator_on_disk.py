"""The correlator on disk is the correlator in memory.

Its maps are tables in the worker's state file (adapters/sql/tables.py, a real SQLite file), worked on through
a bounded cache (domain/working_set.py): a batch reads what it touches, its changes are written when its
transaction committed, dropped when it aborted, and a restart reads nothing until a record asks for it.
Whatever the cache's size, the aborts, the crashes before a write and the restarts, it must end where a
correlator kept in memory ends on the same history of reports, links, retractions and erasures.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from adapters.sql.state import open_state_database
from adapters.sql.tables import SqlTables
from domain.correlate import Correlator
from domain.facts import ReportFacts, facts_from_accepted
from domain.linking import KeyIndex, by_partition, sightings_of
from domain.working_set import WorkingSet
from producers.simulate import simulate
from tests.correlation_kit import PLAN, Pipeline, state_of

Op = tuple[str, Any]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return Pipeline(tmp_path_factory.mktemp("on-disk"))


@pytest.fixture(scope="module")
def reports(one_process: Pipeline) -> list[ReportFacts]:
    return [facts_from_accepted(r) for r in one_process.accept(simulate(70, seed=41).reports)]


def history(reports: list[ReportFacts], seed: int, external: bool) -> list[Op]:
    """The reports (with, for the union, the link stage's links, in a random order that may put a link before
    its reports), and now and then a retraction of reports seen or an erasure of people seen."""
    rng = random.Random(seed)
    events: list[Op] = [("report", r) for r in reports]
    if external:
        indexes = [KeyIndex() for _ in range(3)]
        for report in reports:
            for partition, sightings in by_partition(sightings_of(report), 3).items():
                events.append(("links", [link for s in sightings for link in indexes[partition].add(s)]))
        rng.shuffle(events)
    ops: list[Op] = []
    seen: list[ReportFacts] = []
    for event in events:
        ops.append(event)
        if event[0] == "report":
            seen.append(event[1])
        if seen and rng.random() < 0.12:
            if rng.random() < 0.5:
                ops.append(("retract", [r.report_id for r in rng.sample(seen, k=min(2, len(seen)))]))
            else:
                people = sorted({p.subject_key_id for r in seen for p in r.people})
                ops.append(("erase", rng.sample(people, k=min(2, len(people)))))
    return ops


def apply(correlator: Correlator, op: Op) -> None:
    kind, item = op
    if kind == "report":
        correlator.add(item)
    elif kind == "links":
        correlator.add_links(item)
    elif kind == "retract":
        correlator.retract(item)
    else:
        correlator.erase(item)


class OnDisk:
    """A correlator over a state file, as a worker opens it (again, after a restart)."""

    def __init__(self, path: Path, external: bool, cache_entries: int) -> None:
        self.path, self.external, self.cache_entries = path, external, cache_entries
        self.restarts = 0
        self.open()

    def open(self) -> None:
        self.store = SqlTables(open_state_database(self.path), "correlate")
        self.tables = WorkingSet(self.store, self.cache_entries)
        self.correlator = Correlator(PLAN, external_links=self.external, tables=self.tables)

    def restart(self) -> None:
        self.store.db.close()
        self.restarts += 1
        self.open()

    def commit(self) -> None:
        self.store.write(self.tables.changes(), {})
        self.tables.saved()


@pytest.mark.parametrize("external", [False, True], ids=["scope", "union"])
@pytest.mark.parametrize(("seed", "cache_entries"), [(0, 5), (1, 5), (2, 200), (3, 50_000)])
def test_the_correlator_on_disk_ends_where_the_one_in_memory_ends(
    reports: list[ReportFacts], tmp_path: Path, seed: int, cache_entries: int, external: bool
) -> None:
    ops = history(reports, seed, external)
    assert sum(op[0] in ("retract", "erase") for op in ops) >= 4
    memory = Correlator(PLAN, external_links=external)
    for op in ops:
        apply(memory, op)

    rng = random.Random(seed)
    disk = OnDisk(tmp_path / "state.sqlite3", external, cache_entries)
    fates = {"committed": 0, "aborted": 0, "crashed": 0}
    start = 0
    while start < len(ops):
        batch = ops[start : start + rng.randint(1, 6)]
        for op in batch:
            apply(disk.correlator, op)
        fate = rng.choices(list(fates), weights=(7, 2, 1))[0]
        fates[fate] += 1
        if fate == "aborted":  # the transaction aborted: the batch is read again and applied again
            disk.tables.drop()
        elif fate == "crashed":  # killed after Kafka committed, before the state was written: the tail replays
            disk.restart()
        if fate != "committed":
            for op in batch:
                apply(disk.correlator, op)
        disk.commit()
        assert disk.tables.cached() <= max(cache_entries, 0) + sum(len(m.pending) for m in disk.tables.maps.values())
        if rng.random() < 0.08:
            disk.restart()
        start += len(batch)
    assert fates["aborted"] and fates["crashed"]
    assert state_of(disk.correlator) == state_of(memory)
    disk.restart()
    assert state_of(disk.correlator) == state_of(memory)  # and read back from the file alone
    assert any(len(members) > 1 for members in memory.entity_members.values())  # the data links people


def test_a_restart_reads_only_what_the_next_report_touches(reports: list[ReportFacts], tmp_path: Path) -> None:
    """Nothing is loaded whole: after a restart the first report reads a few keys, not the history."""
    disk = OnDisk(tmp_path / "state.sqlite3", external=False, cache_entries=50_000)
    for report in reports[:-1]:
        disk.correlator.add(report)
    disk.commit()
    held = sum(len(disk.store.keys(name)) for name in disk.tables.maps)
    disk.restart()
    assert disk.tables.cached() == 0
    touched = disk.correlator.add(reports[-1])
    disk.commit()
    assert touched and disk.tables.loads < held / 10, (disk.tables.loads, held)
    memory = Correlator(PLAN)
    for report in reports:
        memory.add(report)
    assert state_of(disk.correlator) == state_of(memory)
