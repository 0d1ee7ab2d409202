"""The union stage's state as tables, measured in process (docs/performance.md, "Correlator tables"):

    python -m benchmarks.correlator_tables 1000 10000

For each history size: reports of `simulate` accepted by the real accept stage (real tokens and encodings), fed
to a ScopedCorrelation as the union stage feeds it (each report into the hub's and its agency's scopes, shared by
decisions with two recipients under field rules, the link stage's links), in batches of 100 each flushed and, on
tables, written to a worker's state file with its positions (as after each Kafka commit). Against the same fold
in memory: the cost per report, the peak of memory the state takes (tracemalloc), the file's size. Then a restart:
the time to open the tables (reading nothing whole) and take one more batch, and the keys it read.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.sql.state import open_state_database
from adapters.sql.tables import SqlTables
from domain.facts import ReportFacts, facts_from_accepted
from domain.linking import KeyIndex, Link, by_partition, sightings_of
from domain.log import TopicPartition
from domain.scoped import ScopedCorrelation
from domain.state_store import Checkpoint
from domain.working_set import DEFAULT_CACHE_ENTRIES, WorkingSet
from producers.simulate import simulate
from tests.correlation_kit import PLAN, Pipeline

KEY = b"p" * 32
RECIPIENTS = ("NZ-NIC", "NZ-LABOUR", "NZ-POLICE", "NGO-SHAKTI")
NOW = datetime(2026, 11, 1, tzinfo=UTC)
BATCH = 100
TP = TopicPartition("tip.reports.accepted", 0)


def rules(facts: ReportFacts) -> dict[str, str]:
    """Every field shared but the names and birth dates (a typical agreement's view)."""
    paths = ["observed_at", "source_agency", "elements", "indicator_type", "source_reliability", "info_credibility"]
    for occ in facts.people:
        base = "subjects[" + occ.occ_id.rsplit("#", 1)[1] + "]"
        paths += [f"{base}.role", f"{base}.minor", f"{base}.nationality"]
        for j, _ in enumerate(occ.identifiers):
            paths += [f"{base}.identifiers[{j}].{name}" for name in ("value", "kind", "issuer")]
    out = dict.fromkeys(paths, "share")
    for occ in facts.people:
        base = "subjects[" + occ.occ_id.rsplit("#", 1)[1] + "]"
        out |= {f"{base}.name": "drop", f"{base}.date_of_birth": "drop"}
    return out


def history(count: int, home: Path) -> list[ReportFacts]:
    reports = simulate(cases=count // 3 + 10, seed=5).reports[:count]
    return [facts_from_accepted(record) for record in Pipeline(home).accept(reports)]


def recipients(n: int) -> tuple[str, str]:
    return RECIPIENTS[n % 4], RECIPIENTS[(n + 1) % 4]


def links_of(index: KeyIndex, facts: ReportFacts) -> list[Link]:
    """The level-1 links the link stage would give for this report."""
    sightings = [s for group in by_partition(sightings_of(facts), 1).values() for s in group]
    return [link for s in sightings for link in index.add(s)]


def feed_batch(state: ScopedCorrelation, index: KeyIndex, batch: list[ReportFacts], start: int) -> None:
    """A batch as the stage takes it: the keys it touches read first (a query per table, the decisions'
    recipient scopes included), then each report, its links and its two sharing decisions."""
    links = [links_of(index, facts) for facts in batch]
    decided = [(r, facts.report_id) for n, facts in enumerate(batch, start=start) for r in recipients(n)]
    state.prefetch(batch, decided, {o for group in links for link in group for o in (link.a, link.b)})
    for n, (facts, linked) in enumerate(zip(batch, links, strict=True), start=start):
        state.accept(facts, NOW)
        state.add_links(linked)
        for recipient in recipients(n):
            state.decided(recipient, facts.report_id, True, NOW + timedelta(days=365), NOW, rules(facts))


def fold(
    facts: list[ReportFacts], store: SqlTables | None, trace: bool = False
) -> tuple[float, int, ScopedCorrelation, KeyIndex]:
    """Seconds per report and (`trace`) peak traced bytes of feeding `facts` batch by batch (written after each
    batch). Timed without tracing: tracemalloc slows allocation-heavy code several times."""
    gc.collect()
    if trace:
        tracemalloc.start()
    tables = None if store is None else WorkingSet(store, DEFAULT_CACHE_ENTRIES)
    state = ScopedCorrelation(PLAN, KEY, tables=tables)
    index = KeyIndex()
    started = time.perf_counter()
    for start in range(0, len(facts), BATCH):
        feed_batch(state, index, facts[start : start + BATCH], start)
        state.flush()
        if store is not None and tables is not None:
            state.stage()
            store.write(tables.changes(), {TP: Checkpoint(min(start + BATCH, len(facts)))})
            tables.saved()
    elapsed = time.perf_counter() - started
    peak = 0
    if trace:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return elapsed / len(facts), peak, state, index


def measure(count: int, workdir: Path) -> dict[str, Any]:
    facts = history(count + BATCH, workdir / f"home-{count}")
    seeded, extra = facts[:count], facts[count:]
    per_memory, _, _, _ = fold(seeded, None)
    _, peak_memory, _, _ = fold(seeded, None, trace=True)
    traced = workdir / f"traced-{count}.sqlite3"
    db = open_state_database(traced)
    _, peak_tables, _, _ = fold(seeded, SqlTables(db, "correlate"), trace=True)
    db.close()
    path = workdir / f"state-{count}.sqlite3"
    db = open_state_database(path)
    per_tables, _, _, index = fold(seeded, SqlTables(db, "correlate"))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    size = path.stat().st_size

    gc.collect()
    started = time.perf_counter()
    db = open_state_database(path)
    store = SqlTables(db, "correlate")
    store.positions()
    tables = WorkingSet(store, DEFAULT_CACHE_ENTRIES)
    state = ScopedCorrelation(PLAN, KEY, tables=tables)
    opened = time.perf_counter() - started
    feed_batch(state, index, extra, count)
    state.flush()
    state.stage()
    store.write(tables.changes(), {TP: Checkpoint(count + len(extra))})
    tables.saved()
    batch = time.perf_counter() - started - opened
    db.close()
    return {
        "reports": count,
        "per_report_ms": {"memory": round(per_memory * 1000, 3), "tables": round(per_tables * 1000, 3)},
        "peak_traced_mb": {"memory": round(peak_memory / 2**20, 1), "tables": round(peak_tables / 2**20, 1)},
        "state_file_mb": round(size / 2**20, 1),
        "restart": {"open_s": round(opened, 4), "first_batch_s": round(batch, 3), "keys_read": tables.loads},
    }


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for count in sizes:
            print(json.dumps(measure(count, Path(tmp))), flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000])
