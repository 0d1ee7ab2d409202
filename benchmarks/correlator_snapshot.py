"""The union stage's snapshot, measured (docs/performance.md, "Correlator snapshot"):

    python -m benchmarks.correlator_snapshot 1000 10000

For each history size: reports of `simulate` accepted by the real accept stage (real tokens and encodings),
fed to a ScopedCorrelation as the union stage feeds it (each report into the hub's and its agency's scopes,
shared by a decision with two recipients under field rules, the link stage's links); then the snapshot's
size and the time to encode and write it to a worker's state file; the time to restore from it (read, decode,
resume, map the books) against a full replay of the same history into a new state (the fold only: reading
and decoding the topics, which a full restore also does, is not counted); the first flush after each (with
nothing new: what the first batch pays besides its own reports); and the state's size in memory
(tracemalloc), per report.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from adapters.sql.state import SqlStageState, open_state_database
from domain.correlation_snapshot import from_json, resume, to_json
from domain.facts import ReportFacts, facts_from_accepted
from domain.linking import KeyIndex, Link, by_partition, sightings_of
from domain.log import TopicPartition
from domain.scoped import ScopedCorrelation
from domain.state_store import Checkpoint, Snapshot
from producers.simulate import simulate
from tests.correlation_kit import PLAN, Pipeline

KEY = b"p" * 32
RECIPIENTS = ("NZ-NIC", "NZ-LABOUR", "NZ-POLICE", "NGO-SHAKTI")
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def rules(facts: ReportFacts) -> dict[str, str]:
    """Every field shared but the names and birth dates (a typical agreement's view)."""
    paths = ["observed_at", "source_agency", "elements", "indicator_type", "source_reliability", "info_credibility"]
    for occ in facts.people:
        base = "subjects[" + occ.occ_id.rsplit("#", 1)[1] + "]"
        paths += [f"{base}.role", f"{base}.minor", f"{base}.nationality"]
        for j, _ in enumerate(occ.identifiers):
            paths += [f"{base}.identifiers[{j}].{name}" for name in ("value", "kind", "issuer")]
    rules = dict.fromkeys(paths, "share")
    for occ in facts.people:
        base = "subjects[" + occ.occ_id.rsplit("#", 1)[1] + "]"
        rules |= {f"{base}.name": "drop", f"{base}.date_of_birth": "drop"}
    return rules


def history(count: int, home: Path) -> list[dict[str, Any]]:
    reports = simulate(cases=count // 3 + 10, seed=5).reports[:count]
    return Pipeline(home).accept(reports)


def fold(
    records: list[dict[str, Any]], links: list[list[Link]] | None = None
) -> tuple[ScopedCorrelation, list[list[Link]]]:
    """A state fed as the union feeds it, batch by batch; the links the link stage made for each report."""
    state = ScopedCorrelation(PLAN, KEY)
    index = KeyIndex()
    made: list[list[Link]] = []
    for n, record in enumerate(records):
        facts = facts_from_accepted(record)
        state.accept(facts, NOW)
        if links is None:
            sightings = [s for group in by_partition(sightings_of(facts), 1).values() for s in group]
            made.append([link for s in sightings for link in index.add(s)])
        state.add_links(made[n] if links is None else links[n])
        for recipient in (RECIPIENTS[n % 4], RECIPIENTS[(n + 1) % 4]):
            state.decided(recipient, facts.report_id, True, NOW + timedelta(days=365), NOW, rules(facts))
        if n % 500 == 499:
            state.flush()
    state.flush()
    return state, made


def measure(count: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp())
    records = history(count, home)
    _, links = fold(records)  # what the link stage made of them, outside the measurement
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    state, _ = fold(records, links)
    gc.collect()
    in_memory = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()

    started = time.perf_counter()
    text = to_json(state)
    encode_s = time.perf_counter() - started
    store = SqlStageState(open_state_database(home / "state" / "worker-0.sqlite3"), "correlate", 1)
    positions = {TopicPartition("tip.reports.accepted", p): Checkpoint(count, count - 1, "d" * 32) for p in range(12)}
    started = time.perf_counter()
    store.put_snapshot(Snapshot(text, positions))
    write_s = time.perf_counter() - started

    started = time.perf_counter()
    held = store.snapshot()
    assert held is not None
    restored = from_json(held.data, PLAN, KEY)
    resume(restored, NOW)
    restored.settle_loaded()
    restore_s = time.perf_counter() - started
    started = time.perf_counter()
    after_snapshot = restored.flush()
    flush_after_snapshot_s = time.perf_counter() - started

    started = time.perf_counter()
    replayed, _ = fold(records, links)
    for scope in replayed.scopes.values():  # as a restore without a snapshot has them: books loaded, not mapped
        scope.full, scope.book.by_entity = True, {}
    replayed.settle_loaded()
    replay_s = time.perf_counter() - started
    started = time.perf_counter()
    after_replay = replayed.flush()
    flush_after_replay_s = time.perf_counter() - started
    assert after_snapshot == after_replay == [], "nothing new: the first batch after either restore writes nothing"
    return {
        "reports": count,
        "snapshot_mb": len(text.encode()) / 1e6,
        "snapshot_bytes_per_report": len(text.encode()) / count,
        "encode_s": encode_s,
        "write_s": write_s,
        "restore_from_snapshot_s": restore_s,
        "full_replay_fold_s": replay_s,
        # the first batch after a restore: a book restored with its entity map evaluates the keys the batch
        # touched; one mapped whole (no snapshot, or a version 1 one) evaluates every entity of every scope
        "first_flush_after_snapshot_s": flush_after_snapshot_s,
        "first_flush_after_replay_s": flush_after_replay_s,
        "memory_mb": in_memory / 1e6,
        "memory_bytes_per_report": in_memory / count,
        "scopes": len(state.scopes),
    }


def main(sizes: list[int]) -> None:
    for count in sizes:
        result = measure(count)
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()), flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000])
