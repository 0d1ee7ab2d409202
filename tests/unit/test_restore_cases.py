"""Restores from tables whose tail the replay does not reproduce, and removals that join entities, on small
hand-made histories (found by outside reviews of the union's stored state and of local erasure). Each case
compares what a restore from the tables writes next with what a restore from the whole history writes next.

Pure logic: facts are built directly (tokens as the accept stage would name them), the stage is not run."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from adapters.memory.tables import InMemoryTables
from domain.correlate import Correlator, SignalBook, load_plan
from domain.facts import PersonOccurrence, ReportFacts
from domain.scoped import Emitted, ScopedCorrelation
from domain.working_set import WorkingSet
from tests.unit.test_correlation_tables import rules_for

PLAN = load_plan(yaml.safe_load((Path(__file__).parents[2] / "policies" / "collection_plan.yaml").read_text()))
KEY = b"k" * 32
NIC = "NZ-NIC"
T = datetime(2026, 1, 1, tzinfo=UTC)
TRAFFICKING = ["ACT_RECRUITMENT", "PURPOSE_FORCED_CRIMINALITY"]


def report(
    report_id: str, agency: str, people: Iterable[dict[str, Any]], elements: Iterable[str] = TRAFFICKING
) -> ReportFacts:
    occs = []
    for i, spec in enumerate(people):
        docs, contacts = tuple(sorted(spec.get("docs", ()))), tuple(sorted(spec.get("contacts", ())))
        identifiers = tuple(("PASSPORT", (d,)) for d in docs) + tuple(("PHONE", (c,)) for c in contacts)
        occs.append(
            PersonOccurrence(
                f"{report_id}#{i}",
                report_id,
                "SUSPECTED_VICTIM",
                None,
                spec["subject"],
                docs,
                contacts,
                None,
                None,
                (),
                (),
                identifiers,
            )
        )
    return ReportFacts(report_id, agency, T, T, "NGO_REFERRAL", frozenset(elements), "B", "2", tuple(occs), ())


def on_tables(tables: dict[str, dict[str, str]] | None = None) -> ScopedCorrelation:
    """A state over a copy of these tables (none: empty ones), as the stage opens it."""
    store = InMemoryTables()
    store.tables = copy.deepcopy(tables or {})
    return ScopedCorrelation(PLAN, KEY, tables=WorkingSet(store, cache_entries=20))


def tables_of(state: ScopedCorrelation) -> dict[str, dict[str, str]]:
    """The state's tables once its changes are written (a copy)."""
    assert state.tables is not None
    state.stage()
    store = state.tables.store
    store.write(state.tables.changes(), {})
    state.tables.saved()
    assert isinstance(store, InMemoryTables)
    return copy.deepcopy(store.tables)


def grant(state: ScopedCorrelation, facts: ReportFacts, now: datetime, until: datetime | None = None) -> None:
    """The report accepted, and shared with NZ-NIC (until `until`, if given)."""
    state.accept(facts, now)
    state.decided(NIC, facts.report_id, True, until, now, rules_for(facts, frozenset()))


def load(state: ScopedCorrelation, versions: list[Emitted]) -> ScopedCorrelation:
    for e in versions:
        state.load_signal(e.scope, e.seq, e.version, e.signal)
    state.settle_loaded()
    return state


def nic(emitted: list[Emitted]) -> list[tuple[int, str, str, tuple[str, ...]]]:
    return [(e.version, e.signal.signal_id, e.signal.status, e.signal.report_ids) for e in emitted if e.scope == NIC]


def test_a_share_the_tail_granted_that_ended_while_down_leaves_the_signal_as_a_full_restore_would() -> None:
    """The tail shared r3 with NZ-NIC for 30 days and its signal was written with r3. The union was down 40
    days: the replay, judging at `now`, never grants r3, and nothing the restore changes touches that entity;
    the signal written in the tail is what makes its key evaluated, and r3 leaves it."""
    same = {"subject": "v", "docs": ["DV"]}
    before, tail = [report("r1", "A1", [same]), report("r2", "A2", [same])], report("r3", "A3", [same])
    live = on_tables()
    for facts in before:
        grant(live, facts, T)
    topic = live.flush()
    midway, seen = tables_of(live), len(topic)
    until = T + timedelta(days=30)
    grant(live, tail, T + timedelta(hours=2), until)
    topic += live.flush()
    assert nic(topic)[-1][3] == ("r1", "r2", "r3")

    now = T + timedelta(days=40)
    restored = on_tables(midway)
    grant(restored, tail, now, until)
    restored.resume(now)
    full = ScopedCorrelation(PLAN, KEY)
    for facts in before:
        grant(full, facts, now)
    grant(full, tail, now, until)
    written = [nic(load(restored, topic[seen:]).flush()), nic(load(full, topic).flush())]
    assert written[0] == written[1]
    assert [(version, ids) for version, _, _, ids in written[0]] == [(3, ("r1", "r2"))]


def test_a_person_erased_while_down_who_joined_two_entities_in_the_tail_leaves_them_apart() -> None:
    """The tail's report named a person with both entities' passports, and they were written as one (the
    second's signal merged). That person is erased while the union is down: the restore applies the erasure
    before the tail, the tail's report adds nobody, and both signals are written apart again."""
    before = [
        report("r1", "A1", [{"subject": "v1", "docs": ["D1"]}]),
        report("r2", "A2", [{"subject": "v1", "docs": ["D1"]}]),
        report("r3", "A1", [{"subject": "v2", "docs": ["D2"]}]),
        report("r4", "A2", [{"subject": "v2", "docs": ["D2"]}]),
    ]
    tail = report("r5", "A3", [{"subject": "bridge", "docs": ["D1", "D2"]}])
    live = on_tables()
    for facts in before:
        grant(live, facts, T)
    topic = live.flush()
    midway, seen = tables_of(live), len(topic)
    grant(live, tail, T + timedelta(hours=1))
    topic += live.flush()
    assert "merged" in {status for _, _, status, _ in nic(topic)}

    now = T + timedelta(days=1)
    restored = on_tables(midway)
    restored.forget({"bridge"}, set())  # the erasure the feed brings, before the tail
    grant(restored, tail, now)
    restored.resume(now)
    full = ScopedCorrelation(PLAN, KEY)
    full.forget({"bridge"}, set())
    for facts in [*before, tail]:
        grant(full, facts, now)
    written = [nic(load(restored, topic[seen:]).flush()), nic(load(full, topic).flush())]
    assert written[0] == written[1]
    assert sorted((status, ids) for _, _, status, ids in written[0]) == [
        ("open", ("r1", "r2")),
        ("open", ("r3", "r4")),
    ]


def test_the_tables_a_restore_writes_before_its_first_flush_keep_what_that_flush_owes() -> None:
    """A restore writes its tables before its first flush (after replaying a tail, or an erasure that came
    while down). Restarted from them before the flush commits, the union still writes the change: a book with
    keys waiting is written as not mapped, and is mapped whole again."""
    reports = [
        report("r1", "A1", [{"subject": "v", "docs": ["DV"]}]),
        report("r2", "A2", [{"subject": "v", "docs": ["DV"]}]),
        report("r3", "A3", [{"subject": "erased", "docs": ["DV"]}]),
    ]
    live = on_tables()
    for facts in reports:
        grant(live, facts, T)
    topic = live.flush()
    assert nic(topic)[-1][3] == ("r1", "r2", "r3")

    def restore(tables: dict[str, dict[str, str]]) -> ScopedCorrelation:
        state = on_tables(tables)
        state.forget({"erased"} - set(state.erased), set())
        state.resume(T + timedelta(days=1))
        state.settle_loaded()
        return state

    first = restore(tables_of(live))
    second = restore(tables_of(first))  # restarted before the first flush committed
    assert nic(second.flush()) == nic(first.flush()) == [(2, nic(topic)[-1][1], "open", ("r1", "r2"))]


def test_an_erasure_that_lets_two_entities_join_continues_the_absorbed_ones_signal_as_merged() -> None:
    """Four people on one phone: over the controller's limit of three, so the phone links nobody. Erasing one
    brings it under: the two people with signals join, and the signal of the one absorbed is merged into the
    other's, as when a report joins them (not closed, as if its question were no longer answered)."""
    phone = "tok-phone"
    reports = [
        report("r1", "A1", [{"subject": "a", "docs": ["DA"], "contacts": [phone]}]),
        report("r1b", "A2", [{"subject": "a", "docs": ["DA"]}]),
        report("r2", "A1", [{"subject": "b", "docs": ["DB"], "contacts": [phone]}]),
        report("r2b", "A2", [{"subject": "b", "docs": ["DB"]}]),
        report("r3", "A1", [{"subject": "x", "contacts": [phone]}]),
        report("r4", "A1", [{"subject": "y", "contacts": [phone]}]),
    ]
    correlator, book = Correlator(PLAN, contact_limit=3), SignalBook()
    for facts in reports:
        book.apply(correlator.evaluate_keys(correlator.affected(facts.report_id, correlator.add(facts))), {})
    opened = {s.signal_id for _, s in book.latest() if s.status == "open" and s.requirement_id == "IR-6"}
    assert len(opened) == 2
    emitted = book.apply(correlator.evaluate_keys(correlator.erase({"x"})), correlator.absorbed)
    ends = {s.signal_id: s for _, s in emitted if s.signal_id in opened}
    assert sorted(s.status for s in ends.values()) == ["merged", "open"]
    merged = next(s for s in ends.values() if s.status == "merged")
    assert merged.merged_into in opened - {merged.signal_id}
