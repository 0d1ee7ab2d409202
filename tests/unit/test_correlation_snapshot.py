"""The union stage's state as a snapshot (domain/correlation_snapshot.py): what is read back is the state that
was written, index for index, on states built from real histories; a state restored from a snapshot plus the
tail answers as one rebuilt from all history, also when a share ended in between; a snapshot of another
format, configuration or content is refused, never half read."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.correlate import Correlator
from domain.correlation_snapshot import SnapshotError, from_json, resume, to_json
from domain.facts import ReportFacts, facts_from_accepted
from domain.linking import KeyIndex, Link, by_partition, sightings_of
from domain.scoped import Emitted, ScopedCorrelation
from producers.simulate import simulate
from tests.correlation_kit import PLAN, Pipeline

KEY = b"p" * 32
PARTNER = "HSU-TH"
RECIPIENTS = ["NZ-NIC", "NZ-LABOUR", PARTNER]
NOW = datetime(2026, 11, 1, tzinfo=UTC)


@cache
def history(tmp: str) -> tuple[ReportFacts, ...]:
    """Accepted reports of a simulated history (real envelopes, the real accept stage, real tokens)."""
    from pathlib import Path

    pipeline = Pipeline(Path(tmp))
    reports = simulate(cases=30, seed=11).reports[:90]
    return tuple(facts_from_accepted(record) for record in pipeline.accept(reports))


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportFacts, ...]:
    return history(str(tmp_path_factory.mktemp("snapshot")))


def rules_for(facts: ReportFacts, dropped: frozenset[str]) -> dict[str, str]:
    """A decision's field rules over the report's own fields: shared but for the `dropped` kinds of field."""
    paths = ["observed_at", "source_agency", "elements", "indicator_type", "source_reliability", "info_credibility"]
    for occ in facts.people:
        base = "subjects[" + occ.occ_id.rsplit("#", 1)[1] + "]"
        paths += [f"{base}.{name}" for name in ("role", "minor", "name", "date_of_birth", "nationality")]
        for j, _ in enumerate(occ.identifiers):
            paths += [f"{base}.identifiers[{j}].{name}" for name in ("value", "kind", "issuer")]
    for j, _ in enumerate(facts.registrations):
        paths += [f"organisations[{j}].registration", f"organisations[{j}].country"]
    return {p: "drop" if any(d in p for d in dropped) else "share" for p in paths}


Step = tuple[int, int, bool, int | None, frozenset[str]]  # report, recipient, allowed, retention days, dropped
STEPS = st.lists(
    st.tuples(
        st.integers(0, 89),
        st.integers(0, len(RECIPIENTS) - 1),
        st.booleans(),
        st.one_of(st.none(), st.integers(1, 60)),
        st.frozensets(st.sampled_from(["name", "date_of_birth", "identifiers", "role"]), max_size=2),
    ),
    min_size=10,
    max_size=120,
)


class Union:
    """Drives a ScopedCorrelation as the union stage does, and keeps what it wrote on tip.signals."""

    def __init__(self) -> None:
        self.state = ScopedCorrelation(PLAN, KEY, partners={PARTNER})
        self.index = KeyIndex()
        self.topic: list[Emitted] = []

    def report(self, facts: ReportFacts, now: datetime) -> list[Link]:
        """The report, and the links the link stage makes of it (on tip.links: a restore reads them back)."""
        self.state.accept(facts, now)
        links: list[Link] = []
        for sightings in by_partition(sightings_of(facts), 1).values():
            for sighting in sightings:
                links += self.index.add(sighting)
        self.state.add_links(links)
        return links

    def flush(self, now: datetime) -> None:
        self.state.expire(now)
        self.topic += self.state.flush()


def build(pool: tuple[ReportFacts, ...], steps: Iterable[Step], start: datetime = NOW) -> Union:
    union = Union()
    for n, (index, recipient, allowed, days, dropped) in enumerate(steps):
        now = start + timedelta(hours=n)
        facts = pool[index]
        LINKS.append(union.report(facts, now))
        until = None if days is None else now + timedelta(days=days)
        union.state.decided(RECIPIENTS[recipient], facts.report_id, allowed, until, now, rules_for(facts, dropped))
        union.flush(now)
    return union


def plain(mapping: dict[str, Any]) -> dict[str, Any]:
    """A dict of sets or counters without its empty entries (a defaultdict grows them on lookup)."""
    return {k: (sorted(v) if isinstance(v, set) else dict(v)) for k, v in mapping.items() if v}


def indexes(c: Correlator) -> dict[str, Any]:
    return {
        "reports": c.reports,
        "occurrences": c.occurrences,
        "roots": {o: c.uf.find(o) for o in c.uf.parent},
        "level1": plain(c.level1_members),
        **{name: plain(getattr(c, name)) for name in ("by_document", "by_dob", "by_ny", "by_ny_without_dob")},
        **{name: plain(getattr(c, name)) for name in ("by_contact", "by_org", "links", "reporting")},
        "entity_of": c.entity_of,
        "entities": plain(c.entity_members),
        "considered": +c.considered,
        "erased": c.erased,
        "retracted": c.retracted,
        "token_names": c.token_names,
        "evaluate": c.evaluate(),
    }


def answers(state: ScopedCorrelation) -> dict[str, Any]:
    """What a state answers, scope by scope: what it holds, its feed's place, its books, its correlation."""
    out: dict[str, Any] = {}
    for name, scope in sorted(state.scopes.items()):
        out[name] = {
            "held": scope.held,
            "seq": scope.seq,
            "latest": scope.book.latest(),
            "open": (+scope.book.open_signals, plain(scope.book.open_reports), plain(scope.book.open_agencies)),
        }
        if scope.correlator is not None:
            out[name]["correlation"] = indexes(scope.correlator)
            out[name]["coverage"] = scope.correlator.coverage(scope.book)
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, erase=st.integers(0, 200))
def test_a_state_read_back_is_the_state_written_index_for_index(
    pool: tuple[ReportFacts, ...], steps: Any, erase: int
) -> None:
    union = build(pool, steps)
    people = [p for f in union.state.facts.values() for p in f.people]
    if people and erase < len(people):
        union.state.forget({people[erase].subject_key_id}, set())
        union.flush(NOW + timedelta(days=1))
    text = to_json(union.state)
    read = from_json(text, PLAN, KEY, {PARTNER})
    assert to_json(read) == text
    before, after = answers(union.state), answers(read)
    assert before.keys() == after.keys()
    for name in before:
        assert after[name] == before[name], name
    assert read.grants == {r: g for r, g in union.state.grants.items() if g}
    assert plain(read.links) == plain(union.state.links)
    assert read.erased == union.state.erased and read.retracted == union.state.retracted


def test_an_erased_persons_occurrences_are_not_in_a_snapshot_written_after_the_erasure(
    pool: tuple[ReportFacts, ...],
) -> None:
    union = build(pool, [(i, 0, True, None, frozenset()) for i in range(20)])
    subject = next(p for f in union.state.facts.values() for p in f.people).subject_key_id
    assert subject in to_json(union.state)
    union.state.forget({subject}, set())
    text = to_json(union.state)
    assert subject not in json.dumps(but_erased_lists(json.loads(text))), "only named as erased"
    read = from_json(text, PLAN, KEY, {PARTNER})
    assert subject in read.erased  # and so no correlator takes that person in again
    held = [p for s in read.scopes.values() if s.correlator for p in s.correlator.occurrences.values()]
    assert held and all(p.subject_key_id != subject for p in held)


def without_maps(value: Any) -> Any:
    """A snapshot's state with every book's entity map emptied."""
    if isinstance(value, dict):
        return {k: [] if k == "by_entity" else without_maps(v) for k, v in value.items()}
    return [without_maps(v) for v in value] if isinstance(value, list) else value


def but_erased_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: but_erased_lists(v) for k, v in value.items() if k != "erased"}
    if isinstance(value, list):
        return [but_erased_lists(v) for v in value]
    return value


def restore(
    snapshot: str, tail: list[Step], first: int, topic: list[Emitted], seen: int, now: datetime
) -> ScopedCorrelation:
    """What the stage does with a snapshot: read it, replay the tail at `now`, resume, load the versions
    written after it, map the books again."""
    state = from_json(snapshot, PLAN, KEY, {PARTNER})
    union = Union()
    union.state = state
    replay(union, tail, now, first)
    resume(state, now)
    load(state, topic[seen:])
    return state


def replay(union: Union, steps: list[Step], now: datetime, first: int = 0) -> None:
    """As a restore replays: every report first, then every decision, all judged at `now`, then the links."""
    for index, *_ in steps:
        union.state.accept(POOL[index], now)
    for n, (index, recipient, allowed, days, dropped) in enumerate(steps, start=first):
        until = None if days is None else STARTS[n] + timedelta(days=days)
        rules = rules_for(POOL[index], dropped)
        union.state.decided(RECIPIENTS[recipient], POOL[index].report_id, allowed, until, now, rules)
    for n in range(first, first + len(steps)):
        union.state.add_links(LINKS[n])


def load(state: ScopedCorrelation, versions: list[Emitted]) -> None:
    for e in versions:
        state.load_signal(e.scope, e.seq, e.version, e.signal)
    state.settle_loaded()


POOL: tuple[ReportFacts, ...] = ()
STARTS: list[datetime] = []
LINKS: list[list[Link]] = []  # tip.links: what the link stage made of each step's report


@pytest.mark.parametrize("keep_map", [True, False], ids=["books-mapped", "maps-lost"])
@pytest.mark.parametrize("restart_after_days", [1, 40])
def test_a_restore_from_a_snapshot_and_the_tail_answers_as_a_full_restore(
    pool: tuple[ReportFacts, ...], restart_after_days: int, keep_map: bool
) -> None:
    """History runs live; a snapshot is taken midway; the restart comes a day later (no share ended) or 40
    days later (shares of 30 days taken before the snapshot have ended): either way the restored state and
    the signal versions it writes next are those of a full restore at that moment. A snapshot whose books
    lost their entity maps has open signals no key of the tail maps: those scopes are mapped whole."""
    global POOL, STARTS, LINKS
    POOL = pool
    steps: list[Step] = [(i % 60, i % 3, i % 7 != 0, 30 if i % 4 == 0 else None, frozenset()) for i in range(60)]
    STARTS = [NOW + timedelta(hours=n) for n in range(len(steps))]
    LINKS = []
    live = build(pool, steps[:35])
    snapshot, seen = to_json(live.state), len(live.topic)
    if not keep_map:
        snapshot = json.dumps(without_maps(json.loads(snapshot)))
    in_snapshot = set(from_json(snapshot, PLAN, KEY, {PARTNER}).scopes)
    for n, (index, recipient, allowed, days, dropped) in enumerate(steps[35:], start=35):
        LINKS.append(live.report(pool[index], STARTS[n]))
        until = None if days is None else STARTS[n] + timedelta(days=days)
        rules = rules_for(pool[index], dropped)
        live.state.decided(RECIPIENTS[recipient], pool[index].report_id, allowed, until, STARTS[n], rules)
        live.flush(STARTS[n])
    now = NOW + timedelta(days=restart_after_days)

    from_snapshot = restore(snapshot, steps[35:], 35, live.topic, seen, now)
    full = Union()
    replay(full, steps, now)
    load(full.state, live.topic)

    assert answers(from_snapshot) == answers(full.state)
    mapped_whole = {name for name, scope in from_snapshot.scopes.items() if scope.correlator and scope.full}
    if keep_map:  # only scopes the snapshot did not hold are mapped whole
        assert not mapped_whole & in_snapshot
    else:
        assert mapped_whole & in_snapshot
    emitted = [from_snapshot.flush(), full.state.flush()]
    assert emitted[0] == emitted[1]
    if restart_after_days == 40:
        assert emitted[0], "shares ended while it was down: the scopes lost reports, and their signals changed"
    # the people erased afterwards: every signal of theirs is closed alike, those from before the snapshot too
    everyone = {p.subject_key_id for f in pool for p in f.people}
    for state in (from_snapshot, full.state):
        state.forget(everyone, set())
    emitted = [from_snapshot.flush(), full.state.flush()]
    assert emitted[0] == emitted[1]
    assert any(e.signal.status == "closed" for e in emitted[0])


def test_a_snapshot_of_another_format_configuration_or_content_is_refused(pool: tuple[ReportFacts, ...]) -> None:
    text = to_json(build(pool, [(i, 0, True, None, frozenset()) for i in range(10)]).state)
    body = json.loads(text)
    for changed, why in (
        ({**body, "version": 1}, "format version 1"),  # the format before the books kept their map
        ({**body, "format": "pickle"}, "not a correlation snapshot"),
        ({**body, "facts": [["only", "a", "part"]]}, "malformed"),
        ({**body, "scopes": {"hub": {**body["scopes"]["hub"], "seq": "1; import os"}}}, "expected"),
    ):
        with pytest.raises(SnapshotError, match=why):
            from_json(json.dumps(changed), PLAN, KEY, {PARTNER})
    with pytest.raises(SnapshotError, match="another Collection Plan"):
        from_json(text, PLAN[1:], KEY, {PARTNER})
    with pytest.raises(SnapshotError, match="another Collection Plan"):
        from_json(text, PLAN, b"q" * 32, {PARTNER})
    with pytest.raises(SnapshotError, match="not JSON"):
        from_json(text[:-10], PLAN, KEY, {PARTNER})
